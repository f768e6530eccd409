"""The closed loop, its steps written out in place, does what the plain loop does.

:meth:`Engine.closed_loop` is :meth:`Engine.plain_loop` with the per-message
calls inlined.  Both run here on the same inputs -- one load process's
connections to an echo peer that cuts every echo into pieces, and sometimes
spoils one byte or closes early -- and must send, verify and count the same.

The peer hands over one piece at a time and waits until the engine has read
it (``SIOCOUTQ`` of its socket is 0), so each read of the engine returns
exactly one piece: the reads, and so everything the loops decide, depend on
the inputs only.  With one connection the outcomes must be equal in every
detail; with several, the order in which they take turns may differ between
runs, so only the totals are compared.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import tempfile
import termios
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawepoll.tools.loadgen.channel import Channel
from rawepoll.tools.loadgen.engine import Engine, Flow
from rawepoll.tools.loadgen.plan import make_plan
from rawepoll.tools.loadgen.spec import LoadSpec

pytestmark = pytest.mark.timeout(300)

BOUND_S = 20.0  # no run of these takes more than a fraction of this


@dataclass(frozen=True)
class Spoil:
    """What the peer does wrong at ``offset`` of the first connection's stream."""

    how: str  # "flip": one bit of that byte; "close": close the connection there
    offset: int


@dataclass
class _Conn:
    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    echoed: int = 0
    pieces: int = 0  # pieces sent so far
    eof: bool = False  # the engine closed it
    closed: bool = False  # the peer closed it (a spoil)
    broken: bool = False  # an echo failed: the engine is gone; read what is left


class EchoPeer:
    """A Unix-socket echo server in a thread: echoes cut into pieces, one at a time.

    The stream goes back in pieces of the lengths in ``pieces``, in turn; the
    next piece is sent once the engine has read the last one.  A piece waits
    for all its bytes, so it ends where the engine's stream is sure to reach
    (see :meth:`_coming`).  ``spoil`` applies to the first connection accepted.
    """

    def __init__(self, path: str, spec: LoadSpec, pieces: list[int], spoil: Spoil | None) -> None:
        self.spec = spec
        self.pieces = pieces
        self.spoil = spoil
        self.conns: list[_Conn] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="echo-peer")
        self.thread.start()

    def streams(self) -> list[bytes]:
        """What each connection received, in the order they were accepted."""
        return [bytes(conn.received) for conn in self.conns]

    def close(self) -> None:
        """Stop once every connection has reached end-of-file; close everything."""
        self.stopping.set()
        self.thread.join(BOUND_S)
        assert not self.thread.is_alive(), "the echo peer did not stop"
        for conn in self.conns:
            conn.sock.close()
        self.listener.close()

    def _serve(self) -> None:
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            self._accept()
            busy = False
            for index, conn in enumerate(self.conns):
                busy |= self._read(conn)
                busy |= self._echo(conn, self.spoil if index == 0 else None)
            if self.stopping.is_set() and all(conn.eof or conn.closed for conn in self.conns):
                return
            if not busy:
                time.sleep(0.0002)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        self.conns.append(_Conn(sock))

    def _read(self, conn: _Conn) -> bool:
        if conn.eof or conn.closed:
            return False
        try:
            data = conn.sock.recv(1 << 20)
        except BlockingIOError:
            return False
        if not data:
            conn.eof = True
        conn.received += data
        return True

    def _echo(self, conn: _Conn, spoil: Spoil | None) -> bool:
        if conn.closed or conn.broken or conn.echoed >= len(conn.received):
            return False
        if _unread(conn.sock):
            return False
        start = conn.echoed
        if spoil is not None and spoil.how == "close" and start == spoil.offset:
            conn.sock.close()
            conn.closed = True
            return True
        end = min(start + self.pieces[conn.pieces % len(self.pieces)], self._coming(start))
        if spoil is not None and spoil.how == "close" and start < spoil.offset:
            end = min(end, spoil.offset)
        if end > len(conn.received):
            return False  # the rest of this piece has not come yet
        piece = bytearray(conn.received[start:end])
        if spoil is not None and spoil.how == "flip" and start <= spoil.offset < end:
            piece[spoil.offset - start] ^= 0x01
        try:
            sent = conn.sock.send(piece)
        except OSError:  # the engine closed the connection
            conn.broken = True
            return True
        assert sent == len(piece), "an empty socket took only part of a small piece"
        conn.echoed, conn.pieces = end, conn.pieces + 1
        return True

    def _coming(self, echoed: int) -> int:
        """How far a connection's stream will reach once ``echoed`` bytes of it are verified.

        Message 0 goes alone; then ``pipeline`` messages are kept in flight
        while the budget lasts.  With several connections sharing the budget,
        only the end of the message under way is sure.
        """
        size, done = self.spec.size, echoed // self.spec.size
        if done == 0:
            return size
        if self.spec.conns > 1 or self.spec.messages is None:
            return (done + 1) * size
        return min(self.spec.messages + 1, done + self.spec.pipeline) * size


def _unread(sock: socket.socket) -> bool:
    """Whether the peer of a Unix stream socket has not yet read all that was sent to it."""
    queued: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    return queued > 0


@dataclass(frozen=True)
class Outcome:
    sent: int
    completed: int
    abandoned: int
    latencies: int  # round trips counted
    established: int
    errors: int
    mismatches: int
    problems: tuple[str, ...]
    streams: tuple[bytes, ...]  # what the peer received, per connection


def run(loop: str, spec: LoadSpec, pieces: list[int], spoil: Spoil | None) -> Outcome:
    """Ramp, then one round of closed-loop traffic through ``Engine.<loop>``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "echo.sock")
        peer = EchoPeer(path, spec, pieces, spoil)
        plan = make_plan(replace(spec, unix=path), fd_limit=20000, ports=28232)
        ours, theirs = socket.socketpair()
        try:
            engine = Engine(plan, plan.shares[0], Channel(theirs))
            try:
                engine.ramp()
                flow: Flow = engine.start_flow()
                assert flow.interval == 0
                getattr(engine, loop)(flow)
                latencies = engine.latencies
                counted = sum(latencies.counts.values()) + latencies.histogram.get_total_count()
            finally:
                engine.close()
        finally:
            ours.close()
            theirs.close()
            peer.close()
    received = peer.streams()
    if spoil is not None and spoil.how == "close":
        received = [stream[: spoil.offset] for stream in received[:1]] + received[1:]
    return Outcome(
        sent=flow.sent,
        completed=flow.completed,
        abandoned=engine.abandoned,
        latencies=counted,
        established=engine.established,
        errors=engine.errors,
        mismatches=engine.mismatches,
        problems=tuple(engine.problems),
        streams=tuple(received),
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[LoadSpec, list[int], Spoil | None]:
    size = draw(st.integers(1, 80))
    spoil = draw(
        st.none() | st.builds(Spoil, st.sampled_from(["flip", "close"]), st.integers(0, 12 * size))
    )
    # With several connections, whether one of them gets as far as a spoil
    # depends on the turns they take: spoiled runs have one.
    conns = 1 if spoil is not None else draw(st.integers(1, 3))
    spec = LoadSpec(
        conns=conns,
        size=size,
        duration=None,
        messages=draw(st.integers(1, 30)),
        pipeline=draw(st.integers(1, 4)),
    )
    pieces = draw(st.lists(st.integers(1, 3 * size), min_size=1, max_size=5))
    return spec, pieces, spoil


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_closed_loop_does_what_the_plain_loop_does(
    case: tuple[LoadSpec, list[int], Spoil | None],
) -> None:
    spec, pieces, spoil = case
    inlined = run("closed_loop", spec, pieces, spoil)
    plain = run("plain_loop", spec, pieces, spoil)
    if spec.conns == 1:
        assert inlined == plain
    else:
        totals = ("sent", "completed", "abandoned", "latencies", "established", "errors")
        assert {name: getattr(inlined, name) for name in totals} == {
            name: getattr(plain, name) for name in totals
        }
        assert sum(map(len, inlined.streams)) == sum(map(len, plain.streams))
    for outcome in (inlined, plain):
        assert outcome.sent == outcome.completed + outcome.abandoned
        assert outcome.latencies == outcome.completed
        if spoil is None:
            assert outcome.completed == spec.messages
            assert outcome.errors == outcome.mismatches == 0
            assert outcome.established == spec.conns
            assert sum(map(len, outcome.streams)) == (outcome.sent + spec.conns) * spec.size


def test_a_spoiled_byte_and_an_early_close_in_both_loops() -> None:
    """Fixed cases, for the record: a flipped bit in message 3, a close inside message 5."""
    spec = LoadSpec(conns=1, size=16, duration=None, messages=20, pipeline=2)
    flip, close = Spoil("flip", 3 * 16 + 5), Spoil("close", 5 * 16 + 7)
    for spoil, counted in ((flip, "mismatches"), (close, "errors")):
        inlined = run("closed_loop", spec, [5, 3, 16], spoil)
        assert inlined == run("plain_loop", spec, [5, 3, 16], spoil)
        assert getattr(inlined, counted) == 1
        assert inlined.completed < spec.messages
        assert len(inlined.problems) == 1
