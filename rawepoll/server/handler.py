"""Handlers: the protocol logic of a server, without any I/O (sans-IO).

The event loop owns the sockets; a handler only turns bytes received into
bytes to send.  That makes a handler testable with no socket at all, and lets
the loop keep nothing per connection for handlers that keep nothing either.

Two kinds, told apart by the class attribute ``shared``:

* ``shared = True`` -- stateless: one instance serves every connection (the
  echo handler).  An idle connection then costs the server no Python object.
* ``shared = False`` -- stateful: the loop makes one instance per connection,
  lazily, the first time the connection sends data (at once if the class has
  ``connection_made``), and drops it when the connection closes.

Beyond bytes in, bytes out, a handler may push (:mod:`rawepoll.server.push`):
every method below but ``data_received`` and ``eof_received`` is optional, and
the loop pays for none it does not find (:class:`Lifecycle` looks once).

* ``connection_made(conn)`` -- a connection was accepted; ``conn`` is its
  :class:`~rawepoll.server.push.Connection` handle, to keep if you like.
* ``connection_lost(conn, reason)`` -- it closed; ``reason`` is one of
  :data:`REASONS`.
* ``data_received(data, conn)`` -- declare the second parameter and the
  handle comes with every message (``eof_received(conn)`` likewise).
* ``push_frame(topic, payload) -> bytes`` -- a static method: how a published
  message goes on the wire (default: the payload as it is); called once per
  publish per worker, and the same bytes go to every subscriber.
* ``worker_started(hub)`` -- a static or class method, called once in each
  worker before it accepts: the place for per-worker timers.
* ``draining(hub)`` -- the graceful drain began (no new connections; say
  goodbye to the open ones, e.g. a WebSocket close frame 1001).
* ``last_words(fd) -> bytes | None`` -- what to send a connection that your
  handler's fault is about to close (a WebSocket close frame 1011).

A protocol implementation that keeps its own per-descriptor state (the
WebSocket protocol does, in flat arrays) sets ``by_fd = True``: its methods
then get the connection's descriptor (an ``int``, valid during the call)
where others get a handle, and ``hub.connection(fd)`` makes a handle.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol

__all__ = [
    "REASONS",
    "EchoHandler",
    "Handler",
    "Lifecycle",
    "LinePubSubHandler",
    "Output",
    "UpperLineHandler",
]

Output = bytes | bytearray | memoryview | None

REASONS: Final = (
    "eof",  # the peer closed (after its last words were sent)
    "reset",  # the connection failed (reset, broken pipe)
    "closed",  # your code closed it (conn.close())
    "idle",  # --idle-timeout
    "overflow",  # the handler's output outgrew the pending cap
    "slow",  # it did not read pushed messages (--slow-policy close)
    "error",  # a fault of the handler
    "shutdown",  # the drain deadline passed
)


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


def _identity_frame(topic: str, payload: bytes) -> bytes:
    return payload


def _takes_connection(method: Any) -> bool:
    """Whether ``method`` (an unbound handler method) declares a parameter after ``self``
    and the data: then the loop passes the connection handle."""
    try:
        parameters = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) >= 3  # self, data, conn


@dataclass(frozen=True)
class Lifecycle:
    """Which optional parts of the handler protocol a handler class has (looked up once).

    Cached per class: :func:`~rawepoll.server.serve` looks it up before the
    workers fork, so they inherit the answer instead of importing ``inspect``'s
    machinery into their private memory (about 230 KiB each, measured).
    """

    made: bool
    lost: bool
    with_connection: bool  # data_received/eof_received take a second argument
    by_fd: bool  # ... and it is the descriptor, not a handle
    frame: Callable[[str, bytes], bytes]
    started: Callable[[Any], object] | None
    draining: bool
    last_words: bool

    @classmethod
    @functools.cache
    def of(cls, handler: type) -> Lifecycle:
        frame = getattr(handler, "push_frame", None)
        by_fd = getattr(handler, "by_fd", False) is True
        return cls(
            made=callable(getattr(handler, "connection_made", None)),
            lost=callable(getattr(handler, "connection_lost", None)),
            with_connection=by_fd or _takes_connection(getattr(handler, "data_received", None)),
            by_fd=by_fd,
            frame=frame if callable(frame) else _identity_frame,
            started=getattr(handler, "worker_started", None),
            draining=callable(getattr(handler, "draining", None)),
            last_words=callable(getattr(handler, "last_words", None)),
        )


class LinePubSubHandler:
    """Publish/subscribe over lines of text: the push example of ``rawepoll serve``.

    ============================  =============================================
    ``SUB topic``                 subscribe this connection; ``OK SUB topic``
    ``UNSUB topic``               unsubscribe; ``OK UNSUB topic``
    ``PUB topic message``         publish ``message`` to every subscriber of
                                  ``topic`` (every worker, every host with a
                                  broker); ``OK PUB topic``
    anything else                 ``ERR ...``, and the connection goes on
    ============================  =============================================

    A subscriber receives ``MSG topic message`` lines (:meth:`push_frame`).
    Shared by every connection: an idle subscriber costs no Python object,
    only an unfinished line does (kept by connection until its newline, at
    most ``max_line`` bytes: a longer line is an error and closes).
    """

    shared: ClassVar[bool] = True
    max_line: ClassVar[int] = 65536

    def __init__(self) -> None:
        self._partial: dict[Any, bytearray] = {}  # connection -> its unfinished line

    @staticmethod
    def push_frame(topic: str, payload: bytes) -> bytes:
        """How a published message reaches a subscriber: ``MSG topic payload\\n``."""
        return b"MSG %s %s\n" % (topic.encode(), payload)

    def data_received(self, data: memoryview, conn: Any) -> Output:
        partial = self._partial.pop(conn, None)
        chunk = bytes(data) if partial is None else bytes(partial + data)
        end = chunk.rfind(b"\n") + 1
        if end < len(chunk):
            if len(chunk) - end > self.max_line:
                conn.close()
                return b"ERR line too long\n"
            self._partial[conn] = bytearray(chunk[end:])
        replies = [self._command(line, conn) for line in chunk[:end].splitlines()]
        return b"".join(replies) or None

    def _command(self, line: bytes, conn: Any) -> bytes:
        verb, _, rest = line.strip().partition(b" ")
        try:
            if verb == b"SUB":
                conn.subscribe(rest.decode())
            elif verb == b"UNSUB":
                conn.unsubscribe(rest.decode())
            elif verb == b"PUB":
                topic, _, message = rest.partition(b" ")
                conn.hub.publish(topic.decode(), message)
                rest = topic
            else:
                return b"ERR unknown command (SUB, UNSUB or PUB)\n"
        except (ValueError, TypeError) as error:  # a bad topic or message: say so, go on
            return b"ERR %s\n" % str(error).encode()
        return b"OK %s %s\n" % (verb, rest)

    def eof_received(self, conn: Any) -> Output:
        return None

    def connection_lost(self, conn: Any, reason: str) -> None:
        self._partial.pop(conn, None)
