"""Wait scaling: the cost of one wait with 1 ready descriptor among N idle ones.

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
                  a new list of (fd, events) tuples.  The reference.
Epoll.wait        rawepoll: ``n = ep.wait(events, 0)`` into a reused
                  ``EventArray(1023)``, then ``events.ready(n)``.
unix.EpollWait    rawepoll's Go mirror: ``n = unix.EpollWait(epfd, events, 0)``,
                  then ``events.ready(n)``.

The N idle descriptors are eventfds (one fd each; a socketpair costs two), so
N can go up to RLIMIT_NOFILE minus what the process already holds.  Each N is
set up, measured (all contenders alternating in rounds, see
:mod:`rawepoll.tools.compare.timing`) and closed before the next.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rawepoll
from rawepoll.events import EventArray
from rawepoll.tools.compare import loops, report
from rawepoll.tools.compare.report import Table
from rawepoll.tools.compare.stats import Spread, ratios
from rawepoll.tools.compare.timing import Settings, Timer, alternate

__all__ = ["CONTENDERS", "DEFAULT_NS", "QUICK_NS", "Result", "measure"]

DEFAULT_NS = (10, 100, 1000, 5000, 10000, 19000)
QUICK_NS = (10, 100, 1000, 10000)
FD_SETSIZE = 1024  # select.select refuses any fd at or above this
RESERVED_FDS = 64  # epoll fds, /proc listing, imports, matplotlib's font files
BUFFER = 1023  # select.epoll.poll's default maxevents
REFERENCE = "select.epoll"


# -- contenders: each takes the watched fds (active one last) -> Timer ------


def select_select(fds: list[int], stack: contextlib.ExitStack) -> Timer:
    return loops.select_iter(fds)


def select_poll(fds: list[int], stack: contextlib.ExitStack) -> Timer:
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return loops.std_poll_iter(poller)


def select_epoll(fds: list[int], stack: contextlib.ExitStack) -> Timer:
    ep = select.epoll()
    stack.callback(ep.close)
    for fd in fds:
        ep.register(fd, select.EPOLLIN)
    return loops.std_poll_iter(ep)


def _rawepoll(fds: list[int], stack: contextlib.ExitStack) -> rawepoll.Epoll:
    ep = rawepoll.Epoll()
    stack.callback(ep.close)
    for fd in fds:
        ep.register(fd, rawepoll.EPOLLIN)
    return ep


def epoll_wait(fds: list[int], stack: contextlib.ExitStack) -> Timer:
    return loops.raw_wait_iter(_rawepoll(fds, stack), EventArray(BUFFER))


def unix_epoll_wait(fds: list[int], stack: contextlib.ExitStack) -> Timer:
    return loops.unix_wait_iter(_rawepoll(fds, stack).fileno(), EventArray(BUFFER))


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
    """The N values that fit the fd budget (each N costs N+1 eventfds), and a note if capped."""
    fitting = sorted({n for n in wanted if n + 1 <= budget})
    note = ""
    if len(fitting) < len(set(wanted)):
        top = budget - 1
        if top > (fitting[-1] if fitting else 0):
            fitting.append(top)
        note = f"N capped at {top:,} by RLIMIT_NOFILE ({budget:,} fds available)"
    return fitting, note


def open_eventfds(stack: contextlib.ExitStack, count: int) -> list[int]:
    fds = []
    for _ in range(count):
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        stack.callback(os.close, fd)
        fds.append(fd)
    return fds


def measure_n(n: int, settings: Settings) -> list[Row]:
    """Every contender at one N, alternating in rounds."""
    with contextlib.ExitStack() as stack:
        fds = open_eventfds(stack, n + 1)  # the last one is the active one
        os.eventfd_write(fds[-1], 1)
        names = [name for name in CONTENDERS if name != "select.select" or max(fds) < FD_SETSIZE]
        timers = [CONTENDERS[name](fds, stack) for name in names]
        per_round = alternate(timers, settings)
    reference = per_round[names.index(REFERENCE)]
    return [
        Row(
            n=n,
            method=name,
            us=Spread.of([ns / 1000 for ns in rounds]),
            vs_reference=Spread.of(ratios(rounds, reference)),
            per_round_us=[ns / 1000 for ns in rounds],
        )
        for name, rounds in zip(names, per_round, strict=True)
    ]


@dataclass
class Result:
    """Every N, every contender."""

    settings: Settings
    rows: list[Row]
    note: str  # why N was capped, if it was

    def tables(self) -> list[Table]:
        rows = [
            [
                f"{row.n:,}",
                row.method,
                f"{row.us.median:.2f}",
                report.fmt_spread(row.us),
                report.fmt_ratio(row.vs_reference.median),
                "reference" if row.method == REFERENCE else report.fmt_spread(row.vs_reference),
            ]
            for row in self.rows
        ]
        notes = [self.note] if self.note else []
        with_select = {row.n for row in self.rows if row.method == "select.select"}
        if any(row.n not in with_select for row in self.rows):
            notes.append(f"select.select: only while every fd is below FD_SETSIZE ({FD_SETSIZE})")
        return [
            Table(
                f"1. wait scaling: one wait (timeout 0), 1 ready fd among N idle; "
                f"µs per wait, median of {report.rounds(self.settings.rounds)}",
                ["N idle", "method", "µs/wait", "min-max", f"÷ {REFERENCE}", "spread"],
                rows,
                notes,
            )
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "reference": REFERENCE,
            "note": self.note,
            "results": [
                {
                    "n_idle": row.n,
                    "method": row.method,
                    "us_per_wait": row.us,
                    "ratio_to_reference": row.vs_reference,
                    "per_round_us": row.per_round_us,
                }
                for row in self.rows
            ],
        }

    def plot(self, path: Path, subtitle: str) -> bool:
        """The log-log plot of µs per wait against N; False without matplotlib."""
        plt = report.pyplot()
        if plt is None:
            return False
        fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
        styles = {"select.select": "s", "select.poll": "D", REFERENCE: "o"}
        for method in CONTENDERS:
            mine = [row for row in self.rows if row.method == method]
            if not mine:
                continue
            err = [
                [row.us.median - row.us.low for row in mine],
                [row.us.high - row.us.median for row in mine],
            ]
            ax.errorbar(
                [row.n for row in mine],
                [row.us.median for row in mine],
                yerr=err,
                marker=styles.get(method, "^"),
                capsize=3,
                label=method,
                lw=1.5,
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
        ax.set_title(f"{subtitle}; {report.rounds(self.settings.rounds)}", fontsize=8, color="grey")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="bars: min-max over rounds", fontsize=9)
        report.save(plt, fig, path)
        return True


def measure(wanted: Sequence[int], settings: Settings) -> Result:
    """Measure every N of ``wanted`` that the descriptor limit allows."""
    ns, note = choose_ns(wanted, fd_budget())
    rows: list[Row] = []
    for n in ns:
        report.progress(f"wait scaling: N = {n:,} ...")
        rows += measure_n(n, settings)
    return Result(settings, rows, note)
