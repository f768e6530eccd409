"""Each peer echo server on its own: it starts, echoes every byte, and exits 0 on SIGTERM."""

from __future__ import annotations

import importlib.util
import random
import socket
import sys
import time

import pytest

from rawepoll.tools.serverproc import ServerProcess

BOUND = 20.0  # start-up, one echo, shutdown: each well within this

PEERS = [
    "selectors_echo",
    "asyncio_protocol",
    "asyncio_streams",
    pytest.param(
        "uvloop_protocol",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed"
        ),
    ),
]


def start(peer: str, env: dict[str, str]) -> ServerProcess:
    """The peer on a free port, once its ``ready`` event came (within BOUND)."""
    return ServerProcess(
        [sys.executable, "-m", f"rawepoll.tools.compare.peers.{peer}", "--port", "0"],
        env=env,
        start_bound=BOUND,
        stop_bound=BOUND,
        name=peer,
    )


def echo(address: tuple[str, int], message: bytes) -> bytes:
    """Send ``message``, half-close, read until EOF."""
    with socket.create_connection(address, timeout=BOUND) as sock:
        sock.sendall(message)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    return bytes(received)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("peer", PEERS)
def test_peer_echoes_and_stops_cleanly(peer: str, tagged_env: dict[str, str]) -> None:
    with start(peer, tagged_env) as server:
        assert server.ready.family == "inet"
        assert server.ready.pid == server.pid
        address = (server.host, server.port)
        assert f"listening on {server.host}:{server.port}" in server.stdout()  # for people
        message = random.Random(peer).randbytes(300_000)  # more than one socket buffer
        assert echo(address, message) == message
        assert echo(address, b"x") == b"x"  # and the server still serves
        stopped = server.stop()
        assert stopped.returncode == 0, server.stderr()
        assert server.stderr() == ""


@pytest.mark.timeout(60)
def test_peer_serves_connections_side_by_side(tagged_env: dict[str, str]) -> None:
    """Two clients at once on the selectors peer, each gets its own bytes back."""
    with start("selectors_echo", tagged_env) as server:
        address = (server.host, server.port)
        a = socket.create_connection(address, timeout=BOUND)
        b = socket.create_connection(address, timeout=BOUND)
        with a, b:
            a.sendall(b"from a")
            b.sendall(b"from b")
            deadline = time.monotonic() + BOUND
            got_a = got_b = b""
            while (len(got_a) < 6 or len(got_b) < 6) and time.monotonic() < deadline:
                if len(got_a) < 6:
                    got_a += a.recv(6 - len(got_a))
                if len(got_b) < 6:
                    got_b += b.recv(6 - len(got_b))
            assert (got_a, got_b) == (b"from a", b"from b")
        assert server.stop().returncode == 0
