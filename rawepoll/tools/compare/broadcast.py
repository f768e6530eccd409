"""Broadcast: the server's CPU per delivered message, one publish to N subscribers, next to a floor.

There is no system call that sends to many sockets: a publish to N
subscribers is N ``write`` calls, and on loopback each also runs the
receiver's TCP input in the writer's context.  What a server adds to that is
its own cost, so the section measures three servers side by side, each
speaking the protocols of ``rawepoll serve --handler
rawepoll.server.handler:LinePubSubHandler --control PATH`` (``SUB topic``,
``MSG topic payload``; ``PUBLISH`` on a control socket), so that the same
subscribers and the same publisher drive them all:

==================  ==========================================================
``C floor``         ``c/fanout.c``, compiled with gcc into a temporary
                    directory when the section starts (skipped, with a note,
                    without gcc): accept, answer ``SUB``, and for a publish
                    write the same bytes to every subscriber in a tight loop
``asyncio fan-out`` :mod:`~rawepoll.tools.compare.peers.asyncio_fanout`: the
                    frame built once, written to every transport as
                    ``websockets.broadcast`` does
``rawepoll``        ``rawepoll serve --handler ...LinePubSubHandler --control``
==================  ==========================================================

Each gets the same number of processes for an N: one up to
:data:`PER_PROCESS` subscribers, ``ceil(N / PER_PROCESS)`` beyond (the
descriptor limit, ``RLIMIT_NOFILE``, is per process; rawepoll's workers share
the listener with ``--balance fill --max-conns``, the others take turns
through ``SO_REUSEPORT`` listeners).

How a figure is made, per N, server and round:

1. the server starts pinned to the server CPU (its workers inherit the pin),
   with a fresh control socket;
2. N connections subscribe -- the load processes of ``rawepoll bench
   --broadcast`` (:mod:`rawepoll.tools.loadgen.broadcast`) on the load CPU,
   as many as the descriptor limit needs, from source addresses of
   127.0.0.0/8 beyond :data:`~rawepoll.tools.compare.memory.PER_SOURCE`
   connections -- each subscription verified;
3. the CPU clocks of every process of the server are read; ``K`` messages
   are published one at a time (each once the previous one has reached every
   subscriber; ``K = max(3, deliveries / N)``) and every delivery verified --
   number, order, bytes; the clocks are read again.  **Server CPU per
   delivery** = the difference / deliveries; for the floor that is its CPU
   per ``write``;
4. the subscribers and the server stop.

A lost, duplicated, reordered or mismatched delivery, an error, or a
subscriber that did not subscribe is a bug, not a number: that server is
reported FAILED at that N, and the comparison exits 1.  Rounds alternate the
servers (A B C, then C B A, ...) at each N; reported are medians with their
min-max, the median of per-round ratios to the floor, and the delivery times
(publish to arrival) of one broadcast at the largest N.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rawepoll.tools.compare import machine, report
from rawepoll.tools.compare.memory import PER_SOURCE, sources_for
from rawepoll.tools.compare.report import Table
from rawepoll.tools.compare.stats import Spread, ratios, round_order
from rawepoll.tools.loadgen.broadcast import Publication, merge, publish
from rawepoll.tools.loadgen.result import BroadcastResult
from rawepoll.tools.loadgen.spec import LoadSpec
from rawepoll.tools.loadgen.workers import Holding, prepare
from rawepoll.tools.serverproc import ServerError, ServerProcess

__all__ = [
    "CONTENDERS",
    "FLOOR",
    "PER_PROCESS",
    "FanoutError",
    "Plan",
    "Result",
    "build_floor",
    "measure",
]

FLOOR: Final = "C floor"
CONTENDERS: Final = (FLOOR, "asyncio fan-out", "rawepoll")
PER_PROCESS: Final = 19_000  # subscribers per server process and per load process
MIN_MESSAGES: Final = 3  # publishes per run at least
MAX_PROCESSES: Final = 16  # server workers at most (the floor's limit is 64)
START_S: Final = 30.0
STOP_S: Final = 10.0
TOPIC: Final = "fanout"
GOAL: Final = 1.3  # rawepoll's CPU per delivery, times the floor's, at most
_PEER: Final = "rawepoll.tools.compare.peers.asyncio_fanout"
_HANDLER: Final = "rawepoll.server.handler:LinePubSubHandler"


class FanoutError(ServerError):
    """A delivery went wrong (lost, duplicated, reordered, mismatched) or a subscriber failed."""


@dataclass(frozen=True)
class Plan:
    rounds: int
    subscribers: tuple[int, ...]  # N, after scaling down to what the limits allow
    deliveries: int  # per run: K = max(MIN_MESSAGES, deliveries // N) publishes
    host: str
    server_cpu: int | None
    load_cpu: int | None

    def messages(self, n: int) -> int:
        return max(MIN_MESSAGES, self.deliveries // n)


def per_process() -> int:
    """Subscribers one process holds: :data:`PER_PROCESS`, or fewer if ``RLIMIT_NOFILE`` says so."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return PER_PROCESS
    return max(10, min(PER_PROCESS, hard - 1000))


def processes(n: int) -> int:
    """Server processes (and load processes) for ``n`` subscribers."""
    return max(1, math.ceil(n / per_process()))


def scale(wanted: tuple[int, ...]) -> tuple[tuple[int, ...], list[str]]:
    """``wanted`` capped to what this machine allows; a sentence per cap.

    A process holds at most ``RLIMIT_NOFILE`` descriptors (so N needs
    :func:`processes` of them, at most :data:`MAX_PROCESSES`), and the
    system as a whole ``fs.file-max`` (two per loopback connection).
    """
    room = (machine.file_room() - 10_000) // 2
    cap = max(10, min(per_process() * MAX_PROCESSES, room))
    notes = [
        f"{n:,} subscribers capped at {cap:,} by RLIMIT_NOFILE ({per_process():,} per process, "
        f"{MAX_PROCESSES} processes at most) or fs.file-max"
        for n in wanted
        if n > cap
    ]
    return tuple(sorted({min(n, cap) for n in wanted})), notes


# -- the servers ------------------------------------------------------------------


def build_floor(workdir: Path) -> Path | str:
    """Compile ``c/fanout.c`` into ``workdir``: the binary, or why it could not be built."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return "gcc is not installed: no C floor"
    source = importlib.resources.files("rawepoll.tools.compare").joinpath("c/fanout.c")
    binary = workdir / "fanout"
    with importlib.resources.as_file(source) as path:
        done = subprocess.run(
            [gcc, "-O2", "-o", str(binary), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if done.returncode != 0:
        return f"gcc could not build the floor: {done.stderr.strip()[-300:]}"
    return binary


def command(name: str, host: str, control: str, workers: int, floor: Path) -> list[str]:
    """How to start server ``name`` with ``workers`` processes (--status-fd is added later)."""
    where = ["--host", host, "--port", "0", "--control", control]
    if name == FLOOR:
        return [str(floor), *where, "--workers", str(workers)]
    if name == "asyncio fan-out":
        return [sys.executable, "-m", _PEER, *where, "--workers", str(workers)]
    serve = [sys.executable, "-m", "rawepoll", "serve", *where, "--handler", _HANDLER, "--quiet"]
    if workers > 1:
        serve += ["--workers", str(workers), "--balance", "fill", "--max-conns", str(per_process())]
    return serve


@contextlib.contextmanager
def running(
    name: str, n: int, plan: Plan, floor: Path, workdir: Path
) -> Iterator[tuple[ServerProcess, str]]:
    """Server ``name`` for ``n`` subscribers, pinned, and its control socket; stopped on the
    way out."""
    control = str(workdir / f"control-{time.monotonic_ns()}.sock")
    argv = command(name, plan.host, control, processes(n), floor)
    server = ServerProcess(
        argv,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        cpu=plan.server_cpu,
        start_bound=START_S,
        stop_bound=STOP_S,
        name=name,
    )
    with server:
        yield server, control


# -- one run ------------------------------------------------------------------------


@dataclass
class Run:
    """One server, one N, one round."""

    messages: int  # published
    deliveries: int
    server_cpu_ns: int  # every process of the server, over the publishing
    deliveries_per_s: float
    p50_us: float
    p99_us: float
    max_us: float
    to_all_p50_us: float
    to_all_max_us: float
    loadgen_cpu_s: float

    @property
    def cpu_us(self) -> float:
        return self.server_cpu_ns / self.deliveries / 1e3


def _load_spec(server: ServerProcess, n: int, plan: Plan, control: str) -> LoadSpec:
    return LoadSpec(
        host=server.host,
        port=server.port,
        conns=n,
        size=64,
        duration=None,
        messages=plan.messages(n),
        procs=processes(n),
        source_addrs=sources_for(server.host, n) if n > PER_SOURCE else None,
        cpus=None if plan.load_cpu is None else [plan.load_cpu],
        broadcast=True,
        topic=TOPIC,
        control=control,
    )


def measure_run(server: ServerProcess, control: str, n: int, plan: Plan) -> Run:
    """Subscribe ``n`` connections to ``server``, publish through ``control``, verify, time."""
    load = prepare(_load_spec(server, n, plan, control))
    pids = sorted({server.pid, *server.ready.workers})
    deadline = time.monotonic() + 60 + n / 500
    with Holding(load) as held:
        connect_s = held.open(None, deadline)
        subscribed = held.counts["established"]
        if subscribed < n:
            held.finish()
            problems = [p for child in held.children if child.done for p in child.done.problems]
            raise FanoutError(f"{subscribed:,} of {n:,} subscribed; {'; '.join(problems[:2])}")
        server.check_alive()
        before = machine.total_cpu_ns(pids)
        publication = Publication()
        publish(held, publication, deadline + 60)
        spent = machine.total_cpu_ns(pids) - before
        held.finish()
        result = merge(held, publication, connect_s)
    server.check_alive()
    _check(result)
    return Run(
        messages=result.published,
        deliveries=result.delivered,
        server_cpu_ns=spent,
        deliveries_per_s=result.deliveries_per_s,
        p50_us=result.p50_us,
        p99_us=result.p99_us,
        max_us=result.max_us,
        to_all_p50_us=result.to_all_p50_us,
        to_all_max_us=result.to_all_max_us,
        loadgen_cpu_s=result.loadgen_cpu_s,
    )


def _check(result: BroadcastResult) -> None:
    if not result.ok or not result.delivered:
        raise FanoutError(
            f"{result.delivered:,} of {result.expected:,} deliveries verified, {result.lost} lost, "
            f"{result.duplicates} duplicated, {result.reordered} reordered, "
            f"{result.mismatches} mismatches, {result.errors} errors"
            + (f": {result.problems[0]}" if result.problems else "")
        )


# -- rounds ---------------------------------------------------------------------------


@dataclass
class Series:
    """One server at one N: a run per round."""

    server: str
    n: int
    workers: int
    runs: list[Run] = field(default_factory=list)

    def spread(self, figure: str) -> Spread:
        return Spread.of([getattr(run, figure) for run in self.runs])


def run_rounds(names: list[str], plan: Plan, floor: Path, failures: dict[str, str]) -> list[Series]:
    series = {(name, n): Series(name, n, processes(n)) for n in plan.subscribers for name in names}
    with tempfile.TemporaryDirectory(prefix="rawepoll-fanout-") as tmp:
        for round_index in range(plan.rounds):
            for n in plan.subscribers:
                for name in round_order(names, round_index):
                    key = f"{name}, {n:,} subscribers"
                    if key in failures:
                        continue
                    report.progress(
                        f"broadcast: round {round_index + 1}/{plan.rounds}, {n:,} subscribers, "
                        f"{name} ..."
                    )
                    try:
                        with running(name, n, plan, floor, Path(tmp)) as (server, control):
                            series[name, n].runs.append(measure_run(server, control, n, plan))
                    except (ServerError, OSError, ValueError, TimeoutError) as exc:
                        failures[key] = f"round {round_index + 1}: {exc}"
                        report.progress(f"broadcast: FAILED {key}: {exc}")
    return list(series.values())


# -- report ---------------------------------------------------------------------------


@dataclass
class Result:
    plan: Plan
    series: list[Series]
    skipped: dict[str, str]  # server -> why it did not run
    failures: dict[str, str]  # "server, N subscribers" -> what went wrong
    notes: list[str]  # N scaled down, and why

    def _floor(self, s: Series) -> Series | None:
        found = next((r for r in self.series if r.server == FLOOR and r.n == s.n), None)
        return found if found is not None and len(found.runs) == len(s.runs) else None

    def _ratio(self, s: Series) -> Spread | None:
        floor = self._floor(s)
        if floor is None or not s.runs:
            return None
        return Spread.of(ratios([r.cpu_us for r in s.runs], [r.cpu_us for r in floor.runs]))

    def tables(self) -> list[Table]:
        tables = [self._cpu_table(n) for n in self.plan.subscribers]
        largest = max(self.plan.subscribers)
        tables.append(self._latency_table(largest))
        tables[-1].notes = [
            "CPU µs/delivery: the user+sys CPU of every process of the server over the "
            "publishing, divided by the deliveries verified (for the floor: its CPU per write); "
            "x C floor: the median of per-round ratios, spread their min-max; deliveries/s: "
            "first publish to last delivery; delivery µs: publish to arrival, every delivery; "
            "to all: publish to the last subscriber's arrival, per message.",
            f"Messages are published one at a time (each once the last reached every "
            f"subscriber), 64-byte payloads; goal: rawepoll <= {GOAL}x the C floor per delivery.",
            *self.notes,
            *(f"skipped {name}: {why}" for name, why in self.skipped.items()),
            *(f"FAILED {name}: {what}" for name, what in self.failures.items()),
        ]
        return tables

    def _cpu_table(self, n: int) -> Table:
        rows = []
        for s in self.series:
            if s.n != n or not s.runs:
                continue
            cpu, ratio = s.spread("cpu_us"), self._ratio(s)
            rows.append(
                [
                    s.server,
                    str(s.workers),
                    f"{cpu.median:.2f}",
                    report.fmt_spread(cpu),
                    "-" if ratio is None else report.fmt_ratio(ratio.median),
                    "-" if ratio is None else report.fmt_spread(ratio),
                    f"{s.spread('deliveries_per_s').median:,.0f}",
                    f"{s.runs[0].messages}",
                ]
            )
        return Table(
            f"5. broadcast to {n:,} subscribers: server CPU per delivery, median of "
            f"{report.rounds(self.plan.rounds)}",
            [
                "server",
                "processes",
                "CPU µs/delivery",
                "min-max",
                "x C floor",
                "spread",
                "deliveries/s",
                "publishes/run",
            ],
            rows,
        )

    def _latency_table(self, n: int) -> Table:
        rows = []
        for s in self.series:
            if s.n != n or not s.runs:
                continue
            most = s.spread("max_us")
            rows.append(
                [
                    s.server,
                    f"{s.spread('p50_us').median:,.0f}",
                    f"{s.spread('p99_us').median:,.0f}",
                    f"{most.median:,.0f}",
                    report.fmt_spread(most, 0),
                    f"{s.spread('to_all_p50_us').median:,.0f}",
                    f"{s.spread('to_all_max_us').median:,.0f}",
                ]
            )
        return Table(
            f"5b. delivery time of one broadcast to {n:,} subscribers, µs, median of "
            f"{report.rounds(self.plan.rounds)}",
            ["server", "p50", "p99", "max", "max min-max", "to all p50", "to all max"],
            rows,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "goal_ratio_to_floor": GOAL,
            "notes": self.notes,
            "skipped": self.skipped,
            "failures": self.failures,
            "results": [
                {
                    "server": s.server,
                    "subscribers": s.n,
                    "processes": s.workers,
                    "rounds": len(s.runs),
                    "messages_per_run": s.runs[0].messages,
                    "cpu_us_per_delivery": s.spread("cpu_us"),
                    "ratio_to_floor": self._ratio(s),
                    "deliveries_per_s": s.spread("deliveries_per_s"),
                    "delivery_p50_us": s.spread("p50_us"),
                    "delivery_p99_us": s.spread("p99_us"),
                    "delivery_max_us": s.spread("max_us"),
                    "to_all_p50_us": s.spread("to_all_p50_us"),
                    "to_all_max_us": s.spread("to_all_max_us"),
                    "per_round": s.runs,
                }
                for s in self.series
                if s.runs
            ],
        }

    def plot(self, path: Path, subtitle: str) -> bool:
        """Server CPU per delivery, per server and N; False without matplotlib or figures."""
        plt = report.pyplot()
        ns = [n for n in self.plan.subscribers if any(s.n == n and s.runs for s in self.series)]
        if plt is None or not ns:
            return False
        fig, axes = plt.subplots(
            1, len(ns), figsize=(5.0 * len(ns), 3.8), layout="constrained", squeeze=False
        )
        for ax, n in zip(axes[0], ns, strict=True):
            shown = [s for s in self.series if s.n == n and s.runs]
            colors = ["tab:blue" if s.server == "rawepoll" else "tab:grey" for s in shown]
            report.bars(
                ax, [s.server for s in shown], [s.spread("cpu_us") for s in shown], "{:.2f}", colors
            )
            ax.set_xlabel("server CPU µs per delivery")
            ax.set_title(f"{n:,} subscribers", fontsize=10)
        fig.suptitle(
            f"Broadcast: server CPU per delivery, one publish at a time (bars: min-max over "
            f"{report.rounds(self.plan.rounds)})\n{subtitle}",
            fontsize=10,
        )
        report.save(plt, fig, path)
        return True


def measure(plan: Plan, notes: list[str]) -> Result:
    """Every server at every N, alternating in rounds; the floor built first."""
    skipped: dict[str, str] = {}
    failures: dict[str, str] = {}
    names = list(CONTENDERS)
    with tempfile.TemporaryDirectory(prefix="rawepoll-floor-") as tmp:
        floor = build_floor(Path(tmp)) if FLOOR in names else Path(tmp, "fanout")
        if isinstance(floor, str):
            skipped[FLOOR] = floor
            names.remove(FLOOR)
            floor = Path(tmp, "fanout")
        series = run_rounds(names, plan, floor, failures)
    return Result(plan, series, skipped, failures, notes)
