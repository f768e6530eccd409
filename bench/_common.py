"""Shared machinery of the rawepoll benchmarks: pinning, alternating timing, output.

How a number is made (see ``bench/README.md``):

* Every contender is a *timer*: ``timer(loops) -> ns`` runs its operation
  ``loops`` times inside one ``time.perf_counter_ns`` pair, with the loop
  written out in the timer itself, so the only per-operation overhead besides
  the operation is one ``for`` step (a few ns, the same for every contender).
* ``loops`` is calibrated per contender so that one *batch* lasts about
  ``batch_ms``.
* One *round* runs ``repeat`` batches of every contender, interleaved
  (A B A B ...), and keeps each contender's fastest batch (noise only ever
  adds time).  Odd rounds run the contenders in reverse order, so neither one
  always goes first.
* Across rounds we report the median ns/op of each contender and, for a pair,
  the median of the per-round ratios with their min and max (the spread).
  Only the ratios are comparable between runs; absolute numbers drift.

The garbage collector is off while a batch runs, as in :mod:`timeit`.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

Timer = Callable[[int], int]
"""Runs an operation ``loops`` times and returns the elapsed nanoseconds."""

FD_SETSIZE = 1024  # select.select refuses any fd at or above this


# -- the machine ----------------------------------------------------------


def pin_cpu(cpu: int | None, *, enabled: bool = True) -> tuple[int | None, str]:
    """Pin this process to one CPU; return it (or None) and a sentence saying how.

    With ``cpu=None`` the least busy allowed CPU is chosen, measured by
    psutil over 0.3 s when psutil is installed (else the last allowed CPU).
    Pinning keeps the caches warm and stops the scheduler from migrating us
    between the A and B halves of a round.
    """
    if not enabled or not hasattr(os, "sched_setaffinity"):
        return None, "not pinned (the scheduler may move the process between CPUs)"
    allowed = sorted(os.sched_getaffinity(0))
    how = "requested"
    if cpu is None:
        cpu, how = _least_busy(allowed)
    if cpu not in allowed:
        raise SystemExit(f"--cpu {cpu}: not among the allowed CPUs {allowed}")
    os.sched_setaffinity(0, {cpu})
    return cpu, f"pinned to CPU {cpu} of {allowed} ({how}, os.sched_setaffinity)"


def _least_busy(allowed: list[int]) -> tuple[int, str]:
    try:
        import psutil
    except ImportError:
        return allowed[-1], "last allowed CPU"
    busy = psutil.cpu_percent(interval=0.3, percpu=True)
    cpu = min(allowed, key=lambda c: busy[c] if c < len(busy) else 100.0)
    loads = ", ".join(f"cpu{c} {busy[c]:.0f}%" for c in allowed if c < len(busy))
    return cpu, f"least busy over 0.3 s: {loads}"


def environment(cpu: int | None, pinning: str) -> dict[str, Any]:
    """What a reader needs to judge the numbers: interpreter, kernel, load, pinning."""
    import rawepoll

    env: dict[str, Any] = {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rawepoll": rawepoll.__version__,
        "pinning": pinning,
        "pinned": "not pinned" if cpu is None else f"pinned to CPU {cpu}",
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    return env


# -- timing ---------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How long and how often to measure."""

    rounds: int
    repeat: int  # batches per contender per round; the fastest one counts
    batch_ms: float  # target duration of one batch

    @property
    def batch_ns(self) -> int:
        return int(self.batch_ms * 1e6)


def _run(timer: Timer, loops: int) -> int:
    enabled = gc.isenabled()
    gc.disable()
    try:
        return timer(loops)
    finally:
        if enabled:
            gc.enable()


def calibrate(timer: Timer, batch_ns: int) -> int:
    """The loop count that makes one batch of ``timer`` last about ``batch_ns``."""
    _run(timer, 1)  # warm up: first-call caches, lazy allocations
    loops = 1
    while True:
        elapsed = _run(timer, loops)
        if elapsed >= batch_ns // 10 or loops >= 1 << 24:
            break
        loops *= 2
    per_op = max(elapsed / loops, 1.0)
    return max(1, round(batch_ns / per_op))


def alternate(timers: Sequence[Timer], settings: Settings) -> list[list[float]]:
    """Time ``timers`` side by side; per timer, one ns/op figure per round.

    Within a round the batches are interleaved (A B A B ...); the round's figure
    for a timer is its fastest batch.  Odd rounds reverse the order.
    """
    loops = [calibrate(timer, settings.batch_ns) for timer in timers]
    per_round: list[list[float]] = [[] for _ in timers]
    for round_index in range(settings.rounds):
        order = list(range(len(timers)))
        if round_index % 2:
            order.reverse()
        best = [float("inf")] * len(timers)
        for _ in range(settings.repeat):
            for i in order:
                best[i] = min(best[i], _run(timers[i], loops[i]) / loops[i])
        for i, value in enumerate(best):
            per_round[i].append(value)
    return per_round


@dataclass(frozen=True)
class Spread:
    """The median of per-round figures and their range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        return cls(statistics.median(samples), min(samples), max(samples))


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-round ratios of two contenders timed in the same rounds."""
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


# -- output ---------------------------------------------------------------


def show_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table on a terminal, aligned plain text otherwise (pipes, files, CI).

    The first column is left-aligned, the others right-aligned.
    """
    if sys.stdout.isatty():
        try:
            from rich import box
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
            for i, header in enumerate(headers):
                table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
            for row in rows:
                table.add_row(*row)
            Console().print(table)
            return
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    print(title)
    print(line(headers))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print(line(row))


def show_environment(env: dict[str, Any], settings: Settings) -> None:
    print(
        f"{env['python']} on Linux {env['kernel']} {env['machine']}, {env['cpus']} CPUs, "
        f"load {env['loadavg_1m']}; rawepoll {env['rawepoll']}"
    )
    print(f"process {env['pinning']}")
    print(
        f"{settings.rounds} rounds x {settings.repeat} interleaved batches of ~"
        f"{settings.batch_ms:g} ms per contender; per round the fastest batch counts; "
        "figures are medians over rounds, spread = min-max of per-round ratios"
    )
    print(flush=True)


def progress(message: str) -> None:
    """One line on stderr, so a long run shows it is alive without touching stdout."""
    print(message, file=sys.stderr, flush=True)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}"


def fmt_spread(spread: Spread) -> str:
    return f"{spread.low:.2f}-{spread.high:.2f}"
