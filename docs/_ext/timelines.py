"""Level- vs edge-triggered, measured: the timelines of docs/img/lt-et.svg.

One scripted story is played three times against a real epoll
(:class:`rawepoll.Epoll` watching one end of an AF_UNIX socketpair):

* at each tick the peer may send some bytes (``ARRIVALS``);
* then the program calls ``epoll_wait`` with a zero timeout;
* if the socket was reported, the program reads -- once (``READ`` bytes), or
  until ``EAGAIN``.

Three programs: level-triggered reading once per report, edge-triggered
reading once per report (the seed's loop with ``EPOLLET``), and edge-triggered
reading until ``EAGAIN``.  What each wait reported and how many bytes the
kernel held is recorded (``FIONREAD``), and drawn with matplotlib.

Nothing is timed: an AF_UNIX send puts the bytes on the peer's queue and runs
its wake-up callbacks before it returns, so the story plays out the same way
on every run.

Run as a script to redraw the picture (``python docs/_ext/timelines.py``).
The SVG carries the trace it was drawn from and a hash of this file; the
Sphinx build (:func:`setup`) and ``tests/docs/test_timelines.py`` record the
trace afresh and fail when the picture no longer matches the code.
"""

from __future__ import annotations

import array
import dataclasses
import fcntl
import hashlib
import json
import socket
import sys
import termios
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from sphinx.util import logging

import rawepoll

ARRIVALS = (3000, 0, 0, 0, 500, 0, 0, 1500, 0, 0)  # bytes the peer sends at each tick
READ = 1024  # bytes asked for by one read
HERE = Path(__file__).resolve().parent
SVG = HERE.parent / "img" / "lt-et.svg"


@dataclasses.dataclass(frozen=True)
class Program:
    """How the program registers the socket and reads when it is reported."""

    key: str
    title: str
    edge: bool
    drain: bool


PROGRAMS = (
    Program("lt", f"level-triggered, one {READ}-byte read per report", edge=False, drain=False),
    Program(
        "et",
        f"edge-triggered, one {READ}-byte read per report (the seed's loop with EPOLLET)",
        edge=True,
        drain=False,
    ),
    Program("et-drain", "edge-triggered, read until EAGAIN", edge=True, drain=True),
)


@dataclasses.dataclass(frozen=True)
class Tick:
    """One turn: what arrived, what ``epoll_wait`` said, what was read."""

    arrived: int
    queued: int  # bytes in the receive queue when epoll_wait was called
    reported: bool  # epoll_wait returned the socket with EPOLLIN
    reads: tuple[int, ...]  # the size of every successful read
    left: int  # bytes in the receive queue after the reads


def _queued(sock: socket.socket) -> int:
    """Bytes waiting in the receive queue, as the kernel counts them."""
    out = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, out)
    return out[0]


def _read(sock: socket.socket, drain: bool) -> tuple[int, ...]:
    """One read, or reads until EAGAIN; the size of each successful one."""
    sizes: list[int] = []
    while True:
        try:
            sizes.append(len(sock.recv(READ)))
        except BlockingIOError:
            return tuple(sizes)
        if not drain:
            return tuple(sizes)


def record(program: Program) -> list[Tick]:
    """Play ``ARRIVALS`` against a real epoll, the way ``program`` reads."""
    mask = rawepoll.EPOLLIN | (rawepoll.EPOLLET if program.edge else 0)
    receiver, sender = socket.socketpair()
    receiver.setblocking(False)
    ticks: list[Tick] = []
    with rawepoll.Epoll() as ep, receiver, sender:
        events = rawepoll.EventArray(4)
        ep.register(receiver, mask)
        for arrived in ARRIVALS:
            if arrived:
                sender.sendall(bytes(arrived))
            queued = _queued(receiver)
            n = ep.wait(events, timeout=0)
            reported = any(
                fd == receiver.fileno() and m & rawepoll.EPOLLIN for fd, m in events.ready(n)
            )
            reads = _read(receiver, program.drain) if reported else ()
            ticks.append(Tick(arrived, queued, reported, reads, _queued(receiver)))
    return ticks


def record_all() -> dict[str, list[dict[str, Any]]]:
    """Every program's ticks, as plain JSON data (what the SVG carries)."""
    trace = {p.key: [dataclasses.asdict(t) for t in record(p)] for p in PROGRAMS}
    return json.loads(json.dumps(trace))  # tuples become lists, as read back from the SVG


def source_hash() -> str:
    """The hash of this file: a change to the drawing is a change to the picture."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def stamp(trace: dict[str, list[dict[str, Any]]]) -> str:
    """What the SVG carries in its description: the trace and the source hash."""
    return json.dumps({"trace": trace, "source": source_hash()}, sort_keys=True)


def read_stamp(svg: Path) -> str | None:
    """The description of a drawn SVG, or None if it has none."""
    if not svg.exists():
        return None
    ns = {"dc": "http://purl.org/dc/elements/1.1/"}
    node = ET.parse(svg).getroot().find(".//dc:description", ns)
    return None if node is None else node.text


def stale(svg: Path = SVG) -> str | None:
    """Why the SVG no longer matches the code, or None when it does."""
    drawn = read_stamp(svg)
    if drawn is None:
        return f"{svg} is missing or carries no trace"
    data = json.loads(drawn)
    if data["source"] != source_hash():
        return f"{svg} was drawn by another version of {Path(__file__).name}"
    if data["trace"] != record_all():
        return f"{svg} shows another epoll behaviour than the one recorded now"
    return None


# -- drawing ---------------------------------------------------------------------------------

READ_COLOUR = "#4caf50"
LEFT_COLOUR = "#90a4ae"
STRANDED_COLOUR = "#e53935"
REPORT_COLOUR = "#1565c0"


def draw(trace: dict[str, list[dict[str, Any]]], out: Path) -> None:
    """Three lanes, one per program: the receive queue at each wait, and what was reported."""
    import matplotlib  # noqa: PLC0415 -- only drawing needs it, not the build's check

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plt.rcParams.update({"svg.hashsalt": "rawepoll", "svg.fonttype": "path", "font.size": 10})
    fig, lanes = plt.subplots(
        len(PROGRAMS), 1, figsize=(8.5, 8.5), sharex=True, constrained_layout=True
    )
    fig.set_facecolor("white")
    top = max(t["queued"] for ticks in trace.values() for t in ticks) * 1.45
    for lane, program in zip(lanes, PROGRAMS, strict=True):
        _draw_lane(
            lane,
            program,
            [Tick(**{**t, "reads": tuple(t["reads"])}) for t in trace[program.key]],
            top,
        )
    labels = [f"t{i}\n+{a} B" if a else f"t{i}" for i, a in enumerate(ARRIVALS)]
    lanes[-1].set_xticks(range(len(ARRIVALS)), labels)
    lanes[-1].set_xlabel(
        "tick: the peer's bytes arrive, then epoll_wait(timeout=0), then the reads"
    )
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=READ_COLOUR),
        plt.Rectangle((0, 0), 1, 1, color=LEFT_COLOUR),
        plt.Rectangle((0, 0), 1, 1, color=STRANDED_COLOUR),
    ]
    fig.legend(
        handles,
        [
            "read after the report",
            "left for the next report",
            "left, no report until the peer sends more",
        ],
        loc="outside upper center",
        ncols=3,
        frameon=False,
    )
    fig.savefig(out, format="svg", metadata={"Date": None, "Description": stamp(trace)})
    plt.close(fig)


def _draw_lane(lane: Any, program: Program, ticks: list[Tick], top: float) -> None:
    """One program's lane: a bar per tick, split into read and left, and the report above it."""
    lane.set_title(program.title, loc="left", fontsize=10)
    lane.set_ylim(0, top)
    lane.set_xlim(-0.9, len(ticks) - 0.4)  # room for the widest label, over t0
    lane.set_ylabel("bytes queued")
    lane.spines[["top", "right"]].set_visible(False)
    for i, tick in enumerate(ticks):
        read = sum(tick.reads)
        # Edge-triggered, bytes left after the reads raise no report of their own.
        left_colour = STRANDED_COLOUR if program.edge and tick.left else LEFT_COLOUR
        lane.bar(i, tick.left, width=0.6, color=left_colour)
        lane.bar(i, read, bottom=tick.left, width=0.6, color=READ_COLOUR)
        label = "IN" if tick.reported else "nothing"
        lane.annotate(
            label,
            (i, tick.queued),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
            fontweight="bold" if tick.reported else "normal",
            color=REPORT_COLOUR if tick.reported else "#757575",
        )
        if tick.reads:
            what = ", ".join(str(r) for r in tick.reads if r)
            lane.annotate(
                f"read {what}",
                (i, tick.queued),
                xytext=(0, 16),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
                color="#424242",
            )
    last = ticks[-1]
    if last.left:
        lane.annotate(
            f"at the end, {last.left} B still queued: no report\nuntil the peer sends again",
            (len(ticks) - 1, last.left),
            xytext=(0.995, 0.98),
            textcoords="axes fraction",
            ha="right",
            va="top",
            fontsize=8,
            color=STRANDED_COLOUR,
        )


def main() -> int:
    """Record the three programs and redraw the SVG."""
    draw(record_all(), SVG)
    print(f"wrote {SVG}")
    return 0


# -- Sphinx ----------------------------------------------------------------------------------


def _check(app: Any) -> None:
    reason = stale()
    if reason:
        logging.getLogger(__name__).warning(
            "%s: run `python docs/_ext/timelines.py` and commit the picture", reason
        )


def setup(app: Any) -> dict[str, Any]:
    """At every build, record the trace again and warn (an error under -W) if it changed."""
    app.connect("builder-inited", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    sys.exit(main())
