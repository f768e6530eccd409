"""The examples in examples/ run and do what their docstrings say."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.proc import listening_ports, wait_until

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["lt", "et"])
def test_upper_server_upper_cases_lines(mode: str) -> None:
    """Complete lines come back upper-cased; the unfinished tail comes at EOF."""
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "upper_server.py"), "--port", "0", "--mode", mode],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        # The example has no --status-fd: its listener, as /proc shows it, is the event.
        wait_until(lambda: listening_ports(server.pid), "the example listening", bound=30)
        [port] = listening_ports(server.pid)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(b"hello\nw")
            client.sendall(b"orld\nno newline")
            client.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := client.recv(4096):
                received += chunk
        assert received == b"HELLO\nWORLD\nNO NEWLINE"
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
        assert server.returncode == 0
        assert "accepted=1 " in out
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
