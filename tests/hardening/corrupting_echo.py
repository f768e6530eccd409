"""A deliberately broken echo server, for proving that the hardening checks can fail.

``python corrupting_echo.py flip --status-fd N`` echoes every connection
faithfully except one byte: the byte at stream offset 1000 comes back with its
bits inverted.  ``python corrupting_echo.py close --status-fd N`` echoes the
first 1000 bytes of every connection, then closes it.  Either way the server
listens on a free port of 127.0.0.1, announces itself on descriptor N as
``rawepoll serve --status-fd N`` does (a ``ready`` event, so that
:class:`rawepoll.tools.serverproc.ServerProcess` can start it) and exits on
SIGTERM.
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import sys

from rawepoll.tools.serverproc import write_ready

OFFSET = 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("how", choices=("flip", "close"))
    parser.add_argument("--status-fd", type=int, default=None)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    write_ready(args.status_fd, listener)
    seen: dict[socket.socket, int] = {}  # connection -> bytes echoed so far
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                accept(listener, selector, seen)
            else:
                echo(key.fileobj, args.how, selector, seen)  # type: ignore[arg-type]


def accept(
    listener: socket.socket, selector: selectors.BaseSelector, seen: dict[socket.socket, int]
) -> None:
    try:
        sock, _ = listener.accept()
    except BlockingIOError:
        return
    sock.setblocking(True)  # blocking writes: simple, and fine for a test
    selector.register(sock, selectors.EVENT_READ)
    seen[sock] = 0


def echo(
    sock: socket.socket, how: str, selector: selectors.BaseSelector, seen: dict[socket.socket, int]
) -> None:
    """Echo what ``sock`` sent, corrupted at OFFSET; close it at its end (or after OFFSET)."""
    try:
        data = bytearray(sock.recv(65536))
    except OSError:
        data = bytearray()
    start = seen.get(sock, 0)
    if data and start <= OFFSET < start + len(data):
        data = corrupted(data, start, how)
    try:
        if data:
            sock.sendall(data)
    except OSError:
        data = bytearray()
    if not data or (how == "close" and start + len(data) >= OFFSET):
        selector.unregister(sock)
        seen.pop(sock, None)
        sock.close()
        return
    seen[sock] = start + len(data)


def corrupted(data: bytearray, start: int, how: str) -> bytearray:
    """``data`` (at stream offset ``start``, spanning OFFSET) cut there, or its byte flipped."""
    if how == "close":
        return data[: OFFSET - start]
    data[OFFSET - start] ^= 0xFF
    return data


if __name__ == "__main__":
    sys.exit(main())
