"""What the WebSocket tests share: servers, a raw client, wsproto and h11 as the oracles.

* :func:`serve` -- ``rawepoll serve --protocol websocket`` on a free port of
  127.0.0.1, started through its ``ready`` event and stopped (its whole
  process group) on the way out, also when the test failed;
* :class:`PublishApp` -- the custom application the tests pass with
  ``--handler``: it echoes, and it obeys a few commands (publish, close,
  raise, count) so that a client can make the server do what a test needs;
* :class:`RawClient` -- a client on a plain socket: it sends exactly the bytes
  it is given, in the chunks it is given, and reads the server's frames with
  wsproto (never with rawepoll's own reader: the code under test is not its
  own oracle);
* :func:`read_response` -- the server's HTTP answer to a handshake, parsed by h11;
* the model of what the echo server answers to a stream of client frames
  (:func:`model_replies`), and how wsproto reads the same stream as a server
  (:func:`wsproto_server_reads`).

Every wait is bounded (:data:`BOUND`): a bound is there so that a broken
server fails a test instead of hanging it, never to measure time.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h11
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as _websockets_connect
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from rawepoll.server.websocket import Request, WebSocket, WebSocketApp
from rawepoll.tools.serverproc import ServerProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS_DIR = REPO_ROOT / "tests"
BOUND = 30.0  # seconds any one wait may take before the test fails
HOST = "127.0.0.1"

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the RFC's example key ...
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # ... and its Sec-WebSocket-Accept
# Close codes a client may send that both rawepoll and wsproto accept (1014 is registered
# with IANA and accepted by rawepoll, but wsproto 1.3 does not know it).
VALID_CODES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013)
APP = "websocket.helpers:PublishApp"  # --handler, with TESTS_DIR on PYTHONPATH

# What a client sees: ("text", str), ("binary", bytes), ("ping" | "pong", bytes) and
# ("close", code, reason).
Event = tuple[object, ...]


# ---------------------------------------------------------------- servers


@contextlib.contextmanager
def serve(
    *args: str, workers: int = 1, mode: str = "lt", app: str | None = None
) -> Iterator[ServerProcess]:
    """``rawepoll serve --protocol websocket ARGS`` on a free port; reaped at the end."""
    argv = ["--host", HOST, "--port", "0", "--protocol", "websocket"]
    argv += ["--workers", str(workers), "--mode", mode, *args]
    env = None
    if app is not None:
        argv += ["--handler", app]
        path = os.environ.get("PYTHONPATH")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS_DIR), path])))
    with ServerProcess.serve(*argv, env=env, cwd=str(REPO_ROOT)) as server:
        yield server


def ws_connect(server: ServerProcess, path: str = "/", **options: object) -> ClientConnection:
    """A ``websockets`` (sync) client of ``server`` (never through a proxy from the environment)."""
    options.setdefault("open_timeout", BOUND)
    options.setdefault("close_timeout", BOUND)
    return _websockets_connect(f"ws://{HOST}:{server.port}{path}", proxy=None, **options)  # type: ignore[arg-type]


class PublishApp(WebSocketApp):
    """Echo, the default subscriptions (``/topic/NAME``), and commands a client sends as text.

    ``!publish TOPIC PAYLOAD`` publishes PAYLOAD to TOPIC (every worker);
    ``!close CODE REASON`` closes this connection from the server's side;
    ``!boom`` raises (the connection must get 1011, nobody else anything);
    ``!open`` answers how many connections this worker's application holds
    as open (its per-connection dict, the pattern the API recommends);
    ``!worker`` answers the worker's slot.
    Every close is told to topic ``events`` as ``closed PATH CODE REASON``.
    ``route`` refuses ``/forbidden`` (404).
    """

    def __init__(self) -> None:
        self.paths: dict[WebSocket, str] = {}

    def route(self, request: Request) -> bool:
        return request.path != "/forbidden"

    def on_open(self, ws: WebSocket, request: Request) -> None:
        super().on_open(ws, request)
        self.paths[ws] = request.path

    def on_message(self, ws: WebSocket, message: str | bytes) -> str | bytes | None:
        if isinstance(message, str) and message.startswith("!"):
            verb, _, rest = message.partition(" ")
            if verb == "!publish":
                topic, _, payload = rest.partition(" ")
                ws.hub.publish(topic, payload)
                return None
            if verb == "!close":
                code, _, reason = rest.partition(" ")
                ws.close(int(code), reason)
                return None
            if verb == "!boom":
                raise RuntimeError("boom, as the client asked")
            if verb == "!open":
                return str(len(self.paths))
            if verb == "!worker":
                return str(ws.hub.worker)
        return message

    def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        path = self.paths.pop(ws, "?")
        ws.hub.publish("events", f"closed {path} {code} {reason}")


# ---------------------------------------------------------------- frames, independently of rawepoll


def accept_of(key: str) -> str:
    """Sec-WebSocket-Accept, computed here from the RFC's definition."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def xor(payload: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def raw_frame(
    first: int,
    payload: bytes = b"",
    *,
    mask: bool = True,
    length: int | None = None,
    form: int | None = None,
) -> bytes:
    """A frame with any first byte (FIN, RSV, opcode), masked or not.

    ``length`` overrides the length the header announces (the payload is sent
    as given); ``form`` forces the length's encoding (7, 16 or 64 bits).
    """
    n = len(payload) if length is None else length
    form = form or (7 if n < 126 else 16 if n < 65536 else 64)
    bit = 0x80 if mask else 0
    if form == 7:
        head = bytes((first, bit | n))
    elif form == 16:
        head = bytes((first, bit | 126)) + struct.pack(">H", n)
    else:
        head = bytes((first, bit | 127)) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + xor(payload, key)


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame as wsproto writes it (masked with a fresh key)."""
    return bytes(
        FrameProtocol(client=True, extensions=[])._serialize_frame(Opcode(opcode), payload, fin)
    )


def close_payload(code: int | None, reason: str = "") -> bytes:
    return b"" if code is None else struct.pack(">H", code) + reason.encode()


@dataclass(frozen=True)
class Frame:
    """One frame a client sends."""

    opcode: int
    payload: bytes = b""
    fin: bool = True

    def wire(self) -> bytes:
        return client_frame(self.opcode, self.payload, self.fin)


def model_replies(frames: Iterable[Frame]) -> list[Event]:
    """What the echo application answers, in order: each message echoed whole, a pong per
    ping (with its payload), nothing for a pong, the close code echoed without a reason
    (1005: the client's close had none)."""
    out: list[Event] = []
    opcode = 0
    parts: list[bytes] = []
    for frame in frames:
        if frame.opcode == PING:
            out.append(("pong", frame.payload))
        elif frame.opcode == CLOSE:
            code = struct.unpack(">H", frame.payload[:2])[0] if frame.payload else 1005
            out.append(("close", code, ""))
            break
        elif frame.opcode in (TEXT, BINARY, CONTINUATION):
            if frame.opcode != CONTINUATION:
                opcode, parts = frame.opcode, []
            parts.append(frame.payload)
            if frame.fin:
                whole = b"".join(parts)
                out.append(("text", whole.decode()) if opcode == TEXT else ("binary", whole))
    return out


class Reader:
    """Frames read by wsproto -- as a client (the server's frames) unless told otherwise;
    events, with messages assembled.

    ``events`` holds ``("text", str)``, ``("binary", bytes)``, ``("ping", bytes)``,
    ``("pong", bytes)`` and ``("close", code, reason)`` (code 1005: none).
    wsproto raises ParseFailed for anything the other side must not send.
    """

    def __init__(self, *, client: bool = True) -> None:
        self.protocol = FrameProtocol(client=client, extensions=[])
        self.events: list[Event] = []
        self._parts: list[str | bytes] = []

    def feed(self, data: bytes) -> None:
        self.protocol.receive_bytes(data)
        for frame in self.protocol.received_frames():
            self._frame(frame.opcode, frame.payload, frame.frame_finished, frame.message_finished)

    def _frame(self, opcode: Opcode, payload: object, frame_done: bool, message_done: bool) -> None:
        if opcode == Opcode.CLOSE:
            code, reason = payload  # type: ignore[misc]
            self.events.append(("close", int(code), reason))
        elif opcode in (Opcode.PING, Opcode.PONG):
            self.events.append((opcode.name.lower(), bytes(payload)))  # type: ignore[arg-type]
        else:
            self._parts.append(payload)  # type: ignore[arg-type]
            if frame_done and message_done:
                if opcode == Opcode.TEXT:
                    self.events.append(("text", "".join(self._parts)))  # type: ignore[arg-type]
                else:
                    self.events.append(("binary", b"".join(self._parts)))  # type: ignore[arg-type]
                self._parts = []


def wsproto_server_reads(chunks: Iterable[bytes]) -> tuple[list[Event], int | None]:
    """How wsproto, as a server, reads a client's byte stream: its events, and the close
    code of the ParseFailed it raised (None: none)."""
    reader = Reader(client=False)
    try:
        for chunk in chunks:
            reader.feed(chunk)
    except ParseFailed as failure:
        return reader.events, int(failure.code)
    return reader.events, None


def as_read(frames: Iterable[Frame]) -> list[Event]:
    """What a server reads from ``frames`` (valid ones), in wsproto's event shapes."""
    out: list[Event] = []
    opcode = 0
    parts: list[bytes] = []
    for frame in frames:
        if frame.opcode in (PING, PONG):
            out.append(("ping" if frame.opcode == PING else "pong", frame.payload))
        elif frame.opcode == CLOSE:
            code = struct.unpack(">H", frame.payload[:2])[0] if frame.payload else 1005
            out.append(("close", code, frame.payload[2:].decode()))
            break
        else:
            if frame.opcode != CONTINUATION:
                opcode, parts = frame.opcode, []
            parts.append(frame.payload)
            if frame.fin:
                whole = b"".join(parts)
                out.append(("text", whole.decode()) if opcode == TEXT else ("binary", whole))
    return out


def cut(data: bytes, points: Iterable[int]) -> list[bytes]:
    """``data`` cut at ``points`` (any order, repeats and out-of-range ones ignored)."""
    ends = [*sorted({p for p in points if 0 < p < len(data)}), len(data)]
    chunks, start = [], 0
    for end in ends:
        chunks.append(data[start:end])
        start = end
    return [c for c in chunks if c] or [data]


# Characters of every UTF-8 length: 1, 2, 3 and 4 bytes, around the boundaries.
PALETTE = (
    "a Z~\x00\x7f" + "\x80é\u07ff" + "\u0800€\ud7ff\ue000\ufffd\uffff" + "\U00010000😀\U0010ffff"
)


def text_of(seed: int, size: int) -> bytes:
    """Valid UTF-8 text of ``size`` bytes, or up to 3 fewer (no character is cut)."""
    rng = random.Random(seed)
    block = "".join(rng.choices(PALETTE, k=min(size, 512))).encode()
    repeated = block * (size // max(len(block), 1) + 1)
    return repeated[:size].decode(errors="ignore").encode()


def bytes_of(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


# ---------------------------------------------------------------- a raw client


class RawClient:
    """A client on a plain socket (TCP_NODELAY: each chunk leaves as its own segment)."""

    def __init__(self, port: int, *, rcvbuf: int | None = None) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=BOUND)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.reader = Reader()
        self.ended: str | None = None  # "eof" or "reset", once the server ended the connection
        self.send_failed = False

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    @property
    def events(self) -> list[Event]:
        return self.reader.events

    def upgrade(self, path: str = "/", headers: Sequence[tuple[str, str]] = ()) -> HttpAnswer:
        """Send an upgrade request; the answer must be 101 (the rest goes to the frame reader)."""
        self.sock.sendall(upgrade_request(path, extra=headers))
        answer = read_response(self.sock, until_closed=False)
        assert answer.status == 101, answer
        assert answer.headers["sec-websocket-accept"] == RFC_ACCEPT
        if answer.rest:
            self.reader.feed(answer.rest)
        return answer

    def exchange(
        self,
        chunks: Iterable[bytes],
        until: Callable[[list[Event]], bool] = lambda events: False,
        bound: float = BOUND,
    ) -> None:
        """Send ``chunks`` one by one while reading, until ``until(events)``, or the server
        ended the connection (then every chunk was sent, or sending failed), within ``bound``."""
        queue = [memoryview(chunk) for chunk in chunks if chunk]
        queue.reverse()
        sock = self.sock
        sock.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            deadline = _deadline(bound)
            try:
                while not until(self.events) and self.ended is None:
                    mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if queue else 0)
                    selector.modify(sock, mask)
                    for _, ready in selector.select(_remaining(deadline, self.events)):
                        if ready & selectors.EVENT_WRITE and queue:
                            self._send_some(queue)
                        if ready & selectors.EVENT_READ:
                            self._receive()
            finally:
                sock.setblocking(True)
                sock.settimeout(BOUND)

    def _send_some(self, queue: list[memoryview]) -> None:
        try:
            sent = self.sock.send(queue[-1])
        except BlockingIOError:
            return
        except (BrokenPipeError, ConnectionResetError):
            self.send_failed = True
            queue.clear()  # the server is gone: what it answered is still to read
            return
        queue[-1] = queue[-1][sent:]
        if not queue[-1]:
            queue.pop()

    def _receive(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except ConnectionResetError:
            self.ended = "reset"
            return
        if not data:
            self.ended = "eof"
            return
        self.reader.feed(data)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait_for(self, count: int, bound: float = BOUND) -> list[Event]:
        """Read until at least ``count`` events came (or the server ended the connection)."""
        self.exchange([], lambda events: len(events) >= count, bound)
        return self.events[:count]

    def wait_end(self, bound: float = BOUND) -> str:
        """Read until the server ends the connection: "eof" or "reset"."""
        self.exchange([], bound=bound)
        assert self.ended is not None
        return self.ended


def _deadline(bound: float) -> float:
    return time.monotonic() + bound


def _remaining(deadline: float, events: list[Event]) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(
            f"nothing more from the server within the bound; events so far {events!r:.2000}"
        )
    return left


# ---------------------------------------------------------------- HTTP, with h11 as the oracle


def upgrade_request(
    path: str = "/",
    key: str = RFC_KEY,
    *,
    extra: Sequence[tuple[str, str]] = (),
    drop: Sequence[str] = (),
) -> bytes:
    """A version-13 upgrade request; ``extra`` headers added, those named in ``drop`` left out.

    (Another method or HTTP version: :func:`with_request_line`.)
    """
    headers = [
        ("Host", f"{HOST}:8080"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    lowered = {name.lower() for name in drop} | {name.lower() for name, _ in extra}
    lines = [f"GET {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers if name.lower() not in lowered]
    lines += [f"{name}: {value}" for name, value in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def with_request_line(request: bytes, method: str = "GET", version: str = "HTTP/1.1") -> bytes:
    """``request`` (as :func:`upgrade_request` made it) with another method or HTTP version."""
    line, sep, rest = request.partition(b"\r\n")
    _, target, _ = line.split(b" ")
    return b" ".join([method.encode(), target, version.encode()]) + sep + rest


@dataclass
class HttpAnswer:
    """The server's HTTP answer to a handshake, as h11 read it."""

    status: int
    headers: dict[str, str]  # lower-case names; repeated ones joined with ", "
    body: bytes = b""
    rest: bytes = b""  # after a 101: the first frames
    ended: str | None = None  # after an error answer: how the server ended ("eof"/"reset")


def read_response(sock: socket.socket, *, until_closed: bool = True) -> HttpAnswer:
    """Read the server's answer with h11 (which refuses any malformed HTTP); for an error
    answer (not 101) also read on until the server closes, which it must."""
    client = h11.Connection(our_role=h11.CLIENT)
    client.send(
        h11.Request(
            method="GET",
            target="/",
            headers=[("Host", HOST), ("Upgrade", "websocket"), ("Connection", "Upgrade")],
        )
    )
    client.send(h11.EndOfMessage())
    sock.settimeout(BOUND)
    answer: HttpAnswer | None = None
    body = b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)  # TimeoutError past the bound: the server hung
            client.receive_data(data)
            continue
        if isinstance(event, h11.InformationalResponse):
            assert event.status_code == 101, event
            headers = _headers(event.headers)
            rest, _ = client.trailing_data
            return HttpAnswer(101, headers, rest=bytes(rest))
        if isinstance(event, h11.Response):
            answer = HttpAnswer(event.status_code, _headers(event.headers))
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    assert answer is not None
    answer.body = body
    if until_closed:
        answer.ended = read_to_end(sock)
    return answer


def read_to_end(sock: socket.socket) -> str:
    """Read until the server closes: "eof", or "reset"; anything else it sends is an error."""
    sock.settimeout(BOUND)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return "reset"
    assert data == b"", f"bytes after the answer: {data[:200]!r}"
    return "eof"


def _headers(pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out
