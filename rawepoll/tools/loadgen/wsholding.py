"""One load process of ``rawepoll c1m --protocol websocket``: subscribers each verified by an echo.

:class:`EchoedSubscribers` is :class:`~rawepoll.tools.loadgen.subscriber.Subscribers`
over WebSocket, with a step added at each end of a connection's life:

* **open** -- the opening handshake to ``/topic/<topic>`` (rawepoll's default
  application subscribes the connection before it answers), then message 0
  of the echo run as a masked binary frame with a fresh key, whose echo frame
  must come back byte for byte, header included
  (:class:`~rawepoll.tools.loadgen.wsclient.Framing`).  Only then is the
  connection *established*: upgraded, subscribed, and served both ways.  The
  server runs without a heartbeat (``--ping-interval 0``), so any other byte
  before the echo is a mismatch;
* **listen** -- every published message is verified and timed exactly as by
  :class:`Subscribers` (the delivery a message's number and publish time say,
  byte for byte; lost, duplicated, reordered counted; the delivery time is
  arrival minus publish time, ``CLOCK_MONOTONIC``).  The load processes share
  the machine's cores with the server's fan-out, so what they spend per
  delivery slows the broadcast they measure; three things keep it small:

  - *the known delivery*: one message to a million subscribers is the same
    bytes a million times.  A read of one delivery's length that is byte for
    byte the delivery verified last, and the message the connection is due,
    is counted in place (:meth:`EchoedSubscribers._batch`), not parsed and
    rebuilt by :meth:`Deliveries.read <rawepoll.tools.loadgen.stamp.Deliveries.read>`
    again; any other read is verified in full;
  - *batches*: a wait that found fewer than :data:`BATCH` readable
    connections is followed by a pause, so that deliveries queue up
    meanwhile: a hundredth (:data:`PAUSE_SHARE`) of the time since the
    publish, between :data:`MIN_PAUSE_S` and :data:`MAX_PAUSE_S`.  Woken for
    every few deliveries, a process would cost a context switch, a wait and a
    pass over its bookkeeping per handful, and each write of the server would
    wake a waiter; and the slower the fan-out, the fewer deliveries each
    wake-up finds, so a fixed pause would cost most CPU exactly when the
    machine has least to spare.  An arrival is taken late by at most about
    1 % of its delivery time (plus the reading);
  - *buckets*: delivery times spread over seconds make nearly every count a
    value of its own, and each would cost a pure-Python
    ``HdrHistogram.record_value``; :class:`BucketedLatencies` sums the counts
    of one bucket of the histogram (its own precision, 3 significant digits)
    first, so the percentiles are the same and a process records a few
    thousand values, not one per delivery;

* **hold** -- once every message has settled here, the connections stay open
  and watched until the parent says ``stop``: a delivery that comes now is a
  duplicate, any other byte a mismatch, an end-of-file or a reset an error.
  So "received exactly once" holds until the connections are released, not
  only until the last one arrived.

Used through :class:`~rawepoll.tools.loadgen.workers.Holding` with
``engine=EchoedSubscribers`` and a broadcast spec (``protocol="websocket"``,
``broadcast=True``, the ``topic``, the server's ``control`` socket, and
``messages``, the number the parent will publish).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from typing import ClassVar, Final

from rawepoll.tools.loadgen.channel import Channel
from rawepoll.tools.loadgen.engine import (
    _READABLE,
    CONNECTING,
    HANDSHAKING,
    OPEN,
    OPENING,
    TICK_S,
    _clock,
)
from rawepoll.tools.loadgen.latency import Latencies
from rawepoll.tools.loadgen.plan import Plan, Share
from rawepoll.tools.loadgen.subscriber import Subscribers
from rawepoll.tools.loadgen.wsclient import Framing
from rawepoll.tools.loadgen.wsengine import HandshakeError
from rawepoll.unix import EPOLLIN, EPOLLOUT

__all__ = [
    "BATCH",
    "MAX_OPENING",
    "MAX_PAUSE_S",
    "MIN_PAUSE_S",
    "PAUSE_SHARE",
    "BucketedLatencies",
    "EchoedSubscribers",
]

_HOLD_WAIT_S: Final = 10 * TICK_S  # the longest wait while holding: how often a stop is seen
BATCH: Final = 256  # a wait that found fewer readable connections than this is followed by ...
PAUSE_SHARE: Final = 100  # ... a pause of the time since the publish / PAUSE_SHARE, ...
MIN_PAUSE_S: Final = 0.001  # ... at least this ...
MAX_PAUSE_S: Final = 0.05  # ... and at most this
MAX_OPENING: Final = 128  # connections being opened at once, per process (the echo engine: 512)


class BucketedLatencies(Latencies):
    """:class:`Latencies` whose counts go to the histogram a bucket at a time.

    HdrHistogram keeps a value of ``bits`` significant bits exact and drops
    the lower bits of a longer one (3 significant digits: 11 bits); a value
    is recorded as the lowest of its bucket, as the histogram itself would
    store it.  Counts of one bucket are summed first, then recorded once.
    """

    __slots__ = ("bits",)

    def __init__(self) -> None:
        super().__init__()
        histogram = self.histogram
        self.bits = histogram.sub_bucket_count.bit_length() - 1 + histogram.unit_magnitude

    def flush(self) -> None:
        counts, bits = self.counts, self.bits
        buckets: dict[int, int] = {}
        for value, count in counts.items():
            shift = value.bit_length() - bits
            lowest = value >> shift << shift if shift > 0 else value
            buckets[lowest] = buckets.get(lowest, 0) + count
        counts.clear()
        counts.update(buckets)
        super().flush()


class EchoedSubscribers(Subscribers):
    """One process's WebSocket subscribers: handshake, one verified echo, then deliveries."""

    stages: ClassVar[dict[int, str]] = {
        CONNECTING: "connect",
        HANDSHAKING: "WebSocket handshake",
        OPENING: "echo of message 0",
    }

    def __init__(self, plan: Plan, share: Share, channel: Channel) -> None:
        super().__init__(plan, share, channel)
        if not self.websocket:
            raise ValueError("EchoedSubscribers subscribe over WebSocket: protocol='websocket'")
        self.framing = Framing(plan.spec.size)
        self.unit = self.framing.unit  # the ramp verifies message 0's echo frame
        self.latencies = BucketedLatencies()
        # The delivery verified last, as received, and what it is (the known delivery).
        self.known: bytes | None = None
        self.known_seq = self.known_ns = 0

    # -- the echo at open ----------------------------------------------------------

    def _answer(self, fd: int) -> None:
        """The answer to the upgrade: once it is right, message 0 goes out."""
        try:
            if not self.upgrades.answer(self.socks[fd]):
                return
        except HandshakeError as error:
            self._fail(fd, str(error))
            return
        self.state[fd] = OPENING  # the ramp now verifies the echo, as the echo engine does
        self.send(fd, 1, _clock())

    def send(self, fd: int, count: int, now: int) -> bool:
        """The next ``count`` messages of ``fd`` as masked frames; their echo frames are
        what must come back.  False if the connection failed."""
        first = self.seq[fd]
        self.seq[fd] = first + count
        message = self.payloads.message
        payloads = [message(self.conn[fd], seq) for seq in range(first, first + count)]
        sent, echoes = self.framing.frames(payloads, self.keys)
        self.expect[fd] += echoes
        self.stamps[fd].extend([now] * count)
        return self._put(fd, sent)

    def _unexpected(self, fd: int, data: bytes) -> bytes:
        """A read that does not continue the echo of message 0: a mismatch, said where."""
        why = self.framing.describe(
            data,
            self.expect[fd][: len(data)],
            conn=self.conn[fd],
            seq=self.seq[fd] - len(self.stamps[fd]),
            into=self.head[fd],
        )
        self._fail(fd, why, mismatch=True)
        return b""

    def _establish(self, fd: int) -> None:
        """The echo came back right: from now on ``seq`` is the published message due next."""
        self.seq[fd] = 0
        super()._establish(fd)

    def _open_more(self, todo: deque[int], retry: deque[tuple[int, int, int]]) -> None:
        """Start connects until :data:`MAX_OPENING` are under way (retries that are due first).

        Fewer than the echo engine's 512: a WebSocket connection takes three
        round trips (connect, upgrade, echo) and about twice a TCP one's server
        CPU, and 51 processes with 512 each keep ~26,000 connections in flight
        -- seconds of queue in front of a server establishing a few thousand a
        second, against a bound of :data:`~rawepoll.tools.loadgen.plan.STALL_S`
        from connect to verified echo (measured: 347 of a million failed so on a
        busy machine).  128 each still keep every worker's accept queue full.
        """
        now = _clock()
        while len(self.opening) < MAX_OPENING:
            if retry and retry[0][0] <= now:
                _, conn, since = retry.popleft()
            elif todo:
                conn, since = todo.popleft(), now
            else:
                return
            self._open(conn, since, retry)

    # -- deliveries ------------------------------------------------------------------

    def listen(self) -> None:
        """Read and verify deliveries until every message settled here, or a stop; in
        batches (see the module docstring)."""
        wait, ready, events = self.ep.wait, self.events.ready, self.events
        while self.settled < self.total and not self.stopping:
            n = wait(events, TICK_S)
            self._batch(ready(n))
            self._advance()
            self.latencies.flush_if_large()  # bounded memory: distinct values to the histogram
            now = _clock()
            self._report(now)
            if 0 < n < BATCH:
                time.sleep(self._pause(now))  # more deliveries are on their way: let them queue

    def _pause(self, now: int) -> float:
        """Seconds to let deliveries queue up: a share of the time since the publish."""
        since = (now - self.known_ns) / 1e9 if self.known is not None else 0.0
        return min(MAX_PAUSE_S, max(MIN_PAUSE_S, since / PAUSE_SHARE))

    def _batch(self, ready: Iterator[tuple[int, int]]) -> None:
        """The events of one wait.

        The common case is counted here, in place: only ``EPOLLIN``, on a
        subscriber with nothing kept, whose read of one delivery's length is
        byte for byte the delivery verified last, and the message it is due --
        what :meth:`Subscribers._deliver` does for a delivery in turn, without
        a call.  Every other read goes the general way (:meth:`_received`),
        every other event too (:meth:`_event`).
        """
        state, partial, seq, got, latest = self.state, self.partial, self.seq, self.got, self.latest
        counts = self.latencies.counts
        counted, read, clock, unit = counts.get, os.read, _clock, self.deliveries.unit
        known, known_seq, known_ns = self.known, self.known_seq, self.known_ns
        taken = last = 0
        for fd, mask in ready:
            if mask != EPOLLIN or state[fd] != OPEN or fd in partial:
                self._event(fd, mask)
            else:
                try:
                    data = read(fd, unit)
                except BlockingIOError:
                    continue
                except OSError as error:
                    self._fail(fd, f"read: {error.strerror}")
                    continue
                now = clock()
                if data == known and seq[fd] == known_seq:  # verified before, and due now
                    seq[fd] = known_seq + 1
                    got[known_seq] += 1
                    latest[known_seq] = last = now
                    us = (now - known_ns) // 1000
                    counts[us] = counted(us, 0) + 1
                    taken += 1
                    continue
                self._received(fd, data, now)
            known, known_seq, known_ns = self.known, self.known_seq, self.known_ns
        if taken:
            self.delivered += taken
            self.last_ns = max(self.last_ns, last)  # first_ns: set by the delivery that was known

    def _event(self, fd: int, mask: int) -> None:
        """One event the general way: a command, a flush, a read of what there is."""
        if fd == self.control:
            self._command()
        elif mask & EPOLLOUT and not self.flush(fd):
            return
        elif self.state[fd] == OPEN and mask & _READABLE:
            self._take(fd)

    def _received(self, fd: int, data: bytes, now: int) -> None:
        """A read that is not the delivery verified last: cut into deliveries and verified as
        :meth:`Subscribers._take` does (the start of a cut one is kept)."""
        if not data:
            self._fail(fd, f"the server closed the connection after {self.seq[fd]} message(s)")
            return
        end = self._units(fd, data, now)
        if 0 <= end < len(data):
            self.partial[fd] = data[end:]

    def _deliver(self, fd: int, seq: int, ns: int, now: int) -> bool:
        """A delivery verified the general way: counted, and remembered for :meth:`_batch`."""
        if not super()._deliver(fd, seq, ns, now):
            return False
        if (seq, ns) != (self.known_seq, self.known_ns) or self.known is None:
            self.known = self.deliveries.delivery(seq, ns)  # what Deliveries.read compared it to
            self.known_seq, self.known_ns = seq, ns
        return True

    # -- the hold after the deliveries --------------------------------------------

    def quiet_check(self) -> None:
        """Every message settled here: hold the connections until ``stop``.

        Whatever arrives meanwhile is one too many: a delivery already had is a
        duplicate, anything else a mismatch (:meth:`Subscribers._take`).
        """
        wait, ready, events = self.ep.wait, self.events.ready, self.events
        control, state = self.control, self.state
        while not self.stopping:
            n = wait(events, _HOLD_WAIT_S)
            for fd, mask in ready(n):
                if fd == control:
                    self._command()
                elif mask & EPOLLOUT and not self.flush(fd):
                    continue
                elif state[fd] == OPEN and mask & _READABLE:
                    self._take(fd)
            self._report(_clock())
