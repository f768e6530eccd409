"""Running workers: in-process for one, forked under a supervisor for several.

Why one shared listening socket with ``EPOLLEXCLUSIVE`` rather than
``SO_REUSEPORT``: with ``SO_REUSEPORT`` the kernel hashes each new connection to
one worker's own listener whether or not that worker has room, so a worker
near its descriptor limit keeps being handed connections it must refuse, and
connections queued on a worker that dies are reset with it.  A shared
listener lets a worker that is full (or out of descriptors) simply stop
watching the socket -- the others take the connections -- and its accept queue
survives any one worker.  ``EPOLLEXCLUSIVE`` (Linux 4.5) wakes one waiting
worker per connection instead of all of them (no thundering herd).  The price
is balance: the kernel prefers the most recently idle waiter, so a lightly
loaded server spreads connections unevenly; ``rawepoll serve --stats-interval``
shows the spread, and docs/server.md gives the measured balance.

The supervisor forks after the imports are done and ``gc.freeze()`` has moved
every object to the permanent generation, so workers share those pages
copy-on-write.  It blocks SIGTERM, SIGINT and SIGCHLD and takes them with
``sigtimedwait``: no handler races, a dead worker is replaced at once.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from rawepoll import _ffi
from rawepoll.server.loop import Worker, WorkerConfig, WorkerHooks, WorkerMemory
from rawepoll.server.relay import Mailboxes
from rawepoll.server.report import Ready, Reporter
from rawepoll.server.stats import FIELDS, SharedStats, Stats, combine

__all__ = ["Outcome", "Supervisor", "run_single"]

_SIGNALS: Final = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
_KILL_GRACE: Final = 5.0  # seconds past the drain timeout before workers are killed
_QUICK_DEATH: Final = 1.0  # a worker that dies younger than this may be crash-looping
_BACKOFF_FIRST: Final = 0.1  # seconds before the first replacement of a quick death
_BACKOFF_MOST: Final = 5.0  # ... doubling up to this
_NEVER: Final = float("inf")

MakeReady = Callable[[int, tuple[int, ...]], Ready]
"""``(serving pid, worker pids) -> Ready``: the ``ready`` event, built by :func:`serve`."""


@dataclass(frozen=True)
class Outcome:
    """How a server ended: summed counters, workers replaced, whether the drain was clean."""

    counts: dict[str, int]
    restarted: int
    clean: bool


def run_single(
    listener: socket.socket, config: WorkerConfig, reporter: Reporter, make_ready: MakeReady
) -> Outcome:
    """Serve in this process until a graceful shutdown.

    The signal handlers are in place before the ``ready`` event tells the
    world we listen: a SIGTERM sent the moment it appears must drain, not kill.
    """
    worker = Worker(listener, config, hooks=WorkerHooks(report=reporter.status))
    worker.install_signals()
    pid = os.getpid()
    reporter.ready(make_ready(pid, (pid,)))
    clean = True
    try:
        worker.run()
    except Exception as error:  # a bug of ours, not a handler's: say so, keep the counts
        clean = False
        worker.log(f"worker failed: {error!r}\n{''.join(traceback.format_exception(error))}")
    finally:
        worker.finish()
    return Outcome(worker.stats.as_dict(), restarted=0, clean=clean)


class Supervisor:
    """Forks the workers, replaces any that dies, forwards shutdown, sums the counters.

    The supervisor blocks SIGTERM, SIGINT and SIGCHLD and takes them with
    ``sigtimedwait`` (no handler races); its loop wakes at least once a
    second, and at every ``stats_interval`` to report.
    """

    def __init__(
        self,
        listener: socket.socket,
        config: WorkerConfig,
        workers: int,
        reporter: Reporter,
        make_ready: MakeReady,
    ) -> None:
        self.listener = listener
        self.config = config
        self.workers = workers
        self.reporter = reporter
        self.make_ready = make_ready
        self.shared = SharedStats(workers)
        self.mailboxes = Mailboxes(workers)  # publishes between workers (rawepoll.server.relay)
        self.retired = dict.fromkeys(FIELDS, 0)  # what dead workers had counted
        self.slots: dict[int, int] = {}  # pid -> slot
        self.born: dict[int, float] = {}  # slot -> when its worker was forked
        self.quick_deaths: dict[int, int] = {}  # slot -> deaths in a row, each soon after birth
        self.respawn: dict[int, tuple[float, int, str]] = {}  # slot -> (when, old pid, reason)
        self.memory: WorkerMemory | None = None
        self.restarted = 0
        self.clean = True
        self.stopping = False
        self.kill_at = _NEVER
        interval = config.stats_interval
        self.next_stats = time.monotonic() + interval if interval else _NEVER

    def run(self) -> Outcome:
        """Fork every worker, announce, supervise until they have all exited."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        self.memory = WorkerMemory()  # inherited by every worker, copy-on-write
        gc.collect()
        gc.freeze()
        try:
            for slot in range(self.workers):
                self.spawn(slot)
            self.reporter.ready(self.make_ready(os.getpid(), tuple(self.slots)))
            while self.slots or (self.respawn and not self.stopping):
                self.step()
        finally:
            for pid in self.slots:
                _kill(pid, signal.SIGKILL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            self.mailboxes.close()
        return Outcome(self.totals(), self.restarted, self.clean)

    def spawn(self, slot: int) -> int:
        """Fork the worker for ``slot``; its pid."""
        sys.stdout.flush()  # else the child would print our buffered output again
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            # A supervisor killed outright (SIGKILL) must not leave its workers serving
            # on their own: each asks for SIGTERM -- a graceful drain -- when it dies.
            _ffi.set_parent_death_signal(signal.SIGTERM)
            if os.getppid() != parent:  # it died before the request took effect
                os._exit(0)
            self._child(slot)
        self.slots[pid] = slot
        self.born[slot] = time.monotonic()
        return pid

    def step(self) -> None:
        """One wake-up: a signal (or a second) passed; act on what happened."""
        soonest = min([self.next_stats, *(when for when, _, _ in self.respawn.values())])
        wait = max(0.0, min(1.0, soonest - time.monotonic()))
        info = signal.sigtimedwait(_SIGNALS, wait)
        if info is not None and info.si_signo in _STOP_SIGNALS:
            self.begin_shutdown()
        for pid, status in _reap():
            if pid in self.slots:
                self.worker_exited(pid, status)
        now = time.monotonic()
        for slot, (when, old, reason) in list(self.respawn.items()):
            if now >= when and not self.stopping:
                del self.respawn[slot]
                self.reporter.restart(slot, old, self.spawn(slot), reason)
        if now >= self.kill_at:
            for pid in self.slots:
                _kill(pid, signal.SIGKILL)
            self.kill_at = _NEVER
        if now >= self.next_stats:
            self.next_stats = now + self.config.stats_interval
            per_worker = [self.shared.read(slot)["open"] for slot in range(self.shared.slots)]
            self.reporter.status(self.totals(), per_worker)
            self.shared.reset_maxima()

    def begin_shutdown(self) -> None:
        """Close our listener, ask every worker to drain; kill them if they overstay."""
        if self.stopping:
            return
        self.stopping = True
        self.respawn.clear()
        self.listener.close()  # our copy; workers close theirs
        for pid in self.slots:
            _kill(pid, signal.SIGTERM)
        self.kill_at = time.monotonic() + self.config.drain_timeout + _KILL_GRACE

    def worker_exited(self, pid: int, status: int) -> None:
        """Keep what the worker counted; replace it unless the server is stopping."""
        slot = self.slots.pop(pid)
        if self.stopping and os.waitstatus_to_exitcode(status) != 0:
            self.clean = False  # a worker that died earlier was replaced, not failed
        combine(self.retired, self.shared.read(slot))
        self.shared.clear(slot)
        if self.stopping:
            return
        self.restarted += 1
        reason = _describe_status(status)
        delay = self._backoff(slot)
        when = "at once" if delay == 0 else f"in {delay:g} s (it keeps dying young)"
        sys.stderr.write(
            f"rawepoll serve: worker {slot} (pid {pid}) died ({reason}); restarting it {when}\n"
        )
        sys.stderr.flush()
        if delay == 0:
            self.reporter.restart(slot, pid, self.spawn(slot), reason)
        else:
            self.respawn[slot] = (time.monotonic() + delay, pid, reason)

    def _backoff(self, slot: int) -> float:
        """How long to wait before replacing ``slot``'s worker: nothing, unless it died
        within a second of its birth twice in a row or more (a crash loop): then 0.1 s,
        doubling to 5 s."""
        young = time.monotonic() - self.born.get(slot, 0.0) < _QUICK_DEATH
        deaths = self.quick_deaths[slot] = self.quick_deaths.get(slot, 0) + 1 if young else 0
        if deaths <= 1:
            return 0.0  # once is an accident (a kill, a bug reached once): replace it at once
        return float(min(_BACKOFF_MOST, _BACKOFF_FIRST * 2 ** (deaths - 2)))

    def totals(self) -> dict[str, int]:
        """The live workers' counters plus what dead ones had counted."""
        return self.shared.total(self.retired)

    def _child(self, slot: int) -> None:
        """A forked worker's whole life; never returns."""
        status = 1
        try:
            self.reporter.forget_descriptor()
            self.shared.clear(slot)
            shared = self.shared

            def publish(stats: Stats) -> None:
                shared.publish(slot, stats)

            hooks = WorkerHooks(publish=publish, slot=slot, relay=self.mailboxes.link(slot))
            worker = Worker(self.listener, self.config, hooks=hooks, memory=self.memory)
            worker.install_signals()  # before unblocking: a forwarded SIGTERM must find them
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            try:
                worker.run()
                status = 0
            finally:
                worker.finish()  # the last counts reach shared memory, whatever happened
        except BaseException as error:  # report, then leave without unwinding into our code
            text = "".join(traceback.format_exception(error))
            print(f"rawepoll serve: worker {slot} failed: {error!r}\n{text}", file=sys.stderr)
        finally:
            sys.stdout.flush()
            os._exit(status)


def _reap() -> list[tuple[int, int]]:
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
