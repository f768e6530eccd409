"""One load process of ``rawepoll bench --protocol websocket``: the echo engine, over WebSocket.

:class:`WebSocketEngine` is :class:`~rawepoll.tools.loadgen.engine.Engine` with
three things added (the wire's side of them is :mod:`rawepoll.tools.loadgen.wsclient`):

* **the opening handshake** in the ramp: a connected socket sends its upgrade
  request with a fresh key (state ``HANDSHAKING``); the answer is peeked at
  and only its head is taken from the socket (whatever follows the blank
  line stays for the echo path), checked -- ``101``, ``Upgrade``,
  ``Connection``, ``Sec-WebSocket-Accept`` -- and then message 0 goes out as
  the TCP engine sends it;
* **frames**: each message is a masked binary frame with a fresh key, and the
  bytes expected back are its echo, the same payload in an unmasked binary
  frame.  The stream of expected bytes is then verified exactly as in the TCP
  mode (a prefix test per read), header bytes included, a message being one
  echo frame (``unit`` bytes) instead of ``size``;
* **control frames** from the server at a frame boundary of the echo stream
  (a heartbeat ping, a close) are taken out of it on the slow path, where a
  read does not continue the expected bytes: a ping is answered with a masked
  pong, a pong is ignored, a close is an error (the server is leaving).
  Anything else there is a mismatch.

Its traffic has the engine's two loops: :meth:`~Engine.plain_loop`, unchanged
(through :meth:`WebSocketEngine.send`), and :meth:`WebSocketEngine.closed_loop`,
the TCP engine's closed loop with the sending step masking in place; a test
runs both on the same inputs (``tests/loadgen/test_ws_engine.py``).
"""

from __future__ import annotations

import os
import select
import socket
import time
from itertools import repeat
from typing import Final

from rawepoll.server.websocket import frames
from rawepoll.tools.loadgen.channel import Channel
from rawepoll.tools.loadgen.engine import (
    _READABLE,
    HANDSHAKING,
    READ_MAX,
    TICK_S,
    Engine,
    Flow,
    _clock,
)
from rawepoll.tools.loadgen.payload import first_difference
from rawepoll.tools.loadgen.plan import Plan, Share
from rawepoll.tools.loadgen.wsclient import (
    MAX_ANSWER,
    Framing,
    MaskKeys,
    check_answer,
    control_length,
    new_key,
    upgrade_request,
)
from rawepoll.unix import EPOLLIN, EPOLLOUT

__all__ = ["CONTROL_WAIT_S", "HandshakeError", "Upgrades", "WebSocketEngine", "host_header"]

CONTROL_WAIT_S: Final = 0.5  # how long the rest of a control frame cut by a read may take to come


def host_header(plan: Plan) -> str:
    """The ``Host`` of the upgrade request: the server as ``plan.target`` writes it."""
    return "localhost" if not plan.is_tcp else plan.target


class HandshakeError(Exception):
    """The opening handshake failed; ``str(error)`` says how."""


class Upgrades:
    """The opening handshakes under way in one load process, to ``path`` on ``host``."""

    def __init__(self, host: str, path: str) -> None:
        self.host = host
        self.path = path
        self.keys: dict[int, str] = {}  # fd -> the Sec-WebSocket-Key it sent
        self.heads: dict[int, bytes] = {}  # fd -> the answer's head so far, if cut

    def request(self, fd: int) -> bytes:
        """The upgrade request of ``fd``, with a fresh key."""
        key = new_key()
        self.keys[fd] = key
        return upgrade_request(self.host, self.path, key)

    def answer(self, sock: socket.socket) -> bool:
        """Read the answer up to its blank line, and no further: True once it is there and right.

        What follows the blank line stays in the socket, for the frames.

        Raises:
            HandshakeError: the server refused, answered wrong, or closed.
        """
        fd = sock.fileno()
        try:
            peeked = sock.recv(MAX_ANSWER, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError as error:
            raise HandshakeError(f"handshake: read: {error.strerror or error}") from None
        if not peeked:
            raise HandshakeError("the server closed the connection during the WebSocket handshake")
        before = self.heads.pop(fd, b"")
        head = before + peeked
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) >= MAX_ANSWER:
                raise HandshakeError(f"the answer to the upgrade is above {MAX_ANSWER} bytes")
            self.heads[fd] = before + sock.recv(len(peeked))
            return False
        sock.recv(end + 4 - len(before))
        problem = check_answer(head[: end + 4], self.keys.pop(fd))
        if problem is not None:
            raise HandshakeError(problem)
        return True

    def forget(self, fd: int) -> None:
        """``fd`` is closed."""
        self.keys.pop(fd, None)
        self.heads.pop(fd, None)


class WebSocketEngine(Engine):
    """One process's WebSocket connections: handshake, masked frames, verified echo frames."""

    def __init__(self, plan: Plan, share: Share, channel: Channel) -> None:
        super().__init__(plan, share, channel)
        self.framing = Framing(plan.spec.size)
        self.unit = self.framing.unit
        self.keys = MaskKeys()
        self.upgrades = Upgrades(host_header(plan), plan.spec.path)

    # -- the handshake ---------------------------------------------------------

    def _begin(self, fd: int) -> None:
        """Connected: send the upgrade request; message 0 follows the answer."""
        self.state[fd] = HANDSHAKING
        self.ep.modify(fd, EPOLLIN)
        self._put(fd, self.upgrades.request(fd))

    def _ramp_event(self, fd: int, mask: int) -> None:
        if fd != self.control and self.state[fd] == HANDSHAKING:
            if mask & EPOLLOUT and not self.flush(fd):
                return
            if mask & _READABLE:
                self._answer(fd)
            return
        super()._ramp_event(fd, mask)

    def _answer(self, fd: int) -> None:
        """The server's answer to the upgrade: once it is right, message 0 goes, as over TCP."""
        try:
            if not self.upgrades.answer(self.socks[fd]):
                return
        except HandshakeError as error:
            self._fail(fd, str(error))
            return
        Engine._begin(self, fd)

    # -- frames ----------------------------------------------------------------

    def send(self, fd: int, count: int, now: int) -> bool:
        """Send the next ``count`` messages of ``fd``, each a masked frame; False if it failed."""
        first = self.seq[fd]
        self.seq[fd] = first + count
        sent = self._frames(self.expect[fd], self.conn[fd], first, count)
        stamps = self.stamps[fd]
        if count == 1:
            stamps.append(now)
        else:
            stamps.extend(repeat(now, count))
        return self._put(fd, sent)

    def _unexpected(self, fd: int, data: bytes) -> bytes:
        """Take the server's control frames out of ``data``; the echo bytes left (b"": none).

        A byte that differs from the expected stream starts a control frame
        only at a frame boundary of the echo stream and with a control opcode;
        anything else is a mismatch (the connection is closed).
        """
        expected = self.expect[fd]
        kept = bytearray()
        pos = 0
        while True:
            want = expected[len(kept) : len(kept) + len(data) - pos]
            at = first_difference(memoryview(data)[pos:], want)
            kept += data[pos : pos + at]
            pos += at
            if pos >= len(data):
                return bytes(kept)
            boundary = (self.head[fd] + len(kept)) % self.unit == 0
            if not boundary or data[pos] & 0x0F < frames.CLOSE:
                self._mismatch(fd, bytes(kept) + data[pos:])
                return b""
            found = self._control(fd, data, pos)
            if found is None:
                return b""
            data, pos = found

    def _control(self, fd: int, data: bytes, pos: int) -> tuple[bytes, int] | None:
        """Act on the control frame at ``data[pos]`` (read the rest of it if a read cut it).

        Returns ``data`` (with the rest, if read) and where the frame ends;
        None if the connection failed.
        """
        deadline = time.monotonic() + CONTROL_WAIT_S
        try:
            while (length := control_length(data, pos)) is None or len(data) - pos < length:
                more = self._more(fd, 2 if length is None else length - (len(data) - pos), deadline)
                if not more:
                    self._fail(fd, f"a control frame was cut short for {CONTROL_WAIT_S:g} s")
                    return None
                data += more
        except frames.FrameError as error:
            why = f"connection {self.conn[fd]}: where an echo frame should start, {error.reason}"
            self._fail(fd, why, mismatch=True)
            return None
        opcode, payload = data[pos] & 0x0F, data[pos + 2 : pos + length]
        if opcode == frames.PING:
            key = self.keys.take().to_bytes(4, "little")
            if not self._put(fd, frames.encode_masked(frames.PONG, payload, key)):
                return None
        elif opcode == frames.CLOSE:
            try:
                code, reason = frames.parse_close(payload)
            except frames.FrameError as error:
                code, reason = None, f"malformed: {error.reason}"
            self._fail(fd, f"the server sent a close frame ({code} {reason})".rstrip())
            return None
        return data, pos + length

    def _more(self, fd: int, count: int, deadline: float) -> bytes:
        """Up to ``count`` more bytes of ``fd``, waiting until ``deadline`` at most."""
        try:
            if select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return os.read(fd, count)
        except OSError:
            pass
        return b""

    def _mismatch(self, fd: int, data: bytes) -> None:
        why = self.framing.describe(
            data,
            self.expect[fd][: len(data)],
            conn=self.conn[fd],
            seq=self.seq[fd] - len(self.stamps[fd]),
            into=self.head[fd],
        )
        self._fail(fd, why, mismatch=True)

    def _close(self, fd: int) -> None:
        self.upgrades.forget(fd)
        super()._close(fd)

    # -- the measured traffic -----------------------------------------------------

    def closed_loop(self, flow: Flow) -> None:  # noqa: C901, PLR0912, PLR0915, RUF100 -- hot loop: the plain loop costs 1.38x its CPU/message (docs/loadgen.md)
        """:meth:`Engine.closed_loop` with its sending step framing and masking in place.

        The same steps as :meth:`~Engine.plain_loop` through :meth:`send`:
        each echo verified against the expected frames, then the next message
        built, its echo frame appended to the expected bytes, and its payload
        masked with a fresh key and sent.
        """
        unit = self.unit
        size = self.spec.size
        framing, keys = self.framing, self.keys
        echo_head, head_, rep, low = framing.echo_head, framing.head, framing.repeat, framing.low
        pool, take = keys.pool, keys.take
        pop = pool.pop
        from_bytes = int.from_bytes
        counts = self.latencies.counts
        counted = counts.get
        control = self.control
        expect, stamps, head, last = self.expect, self.stamps, self.head, self.last
        conn, seq, unsent = self.conn, self.seq, self.unsent
        message, frames_of = self.payloads.message, self._frames
        flush, unexpected = self.flush, self._unexpected
        write, read = os.write, os.read
        wait, ready, events = self.ep.wait, self.events.ready, self.events
        clock = _clock
        budget, sending, sent, completed = flow.budget, flow.sending, flow.sent, flow.completed
        due = flow.due(self.next_report)
        while sent - completed - self.abandoned > 0:
            n = wait(events, TICK_S)
            for fd, mask in ready(n):
                if mask & EPOLLOUT and (not flush(fd) or not mask & _READABLE):
                    continue
                if fd == control:
                    self._command()
                    continue
                expected = expect[fd]
                if expected is None:
                    continue  # closed earlier in this batch
                # verify(fd):
                try:
                    data = read(fd, len(expected) + 1 if len(expected) < READ_MAX else READ_MAX)
                except BlockingIOError:
                    continue
                except OSError as error:
                    self._fail(fd, f"read: {error.strerror}")
                    continue
                if not data:
                    self._eof(fd)
                    continue
                if not expected.startswith(data):
                    data = unexpected(fd, data)  # control frames out, or a mismatch
                    if not data:
                        continue
                got = len(data)
                del expected[:got]
                now = clock()
                last[fd] = now
                got += head[fd]
                if got < unit:
                    head[fd] = got
                    continue
                done, head[fd] = divmod(got, unit)
                # latencies.add(now, stamps[fd], done):
                flight = stamps[fd]
                for _ in range(done):
                    us = (now - flight.popleft()) // 1000
                    counts[us] = counted(us, 0) + 1
                completed += done
                # _next(fd, done, now, flow), then send(fd, done, now):
                if not sending:
                    continue
                if done >= budget:
                    done, sending = budget, False
                budget -= done
                sent += done
                first = seq[fd]
                seq[fd] = first + done
                if done == 1:
                    data = message(conn[fd], first)
                    flight.append(now)
                    expected += echo_head
                    expected += data
                    key = pop() if pool else take()
                    data = (
                        head_
                        + key.to_bytes(4, "little")
                        + ((from_bytes(data, "little") ^ key * rep) & low).to_bytes(size, "little")
                    )
                else:
                    data = frames_of(expected, conn[fd], first, done)
                    flight.extend(repeat(now, done))
                pending = unsent[fd]
                if pending is not None:
                    pending += data
                    continue
                try:
                    written = write(fd, data)
                except BlockingIOError:
                    written = 0
                except OSError as error:
                    self._fail(fd, f"write: {error.strerror}")
                    continue
                if written < len(data):
                    self._backlog(fd, data, written)
            now = clock()
            if now >= due or self.stopping:
                flow.budget, flow.sending, flow.sent = budget, sending, sent
                flow.completed = completed
                if self.tick(flow, now):
                    break
                sending = flow.sending
                due = flow.due(self.next_report)
        flow.budget, flow.sending, flow.sent, flow.completed = budget, sending, sent, completed

    def _frames(self, expected: bytearray, conn: int, first: int, count: int) -> bytes:
        """Messages ``first`` .. ``first + count - 1`` of ``conn`` as frames; their echoes
        are appended to ``expected``."""
        message = self.payloads.message
        sent, echoes = self.framing.frames(
            [message(conn, seq) for seq in range(first, first + count)], self.keys
        )
        expected += echoes
        return sent
