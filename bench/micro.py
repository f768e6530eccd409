"""Micro-benchmarks: what the ctypes binding costs next to ``select.epoll``.

Every row times one operation of the standard library (A) and of rawepoll (B)
side by side in the same rounds and reports B/A: below 1 rawepoll is faster.
The operations (``ep`` a rawepoll.Epoll, ``std`` a select.epoll watching the
same descriptors, ``events`` an ``EventArray(1023)`` -- the buffer size
``select.epoll.poll`` allocates on every call):

busy wait, 64 ready
    64 socketpairs with one unread byte each, registered EPOLLIN
    (level-triggered, so all 64 stay ready); A iterates ``std.poll(0)``, B does
    ``n = ep.wait(events, 0)`` and iterates ``events.ready(n)``.  Every pair is
    unpacked into ``fd, ev``.
empty wait
    64 idle socketpairs, nothing ready: ``std.poll(0)`` vs ``ep.wait(events, 0)``.
register+unregister
    ``register(fd, EPOLLIN); unregister(fd)`` of one socket.
Epoll.poll, 64 ready
    the drop-in: ``Epoll.poll(0)`` vs ``select.epoll.poll(0)``, results iterated.
    Not targeted.
unix.EpollWait, 64 ready
    the Go-mirror layer: ``unix.EpollWait(epfd, events, 0)`` plus
    ``events.ready(n)``, vs the stdlib busy loop.  Not targeted.
floor: ctypes, ...
    a bare ctypes call of ``epoll_wait`` (the GIL-holding PyDLL function
    ``Epoll.wait`` uses for timeout 0) with no argument checks: the cheapest
    any ctypes binding can be.  From 1.0 to this row is ctypes' own call
    overhead; from this row to the ``wait`` row is what rawepoll's Python adds.

Usage: ``python bench/micro.py [--rounds N] [--quick] [--json PATH] [--cpu K | --no-pin]``.
Exits 0 whether or not a target is met: benchmarks report, they don't fail.
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
from _common import Settings, Spread, Timer

import rawepoll
from rawepoll import _libc, unix
from rawepoll.events import EventArray

READY = 64  # descriptors ready in the busy cases
BUFFER = 1023  # select.epoll.poll's default maxevents (FD_SETSIZE - 1)


@dataclass(frozen=True)
class Case:
    name: str
    stdlib_code: str  # A, what one operation is
    rawepoll_code: str  # B
    stdlib: Timer
    rawepoll: Timer
    target: float | None  # B/A must be at most this; None: reported only


@dataclass(frozen=True)
class Result:
    name: str
    stdlib_ns: Spread
    rawepoll_ns: Spread
    ratio: Spread
    target: float | None
    stdlib_rounds: list[float]
    rawepoll_rounds: list[float]

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "info"
        return "PASS" if self.ratio.median <= self.target else "MISS"


# -- fixtures -------------------------------------------------------------


def socketpairs(stack: contextlib.ExitStack, count: int, *, fill: bool) -> list[int]:
    """``count`` socketpairs; returns the fds to watch (with 1 unread byte if ``fill``)."""
    watched = []
    for _ in range(count):
        a, b = socket.socketpair()
        stack.callback(a.close)
        stack.callback(b.close)
        if fill:
            b.send(b"x")
        watched.append(a.fileno())
    return watched


def epoll_pair(stack: contextlib.ExitStack, fds: list[int]) -> tuple[Any, rawepoll.Epoll]:
    """A ``select.epoll`` and a ``rawepoll.Epoll`` each watching ``fds`` for EPOLLIN."""
    std = select.epoll()
    stack.callback(std.close)
    ep = rawepoll.Epoll()
    stack.callback(ep.close)
    for fd in fds:
        std.register(fd, select.EPOLLIN)
        ep.register(fd, rawepoll.EPOLLIN)
    return std, ep


# -- the timed loops --------------------------------------------------------
# Each returns a Timer; the loop is written out so nothing but the operation
# and one `for` step is timed.


def std_poll_iter(std: Any) -> Timer:
    poll = std.poll

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            for _fd, _ev in poll(0):
                pass
        return time.perf_counter_ns() - t0

    return run


def std_poll(std: Any) -> Timer:
    poll = std.poll

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            poll(0)
        return time.perf_counter_ns() - t0

    return run


def raw_wait_iter(ep: rawepoll.Epoll, events: EventArray) -> Timer:
    wait = ep.wait
    ready = events.ready

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            n = wait(events, 0)
            for _fd, _ev in ready(n):
                pass
        return time.perf_counter_ns() - t0

    return run


def raw_wait(ep: rawepoll.Epoll, events: EventArray) -> Timer:
    wait = ep.wait

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            wait(events, 0)
        return time.perf_counter_ns() - t0

    return run


def raw_poll_iter(ep: rawepoll.Epoll) -> Timer:
    poll = ep.poll

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            for _fd, _ev in poll(0):
                pass
        return time.perf_counter_ns() - t0

    return run


def unix_wait_iter(epfd: int, events: EventArray) -> Timer:
    epoll_wait = unix.EpollWait
    ready = events.ready

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            n = epoll_wait(epfd, events, 0)
            for _fd, _ev in ready(n):
                pass
        return time.perf_counter_ns() - t0

    return run


def bare_ctypes_iter(epfd: int, events: EventArray) -> Timer:
    epoll_wait = _libc.function("epoll_wait", blocking=False)
    array = events.array
    length = len(events)
    ready = events.ready

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            n = epoll_wait(epfd, array, length, 0)
            for _fd, _ev in ready(n):
                pass
        return time.perf_counter_ns() - t0

    return run


def bare_ctypes(epfd: int, events: EventArray) -> Timer:
    epoll_wait = _libc.function("epoll_wait", blocking=False)
    array = events.array
    length = len(events)

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            epoll_wait(epfd, array, length, 0)
        return time.perf_counter_ns() - t0

    return run


def register_unregister(ep: Any, fd: int, mask: int) -> Timer:
    register = ep.register
    unregister = ep.unregister

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            register(fd, mask)
            unregister(fd)
        return time.perf_counter_ns() - t0

    return run


# -- the cases --------------------------------------------------------------


def build_cases(stack: contextlib.ExitStack) -> list[Case]:
    events = EventArray(BUFFER)
    busy_std, busy_ep = epoll_pair(stack, socketpairs(stack, READY, fill=True))
    idle_std, idle_ep = epoll_pair(stack, socketpairs(stack, READY, fill=False))
    lone_std, lone_ep = epoll_pair(stack, [])
    (lone_fd,) = socketpairs(stack, 1, fill=False)

    busy_epfd = busy_ep.fileno()
    idle_epfd = idle_ep.fileno()
    busy = f"{READY} ready"
    return [
        Case(
            f"busy wait, {busy}",
            "for fd, ev in std.poll(0)",
            "n = ep.wait(events, 0); for fd, ev in events.ready(n)",
            std_poll_iter(busy_std),
            raw_wait_iter(busy_ep, events),
            0.90,
        ),
        Case(
            "empty wait",
            "std.poll(0)",
            "ep.wait(events, 0)",
            std_poll(idle_std),
            raw_wait(idle_ep, events),
            1.5,
        ),
        Case(
            "register+unregister",
            "std.register(fd, EPOLLIN); std.unregister(fd)",
            "the same on a rawepoll.Epoll",
            register_unregister(lone_std, lone_fd, select.EPOLLIN),
            register_unregister(lone_ep, lone_fd, rawepoll.EPOLLIN),
            1.1,
        ),
        Case(
            f"Epoll.poll, {busy}",
            "for fd, ev in std.poll(0)",
            "for fd, ev in ep.poll(0)",
            std_poll_iter(busy_std),
            raw_poll_iter(busy_ep),
            None,
        ),
        Case(
            f"unix.EpollWait, {busy}",
            "for fd, ev in std.poll(0)",
            "n = unix.EpollWait(epfd, events, 0); for fd, ev in events.ready(n)",
            std_poll_iter(busy_std),
            unix_wait_iter(busy_epfd, events),
            None,
        ),
        Case(
            f"floor: ctypes, {busy}",
            "for fd, ev in std.poll(0)",
            "n = epoll_wait(epfd, array, 1023, 0); for fd, ev in events.ready(n)",
            std_poll_iter(busy_std),
            bare_ctypes_iter(busy_epfd, events),
            None,
        ),
        Case(
            "floor: ctypes, empty",
            "std.poll(0)",
            "epoll_wait(epfd, array, 1023, 0)",
            std_poll(idle_std),
            bare_ctypes(idle_epfd, events),
            None,
        ),
    ]


def measure(case: Case, settings: Settings) -> Result:
    std_rounds, raw_rounds = _common.alternate([case.stdlib, case.rawepoll], settings)
    return Result(
        name=case.name,
        stdlib_ns=Spread.of(std_rounds),
        rawepoll_ns=Spread.of(raw_rounds),
        ratio=Spread.of(_common.ratios(raw_rounds, std_rounds)),
        target=case.target,
        stdlib_rounds=std_rounds,
        rawepoll_rounds=raw_rounds,
    )


def show(results: list[Result]) -> None:
    headers = [
        "benchmark",
        "stdlib ns",
        "rawepoll ns",
        "ratio",
        "spread",
        "target",
        "verdict",
    ]
    rows = [
        [
            r.name,
            f"{r.stdlib_ns.median:,.0f}",
            f"{r.rawepoll_ns.median:,.0f}",
            _common.fmt_ratio(r.ratio.median),
            _common.fmt_spread(r.ratio),
            "-" if r.target is None else f"<= {r.target:.2f}",
            r.verdict,
        ]
        for r in results
    ]
    _common.show_table(
        "rawepoll vs select.epoll: ns per op and ratio = rawepoll/stdlib, medians of rounds",
        headers,
        rows,
    )


def show_legend(cases: list[Case]) -> None:
    print("\nwhat one op is (A = stdlib, B = rawepoll; std: select.epoll, ep: rawepoll.Epoll,")
    print(f"events: EventArray({BUFFER}), epoll_wait: the bare GIL-holding ctypes function):")
    for case in cases:
        print(f"  {case.name}")
        print(f"    A: {case.stdlib_code}")
        print(f"    B: {case.rawepoll_code}")


def as_json(results: list[Result], env: dict[str, Any], settings: Settings) -> dict[str, Any]:
    return {
        "benchmark": "micro",
        "environment": env,
        "settings": settings,
        "results": [
            {
                "name": r.name,
                "stdlib_ns": r.stdlib_ns,
                "rawepoll_ns": r.rawepoll_ns,
                "ratio": r.ratio,
                "target": r.target,
                "verdict": r.verdict,
                "per_round": {"stdlib_ns": r.stdlib_rounds, "rawepoll_ns": r.rawepoll_rounds},
            }
            for r in results
        ],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 11, quick 5)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (~5 s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument("--cpu", type=int, help="pin to this CPU (default: the least busy)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        settings = Settings(rounds=args.rounds or 5, repeat=3, batch_ms=4)
    else:
        settings = Settings(rounds=args.rounds or 11, repeat=5, batch_ms=20)
    env = _common.environment(*_common.pin_cpu(args.cpu, enabled=not args.no_pin))
    _common.show_environment(env, settings)

    results = []
    with contextlib.ExitStack() as stack:
        cases = build_cases(stack)
        for case in cases:
            _common.progress(f"micro: {case.name} ...")
            results.append(measure(case, settings))
    show(results)
    show_legend(cases)
    if args.json:
        _common.write_json(args.json, as_json(results, env, settings))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
