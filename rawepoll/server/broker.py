"""The Redis broker: publishes across hosts through Redis pub/sub, on each worker's own loop.

``rawepoll serve --broker redis://HOST:PORT`` gives every worker two Redis
connections, watched by the worker's epoll like any other descriptor.  Nothing
on them blocks the loop: the connect, the handshake, every write and every
read waits for readiness, and replies are parsed by ``hiredis.Reader`` (a
sans-IO parser: bytes in, replies out).  The Redis channel of a topic is the
topic's name, exactly, so any Redis client can take part
(``redis-cli PUBLISH TOPIC MESSAGE``).

* The **subscriber** ``SUBSCRIBE``\\ s to the topics that have a subscriber in
  this worker, and to no other: :class:`~rawepoll.server.topics.Topics` says
  when a topic gets its first local subscriber and loses its last
  (``on_first``/``on_last``); the changes of a loop turn go out together, in
  commands of up to :data:`SUBSCRIBE_BATCH` channels, when the socket is
  writable.  Its ``message`` pushes go to this worker's subscribers
  (:meth:`~rawepoll.server.delivery.Delivery.deliver`).
* The **publisher** sends ``PUBLISH`` for every publish made in this worker;
  Redis answers each with the number of receivers, which is read, counted
  and dropped.

Facts of Redis that shape this:

* In RESP2 a connection that subscribed may only (un)subscribe and ``PING``:
  publishing needs a connection of its own.
* Redis closes a subscriber whose output buffer passes
  ``client-output-buffer-limit pubsub`` (32 MB hard by default).  The
  subscriber socket is read whenever epoll reports it, up to
  :data:`READS_PER_EVENT` reads a loop turn, and nothing here waits for a
  fan-out to end: :mod:`~rawepoll.server.delivery` slices a large fan-out over
  loop turns, and every turn goes back to ``epoll_wait``.  The backlog of a
  slow fan-out is held here, not in Redis.
* Pub/sub is **at most once**: Redis keeps nothing for a subscriber that is
  not connected.  Channels belong to the whole Redis server: ``/DB`` selects a
  database (Redis checks it) but does not separate channels.
* Redis keeps each connection's order: the messages of one publisher reach
  every subscriber connection in the order they were published.

A publish goes through Redis when both links are up and the subscriptions of
the moment the subscriber came up are confirmed: then it is *not* delivered
here directly -- Redis brings it back to every subscribed worker, this one
included, so each subscriber gets it once.  Otherwise
:meth:`Broker.publish` says no and the publish is delivered to this server
only (here, and to the other workers through the relay).

What is counted (per worker; the supervisor sums them):

``broker_links``
    Redis connections up (a level: two per worker when all is well).
``broker_published``
    publishes Redis confirmed (its reply read).
``broker_received``
    messages Redis delivered to this worker's subscriber connection.
``broker_lost``
    publishes made here that are not known to have reached Redis: made while
    a link was down (they reached this server's subscribers only), refused by
    Redis, or written but unconfirmed when the publisher connection died
    (they reached everyone or no one: unknown).
``broker_dropped``
    publishes refused because the publisher's output buffer held
    :data:`MAX_OUTPUT` bytes (Redis too slow to take them); they reach no one.
``broker_reconnects``
    connections re-established after a loss.

Lost and counted nowhere: what other hosts publish while this worker's
subscriber is down (Redis keeps nothing), and what is published on a topic
between its first subscriber here and Redis's confirmation of the
``SUBSCRIBE``.

A lost connection is retried after :data:`BACKOFF_FIRST` seconds, doubling to
:data:`BACKOFF_MAX`, each delay jittered (so that many workers do not knock
at once); the subscriber subscribes again to every local topic when it is
back.  A connection that neither connects nor completes its handshake within
:data:`CONNECT_TIMEOUT` is dropped and retried, and one silent for
:data:`KEEPALIVE` seconds is sent a ``PING``, and dropped if it still says
nothing for as long (a host gone without a reset).  The host name is resolved
once, when the server starts.
"""

from __future__ import annotations

import errno
import os
import random
import re
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

from rawepoll.unix import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT

if TYPE_CHECKING:
    from rawepoll.server.loop import Worker
    from rawepoll.server.timers import Timer

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "INSTALL_HINT",
    "MAX_OUTPUT",
    "Broker",
    "BrokerDependencyError",
    "RedisURL",
    "Target",
    "command",
    "extension",
    "parse_url",
    "resolve",
]

DEFAULT_PORT: Final = 6379
BACKOFF_FIRST: Final = 0.1  # seconds before the first retry
BACKOFF_MAX: Final = 5.0  # the longest wait between two attempts
CONNECT_TIMEOUT: Final = 5.0  # connect and handshake, or the attempt failed
KEEPALIVE: Final = 10.0  # silent this long: PING; silent as long again: dead
MAX_OUTPUT: Final = 8 << 20  # bytes of PUBLISH waiting for Redis; beyond, dropped
SUBSCRIBE_BATCH: Final = 1024  # channels per SUBSCRIBE/UNSUBSCRIBE command
READ_SIZE: Final = 65536
READS_PER_EVENT: Final = 16  # then the loop's other descriptors get their turn
INSTALL_HINT: Final = "pip install 'rawepoll[redis]'"
URL_FORM: Final = "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]"

# The states of a link.
_DOWN: Final = 0  # no socket; a retry is scheduled
_CONNECTING: Final = 1  # connect() in progress: waiting for EPOLLOUT
_HANDSHAKE: Final = 2  # AUTH/SELECT/PING sent, their replies due
_READY: Final = 3


class BrokerDependencyError(ImportError):
    """``--broker`` needs hiredis, and it is not installed."""


# -- the URL -------------------------------------------------------------------


@dataclass(frozen=True)
class RedisURL:
    """Where the broker is: ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        """The URL without its credentials (it goes into logs)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


def parse_url(text: str) -> RedisURL:
    """The :class:`RedisURL` that ``text`` spells.

    Raises:
        ValueError: one line saying what is wrong (the password is not repeated).
    """
    try:
        return _parse(text)
    except ValueError as error:
        raise ValueError(f"broker must be {URL_FORM}, not {_redact(text)!r}: {error}") from None


def _parse(text: str) -> RedisURL:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme != "redis":
        tls = " (TLS, rediss://, is not supported)" if parts.scheme == "rediss" else ""
        raise ValueError(f"the scheme must be redis://{tls}")
    if parts.query or parts.fragment:
        raise ValueError("no ?query or #fragment is understood")
    if not parts.hostname:
        raise ValueError("no host")
    port = parts.port  # ValueError when it is not a number in 0..65535
    if port == 0:
        raise ValueError("port 0 cannot be connected to")
    path = parts.path.strip("/")
    if path and not (path.isdigit() and path.isascii()):
        raise ValueError(f"the database is a number, not {path!r}")
    username = urllib.parse.unquote(parts.username) if parts.username else None
    password = None if parts.password is None else urllib.parse.unquote(parts.password)
    if username is not None and password is None:
        raise ValueError("a user name needs a password (redis://USER:PASSWORD@HOST)")
    return RedisURL(parts.hostname, port or DEFAULT_PORT, int(path or 0), username, password)


def _redact(text: str) -> str:
    return re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", text)


# -- before the workers start ------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A parsed URL and the addresses its host resolved to."""

    url: RedisURL
    addresses: tuple[tuple[int, Any], ...]  # (family, sockaddr) to try in turn


def resolve(url: RedisURL) -> Target:
    """Resolve the host once, before anything listens (``getaddrinfo`` blocks).

    Raises:
        OSError: the host name does not resolve.
    """
    try:
        found = socket.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise OSError(f"cannot resolve the broker's host {url.host!r}: {error.strerror}") from None
    return Target(url, tuple((family, address) for family, _, _, _, address in found))


def extension(text: str) -> Callable[[Worker], Broker]:
    """What ``--broker URL`` adds to ``WorkerConfig.extensions``: checked, then made per worker.

    Raises:
        ValueError: a bad URL.
        BrokerDependencyError: hiredis is not installed.
        OSError: the host does not resolve.
    """
    url = parse_url(text)
    _require_hiredis()
    target = resolve(url)

    def make(worker: Worker) -> Broker:
        return Broker(worker, target)

    return make


def _require_hiredis() -> None:
    try:
        import hiredis  # noqa: F401, PLC0415 -- an optional extra: only --broker needs it
    except ImportError:
        raise BrokerDependencyError(f"--broker needs the hiredis package: {INSTALL_HINT}") from None


# -- one connection ------------------------------------------------------------------


class _Link:
    """One Redis connection on the worker's loop.

    Connects without blocking, sends the handshake, writes from a buffer
    (``EPOLLOUT`` armed only while it holds something), feeds what it reads
    to a ``hiredis.Reader``, and on any failure closes and tries again after
    the back-off.  A subclass says what the replies mean (:meth:`on_reply`)
    and what a connection coming up or going down means for it.
    """

    role: ClassVar[str] = "link"

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.worker = broker.worker
        self.stats = broker.worker.stats
        self.sock: socket.socket | None = None
        self.fd = -1
        self.mask = 0
        self.state = _DOWN
        self.out = bytearray()
        self.reader: Any = None  # this connection's hiredis.Reader
        self.awaiting = 0  # handshake replies still due
        self.timer: Timer | None = None  # the next attempt, or this one's deadline
        self.backoff = BACKOFF_FIRST
        self.attempts = 0  # connects started (which address is next)
        self.failures = 0  # attempts failed since the link was last up
        self.last_reason = ""  # why the last attempt failed (logged when it changes)
        self.was_up = False
        self.heard = True  # something was read since the last keepalive tick
        self.pinged = False

    @property
    def ready(self) -> bool:
        return self.state == _READY

    # -- what a subclass says --------------------------------------------

    def on_up(self) -> None:
        """The handshake is done."""

    def on_down(self) -> None:
        """A connection that was up is gone."""

    def on_reply(self, reply: Any) -> None:
        """A reply (or push) after the handshake."""

    def before_write(self) -> None:
        """The socket is writable: the last moment to add to :attr:`out`."""

    def has_more(self) -> bool:
        """Whether :meth:`before_write` has more to add once :attr:`out` is written."""
        return False

    # -- connecting ----------------------------------------------------------

    def connect(self) -> None:
        """Start an attempt; the kernel reports its end with ``EPOLLOUT``."""
        self.timer = None
        addresses = self.broker.target.addresses
        family, address = addresses[self.attempts % len(addresses)]
        self.attempts += 1
        flags = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        try:
            sock = socket.socket(family, flags)
        except OSError as error:  # EMFILE: the connections took every descriptor
            self.fail(error.strerror or str(error))
            return
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.fail(os.strerror(code))
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.fd = sock.fileno()
        self.state = _CONNECTING
        self.mask = EPOLLOUT
        self.worker.watch(self.fd, self._on_event, EPOLLOUT)
        self.timer = self.worker.call_later(CONNECT_TIMEOUT, self._timed_out)

    def _connected(self) -> None:
        assert self.sock is not None
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.fail(os.strerror(code))
            return
        self.state = _HANDSHAKE
        self.reader = self.broker.new_reader()
        self.awaiting = self.broker.hello_replies
        self.out = bytearray(self.broker.hello)
        self._set_mask(EPOLLIN | EPOLLOUT)

    def _timed_out(self) -> None:
        self.timer = None
        self.fail(f"no answer within {CONNECT_TIMEOUT:g} s")

    def _up(self) -> None:
        self._cancel_timer()
        self.state = _READY
        self.backoff = BACKOFF_FIRST
        self.stats.broker_links += 1
        if self.was_up:
            self.stats.broker_reconnects += 1
            self._log(f"reconnected (after {self.failures} failed attempts)")
        elif self.failures:
            self._log(f"connected after {self.failures} failed attempts")
        self.was_up = True
        self.failures = 0
        self.last_reason = ""
        self.on_up()

    # -- failing and retrying ------------------------------------------------

    def fail(self, reason: str) -> None:
        """The connection is gone or useless: close it, say so once, retry after the back-off."""
        was_ready = self.state == _READY
        self._close()
        if was_ready:
            self.stats.broker_links -= 1
            self._log(f"lost ({reason}); reconnecting")
            self.on_down()
        else:
            self.failures += 1
            if reason != self.last_reason:  # once per cause, not once per attempt
                self._log(f"cannot connect ({reason}); retrying, at most {BACKOFF_MAX:g} s apart")
        self.last_reason = reason
        self._schedule()

    def _schedule(self) -> None:
        if self.broker.closed:
            return
        delay = self.backoff * random.uniform(0.5, 1.0)
        self.backoff = min(2 * self.backoff, BACKOFF_MAX)
        self.timer = self.worker.call_later(delay, self.connect)

    def _close(self) -> None:
        self._cancel_timer()
        if self.sock is not None:
            self.worker.unwatch(self.fd)
            self.sock.close()
        self.sock = None
        self.fd = -1
        self.mask = 0
        self.state = _DOWN
        self.out = bytearray()
        self.reader = None
        self.heard = True
        self.pinged = False

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def shutdown(self) -> None:
        """The worker exits: one last try to send what waits, then close; no retry."""
        if self.sock is not None and self.state == _READY and self.out:
            try:
                self.sock.send(self.out)
            except OSError:
                pass
        if self.state == _READY:
            self.stats.broker_links -= 1
            self.on_down()
        self._close()

    # -- I/O -----------------------------------------------------------------

    def _on_event(self, mask: int) -> None:
        """Readiness of this link's socket: a fault of the connection costs the connection."""
        try:
            if self.state == _CONNECTING:
                self._connected()
                return
            if mask & (EPOLLIN | EPOLLERR | EPOLLHUP):
                self._read()
            if self.sock is not None and mask & EPOLLOUT:
                self._write()
        except (OSError, self.broker.protocol_error) as error:
            self.fail(str(error))
        except Exception:
            self.fail("internal error")  # ours; the worker logs it and counts it
            raise

    def _read(self) -> None:
        sock = self.sock
        assert sock is not None
        for _ in range(READS_PER_EVENT):
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                return
            if not data:
                self.fail("Redis closed the connection")
                return
            self.heard = True
            self.reader.feed(data)
            self._replies(sock)
            if self.sock is not sock or len(data) < READ_SIZE:
                return  # failed, or drained: level-triggered epoll reports the rest

    def _replies(self, sock: socket.socket) -> None:
        reader = self.reader
        reply = reader.gets()
        while reply is not False:
            if self.state == _HANDSHAKE:
                self._hello_reply(reply)
            else:
                self.on_reply(reply)
            if self.sock is not sock:
                return
            reply = reader.gets()

    def _hello_reply(self, reply: Any) -> None:
        if isinstance(reply, self.broker.reply_error):
            self.fail(f"Redis refused the handshake: {reply}")
            return
        self.awaiting -= 1
        if not self.awaiting:
            self._up()

    def _write(self) -> None:
        self.before_write()
        if self.out:
            assert self.sock is not None
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                return
            del self.out[:sent]
        if not self.out and not self.has_more():
            self._set_mask(EPOLLIN)

    def send(self, data: bytes) -> None:
        """Queue ``data``; it goes out when the socket is writable."""
        self.out += data
        self.want_write()

    def want_write(self) -> None:
        """Arm ``EPOLLOUT``: the changes of a whole loop turn go out in one write."""
        if self.state >= _HANDSHAKE and not self.mask & EPOLLOUT:
            self._set_mask(EPOLLIN | EPOLLOUT)

    def _set_mask(self, mask: int) -> None:
        if mask != self.mask:
            self.worker.rewatch(self.fd, mask)
            self.mask = mask

    def keepalive(self) -> None:
        """Every :data:`KEEPALIVE` seconds: PING a silent connection; drop one that stays silent."""
        if self.state != _READY:
            return
        if self.heard:
            self.heard = False
            self.pinged = False
        elif not self.pinged:
            self.pinged = True
            self.send(self.broker.ping)
        else:
            self.fail(f"no answer to PING within {KEEPALIVE:g} s")

    def _log(self, text: str) -> None:
        self.worker.log(f"worker {self.worker.slot}: broker {self.role} {self.broker.name}: {text}")


class _Publisher(_Link):
    """``PUBLISH`` for every publish of this worker; the replies are counted and dropped."""

    role = "publisher"

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self.in_flight = 0  # PUBLISH queued or sent, not yet answered
        self.refused = 0  # error replies on this connection

    def publish(self, topic: str, payload: bytes) -> None:
        data = command(b"PUBLISH", topic.encode(), payload)
        if len(self.out) + len(data) > MAX_OUTPUT:
            self.stats.broker_dropped += 1  # Redis does not keep up: bounded, not buffered
            return
        self.in_flight += 1
        self.send(data)

    def on_reply(self, reply: Any) -> None:
        if type(reply) is int:
            self.in_flight -= 1
            self.stats.broker_published += 1
        elif isinstance(reply, self.broker.reply_error):
            self.in_flight -= 1
            self.stats.broker_lost += 1
            self.refused += 1
            if self.refused == 1:
                self._log(f"Redis refused a publish: {reply}")
        # anything else answers a keepalive PING

    def on_up(self) -> None:
        self.refused = 0

    def on_down(self) -> None:
        self.stats.broker_lost += self.in_flight  # reached everyone or no one: unknown
        self.in_flight = 0


class _Subscriber(_Link):
    """``SUBSCRIBE`` to the topics with a local subscriber; their messages delivered here."""

    role = "subscriber"

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self.channels: set[str] = set()  # what this connection asked Redis for
        self.changed: set[str] = set()  # topics whose local state changed since the last write
        self.syncing = False  # up, and the first subscriptions not yet sent
        self.unconfirmed = 0  # confirmations due for the first subscriptions

    @property
    def synced(self) -> bool:
        """Up, with every topic it had when it came up confirmed by Redis."""
        return self.state == _READY and not self.syncing and not self.unconfirmed

    def on_up(self) -> None:
        self.channels = set()
        self.changed = set(self.broker.topics.names())
        self.syncing = True
        self.want_write()

    def topic_changed(self, name: str) -> None:
        """``Topics.on_first``/``on_last``: subscribe or unsubscribe at the next write."""
        if self.state == _READY:
            self.changed.add(name)
            self.want_write()

    def before_write(self) -> None:
        """The changes of the topics since the last write, once the last ones are out.

        Waiting for :attr:`out` to empty bounds what a Redis that does not
        read can cost: the set of changed topics, at most one per topic.
        """
        if self.out:
            return
        count = self.broker.topics.count
        wanted = [name for name in self.changed if count(name) and name not in self.channels]
        unwanted = [name for name in self.changed if not count(name) and name in self.channels]
        self.changed = set()
        if self.syncing:
            self.syncing = False
            self.unconfirmed = len(wanted)
        self._request(b"SUBSCRIBE", wanted)
        self.channels.update(wanted)
        self._request(b"UNSUBSCRIBE", unwanted)
        self.channels.difference_update(unwanted)

    def has_more(self) -> bool:
        return bool(self.changed)

    def _request(self, verb: bytes, names: list[str]) -> None:
        for start in range(0, len(names), SUBSCRIBE_BATCH):
            batch = names[start : start + SUBSCRIBE_BATCH]
            self.out += command(verb, *(name.encode() for name in batch))

    def on_reply(self, reply: Any) -> None:
        if type(reply) is not list or len(reply) != 3:
            return  # a PONG, in or out of subscribed mode
        kind = reply[0]
        if kind == b"message":
            self.broker.received(reply[1], reply[2])
        elif kind == b"subscribe" and self.unconfirmed:
            self.unconfirmed -= 1


# -- the extension -----------------------------------------------------------------


class Broker:
    """The ``--broker`` extension of one worker: a subscriber and a publisher link to Redis.

    Made in the worker after the fork (:func:`extension`); it starts
    connecting at once and takes over ``Delivery.broker_publish`` and the
    topics' ``on_first``/``on_last`` (keeping any callbacks set before).
    """

    def __init__(self, worker: Worker, target: Target) -> None:
        import hiredis  # noqa: PLC0415 -- an optional extra: only --broker needs it

        self.worker = worker
        self.target = target
        self.name = str(target.url)
        self.topics = worker.topics
        self.delivery = worker.delivery
        self.stats = worker.stats
        self.new_reader: Callable[[], Any] = hiredis.Reader
        self.protocol_error: type[Exception] = hiredis.ProtocolError
        self.reply_error: type[Exception] = hiredis.ReplyError
        self.hello, self.hello_replies = _hello(target.url)
        self.ping = command(b"PING")
        self.closed = False
        self.subscriber = _Subscriber(self)
        self.publisher = _Publisher(self)
        self.links = (self.subscriber, self.publisher)
        self._follow_topics()
        self.delivery.broker_publish = self.publish
        self.keepalive = worker.call_every(KEEPALIVE, self._keepalive)
        for link in self.links:
            link.connect()

    def _follow_topics(self) -> None:
        changed = self.subscriber.topic_changed
        topics = self.topics
        topics.on_first = _chain(topics.on_first, changed)
        topics.on_last = _chain(topics.on_last, changed)

    def publish(self, topic: str, payload: bytes) -> bool:
        """``Delivery.broker_publish``: True if Redis takes it (and brings it back here).

        False -- counted as ``broker_lost`` -- while a link is down or the
        subscriber's subscriptions are not confirmed yet: the caller then
        delivers it to this server only.
        """
        if self.publisher.ready and self.subscriber.synced:
            self.publisher.publish(topic, payload)
            return True
        self.stats.broker_lost += 1
        return False

    def received(self, channel: bytes, payload: bytes) -> None:
        """A message from Redis: to this worker's subscribers of its topic."""
        self.stats.broker_received += 1
        try:
            self.delivery.deliver(channel.decode(), payload)
        except Exception as error:  # one message's fault, not the link's
            self.worker.user_fault(-1, error, f"delivering a broker message on {channel!r}")

    def _keepalive(self) -> None:
        for link in self.links:
            link.keepalive()

    def stop(self) -> None:
        """The drain begins: the links stay up, the connections still open keep receiving."""

    def close(self) -> None:
        """The worker exits: close both connections, no retry."""
        self.closed = True
        self.keepalive.cancel()
        for link in self.links:
            link.shutdown()
        if self.delivery.broker_publish == self.publish:
            self.delivery.broker_publish = None


def command(*args: bytes) -> bytes:
    """One Redis command in RESP: an array of bulk strings (what every client sends)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts += (b"$%d\r\n" % len(arg), arg, b"\r\n")
    return b"".join(parts)


def _hello(url: RedisURL) -> tuple[bytes, int]:
    """The handshake: AUTH and SELECT if the URL asks, then PING; and how many replies it gets."""
    commands: list[bytes] = []
    if url.password is not None:
        secret = url.password.encode()
        user = () if url.username is None else (url.username.encode(),)
        commands.append(command(b"AUTH", *user, secret))
    if url.db:
        commands.append(command(b"SELECT", b"%d" % url.db))
    commands.append(command(b"PING"))
    return b"".join(commands), len(commands)


def _chain(
    first: Callable[[str], None] | None, then: Callable[[str], None]
) -> Callable[[str], None]:
    if first is None:
        return then

    def both(name: str) -> None:
        first(name)
        then(name)

    return both
