"""Publishes between the workers of one server: a datagram mailbox per worker.

Why not through the supervisor: it sleeps in ``sigtimedwait`` and owns no
event loop, and a hop through it would double every message's copies and
wake-ups.  Why not a shared-memory ring: it needs a lock or an atomic
compare-and-swap between processes, which ctypes cannot give without
compiled code, and a wake-up channel besides.

So each worker slot has a ``socketpair(AF_UNIX, SOCK_SEQPACKET)``, made by the
supervisor before it forks: the worker reads its *inbox* end; every other
worker writes to its *outbox* end.  ``SOCK_SEQPACKET`` keeps message
boundaries (one ``write`` is one message, never interleaved with another
writer's), is reliable and ordered, and reports ``EAGAIN`` when the reader's
queue is full.  A replacement worker takes over its slot's pair.

A publish is therefore ``workers - 1`` writes of the same encoded message.
When a mailbox is full the message waits in the sender, in a bounded queue
per destination, and goes out when the mailbox has room (``EPOLLOUT``); past
the bound the oldest queued message is dropped and counted
(``relay_dropped``).  Messages are at most :data:`MAX_MESSAGE` bytes, the
socket buffer the kernel grants; a larger publish is refused with
``ValueError``.

Wire format (one datagram): a kind byte (``P`` publish, ``B`` broadcast), the
topic's length (u16, big-endian), the topic in UTF-8, the payload.
"""

from __future__ import annotations

import os
import socket
import struct
from collections import deque
from collections.abc import Iterator
from typing import Final

__all__ = ["MAX_MESSAGE", "Mailboxes", "RelayLink", "decode", "encode"]

PUBLISH: Final = b"P"
BROADCAST: Final = b"B"
_HEAD: Final = struct.Struct(">cH")
_BUFFER: Final = 1 << 20  # requested socket buffer; the kernel may grant less
MAX_MESSAGE: Final = 200 * 1024  # payload + topic; fits the default net.core.wmem_max
QUEUE_LIMIT: Final = 1024  # messages queued per destination when its mailbox is full
READS_PER_TURN: Final = 64  # messages taken from the inbox per readiness event


def encode(kind: bytes, topic: str, payload: bytes | bytearray | memoryview) -> bytes:
    """One relay message; ``ValueError`` above :data:`MAX_MESSAGE`."""
    name = topic.encode()
    size = _HEAD.size + len(name) + len(payload)
    if size > MAX_MESSAGE:
        raise ValueError(
            f"a message of {len(payload)} bytes is above the relay's limit of "
            f"{MAX_MESSAGE - _HEAD.size - len(name)} for topic {topic!r}"
        )
    return _HEAD.pack(kind, len(name)) + name + bytes(payload)


def decode(message: bytes) -> tuple[bytes, str, bytes]:
    """``(kind, topic, payload)`` of one relay message."""
    kind, length = _HEAD.unpack_from(message)
    start = _HEAD.size
    topic = message[start : start + length].decode()
    return kind, topic, message[start + length :]


class Mailboxes:
    """The socket pairs of every worker slot, made before the workers are forked."""

    def __init__(self, workers: int) -> None:
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        for _ in range(workers):
            outbox, inbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            for sock in (outbox, inbox):
                sock.setblocking(False)
            outbox.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            inbox.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
            self.pairs.append((outbox, inbox))

    def link(self, slot: int) -> RelayLink:
        """What worker ``slot`` uses: its inbox and the others' outboxes."""
        inbox = self.pairs[slot][1].fileno()
        outboxes = [pair[0].fileno() for i, pair in enumerate(self.pairs) if i != slot]
        return RelayLink(inbox, outboxes)

    def close(self) -> None:
        for outbox, inbox in self.pairs:
            outbox.close()
            inbox.close()


class RelayLink:
    """One worker's end of the relay: send to the others, take what they sent."""

    def __init__(self, inbox: int, outboxes: list[int]) -> None:
        self.inbox = inbox
        self.outboxes = outboxes
        self.queued: dict[int, deque[bytes]] = {}  # outbox -> messages waiting for room
        self.dropped = 0

    def send(self, message: bytes) -> list[int]:
        """Write ``message`` to every other worker; the outboxes that now wait for room."""
        blocked: list[int] = []
        for fd in self.outboxes:
            waiting = self.queued.get(fd)
            if waiting:
                self._queue(fd, waiting, message)
                continue
            try:
                os.write(fd, message)
            except BlockingIOError:
                waiting = self.queued[fd] = deque()
                self._queue(fd, waiting, message)
                blocked.append(fd)
            except OSError:
                self.dropped += 1  # that slot's worker is being replaced: at most once
        return blocked

    def _queue(self, fd: int, waiting: deque[bytes], message: bytes) -> None:
        if len(waiting) >= QUEUE_LIMIT:
            waiting.popleft()
            self.dropped += 1
        waiting.append(message)

    def flush(self, fd: int) -> bool:
        """``EPOLLOUT`` on outbox ``fd``: send what waits; True once nothing does."""
        waiting = self.queued.get(fd)
        while waiting:
            try:
                os.write(fd, waiting[0])
            except BlockingIOError:
                return False
            except OSError:
                self.dropped += len(waiting)
                waiting.clear()
                break
            waiting.popleft()
        self.queued.pop(fd, None)
        return True

    def receive(self) -> Iterator[bytes]:
        """The messages in the inbox, at most :data:`READS_PER_TURN` (LT reports the rest)."""
        for _ in range(READS_PER_TURN):
            try:
                message = os.read(self.inbox, MAX_MESSAGE)
            except BlockingIOError:
                return
            if not message:
                return
            yield message
