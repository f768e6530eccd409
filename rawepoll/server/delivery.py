"""Delivery: publish and broadcast within a worker, across its siblings, in bounded slices.

The kernel has no call that sends to many sockets: a publish to N
subscribers is N ``write`` calls, and on loopback each one also runs the
receiver's TCP input in the writer's context (a few microseconds).  So the
per-subscriber Python work is kept to a token check and a ``write`` of the
**same** bytes object -- the frame is encoded once per publish per worker --
and a fan-out larger than :data:`SLICE` is spread over loop turns: after each
slice the worker goes back to ``epoll_wait`` (with a zero timeout), so accepts
and other traffic keep flowing during a publish to hundreds of thousands.

A fan-out walks a snapshot of the topic's subscriber tokens taken at publish
time (:meth:`rawepoll.server.topics.Topics.snapshot`); a subscriber that
closed since is skipped by its generation, one that subscribed since is not
reached.  Several fan-outs run in publish order, so each connection sees the
messages of one publisher in the order they were published.

Fan-outs wait in a queue of at most :data:`QUEUE_LIMIT`: publishes that
arrive faster than this worker can write them (from a broker, or from its
siblings) are not delivered here beyond it, and are counted
(``fanout_dropped``) -- memory stays bounded by the limit times the snapshot.

What a subscriber cannot take now waits in its pending output, up to
``max_pending`` bytes; past that the message is dropped and counted (the
default policy, ``drop``) or the connection closed (``close``): a broadcast
storm with subscribers that do not read keeps the server's memory bounded by
``max_pending`` per such connection.
"""

from __future__ import annotations

import os
from array import array
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from rawepoll.server import relay
from rawepoll.server.topics import Topics, check_topic, token_of

if TYPE_CHECKING:
    from rawepoll.server.loop import Worker

__all__ = ["SLICE", "Delivery"]

SLICE: Final = 4096  # deliveries per loop turn, over all fan-outs
QUEUE_LIMIT: Final = 4096  # fan-outs waiting in a worker; beyond, a publish is not delivered here
_FD_MASK: Final = 0xFFFFFFFF
_OPEN: Final = 1  # rawepoll.server.loop.OPEN (kept in step by a test)


class _Fanout:
    __slots__ = ("frame", "index", "tokens")

    def __init__(self, tokens: array[int], frame: bytes) -> None:
        self.tokens = tokens
        self.frame = frame
        self.index = 0


class Delivery:
    """One worker's topics, fan-outs and relay link."""

    def __init__(
        self,
        worker: Worker,
        fd_limit: int,
        frame: Callable[[str, bytes], bytes],
        link: relay.RelayLink | None,
    ) -> None:
        self.worker = worker
        self.frame = frame  # the handler's encoding of a published message
        self.link = link
        self.topics = Topics(fd_limit)
        self.fanouts: deque[_Fanout] = deque()
        self.broker_publish: Callable[[str, bytes], bool] | None = None  # set by the broker

    # -- subscriptions -----------------------------------------------------

    def subscribe(self, fd: int, generation: int, topic: str) -> bool:
        check_topic(topic)
        if not self.worker.is_current(fd, generation):
            return False
        return self.topics.subscribe(fd, token_of(generation, fd), topic)

    def unsubscribe(self, fd: int, generation: int, topic: str) -> bool:
        if not self.worker.is_current(fd, generation):
            return False
        return self.topics.unsubscribe(fd, topic)

    def topics_of(self, fd: int, generation: int) -> list[str]:
        if not self.worker.is_current(fd, generation):
            return []
        return self.topics.topics_of(fd)

    # -- publishing ----------------------------------------------------------

    def publish(self, topic: str, payload: bytes | bytearray | memoryview) -> None:
        """A publish made in this worker: every subscriber of this server (and of others,
        through the broker)."""
        check_topic(topic)
        payload = bytes(payload)
        message = relay.encode(relay.PUBLISH, topic, payload)  # checks the size first
        self.worker.stats.published += 1
        broker = self.broker_publish
        if broker is not None and broker(topic, payload):
            return  # the broker brings it back to every subscribed worker, this one included
        self.deliver(topic, payload)
        self._relay(message)

    def broadcast(self, payload: bytes | bytearray | memoryview) -> None:
        """Every connection of this server: this worker's and, through the relay, the others'."""
        payload = bytes(payload)
        message = relay.encode(relay.BROADCAST, "", payload)
        self.worker.stats.published += 1
        self.deliver_all(payload)
        self._relay(message)

    def _relay(self, message: bytes) -> None:
        if self.link is None:
            return
        for fd in self.link.send(message):
            self.worker.watch_writable(fd)
        self.worker.stats.relay_dropped = self.link.dropped

    def relayed(self) -> int:
        """The inbox is readable: deliver what the other workers published; how many."""
        assert self.link is not None
        taken = 0
        for message in self.link.receive():
            taken += 1
            kind, topic, payload = relay.decode(message)
            if kind == relay.BROADCAST:
                self.deliver_all(payload)
            else:
                self.deliver(topic, payload)
        return taken

    def catch_up(self, rounds: int = 16) -> None:
        """Before a publish from outside (the control socket): deliver what the other
        workers relayed here already, so that a client that waited for the answer to its
        previous publish (made in another worker) sees its messages in order here too."""
        if self.link is None:
            return
        for _ in range(rounds):
            if self.relayed() < relay.READS_PER_TURN:
                return

    def outbox_writable(self, fd: int) -> None:
        assert self.link is not None
        if self.link.flush(fd):
            self.worker.unwatch_writable(fd)
        self.worker.stats.relay_dropped = self.link.dropped

    # -- local delivery ------------------------------------------------------

    def deliver(self, topic: str, payload: bytes) -> None:
        """To this worker's subscribers of ``topic``: the frame encoded once, then fanned out."""
        tokens = self.topics.snapshot(topic)
        if tokens is None:
            return
        frame = self._encode(topic, payload)
        if frame is not None:
            self._start(tokens, frame)

    def deliver_all(self, payload: bytes) -> None:
        """To every open connection of this worker (a broadcast)."""
        worker = self.worker
        gens = worker.gens
        tokens = array("q", [token_of(gens[fd], fd) for fd in worker.open_fds()])
        if tokens:
            frame = self._encode("", payload)
            if frame is not None:
                self._start(tokens, frame)

    def send_each(self, fds: list[int], frame: bytes) -> None:
        """``frame`` to each of ``fds`` (open connections of this worker), as a fan-out."""
        gens = self.worker.gens
        tokens = array("q", [token_of(gens[fd], fd) for fd in fds])
        if tokens:
            self._start(tokens, frame)

    def _encode(self, topic: str, payload: bytes) -> bytes | None:
        try:
            frame = self.frame(topic, payload)
            if not isinstance(frame, bytes):
                frame = bytes(frame)
        except Exception as error:  # the handler's encoder failed: this message only
            self.worker.user_fault(-1, error, f"encoding a message to {topic!r}")
            return None
        return frame

    def _start(self, tokens: array[int], frame: bytes) -> None:
        if len(self.fanouts) >= QUEUE_LIMIT:  # publishes arrive faster than they go out
            self.worker.stats.fanout_dropped += 1
            return
        self.fanouts.append(_Fanout(tokens, frame))
        if len(self.fanouts) == 1 and len(tokens) <= SLICE:
            self.fan_out()  # a small one goes out now, in this turn

    def fan_out(self) -> None:
        """Up to :data:`SLICE` deliveries, oldest fan-out first; the rest next turn."""
        worker = self.worker
        flags = worker.flags
        gens = worker.gens
        pending = worker.pending
        write = os.write
        stats = worker.stats
        budget = SLICE
        delivered = out = 0
        while self.fanouts and budget:
            job = self.fanouts[0]
            tokens = job.tokens
            frame = job.frame
            size = len(frame)
            start = job.index
            end = min(len(tokens), start + budget)
            for k in range(start, end):
                token = tokens[k]
                fd = token & _FD_MASK
                if gens[fd] != token >> 32 or not flags[fd] & _OPEN:
                    continue  # closed since the publish (its number may be a stranger's now)
                if fd in pending:
                    if worker.queue(fd, frame):
                        delivered += 1
                    continue
                try:
                    sent = write(fd, frame)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    worker.close(fd, "error")
                    continue
                out += sent
                delivered += 1
                if sent < size:
                    worker.keep_pushed(fd, frame, sent)
            budget -= end - start
            if end == len(tokens):
                self.fanouts.popleft()
            else:
                job.index = end
        stats.delivered += delivered
        stats.bytes_out += out
