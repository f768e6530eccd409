"""``rawepoll bench --protocol websocket``: a verifying WebSocket client.

Against ``rawepoll serve --protocol websocket`` and against an independent
implementation (the ``websockets`` library's threaded server) it must verify
every echo and report no problem; against :class:`BrokenWebSocketEcho`, a
small threaded server written here that spoils on purpose, it must report
exactly what was spoiled and exit 1.  The broken server also checks the
client: a 16-byte random key per handshake, and every frame masked with a
fresh key.
"""

from __future__ import annotations

import base64
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from support.loadgen import BenchRun, EchoServer, ThreadedServer, bench, start_server, stop_server

from rawepoll.server.websocket import frames
from rawepoll.server.websocket.handshake import accept_key
from rawepoll.tools.loadgen.spec import LoadSpec
from rawepoll.tools.loadgen.workers import Holding, prepare

pytestmark = pytest.mark.timeout(120)

BOUND_S = 10.0  # a broken server's thread waits this long at most for anything


# ---------------------------------------------------------------- a broken server


@dataclass
class Seen:
    """What the broken server saw of the client."""

    handshake_keys: list[str] = field(default_factory=list)
    mask_keys: list[bytes] = field(default_factory=list)
    pongs: list[bytes] = field(default_factory=list)
    masked: bool = True  # every frame from the client was masked


Spoil = Callable[[int, int, bytes], list[bytes]]
"""``(connection, message index, payload) -> the frames to send back``."""


def echo(conn: int, index: int, payload: bytes) -> list[bytes]:
    return [frames.encode(frames.BINARY, payload)]


class BrokenWebSocketEcho(ThreadedServer):
    """A threaded WebSocket echo server on 127.0.0.1 that spoils what ``spoil`` says.

    Built on rawepoll's sans-IO frame functions (``read_frame`` of client
    frames, ``encode`` of server frames); ``answer`` makes the handshake's
    answer from the client's key.
    """

    def __init__(self, spoil: Spoil = echo, answer: Callable[[str], bytes] | None = None) -> None:
        self.spoil = spoil
        self.answer = answer or _accept
        self.seen = Seen()
        super().__init__("ws-broken", backlog=256)

    def _serve(self, conn: socket.socket, index: int) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            data = self._recv(conn)
            if data is None:
                return
            request += data
        head, _, rest = request.partition(b"\r\n\r\n")
        key = _header(head, b"sec-websocket-key")
        with self.lock:
            self.seen.handshake_keys.append(key)
        conn.sendall(self.answer(key))
        self._frames(conn, index, rest)

    def _frames(self, conn: socket.socket, index: int, data: bytes) -> None:
        count = 0
        while True:
            while (found := _client_frame(data)) is not None:
                end, opcode, payload, mask, masked = found
                data = data[end:]
                with self.lock:
                    self.seen.mask_keys.append(mask)
                    self.seen.masked &= masked
                if opcode == frames.PONG:
                    with self.lock:
                        self.seen.pongs.append(payload)
                    continue
                try:
                    conn.sendall(b"".join(self.spoil(index, count, payload)))
                except OSError:
                    return
                count += 1
            more = self._recv(conn)
            if more is None:
                return
            data += more


def _header(head: bytes, name: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode()
    return ""


def _accept(key: str) -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode()


def _client_frame(data: bytes) -> tuple[int, int, bytes, bytes, bool] | None:
    """``(end, opcode, payload, mask key, masked)`` of the first frame of ``data``, or None."""
    if len(data) < 2:
        return None
    masked = bool(data[1] & 0x80)
    code = data[1] & 0x7F
    head = 2 + {126: 2, 127: 8}.get(code, 0)
    found = frames.read_frame(data, 0, 1 << 24, masked=masked)
    if found is None:
        return None
    end, _, opcode, payload = found
    return end, opcode, payload, data[head : head + 4] if masked else b"", masked


@pytest.fixture
def broken() -> Iterator[Callable[..., BrokenWebSocketEcho]]:
    servers: list[BrokenWebSocketEcho] = []

    def start(
        spoil: Spoil = echo, answer: Callable[[str], bytes] | None = None
    ) -> BrokenWebSocketEcho:
        server = BrokenWebSocketEcho(spoil, answer)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def ws_bench(port: int, *args: str) -> BenchRun:
    return bench("--port", str(port), "--protocol", "websocket", "--json", "--quiet", *args)


# ---------------------------------------------------------------- right servers


@pytest.fixture(scope="module")
def ws_server() -> Iterator[EchoServer]:
    """``rawepoll serve --protocol websocket``, pinging every 50 ms: unanswered pings close."""
    server = start_server(
        None, "--port", "0", "--protocol", "websocket", "--ping-interval", "0.05",
        "--ping-timeout", "0.5",
    )  # fmt: skip
    try:
        yield server
    finally:
        stop_server(server)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--procs", "2", "--pipeline", "3", "--size", "300"],
        ["--source-addrs", "127.0.0.2-127.0.0.3", "--size", "12"],
    ],
)
def test_every_echo_verified_against_rawepoll_serve(ws_server: EchoServer, args: list[str]) -> None:
    """2 s of traffic while the server pings every 50 ms: each ping answered, or the
    connection would be closed (1011) and counted as an error."""
    run = ws_bench(ws_server.port, "--conns", "20", "--duration", "2", *args)
    assert run.returncode == 0, run.stderr
    result = run.json()
    assert result["protocol"] == "websocket"
    assert result["established"] == 20
    assert result["messages"] > 0
    assert result["errors"] == result["mismatches"] == 0
    assert result["bytes"] == result["messages"] * result["size"]


def test_a_paced_round_over_websocket(ws_server: EchoServer) -> None:
    """The plain loop (paced rounds of ``Holding.measure``) speaks WebSocket too."""
    spec = LoadSpec(port=ws_server.port, conns=10, duration=10.0, protocol="websocket")
    with Holding(prepare(spec)) as held:
        held.open(None, time.monotonic() + 60)
        paced = held.measure(0.5, 0.05)
        closed = held.measure(0.5)
        released = held.release()
    for result in (paced, closed):
        assert result.messages > 0
        assert result.errors == result.mismatches == 0
    assert paced.messages <= 10 * (paced.seconds / 0.05 + 1)
    assert released.established == 10 and released.errors == 0


def test_an_independent_server_agrees() -> None:
    """The ``websockets`` library's threaded server echoes; the client finds nothing wrong."""
    sync_server = pytest.importorskip("websockets.sync.server")

    def handler(connection: object) -> None:
        for message in connection:  # type: ignore[attr-defined]
            connection.send(message)  # type: ignore[attr-defined]

    with sync_server.serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            run = ws_bench(server.socket.getsockname()[1], "--conns", "5", "--messages", "500")
        finally:
            server.shutdown()
            thread.join(BOUND_S)
    assert run.returncode == 0, run.stderr
    result = run.json()
    assert result["messages"] == 500
    assert result["errors"] == result["mismatches"] == 0


def test_handshake_keys_are_random_and_every_frame_has_a_fresh_mask(
    broken: Callable[..., BrokenWebSocketEcho],
) -> None:
    server = broken()
    run = ws_bench(server.port, "--conns", "4", "--messages", "200", "--procs", "2")
    assert run.returncode == 0, run.stderr
    seen = server.seen
    assert len(seen.handshake_keys) == 4
    assert len(set(seen.handshake_keys)) == 4
    assert all(len(base64.b64decode(key, validate=True)) == 16 for key in seen.handshake_keys)
    assert seen.masked
    assert len(seen.mask_keys) == 204  # message 0 of each connection, then 200
    assert len(set(seen.mask_keys)) >= 203  # 32 random bits each: a repeat is a 1-in-10^6 event


# ---------------------------------------------------------------- broken servers


def flip_every_fifth(conn: int, index: int, payload: bytes) -> list[bytes]:
    if index % 5 == 4:
        payload = payload[:20] + bytes([payload[20] ^ 0x01]) + payload[21:]
    return [frames.encode(frames.BINARY, payload)]


def test_a_flipped_payload_byte_is_a_mismatch(broken: Callable[..., BrokenWebSocketEcho]) -> None:
    server = broken(flip_every_fifth)
    run = ws_bench(server.port, "--conns", "3", "--duration", "2")
    assert run.returncode == 1
    result = run.json()
    assert result["mismatches"] == 3  # each connection, at its message 4, then closed
    assert result["messages"] <= 3 * 3  # messages 1..3 of each, at most, were right
    assert "message 4 differs at payload byte 20" in run.stderr


def test_a_text_frame_for_a_binary_one_is_a_mismatch(
    broken: Callable[..., BrokenWebSocketEcho],
) -> None:
    def as_text(conn: int, index: int, payload: bytes) -> list[bytes]:
        opcode = frames.TEXT if index == 2 else frames.BINARY
        return [frames.encode(opcode, payload)]

    run = ws_bench(broken(as_text).port, "--conns", "1", "--messages", "10")
    assert run.returncode == 1
    assert run.json()["mismatches"] == 1
    assert "message 2 differs at header byte 0" in run.stderr


def test_a_wrong_accept_key_fails_the_handshake(
    broken: Callable[..., BrokenWebSocketEcho],
) -> None:
    def wrong(key: str) -> bytes:
        return _accept(key[::-1])

    run = ws_bench(broken(answer=wrong).port, "--conns", "2", "--messages", "10")
    assert run.returncode == 1
    result = run.json()
    assert result["established"] == 0 and result["errors"] == 2
    assert "Sec-WebSocket-Accept" in run.stderr


def test_a_refused_upgrade_is_an_error(broken: Callable[..., BrokenWebSocketEcho]) -> None:
    def refuse(key: str) -> bytes:
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

    run = ws_bench(broken(answer=refuse).port, "--conns", "1", "--messages", "10")
    assert run.returncode == 1
    assert run.json()["errors"] == 1
    assert "the upgrade was refused: 'HTTP/1.1 404 Not Found'" in run.stderr


def test_a_close_frame_is_an_error(broken: Callable[..., BrokenWebSocketEcho]) -> None:
    def close_at_3(conn: int, index: int, payload: bytes) -> list[bytes]:
        if index == 3:
            return [frames.close_frame(1001, "going away")]
        return [frames.encode(frames.BINARY, payload)]

    run = ws_bench(broken(close_at_3).port, "--conns", "1", "--messages", "10")
    assert run.returncode == 1
    result = run.json()
    assert result["errors"] == 1 and result["mismatches"] == 0
    assert "the server sent a close frame (1001 going away)" in run.stderr


def test_pings_between_echoes_are_answered_not_echo(
    broken: Callable[..., BrokenWebSocketEcho],
) -> None:
    """A ping before every other echo: each answered with a pong of its payload, none taken
    for echo bytes.  (Pings cut by reads: ``test_ws_engine.py``.)"""

    def with_pings(conn: int, index: int, payload: bytes) -> list[bytes]:
        echoed = frames.encode(frames.BINARY, payload)
        if index % 2:
            return [echoed]
        return [frames.encode(frames.PING, struct.pack(">I", index)), echoed]

    server = broken(with_pings)
    run = ws_bench(server.port, "--conns", "1", "--messages", "20", "--size", "12")
    assert run.returncode == 0, run.stderr
    assert run.json()["messages"] == 20
    deadline = time.monotonic() + BOUND_S
    while len(server.seen.pongs) < 11 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.seen.pongs == [struct.pack(">I", k) for k in range(0, 21, 2)]
