"""The WebSocket engine's closed loop, its sending step written out in place, does what the
plain loop (through ``WebSocketEngine.send``) does.

Both run on the same inputs: one connection to a WebSocket echo peer that
answers the handshake, echoes every frame as an unmasked binary frame, puts a
ping before every ``pings``-th echo, cuts its answers into pieces -- and sometimes spoils
one byte or closes early.  The masking keys come from one seeded generator,
so the client's frames are the same bytes in both runs.

The peer hands over one piece at a time and waits until the engine has read
it (``TIOCOUTQ`` of its socket is 0); a piece never runs past the end of the
answer to the message under way (its ping and its echo), whose bytes are sure
to come.  So each read of the engine returns exactly one piece, and what the
loops decide depends on the inputs only: the outcomes must be equal in every
detail.
"""

from __future__ import annotations

import fcntl
import random
import socket
import struct
import tempfile
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawepoll.server.websocket import frames
from rawepoll.server.websocket.handshake import accept_key
from rawepoll.tools.loadgen.channel import Channel
from rawepoll.tools.loadgen.plan import make_plan
from rawepoll.tools.loadgen.spec import LoadSpec
from rawepoll.tools.loadgen.wsclient import MaskKeys
from rawepoll.tools.loadgen.wsengine import WebSocketEngine

pytestmark = pytest.mark.timeout(300)

BOUND_S = 20.0


class SeededKeys(MaskKeys):
    """Masking keys from a seeded generator: the same frames in every run."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.random = random.Random(seed)

    def take(self) -> int:
        return self.random.getrandbits(32)


@dataclass(frozen=True)
class Spoil:
    """What the peer does wrong at ``offset`` of its answers after the 101."""

    how: str  # "flip": one bit of that byte; "close": close the connection there
    offset: int


@dataclass
class _Conn:
    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    parsed: int = 0  # bytes of ``received`` taken apart so far
    upgraded: bool = False
    out: bytearray = field(default_factory=bytearray)  # the answers: 101, then frames
    ends: list[int] = field(default_factory=list)  # where each answer (unit) of ``out`` ends
    head: int = 0  # bytes of ``out`` before the frames (the 101)
    sent: int = 0
    pieces: int = 0
    messages: int = 0  # data frames received
    pongs: list[bytes] = field(default_factory=list)
    eof: bool = False
    closed: bool = False


class WsEchoPeer:
    """A Unix-socket WebSocket echo server in a thread, answering in pieces, one at a time."""

    def __init__(self, path: str, pieces: list[int], spoil: Spoil | None, ping_every: int) -> None:
        self.pieces = pieces
        self.spoil = spoil
        self.ping_every = ping_every
        self.conns: list[_Conn] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.listener.setblocking(False)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="ws-echo-peer")
        self.thread.start()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(BOUND_S)
        assert not self.thread.is_alive(), "the peer did not stop"
        for conn in self.conns:
            conn.sock.close()
        self.listener.close()

    def _serve(self) -> None:
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            try:
                sock, _ = self.listener.accept()
                sock.setblocking(False)
                self.conns.append(_Conn(sock))
            except BlockingIOError:
                pass
            busy = False
            for conn in self.conns:
                busy |= self._read(conn)
                busy |= self._answer(conn)
            if self.stopping.is_set() and all(c.eof or c.closed for c in self.conns):
                return
            if not busy:
                time.sleep(0.0002)

    def _read(self, conn: _Conn) -> bool:
        if conn.eof or conn.closed:
            return False
        try:
            data = conn.sock.recv(1 << 20)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            conn.eof = True
            return True
        conn.received += data
        self._parse(conn)
        return True

    def _parse(self, conn: _Conn) -> None:
        """Answer the handshake and every complete frame received (appended to ``out``)."""
        if not conn.upgraded:
            end = conn.received.find(b"\r\n\r\n")
            if end < 0:
                return
            key = next(
                line.split(b":", 1)[1].strip().decode()
                for line in bytes(conn.received[:end]).split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            conn.out += (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
            ).encode()
            conn.ends.append(len(conn.out))
            conn.head = len(conn.out)
            conn.parsed, conn.upgraded = end + 4, True
        while (found := frames.read_frame(conn.received, conn.parsed, 1 << 24)) is not None:
            conn.parsed, _, opcode, payload = found
            if opcode == frames.PONG:
                conn.pongs.append(payload)
                continue
            if self.ping_every and conn.messages and conn.messages % self.ping_every == 0:
                conn.out += frames.encode(frames.PING, b"p%d" % conn.messages)
            conn.out += frames.encode(frames.BINARY, payload)
            conn.ends.append(len(conn.out))
            conn.messages += 1

    def _answer(self, conn: _Conn) -> bool:
        if conn.closed or conn.eof or conn.sent >= len(conn.out) or _unread(conn.sock):
            return False
        spoil = self.spoil
        at = conn.head + spoil.offset if spoil is not None else -1
        if spoil is not None and spoil.how == "close" and conn.sent == at:
            conn.sock.close()
            conn.closed = True
            return True
        unit_end = next(end for end in conn.ends if end > conn.sent)
        end = min(conn.sent + self.pieces[conn.pieces % len(self.pieces)], unit_end)
        if spoil is not None and spoil.how == "close" and conn.sent < at:
            end = min(end, at)
        piece = bytearray(conn.out[conn.sent : end])
        if spoil is not None and spoil.how == "flip" and conn.sent <= at < end:
            piece[at - conn.sent] ^= 0x01
        try:
            sent = conn.sock.send(piece)
        except OSError:
            conn.eof = True
            return True
        assert sent == len(piece), "an empty socket took only part of a small piece"
        conn.sent, conn.pieces = end, conn.pieces + 1
        return True


def _unread(sock: socket.socket) -> bool:
    queued: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    return queued > 0


@dataclass(frozen=True)
class Outcome:
    sent: int
    completed: int
    abandoned: int
    latencies: int
    established: int
    errors: int
    mismatches: int
    problems: tuple[str, ...]
    frames: bytes  # what the peer received after the handshake
    pongs: tuple[bytes, ...]


def run(loop: str, spec: LoadSpec, pieces: list[int], spoil: Spoil | None, pings: int) -> Outcome:
    """Ramp, then one round of closed-loop traffic through ``WebSocketEngine.<loop>``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "ws.sock")
        peer = WsEchoPeer(path, pieces, spoil, pings)
        plan = make_plan(
            LoadSpec(
                unix=path,
                conns=1,
                size=spec.size,
                duration=None,
                messages=spec.messages,
                pipeline=spec.pipeline,
                protocol="websocket",
            ),
            fd_limit=20000,
            ports=28232,
        )
        ours, theirs = socket.socketpair()
        try:
            engine = WebSocketEngine(plan, plan.shares[0], Channel(theirs))
            engine.keys = SeededKeys(7)
            try:
                engine.ramp()
                flow = engine.start_flow()
                getattr(engine, loop)(flow)
                counted = sum(engine.latencies.counts.values())
                counted += engine.latencies.histogram.get_total_count()
            finally:
                engine.close()
        finally:
            ours.close()
            theirs.close()
            peer.close()
    (conn,) = peer.conns
    return Outcome(
        sent=flow.sent,
        completed=flow.completed,
        abandoned=engine.abandoned,
        latencies=counted,
        established=engine.established,
        errors=engine.errors,
        mismatches=engine.mismatches,
        problems=tuple(engine.problems),
        frames=bytes(conn.received[bytes(conn.received).find(b"\r\n\r\n") + 4 :]),
        pongs=tuple(conn.pongs),
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[LoadSpec, list[int], Spoil | None, int]:
    size = draw(st.integers(1, 130))  # 126 and up: the 16-bit length
    unit = size + (2 if size < 126 else 4)
    spoil = draw(
        st.none() | st.builds(Spoil, st.sampled_from(["flip", "close"]), st.integers(0, 8 * unit))
    )
    spec = LoadSpec(
        size=size,
        duration=None,
        messages=draw(st.integers(1, 20)),
        pipeline=draw(st.integers(1, 4)),
    )
    pieces = draw(st.lists(st.integers(1, 2 * unit), min_size=1, max_size=5))
    return spec, pieces, spoil, draw(st.sampled_from([0, 1, 3]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_closed_loop_does_what_the_plain_loop_does(
    case: tuple[LoadSpec, list[int], Spoil | None, int],
) -> None:
    spec, pieces, spoil, pings = case
    inlined = run("closed_loop", spec, pieces, spoil, pings)
    plain = run("plain_loop", spec, pieces, spoil, pings)
    assert inlined == plain
    assert inlined.sent == inlined.completed + inlined.abandoned
    assert inlined.latencies == inlined.completed
    if spoil is None:
        assert inlined.completed == spec.messages
        assert inlined.errors == inlined.mismatches == 0
        assert inlined.established == 1
        assert len(inlined.pongs) == (spec.messages // pings if pings else 0)


def test_a_spoiled_byte_a_cut_ping_and_an_early_close_in_both_loops() -> None:
    """Fixed cases, for the record: a bit flipped in the payload of message 3's echo, pings
    handed over one byte at a time, a close inside message 5's echo."""
    spec = LoadSpec(size=16, duration=None, messages=20, pipeline=2)
    unit = 18
    flip, close = Spoil("flip", 3 * unit + 5), Spoil("close", 5 * unit + 7)
    for spoil, counted in ((flip, "mismatches"), (close, "errors")):
        inlined = run("closed_loop", spec, [5, 3, 18], spoil, 0)
        assert inlined == run("plain_loop", spec, [5, 3, 18], spoil, 0)
        assert getattr(inlined, counted) == 1
        assert inlined.completed < spec.messages
        assert len(inlined.problems) == 1
    cut = run("closed_loop", spec, [1], None, 2)
    assert cut == run("plain_loop", spec, [1], None, 2)
    assert cut.completed == spec.messages and cut.errors == cut.mismatches == 0
    assert cut.pongs == tuple(b"p%d" % k for k in range(2, 21, 2))
