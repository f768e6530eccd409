"""The control socket: publish to a running server from outside it (``rawepoll publish``).

``rawepoll serve --control PATH`` (:attr:`ServerConfig.control
<rawepoll.server.config.ServerConfig.control>`; off by default) listens on a
Unix stream socket at ``PATH``.  The file is created with mode ``0600`` -- the
umask is ``0177`` around ``bind``, then ``chmod`` says it again -- so it is
never world-accessible, not even for an instant: only the server's user (and
root) can publish.  A stale socket file nobody listens on is replaced, any
other file is refused, and the file is removed on exit.  The listening socket
is made before the workers fork; every worker watches it
(:class:`ControlServer`, a worker extension), and whichever accepts a control
connection serves it in its own loop, without blocking, beside its clients.

The protocol
------------

A control connection carries requests, one after another; each gets one reply,
in order.  A request is a *header line* -- ASCII fields separated by one
space, ended by ``\\n`` (no ``\\r``), at most :data:`MAX_LINE` bytes with its
newline -- followed, for ``PUBLISH`` and ``BROADCAST``, by exactly
``<length>`` bytes of payload, which may be any bytes at all (newlines and NULs
included: nothing is escaped, nothing is scanned)::

    PING\\n                                  ->  PONG\\n
    PUBLISH <topic> <length>\\n<payload>     ->  OK\\n
    BROADCAST <length>\\n<payload>           ->  OK\\n
    anything else                           ->  ERR <reason>\\n, and the server closes

``<topic>`` is a topic name (:func:`~rawepoll.server.topics.check_topic`: UTF-8,
1 to 255 bytes, no whitespace or control characters).  ``<length>`` is the
payload's size in bytes, in decimal digits (no sign, no spaces); payload and
topic together must fit a relay message (:data:`rawepoll.server.relay.MAX_MESSAGE`,
200 KiB, less 3 bytes of header): :func:`payload_limit`.  A length above it is
refused as soon as the header line arrives, before any payload is read.

``OK`` means the worker that read the request has published it
(:meth:`Delivery.publish <rawepoll.server.delivery.Delivery.publish>`, or
``broadcast``): delivered to its own subscribers (or their fan-out started),
handed to the other workers' mailboxes, and to the broker if there is one.
Delivery is at most once, as everywhere in push.

``ERR <reason>`` (one line of ASCII) answers an unknown verb, a malformed or
overlong header line, a bad topic, a length above the limit, a connection that
ends inside a request, or a connection that sent no complete request within
:data:`READ_TIMEOUT` seconds of its previous one (or of its connect); then the
server closes the connection.  The requests before the bad one were carried
out; nothing of the bad one was, and nothing else changes: no publish, no
counter, no other connection.  A worker serves at most :data:`MAX_CLIENTS`
control connections at once; the next one is answered ``ERR busy ...`` and
closed.  A client that does not read its replies stops being read (its
requests wait in the kernel) until it does, or until its deadline.

Order: the requests of one connection are carried out in order.  A client that
waits for each ``OK`` before its next request keeps its order across
connections too -- successive ``rawepoll publish`` commands, say, each
accepted by whichever worker wakes first: before a publish, a worker delivers
what the other workers had already relayed to it.  (Not so when a mailbox was
full and the relay had to queue, see :mod:`rawepoll.server.relay`; nor with a
broker, whose order is Redis's.)

The parts
---------

:class:`ControlParser` is the protocol without I/O (bytes in, commands out);
:class:`ControlServer` is a worker's side of the socket; :class:`ControlClient`,
:func:`publish`, :func:`broadcast` and :func:`ping` are the client's side, and
``rawepoll publish`` (:mod:`rawepoll.server.publish_cli`) the command line's.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from rawepoll.server import listen, relay
from rawepoll.server.topics import check_topic
from rawepoll.unix import EPOLLIN, EPOLLOUT

if TYPE_CHECKING:
    from rawepoll.server.loop import Extension, Worker
    from rawepoll.server.timers import Timer

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_CLIENTS",
    "MAX_LINE",
    "READ_TIMEOUT",
    "Broadcast",
    "Command",
    "ControlClient",
    "ControlError",
    "ControlParser",
    "ControlServer",
    "Ping",
    "ProtocolError",
    "Publish",
    "broadcast",
    "close_socket",
    "encode",
    "extensions",
    "open_socket",
    "payload_limit",
    "ping",
    "publish",
]

MAX_LINE: Final = 512  # bytes of a header line, its newline included
READ_TIMEOUT: Final = 5.0  # seconds a control connection has for each complete request
MAX_CLIENTS: Final = 32  # control connections a worker serves at once
DEFAULT_TIMEOUT: Final = 5.0  # seconds a client waits for each reply
BACKLOG: Final = 64  # listen() backlog of the control socket
READ_SIZE: Final = 65536  # bytes read from a control connection per readiness event
ACCEPT_BURST: Final = 16  # control connections accepted per readiness event
EMFILE_BACKOFF: Final = 0.25  # seconds without accepting after EMFILE/ENFILE
CATCH_UP_ROUNDS: Final = 16  # relay reads (64 messages each) before a control publish
_MAX_DIGITS: Final = 9  # of a length: far above any limit, and int() stays cheap
_MAX_REPLY: Final = 4096  # bytes of a reply line the client accepts
_OUT_OF_FDS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


# -- the protocol, without I/O ----------------------------------------------------


class ProtocolError(ValueError):
    """Control input that breaks the protocol; ``str(error)`` is the one-line reason."""


class ControlError(Exception):
    """The server answered ``ERR``: it refused the request; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Ping:
    """``PING``: answered ``PONG`` (is the server there?)."""


@dataclass(frozen=True)
class Publish:
    """``PUBLISH <topic> <length>``: ``payload`` to every subscriber of ``topic``."""

    topic: str
    payload: bytes


@dataclass(frozen=True)
class Broadcast:
    """``BROADCAST <length>``: ``payload`` to every connection of the server."""

    payload: bytes


Command = Ping | Publish | Broadcast
"""A request of the control protocol."""


def payload_limit(topic: str | None) -> int:
    """The largest payload a publish to ``topic`` (None: a broadcast) may carry."""
    return relay.MAX_MESSAGE - _overhead(topic)


def _overhead(topic: str | None) -> int:
    """Bytes of a relay message that are not payload (its header and the topic)."""
    return len(relay.encode(relay.BROADCAST, topic or "", b""))


def encode(command: Command) -> bytes:
    """The request for ``command``, as a client sends it.

    Raises:
        TypeError, ValueError: a bad topic name, or a payload above :func:`payload_limit`.
    """
    if isinstance(command, Ping):
        return b"PING\n"
    topic = None if isinstance(command, Broadcast) else check_topic(command.topic)
    payload = bytes(command.payload)
    limit = payload_limit(topic)
    if len(payload) > limit:
        raise ValueError(f"a payload of {len(payload)} bytes is above the limit of {limit}")
    if topic is None:
        return b"BROADCAST %d\n" % len(payload) + payload
    return b"PUBLISH %s %d\n" % (topic.encode(), len(payload)) + payload


class ControlParser:
    """The control protocol, sans-IO: :meth:`feed` it bytes, take :meth:`next_command`.

    Any split of the same bytes into :meth:`feed` calls gives the same
    commands and the same error; after an error the parser is done (every
    later :meth:`next_command` raises it again).  It holds at most one header
    line (:data:`MAX_LINE`) or one payload, plus what was fed since the last
    :meth:`next_command` returned None -- so call it until it does after each
    :meth:`feed`.
    """

    def __init__(self, *, max_line: int = MAX_LINE, max_message: int = relay.MAX_MESSAGE) -> None:
        self.max_line = max_line
        self.max_message = max_message  # a relay message's bound (payload + topic + header)
        self._buffer = bytearray()
        self._start = 0  # what is before this index was parsed already
        self._header: tuple[str | None, int] | None = None  # (topic, length): awaits payload
        self._error: ProtocolError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes received (ignored once the parser has failed)."""
        if self._error is not None:
            return
        if self._start:
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def next_command(self) -> Command | None:
        """The next complete command, or None until more bytes come.

        Raises:
            ProtocolError: the input breaks the protocol (then and every time after).
        """
        if self._error is not None:
            raise self._error
        try:
            if self._header is None:
                line = self._line()
                if line is None:
                    return None
                if self._parse(line):
                    return Ping()
            return self._payload()
        except ProtocolError as error:
            self._error = error
            raise

    def end(self) -> None:
        """The peer closed: fine between requests, an error inside one.

        Call it once :meth:`next_command` has returned None.

        Raises:
            ProtocolError: the input ended inside a request (or had failed already).
        """
        if self._error is None and self._header is not None:
            have = len(self._buffer) - self._start
            self._error = ProtocolError(
                f"the connection ended {have} bytes into a payload of {self._header[1]}"
            )
        elif self._error is None and len(self._buffer) > self._start:
            self._error = ProtocolError("the connection ended inside a request line")
        if self._error is not None:
            raise self._error

    def _parse(self, line: bytes) -> bool:
        """A header line: True for a PING; a PUBLISH or BROADCAST header awaits its payload."""
        verb, *fields = line.split(b" ")
        if verb == b"PING" and not fields:
            return True
        if verb == b"PUBLISH" and len(fields) == 2:
            self._expect(_topic(fields[0]), fields[1])
        elif verb == b"BROADCAST" and len(fields) == 1:
            self._expect(None, fields[0])
        elif verb in _USAGE:
            raise ProtocolError(f"usage: {_USAGE[verb]}")
        else:
            raise ProtocolError("unknown request (PING, PUBLISH or BROADCAST)")
        return False

    def _line(self) -> bytes | None:
        """The next header line without its newline; None until it is complete."""
        buffer = self._buffer
        start = self._start
        end = buffer.find(b"\n", start, start + self.max_line)
        if end < 0:
            if len(buffer) - start >= self.max_line:
                raise ProtocolError(f"a request line is at most {self.max_line} bytes")
            return None
        self._start = end + 1
        return bytes(buffer[start:end])

    def _expect(self, topic: str | None, text: bytes) -> None:
        """A PUBLISH (``topic``) or BROADCAST (None) header: check its length, await the payload."""
        if not (text.isdigit() and len(text) <= _MAX_DIGITS):
            raise ProtocolError("the length is the payload's size in decimal digits")
        length = int(text)
        limit = self.max_message - _overhead(topic)
        if length > limit:
            raise ProtocolError(f"a payload of {length} bytes is above the limit of {limit}")
        self._header = (topic, length)

    def _payload(self) -> Command | None:
        """The PUBLISH or BROADCAST whose header was read, once its payload is complete."""
        assert self._header is not None
        topic, length = self._header
        start = self._start
        if len(self._buffer) - start < length:
            return None
        payload = bytes(self._buffer[start : start + length])
        self._start = start + length
        self._header = None
        return Broadcast(payload) if topic is None else Publish(topic, payload)


_USAGE: Final = {
    b"PING": "PING",
    b"PUBLISH": "PUBLISH <topic> <length>",
    b"BROADCAST": "BROADCAST <length>",
}


def _topic(field: bytes) -> str:
    try:
        return check_topic(field.decode())
    except UnicodeDecodeError:
        raise ProtocolError("a topic name is UTF-8") from None
    except (TypeError, ValueError) as error:
        raise ProtocolError(str(error)) from None


def _error_line(reason: str) -> bytes:
    """``ERR <reason>\\n``: one line of ASCII whatever the reason holds."""
    text = " ".join(reason.split())
    return b"ERR %s\n" % text.encode("ascii", "backslashreplace")[:MAX_LINE]


# -- the server's side: the socket, and a worker extension ------------------------


def open_socket(path: str | None, backlog: int = BACKLOG) -> socket.socket | None:
    """The listening control socket at ``path``, mode 0600 (None: no control socket).

    Made by :func:`rawepoll.server.serve` before the workers fork.  A stale
    socket file nobody listens on is replaced; anything else at ``path`` is
    refused (the rules of ``--unix``, :mod:`rawepoll.server.listen`).

    Raises:
        OSError: ``path`` exists and is not a stale socket, or cannot be bound.
    """
    if path is None:
        return None
    mask = os.umask(0o177)  # bind() creates the file: 0600 from its first instant
    try:
        sock, _ = listen.open_listener("", 0, path, backlog)
    finally:
        os.umask(mask)
    try:
        os.chmod(path, 0o600)
    except BaseException:
        close_socket(sock, path)
        raise
    return sock


def close_socket(sock: socket.socket | None, path: str | None) -> None:
    """Close the control socket and remove its file (both None: nothing to do)."""
    if sock is not None:
        sock.close()
        listen.remove_unix_path(path)


def extensions(sock: socket.socket | None) -> tuple[Callable[[Worker], Extension], ...]:
    """What ``WorkerConfig.extensions`` needs for the control socket: one factory, or none."""
    if sock is None:
        return ()
    return (functools.partial(ControlServer, listener=sock),)


class _Client:
    """One control connection, served by one worker."""

    __slots__ = ("closed", "closing", "deadline", "fd", "out", "parser", "sock", "timer", "writing")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.parser = ControlParser()
        self.out = bytearray()  # replies the socket did not take yet
        self.deadline = deadline  # the next complete request is due by then
        self.timer: Timer | None = None
        self.writing = False  # watched for EPOLLOUT (and not read) while replies wait
        self.closing = False  # close once the replies are out
        self.closed = False


class ControlServer:
    """One worker's side of the control socket: a worker extension.

    Accepts control connections (at most ``max_clients`` at once) and serves
    them in the worker's loop: reads at most :data:`READ_SIZE` bytes per
    event, parses with :class:`ControlParser`, publishes through the worker's
    :class:`~rawepoll.server.delivery.Delivery`, and closes a connection that
    sends no complete request within ``timeout`` seconds.  Its descriptors are
    watched level-triggered, whatever the worker's mode.
    """

    def __init__(
        self,
        worker: Worker,
        listener: socket.socket,
        *,
        max_clients: int = MAX_CLIENTS,
        timeout: float = READ_TIMEOUT,
    ) -> None:
        self.worker = worker
        self.listener: socket.socket | None = listener
        self.max_clients = max_clients
        self.timeout = timeout
        self.clients: dict[int, _Client] = {}
        worker.watch(listener.fileno(), self._accept)

    # -- Extension ---------------------------------------------------------

    def stop(self) -> None:
        """The drain begins: accept no more control connections (those open go on)."""
        listener, self.listener = self.listener, None
        if listener is not None:
            self.worker.unwatch(listener.fileno())
            listener.close()  # this process's copy; the file goes when serve() returns

    def close(self) -> None:
        """The worker exits: close everything."""
        self.stop()
        for client in list(self.clients.values()):
            self._drop(client)

    # -- accepting ---------------------------------------------------------

    def _accept(self, mask: int) -> None:
        listener = self.listener
        for _ in range(ACCEPT_BURST):
            if listener is None:
                return
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return  # another worker took it, or the queue is empty
            except OSError as error:
                if error.errno in _OUT_OF_FDS:
                    self._back_off()
                    return
                continue  # that connection died in the queue; the next may not have
            self._admit(sock)

    def _back_off(self) -> None:
        """Out of descriptors: stop watching the listener for a while (LT would spin)."""
        listener = self.listener
        if listener is not None:
            self.worker.unwatch(listener.fileno())
            self.worker.call_later(EMFILE_BACKOFF, self._resume, listener)

    def _resume(self, listener: socket.socket) -> None:
        if self.listener is listener:
            self.worker.watch(listener.fileno(), self._accept)

    def _admit(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if len(self.clients) >= self.max_clients:
            with contextlib.suppress(OSError):
                sock.send(_error_line(f"busy: {self.max_clients} control connections already"))
            sock.close()
            return
        client = _Client(sock, time.monotonic() + self.timeout)
        self.clients[client.fd] = client
        self.worker.watch(client.fd, functools.partial(self._event, client))
        client.timer = self.worker.call_later(self.timeout, self._expire, client)

    # -- serving -----------------------------------------------------------

    def _event(self, client: _Client, mask: int) -> None:
        if client.writing:
            self._flush(client)  # EPOLLOUT, or an error that the write reports
        elif not client.closed:
            self._read(client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._drop(client)
            return
        try:
            if data:
                client.parser.feed(data)
                self._serve(client)
            else:
                client.parser.end()
                client.closing = True  # the peer is done: close once the replies are out
        except ProtocolError as error:
            client.out += _error_line(str(error))
            client.closing = True
        self._flush(client)

    def _serve(self, client: _Client) -> None:
        """Carry out every complete request; the reply of each goes to ``client.out``."""
        parser = client.parser
        while (command := parser.next_command()) is not None:
            client.out += self._execute(command)
            client.deadline = time.monotonic() + self.timeout

    def _execute(self, command: Command) -> bytes:
        if isinstance(command, Ping):
            return b"PONG\n"
        self._catch_up()
        delivery = self.worker.delivery
        try:
            if isinstance(command, Publish):
                delivery.publish(command.topic, command.payload)
            else:
                delivery.broadcast(command.payload)
        except (TypeError, ValueError) as error:  # the parser let through what delivery refuses
            raise ProtocolError(str(error)) from None
        return b"OK\n"

    def _catch_up(self) -> None:
        """Deliver what the other workers relayed here before this publish (its order)."""
        self.worker.delivery.catch_up(CATCH_UP_ROUNDS)

    def _flush(self, client: _Client) -> None:
        """Write what waits; watch for room (and stop reading) while some remains."""
        if client.out:
            try:
                sent = client.sock.send(client.out)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._drop(client)
                return
            del client.out[:sent]
        if client.out:
            if not client.writing:
                client.writing = True
                self.worker.rewatch(client.fd, EPOLLOUT)
        elif client.closing:
            self._drop(client)
        elif client.writing:
            client.writing = False
            self.worker.rewatch(client.fd, EPOLLIN)

    def _expire(self, client: _Client) -> None:
        """The client's deadline: moved on since (re-armed), or passed (ERR and close)."""
        if client.closed:
            return
        left = client.deadline - time.monotonic()
        if left > 0:
            client.timer = self.worker.call_later(left, self._expire, client)
            return
        if not client.closing:
            client.out += _error_line(f"no complete request within {self.timeout:g} s")
            client.closing = True
            self._flush(client)
        self._drop(client)  # whatever it has not read by now

    def _drop(self, client: _Client) -> None:
        if client.closed:
            return
        client.closed = True
        del self.clients[client.fd]
        if client.timer is not None:
            client.timer.cancel()
        self.worker.unwatch(client.fd)
        client.sock.close()


# -- the client's side -------------------------------------------------------------


class ControlClient:
    """A connection to a server's control socket; one request at a time.

    ``timeout`` bounds the connect and each request (sending it and reading
    its reply).  The server closes a connection that stays idle for
    :data:`READ_TIMEOUT` seconds: keep one only for a burst of requests.

    Every method raises :class:`ControlError` when the server answers ``ERR``
    (it then closes the connection); ``TypeError`` or ``ValueError`` for a bad
    topic or payload, found before anything is sent; ``OSError`` when the
    server cannot be reached (``FileNotFoundError``, ``ConnectionRefusedError``,
    ``TimeoutError``...) or closes the connection without a reply
    (``ConnectionError``).
    """

    def __init__(self, path: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._buffer = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise

    def ping(self) -> None:
        """``PING``: the server answers (``PONG``)."""
        self.request(b"PING\n", b"PONG")

    def publish(self, topic: str, payload: bytes | bytearray | memoryview | str) -> None:
        """``PUBLISH``: ``payload`` (a ``str`` goes as UTF-8) to every subscriber of ``topic``."""
        self.request(encode(Publish(topic, _as_bytes(payload))), b"OK")

    def broadcast(self, payload: bytes | bytearray | memoryview | str) -> None:
        """``BROADCAST``: ``payload`` to every connection of the server."""
        self.request(encode(Broadcast(_as_bytes(payload))), b"OK")

    def request(self, data: bytes, expect: bytes) -> None:
        """Send one encoded request (:func:`encode`) and check that its reply is ``expect``."""
        deadline = time.monotonic() + self.timeout
        self.sock.settimeout(self.timeout)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused early (a length above the limit): its ERR may be waiting
        reply = self._reply(deadline)
        if reply.startswith(b"ERR "):
            raise ControlError(reply[4:].decode("ascii", "replace"))
        if reply != expect:
            raise ControlError(f"unexpected reply {reply[:80]!r}")

    def _reply(self, deadline: float) -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) > _MAX_REPLY:
                raise ControlError("a reply line too long: is this a rawepoll control socket?")
            self.sock.settimeout(max(deadline - time.monotonic(), 1e-3))
            try:
                chunk = self.sock.recv(_MAX_REPLY)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ConnectionError(f"{self.path}: the server closed without a reply")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def publish(
    path: str,
    topic: str,
    payload: bytes | bytearray | memoryview | str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Publish ``payload`` to every subscriber of ``topic``, through the control socket at
    ``path``; returns once the server said ``OK``.

    Raises:
        ControlError: the server answered ``ERR``.
        TypeError, ValueError: a bad topic or payload (nothing was sent).
        OSError: the server cannot be reached, or closed without a reply.
    """
    request = encode(Publish(topic, _as_bytes(payload)))  # checked before connecting
    with ControlClient(path, timeout=timeout) as client:
        client.request(request, b"OK")


def broadcast(
    path: str, payload: bytes | bytearray | memoryview | str, *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    """Send ``payload`` to every connection of the server at ``path`` (as :func:`publish`)."""
    request = encode(Broadcast(_as_bytes(payload)))
    with ControlClient(path, timeout=timeout) as client:
        client.request(request, b"OK")


def ping(path: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Check that a server answers on the control socket at ``path`` (as :func:`publish`)."""
    with ControlClient(path, timeout=timeout) as client:
        client.ping()


def _as_bytes(data: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"a payload is bytes-like or str, not {type(data).__name__}")
