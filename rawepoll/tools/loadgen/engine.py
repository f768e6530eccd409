"""One load process: its share of the connections on one :class:`rawepoll.Epoll`.

A load process lives through four loops, each bounded:

1. **ramp** -- open the connections without blocking: ``connect()`` on a
   non-blocking socket returns ``EINPROGRESS`` (TCP) and the kernel reports the
   outcome as ``EPOLLOUT`` (with ``EPOLLERR`` on failure, the reason in
   ``SO_ERROR``).  At most :data:`MAX_OPENING` connections are being opened
   at once, so a burst never overflows the server's accept queue; a Unix
   socket whose queue is full says ``EAGAIN`` and is tried again shortly.
   Each connection sends message 0 as soon as it is connected and is
   *established* once that echo is back and verified.
2. **idle** -- wait for the parent's ``go``, so every process starts the
   measured traffic together, after every connection is up.
3. **traffic** -- each connection keeps ``pipeline`` messages in flight:
   every verified echo releases the next message at once (closed loop).  The
   loop ends when the duration is over or the message budget is spent and
   every message in flight has come back.
4. **quiet check** -- a last short wait: a byte arriving now was never sent.

**Verification** (see :mod:`rawepoll.tools.loadgen.payload` for what the messages
hold): each connection keeps, in one ``bytearray``, every byte it sent whose
echo has not yet come back, oldest first.  Every read asks for at most one
byte more than that and must be a prefix of it (``bytearray.startswith``,
one ``memcmp``); the verified bytes are then cut off the front.  A
difference, or a byte beyond what was sent, is a *mismatch*; the connection
can no longer be aligned with its stream and is closed.

**Errors** close one connection and are counted: a failed connect, a reset,
end-of-file while the run goes on, no progress for :data:`STALL_S` seconds
with messages in flight (swept once a second).

**Cost.**  Per-connection state lives in lists indexed by fd (no object per
connection besides its socket, its ``bytearray`` and its deque of send
times); a latency is counted in a dict of whole microseconds (see
:mod:`rawepoll.tools.loadgen.latency`).  The traffic has two loops over one
:class:`Flow`: :meth:`Engine.plain_loop` spells each step out as a call
(receive, verify, count, send the next), and serves the paced rounds;
:meth:`Engine.closed_loop`, the measured closed loop of ``rawepoll bench``,
runs the same steps written out in place, which saves a few calls per message
(measured: see ``docs/loadgen.md``).  The tests run both on the same inputs
and compare what they sent, verified and counted.
"""

from __future__ import annotations

import errno
import gc
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, ClassVar, Final, NoReturn

from rawepoll.epoll import Epoll
from rawepoll.events import EventArray
from rawepoll.tools.loadgen.channel import Channel
from rawepoll.tools.loadgen.control import (
    Counts,
    Done,
    Failed,
    Go,
    Progress,
    Ready,
    Report,
    Round,
    Stop,
)
from rawepoll.tools.loadgen.latency import Latencies
from rawepoll.tools.loadgen.payload import Payloads
from rawepoll.tools.loadgen.plan import FD_RESERVE, STALL_S, Plan, Share
from rawepoll.unix import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP

__all__ = ["Engine", "Flow", "child_main"]

MAX_OPENING: Final = 512  # connections being opened at once, per process
READ_MAX: Final = 262144  # bytes per read at most
EVENTS: Final = 1024  # epoll events per wait
TICK_S: Final = 0.05  # longest wait: how often deadlines and commands are looked at
REPORT_S: Final = 0.5  # progress reports to the parent
SWEEP_S: Final = 1.0  # stall checks
STOP_DRAIN_S: Final = 1.0  # after a stop command, wait this long for messages in flight
QUIET_S: Final = 0.02  # the last wait, for bytes nobody sent
RETRY_S: Final = 0.01  # a Unix socket whose accept queue was full is tried again after this
MAX_PROBLEMS: Final = 5  # problem descriptions kept per process

# Connection states (one byte per fd).
CONNECTING: Final = 1  # non-blocking connect in progress: EPOLLOUT brings the outcome
OPENING: Final = 2  # connected, message 0 sent, its echo not verified yet
OPEN: Final = 3  # established
HANDSHAKING: Final = 4  # connected, a WebSocket upgrade request sent, its answer not read yet

_READABLE: Final = EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP
_STALL_NS: Final = int(STALL_S * 1e9)
_SWEEP_NS: Final = int(SWEEP_S * 1e9)
_NEVER: Final = 1 << 62  # a time (ns) that does not come; also "no message budget"
_IP_BIND_ADDRESS_NO_PORT: Final = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

_clock = time.monotonic_ns


@dataclass(eq=False)
class Flow:
    """One round of measured traffic: what it may still send, what it did, when it ends.

    Times are :func:`time.monotonic_ns` values.
    """

    start: int  # the round's go
    deadline: int  # no new message after this
    budget: int  # messages this process may still send
    interval: int  # ns between an echo and the next message; 0: at once (closed loop)
    sending: bool = True  # False once the deadline passed, the budget is spent or a stop came
    sent: int = 0
    completed: int = 0  # ... and verified
    stop_at: int = _NEVER  # after a stop command: the end of the drain
    next_sweep: int = 0
    paced: deque[tuple[int, int, int]] = field(default_factory=deque)  # (when, fd, count)

    def due(self, next_report: int) -> int:
        """The next time :meth:`Engine.tick` has something to do."""
        return min(self.deadline, self.next_sweep, self.stop_at, next_report)


class Engine:
    """One process's connections, from connect to the last verified echo."""

    # What a connection that stalls before it is established was waiting for, by state.
    stages: ClassVar[dict[int, str]] = {
        CONNECTING: "connect",
        HANDSHAKING: "WebSocket handshake",
        OPENING: "echo of message 0",
    }

    def __init__(self, plan: Plan, share: Share, channel: Channel) -> None:
        self.plan = plan
        self.spec = plan.spec
        self.share = share
        self.channel = channel
        self.control = channel.fileno()
        self.payloads = Payloads(plan.spec.size)
        self.unit = plan.spec.size  # bytes of one message's echo (a WebSocket frame is more)
        self.latencies = Latencies()
        self.ep = Epoll()
        self.events = EventArray(EVENTS)
        self.ep.register(self.control, EPOLLIN)
        # Per fd; a slot is in use while state[fd] != 0.  The kernel hands out the
        # lowest free descriptor, so the lists need little more room than the
        # descriptors open now plus our connections; _track() grows them if not.
        slots = len(os.listdir("/proc/self/fd")) + share.conns + FD_RESERVE
        self.socks: dict[int, socket.socket] = {}
        self.state = bytearray(slots)
        self.conn = [0] * slots  # the connection's number in the run
        self.expect: list[Any] = [None] * slots  # bytearray: sent, echo not verified yet
        self.stamps: list[Any] = [None] * slots  # deque: send time (ns) per message in flight
        self.head = [0] * slots  # bytes of the oldest message in flight already verified
        self.seq = [0] * slots  # the next message's number
        self.unsent: list[Any] = [None] * slots  # bytearray the kernel did not take yet
        self.last = [0] * slots  # last progress (ns): connect started or bytes received
        self.live: set[int] = set()  # OPEN connections
        self.opening: dict[int, int] = {}  # CONNECTING/OPENING fd -> when its connect started
        # Counters.
        self.connected = 0
        self.established = 0
        self.errors = 0
        self.mismatches = 0
        self.completed = 0  # messages verified in the measured traffic
        self.abandoned = 0  # ... in flight on a connection that failed
        self.problems: list[str] = []
        # Commands.
        self.go = False
        self.more = False  # keep the connections for another round after this one
        self.round_seconds: float | None = None  # this round's duration, if go gave one
        self.round_interval = 0  # ns between an echo and the next message; 0: at once
        self.stopping = False
        self.next_report = 0

    # -- the process ------------------------------------------------------

    def run(self) -> None:
        """Ramp, then rounds of traffic until one ends the process; report to the parent.

        A ``go`` that says ``more`` keeps the connections afterwards: the
        process reports the round (:class:`~rawepoll.tools.loadgen.control.Round`)
        and waits for the next ``go`` or ``stop``; the last report is always
        :class:`~rawepoll.tools.loadgen.control.Done`.
        """
        started = _clock()
        try:
            self.ramp()
            if self.channel.eof:
                return  # the parent is gone: nobody to report to
            self.channel.send(Ready(self._counts(), ramp_s=(_clock() - started) / 1e9))
            while self._round():
                self._next_round()
        finally:
            self.close()

    def _round(self) -> bool:
        """Wait for ``go``, run the traffic, report it; whether another round follows."""
        seconds = cpu_s = 0.0
        if self.await_go():
            seconds, cpu_s = self.traffic()
            if not self.stopping:
                self.quiet_check()
        if self.channel.eof:
            return False
        more = self.more and not self.stopping
        report = Report(
            counts=self._counts(),
            seconds=seconds,
            cpu_s=cpu_s,
            problems=tuple(self.problems),
            histogram=self.latencies.encode(),
        )
        self.channel.send(Round(report) if more else Done(report))
        return more

    def _next_round(self) -> None:
        """Counters of the traffic start again; connections and error counts stay."""
        self.go = self.more = False
        self.round_seconds = None
        self.round_interval = 0
        self.latencies = Latencies()
        self.completed = self.abandoned = 0
        self.problems = []

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()
        self.ep.close()

    def _counts(self) -> Counts:
        return Counts(
            connected=self.connected,
            established=self.established,
            errors=self.errors,
            mismatches=self.mismatches,
            messages=self.completed,
        )

    def _report(self, now: int) -> None:
        if now >= self.next_report:
            self.next_report = now + int(REPORT_S * 1e9)
            self.channel.send(Progress(self._counts()))

    def _command(self) -> None:
        for message in self.channel.receive():
            match message:
                case Go(seconds=seconds, more=more, interval=interval):
                    self.go, self.more = True, more
                    self.round_seconds = seconds
                    self.round_interval = int(interval * 1e9)
                case Stop():
                    self.stopping = True
        if self.channel.eof:
            self.stopping = True  # the parent died: stop at once

    # -- one connection -----------------------------------------------------

    def _open(self, conn: int, since: int, retry: deque[tuple[int, int, int]]) -> None:
        """Start a non-blocking connect for connection ``conn``."""
        sock = self._socket(conn)
        if sock is None:
            return
        try:
            code = sock.connect_ex(self.plan.address)
        except OSError as error:
            sock.close()
            self._count_error(f"connection {conn}: connect: {error.strerror or error}")
            return
        if code == errno.EAGAIN and not self.plan.is_tcp:
            sock.close()  # the Unix socket's accept queue is full: try again shortly
            if _clock() - since < _STALL_NS:
                retry.append((_clock() + int(RETRY_S * 1e9), conn, since))
            else:
                self._count_error(f"connection {conn}: accept queue full for {STALL_S:g} s")
            return
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._count_error(f"connection {conn}: connect: {os.strerror(code)}")
            return
        fd = self._track(sock, conn, since)
        if code == 0:
            self._connected(fd, EPOLLOUT)

    def _socket(self, conn: int) -> socket.socket | None:
        """A non-blocking socket for ``conn``, bound to its source; None if that failed."""
        try:
            sock = socket.socket(self.plan.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as error:  # EMFILE, ENOBUFS, ...
            self._count_error(f"connection {conn}: socket: {error.strerror or error}")
            return None
        sources = self.spec.source_addrs
        try:
            if self.plan.is_tcp:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if sources:
                # The port is then chosen at connect(), per destination: a source
                # address serves every server port with its whole port range.
                try:
                    sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                except OSError:
                    pass
                sock.bind((sources[conn % len(sources)], 0))
        except OSError as error:
            sock.close()
            self._count_error(f"connection {conn}: connect: {error.strerror or error}")
            return None
        return sock

    def _track(self, sock: socket.socket, conn: int, since: int) -> int:
        """Give a connecting socket its slot and watch it for the outcome; its fd."""
        fd = sock.fileno()
        if fd >= len(self.state):
            self._grow(fd + 1 + FD_RESERVE)
        self.socks[fd] = sock
        self.conn[fd] = conn
        self.expect[fd] = bytearray()
        self.stamps[fd] = deque()
        self.head[fd] = 0
        self.seq[fd] = 0
        self.unsent[fd] = None
        self.last[fd] = since
        self.opening[fd] = since
        self.state[fd] = CONNECTING
        self.ep.register(fd, EPOLLOUT)
        return fd

    def _grow(self, slots: int) -> None:
        more = slots - len(self.state)
        self.state += bytearray(more)
        for numbers in (self.conn, self.head, self.seq, self.last):
            numbers.extend([0] * more)
        for objects in (self.expect, self.stamps, self.unsent):
            objects.extend([None] * more)

    def _connected(self, fd: int, events: int) -> None:
        """The outcome of a connect: send message 0, or count the failure."""
        if events & (EPOLLERR | EPOLLHUP) or not events & EPOLLOUT:
            # A failed connect always sets EPOLLERR; writable alone means it
            # succeeded, and asking SO_ERROR would cost a syscall per connection.
            code = self.socks[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._fail(fd, f"connect: {os.strerror(code)}")
                return
            if not events & EPOLLOUT:
                return  # not decided yet
        self.connected += 1
        self._begin(fd)

    def _begin(self, fd: int) -> None:
        """Connected: send message 0, whose verified echo establishes the connection."""
        self.state[fd] = OPENING
        self.ep.modify(fd, EPOLLIN)
        self.send(fd, 1, _clock())

    def _establish(self, fd: int) -> None:
        """Message 0 came back right: the connection is up."""
        self.state[fd] = OPEN
        del self.opening[fd]
        self.live.add(fd)
        self.established += 1

    def send(self, fd: int, count: int, now: int) -> bool:
        """Send the next ``count`` messages of ``fd``; False if the connection failed."""
        first = self.seq[fd]
        data = self.payloads.messages(self.conn[fd], first, count)
        self.seq[fd] = first + count
        self.expect[fd] += data
        stamps = self.stamps[fd]
        if count == 1:
            stamps.append(now)
        else:
            stamps.extend(repeat(now, count))
        return self._put(fd, data)

    def _put(self, fd: int, data: bytes) -> bool:
        """Write ``data`` after whatever waits (not a message: nothing is expected back);
        False if the connection failed."""
        pending = self.unsent[fd]
        if pending is not None:  # earlier bytes wait: keep the order
            pending += data
            return True
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            written = 0
        except OSError as error:
            self._fail(fd, f"write: {error.strerror}")
            return False
        if written < len(data):
            self._backlog(fd, data, written)
        return True

    def _backlog(self, fd: int, data: bytes, written: int) -> None:
        """Keep what the kernel did not take; ``EPOLLOUT`` says when it may go."""
        self.unsent[fd] = bytearray(memoryview(data)[written:])
        self.ep.modify(fd, EPOLLIN | EPOLLOUT)

    def flush(self, fd: int) -> bool:
        """``EPOLLOUT``: write what waits; False if the connection failed."""
        pending = self.unsent[fd]
        if pending is None:
            return True
        try:
            written = os.write(fd, pending)
        except BlockingIOError:
            return True
        except OSError as error:
            self._fail(fd, f"write: {error.strerror}")
            return False
        del pending[:written]
        if not pending:
            self.unsent[fd] = None
            self.ep.modify(fd, EPOLLIN)
        return True

    def verify(self, fd: int) -> int:
        """Read once and verify: the messages it completed (0 if none, or the connection failed).

        The verified bytes leave ``expect[fd]``; ``last[fd]`` becomes now.
        The completed messages' send times are still in ``stamps[fd]``, oldest
        first: the caller takes them out.
        """
        expect = self.expect[fd]
        try:
            data = os.read(fd, min(len(expect) + 1, READ_MAX))
        except BlockingIOError:
            return 0
        except OSError as error:
            self._fail(fd, f"read: {error.strerror}")
            return 0
        if not data:
            self._eof(fd)
            return 0
        if not expect.startswith(data):
            data = self._unexpected(fd, data)
            if not data:
                return 0
        del expect[: len(data)]
        self.last[fd] = _clock()
        done, self.head[fd] = divmod(self.head[fd] + len(data), self.unit)
        return done

    def receive(self, fd: int) -> int:
        """:meth:`verify`, outside the measured traffic (no latency): messages completed."""
        done = self.verify(fd)
        stamps = self.stamps[fd]
        for _ in range(done):
            stamps.popleft()
        return done

    def _eof(self, fd: int) -> None:
        flight = len(self.stamps[fd])
        why = "the server closed the connection"
        if flight:
            seq, size = self.seq[fd] - flight, self.unit
            why += f" with {flight} message(s) in flight ({self.head[fd]} of {size} bytes"
            why += f" of message {seq} back)"
        self._fail(fd, why)

    def _unexpected(self, fd: int, data: bytes) -> bytes:
        """Bytes read that do not continue the expected stream: what of them is echo.

        Here none: a mismatch, and the connection is closed.  (A WebSocket
        engine takes the server's control frames out first.)
        """
        self._mismatch(fd, data)
        return b""

    def _mismatch(self, fd: int, data: bytes) -> None:
        why = self.payloads.describe_mismatch(
            data,
            self.expect[fd][: len(data)],
            conn=self.conn[fd],
            seq=self.seq[fd] - len(self.stamps[fd]),
            into=self.head[fd],
        )
        self._fail(fd, why, mismatch=True)

    def _count_error(self, why: str) -> None:
        self.errors += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(why)

    def _fail(self, fd: int, why: str, *, mismatch: bool = False) -> None:
        """Count the problem and close the connection."""
        if self.state[fd] == OPEN:
            self.abandoned += len(self.stamps[fd])
        if mismatch:
            self.mismatches += 1
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(why)
        else:
            self._count_error(f"connection {self.conn[fd]}: {why}")
        self._close(fd)

    def _close(self, fd: int) -> None:
        self.state[fd] = 0
        self.expect[fd] = self.stamps[fd] = self.unsent[fd] = None
        self.live.discard(fd)
        self.opening.pop(fd, None)
        self.socks.pop(fd).close()  # the kernel drops its epoll entry with it

    def _sweep(self, now: int) -> None:
        """Close connections that made no progress for ``STALL_S`` with work pending."""
        for fd, since in list(self.opening.items()):
            if now - since > _STALL_NS:
                self._fail(fd, f"{self.stages[self.state[fd]]} not done after {STALL_S:g} s")
        stamps, last = self.stamps, self.last
        for fd in [fd for fd in self.live if stamps[fd] and now - last[fd] > _STALL_NS]:
            self._fail(fd, f"no echo for {STALL_S:g} s ({len(stamps[fd])} message(s) in flight)")

    # -- ramp, idle, quiet ------------------------------------------------------

    def ramp(self) -> None:
        """Open every connection, at most ``MAX_OPENING`` at once; verify message 0."""
        share = self.share
        todo = deque(range(share.first, share.first + share.conns))
        retry: deque[tuple[int, int, int]] = deque()  # (when, conn, first attempt)
        next_sweep = _clock() + _SWEEP_NS
        while (todo or retry or self.opening) and not self.stopping:
            self._open_more(todo, retry)
            n = self.ep.wait(self.events, RETRY_S if retry else TICK_S)
            for fd, mask in self.events.ready(n):
                self._ramp_event(fd, mask)
            now = _clock()
            if now >= next_sweep:
                next_sweep = now + _SWEEP_NS
                self._sweep(now)
            self._report(now)
        for fd in list(self.opening):  # stopped early
            self._close(fd)

    def _open_more(self, todo: deque[int], retry: deque[tuple[int, int, int]]) -> None:
        """Start connects until ``MAX_OPENING`` are under way: retries that are due first."""
        now = _clock()
        while len(self.opening) < MAX_OPENING:
            if retry and retry[0][0] <= now:
                _, conn, since = retry.popleft()
            elif todo:
                conn, since = todo.popleft(), now
            else:
                return
            self._open(conn, since, retry)

    def _ramp_event(self, fd: int, mask: int) -> None:
        if fd == self.control:
            self._command()
            return
        kind = self.state[fd]
        if kind == CONNECTING:
            self._connected(fd, mask)
            return
        if mask & EPOLLOUT and not self.flush(fd):
            return
        if kind == OPENING and mask & _READABLE:
            if self.receive(fd) > 0:
                self._establish(fd)
        elif kind == OPEN and mask & _READABLE:
            self.receive(fd)  # nothing is in flight: any byte is wrong

    def await_go(self) -> bool:
        """Hold the established connections idle until ``go`` (True) or ``stop`` (False)."""
        while not self.go:
            if self.stopping:
                return False
            n = self.ep.wait(self.events, TICK_S * 10)
            for fd, _ in self.events.ready(n):
                if fd == self.control:
                    self._command()
                elif self.state[fd] == OPEN:
                    self.receive(fd)  # nothing is in flight: any byte is wrong
        return not self.stopping

    def quiet_check(self) -> None:
        """One short last wait: any byte that arrives now was never sent."""
        n = self.ep.wait(self.events, QUIET_S)
        for fd, _ in list(self.events.ready(n)):
            if fd != self.control and self.state[fd] == OPEN:
                self.receive(fd)

    # -- the measured traffic ---------------------------------------------------

    def traffic(self) -> tuple[float, float]:
        """The measured traffic; returns (seconds, CPU seconds of this process).

        With a round ``interval`` (``go`` says it) each connection waits that
        long after an echo before its next message: a paced load, so latency
        can be measured below saturation.
        """
        cpu_start = time.process_time()
        flow = self.start_flow()
        if flow.interval:
            self.plain_loop(flow)
        else:
            self.closed_loop(flow)
        self.completed = flow.completed
        return (_clock() - flow.start) / 1e9, time.process_time() - cpu_start

    def start_flow(self) -> Flow:
        """The round's :class:`Flow`, its first messages sent (or, paced, scheduled)."""
        start = _clock()
        duration = self.round_seconds if self.round_seconds is not None else self.spec.duration
        flow = Flow(
            start=start,
            deadline=start + int(duration * 1e9) if duration is not None else _NEVER,
            budget=_NEVER if self.share.messages is None else self.share.messages,
            interval=self.round_interval,
            next_sweep=start + _SWEEP_NS,
        )
        live = list(self.live)
        if flow.interval:  # paced: first messages spread over one interval, not one burst
            for k, fd in enumerate(live):
                flow.paced.append((start + flow.interval * k // len(live), fd, self.spec.pipeline))
        else:
            for fd in live:
                if flow.budget <= 0:
                    break
                self.last[fd] = start
                self._spend(flow, fd, self.spec.pipeline, start)
        flow.sending = flow.budget > 0
        return flow

    def plain_loop(self, flow: Flow) -> None:
        """The traffic, one call per step: paced rounds, and the closed loop's reference."""
        while flow.sent - flow.completed - self.abandoned > 0 or flow.paced:
            n = self.ep.wait(self.events, self._timeout(flow))
            for fd, mask in self.events.ready(n):
                self._traffic_event(fd, mask, flow)
            now = _clock()
            self._send_paced(flow, now)
            if self.tick(flow, now):
                break

    def closed_loop(self, flow: Flow) -> None:  # noqa: C901, PLR0912, PLR0915, RUF100 -- hot loop: plain_loop's calls cost 1.9x its user CPU/message (docs/loadgen.md)
        """:meth:`plain_loop` for an unpaced round, its per-message steps written out.

        Each event runs :meth:`_traffic_event`, :meth:`verify`,
        :meth:`Latencies.add <rawepoll.tools.loadgen.latency.Latencies.add>`,
        :meth:`_next` and :meth:`send` in place, with everything looked up
        once, before the loop.
        """
        size = self.spec.size
        counts = self.latencies.counts
        counted = counts.get
        control = self.control
        expect, stamps, head, last = self.expect, self.stamps, self.head, self.last
        conn, seq, unsent = self.conn, self.seq, self.unsent
        message, messages = self.payloads.message, self.payloads.messages
        flush = self.flush
        write, read = os.write, os.read
        wait, ready, events = self.ep.wait, self.events.ready, self.events
        clock = _clock
        budget, sending, sent, completed = flow.budget, flow.sending, flow.sent, flow.completed
        due = flow.due(self.next_report)
        while sent - completed - self.abandoned > 0:
            n = wait(events, TICK_S)
            for fd, mask in ready(n):
                if mask & EPOLLOUT and (not flush(fd) or not mask & _READABLE):
                    continue
                if fd == control:
                    self._command()
                    continue
                expected = expect[fd]
                if expected is None:
                    continue  # closed earlier in this batch
                # verify(fd):
                try:
                    data = read(fd, len(expected) + 1 if len(expected) < READ_MAX else READ_MAX)
                except BlockingIOError:
                    continue
                except OSError as error:
                    self._fail(fd, f"read: {error.strerror}")
                    continue
                if not data:
                    self._eof(fd)
                    continue
                if not expected.startswith(data):
                    self._mismatch(fd, data)
                    continue
                got = len(data)
                del expected[:got]
                now = clock()
                last[fd] = now
                got += head[fd]
                if got < size:
                    head[fd] = got
                    continue
                done, head[fd] = divmod(got, size)
                # latencies.add(now, stamps[fd], done):
                flight = stamps[fd]
                for _ in range(done):
                    us = (now - flight.popleft()) // 1000
                    counts[us] = counted(us, 0) + 1
                completed += done
                # _next(fd, done, now, flow), then send(fd, done, now):
                if not sending:
                    continue
                if done >= budget:
                    done, sending = budget, False
                budget -= done
                sent += done
                first = seq[fd]
                seq[fd] = first + done
                if done == 1:
                    data = message(conn[fd], first)
                    flight.append(now)
                else:
                    data = messages(conn[fd], first, done)
                    flight.extend(repeat(now, done))
                expected += data
                pending = unsent[fd]
                if pending is not None:
                    pending += data
                    continue
                try:
                    written = write(fd, data)
                except BlockingIOError:
                    written = 0
                except OSError as error:
                    self._fail(fd, f"write: {error.strerror}")
                    continue
                if written < len(data):
                    self._backlog(fd, data, written)
            now = clock()
            if now >= due or self.stopping:
                flow.budget, flow.sending, flow.sent = budget, sending, sent
                flow.completed = completed
                if self.tick(flow, now):
                    break
                sending = flow.sending
                due = flow.due(self.next_report)
        flow.budget, flow.sending, flow.sent, flow.completed = budget, sending, sent, completed

    def _timeout(self, flow: Flow) -> float:
        """How long a wait may last: until the next paced message is due, at most ``TICK_S``."""
        if not flow.paced:
            return TICK_S
        return min(TICK_S, max(0.0, (flow.paced[0][0] - _clock()) / 1e9))

    def _traffic_event(self, fd: int, mask: int, flow: Flow) -> None:
        if mask & EPOLLOUT and (not self.flush(fd) or not mask & _READABLE):
            return
        if fd == self.control:
            self._command()
            return
        if self.expect[fd] is None:
            return  # closed earlier in this batch
        done = self.verify(fd)
        if done:
            now = self.last[fd]  # when the echo was verified
            self.latencies.add(now, self.stamps[fd], done)
            flow.completed += done
            self._next(flow, fd, done, now)

    def _next(self, flow: Flow, fd: int, done: int, now: int) -> None:
        """``done`` echoes of ``fd`` came back: as many messages go out, now or paced."""
        if not flow.sending:
            return
        if flow.interval:
            flow.paced.append((now + flow.interval, fd, done))
        else:
            self._spend(flow, fd, done, now)

    def _send_paced(self, flow: Flow, now: int) -> None:
        """Send the paced messages that are due."""
        paced = flow.paced
        while paced and paced[0][0] <= now:
            _, fd, count = paced.popleft()
            if flow.sending and flow.budget > 0 and self.expect[fd] is not None:
                self._spend(flow, fd, count, now)  # else stopped, spent, or the connection failed

    def _spend(self, flow: Flow, fd: int, count: int, now: int) -> None:
        """Send up to ``count`` messages of ``fd`` out of the budget."""
        count = min(count, flow.budget)
        flow.budget -= count
        flow.sending = flow.budget > 0
        flow.sent += count
        self.send(fd, count, now)

    def tick(self, flow: Flow, now: int) -> bool:
        """After a wait: the deadline, a stop, sweeps, reports; True: end the loop now."""
        if now >= flow.deadline or self.stopping:
            flow.sending = False
            flow.paced.clear()
            if self.stopping and flow.stop_at == _NEVER:
                flow.stop_at = now + int(STOP_DRAIN_S * 1e9)
        if now >= flow.next_sweep:
            flow.next_sweep = now + _SWEEP_NS
            self.completed = flow.completed
            self.latencies.flush_if_large()
            self._sweep(now)
        if now >= self.next_report:
            self.completed = flow.completed
            self._report(now)
        return now >= flow.stop_at  # stopped: what is still in flight is dropped, not counted


def child_main(
    plan: Plan, share: Share, sock: socket.socket, engine: type[Engine] = Engine
) -> NoReturn:
    """A forked load process's whole life, run by ``engine``; never returns."""
    status = 1
    channel = Channel(sock)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if share.cpu is not None:
            os.sched_setaffinity(0, {share.cpu})
        gc.disable()  # nothing here makes cycles; a collection would show as latency
        engine(plan, share, channel).run()
        status = 0
    except BaseException as error:  # report, then leave without unwinding into the parent's code
        try:
            channel.send(Failed(f"{type(error).__name__}: {error}"))
        except BaseException:
            pass
    finally:
        os._exit(status)
