"""The worker's event loops: level-triggered and edge-triggered echo service.

What one worker promises:

* **Nothing per idle connection.**  The fd is the key (the kernel hands it back
  in the event's data word); per-fd state is one byte in a ``bytearray``
  indexed by fd, allocated once for the whole descriptor range.  A connection
  gets a Python object only while it has output pending (a ``bytearray`` in
  ``pending``) or a stateful handler (in ``handlers``).
* **Reads into one reusable buffer.**  ``os.readv`` fills a 64 KiB
  ``bytearray``; the handler sees a ``memoryview`` of it.
* **Writes lose nothing.**  What ``write`` did not take goes into the
  connection's ``pending`` buffer; ``EPOLLOUT`` is armed only while one
  exists.  Above ``high_water`` pending bytes, reading from that connection
  pauses (backpressure against a peer that sends but does not read) and
  resumes below ``low_water``.  Pending output is hard-capped; a handler that
  outgrows the cap gets its connection closed (counted as ``overflow``).
* **Errors close one connection, never the loop**: ECONNRESET, EPIPE (Python
  ignores SIGPIPE), EBADF races.  EINTR is retried by ``os.readv``/``os.write``
  (PEP 475) and by :meth:`rawepoll.Epoll.wait`.
* **EMFILE/ENFILE at accept** stops accepting for a back-off, with one log
  line per interval at most; the listener is re-armed afterwards.
* **A handler's fault costs its connection, never the worker.**  An
  ``Exception`` out of ``data_received``/``eof_received`` (or a per-connection
  handler's constructor), or a return value that is neither bytes-like nor
  ``None``, closes that connection, counts ``handler_errors`` and is logged
  (:class:`~rawepoll.server.faults.FaultLog`); the other ready events of the
  turn are served, each once.  The ``try`` sits outside the per-event loop --
  free in CPython 3.11 until something raises -- and the loop resumes from
  the same iterator, after the failing descriptor.  ``KeyboardInterrupt`` and
  ``SystemExit`` from a handler start the graceful drain.
* **Seen when slow.**  Each turn is timed from the end of the wait to the end
  of its work; the longest since the last report is ``max_turn_us`` (a
  handler that blocks for 2 s shows as a 2 s turn).

Level-triggered (:meth:`Worker.run_lt`): each event gets one read; the kernel
reports the connection again while data remains, so no connection starves
another.  Edge-triggered (:meth:`Worker.run_et`): each event is drained --
until ``EAGAIN`` or a *short read*, which proves the receive queue held no
more data at that moment (``tcp_recvmsg`` and ``unix_stream_read_generic``
only return less than asked when the queue runs dry), so any later arrival
raises a new edge.  A short read does not prove there is no *end of stream*
queued behind the data, though: connections are registered with
``EPOLLRDHUP``, and once an event carries it the connection is read until
``EAGAIN`` or EOF, never stopped by a short read.  A per-turn budget of reads
stops one busy connection from starving the others: a connection that used
its budget is queued and continued next turn.
Accept is drained until ``EAGAIN`` in ET mode.

The two loops share every helper; only the turn structure differs.
"""

from __future__ import annotations

import errno
import mmap
import os
import signal
import socket
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from rawepoll import _ffi
from rawepoll.epoll import Epoll
from rawepoll.events import EventArray
from rawepoll.server.delivery import Delivery
from rawepoll.server.faults import FaultLog
from rawepoll.server.handler import Handler, Lifecycle, Output
from rawepoll.server.push import Connection, Hub
from rawepoll.server.relay import RelayLink
from rawepoll.server.stats import PUBLISH_INTERVAL, Stats
from rawepoll.server.timers import IdleWheel, Timer, TimerWheel
from rawepoll.unix import (
    EPOLLERR,
    EPOLLET,
    EPOLLEXCLUSIVE,
    EPOLLHUP,
    EPOLLIN,
    EPOLLOUT,
    EPOLLRDHUP,
)

__all__ = ["Extension", "Worker", "WorkerConfig", "WorkerHooks", "WorkerMemory"]

_T = TypeVar("_T")

READ_SIZE: Final = 65536
EVENTS: Final = 1024  # epoll events per wait
ET_READ_BUDGET: Final = 16  # reads per connection per turn in ET mode (1 MiB)
ACCEPT_BURST: Final = 64  # accepts per listener event in LT mode
EMFILE_BACKOFF: Final = 0.25  # seconds without accepting after EMFILE/ENFILE
LOG_INTERVAL: Final = 5.0  # at most one "out of descriptors" line per interval

# Per-fd state bits (one byte per descriptor).
OPEN: Final = 1
PAUSED: Final = 2  # reading paused: pending output above high water
WRITING: Final = 4  # EPOLLOUT armed
EOF: Final = 8  # the peer shut down writing: close once output is flushed
QUEUED: Final = 16  # ET: budget used up, continue next turn
PEER_DONE: Final = 32  # ET: EPOLLRDHUP seen, read to EOF (a short read proves nothing)

_ERR_HUP: Final = EPOLLERR | EPOLLHUP
_NEVER: Final = float("inf")
_epoll_poll = _ffi.epoll_wait_probe  # timeout 0 only: never sleeps; no errno (redone on -1)
_PEER_GONE: Final = EPOLLRDHUP | EPOLLERR | EPOLLHUP
_FATAL_ACCEPT: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept(2): Linux reports errors of the pending connection itself; take the next one.
_RETRY_ACCEPT: Final = frozenset(
    {
        errno.ECONNABORTED,
        errno.EINTR,
        errno.EPROTO,
        errno.EPERM,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ETIMEDOUT,
    }
)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker needs to know; built by :func:`rawepoll.server.serve`."""

    handler: type[Handler]
    max_conns: int
    high_water: int
    low_water: int
    idle_timeout: float
    drain_timeout: float
    stats_interval: float
    is_tcp: bool
    exclusive: bool  # several workers share the listener: EPOLLEXCLUSIVE
    refuse_when_full: bool  # the only worker: close what it cannot hold, at once
    rotate: bool = True  # --balance rotate (False: fill)
    mode: str = "lt"
    shared_handler: Handler | None = None  # handler.shared: the one instance, built by serve()
    extensions: tuple[Callable[[Worker], Extension], ...] = ()  # control socket, broker...
    workers: int = 1  # how many workers the server has (Hub.workers)
    max_pending: int = 65536  # bytes of pushed output a connection may have waiting
    slow_policy: str = "drop"  # past max_pending: "drop" the message, or "close" the connection


class WorkerMemory:
    """A worker's big buffers, allocated before the workers are forked.

    A forked worker pays in private memory for every page it writes, and the
    first allocation of a buffer writes far more pages than the buffer holds
    (the allocator's free lists, ctypes' type machinery): ~0.25 MiB per worker,
    measured.  Allocated once in the supervisor, the buffers are inherited
    copy-on-write, and a worker pays only for the pages it fills: the per-fd
    flags as descriptors get used, the read buffer as far as reads reach.
    The parent never writes them, so a replacement worker inherits them clean.
    """

    __slots__ = ("buffer", "events", "flags", "gens")

    def __init__(self) -> None:
        self.flags = bytearray(max(os.sysconf("SC_OPEN_MAX"), 1024))
        self.gens = array("I", bytes(4 * len(self.flags)))  # generation per fd (push handles)
        self.events = EventArray(EVENTS)
        # MAP_PRIVATE: after fork each process has its own copy, never shared.
        self.buffer = mmap.mmap(-1, READ_SIZE, flags=mmap.MAP_PRIVATE)


class Extension(Protocol):
    """Something a worker runs beside its connections (the control socket, the Redis link).

    Made in the worker (after the fork) by a factory of
    ``WorkerConfig.extensions``, which may :meth:`Worker.watch` descriptors and
    start timers.  ``stop()`` is called when the drain begins (close what
    should not delay it), ``close()`` when the worker exits.
    """

    def stop(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class WorkerHooks:
    """Where a worker's figures and messages go.

    ``publish`` -- the counters, into this worker's shared-memory slot (set by
    the supervisor of forked workers): called when they changed, at most every
    :data:`~rawepoll.server.stats.PUBLISH_INTERVAL`, and on the way out.
    ``report`` -- a status report every ``stats_interval`` (set for a worker
    that has no supervisor).  ``log`` -- one line (or a traceback) for people.
    """

    publish: Callable[[Stats], None] | None = None
    report: Callable[[dict[str, int]], None] | None = None
    log: Callable[[str], None] | None = None
    slot: int = 0
    relay: RelayLink | None = None  # this worker's mailboxes (several workers)


class Worker:
    """One process's share of the connections, on one :class:`rawepoll.Epoll`."""

    def __init__(
        self,
        listener: socket.socket,
        config: WorkerConfig,
        *,
        hooks: WorkerHooks | None = None,
        memory: WorkerMemory | None = None,
    ) -> None:
        """Set up the loop; nothing is accepted before :meth:`run`.

        A handler class that says ``shared = True`` has one instance for every
        connection: ``config.shared_handler`` (built once by :func:`serve`,
        before anything listens), or built here.
        """
        memory = memory if memory is not None else WorkerMemory()
        hooks = hooks if hooks is not None else WorkerHooks()
        self.config = config
        self.listener: socket.socket | None = listener
        self.listen_fd = listener.fileno()
        self.stats = Stats()
        self.publish_stats = hooks.publish
        self.report = hooks.report
        self.slot = hooks.slot
        self.log = hooks.log or _log_stderr
        self.faults = FaultLog(self.log)
        self.flags = memory.flags
        self.gens = memory.gens
        fd_limit = len(self.flags)
        self.pending: dict[int, bytearray] = {}
        self._init_handler(config, fd_limit, hooks.relay)
        self.buffer = memory.buffer
        self.buffers = (self.buffer,)  # os.readv's argument, made once
        self.view = memoryview(self.buffer)
        self.hard_cap = 4 * config.high_water + 4 * READ_SIZE
        self.ep = Epoll()
        self.epfd = self.ep.fileno()
        self.events = memory.events
        self.again: list[int] = []  # ET: connections to continue next turn
        self.mode_bits = 0  # EPOLLET in ET mode, for the listener and connections
        self.conn_bits = 0  # what every connection is registered with beside IN/OUT
        self.accepting = False
        self.stopping = False
        self._saved_handlers: dict[int, Any] = {}
        self._saved_wakeup = -1
        self._init_time(config, fd_limit)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.watch(self.wake_r, lambda mask: self._drain_wake())
        if hooks.relay is not None:
            self.watch(hooks.relay.inbox, lambda mask: self._take_relayed())
        self.extensions = [make(self) for make in config.extensions]

    def _init_handler(self, config: WorkerConfig, fd_limit: int, link: RelayLink | None) -> None:
        """The handler, what it can do (its lifecycle), and the push machinery it may use."""
        self.handlers: dict[int, Handler] = {}  # per-connection handlers (shared = False)
        shared_handler = config.shared_handler
        if shared_handler is None and config.handler.shared:
            shared_handler = config.handler()
        self.shared_handler = shared_handler
        self.lifecycle = Lifecycle.of(config.handler)
        self.hub = Hub(self)
        frame = getattr(shared_handler, "push_frame", None) or self.lifecycle.frame
        self.delivery = Delivery(self, fd_limit, frame, link)
        self.topics = self.delivery.topics
        self.special: dict[int, Callable[[int], None]] = {}  # fd -> what its events mean
        self._started = False

    def _init_time(self, config: WorkerConfig, fd_limit: int) -> None:
        """Timers, the idle timeout (one of them), and the housekeeping deadlines."""
        now = time.monotonic()
        self.wheel = TimerWheel(now)
        self.idle = IdleWheel(config.idle_timeout, fd_limit, now) if config.idle_timeout else None
        if self.idle is not None:
            self.wheel.call_every(now, self.idle.tick_seconds, self._expire_idle)
        self.accept_resume_at = 0.0
        self.last_emfile_log = -LOG_INTERVAL
        self.next_stats = now + config.stats_interval if config.stats_interval else _NEVER
        self.next_publish = now  # earliest time of the next copy to shared memory
        self.published_events = -1  # stats.events at the last copy (-1: never copied)
        self.turn_started = now
        self.next_due = _NEVER
        self.drain_deadline = _NEVER

    def _take_relayed(self) -> None:
        self.delivery.relayed()

    def watch(self, fd: int, on_event: Callable[[int], None], mask: int = EPOLLIN) -> None:
        """Register a descriptor that is not a connection: ``on_event(events)`` on readiness.

        Level-triggered whatever the worker's mode.  For the worker's own
        pipes and mailboxes, and for extensions (the control socket, the
        Redis link).  A fault of ``on_event`` is logged and counted, and
        costs nothing else: the descriptor stays watched.
        """
        self.special[fd] = on_event
        self.ep.register(fd, mask)

    def rewatch(self, fd: int, mask: int) -> None:
        """Change what a watched descriptor is watched for (``EPOLLIN``, ``EPOLLOUT``...)."""
        self.ep.modify(fd, mask)

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (before the caller closes it)."""
        if self.special.pop(fd, None) is not None:
            self.ep.unregister(fd)

    def watch_writable(self, fd: int) -> None:
        """A relay outbox is full: watch it for room (it is written only, never read)."""
        if fd not in self.special:
            self.special[fd] = lambda mask: self.delivery.outbox_writable(fd)
            self.ep.register(fd, EPOLLOUT)

    def unwatch_writable(self, fd: int) -> None:
        if self.special.pop(fd, None) is not None:
            self.ep.unregister(fd)

    # -- set-up and signals ----------------------------------------------

    def install_signals(self) -> None:
        """SIGTERM/SIGINT start a graceful shutdown; the wake pipe interrupts the wait.

        :meth:`finish` puts the previous handlers and wakeup fd back, so
        :func:`rawepoll.server.serve` leaves an embedding program as it found it.
        """
        self._saved_wakeup = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self._saved_handlers = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _start_accepting(self) -> None:
        if self.listener is None or self.accepting:
            return
        mask = EPOLLIN | self.mode_bits
        if self.config.exclusive:
            mask |= EPOLLEXCLUSIVE  # one worker woken per connection, not all
        self.ep.register(self.listen_fd, mask)
        self.accepting = True

    def _stop_accepting(self) -> None:
        if self.accepting:
            self.ep.unregister(self.listen_fd)  # EXCLUSIVE entries cannot be MODified
            self.accepting = False

    # -- connections -----------------------------------------------------

    def _accept(self, drain: bool) -> None:
        """Take new connections: ``ACCEPT_BURST`` of them (LT) or until EAGAIN (ET)."""
        config = self.config
        stats = self.stats
        mask = self.conn_bits | EPOLLIN
        took = 0
        for _ in range(1 << 30 if drain else ACCEPT_BURST):
            if stats.open >= config.max_conns and not config.refuse_when_full:
                self._stop_accepting()  # full: leave the queue to workers with room
                break
            fd = _ffi.accept4(self.listen_fd)
            if fd < 0:
                if -fd in _FATAL_ACCEPT:
                    self._out_of_descriptors(-fd)
                    return
                if -fd in _RETRY_ACCEPT:
                    continue  # that connection died in the queue; the next may not have
                break  # EAGAIN: drained (or an error that retrying cannot cure)
            took += 1
            if stats.open >= config.max_conns:
                os.close(fd)  # the only worker, and full: refuse at once
                stats.refused += 1
                continue
            self._admit(fd, mask)
        if took and config.exclusive and config.rotate and self.accepting:
            self._rotate()

    def _admit(self, fd: int, mask: int) -> None:
        """A new connection: options, the epoll entry, its state, the handler's greeting."""
        if self.config.is_tcp:
            _ffi.set_tcp_nodelay(fd)
        self.ep.register(fd, mask)
        self.flags[fd] = OPEN
        stats = self.stats
        stats.open += 1
        stats.accepted += 1
        if self.idle is not None:
            self.idle.touch(fd)
        if self.lifecycle.made:
            self._made(fd)

    def _made(self, fd: int) -> None:
        """``connection_made``: the handler's first word on a new connection (isolated)."""
        try:
            handler = self.handler_for(fd)
            handler.connection_made(self._who(fd))  # type: ignore[attr-defined]
        except BaseException as error:  # a fault costs its connection only
            self._fault(fd, error)

    def _rotate(self) -> None:
        """Go to the back of the listener's queue of exclusive waiters.

        The kernel wakes the *first* idle epoll registered on the listening
        socket, so without this the oldest worker takes nearly every new
        connection while it keeps up (measured: 3,999 of 4,000 over 4
        workers).  Re-registering moves this worker's entry to the tail:
        workers take connections in turn.  ``--balance fill`` skips it: the
        first worker then takes connections until it is full, in large
        batches, which is cheaper when connections are many and mostly idle.
        """
        self._stop_accepting()
        self._start_accepting()

    def _out_of_descriptors(self, code: int) -> None:
        self.stats.emfile += 1
        self._stop_accepting()
        now = time.monotonic()
        self.accept_resume_at = now + EMFILE_BACKOFF
        self.next_due = min(self.next_due, self.accept_resume_at)
        if now - self.last_emfile_log >= LOG_INTERVAL:
            self.last_emfile_log = now
            self.log(
                f"worker {self.slot}: accept: {os.strerror(code)}; "
                f"pausing accept for {EMFILE_BACKOFF} s ({self.stats.open} open)"
            )

    def close(self, fd: int, reason: str = "closed") -> None:
        """Close connection ``fd`` (the kernel drops its epoll entry with it).

        Its generation moves on at once, so every handle on it is stale from
        here; its subscriptions go; ``connection_lost(conn, reason)`` is told
        (a fault there is counted, nothing more).
        """
        if not self.flags[fd] & OPEN:
            return
        self.flags[fd] = 0
        generation = self.gens[fd]
        self.pending.pop(fd, None)
        handler = self.handlers.pop(fd, None)
        self.topics.drop(fd)
        if self.idle is not None:
            self.idle.forget(fd)
        if self.lifecycle.lost:
            self._lost(handler or self.shared_handler, fd, generation, reason)
        self.gens[fd] = (generation + 1) & 0xFFFFFFFF  # every handle on it is stale from here
        try:
            os.close(fd)
        except OSError:
            pass
        stats = self.stats
        stats.open -= 1
        stats.closed += 1
        if (
            not self.accepting
            and not self.stopping
            and stats.open < self.config.max_conns
            and time.monotonic() >= self.accept_resume_at
        ):
            self._start_accepting()

    def _lost(self, handler: Handler | None, fd: int, generation: int, reason: str) -> None:
        if handler is None:
            return  # a per-connection handler never made: it saw nothing to lose
        who = fd if self.lifecycle.by_fd else Connection(self, fd, generation)
        try:
            handler.connection_lost(who, reason)  # type: ignore[attr-defined]
        except Exception as error:
            self.user_fault(fd, error, f"connection_lost of fd {fd}")
        except (KeyboardInterrupt, SystemExit):
            self.stopping = True

    def handler_for(self, fd: int) -> Handler:
        handler = self.shared_handler
        if handler is None:
            handler = self.handlers.get(fd)
            if handler is None:
                handler = self.handlers[fd] = self.config.handler()
        return handler

    def send(self, fd: int, data: Output) -> None:
        """Write ``data`` now, keeping what the kernel did not take.

        Raises:
            TypeError: ``data`` is neither bytes-like nor ``None`` (a handler's fault).
        """
        if not data:
            if data is not None and data != b"":
                raise TypeError(f"a handler returned {type(data).__name__}, not bytes or None")
            return
        pending = self.pending.get(fd)
        if pending is not None:  # earlier output waits: keep the order
            pending += data
            self._check_water(fd, pending)
            return
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close(fd, "reset")
            return
        self.stats.bytes_out += sent
        if sent < len(data):
            self._keep(fd, data, sent)

    def _keep(self, fd: int, data: bytes | bytearray | memoryview, sent: int) -> None:
        """The kernel took ``sent`` bytes of ``data``: keep the rest, arm EPOLLOUT."""
        pending = self.pending[fd] = bytearray(data[sent:])
        self._arm_write(fd)
        self._check_water(fd, pending)

    def _check_water(self, fd: int, pending: bytearray) -> None:
        size = len(pending)
        if size > self.config.high_water and not self.flags[fd] & PAUSED:
            self.flags[fd] |= PAUSED
            self._set_mask(fd)
        if size > self.hard_cap:
            self.stats.overflow += 1
            self.close(fd, "overflow")

    def _arm_write(self, fd: int) -> None:
        self.flags[fd] |= WRITING
        self._set_mask(fd)

    def _set_mask(self, fd: int) -> None:
        """Register what ``fd`` should be watched for, from its state bits."""
        state = self.flags[fd]
        mask = self.conn_bits
        if state & WRITING:
            mask |= EPOLLOUT
        if not state & (PAUSED | EOF) or self.mode_bits:
            mask |= EPOLLIN  # ET keeps IN: edges are cheap and we re-read on resume
        self.ep.modify(fd, mask)

    def flush(self, fd: int) -> None:
        """``EPOLLOUT``: write pending output; re-arm reading when it falls low."""
        pending = self.pending.get(fd)
        if pending is None:
            if self.flags[fd] & WRITING:
                self.flags[fd] &= ~WRITING
                self._set_mask(fd)
            return
        try:
            sent = os.write(fd, pending)
        except BlockingIOError:
            return
        except OSError:
            self.close(fd, "reset")
            return
        self.stats.bytes_out += sent
        del pending[:sent]
        state = self.flags[fd]
        if not pending:
            del self.pending[fd]
            if state & EOF:
                self.close(fd, "eof")
                return
            self.flags[fd] = state & ~(WRITING | PAUSED)
            self._set_mask(fd)
            if state & PAUSED:
                self.resume(fd)
        elif state & PAUSED and len(pending) < self.config.low_water:
            self.flags[fd] = state & ~PAUSED
            self._set_mask(fd)
            self.resume(fd)

    def resume(self, fd: int) -> None:
        """Reading may go on.  LT: the kernel will report it.  ET: no new edge may come."""
        if self.mode_bits and not self.flags[fd] & QUEUED:
            self.flags[fd] |= QUEUED
            self.again.append(fd)

    def eof(self, fd: int) -> None:
        """The peer shut down writing: send the handler's last words, then close."""
        handler = self.handler_for(fd)
        if self.lifecycle.with_connection:
            last = handler.eof_received(self._who(fd))  # type: ignore[call-arg]
        else:
            last = handler.eof_received()
        self.send(fd, last)
        if not self.flags[fd] & OPEN:
            return
        if fd in self.pending:
            self.flags[fd] |= EOF
            self._set_mask(fd)
        else:
            self.close(fd, "eof")

    def read_once(self, fd: int) -> int:
        """One read and its answer: bytes read, 0 for EOF/closed, -1 for EAGAIN.

        The general path, for connections in any state; the usual case is
        served by :meth:`_common_case` without a call per message.  What the
        handler raises propagates: the caller's guard closes the connection.
        """
        try:
            n = os.readv(fd, self.buffers)
        except BlockingIOError:
            return -1
        except OSError:
            self.close(fd, "reset")
            return 0
        if n == 0:
            self.eof(fd)
            return 0
        self.stats.bytes_in += n
        if self.idle is not None:
            self.idle.touch(fd)
        self.send(fd, self._receive(fd, self.view[:n]))
        return n

    def _receive(self, fd: int, data: memoryview) -> Output:
        """The handler's ``data_received``, with the connection handle if it asks for it."""
        handler = self.handler_for(fd)
        if self.lifecycle.with_connection:
            return handler.data_received(data, self._who(fd))  # type: ignore[call-arg]
        return handler.data_received(data)

    def _who(self, fd: int) -> Connection | int:
        """What the handler's methods are given for connection ``fd``: a handle, or the fd."""
        return fd if self.lifecycle.by_fd else self.connection(fd)

    # -- faults of user code -------------------------------------------------

    def _fault(self, fd: int, error: BaseException) -> None:
        """User code failed while serving ``fd``: count, log, close that connection only.

        ``KeyboardInterrupt`` and ``SystemExit`` are not faults: they keep
        their meaning and start the graceful drain (the connection whose
        handler raised them is closed, its answer unknown).  Any other
        exception, ``BaseException`` subclasses such as ``CancelledError``
        included, is one.
        """
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            self.stopping = True
        else:
            self.user_fault(fd, error, f"connection fd {fd}")
        if 0 <= fd < len(self.flags) and self.flags[fd] & OPEN:
            if self.lifecycle.last_words:
                self._say_last_words(fd)
            self.close(fd, "error")

    def _say_last_words(self, fd: int) -> None:
        """Before a fault closes ``fd``: the protocol's farewell, best effort, never raising."""
        try:
            words = self.handler_for(fd).last_words(fd)  # type: ignore[attr-defined]
            if words:
                os.write(fd, words)
        except Exception:
            pass

    def user_fault(self, fd: int, error: BaseException, where: str) -> None:
        """Count and log a fault of user code (the caller decides what it costs)."""
        self.stats.handler_errors += 1
        self.faults.record(error, f"worker {self.slot}, {where}")

    def _serve_each(self, items: Iterator[_T], serve: Callable[[_T], object]) -> None:
        """``serve(item)`` for every item; a fault costs that item's connection only.

        Items are fds or ``(fd, mask)`` pairs.  After a fault the ``for``
        resumes on the same iterator: no item is skipped or served twice.
        """
        item: Any = -1
        while True:
            try:
                for item in items:
                    serve(item)
                return
            except BaseException as error:  # a fault costs its connection only
                self._fault(item if type(item) is int else item[0], error)

    # -- push: handles, sends, timers (rawepoll.server.push) -----------------

    def is_current(self, fd: int, generation: int) -> bool:
        """Whether ``(fd, generation)`` names an open connection of this worker."""
        return (
            0 <= fd < len(self.flags)
            and bool(self.flags[fd] & OPEN)
            and (self.gens[fd] == generation)
        )

    def connection(self, fd: int) -> Connection:
        """A handle on open connection ``fd`` (made on demand, nothing kept)."""
        return Connection(self, fd, self.gens[fd])

    def open_fds(self) -> list[int]:
        """This worker's open connections."""
        return [fd for fd, state in enumerate(self.flags) if state & OPEN]

    def send_to(self, fd: int, generation: int, data: bytes | bytearray | memoryview) -> bool:
        """``Connection.send``: a stale handle writes nothing (counted)."""
        if not self.is_current(fd, generation):
            self.stats.stale_sends += 1
            return False
        if not data:
            return True
        if fd in self.pending:
            return self.queue(fd, data)
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close(fd, "reset")
            return False
        self.stats.bytes_out += sent
        if sent < len(data):
            self.keep_pushed(fd, data, sent)
        return True

    def queue(self, fd: int, data: bytes | bytearray | memoryview) -> bool:
        """Pushed bytes behind pending output: kept up to ``max_pending``, then the policy."""
        pending = self.pending[fd]
        if len(pending) + len(data) > self.config.max_pending:
            return self._too_slow(fd)
        pending += data
        return True

    def keep_pushed(self, fd: int, data: bytes | bytearray | memoryview, sent: int) -> None:
        """The kernel took ``sent`` bytes of a pushed message: keep the rest, arm EPOLLOUT.

        The message is kept whole even above ``max_pending``: a cap on
        accumulation, not on message size (never a torn message).
        """
        self.pending[fd] = bytearray(data[sent:])
        self._arm_write(fd)

    def _too_slow(self, fd: int) -> bool:
        if self.config.slow_policy == "close":
            self.stats.slow_closed += 1
            self.close(fd, "slow")
        else:
            self.stats.dropped += 1
        return False

    def close_handle(self, fd: int, generation: int) -> None:
        """``Connection.close``: after what is pending is flushed (a stale handle: no-op)."""
        if not self.is_current(fd, generation):
            return
        if fd in self.pending:
            self.flags[fd] |= EOF  # flush() closes it once the output is out
            self._set_mask(fd)
        else:
            self.close(fd, "closed")

    def publish(self, topic: str, payload: bytes | bytearray | memoryview) -> None:
        self.delivery.publish(topic, payload)

    def broadcast(self, payload: bytes | bytearray | memoryview) -> None:
        self.delivery.broadcast(payload)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Timer:
        timer = self.wheel.call_later(time.monotonic(), delay, callback, *args)
        self.next_due = min(self.next_due, timer.when)
        return timer

    def call_every(self, interval: float, callback: Callable[..., object], *args: Any) -> Timer:
        timer = self.wheel.call_every(time.monotonic(), interval, callback, *args)
        self.next_due = min(self.next_due, timer.when)
        return timer

    def _run_timers(self, now: float) -> None:
        """The timers due now; one that raises is dropped (counted), the others run."""
        for timer in self.wheel.due(now):
            if timer.cancelled:
                continue
            try:
                timer.callback(*timer.args)
            except (KeyboardInterrupt, SystemExit):
                self.stopping = True
            except BaseException as error:  # that timer's fault: it is dropped, nothing else
                timer.cancel()
                name = getattr(timer.callback, "__qualname__", repr(timer.callback))
                self.user_fault(-1, error, f"timer {name} (dropped)")

    def _expire_idle(self) -> None:
        """The idle wheel's tick, driven by the timer wheel: close what idled a whole timeout."""
        idle = self.idle
        assert idle is not None
        idle.advance(time.monotonic())
        for fd in list(idle.expired()):
            if self.flags[fd] & OPEN:
                self.stats.idle_closed += 1
                self.close(fd, "idle")

    # -- the loops --------------------------------------------------------

    def run(self) -> int:
        """Serve in the configured mode until a graceful shutdown ends."""
        return self.run_et() if self.config.mode == "et" else self.run_lt()

    def run_lt(self) -> int:
        """Level-triggered: one read per ready connection per turn."""
        self.mode_bits = self.conn_bits = 0
        return self._run(self._turn_lt)

    def run_et(self) -> int:
        """Edge-triggered: drain each ready connection, within a per-turn budget."""
        self.mode_bits = EPOLLET
        self.conn_bits = EPOLLET | EPOLLRDHUP
        return self._run(self._turn_et)

    def _run(self, turn: Callable[[float | None], None]) -> int:
        self._worker_started()
        self._start_accepting()
        monotonic = time.monotonic
        stats = self.stats
        delivery = self.delivery
        self.next_due = self._next_due(monotonic())
        while True:
            turn(self._timeout())
            if delivery.fanouts:
                delivery.fan_out()
            now = monotonic()
            took_us = int((now - self.turn_started) * 1e6)  # from the end of the wait
            if took_us > stats.max_turn_us:  # noqa: PLR1730 -- a store only when it grows
                stats.max_turn_us = took_us
            if now >= self.next_due or self.stopping:  # timers are rare: one test per turn
                if not self._housekeeping(now):
                    return 0
                self.next_due = self._next_due(now)

    def _common_case(self, ready: Iterator[tuple[int, int]]) -> list[tuple[int, int]]:  # noqa: C901, PLR0912, PLR0915 -- the per-message path, inlined on purpose
        """Serve every event that is the common case; return the others.

        The common case of both loops: only ``EPOLLIN``, on a connection with
        nothing pending, paused or half-closed -- one read, the handler, one
        write.  It is written out here with locals only, once for both loops:
        this loop body *is* the server's cost per message above the kernel's,
        so it makes no call of its own per message.  The general path
        (:meth:`read_once`, :meth:`send`) does the same work and is tested to
        behave the same.  A read that filled the buffer is returned too: more
        may be waiting, which matters to ET (no new edge will come) and costs
        LT one read.

        A fault of the handler closes that connection (:meth:`_fault`); the
        ``for`` then resumes on the same iterator, with the next event.
        """
        rest: list[tuple[int, int]] = []
        flags = self.flags
        readv = os.readv
        write = os.write
        buffers = self.buffers
        view = self.view
        shared = self.shared_handler
        lifecycle = self.lifecycle
        plain = not lifecycle.with_connection or lifecycle.by_fd  # no handle to make
        receive = shared.data_received if plain and shared is not None else None  # bound once
        by_fd = lifecycle.by_fd
        idle = self.idle
        bytes_in = bytes_out = 0
        fd = -1
        while True:
            try:
                for fd, mask in ready:
                    if mask != EPOLLIN or flags[fd] != OPEN:
                        rest.append((fd, mask))  # the listener and the wake pipe land here too
                        continue
                    try:
                        got = readv(fd, buffers)
                    except BlockingIOError:
                        continue
                    except OSError:
                        self.close(fd, "reset")
                        continue
                    if not got:
                        self.eof(fd)
                        continue
                    bytes_in += got
                    if idle is not None:
                        idle.touch(fd)
                    if receive is not None:
                        out = receive(view[:got], fd) if by_fd else receive(view[:got])  # type: ignore[call-arg]
                    else:
                        out = self._receive(fd, view[:got])
                    if out:
                        try:
                            sent = write(fd, out)
                        except BlockingIOError:
                            sent = 0
                        except OSError:
                            self.close(fd, "reset")
                            continue
                        bytes_out += sent
                        if sent < len(out):
                            self._keep(fd, out, sent)
                    elif out is not None and out != b"":
                        raise TypeError(
                            f"a handler returned {type(out).__name__}, not bytes or None"
                        )
                    if got == READ_SIZE:
                        rest.append((fd, mask))
                break
            except BaseException as error:  # a fault costs its connection only
                self._fault(fd, error)
        stats = self.stats
        stats.bytes_in += bytes_in
        stats.bytes_out += bytes_out
        return rest

    def _worker_started(self) -> None:
        """The handler class's ``worker_started(hub)``, once (a fault is logged, not fatal)."""
        started = self.lifecycle.started
        if started is None or self._started:
            return
        started = getattr(self.shared_handler, "worker_started", started)  # bound, if shared
        self._started = True
        try:
            started(self.hub)
        except (KeyboardInterrupt, SystemExit):
            self.stopping = True  # as from any handler: the graceful drain
        except Exception as error:
            self.user_fault(-1, error, "worker_started")

    def _wait(self, timeout: float | None) -> int:
        """Poll without sleeping first; sleep in :meth:`Epoll.wait` only if nothing is ready.

        Under load the poll almost always finds events, so a turn skips the
        GIL release and re-acquisition a sleeping wait needs (the GIL-holding
        call is only safe because it cannot sleep) and Epoll.wait's checks.
        The turn's clock starts when the wait returns.
        """
        events = self.events
        n: int = _epoll_poll(self.epfd, events, events.maxevents, 0)
        if not (n > 0 or (n == 0 and timeout == 0)):
            n = self.ep.wait(events, timeout)  # sleeps; EINTR and errors handled there
        self.turn_started = time.monotonic()
        return n

    def _turn_lt(self, timeout: float | None) -> None:
        events = self.events
        n = self._wait(timeout)
        stats = self.stats
        stats.loops += 1
        stats.events += n
        self._serve_each(iter(self._common_case(events.ready(n))), self._serve_lt)

    def _serve_lt(self, event: tuple[int, int]) -> None:
        """One event that is not the common case, level-triggered."""
        fd, mask = event
        if fd == self.listen_fd:
            self._accept(drain=False)
        elif fd in self.special:
            self._special(fd, mask)
        else:
            if mask & EPOLLOUT:
                self.flush(fd)
            state = self.flags[fd]
            if not mask & ~EPOLLOUT or not state & OPEN:
                return
            if not state & (PAUSED | EOF):
                self.read_once(fd)
            elif mask & _ERR_HUP:
                self.close(fd, "reset")  # not reading, and LT would report this forever

    def _turn_et(self, timeout: float | None) -> None:
        events = self.events
        again, self.again = self.again, []
        n = self._wait(0 if again else timeout)
        stats = self.stats
        stats.loops += 1
        stats.events += n
        self._serve_each(iter(again), self._continue_et)
        self._serve_each(iter(self._common_case(events.ready(n))), self._serve_et)

    def _continue_et(self, fd: int) -> None:
        """A connection that used its read budget last turn: drain it some more."""
        flags = self.flags
        flags[fd] &= ~QUEUED
        if flags[fd] & OPEN:
            self._drain(fd)

    def _serve_et(self, event: tuple[int, int]) -> None:
        """One event that is not the common case, edge-triggered."""
        fd, mask = event
        if fd == self.listen_fd:
            self._accept(drain=True)
        elif fd in self.special:
            self._special(fd, mask)
        else:
            flags = self.flags
            if mask & EPOLLOUT:
                self.flush(fd)
            if mask & ~EPOLLOUT and flags[fd] & OPEN:
                if mask & _PEER_GONE:
                    flags[fd] |= PEER_DONE
                self._drain(fd)

    def _special(self, fd: int, mask: int) -> None:
        """An event on a watched descriptor; its fault is its own (logged, counted)."""
        try:
            self.special[fd](mask)
        except Exception as error:
            self.user_fault(-1, error, f"watched descriptor {fd}")

    def _drain(self, fd: int) -> None:
        """ET: read until EAGAIN or a short read, at most ``ET_READ_BUDGET`` times."""
        flags = self.flags
        for _ in range(ET_READ_BUDGET):
            if flags[fd] & (PAUSED | EOF) or not flags[fd] & OPEN:
                return  # resume() queues it again when output drains
            n = self.read_once(fd)
            if n < 0 or (n < READ_SIZE and not flags[fd] & PEER_DONE):
                return  # EAGAIN, or a short read: a new arrival raises a new edge
        if not flags[fd] & QUEUED:
            flags[fd] |= QUEUED
            self.again.append(fd)

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    # -- time: accept back-off, idle timeouts, stats, shutdown -------------

    def _timeout(self) -> float | None:
        """How long the next wait may sleep: until the next timer, or forever.

        Counters that changed since they were last copied to shared memory
        bound the sleep too: a worker killed while idle must have left them.
        """
        if self.delivery.fanouts:
            return 0  # a fan-out continues after a look at the other events
        if self.publish_stats is not None and self.stats.events != self.published_events:
            self.next_due = min(self.next_due, self.next_publish)  # housekeeping publishes
        due = self.next_due
        if due == _NEVER:
            return None
        return max(0.0, due - time.monotonic())

    def _next_due(self, now: float) -> float:
        """When housekeeping must run next (stats, publishing, back-off, idle, drain)."""
        due = self.next_stats
        if self.publish_stats is not None and self.stats.events != self.published_events:
            due = min(due, self.next_publish)
        if self.stopping:
            due = min(due, self.drain_deadline)
        if not self.accepting and self.listener is not None and self.accept_resume_at > now:
            due = min(due, self.accept_resume_at)  # an EMFILE back-off; "full" waits for close()
        wheel_due = self.wheel.next_deadline()
        if wheel_due is not None:
            due = min(due, wheel_due)  # the idle timeout's tick is one of the timers
        return due

    def _housekeeping(self, now: float) -> bool:
        """Everything that is not I/O; False when the worker should exit."""
        self._run_timers(now)
        if (
            not self.accepting
            and self.listener is not None
            and not self.stopping
            and now >= self.accept_resume_at
            and self.stats.open < self.config.max_conns
        ):
            self._start_accepting()
        if now >= self.next_publish:
            self._publish(now)
        if now >= self.next_stats:
            self.next_stats = now + self.config.stats_interval
            self.faults.flush(now)
            if self.report is not None:
                self.report(self.stats.as_dict())
                self.stats.max_turn_us = 0  # "since the last report"
        if self.stopping:
            return self._drain_step(now)
        return True

    def _publish(self, now: float) -> None:
        """Copy the counters to shared memory if they changed (at most every interval)."""
        if self.publish_stats is None or self.stats.events == self.published_events:
            return
        self.next_publish = now + PUBLISH_INTERVAL
        self.published_events = self.stats.events
        self.publish_stats(self.stats)
        self.stats.max_turn_us = 0  # the shared cell keeps the maximum until it is read

    def _drain_step(self, now: float) -> bool:
        """Graceful shutdown: no new connections; serve until peers leave or the deadline."""
        if self.listener is not None:
            self._stop_accepting()
            self.listener.close()  # with every worker's copy closed, connects are refused
            self.listener = None
            self.drain_deadline = now + self.config.drain_timeout
            for extension in self.extensions:
                extension.stop()
            if self.lifecycle.draining and self.shared_handler is not None:
                try:
                    self.shared_handler.draining(self.hub)  # type: ignore[attr-defined]
                except Exception as error:
                    self.user_fault(-1, error, "draining")
        if self.stats.open == 0:
            return False
        if now < self.drain_deadline:
            return True
        for fd in [fd for fd, state in enumerate(self.flags) if state & OPEN]:
            if fd in self.pending:
                self.flush(fd)  # one last non-blocking try
            self.close(fd, "shutdown")
        return False

    def finish(self) -> None:
        """Release the loop's own descriptors; restore the signal set-up; last figures out.

        Safe to call after any failure of :meth:`run`: the counters are copied
        to shared memory first, whatever happened.
        """
        self.faults.flush()
        if self.publish_stats is not None:
            self.publish_stats(self.stats)
        for extension in self.extensions:
            try:
                extension.close()
            except Exception as error:
                self.user_fault(-1, error, f"closing {type(extension).__name__}")
        if self._saved_handlers:
            for signum, handler in self._saved_handlers.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(self._saved_wakeup)
            self._saved_handlers = {}
        self.ep.close()
        os.close(self.wake_r)
        os.close(self.wake_w)


def _log_stderr(message: str) -> None:
    # One write per message: workers share stderr, and print() writes the newline apart.
    sys.stderr.write(f"rawepoll serve: {message}\n")
    sys.stderr.flush()
