"""Server push, as a handler sees it: :class:`Connection` handles and the :class:`Hub`.

A handler can answer the bytes it is given; with push it can also send to
connections that did not just send to it.  Two objects carry that:

:class:`Connection`
    a handle on one connection of this worker, which a handler receives
    (``connection_made(conn)``, ``connection_lost(conn, reason)``, and
    ``data_received(data, conn)`` when it asks for it) and may keep: send to
    it, close it, subscribe it to topics -- from any callback of the worker
    (its own data event, another connection's, a timer, a publish).  A handle
    names its connection by descriptor *and generation*: the kernel hands the
    lowest free descriptor to the next connection at once, so a handle whose
    connection closed must never reach the stranger that got its number.  A
    send on such a stale handle is a counted no-op (``stale_sends``) that
    returns False.  Handles cost nothing while not held: the loop makes one
    when it calls you and forgets it.

:class:`Hub`
    the server from inside a worker: :meth:`Hub.publish` to a topic (every
    subscriber in every worker of this server, and on every host through the
    Redis broker when one is configured), :meth:`Hub.broadcast` to every
    connection of this server, timers (:meth:`Hub.call_later`,
    :meth:`Hub.call_every`).  ``conn.hub`` reaches it, and a handler class
    may define ``worker_started(hub)`` (a static or class method) to set up
    per-worker timers.

Delivery is at most once and in order per publisher within a server: a
publish reaches each subscriber of the moment once; a subscriber that does not
read has its pending output capped (``--max-pending``), past which the
message is dropped (counted) or the connection closed (``--slow-policy``).
Across hosts (Redis) delivery is at most once: what is published while the
broker is unreachable does not reach other hosts (counted as ``broker_lost``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rawepoll.server.loop import Worker
    from rawepoll.server.timers import Timer

__all__ = ["Connection", "Hub", "Payload"]

Payload = bytes | bytearray | memoryview | str
"""What may be sent or published: bytes-like, or a ``str`` (sent as UTF-8)."""


class Connection:
    """A handle on one connection of this worker; safe to keep after it closed."""

    __slots__ = ("_worker", "fd", "generation")

    def __init__(self, worker: Worker, fd: int, generation: int) -> None:
        self._worker = worker
        self.fd = fd
        self.generation = generation

    @property
    def open(self) -> bool:
        """Whether the connection this handle names is still open."""
        return self._worker.is_current(self.fd, self.generation)

    @property
    def hub(self) -> Hub:
        """The server, from inside this connection's worker."""
        return self._worker.hub

    def send(self, data: Payload) -> bool:
        """Queue ``data`` to this connection (written at once when the socket takes it).

        Returns:
            True if it was written or queued; False if the connection is gone
            (a stale handle: counted, nothing written) or the bytes were
            dropped because the connection does not read (``--slow-policy``).

        Raises:
            TypeError: ``data`` is not bytes-like or ``str``.
        """
        return self._worker.send_to(self.fd, self.generation, _as_bytes(data))

    def close(self) -> None:
        """Close the connection after what is queued for it (no-op if it is gone)."""
        self._worker.close_handle(self.fd, self.generation)

    def subscribe(self, topic: str) -> bool:
        """Deliver what is published to ``topic`` to this connection; False if it already was
        (or is gone)."""
        return self._worker.delivery.subscribe(self.fd, self.generation, topic)

    def unsubscribe(self, topic: str) -> bool:
        """Stop delivering ``topic`` here; False if it was not subscribed (or is gone)."""
        return self._worker.delivery.unsubscribe(self.fd, self.generation, topic)

    @property
    def topics(self) -> list[str]:
        """The topics this connection subscribes to (none once it is gone)."""
        return self._worker.delivery.topics_of(self.fd, self.generation)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Connection):
            return NotImplemented
        return (self.fd, self.generation) == (other.fd, other.generation)

    def __hash__(self) -> int:
        return hash((self.fd, self.generation))

    def __repr__(self) -> str:
        state = "open" if self.open else "closed"
        return f"<Connection fd={self.fd} generation={self.generation} {state}>"


class Hub:
    """The server from inside one worker: publish, broadcast, timers."""

    __slots__ = ("_worker",)

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def publish(self, topic: str, payload: Payload) -> None:
        """Deliver ``payload`` to every subscriber of ``topic``, in every worker (and host).

        Raises:
            TypeError, ValueError: a bad topic name (see ``check_topic``) or payload,
                or a payload above the relay's limit (``MAX_MESSAGE``).
        """
        self._worker.publish(topic, _as_bytes(payload))

    def broadcast(self, payload: Payload) -> None:
        """Send ``payload`` to every connection of this server (all its workers)."""
        self._worker.broadcast(_as_bytes(payload))

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Run ``callback(*args)`` once, ``delay`` seconds from now (on this worker's loop).

        A callback that raises is dropped (counted in ``handler_errors``).
        """
        return self._worker.call_later(delay, callback, *args)

    def call_every(self, interval: float, callback: Callable[..., object], *args: Any) -> Timer:
        """Run ``callback(*args)`` every ``interval`` seconds until the timer is cancelled."""
        return self._worker.call_every(interval, callback, *args)

    def connection(self, fd: int, generation: int | None = None) -> Connection:
        """A handle on connection ``fd`` of this worker (for ``by_fd`` protocols): its
        current generation, or ``generation`` (a stale handle if it has moved on)."""
        if generation is None:
            return self._worker.connection(fd)
        return Connection(self._worker, fd, generation)

    def open_fds(self) -> list[int]:
        """This worker's open connections, by descriptor (for ``by_fd`` protocols)."""
        return self._worker.open_fds()

    def send_each(self, fds: list[int], data: bytes) -> None:
        """The same bytes to each of these open connections of this worker, fanned out in
        bounded slices like a publish (a heartbeat ping, say)."""
        self._worker.delivery.send_each(fds, data)

    def subscribers(self, topic: str) -> int:
        """Subscribers of ``topic`` in this worker."""
        return self._worker.topics.count(topic)

    @property
    def connections(self) -> int:
        """Open connections of this worker."""
        return self._worker.stats.open

    @property
    def worker(self) -> int:
        """This worker's slot (0 .. workers - 1)."""
        return self._worker.slot

    @property
    def workers(self) -> int:
        """How many workers this server has."""
        return self._worker.config.workers


def _as_bytes(data: object) -> bytes | bytearray | memoryview:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return data
    if isinstance(data, str):
        return data.encode()
    raise TypeError(f"expected bytes-like or str, not {type(data).__name__}")
