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
times); the receive path is written out in the traffic loop; a latency is
counted in a dict of whole microseconds (see :mod:`rawepoll.tools.loadgen.latency`).
"""

from __future__ import annotations

import errno
import gc
import os
import signal
import socket
import time
from collections import deque
from itertools import repeat
from typing import Any, Final, NoReturn

from rawepoll.epoll import Epoll
from rawepoll.events import EventArray
from rawepoll.tools.loadgen.channel import Channel
from rawepoll.tools.loadgen.latency import Latencies
from rawepoll.tools.loadgen.payload import Payloads, describe_mismatch
from rawepoll.tools.loadgen.plan import FD_RESERVE, STALL_S, Plan, Share
from rawepoll.unix import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP

__all__ = ["Engine", "child_main"]

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

_READABLE: Final = EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP
_STALL_NS: Final = int(STALL_S * 1e9)
_NO_BUDGET: Final = 1 << 62
_IP_BIND_ADDRESS_NO_PORT: Final = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

_clock = time.monotonic_ns


class Engine:
    """One process's connections, from connect to the last verified echo."""

    def __init__(self, plan: Plan, share: Share, channel: Channel) -> None:
        self.plan = plan
        self.share = share
        self.channel = channel
        self.control = channel.fileno()
        self.payloads = Payloads(plan.size)
        self.latencies = Latencies()
        self.ep = Epoll()
        self.events = EventArray(EVENTS)
        self.ep.register(self.control, EPOLLIN)
        # Per fd; a slot is in use while state[fd] != 0.  The kernel hands out the
        # lowest free descriptor, so the lists need little more room than the
        # descriptors open now plus our connections; _open() grows them if not.
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
        self.sent = 0  # messages sent in the measured traffic
        self.completed = 0  # ... and verified
        self.abandoned = 0  # ... and in flight on a connection that failed
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
        """Ramp, wait for ``go``, traffic, quiet check; report to the parent.

        A ``go`` that says ``more`` keeps the connections afterwards: the
        process reports the round (kind ``round``) and waits for the next
        ``go`` or ``stop``; the last report is always kind ``done``.
        """
        started = _clock()
        try:
            self.ramp()
            ramp_s = (_clock() - started) / 1e9
            if self.channel.eof:
                return  # the parent is gone: nobody to report to
            self.channel.send(self._counts("ready", ramp_s=ramp_s))
            while True:
                seconds = cpu_s = 0.0
                if self.await_go():
                    seconds, cpu_s = self.traffic()
                    if not self.stopping:
                        self.quiet_check()
                if self.channel.eof:
                    return
                more = self.more and not self.stopping
                report = self._counts(
                    "round" if more else "done",
                    ramp_s=ramp_s,
                    seconds=seconds,
                    cpu_s=cpu_s,
                    interrupted=self.stopping,
                    problems=self.problems,
                )
                report["histogram"] = self.latencies.encode()
                self.channel.send(report)
                if not more:
                    return
                self._next_round()
        finally:
            self.close()

    def _next_round(self) -> None:
        """Counters of the traffic start again; connections and error counts stay."""
        self.go = self.more = False
        self.round_seconds = None
        self.round_interval = 0
        self.latencies = Latencies()
        self.sent = self.completed = self.abandoned = 0
        self.problems = []

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()
        self.ep.close()

    def _counts(self, kind: str, **more: Any) -> dict[str, Any]:
        return {
            "kind": kind,
            "connected": self.connected,
            "established": self.established,
            "errors": self.errors,
            "mismatches": self.mismatches,
            "messages": self.completed,
            **more,
        }

    def _report(self, kind: str, now: int) -> None:
        if now >= self.next_report:
            self.next_report = now + int(REPORT_S * 1e9)
            self.channel.send(self._counts(kind))

    def _command(self) -> None:
        for message in self.channel.receive():
            if message.get("do") == "go":
                self.go = True
                self.more = bool(message.get("more"))
                seconds = message.get("seconds")
                self.round_seconds = float(seconds) if seconds is not None else None
                self.round_interval = int(float(message.get("interval", 0)) * 1e9)
            elif message.get("do") == "stop":
                self.stopping = True
        if self.channel.eof:
            self.stopping = True  # the parent died: stop at once

    # -- one connection -----------------------------------------------------

    def _open(self, conn: int, since: int, retry: deque[tuple[int, int, int]]) -> None:
        """Start a non-blocking connect for connection ``conn``."""
        plan = self.plan
        try:
            sock = socket.socket(plan.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as error:  # EMFILE, ENOBUFS, ...
            self._count_error(f"connection {conn}: socket: {error.strerror or error}")
            return
        try:
            if plan.is_tcp:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if plan.sources:
                # The port is then chosen at connect(), per destination: a source
                # address serves every server port with its whole port range.
                try:
                    sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                except OSError:
                    pass
                sock.bind((plan.sources[conn % len(plan.sources)], 0))
            code = sock.connect_ex(plan.address)
        except OSError as error:
            sock.close()
            self._count_error(f"connection {conn}: connect: {error.strerror or error}")
            return
        if code == errno.EAGAIN and not plan.is_tcp:
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
        if code == 0:
            self._connected(fd, EPOLLOUT)

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
        self.state[fd] = OPENING
        self.ep.modify(fd, EPOLLIN)
        self.send(fd, 1, _clock())

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

    def receive(self, fd: int) -> int:
        """Read once and verify: messages completed, or -1 if the connection failed.

        The traffic loop has this written out in place; this copy serves the
        other loops, which record no latency.
        """
        expect = self.expect[fd]
        try:
            data = os.read(fd, min(len(expect) + 1, READ_MAX))
        except BlockingIOError:
            return 0
        except OSError as error:
            self._fail(fd, f"read: {error.strerror}")
            return -1
        if not data:
            self._eof(fd)
            return -1
        if not expect.startswith(data):
            self._mismatch(fd, data)
            return -1
        del expect[: len(data)]
        self.last[fd] = _clock()
        done, self.head[fd] = divmod(self.head[fd] + len(data), self.plan.size)
        stamps = self.stamps[fd]
        for _ in range(done):
            stamps.popleft()
        return done

    def _eof(self, fd: int) -> None:
        flight = len(self.stamps[fd])
        why = "the server closed the connection"
        if flight:
            seq, size = self.seq[fd] - flight, self.plan.size
            why += f" with {flight} message(s) in flight ({self.head[fd]} of {size} bytes"
            why += f" of message {seq} back)"
        self._fail(fd, why)

    def _mismatch(self, fd: int, data: bytes) -> None:
        why = describe_mismatch(
            data,
            self.expect[fd][: len(data)],
            conn=self.conn[fd],
            seq=self.seq[fd] - len(self.stamps[fd]),
            into=self.head[fd],
            size=self.plan.size,
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
                what = "connect" if self.state[fd] == CONNECTING else "echo of message 0"
                self._fail(fd, f"{what} not done after {STALL_S:g} s")
        stamps, last = self.stamps, self.last
        for fd in [fd for fd in self.live if stamps[fd] and now - last[fd] > _STALL_NS]:
            self._fail(fd, f"no echo for {STALL_S:g} s ({len(stamps[fd])} message(s) in flight)")

    # -- the loops --------------------------------------------------------

    def ramp(self) -> None:
        """Open every connection, at most ``MAX_OPENING`` at once; verify message 0."""
        share = self.share
        todo = deque(range(share.first, share.first + share.conns))
        retry: deque[tuple[int, int, int]] = deque()  # (when, conn, first attempt)
        state, opening, live = self.state, self.opening, self.live
        wait, ready, events = self.ep.wait, self.events.ready, self.events
        next_sweep = _clock() + int(SWEEP_S * 1e9)
        while (todo or retry or opening) and not self.stopping:
            now = _clock()
            while len(opening) < MAX_OPENING:
                if retry and retry[0][0] <= now:
                    _, conn, since = retry.popleft()
                elif todo:
                    conn, since = todo.popleft(), now
                else:
                    break
                self._open(conn, since, retry)
            n = wait(events, RETRY_S if retry else TICK_S)
            for fd, mask in ready(n):
                if fd == self.control:
                    self._command()
                    continue
                kind = state[fd]
                if kind == CONNECTING:
                    self._connected(fd, mask)
                    continue
                if mask & EPOLLOUT and not self.flush(fd):
                    continue
                if kind == OPENING and mask & _READABLE:
                    if self.receive(fd) > 0:
                        state[fd] = OPEN
                        del opening[fd]
                        live.add(fd)
                        self.established += 1
                elif kind == OPEN and mask & _READABLE:
                    self.receive(fd)  # nothing is in flight: any byte is wrong
            now = _clock()
            if now >= next_sweep:
                next_sweep = now + int(SWEEP_S * 1e9)
                self._sweep(now)
            self._report("ramp", now)
        for fd in list(opening):  # stopped early
            self._close(fd)

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

    def traffic(self) -> tuple[float, float]:
        """The measured closed loop; returns (seconds, CPU seconds of this process).

        With a round ``interval`` (``go`` says it) each connection waits that
        long after an echo before its next message: a paced load, so latency
        can be measured below saturation.
        """
        plan = self.plan
        size = plan.size
        budget = _NO_BUDGET if self.share.messages is None else self.share.messages
        cpu_start = time.process_time()
        start = _clock()
        duration = self.round_seconds if self.round_seconds is not None else plan.duration
        deadline = start + int(duration * 1e9) if duration is not None else 1 << 62
        interval = self.round_interval
        paced: deque[tuple[int, int, int]] = deque()  # (when, fd, count): due in time order
        live = list(self.live)
        if interval:  # paced: first messages spread over one interval, not one burst
            for k, fd in enumerate(live):
                paced.append((start + interval * k // len(live), fd, plan.pipeline))
            live = []
        for fd in live:
            count = min(plan.pipeline, budget)
            if count <= 0:
                break
            budget -= count
            self.sent += count
            self.last[fd] = start
            self.send(fd, count, start)
        sending = budget > 0
        stop_at = 1 << 62
        next_sweep = start + int(SWEEP_S * 1e9)
        latencies = self.latencies
        counts = latencies.counts
        counted = counts.get
        control = self.control
        expect, stamps, head, last = self.expect, self.stamps, self.head, self.last
        conn, seq, unsent = self.conn, self.seq, self.unsent
        message, messages = self.payloads.message, self.payloads.messages
        flush = self.flush
        write = os.write
        wait, ready, events = self.ep.wait, self.events.ready, self.events
        read = os.read
        clock = _clock
        completed = 0
        sent = self.sent
        while sent - completed - self.abandoned > 0 or paced:
            timeout = TICK_S
            if paced:
                timeout = min(TICK_S, max(0.0, (paced[0][0] - clock()) / 1e9))
            n = wait(events, timeout)
            for fd, mask in ready(n):
                if mask & EPOLLOUT and (not flush(fd) or not mask & _READABLE):
                    continue
                if fd == control:
                    self._command()
                    continue
                expected = expect[fd]
                if expected is None:
                    continue  # closed earlier in this batch
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
                flight = stamps[fd]
                for _ in range(done):
                    us = (now - flight.popleft()) // 1000
                    counts[us] = counted(us, 0) + 1
                completed += done
                if not sending:
                    continue
                if interval:
                    paced.append((now + interval, fd, done))
                    continue
                # send(fd, done, now), written out: this is once per message.
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
            while paced and paced[0][0] <= now:
                _, fd, count = paced.popleft()
                count = min(count, budget)
                if not sending or count <= 0 or expect[fd] is None:
                    continue  # stopped, budget spent, or the connection failed meanwhile
                budget -= count
                sending = budget > 0
                sent += count
                self.send(fd, count, now)
            if now >= deadline or self.stopping:
                sending = False
                paced.clear()
                if self.stopping and stop_at == 1 << 62:
                    stop_at = now + int(STOP_DRAIN_S * 1e9)
            if now >= next_sweep:
                next_sweep = now + int(SWEEP_S * 1e9)
                self.completed = completed
                latencies.flush_if_large()
                self._sweep(now)
            if now >= self.next_report:
                self.completed = completed
                self._report("progress", now)
            if now >= stop_at:
                break  # stopped: what is still in flight is dropped, not counted
        seconds = (clock() - start) / 1e9
        self.sent, self.completed = sent, completed
        return seconds, time.process_time() - cpu_start

    def quiet_check(self) -> None:
        """One short last wait: any byte that arrives now was never sent."""
        n = self.ep.wait(self.events, QUIET_S)
        for fd, _ in list(self.events.ready(n)):
            if fd != self.control and self.state[fd] == OPEN:
                self.receive(fd)


def child_main(plan: Plan, share: Share, sock: socket.socket) -> NoReturn:
    """A forked load process's whole life; never returns."""
    status = 1
    channel = Channel(sock)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if share.cpu is not None:
            os.sched_setaffinity(0, {share.cpu})
        gc.disable()  # nothing here makes cycles; a collection would show as latency
        Engine(plan, share, channel).run()
        status = 0
    except BaseException as error:  # report, then leave without unwinding into the parent's code
        try:
            channel.send({"kind": "failed", "error": f"{type(error).__name__}: {error}"})
        except BaseException:
            pass
    finally:
        os._exit(status)
