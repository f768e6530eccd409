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
from collections.abc import Callable

from rawepoll.server.loop import Worker, WorkerConfig, WorkerMemory
from rawepoll.server.stats import FIELDS, SharedStats, format_line

__all__ = ["run_single", "supervise"]

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
_KILL_GRACE = 5.0  # seconds past the drain timeout before workers are killed


def run_single(
    listener: socket.socket, config: WorkerConfig, mode: str, announce: Callable[[int], None]
) -> dict[str, int]:
    """Serve in this process until a graceful shutdown; return the counters.

    The signal handlers are in place before ``announce`` tells the world we
    listen: a SIGTERM sent the moment the line appears must drain, not kill.
    """
    worker = Worker(listener, config)
    worker.install_signals()
    announce(os.getpid())
    try:
        worker.run_et() if mode == "et" else worker.run_lt()
    finally:
        worker.finish()
    return worker.stats.as_dict()


def _child(
    listener: socket.socket,
    config: WorkerConfig,
    mode: str,
    shared: SharedStats,
    slot: int,
    *,
    memory: WorkerMemory,
) -> None:
    """A forked worker's whole life; never returns."""
    status = 1
    try:
        shared.clear(slot)
        worker = Worker(listener, config, shared=shared, slot=slot, memory=memory)
        worker.install_signals()  # before unblocking: a forwarded SIGTERM must find them
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        worker.run_et() if mode == "et" else worker.run_lt()
        worker.finish()
        status = 0
    except BaseException as error:  # report, then leave without unwinding into the parent's code
        print(f"rawepoll serve: worker {slot} failed: {error!r}", file=sys.stderr, flush=True)
    finally:
        sys.stdout.flush()
        os._exit(status)


def supervise(
    listener: socket.socket,
    config: WorkerConfig,
    mode: str,
    workers: int,
    announce: Callable[[int], None],
) -> tuple[dict[str, int], int, bool]:
    """Fork ``workers`` workers and keep them alive until SIGTERM/SIGINT.

    Returns the summed counters, how many workers were restarted, and whether
    every worker exited cleanly from the shutdown.
    """
    shared = SharedStats(workers)
    retired = dict.fromkeys(FIELDS, 0)
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    memory = WorkerMemory()  # inherited by every worker, copy-on-write
    gc.collect()
    gc.freeze()
    slots: dict[int, int] = {}  # pid -> slot

    def spawn(slot: int) -> None:
        sys.stdout.flush()  # else the child would print our buffered output again
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(listener, config, mode, shared, slot, memory=memory)
        slots[pid] = slot

    for slot in range(workers):
        spawn(slot)
    announce(os.getpid())
    restarted = 0
    clean = True
    stopping = False
    kill_at = float("inf")
    next_stats = time.monotonic() + config.stats_interval if config.stats_interval else None
    try:
        while slots:
            now = time.monotonic()
            wait = 1.0 if next_stats is None else max(0.0, min(1.0, next_stats - now))
            info = signal.sigtimedwait(_SIGNALS, wait)
            if (
                info is not None
                and info.si_signo in (signal.SIGTERM, signal.SIGINT)
                and not stopping
            ):
                stopping = True
                listener.close()  # our copy; workers close theirs
                for pid in slots:
                    _kill(pid, signal.SIGTERM)
                kill_at = time.monotonic() + config.drain_timeout + _KILL_GRACE
            for pid, status in _reap():
                if pid not in slots:
                    continue
                slot = slots.pop(pid)
                if stopping and os.waitstatus_to_exitcode(status) != 0:
                    clean = False  # a worker that died earlier was replaced, not failed
                last = shared.read(slot)
                for name in FIELDS:
                    if name != "open":
                        retired[name] += last[name]
                shared.clear(slot)
                if not stopping:
                    restarted += 1
                    print(
                        f"rawepoll serve: worker {slot} (pid {pid}) died "
                        f"({_describe_status(status)}); restarting it",
                        file=sys.stderr,
                        flush=True,
                    )
                    spawn(slot)
            now = time.monotonic()
            if now >= kill_at:
                for pid in slots:
                    _kill(pid, signal.SIGKILL)
                kill_at = float("inf")
            if next_stats is not None and now >= next_stats:
                next_stats = now + config.stats_interval
                counts = shared.total(retired)
                print(
                    format_line(
                        "status", counts, workers=len(slots), per_worker_open=_spread(shared)
                    ),
                    flush=True,
                )
    finally:
        for pid in slots:
            _kill(pid, signal.SIGKILL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    return shared.total(retired), restarted, clean


def _spread(shared: SharedStats) -> str:
    """Open connections per worker slot, e.g. ``512,498,530,507`` (the balance)."""
    return ",".join(str(shared.read(slot)["open"]) for slot in range(shared.slots))


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
