"""The control channel between the parent and one load process: messages as JSON lines.

One ``AF_UNIX`` stream socketpair per load process, made before the fork.
It carries the messages of :mod:`rawepoll.tools.loadgen.control` (the parent
says :class:`~rawepoll.tools.loadgen.control.Go` or ``Stop``; the load
process reports ``Progress``, ``Ready``, ``Round``, ``Done`` or ``Failed``),
each encoded as one line.  Either side sees end-of-file when the other is
gone, which is how a load process notices that its parent died: it stops at
once.

Messages are small (a report with an encoded histogram is a few KiB) and each
side reads whenever its epoll says the socket is readable, so the blocking
``sendall`` never waits for long.
"""

from __future__ import annotations

import socket
from typing import Final

from rawepoll.tools.loadgen.control import Message, decode, encode

__all__ = ["Channel"]

_READ: Final = 65536
_MAX_LINE: Final = 16 << 20  # a peer that sends more without a newline is broken


class Channel:
    """One end of the control socketpair."""

    __slots__ = ("_buffer", "eof", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self.eof = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: Message) -> None:
        """Send one message (blocking; the peer reads all the time)."""
        self.sock.sendall(encode(message) + b"\n")

    def receive(self) -> list[Message]:
        """The complete messages readable now; sets :attr:`eof` when the peer is gone.

        Call it when the socket is readable: it reads once.

        Raises:
            ValueError: the peer sent a line too long or not a message.
        """
        try:
            data = self.sock.recv(_READ)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return []
        self._buffer += data
        if len(self._buffer) > _MAX_LINE:
            raise ValueError("control channel: line too long")
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        return [decode(line) for line in lines if line]

    def close(self) -> None:
        self.sock.close()
