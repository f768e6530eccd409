"""Scaling: the cost of one wait with 1 ready descriptor among N idle ones.

The seed's claim is that epoll's cost follows the number of *ready*
descriptors while select and poll pay for every *watched* one.  Here the
watched set is N idle eventfds (never written, so never readable) plus one
active eventfd holding a count, which stays readable (level-triggered) for the
whole run.  The active one is opened last, so it has the highest number and
sits at the end of every list.  Every wait has timeout 0; each contender's one
result is iterated, as a server would.

What one "wait" is, for each contender:

select.select     ``select.select(fds, [], [], 0)`` with ``fds`` a list of the
                  N+1 ints built once.  Every call, CPython walks the list to
                  build an fd_set, the kernel scans bits 0..max fd, and CPython
                  walks the list again to pick the ready ones out of the
                  result.  Only while every fd is below FD_SETSIZE (1024).
select.poll       ``p.poll(0)`` with the N+1 fds registered once.  CPython keeps
                  the pollfd array between calls (rebuilt only after a
                  (un)register), the kernel polls all N+1 entries, and CPython
                  scans the array until it has found every ready entry -- all
                  of it, since the active fd is last.
select.epoll      ``ep.poll(0)``: epoll_wait into a malloc'd 1023-entry buffer and
                  a new list of (fd, events) tuples.
Epoll.wait        rawepoll: ``n = ep.wait(events, 0)`` into a reused
                  ``EventArray(1023)``, then ``events.ready(n)``.
unix.EpollWait    rawepoll's Go mirror: ``n = unix.EpollWait(epfd, events, 0)``,
                  then ``events.ready(n)``.

The N idle descriptors are eventfds (one fd each; a socketpair costs two), so
N can go up to RLIMIT_NOFILE minus what the process already holds.  Each N is
set up, measured (all contenders alternating in rounds) and closed before the
next.  Output: a table of µs per wait (median over rounds, min-max) and each
contender's per-round ratio to select.epoll; with matplotlib, a log-log PNG
``scaling.png`` and ``scaling.json`` in ``--out`` (default ``bench-results/``).

Usage: ``python bench/scaling.py [--quick] [--rounds N] [--n 10,100,...] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import select
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
from _common import FD_SETSIZE, Settings, Spread, Timer

import rawepoll
from rawepoll import unix
from rawepoll.events import EventArray

DEFAULT_NS = (10, 100, 1000, 5000, 10000, 19000)
QUICK_NS = (10, 100, 1000, 10000)
RESERVED_FDS = 64  # epoll fds, /proc listing, imports, matplotlib's font files
BUFFER = 1023  # select.epoll.poll's default maxevents
REFERENCE = "select.epoll"


# -- contenders: each takes the watched fds (active one last) -> Timer ------


def select_select(fds: list[int], stack: contextlib.ExitStack) -> Timer:
    rlist = list(fds)
    empty: list[int] = []
    sel = select.select

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            for _fd in sel(rlist, empty, empty, 0)[0]:
                pass
        return time.perf_counter_ns() - t0

    return run


def select_poll(fds: list[int], stack: contextlib.ExitStack) -> Timer:
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    poll = poller.poll

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            for _fd, _ev in poll(0):
                pass
        return time.perf_counter_ns() - t0

    return run


def select_epoll(fds: list[int], stack: contextlib.ExitStack) -> Timer:
    ep = select.epoll()
    stack.callback(ep.close)
    for fd in fds:
        ep.register(fd, select.EPOLLIN)
    poll = ep.poll

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            for _fd, _ev in poll(0):
                pass
        return time.perf_counter_ns() - t0

    return run


def _rawepoll(fds: list[int], stack: contextlib.ExitStack) -> rawepoll.Epoll:
    ep = rawepoll.Epoll()
    stack.callback(ep.close)
    for fd in fds:
        ep.register(fd, rawepoll.EPOLLIN)
    return ep


def epoll_wait(fds: list[int], stack: contextlib.ExitStack) -> Timer:
    wait = _rawepoll(fds, stack).wait
    events = EventArray(BUFFER)
    ready = events.ready

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            n = wait(events, 0)
            for _fd, _ev in ready(n):
                pass
        return time.perf_counter_ns() - t0

    return run


def unix_epoll_wait(fds: list[int], stack: contextlib.ExitStack) -> Timer:
    epfd = _rawepoll(fds, stack).fileno()
    events = EventArray(BUFFER)
    ready = events.ready
    wait = unix.EpollWait

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            n = wait(epfd, events, 0)
            for _fd, _ev in ready(n):
                pass
        return time.perf_counter_ns() - t0

    return run


Factory = Callable[[list[int], contextlib.ExitStack], Timer]
CONTENDERS: dict[str, Factory] = {
    "select.select": select_select,
    "select.poll": select_poll,
    REFERENCE: select_epoll,
    "Epoll.wait": epoll_wait,
    "unix.EpollWait": unix_epoll_wait,
}


# -- measuring ----------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    n: int
    method: str
    us: Spread  # µs per wait
    vs_reference: Spread  # per-round ratio to select.epoll
    per_round_us: list[float]


def fd_budget() -> int:
    """How many more descriptors this process may open, keeping a reserve."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return soft - len(os.listdir("/proc/self/fd")) - RESERVED_FDS


def choose_ns(wanted: Sequence[int], budget: int) -> tuple[list[int], str]:
    """The N values that fit the fd budget (each N costs N+1 eventfds)."""
    fitting = sorted({n for n in wanted if n + 1 <= budget})
    note = ""
    if len(fitting) < len(set(wanted)):
        top = budget - 1
        if top > (fitting[-1] if fitting else 0):
            fitting.append(top)
        note = f"N capped at {top} by RLIMIT_NOFILE ({budget} fds available)"
    return fitting, note


def open_eventfds(stack: contextlib.ExitStack, count: int) -> list[int]:
    fds = []
    for _ in range(count):
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        stack.callback(os.close, fd)
        fds.append(fd)
    return fds


def measure_n(n: int, settings: Settings) -> list[Row]:
    with contextlib.ExitStack() as stack:
        fds = open_eventfds(stack, n + 1)  # the last one is the active one
        os.eventfd_write(fds[-1], 1)
        names = [name for name in CONTENDERS if name != "select.select" or max(fds) < FD_SETSIZE]
        timers = [CONTENDERS[name](fds, stack) for name in names]
        per_round = _common.alternate(timers, settings)
    reference = per_round[names.index(REFERENCE)]
    return [
        Row(
            n=n,
            method=name,
            us=Spread.of([ns / 1000 for ns in rounds]),
            vs_reference=Spread.of(_common.ratios(rounds, reference)),
            per_round_us=[ns / 1000 for ns in rounds],
        )
        for name, rounds in zip(names, per_round, strict=True)
    ]


# -- output -------------------------------------------------------------------


def show(rows: list[Row]) -> None:
    headers = ["N idle", "method", "µs/wait", "min-max µs", f"÷ {REFERENCE}", "spread"]
    table = []
    for row in rows:
        table.append(
            [
                f"{row.n:,}",
                row.method,
                f"{row.us.median:.2f}",
                f"{row.us.low:.2f}-{row.us.high:.2f}",
                _common.fmt_ratio(row.vs_reference.median),
                "reference" if row.method == REFERENCE else _common.fmt_spread(row.vs_reference),
            ]
        )
    _common.show_table(
        "one wait, timeout 0, 1 ready fd among N idle (µs: median of rounds; "
        f"÷ {REFERENCE}: median of per-round ratios)",
        headers,
        table,
    )


def plot(rows: list[Row], env: dict[str, Any], settings: Settings, path: Path) -> bool:
    """The log-log plot of µs per wait against N; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    styles = {"select.select": "s", "select.poll": "D", REFERENCE: "o"}
    for method in CONTENDERS:
        mine = [row for row in rows if row.method == method]
        if not mine:
            continue
        xs = [row.n for row in mine]
        ys = [row.us.median for row in mine]
        err = [
            [row.us.median - row.us.low for row in mine],
            [row.us.high - row.us.median for row in mine],
        ]
        ax.errorbar(
            xs, ys, yerr=err, marker=styles.get(method, "^"), capsize=3, label=method, lw=1.5
        )
    ax.axvline(FD_SETSIZE, color="grey", ls=":", lw=1)
    ax.annotate(
        " FD_SETSIZE: select.select ends",
        (FD_SETSIZE, 0.98),
        xycoords=("data", "axes fraction"),
        va="top",
        fontsize=8,
        color="grey",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N idle descriptors registered (plus 1 ready)")
    ax.set_ylabel("µs per wait (timeout 0), median of rounds")
    fig.suptitle("Cost of one wait with 1 ready fd among N idle fds")
    ax.set_title(
        f"{env['python']}, Linux {env['kernel']}, {env['pinned']}; "
        f"{settings.rounds} rounds, timeout 0",
        fontsize=8,
        color="grey",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="bars: min-max over rounds", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def as_json(rows: list[Row], env: dict[str, Any], settings: Settings) -> dict[str, Any]:
    return {
        "benchmark": "scaling",
        "environment": env,
        "settings": settings,
        "reference": REFERENCE,
        "results": [
            {
                "n_idle": row.n,
                "method": row.method,
                "us_per_wait": row.us,
                "ratio_to_reference": row.vs_reference,
                "per_round_us": row.per_round_us,
            }
            for row in rows
        ],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 11, quick 5)")
    parser.add_argument("--quick", action="store_true", help=f"N in {QUICK_NS}, fewer rounds")
    parser.add_argument(
        "--n",
        type=lambda text: [int(part) for part in text.split(",")],
        help=f"comma-separated N values (default {','.join(map(str, DEFAULT_NS))})",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="where the PNG and JSON go"
    )
    parser.add_argument("--cpu", type=int, help="pin to this CPU (default: the least busy)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.n is not None and min(args.n) < 0:
        parser.error("--n values must be non-negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        settings = Settings(rounds=args.rounds or 5, repeat=3, batch_ms=3)
        wanted = args.n or QUICK_NS
    else:
        settings = Settings(rounds=args.rounds or 11, repeat=5, batch_ms=10)
        wanted = args.n or DEFAULT_NS
    env = _common.environment(*_common.pin_cpu(args.cpu, enabled=not args.no_pin))
    ns, note = choose_ns(wanted, fd_budget())
    _common.show_environment(env, settings)
    if note:
        print(note + "\n", flush=True)

    rows: list[Row] = []
    for n in ns:
        _common.progress(f"scaling: N = {n:,} ...")
        rows += measure_n(n, settings)
    show(rows)

    _common.write_json(args.out / "scaling.json", as_json(rows, env, settings))
    print(f"\nwrote {args.out / 'scaling.json'}")
    if plot(rows, env, settings, args.out / "scaling.png"):
        print(f"wrote {args.out / 'scaling.png'}")
    else:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
