"""A deliberately broken WebSocket echo server: it flips the last payload byte of what it echoes.

Its first connection -- the comparison's priming one -- is echoed faithfully;
on every later connection the last byte of each echoed message is flipped.
Standard library and rawepoll's sans-IO handshake and frame helpers only, so
it runs wherever the tests do.  Run as a script with ``--host``, ``--port 0``
and ``--status-fd N``, like every contender; announces itself like every peer
(the ``ready`` event on ``N``, ``listening on HOST:PORT`` on stdout); exits on
SIGTERM.  A comparison that measures it must catch the corruption in its
measured traffic and fail.
"""

from __future__ import annotations

import selectors
import signal
import socket
import sys

from rawepoll.server.websocket import frames
from rawepoll.server.websocket.handshake import accept_key
from rawepoll.tools.compare.peers import announce, parse_args


class Connection:
    def __init__(self, sock: socket.socket, faithful: bool) -> None:
        self.sock = sock
        self.faithful = faithful
        self.upgraded = False
        self.data = b""

    def feed(self, data: bytes) -> None:
        """Take ``data``: answer the upgrade, then echo every complete frame."""
        self.data += data
        if not self.upgraded:
            head, blank, rest = self.data.partition(b"\r\n\r\n")
            if not blank:
                return
            self.upgraded, self.data = True, rest
            self.sock.sendall(answer(head))
        while (frame := frames.read_frame(self.data, 0, 1 << 24)) is not None:
            end, _, opcode, payload = frame
            self.data = self.data[end:]
            if opcode in (frames.TEXT, frames.BINARY) and payload:
                echoed = bytearray(payload)
                if not self.faithful:
                    echoed[-1] ^= 0xFF
                self.sock.sendall(frames.encode(opcode, echoed))


def answer(head: bytes) -> bytes:
    """The 101 answer to the upgrade request ``head``."""
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode()


def main() -> int:
    args = parse_args(__doc__, sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.create_server((args.host, args.port), backlog=4096)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    announce(listener, args.status_fd)
    accepted = 0
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                sock, _ = listener.accept()
                selector.register(sock, selectors.EVENT_READ, Connection(sock, accepted == 0))
                accepted += 1
                continue
            conn: Connection = key.data
            try:
                data = conn.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                selector.unregister(conn.sock)
                conn.sock.close()
                continue
            conn.feed(data)


if __name__ == "__main__":
    sys.exit(main())
