"""Fuzzing the WebSocket protocol's sans-IO core: byte streams into a ``WebSocketProtocol``.

Run by ``python -m hardening.fuzz`` (the ``websocket`` target), in a child interpreter.
:class:`WebSocketFuzz` drives :class:`rawepoll.server.websocket.WebSocketProtocol`
without sockets, through :class:`FakeHub` -- the one stand-in for the worker in the
project, because this fuzzes the sans-IO core: it hands out connection handles
whose ``send`` appends to a per-connection output and whose ``close`` calls
``connection_lost`` at once, as the loop does when nothing is pending; a
descriptor closed is handed to the next connection, with a new generation.

Each example runs one to three connections, their chunks interleaved, each
chosen by hypothesis among:

``valid``
    a valid handshake (random key, path, headers) then valid frames -- messages
    fragmented anywhere, pings, pongs, maybe a close; the output must be the
    model's, exactly: 101 with the right accept, each message echoed, a pong
    per ping, the close code echoed;
``fault``
    a valid handshake, a valid prefix, then one violation of RFC 6455 (unmasked,
    reserved bits or opcode, long or fragmented control frame, orphan
    continuation, a message inside a message, invalid UTF-8 -- in text, across
    fragments, in a close reason --, a bad close code, a 64-bit length with its
    top bit set, a message above the limit): the prefix's replies, then a close
    frame with the fault's code (1002, 1007, 1009), then the connection closed;
``mutated``
    a valid stream with bytes flipped, inserted, dropped or cut short;
``garbage``
    random bytes, with or without a valid handshake first.

Chunks are cut anywhere and fed as the loop feeds them (a view of a buffer that
is scribbled on after each call); at random points the heartbeat, the pong
checks and the sweep run (with timeouts of zero, so that they act).  Checks,
for every example: no exception escapes the protocol; all it sends on a
connection is a well-formed HTTP answer (h11) -- 101, or 400/403/404/426 and
then the connection closed -- followed by frames a client can read (wsproto);
no bytes are returned for a connection that is closed; and once every
connection is gone, no per-connection state is left (the ``partial``,
``fragments``, ``handshakes`` and ``deadlines`` dicts, the state and ping bytes).
A hang is the parent's finding (the child misses its deadline).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import random
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from rawepoll.server.websocket import WebSocketApp, WebSocketOptions, WebSocketProtocol

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 2048  # the fuzzed protocol's --max-message: small, so that 1009 is reached
SMALL_MESSAGE = 40  # ... or smaller than a control frame (whole small frames take another path)
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HTTP_ERRORS = frozenset({400, 403, 404, 426})
FAULT_CODES = frozenset({1002, 1007, 1009})
PALETTE = "aZ \x00é\u07ff\u0800€\uffff😀\U0010ffff"


class FuzzFinding(Exception):  # noqa: N818 -- what the fuzzer reports, named so
    """The protocol did what it must never do."""


# ---------------------------------------------------------------- the stand-in for the worker


class FakeConnection:
    """What ``hub.connection(fd[, generation])`` gives the protocol."""

    __slots__ = ("fd", "generation", "hub")

    def __init__(self, hub: FakeHub, fd: int, generation: int) -> None:
        self.hub = hub
        self.fd = fd
        self.generation = generation

    @property
    def open(self) -> bool:
        return self.hub.is_current(self.fd, self.generation)

    def send(self, data: bytes | bytearray | memoryview) -> bool:
        if not self.open:
            return False
        self.hub.output[self.fd, self.generation] += bytes(data)
        return True

    def close(self) -> None:
        if self.open:
            self.hub.close(self.fd, "closed")

    def subscribe(self, topic: str) -> bool:
        return self.open

    def unsubscribe(self, topic: str) -> bool:
        return self.open


class FakeHub:
    """The worker as the protocol sees it: handles, descriptors, timers (run on demand)."""

    def __init__(self, protocol: WebSocketProtocol) -> None:
        self.protocol = protocol
        self.generations: dict[int, int] = {}  # fd -> generation, while open
        self.next_generation: Counter[int] = Counter()
        self.output: dict[tuple[int, int], bytearray] = {}  # by (fd, generation)
        self.repeating: list[tuple[Callable[..., object], tuple[object, ...]]] = []
        self.later: list[tuple[Callable[..., object], tuple[object, ...]]] = []

    # -- what the protocol calls
    def connection(self, fd: int, generation: int | None = None) -> FakeConnection:
        if generation is None:
            generation = self.generations.get(fd, self.next_generation[fd])
        return FakeConnection(self, fd, generation)

    def is_current(self, fd: int, generation: int) -> bool:
        return self.generations.get(fd) == generation

    def open_fds(self) -> list[int]:
        return sorted(self.generations)

    def send_each(self, fds: list[int], data: bytes) -> None:
        for fd in fds:
            if fd in self.generations:
                self.output[fd, self.generations[fd]] += data

    def call_every(self, interval: float, callback: Callable[..., object], *args: object) -> None:
        self.repeating.append((callback, args))

    def call_later(self, delay: float, callback: Callable[..., object], *args: object) -> None:
        self.later.append((callback, args))

    def publish(self, topic: str, payload: object) -> None:
        pass

    # -- what the loop does
    def accept(self) -> tuple[int, int]:
        """A new connection on the lowest free descriptor, as the kernel hands them out (so
        a descriptor the server closed goes to the next connection): ``(fd, generation)``."""
        fd = 3
        while fd in self.generations:
            fd += 1
        generation = self.generations[fd] = self.next_generation[fd]
        self.output[fd, generation] = bytearray()
        self.protocol.connection_made(fd)
        return fd, generation

    def close(self, fd: int, reason: str) -> None:
        if fd not in self.generations:
            return
        self.protocol.connection_lost(fd, reason)  # before the generation moves on
        del self.generations[fd]
        self.next_generation[fd] += 1

    def run_timers(self) -> None:
        """Time passes: every periodic timer once, every one-shot timer due."""
        later, self.later = self.later, []
        for callback, args in [*self.repeating, *later]:
            callback(*args)


# ---------------------------------------------------------------- applications


class AppFault(Exception):  # noqa: N818 -- raised on purpose, not an error of ours
    """Raised on purpose by :class:`FaultyApp`."""


class EchoApp(WebSocketApp):
    """Echoes through ``on_message`` (the general path; the default app takes the inline one)."""

    def on_message(self, ws: Any, message: str | bytes) -> str | bytes | None:
        return message


class FaultyApp(EchoApp):
    """Echoes, but raises on the text message ``boom``."""

    def on_message(self, ws: Any, message: str | bytes) -> str | bytes | None:
        if message == "boom":
            raise AppFault("boom")
        return message


APPS: dict[str, type[WebSocketApp]] = {
    "default": WebSocketApp,
    "echo": EchoApp,
    "faulty": FaultyApp,
}


# ---------------------------------------------------------------- what clients send


def frame(first: int, payload: bytes, *, mask: bool = True, length: int | None = None) -> bytes:
    """A frame with any first byte; masked unless told; ``length`` may lie about the payload."""
    n = len(payload) if length is None else length
    bit = 0x80 if mask else 0
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 65536:
        head = bytes((first, bit | 126)) + struct.pack(">H", n)
    else:
        head = bytes((first, bit | 127)) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = hashlib.blake2b(head + payload, digest_size=4).digest()  # reproducible from the seed
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@dataclass
class Stream:
    """What one client sends, and what the server must answer (None: no exact model)."""

    kind: str
    data: bytes
    key: str
    replies: list[tuple[object, ...]] | None = None  # after the 101
    close_code: int | None = None  # the server's close frame must carry this code
    closes: bool = False  # ... and the server must close the connection


def handshake(key: str, path: str = "/", extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: fuzz.example\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


def text_of(rng: random.Random, size: int) -> bytes:
    return "".join(rng.choices(PALETTE, k=size)).encode()[:size].decode(errors="ignore").encode()


@functools.cache
def valid_frames(
    limit: int,
) -> st.SearchStrategy[tuple[bytes, list[tuple[object, ...]], int | None]]:
    return _valid_frames(limit)


@st.composite
def _valid_frames(
    draw: st.DrawFn, limit: int
) -> tuple[bytes, list[tuple[object, ...]], int | None]:
    """Valid client frames (messages within ``limit``); the echo's replies; the close code if
    the stream closes."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    data = b""
    replies: list[tuple[object, ...]] = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["text", "binary", "ping", "pong"]))
        if kind in ("ping", "pong"):
            payload = rng.randbytes(draw(st.integers(0, 125)))
            data += frame(0x80 | (PING if kind == "ping" else PONG), payload)
            replies += [("pong", payload)] if kind == "ping" else []
            continue
        size = min(limit, draw(st.one_of(st.integers(0, 130), st.sampled_from([limit, 126, 125]))))
        payload = text_of(rng, size) if kind == "text" else rng.randbytes(size)
        if kind == "text" and draw(st.integers(0, 9)) == 0:
            payload = b"boom"  # FaultyApp raises on it
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for i, piece in enumerate(pieces):
            opcode = (TEXT if kind == "text" else BINARY) if i == 0 else CONTINUATION
            if i and draw(st.booleans()):  # a ping between fragments
                data += frame(0x80 | PING, b"mid")
                replies.append(("pong", b"mid"))
            data += frame((0x80 if i == len(pieces) - 1 else 0) | opcode, piece)
        replies.append((kind, payload.decode() if kind == "text" else payload))
    code = None
    if draw(st.booleans()):
        code = draw(st.sampled_from([1000, 1001, 1003, 1008, 1011, 3000, 4999]))
        data += frame(0x88, struct.pack(">H", code) + b"bye")
        replies.append(("close", code))
    return data, replies, code


FAULTS: list[tuple[str, Callable[[random.Random, int], bytes], int]] = [
    ("unmasked", lambda r, limit: frame(0x82, r.randbytes(5), mask=False), 1002),
    (
        "rsv",
        lambda r, limit: frame(0x80 | r.randrange(1, 8) << 4 | r.choice([1, 2, 9, 10]), b"x"),
        1002,
    ),
    (
        "opcode",
        lambda r, limit: frame(0x80 | r.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), b""),
        1002,
    ),
    (
        "long control",
        lambda r, limit: frame(0x80 | r.choice([8, 9, 10]), b"\x03\xe8" + bytes(130)),
        1002,
    ),
    ("fragmented control", lambda r, limit: frame(r.choice([9, 10]), b"p"), 1002),
    ("orphan continuation", lambda r, limit: frame(r.choice([0, 0x80]), b"c"), 1002),
    ("nested message", lambda r, limit: frame(TEXT, b"a") + frame(0x80 | BINARY, b"b"), 1002),
    (
        "bad utf-8",
        lambda r, limit: frame(0x81, b"ok" + r.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80"])),
        1007,
    ),
    (
        "bad utf-8 across fragments",
        lambda r, limit: frame(TEXT, b"\xe2\x82") + frame(0x80, b"("),
        1007,
    ),
    ("bad close reason", lambda r, limit: frame(0x88, b"\x03\xe8\xff"), 1007),
    (
        "bad close code",
        lambda r, limit: frame(
            0x88, struct.pack(">H", r.choice([0, 999, 1004, 1005, 1006, 1015, 2999, 5000]))
        ),
        1002,
    ),
    ("one-byte close", lambda r, limit: frame(0x88, b"\x03"), 1002),
    ("top bit", lambda r, limit: bytes((0x82, 0xFF)) + struct.pack(">Q", 1 << 63) + b"kkkk", 1002),
    ("too big", lambda r, limit: frame(0x82, b"", length=limit + 1 + r.randrange(1 << 20)), 1009),
    (
        "too big in fragments",
        lambda r, limit: frame(BINARY, bytes(limit)) + frame(0x80, b"x"),
        1009,
    ),
]


@functools.cache
def streams(limit: int) -> st.SearchStrategy[Stream]:
    return _streams(limit)


@st.composite
def _streams(draw: st.DrawFn, limit: int) -> Stream:
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    key = base64.b64encode(rng.randbytes(16)).decode()
    path = draw(st.sampled_from(["/", "/topic/fuzz", "/a?b=c"]))
    request = handshake(key, path)
    kind = draw(st.sampled_from(["valid", "fault", "mutated", "garbage"]))
    data, replies, code = draw(valid_frames(limit))
    if kind == "valid":
        return Stream(kind, request + data, key, replies, code, closes=code is not None)
    if kind == "fault":
        prefix, prefix_replies, _ = draw(valid_frames(limit).filter(lambda f: f[2] is None))
        name, make, fault_code = draw(st.sampled_from(FAULTS))
        fault = make(rng, limit)
        return Stream(
            f"fault: {name}", request + prefix + fault, key, prefix_replies, fault_code, True
        )
    if kind == "mutated":
        whole = bytearray(request + data)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, max(0, len(whole) - 1)))
            how = draw(st.sampled_from(["flip", "insert", "drop", "cut"]))
            if how == "flip" and whole:
                whole[at] ^= 1 << draw(st.integers(0, 7))
            elif how == "insert":
                whole[at:at] = rng.randbytes(draw(st.integers(1, 8)))
            elif how == "drop":
                del whole[at : at + draw(st.integers(1, 8))]
            else:
                del whole[at:]
        return Stream(kind, bytes(whole), key)
    garbage = rng.randbytes(draw(st.integers(0, 300)))
    return Stream(kind, (request if draw(st.booleans()) else b"") + garbage, key)


# ---------------------------------------------------------------- what the server sent


@dataclass
class Answer:
    status: int | None = None  # None: no complete HTTP answer (yet)
    accept: str | None = None
    events: list[tuple[object, ...]] = field(default_factory=list)


def read_answer(output: bytes) -> Answer:
    """The server's output on one connection: an HTTP answer (h11), then frames (wsproto).

    Raises:
        FuzzFinding: malformed HTTP, or a frame a client must refuse.
    """
    answer = Answer()
    if not output:
        return answer
    client = h11.Connection(our_role=h11.CLIENT)
    upgrade = [("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]
    client.send(h11.Request(method="GET", target="/", headers=upgrade))
    client.send(h11.EndOfMessage())
    client.receive_data(output)
    try:
        event = client.next_event()
    except h11.RemoteProtocolError as error:
        raise FuzzFinding(f"malformed HTTP answer ({error}): {output[:300]!r}") from None
    if event is h11.NEED_DATA:
        raise FuzzFinding(f"an incomplete HTTP answer: {output[:300]!r}")
    assert isinstance(event, (h11.Response, h11.InformationalResponse)), event
    answer.status = event.status_code
    headers = {name.lower(): value for name, value in event.headers}
    if event.status_code != 101:
        return answer
    answer.accept = headers.get(b"sec-websocket-accept", b"").decode()
    rest, _ = client.trailing_data
    reader = FrameProtocol(client=True, extensions=[])
    reader.receive_bytes(bytes(rest))
    parts: list[object] = []
    try:
        for got in reader.received_frames():
            if got.opcode == Opcode.CLOSE:
                answer.events.append(("close", int(got.payload[0])))  # type: ignore[index]
            elif got.opcode in (Opcode.PING, Opcode.PONG):
                answer.events.append((got.opcode.name.lower(), bytes(got.payload)))  # type: ignore[arg-type]
            else:
                parts.append(got.payload)
                if got.frame_finished and got.message_finished:
                    kind = "text" if got.opcode == Opcode.TEXT else "binary"
                    joined = "".join(parts) if kind == "text" else b"".join(parts)  # type: ignore[arg-type]
                    answer.events.append((kind, joined))
                    parts = []
    except ParseFailed as error:
        raise FuzzFinding(
            f"a frame a client must refuse ({error}): {bytes(rest)[:300]!r}"
        ) from None
    return answer


def same(got: list[tuple[object, ...]], expected: list[tuple[object, ...]], app: str) -> bool:
    """The default application answers in the model's order; another one sends each reply
    at once while pongs go out at the end of the read: each kind in order, then."""
    if app == "default":
        return got == expected
    return all(
        [e for e in got if (e[0] == "pong") == pongs]
        == [e for e in expected if (e[0] == "pong") == pongs]
        for pongs in (True, False)
    )


def same_kinds_prefix(got: list[tuple[object, ...]], expected: list[tuple[object, ...]]) -> bool:
    """Each kind of ``got`` (pongs, the rest) is a prefix of that kind in ``expected``."""
    for pongs in (True, False):
        mine = [e for e in got if (e[0] == "pong") == pongs]
        theirs = [e for e in expected if (e[0] == "pong") == pongs]
        if mine != theirs[: len(mine)]:
            return False
    return True


def accept_of(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


# ---------------------------------------------------------------- the engine


class WebSocketFuzz:
    """Sans-IO WebSocket fuzzing; ``calls`` counts calls into the protocol."""

    ROUND = 50

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.examples = 0
        self.buffer = bytearray(1 << 16)
        self.view = memoryview(self.buffer)

    def batch(self, examples: int, seed: int) -> None:
        @hypothesis_seed(seed)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            self.examples += 1
            self.one_example(data)

        run()

    def one_example(self, data: st.DataObject) -> None:
        app = data.draw(st.sampled_from(sorted(APPS)), label="app")
        # Zero timeouts: the timers, when they run, close what handshakes, what is closing
        # and what has not answered a ping -- and the exact models no longer hold.
        zero = data.draw(st.booleans(), label="timeouts of zero")
        limit = data.draw(st.sampled_from([MAX_MESSAGE, SMALL_MESSAGE]), label="limit")
        options = WebSocketOptions(
            ping_interval=1.0 if zero else 0.0,
            ping_timeout=0.0,
            handshake_timeout=0.0 if zero else 3600.0,
            close_timeout=0.0 if zero else 3600.0,
            max_message=limit,
        )
        protocol = WebSocketProtocol(APPS[app](), options)
        hub = FakeHub(protocol)
        protocol.worker_started(hub)
        clients = data.draw(st.lists(streams(limit), min_size=1, max_size=3), label="streams")
        chunks: list[list[bytes]] = []
        for stream in clients:
            cuts = sorted(
                data.draw(st.lists(st.integers(0, len(stream.data)), max_size=8), label="cuts")
            )
            pairs = zip([0, *cuts], [*cuts, len(stream.data)], strict=True)
            chunks.append([stream.data[a:b] for a, b in pairs if b > a])
        order = data.draw(
            st.permutations([i for i, c in enumerate(chunks) for _ in c]), label="order"
        )
        timers_at = set(data.draw(st.lists(st.integers(0, len(order)), max_size=3), label="timers"))
        conns: list[tuple[int, int] | None] = [None] * len(clients)  # connected at the first chunk
        sent = [0] * len(clients)
        for step, i in enumerate(order):
            if step in timers_at:
                self.calls["timers"] += 1
                hub.run_timers()
            if conns[i] is None:
                conns[i] = hub.accept()
            fd, generation = conns[i]  # type: ignore[misc]
            chunk = chunks[i][sent[i]]
            sent[i] += 1
            if hub.is_current(fd, generation):  # else the server closed it: writes go nowhere
                self.feed(hub, protocol, fd, chunk)
        used = set()
        for i, stream in enumerate(clients):
            fd, generation = conns[i] or hub.accept()  # a client that sent nothing connects too
            used.add(fd)
            closed = not hub.is_current(fd, generation)
            self.calls[stream.kind.partition(":")[0]] += 1
            self.check(stream, bytes(hub.output[fd, generation]), closed, app, zero)
            if not closed:
                self.calls["connection_lost"] += 1
                hub.close(fd, "eof")  # the client goes away
        self.check_released(protocol, sorted(used))

    def feed(self, hub: FakeHub, protocol: WebSocketProtocol, fd: int, chunk: bytes) -> None:
        """``data_received`` as the loop calls it (a view of a reused buffer); a fault of the
        application handled as the loop handles it (last words, then the close)."""
        self.calls["data_received"] += 1
        self.buffer[: len(chunk)] = chunk
        generation = hub.generations[fd]
        try:
            out = protocol.data_received(self.view[: len(chunk)], fd)
        except AppFault:
            words = protocol.last_words(fd)
            if not words or words[0] != 0x88 or words[2:4] != struct.pack(">H", 1011):
                raise FuzzFinding(f"an application fault got {words!r}, not close 1011") from None
            hub.output[fd, generation] += words
            hub.close(fd, "error")
            return
        finally:
            self.buffer[: len(chunk)] = b"\xee" * len(chunk)  # the view was valid during the call
        if out is not None and not isinstance(out, (bytes, bytearray, memoryview)):
            raise FuzzFinding(f"data_received returned a {type(out).__name__}")
        if out:
            if not hub.is_current(fd, generation):
                raise FuzzFinding(f"{len(out)} bytes returned for a connection it closed")
            hub.output[fd, generation] += bytes(out)

    def check(self, stream: Stream, output: bytes, closed: bool, app: str, zero: bool) -> None:
        answer = read_answer(output)
        if answer.status is not None and answer.status != 101:
            self._check_refusal(stream, answer.status, output, closed)
            return
        events = self._well_formed_events(stream, answer, zero)
        if stream.replies is None:
            return  # mutated or garbage: well-formed is all that can be asked
        if app == "faulty" and ("text", "boom") in stream.replies:
            self._check_boom(stream, answer.status == 101, events, closed, zero)
            return  # the pongs of the read that raised are lost with it: no exact model
        expected = list(stream.replies)
        if stream.kind != "valid":
            expected.append(("close", stream.close_code))
        if zero:
            self._check_prefix(stream, events, expected, app)
            return
        if answer.status != 101:
            raise FuzzFinding(f"{stream.kind}: no 101 for a valid handshake: {output[:300]!r}")
        if not same(events, expected, app):
            raise FuzzFinding(f"{stream.kind}: got {events!r:.600}, expected {expected!r:.600}")
        if closed != stream.closes:
            raise FuzzFinding(f"{stream.kind}: closed {closed}, expected {stream.closes}")

    @staticmethod
    def _check_refusal(stream: Stream, status: int, output: bytes, closed: bool) -> None:
        """An HTTP error answer: one of those allowed, then the close; never for a valid
        handshake."""
        if status not in HTTP_ERRORS:
            raise FuzzFinding(f"{stream.kind}: HTTP {status}")
        if not closed:
            raise FuzzFinding(f"{stream.kind}: HTTP {status} and the connection left open")
        if stream.replies is not None:
            raise FuzzFinding(f"{stream.kind}: a valid handshake refused: {output[:300]!r}")

    @staticmethod
    def _well_formed_events(stream: Stream, answer: Answer, zero: bool) -> list[tuple[object, ...]]:
        """The server's frames (without the timers' empty pings when ``zero``), checked for
        what holds of any stream: the right accept key, nothing after the close."""
        exact = stream.replies is not None  # the handshake is as made (not mutated)
        if answer.status == 101 and exact and answer.accept != accept_of(stream.key):
            raise FuzzFinding(f"{stream.kind}: Sec-WebSocket-Accept {answer.accept!r}")
        events = [e for e in answer.events if e != ("ping", b"")] if zero else answer.events
        closes = [e for e in events if e[0] == "close"]
        if len(closes) > 1 or (closes and events[-1][0] != "close"):
            raise FuzzFinding(f"{stream.kind}: frames after the server's close: {events!r:.500}")
        return events

    @staticmethod
    def _check_boom(
        stream: Stream, upgraded: bool, events: list[tuple[object, ...]], closed: bool, zero: bool
    ) -> None:
        """The application raised: the server closed with 1011 (unless the timers acted)."""
        closes = [e for e in events if e[0] == "close"]
        if upgraded and (closes[-1:] != [("close", 1011)] or not closed) and not zero:
            raise FuzzFinding(f"{stream.kind}: boom, and then {events!r:.500}")

    @staticmethod
    def _check_prefix(
        stream: Stream,
        events: list[tuple[object, ...]],
        expected: list[tuple[object, ...]],
        app: str,
    ) -> None:
        """With the timers acting, what came is a prefix of the model, maybe cut by a close."""
        body = events[:-1] if events and events[-1][0] == "close" else events
        model = expected[:-1] if expected and expected[-1][0] == "close" else expected
        ok = body == model[: len(body)] if app == "default" else same_kinds_prefix(body, model)
        if not ok:
            raise FuzzFinding(
                f"{stream.kind}: got {events!r:.600}, not a prefix of {expected!r:.600}"
            )
        if len(body) < len(events):
            allowed = {1011} | (
                {expected[-1][1]} if expected and expected[-1][0] == "close" else set()
            )
            if events[-1][1] not in allowed:
                raise FuzzFinding(
                    f"{stream.kind}: closed with {events[-1]!r}, expected one of {allowed}"
                )

    @staticmethod
    def check_released(protocol: WebSocketProtocol, fds: list[int]) -> None:
        """Every connection is gone: nothing of theirs may be left."""
        left = {
            name: sorted(getattr(protocol, name))
            for name in ("partial", "fragments", "handshakes", "deadlines")
            if getattr(protocol, name)
        }
        bytes_left = [fd for fd in fds if protocol.state[fd] or protocol.unanswered[fd]]
        if left or bytes_left:
            raise FuzzFinding(
                f"state left after every connection closed: {left}, bytes of {bytes_left}"
            )

    def report(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "calls": self.calls["data_received"] + self.calls["connection_lost"],
            "unit": "protocol calls",
            "per_target": {k: v for k, v in self.calls.items() if v},
        }
