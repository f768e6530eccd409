"""Echo server on :class:`selectors.DefaultSelector` (epoll on Linux): the stdlib peer.

Written the way a careful stdlib-only server would be, so that it is a fair
peer rather than a strawman:

* every socket is non-blocking; the listening socket is drained with
  ``accept`` until ``BlockingIOError``;
* a read is echoed at once with ``send``; whatever the kernel does not take
  is kept in a per-connection ``bytearray`` and the connection asks for
  ``EVENT_WRITE`` only while that output is pending;
* reading pauses while more than ``HIGH_WATER`` bytes are pending (a client
  that sends but never reads cannot make the server buffer without bound)
  and resumes below ``LOW_WATER``;
* a peer's half-close (EOF) is answered by flushing what is pending, then
  closing; an error on one connection closes that connection only.

Usage: ``python -m rawepoll.tools.compare.peers.selectors_echo [--host HOST] [--port PORT]
[--status-fd N]``.
"""

from __future__ import annotations

import selectors
import signal
import socket
import sys
from types import FrameType

from rawepoll.tools.compare.peers import announce, parse_args

READ_SIZE = 65536
HIGH_WATER = 262144
LOW_WATER = 65536
RECOVERABLE = (BlockingIOError, InterruptedError)


class Connection:
    """One client: its socket, the output the kernel has not taken yet, what it waits for."""

    __slots__ = ("eof", "mask", "pending", "reading", "selector", "sock")

    def __init__(self, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        self.selector = selector
        self.sock = sock
        self.pending = bytearray()
        self.eof = False  # the peer has half-closed: flush, then close
        self.reading = True  # off between HIGH_WATER and LOW_WATER
        self.mask = selectors.EVENT_READ
        selector.register(sock, self.mask, self)

    def on_event(self, mask: int) -> None:
        try:
            if mask & selectors.EVENT_WRITE:
                self.flush()
            if mask & selectors.EVENT_READ and self.reading and not self.eof:
                self.read()
        except OSError:  # ECONNRESET, EPIPE, ...: this connection only
            self.close()

    def read(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except RECOVERABLE:
            return
        if not data:
            self.eof = True
        elif self.pending:
            self.pending += data
        else:
            try:
                sent = self.sock.send(data)
            except RECOVERABLE:
                sent = 0
            if sent == len(data):
                return  # the common case: all echoed, still waiting to read
            self.pending += memoryview(data)[sent:]
        self.update()

    def flush(self) -> None:
        try:
            sent = self.sock.send(self.pending)
        except RECOVERABLE:
            return
        del self.pending[:sent]
        self.update()

    def update(self) -> None:
        """Ask for what the connection needs next; close it when it needs nothing."""
        pending = len(self.pending)
        if self.eof and not pending:
            self.close()
            return
        if pending > HIGH_WATER:
            self.reading = False
        elif pending < LOW_WATER:
            self.reading = True
        mask = selectors.EVENT_WRITE if pending else 0
        if self.reading and not self.eof:
            mask |= selectors.EVENT_READ
        if mask != self.mask:
            self.mask = mask
            self.selector.modify(self.sock, mask, self)

    def close(self) -> None:
        try:
            self.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()


def accept_all(selector: selectors.BaseSelector, listener: socket.socket) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except RECOVERABLE:
            return
        except OSError:  # EMFILE, ECONNABORTED, ...: try again on the next event
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        Connection(selector, sock)


def serve(host: str, port: int, status_fd: int | None = None) -> None:
    listener = socket.create_server(
        (host, port),
        family=socket.AF_INET6 if ":" in host else socket.AF_INET,
        backlog=4096,
    )
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    announce(listener, status_fd)
    try:
        while True:
            for key, mask in selector.select():
                if key.data is None:
                    accept_all(selector, listener)
                else:
                    key.data.on_event(mask)
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()


def stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    serve(args.host, args.port, args.status_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
