"""The WebSocket protocol on rawepoll's loop: one shared object, per-descriptor state in arrays.

:class:`WebSocketProtocol` is a rawepoll handler (``shared = True``,
``by_fd = True``): the loop hands it each connection's bytes with the
connection's descriptor, and it answers with the bytes to send.  What it
keeps per connection, and when:

* always, for every descriptor the worker may hold (allocated once per
  worker, pages touched as descriptors are used): one state byte and one
  "ping unanswered" byte.  An upgraded, idle, subscribed connection costs
  those two bytes, its subscription (8 bytes) and the loop's own per-fd
  arrays -- no Python object;
* while an upgrade request is incomplete (rarely: it usually comes in one
  read): its bytes so far;
* while a frame is incomplete: its bytes so far;
* while a fragmented message is incomplete: its fragments, and for text an
  incremental UTF-8 decoder, so invalid UTF-8 is caught across fragment
  boundaries, as early as it can be.

**The fast path.**  Most reads hold whole, small, unfragmented data frames.
For a connection in the plain open state, :meth:`WebSocketProtocol.data_received`
parses them inline -- two header bytes, the key, one big-integer XOR to
unmask, ``decode`` to check UTF-8 for text -- and, for the echo application,
answers each with a frame built from the same payload without calling any
application code.  Anything else (a partial frame, fragments, control
frames, a close, a protocol error) takes the general path, which does the
same checks one step at a time.

**Application.**  A :class:`WebSocketApp` gets ``on_open(ws, request)``,
``on_message(ws, message)`` (``str`` for text, ``bytes`` for binary; what it
returns is sent back) and ``on_close(ws, code, reason)``; ``ws`` is a
:class:`WebSocket` handle (send, close, subscribe), safe to keep.  The
default application echoes every message and subscribes a client that
connected to ``/topic/NAME`` to topic ``NAME``; published messages reach
subscribers as text frames (binary if the payload is not UTF-8), the frame
encoded once per publish per worker.

**Liveness.**  One timer per worker, not one per connection: every
``ping_interval`` seconds every open connection gets a ping (a fan-out of one
frame) and is marked; a pong clears the mark; ``ping_timeout`` seconds later
a connection still marked gets close frame 1011 and is closed.  The same
one-second sweep closes handshakes and closing handshakes that overstay
their deadline.

**Closing.**  A close frame from the client is answered with a close frame
(its status echoed) and the TCP connection is closed.  A close begun here
(the application, the drain on SIGTERM with 1001 "going away") sends the
frame and waits for the client's close at most ``close_timeout`` seconds.
A protocol error, a handler fault (1011) and a ping timeout (1011) send the
frame and close at once: a failed connection reads nothing more (RFC 6455
7.1.7).  However a connection ends, ``on_close`` is told once -- 1006 when
no close frame came from the client.
"""

from __future__ import annotations

import codecs
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from rawepoll.server.websocket import frames
from rawepoll.server.websocket.frames import FrameError
from rawepoll.server.websocket.handshake import (
    Handshake,
    Rejection,
    Request,
    error_response,
    upgrade_response,
)

__all__ = ["WebSocket", "WebSocketApp", "WebSocketOptions", "WebSocketProtocol"]

# Per-descriptor state.
NONE: Final = 0  # not a WebSocket connection (or closed)
HANDSHAKE: Final = 1  # the upgrade request is on its way
OPEN: Final = 2  # frames both ways
CLOSING: Final = 3  # our close frame is sent; waiting for the client's
DONE: Final = 4  # closed at the WebSocket level; the TCP close is under way

_STATE: Final = 0x0F  # the state proper; above it, one flag:
_BUFFERED: Final = 0x10  # OPEN with an incomplete frame or message kept: the general path

# The inline path's tables, for payloads of 0..125 bytes: the masking key
# times _REPEAT[n] is the key repeated over n bytes (and a little more, cut
# off by _LOW[n]); the answer's header is precomputed.
_REPEAT: Final = [int.from_bytes(b"\x01\0\0\0" * ((n + 3) // 4), "little") for n in range(126)]
_LOW: Final = [(1 << (8 * n)) - 1 for n in range(126)]
_TEXT_HEADER: Final = [bytes((0x81, n)) for n in range(126)]
_BINARY_HEADER: Final = [bytes((0x82, n)) for n in range(126)]
_from_bytes: Final = int.from_bytes

_TOPIC_PREFIX: Final = "/topic/"
_SWEEP_S: Final = 1.0
_ECHO_TEXT: Final = 0x81
_ECHO_BINARY: Final = 0x82


@dataclass(frozen=True)
class WebSocketOptions:
    """The protocol's settings (``rawepoll serve --protocol websocket`` options)."""

    ping_interval: float = 30.0  # seconds between heartbeat pings; 0: none
    ping_timeout: float = 10.0  # a ping unanswered this long closes with 1011
    handshake_timeout: float = 10.0  # the upgrade request must be complete by then
    close_timeout: float = 5.0  # after our close frame, how long the client may take
    max_message: int = 1 << 20  # bytes of a message (all fragments); above: 1009
    origins: tuple[str, ...] | None = None  # allowed Origin values; None: any
    subprotocols: tuple[str, ...] = ()  # offered by the server, in order of preference


class WebSocket:
    """A handle on one WebSocket connection, given to the application; safe to keep."""

    __slots__ = ("_protocol", "fd", "generation")

    def __init__(self, protocol: WebSocketProtocol, fd: int, generation: int) -> None:
        self._protocol = protocol
        self.fd = fd
        self.generation = generation

    @property
    def open(self) -> bool:
        """Whether the connection is open at the WebSocket level."""
        return self._protocol.is_open(self.fd, self.generation)

    @property
    def hub(self) -> Any:
        """The server, from inside this worker (publish, broadcast, timers)."""
        return self._protocol.hub

    def send(self, message: str | bytes | bytearray | memoryview) -> bool:
        """A text frame for ``str``, a binary frame for bytes; False if the connection is gone."""
        return self._protocol.send_message(self.fd, self.generation, message)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (no-op if it is gone or closing).

        Raises:
            ValueError: ``code`` may not be sent (1000-1003, 1007-1014, 3000-4999 may).
        """
        if not frames.valid_close_code(code):
            raise ValueError(f"close code {code} may not be sent")
        self._protocol.close_socket(self.fd, self.generation, code, reason)

    def subscribe(self, topic: str) -> bool:
        """Published messages of ``topic`` reach this connection (as text frames)."""
        return bool(self._protocol.connection(self.fd, self.generation).subscribe(topic))

    def unsubscribe(self, topic: str) -> bool:
        return bool(self._protocol.connection(self.fd, self.generation).unsubscribe(topic))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WebSocket):
            return NotImplemented
        return (self.fd, self.generation) == (other.fd, other.generation)

    def __hash__(self) -> int:
        return hash((self.fd, self.generation))

    def __repr__(self) -> str:
        return f"<WebSocket fd={self.fd} generation={self.generation}>"


class WebSocketApp:
    """What a WebSocket server does with its connections; the default echoes.

    Subclass and override what you need (``rawepoll serve --protocol websocket
    --handler mymodule:MyApp``).  One instance serves every connection of a
    worker; keep per-connection data in a dict keyed by the ``ws`` handle.
    Every callback is isolated: an exception closes that connection with
    1011, never the worker.
    """

    def route(self, request: Request) -> bool:
        """Whether this application serves ``request.path`` (else: 404)."""
        return True

    def on_open(self, ws: WebSocket, request: Request) -> None:
        """Upgraded.  By default ``/topic/NAME`` subscribes to ``NAME``."""
        if request.path.startswith(_TOPIC_PREFIX) and len(request.path) > len(_TOPIC_PREFIX):
            ws.subscribe(request.path[len(_TOPIC_PREFIX) :])

    def on_message(self, ws: WebSocket, message: str | bytes) -> str | bytes | None:
        """A message arrived; what is returned is sent back.  By default: the message."""
        return message

    def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        """The connection closed (1006 if it closed without a closing handshake)."""


class _Fragments:
    __slots__ = ("decoder", "opcode", "parts", "size")

    def __init__(self, opcode: int) -> None:
        self.opcode = opcode
        self.parts: list[bytes] = []
        self.size = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")() if opcode == frames.TEXT else None


class WebSocketProtocol:
    """RFC 6455 over rawepoll's loop, for one :class:`WebSocketApp` (see the module docstring)."""

    shared: ClassVar[bool] = True
    by_fd: ClassVar[bool] = True

    def __init__(self, app: WebSocketApp, options: WebSocketOptions | None = None) -> None:
        self.app = app
        self.options = options or WebSocketOptions()
        self.echo = type(app).on_message is WebSocketApp.on_message  # the inline fast path
        # The inline path's largest read: one frame of at most 125 bytes -- and within the limit.
        self.inline_most = 6 + min(125, self.options.max_message)
        self.hub: Any = None
        self.state = bytearray(0)
        self.unanswered = bytearray(0)  # the round of the oldest ping with no pong yet (0: none)
        self.ping_round = 0  # 1..255, the heartbeat's rounds
        self.partial: dict[int, bytes] = {}  # an incomplete frame's bytes
        self.fragments: dict[int, _Fragments] = {}
        self.handshakes: dict[int, bytes] = {}  # an incomplete upgrade request so far
        self.deadlines: dict[int, float] = {}  # handshaking or closing: close by then

    # -- set-up, per worker ----------------------------------------------------

    def worker_started(self, hub: Any) -> None:
        """Per-descriptor arrays for this worker, the heartbeat and the sweep timers."""
        self.hub = hub
        limit = max(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1024)
        self.state = bytearray(limit)
        self.unanswered = bytearray(limit)
        if self.options.ping_interval > 0:
            hub.call_every(self.options.ping_interval, self._ping_all)
        hub.call_every(_SWEEP_S, self._sweep)

    def draining(self, hub: Any) -> None:
        """SIGTERM: every open connection gets close frame 1001, "going away"."""
        for fd in self._fds(OPEN):
            self._begin_close(fd, 1001, "going away")

    # -- the loop's handler protocol -------------------------------------------

    def connection_made(self, fd: int) -> None:
        self.state[fd] = HANDSHAKE
        self.unanswered[fd] = 0
        self.deadlines[fd] = time.monotonic() + self.options.handshake_timeout

    def connection_lost(self, fd: int, reason: str) -> None:
        state = self.state[fd] & _STATE
        self.state[fd] = NONE
        self.unanswered[fd] = 0
        self.partial.pop(fd, None)
        self.fragments.pop(fd, None)
        self.handshakes.pop(fd, None)
        self.deadlines.pop(fd, None)
        if state in (OPEN, CLOSING):  # no closing handshake completed: 1006
            generation = self.hub.connection(fd).generation  # the loop moves it on after us
            self.app.on_close(WebSocket(self, fd, generation), 1006, reason)

    def eof_received(self, fd: int) -> bytes | None:
        return None  # a TCP half-close ends the connection; on_close says 1006

    def last_words(self, fd: int) -> bytes | None:
        """A fault of the application closes its connection: close frame 1011 first."""
        if self.state[fd] & _STATE in (OPEN, CLOSING):  # connection_lost then says 1006
            return frames.close_frame(1011, "internal error")
        return None

    @staticmethod
    def push_frame(topic: str, payload: bytes) -> bytes:
        """A published message, as subscribers get it: a text frame (binary if not UTF-8)."""
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return frames.encode(frames.BINARY, payload)
        return frames.encode(frames.TEXT, payload)

    def data_received(self, data: memoryview, fd: int) -> bytes | None:  # noqa: PLR0911 -- the per-message path, inlined on purpose
        """Bytes from ``fd``; the bytes to send back.

        The inline path: a connection in the plain open state (nothing
        buffered) whose read is exactly one small, whole, masked text or
        binary frame -- the usual case of a request/response client.  The
        read becomes one integer (header, key and payload together); the
        payload is unmasked with the key times a precomputed repeat pattern,
        one XOR and one ``to_bytes``, checked with ``decode`` if it is text,
        and answered behind a precomputed header.  Measured with callgrind:
        ~10,700 instructions per 64-byte message above a plain echo's
        ~6,700, most of it the interpreter itself.  Everything else goes to
        the general path, frame by frame.
        """
        n = len(data)
        if self.state[fd] != OPEN or not 6 <= n <= self.inline_most:
            if n > 131 and self.state[fd] == OPEN:
                return self._medium(data, fd, n)
            return self._general(bytes(data), fd)
        whole = _from_bytes(data, "little")  # header, key and payload: one integer
        head = whole & 0xFFFF  # an AND with a small int is a small int: no copy of the rest
        first = head & 0xFF
        length = n - 6
        if head >> 8 != 0x80 | length or (first != 0x81 and first != 0x82):  # noqa: PLR1714
            return self._general(bytes(data), fd)  # several frames, or anything unusual
        key = (whole & 0xFFFFFFFF0000) >> 16
        value = ((whole >> 48) ^ key * _REPEAT[length]) & _LOW[length]
        payload = value.to_bytes(length, "little")
        if first == 0x81:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                return self._general(bytes(data), fd)  # 1007: the general path fails it
            if self.echo:
                return _TEXT_HEADER[length] + payload
            return self._message(fd, text)
        if self.echo:
            return _BINARY_HEADER[length] + payload
        return self._message(fd, payload)

    def _medium(self, data: memoryview, fd: int, n: int) -> bytes | None:
        """The inline path for one whole frame of 126..65535 bytes (a 16-bit length).

        As for small frames, without the general path's copies; the payload is
        unmasked by :func:`~rawepoll.server.websocket.frames.unmask`.
        """
        first = data[0]
        length = data[2] << 8 | data[3]
        if (
            data[1] != 0xFE  # masked, 16-bit length
            or (first != 0x81 and first != 0x82)  # noqa: PLR1714
            or n != length + 8
            or length > self.options.max_message
        ):
            return self._general(bytes(data), fd)  # several frames, or anything unusual
        payload = frames.unmask(data[8:], data[4:8])
        if first == 0x81:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                return self._general(bytes(data), fd)  # 1007: the general path fails it
            if self.echo:
                return bytes((0x81, 126, length >> 8, length & 0xFF)) + payload
            return self._message(fd, text)
        if self.echo:
            return bytes((0x82, 126, length >> 8, length & 0xFF)) + payload
        return self._message(fd, payload)

    # -- the general path ----------------------------------------------------

    def _general(self, data: bytes, fd: int) -> bytes | None:
        """Frame by frame, for every state; keeps the BUFFERED bit true to what is kept."""
        self.state[fd] &= _STATE  # the bit is re-derived below
        try:
            return self._general_step(data, fd)
        finally:
            state = self.state[fd] & _STATE
            if state == OPEN and (fd in self.partial or fd in self.fragments):
                self.state[fd] = OPEN | _BUFFERED  # the inline path must not touch it
            elif self.state[fd] & _BUFFERED:
                self.state[fd] = state

    def _general_step(self, data: bytes, fd: int) -> bytes | None:
        state = self.state[fd] & _STATE
        if state == HANDSHAKE:
            return self._handshake(fd, data)
        if state not in (OPEN, CLOSING):
            return None  # closed at the WebSocket level: the rest is ignored
        buffered = self.partial.pop(fd, None)
        if buffered is not None:
            data = buffered + data
        out: list[bytes] = []
        pos = 0
        try:
            while self.state[fd] in (OPEN, CLOSING):
                found = frames.read_frame(data, pos, self.options.max_message)
                if found is None:
                    break
                pos, fin, opcode, payload = found
                reply = self._frame(fd, fin, opcode, payload)
                if reply:
                    out.append(reply)
        except FrameError as error:  # fail the connection: our close frame, then the TCP close
            out.append(self._closing(fd, error.code, error.reason) or b"")
            self.hub.connection(fd).send(b"".join(out))
            self._finish(fd)  # RFC 6455 7.1.7: nothing more is read, not even a close frame
            return None
        if self.state[fd] == DONE:  # the client closed: our answer goes last, then the close
            conn = self.hub.connection(fd)
            conn.send(b"".join(out))
            conn.close()
            return None
        if pos < len(data) and self.state[fd] in (OPEN, CLOSING):
            self.partial[fd] = data[pos:]
        return b"".join(out) or None

    def _frame(self, fd: int, fin: int, opcode: int, payload: bytes) -> bytes | None:
        if opcode >= frames.CLOSE:
            return self._control(fd, opcode, payload)
        if self.state[fd] == CLOSING:
            return None  # after our close frame, data is dropped
        pending = self.fragments.get(fd)
        if opcode == frames.CONTINUATION:
            if pending is None:
                raise FrameError(1002, "a continuation frame without a message to continue")
        elif pending is not None:
            raise FrameError(1002, "a new message began before the last one ended")
        else:
            if fin:
                return self._whole(fd, opcode, payload)
            pending = self.fragments[fd] = _Fragments(opcode)
        return self._fragment(fd, pending, fin, payload)

    def _whole(self, fd: int, opcode: int, payload: bytes) -> bytes | None:
        if opcode == frames.TEXT:
            try:
                message: str | bytes = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise FrameError(1007, "a text message is not valid UTF-8") from None
        else:
            message = payload
        return self._message(fd, message)

    def _fragment(self, fd: int, pending: _Fragments, fin: int, payload: bytes) -> bytes | None:
        pending.size += len(payload)
        if pending.size > self.options.max_message:
            raise FrameError(1009, f"a message above {self.options.max_message} bytes")
        if pending.decoder is not None:
            try:
                pending.decoder.decode(payload, final=bool(fin))
            except UnicodeDecodeError:
                raise FrameError(1007, "a text message is not valid UTF-8") from None
        pending.parts.append(payload)
        if not fin:
            return None
        del self.fragments[fd]
        whole = b"".join(pending.parts)
        message: str | bytes = whole.decode("utf-8") if pending.decoder is not None else whole
        return self._message(fd, message)

    def _message(self, fd: int, message: str | bytes) -> bytes | None:
        """A complete message for the application.

        The echo application's answer is returned, to go out with the rest of
        the read's output.  Another application's answer is sent at once, so
        that it keeps its place among what the application sends itself.
        """
        if self.echo:
            return self._encode_reply(message)
        conn = self.hub.connection(fd)
        reply = self.app.on_message(WebSocket(self, fd, conn.generation), message)
        if reply is not None and self.state[fd] == OPEN:
            conn.send(self._encode_reply(reply))
        return None

    @staticmethod
    def _encode_reply(reply: object) -> bytes | None:
        if reply is None:
            return None
        if isinstance(reply, str):
            return frames.encode(frames.TEXT, reply.encode())
        if isinstance(reply, (bytes, bytearray, memoryview)):
            return frames.encode(frames.BINARY, reply)
        raise TypeError(f"on_message returned {type(reply).__name__}, not str, bytes or None")

    def _control(self, fd: int, opcode: int, payload: bytes) -> bytes | None:
        if opcode == frames.PING:  # answered until the client's close (RFC 6455 5.5.2)
            return (
                frames.encode(frames.PONG, payload) if self.state[fd] in (OPEN, CLOSING) else None
            )
        if opcode == frames.PONG:
            self.unanswered[fd] = 0
            return None
        code, reason = frames.parse_close(payload)  # FrameError if malformed
        answer = self.state[fd] == CLOSING  # the client answers our close
        self.state[fd] = DONE  # _general sends our answer last, then closes
        generation = self.hub.connection(fd).generation
        self.app.on_close(WebSocket(self, fd, generation), code or 1005, reason)
        if answer:
            self._finish(fd)  # the closing handshake is complete
            return None
        return frames.close_frame(code, "")

    # -- the handshake ---------------------------------------------------------

    def _handshake(self, fd: int, data: bytes) -> bytes | None:
        """The upgrade request: parsed when it is whole, which is nearly always in one read.

        Nothing is kept for a connection whose request came whole; an incomplete
        one keeps its bytes (at most ``MAX_REQUEST``, the parser refuses more)
        and is parsed again, whole, when more arrive.  A burst of new
        connections thus holds no parser each, only the requests still cut.
        """
        earlier = self.handshakes.pop(fd, None)
        if earlier is not None:
            data = earlier + data
        handshake = Handshake(self.options.origins)
        conn = self.hub.connection(fd)
        try:
            request = handshake.feed(data)
            if request is None:
                self.handshakes[fd] = data
                return None
            if not self.app.route(request):
                raise Rejection(404, f"nothing is served at {request.path}")
        except Rejection as rejection:
            self.state[fd] = DONE
            conn.send(error_response(rejection))
            conn.close()
            return None
        del self.deadlines[fd]
        conn.send(upgrade_response(request, self._subprotocol(request.subprotocols)))
        self.state[fd] = OPEN
        self.app.on_open(WebSocket(self, fd, conn.generation), request)
        if handshake.rest and self.state[fd] == OPEN:
            return self._general(handshake.rest, fd)
        return None

    def _subprotocol(self, offered: Sequence[str]) -> str | None:
        for name in self.options.subprotocols:
            if name in offered:
                return name
        return None

    # -- server-initiated closes, heartbeat, sweep -----------------------------

    def _closing(self, fd: int, code: int, reason: str) -> bytes | None:
        """Enter the closing handshake: our close frame (None if not open), a deadline."""
        if self.state[fd] & _STATE != OPEN:
            return None
        self.state[fd] = CLOSING
        self.fragments.pop(fd, None)
        self.partial.pop(fd, None)
        self.deadlines[fd] = time.monotonic() + self.options.close_timeout
        return frames.close_frame(code, reason)

    def _begin_close(self, fd: int, code: int, reason: str) -> None:
        """A close begun outside a read (the application, a timer, the drain): sent at once."""
        frame = self._closing(fd, code, reason)
        if frame is not None:
            self.hub.connection(fd).send(frame)

    def _finish(self, fd: int) -> None:
        """Close the TCP connection now.  Still OPEN or CLOSING here (no closing handshake
        completed): connection_lost tells the application 1006."""
        self.deadlines.pop(fd, None)
        self.hub.connection(fd).close()

    def _fds(self, wanted: int) -> list[int]:
        state = self.state
        return [fd for fd in self.hub.open_fds() if state[fd] & _STATE == wanted]

    def _ping_all(self) -> None:
        """The heartbeat: one ping to every open connection; the unanswered are closed later."""
        fds = self._fds(OPEN)
        if not fds:
            return
        # A round number, not a flag: with ping_timeout >= ping_interval the next round's
        # ping goes out before this round's check, and must not count as this one unanswered.
        self.ping_round = self.ping_round % 255 + 1
        mark = self.ping_round
        unanswered = self.unanswered
        for fd in fds:
            if not unanswered[fd]:
                unanswered[fd] = mark  # the oldest unanswered ping is the one that times out
        self.hub.send_each(fds, frames.encode(frames.PING, b""))
        self.hub.call_later(self.options.ping_timeout, self._check_pongs, fds, mark)

    def _check_pongs(self, fds: list[int], mark: int) -> None:
        unanswered = self.unanswered
        state = self.state
        for fd in fds:
            if unanswered[fd] == mark and state[fd] & _STATE == OPEN:
                unanswered[fd] = 0
                self._begin_close(fd, 1011, "ping timeout")
                self._finish(fd)  # unresponsive: do not wait for its close frame

    def _sweep(self) -> None:
        """Handshakes and closing handshakes past their deadline are closed."""
        now = time.monotonic()
        late = [fd for fd, deadline in self.deadlines.items() if deadline <= now]
        for fd in late:
            if self.state[fd] == HANDSHAKE:
                self.state[fd] = DONE
                self.handshakes.pop(fd, None)
            self._finish(fd)

    # -- for WebSocket handles ---------------------------------------------------

    def connection(self, fd: int, generation: int) -> Any:
        """The loop's handle for ``(fd, generation)`` (stale if the connection moved on)."""
        return self.hub.connection(fd, generation)

    def is_open(self, fd: int, generation: int) -> bool:
        return bool(self.connection(fd, generation).open) and self.state[fd] & _STATE == OPEN

    def send_message(
        self, fd: int, generation: int, message: str | bytes | bytearray | memoryview
    ) -> bool:
        conn = self.connection(fd, generation)
        if not conn.open:
            conn.send(b"")  # a stale handle: counted, nothing written
            return False
        if self.state[fd] & _STATE != OPEN:
            return False
        frame = self._encode_reply(message)
        assert frame is not None
        return bool(conn.send(frame))

    def close_socket(self, fd: int, generation: int, code: int, reason: str) -> None:
        if self.is_open(fd, generation):
            self._begin_close(fd, code, reason)
