"""Binding cost: what the ctypes binding costs next to ``select.epoll``, operation by operation.

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
unix.EpollWait, 64 ready
    the Go-mirror layer: ``unix.EpollWait(epfd, events, 0)`` plus
    ``events.ready(n)``, vs the stdlib busy loop.
floor: ctypes, ...
    a bare ctypes call of ``epoll_wait`` (the GIL-holding PyDLL function
    ``Epoll.wait`` uses for timeout 0) with no argument checks: the cheapest
    any ctypes binding can be.  From 1.0 to this row is ctypes' own call
    overhead; from this row to the ``wait`` row is what rawepoll's Python adds.

The first three rows carry the targets the binding was written to (B/A at
most 0.90, 1.5 and 1.1); the others are reported only.
"""

from __future__ import annotations

import contextlib
import select
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rawepoll
from rawepoll.events import EventArray
from rawepoll.tools.compare import loops, report
from rawepoll.tools.compare.report import Table
from rawepoll.tools.compare.stats import Spread, ratios
from rawepoll.tools.compare.timing import Settings, Timer, alternate

__all__ = ["Result", "measure"]

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
class Row:
    name: str
    stdlib_code: str
    rawepoll_code: str
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


def epoll_pair(stack: contextlib.ExitStack, fds: list[int]) -> tuple[select.epoll, rawepoll.Epoll]:
    """A ``select.epoll`` and a ``rawepoll.Epoll`` each watching ``fds`` for EPOLLIN."""
    std = select.epoll()
    stack.callback(std.close)
    ep = rawepoll.Epoll()
    stack.callback(ep.close)
    for fd in fds:
        std.register(fd, select.EPOLLIN)
        ep.register(fd, rawepoll.EPOLLIN)
    return std, ep


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
            loops.std_poll_iter(busy_std),
            loops.raw_wait_iter(busy_ep, events),
            0.90,
        ),
        Case(
            "empty wait",
            "std.poll(0)",
            "ep.wait(events, 0)",
            loops.std_poll(idle_std),
            loops.raw_wait(idle_ep, events),
            1.5,
        ),
        Case(
            "register+unregister",
            "std.register(fd, EPOLLIN); std.unregister(fd)",
            "the same on a rawepoll.Epoll",
            loops.register_unregister(lone_std, lone_fd, select.EPOLLIN),
            loops.register_unregister(lone_ep, lone_fd, rawepoll.EPOLLIN),
            1.1,
        ),
        Case(
            f"Epoll.poll, {busy}",
            "for fd, ev in std.poll(0)",
            "for fd, ev in ep.poll(0)",
            loops.std_poll_iter(busy_std),
            loops.raw_poll_iter(busy_ep),
            None,
        ),
        Case(
            f"unix.EpollWait, {busy}",
            "for fd, ev in std.poll(0)",
            "n = unix.EpollWait(epfd, events, 0); for fd, ev in events.ready(n)",
            loops.std_poll_iter(busy_std),
            loops.unix_wait_iter(busy_epfd, events),
            None,
        ),
        Case(
            f"floor: ctypes, {busy}",
            "for fd, ev in std.poll(0)",
            "n = epoll_wait(epfd, array, 1023, 0); for fd, ev in events.ready(n)",
            loops.std_poll_iter(busy_std),
            loops.bare_ctypes_iter(busy_epfd, events),
            None,
        ),
        Case(
            "floor: ctypes, empty",
            "std.poll(0)",
            "epoll_wait(epfd, array, 1023, 0)",
            loops.std_poll(idle_std),
            loops.bare_ctypes(idle_epfd, events),
            None,
        ),
    ]


def measure_case(case: Case, settings: Settings) -> Row:
    std_rounds, raw_rounds = alternate([case.stdlib, case.rawepoll], settings)
    return Row(
        name=case.name,
        stdlib_code=case.stdlib_code,
        rawepoll_code=case.rawepoll_code,
        stdlib_ns=Spread.of(std_rounds),
        rawepoll_ns=Spread.of(raw_rounds),
        ratio=Spread.of(ratios(raw_rounds, std_rounds)),
        target=case.target,
        stdlib_rounds=std_rounds,
        rawepoll_rounds=raw_rounds,
    )


@dataclass
class Result:
    settings: Settings
    rows: list[Row]

    def tables(self) -> list[Table]:
        rows = [
            [
                r.name,
                f"{r.stdlib_ns.median:,.0f}",
                f"{r.rawepoll_ns.median:,.0f}",
                report.fmt_ratio(r.ratio.median),
                report.fmt_spread(r.ratio),
                "-" if r.target is None else f"<= {r.target:.2f} {r.verdict}",
            ]
            for r in self.rows
        ]
        legend = [
            "what one op is (A = select.epoll `std`, B = rawepoll.Epoll `ep`; "
            f"events: EventArray({BUFFER}); epoll_wait: the bare GIL-holding ctypes function):",
            *(f"  {r.name}: A `{r.stdlib_code}`; B `{r.rawepoll_code}`" for r in self.rows),
        ]
        return [
            Table(
                "2. binding cost: rawepoll vs select.epoll, ns per op (median of "
                f"{report.rounds(self.settings.rounds)}), ratio = rawepoll/stdlib per round",
                ["operation", "select.epoll ns", "rawepoll ns", "ratio", "spread", "target"],
                rows,
                legend,
            )
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "results": [
                {
                    "name": r.name,
                    "stdlib": r.stdlib_code,
                    "rawepoll": r.rawepoll_code,
                    "stdlib_ns": r.stdlib_ns,
                    "rawepoll_ns": r.rawepoll_ns,
                    "ratio": r.ratio,
                    "target": r.target,
                    "verdict": r.verdict,
                    "per_round": {"stdlib_ns": r.stdlib_rounds, "rawepoll_ns": r.rawepoll_rounds},
                }
                for r in self.rows
            ],
        }

    def plot(self, path: Path, subtitle: str) -> bool:
        """Per operation, the ratio with its spread and a line at 1.0; False without matplotlib."""
        plt = report.pyplot()
        if plt is None:
            return False
        fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
        colors = ["tab:grey" if r.name.startswith("floor") else "tab:blue" for r in self.rows]
        report.bars(ax, [r.name for r in self.rows], [r.ratio for r in self.rows], "{:.2f}", colors)
        ax.axvline(1.0, color="black", lw=1)
        for y, r in enumerate(self.rows):
            if r.target is not None:
                ax.plot([r.target, r.target], [y - 0.4, y + 0.4], color="tab:red", lw=2)
        ax.set_xlabel("rawepoll time / select.epoll time (below 1: rawepoll faster)")
        fig.suptitle("Binding cost: rawepoll vs select.epoll (red: target; grey: ctypes floor)")
        ax.set_title(f"{subtitle}; {report.rounds(self.settings.rounds)}", fontsize=8, color="grey")
        report.save(plt, fig, path)
        return True


def measure(settings: Settings) -> Result:
    rows = []
    with contextlib.ExitStack() as stack:
        for case in build_cases(stack):
            report.progress(f"binding cost: {case.name} ...")
            rows.append(measure_case(case, settings))
    return Result(settings, rows)
