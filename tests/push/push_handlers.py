"""Handlers for the server-push tests, loaded by ``rawepoll serve --handler
push.push_handlers:X`` (with ``tests/`` on ``PYTHONPATH``).  Both speak lines; a command's
answer comes back on the connection that sent it.

:class:`HandleKeeper` keeps connection handles by name and sends through them on command:

=====================  ==================================================================
``NAME id``            keep this connection's handle as ``id``: ``NAMED id fd``
``SEND id text``       ``handle[id].send(b"text\\n")``: ``SENT id 1`` (written or queued),
                       ``SENT id 0`` (a stale handle: nothing written), ``SENT id ?``
                       (no such name)
=====================  ==================================================================

:class:`TimerCommands` drives the worker's timers (``hub.call_later``/``call_every``):

=========================  ==============================================================
``LATER name seconds``     in ``seconds``, send ``fired name`` to this connection, once
``EVERY name seconds``     every ``seconds``, send ``tick name k`` (k = 1, 2, ...)
``CANCEL name``            cancel that timer: ``CANCELLED name``
=========================  ==============================================================

``LATER`` and ``EVERY`` answer ``OK name``.  Timers are kept by name in the worker.
"""

from __future__ import annotations

from typing import ClassVar

from rawepoll.server.handler import Output
from rawepoll.server.push import Connection
from rawepoll.server.timers import Timer


class _Lines:
    """Complete lines per connection (a line may come in several reads)."""

    def __init__(self) -> None:
        self._partial: dict[Connection, bytes] = {}

    def split(self, data: memoryview, conn: Connection) -> list[bytes]:
        chunk = self._partial.pop(conn, b"") + bytes(data)
        *lines, rest = chunk.split(b"\n")
        if rest:
            self._partial[conn] = rest
        return lines

    def forget(self, conn: Connection) -> None:
        self._partial.pop(conn, None)


class HandleKeeper:
    shared: ClassVar[bool] = True

    def __init__(self) -> None:
        self.handles: dict[bytes, Connection] = {}
        self.lines = _Lines()

    def data_received(self, data: memoryview, conn: Connection) -> Output:
        return b"".join(self._command(line, conn) for line in self.lines.split(data, conn))

    def _command(self, line: bytes, conn: Connection) -> bytes:
        verb, name, text = [*line.split(b" ", 2), b"", b""][:3]
        if verb == b"NAME":
            self.handles[name] = conn
            return b"NAMED %s %d\n" % (name, conn.fd)
        handle = self.handles.get(name)
        if handle is None:
            return b"SENT %s ?\n" % name
        return b"SENT %s %d\n" % (name, handle.send(text + b"\n"))

    def eof_received(self, conn: Connection) -> Output:
        return None

    def connection_lost(self, conn: Connection, reason: str) -> None:
        self.lines.forget(conn)  # its handle stays in `handles`: stale from now on


class TimerCommands:
    shared: ClassVar[bool] = True

    def __init__(self) -> None:
        self.timers: dict[bytes, Timer] = {}
        self.lines = _Lines()

    def data_received(self, data: memoryview, conn: Connection) -> Output:
        return b"".join(self._command(line, conn) for line in self.lines.split(data, conn))

    def _command(self, line: bytes, conn: Connection) -> bytes:
        verb, name, seconds = [*line.split(b" ", 2), b"", b""][:3]
        hub = conn.hub
        if verb == b"LATER":
            self.timers[name] = hub.call_later(float(seconds), conn.send, b"fired %s\n" % name)
        elif verb == b"EVERY":
            ticks = iter(range(1, 1 << 30))

            def tick() -> None:
                conn.send(b"tick %s %d\n" % (name, next(ticks)))

            self.timers[name] = hub.call_every(float(seconds), tick)
        elif verb == b"CANCEL":
            self.timers[name].cancel()
            return b"CANCELLED %s\n" % name
        return b"OK %s\n" % name

    def eof_received(self, conn: Connection) -> Output:
        return None

    def connection_lost(self, conn: Connection, reason: str) -> None:
        self.lines.forget(conn)
