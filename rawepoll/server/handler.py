"""Handlers: the protocol logic of a server, without any I/O (sans-IO).

The event loop owns the sockets; a handler only turns bytes received into
bytes to send.  That makes a handler testable with no socket at all, and lets
the loop keep nothing per connection for handlers that keep nothing either.

Two kinds, told apart by the class attribute ``shared``:

* ``shared = True`` -- stateless: one instance serves every connection (the
  echo handler).  An idle connection then costs the server no Python object.
* ``shared = False`` -- stateful: the loop makes one instance per connection,
  lazily, the first time the connection sends data, and drops it when the
  connection closes.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

__all__ = ["EchoHandler", "Handler", "Output", "UpperLineHandler"]

Output = bytes | bytearray | memoryview | None


class Handler(Protocol):
    """What a server loop needs of a handler."""

    shared: ClassVar[bool]

    def data_received(self, data: memoryview) -> Output:
        """Bytes arrived; return what to send back (``None``: nothing yet).

        ``data`` views the loop's read buffer and is valid only during the
        call: return it (or a slice) to send it, copy it to keep it.
        """
        ...

    def eof_received(self) -> Output:
        """The peer shut down its sending side; return the last output, if any."""
        ...


class EchoHandler:
    """Send every byte back, as it came: the seed's server."""

    shared: ClassVar[bool] = True

    def data_received(self, data: memoryview) -> Output:
        return data

    def eof_received(self) -> Output:
        return None


class UpperLineHandler:
    """A line protocol: each complete line comes back upper-cased (ASCII).

    Keeps the unfinished line between calls (so ``shared = False``), bounded by
    ``max_line``: a longer line is sent as it stands once it reaches the bound.
    """

    shared: ClassVar[bool] = False
    max_line: ClassVar[int] = 65536

    def __init__(self) -> None:
        self._partial = bytearray()

    def data_received(self, data: memoryview) -> Output:
        self._partial += data
        end = self._partial.rfind(b"\n") + 1
        if end == 0 and len(self._partial) < self.max_line:
            return None
        if end == 0:
            end = len(self._partial)
        lines = bytes(self._partial[:end]).upper()
        del self._partial[:end]
        return lines

    def eof_received(self) -> Output:
        rest = bytes(self._partial).upper()
        self._partial.clear()
        return rest or None
