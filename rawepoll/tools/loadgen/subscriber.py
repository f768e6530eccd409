"""One load process of ``rawepoll bench --broadcast``: subscribers that verify every delivery.

A :class:`Subscribers` engine opens its share of the connections as the echo
engine does (non-blocking connects, at most ``MAX_OPENING`` at once, source
addresses, stalls swept) and subscribes each to the run's topic:

* over TCP (:class:`~rawepoll.server.handler.LinePubSubHandler`): it sends
  ``SUB <topic>\\n``; the connection is *established* once ``OK SUB <topic>\\n``
  is back, verified byte for byte;
* over WebSocket (rawepoll's default application): the opening handshake to
  ``/topic/<topic>`` (:class:`~rawepoll.tools.loadgen.wsengine.Upgrades`); the
  server subscribes the connection before it answers, so the connection is
  established once the ``101`` is back and checked.

It then says ``ready`` and listens until every published message has *settled*
on every one of its connections -- arrived, known lost, or its connection
failed -- or the parent says ``stop``.  Every read is cut into deliveries of
one fixed length (:class:`~rawepoll.tools.loadgen.stamp.Deliveries`), each
compared byte for byte with the delivery its own number and publish time say
it is; then, per connection:

* the message due next: delivered; its delivery time ``arrival - publish`` is
  counted (whole µs, as the echo engine counts round trips), and the arrival
  is the message's latest so far;
* a later one: the ones skipped are **lost** (and remembered: one that comes
  after all is **reordered**, and no longer lost);
* an earlier one not skipped: a **duplicate**;
* a number never published, a publish time that differs from the one the same
  message had on another connection, or bytes that are no delivery: a
  **mismatch**, and the connection is closed (its stream can no longer be
  cut right).

Over WebSocket a control frame may come between deliveries (a heartbeat
ping): it is answered (a masked pong) and is no delivery.

The parent paces its publishes on :class:`~rawepoll.tools.loadgen.control.Settled`:
per message, a count of the connections that have settled it, and the first
message not yet settled everywhere; each process says how far it got, once
per loop turn when that moved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import ClassVar, Final

from rawepoll.server.websocket import frames
from rawepoll.tools.loadgen.channel import Channel
from rawepoll.tools.loadgen.control import Counts, Done, Fanout, Ready, Report, Settled
from rawepoll.tools.loadgen.engine import (
    _READABLE,
    CONNECTING,
    HANDSHAKING,
    OPEN,
    OPENING,
    QUIET_S,
    TICK_S,
    Engine,
    _clock,
)
from rawepoll.tools.loadgen.plan import Plan, Share
from rawepoll.tools.loadgen.stamp import Deliveries
from rawepoll.tools.loadgen.wsclient import MaskKeys, control_length
from rawepoll.tools.loadgen.wsengine import HandshakeError, Upgrades, host_header
from rawepoll.unix import EPOLLIN, EPOLLOUT

__all__ = ["READ_SIZE", "Subscribers"]

READ_SIZE: Final = 65536  # bytes per read of a subscriber
_TEXT_FIN: Final = 0x81  # the first byte of a delivery over WebSocket


class Subscribers(Engine):
    """One process's subscribers: subscribe, then verify and time every delivery."""

    stages: ClassVar[dict[int, str]] = {
        CONNECTING: "connect",
        HANDSHAKING: "WebSocket handshake",
        OPENING: "subscription",
    }

    def __init__(self, plan: Plan, share: Share, channel: Channel) -> None:
        super().__init__(plan, share, channel)
        spec = plan.spec
        self.websocket = spec.protocol == "websocket"
        self.deliveries = Deliveries(spec.topic, spec.size, spec.protocol)
        self.upgrades = Upgrades(host_header(plan), f"/topic/{spec.topic}")
        self.keys = MaskKeys()  # for pongs
        self.ack = b"OK SUB %s\n" % spec.topic.encode()
        self.unit = len(self.ack)  # the ramp verifies the ack as the echo engine verifies an echo
        self.total = spec.messages or 0  # messages the parent will publish
        # Per message: connections that settled it, the last arrival, the publish time seen.
        self.got = [0] * self.total
        self.latest = [0] * self.total
        self.stamp = [0] * self.total
        self.settled = 0  # messages settled on every connection of this process
        self.partial: dict[int, bytes] = {}  # fd -> the start of a delivery (or control frame)
        self.skipped: dict[int, set[int]] = {}  # fd -> messages it skipped that may yet come
        self.delivered = self.lost = self.duplicates = self.reordered = 0
        self.first_ns = self.last_ns = 0

    # -- subscribing -------------------------------------------------------------

    def _begin(self, fd: int) -> None:
        """Connected: subscribe (``SUB``, or the upgrade to ``/topic/<topic>``)."""
        self.ep.modify(fd, EPOLLIN)
        if self.websocket:
            self.state[fd] = HANDSHAKING
            self._put(fd, self.upgrades.request(fd))
            return
        self.state[fd] = OPENING
        self.expect[fd] += self.ack
        self.stamps[fd].append(_clock())  # the ack is the ramp's one message in flight
        self._put(fd, b"SUB %s\n" % self.spec.topic.encode())

    def _ramp_event(self, fd: int, mask: int) -> None:
        """As the echo engine's, but a handshake's answer is checked, and what reaches a
        subscribed connection (a ping, while others still subscribe) is read as deliveries."""
        kind = self.state[fd]
        if fd == self.control or kind not in (HANDSHAKING, OPEN):
            super()._ramp_event(fd, mask)
            return
        if mask & EPOLLOUT and not self.flush(fd):
            return
        if mask & _READABLE:
            if kind == HANDSHAKING:
                self._answer(fd)
            else:
                self._take(fd)

    def _answer(self, fd: int) -> None:
        try:
            if not self.upgrades.answer(self.socks[fd]):
                return
        except HandshakeError as error:
            self._fail(fd, str(error))
            return
        self._establish(fd)  # subscribed before the server answered

    def _unexpected(self, fd: int, data: bytes) -> bytes:
        """The answer to ``SUB`` is not ``OK SUB <topic>``: the server refused (an error)."""
        got = bytes(self.ack[: self.head[fd]]) + data
        if b"\n" not in got:
            with contextlib.suppress(OSError):  # the rest of its line, if it is there
                got += os.read(fd, 80)
        got = got.split(b"\n")[0] + b"\n" if b"\n" in got else got
        self._fail(fd, f"subscribing: the server answered {got[:80]!r}, not {self.ack!r}")
        return b""

    def _close(self, fd: int) -> None:
        self.upgrades.forget(fd)
        self.partial.pop(fd, None)
        self.skipped.pop(fd, None)
        super()._close(fd)

    def _fail(self, fd: int, why: str, *, mismatch: bool = False) -> None:
        """As the echo engine's; what a subscriber had not got yet is settled (by its failure)."""
        if self.state[fd] == OPEN:
            got = self.got
            for seq in range(self.seq[fd], self.total):
                got[seq] += 1
            self.seq[fd] = self.total
        super()._fail(fd, why, mismatch=mismatch)

    # -- the process -------------------------------------------------------------

    def run(self) -> None:
        """Subscribe, say ready, listen until every message settled (or stop), report."""
        started = _clock()
        try:
            self.ramp()
            if self.channel.eof:
                return
            self.channel.send(Ready(self._counts(), ramp_s=(_clock() - started) / 1e9))
            cpu_start, listening = time.process_time(), _clock()
            self.listen()
            if not self.stopping:
                self.quiet_check()
            if self.channel.eof:
                return
            seconds = (_clock() - listening) / 1e9
            self.channel.send(Done(self._last_report(seconds, time.process_time() - cpu_start)))
        finally:
            self.close()

    def _last_report(self, seconds: float, cpu_s: float) -> Report:
        fanout = Fanout(
            lost=self.lost,
            duplicates=self.duplicates,
            reordered=self.reordered,
            behind=sum(self.total - self.seq[fd] for fd in self.live),
            subscribers=len(self.live),
            first_ns=self.first_ns,
            last_ns=self.last_ns,
            latest=tuple(self.latest),
        )
        return Report(
            counts=self._counts(),
            seconds=seconds,
            cpu_s=cpu_s,
            problems=tuple(self.problems),
            histogram=self.latencies.encode(),
            fanout=fanout,
        )

    def _counts(self) -> Counts:
        return dataclasses.replace(super()._counts(), messages=self.delivered)

    def listen(self) -> None:
        """Read and verify deliveries until every message settled here, or a stop."""
        wait, ready, events = self.ep.wait, self.events.ready, self.events
        control, state = self.control, self.state
        while self.settled < self.total and not self.stopping:
            n = wait(events, TICK_S)
            for fd, mask in ready(n):
                if fd == control:
                    self._command()
                elif mask & EPOLLOUT and not self.flush(fd):
                    continue
                elif state[fd] == OPEN and mask & _READABLE:
                    self._take(fd)
            self._advance()
            self.latencies.flush_if_large()  # bounded memory: distinct µs values into the histogram
            self._report(_clock())

    def quiet_check(self) -> None:
        """One short last wait: a delivery that comes now is one too many."""
        n = self.ep.wait(self.events, QUIET_S)
        for fd, _ in list(self.events.ready(n)):
            if fd != self.control and self.state[fd] == OPEN:
                self._take(fd)

    def _advance(self) -> None:
        """Move the settled mark past every message all subscribers have settled; say so."""
        settled, got, everyone = self.settled, self.got, self.established
        while settled < self.total and got[settled] >= everyone:
            settled += 1
        if settled != self.settled:
            self.settled = settled
            self.channel.send(Settled(settled))

    # -- deliveries --------------------------------------------------------------

    def _take(self, fd: int) -> None:
        """Read once; verify and count every whole delivery; keep the start of the next."""
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as error:
            self._fail(fd, f"read: {error.strerror}")
            return
        if not data:
            self._fail(fd, f"the server closed the connection after {self.seq[fd]} message(s)")
            return
        now = _clock()
        rest = self.partial.pop(fd, None)
        if rest is not None:
            data = rest + data
        end = self._units(fd, data, now)
        if 0 <= end < len(data):
            self.partial[fd] = data[end:]

    def _units(self, fd: int, data: bytes, now: int) -> int:
        """Every whole delivery (or control frame) of ``data``: where the rest starts, -1 if the
        connection failed."""
        unit, read = self.deliveries.unit, self.deliveries.read
        pos, end = 0, len(data)
        while pos < end:
            if self.websocket and data[pos] != _TEXT_FIN:
                after = self._control(fd, data, pos)
                if after <= pos:
                    return after  # failed (-1), or a control frame cut short: wait for its rest
                pos = after
                continue
            if end - pos < unit:
                return pos
            chunk = data[pos : pos + unit]
            found = read(chunk)
            if found is None:
                why = f"connection {self.conn[fd]}: {self.deliveries.describe(chunk)}"
                self._fail(fd, why, mismatch=True)
                return -1
            if not self._deliver(fd, found[0], found[1], now):
                return -1
            pos += unit
        return pos

    def _control(self, fd: int, data: bytes, pos: int) -> int:
        """A control frame at ``data[pos]``: act on it; where it ends (``pos``: cut; -1: failed)."""
        try:
            length = control_length(data, pos)
        except frames.FrameError as error:
            why = f"connection {self.conn[fd]}: not a delivery: {error.reason}"
            self._fail(fd, why, mismatch=True)
            return -1
        if length is None or len(data) - pos < length:
            return pos
        opcode, payload = data[pos] & 0x0F, data[pos + 2 : pos + length]
        if opcode == frames.PING:
            key = self.keys.take().to_bytes(4, "little")
            if not self._put(fd, frames.encode_masked(frames.PONG, payload, key)):
                return -1
        elif opcode == frames.CLOSE:
            self._fail(fd, f"the server sent a close frame after {self.seq[fd]} message(s)")
            return -1
        return pos + length

    def _deliver(self, fd: int, seq: int, ns: int, now: int) -> bool:
        """Count one verified delivery of message ``seq``; False if it failed the connection."""
        if seq >= self.total:
            why = f"message {seq} arrived; only {self.total} are published"
            self._fail(fd, f"connection {self.conn[fd]}: {why}", mismatch=True)
            return False
        due = self.seq[fd]
        if seq == due:
            self.seq[fd] = due + 1
            self.got[seq] += 1
        elif not self._out_of_turn(fd, seq, due):
            return True  # a duplicate, counted
        stamp = self.stamp[seq]
        if stamp != ns:
            if stamp:
                why = f"message {seq} says it was published at {ns}, another delivery said {stamp}"
                self._fail(fd, f"connection {self.conn[fd]}: {why}", mismatch=True)
                return False
            self.stamp[seq] = ns
        self.latest[seq] = now
        us = (now - ns) // 1000
        counts = self.latencies.counts
        counts[us] = counts.get(us, 0) + 1
        self.delivered += 1
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        return True

    def _out_of_turn(self, fd: int, seq: int, due: int) -> bool:
        """Message ``seq`` came when ``due`` was due: whether it is a delivery to time.

        A later one (the ones between are lost, unless they come later), or
        one of those coming later (reordered): yes.  A duplicate: no, counted.
        """
        if seq > due:
            self.lost += seq - due
            self.skipped.setdefault(fd, set()).update(range(due, seq))
            got = self.got
            for settled in range(due, seq + 1):
                got[settled] += 1
            self.seq[fd] = seq + 1
            return True
        skipped = self.skipped.get(fd)
        if skipped is not None and seq in skipped:
            skipped.discard(seq)
            self.lost -= 1
            self.reordered += 1
            return True
        self.duplicates += 1
        return False
