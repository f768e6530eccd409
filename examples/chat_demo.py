"""A chat, end to end: the chat server with two workers and three clients talking on loopback.

    python examples/chat_demo.py

alice and bob stay in ``lobby``; carol joins ``random``; each line a client
types is published to its room and reaches every member, whichever worker
serves it.  The demo prints what each client read, then stops the server
(SIGTERM: a graceful drain) and prints its counters.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

from rawepoll.tools.serverproc import ServerProcess

HERE = Path(__file__).resolve().parent


class Client:
    def __init__(self, address: tuple[str, int], name: str) -> None:
        self.name = name
        self.sock = socket.create_connection(address, timeout=10)
        self.seen = b""
        self.say(f"/nick {name}")

    def say(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def read_until(self, text: str, bound: float = 10.0) -> None:
        """Read until ``text`` has arrived (a bounded wait for an event, not a sleep)."""
        deadline = time.monotonic() + bound
        while text.encode() not in self.seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} never read {text!r}; read {self.seen!r}")
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{self.name}: the server closed")
            self.seen += chunk


def main() -> int:
    argv = [sys.executable, str(HERE / "chat_server.py"), "--port", "0", "--workers", "2"]
    with ServerProcess(argv, name="chat server") as server:
        alice, bob, carol = (
            Client((server.host, server.port), n) for n in ("alice", "bob", "carol")
        )
        carol.say("/join random")
        carol.read_until("* carol joins")
        alice.say("hi bob")
        bob.read_until("alice: hi bob")
        bob.say("hi alice")
        alice.read_until("bob: hi alice")
        carol.say("anyone here?")
        carol.read_until("carol: anyone here?")
        alice.say("bye")
        for client in (alice, bob):
            client.read_until("alice: bye")
        for client in (alice, bob, carol):
            print(f"--- what {client.name} read")
            print(client.seen.decode().rstrip())
            client.sock.close()
        stopped = server.stop()
    counts = stopped.counters
    print(
        f"--- server: {counts['accepted']} connections, {counts['published']} publishes, "
        f"{counts['delivered']} deliveries; drained and exited with status {stopped.returncode}"
    )
    assert "anyone here?" not in (alice.seen + bob.seen).decode(), "a room leaked"
    return 0 if stopped.clean else 1


if __name__ == "__main__":
    sys.exit(main())
