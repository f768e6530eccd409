"""Each peer echo server on its own: it starts, echoes every byte, and exits 0 on SIGTERM."""

from __future__ import annotations

import importlib.util
import random
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

BOUND = 20.0  # start-up, one echo, shutdown: each well within this
LISTENING = re.compile(r"listening on (\S+):(\d+)")

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


def read_line(process: subprocess.Popen[str]) -> str:
    """The first stdout line, within BOUND."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], BOUND)
    assert ready, "no listening line"
    return process.stdout.readline()


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
    process = subprocess.Popen(
        [sys.executable, "-m", f"rawepoll.tools.compare.peers.{peer}", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tagged_env,
    )
    try:
        match = LISTENING.search(read_line(process))
        assert match, "the first line names the address"
        address = (match[1], int(match[2]))
        message = random.Random(peer).randbytes(300_000)  # more than one socket buffer
        assert echo(address, message) == message
        assert echo(address, b"x") == b"x"  # and the server still serves
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=BOUND)
        assert process.returncode == 0, stderr
        assert stderr == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.timeout(60)
def test_peer_serves_connections_side_by_side(tagged_env: dict[str, str]) -> None:
    """Two clients at once on the selectors peer, each gets its own bytes back."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rawepoll.tools.compare.peers.selectors_echo", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=tagged_env,
    )
    try:
        match = LISTENING.search(read_line(process))
        assert match
        address = (match[1], int(match[2]))
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
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=BOUND)
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
