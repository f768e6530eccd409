"""The parent of a run: fork the load processes, start them together, merge what they measured.

Every load process is forked, even for ``procs=1``: the parent only
supervises, so it stays responsive to Ctrl-C and keeps its display off the
measured loop.  The sequence:

1. fork one process per :class:`~rawepoll.tools.loadgen.plan.Share`, each with a
   control socketpair (:mod:`rawepoll.tools.loadgen.channel`);
2. wait until every process is ``ready`` (its connections established or
   failed) -- that is ``connect_s`` -- then say ``go`` to all at once;
3. wait for every ``done``, adding up the counters and decoding each
   process's latency histogram into one.

Bounds: a total wall-clock guard (:attr:`Plan.guard`); when it expires, or on
Ctrl-C (``KeyboardInterrupt`` in the parent; the load processes ignore
SIGINT), the processes are told to ``stop``, get :data:`STOP_GRACE_S` seconds
to report what they have, and are then killed.  Every process is reaped, by
pid (never ``waitpid(-1)``: the caller may have children of its own), on
every way out.  A load process whose parent dies sees end-of-file on its
control socket and exits.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from rawepoll.epoll import Epoll
from rawepoll.events import EventArray
from rawepoll.limits import SetLimit
from rawepoll.tools.loadgen import latency
from rawepoll.tools.loadgen.channel import Channel
from rawepoll.tools.loadgen.display import Monitor, Snapshot, TextMonitor
from rawepoll.tools.loadgen.engine import child_main
from rawepoll.tools.loadgen.plan import STALL_S, Plan, Share, make_plan, port_range
from rawepoll.tools.loadgen.result import LoadInterrupted, LoadResult
from rawepoll.unix import EPOLLIN

__all__ = ["Holding", "execute", "prepare", "run_load"]

STOP_GRACE_S: Final = 5.0  # after "stop", how long the load processes have to report
EXIT_GRACE_S: Final = 5.0  # after its report, how long a load process has to exit
_TICK_S: Final = 0.25
_HELD: Final = {signal.SIGINT, signal.SIGTERM}
_COUNTERS: Final = ("connected", "established", "errors", "mismatches", "messages")


@dataclass(eq=False)
class _Child:
    """The parent's view of one load process."""

    pid: int
    share: Share
    channel: Channel
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    ready: bool = False
    round: dict[str, Any] | None = None  # the last "round" report (Holding.measure)
    done: dict[str, Any] | None = None
    failure: str | None = None
    gone: bool = False  # its control socket reached end-of-file
    reaped: bool = False

    def take(self, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        for name in _COUNTERS:
            if name in message:
                self.counts[name] = int(message[name])
        if kind == "ready":
            self.ready = True
        elif kind == "round":
            self.round = message
        elif kind == "done":
            self.done = message
        elif kind == "failed":
            self.failure = str(message.get("error"))

    @property
    def settled(self) -> bool:
        """Nothing more will come: reported, failed or gone."""
        return self.gone or self.done is not None or self.failure is not None


def prepare(
    *,
    host: str,
    port: int,
    unix: str | None,
    conns: int,
    size: int,
    duration: float | None,
    messages: int | None,
    pipeline: int,
    procs: int,
    source_addrs: list[str] | None,
    cpus: list[int] | None,
    timeout: float | None,
) -> Plan:
    """Check the extras and the limits, and make the plan.

    Raises ``RLIMIT_NOFILE``'s soft limit to the hard limit (:func:`rawepoll.SetLimit`),
    which the load processes inherit.

    Raises:
        ImportError: hdrhistogram is missing (with the pip command that installs it).
        ValueError: an argument or a limit does not allow the run.
    """
    latency.require()
    return make_plan(
        host=host,
        port=port,
        unix=unix,
        conns=conns,
        size=size,
        duration=duration,
        messages=messages,
        pipeline=pipeline,
        procs=procs,
        source_addrs=source_addrs,
        cpus=cpus,
        timeout=timeout,
        fd_limit=SetLimit(),
        ports=port_range(),
    )


def run_load(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    unix: str | None = None,
    conns: int = 100,
    size: int = 64,
    duration: float | None = 10.0,
    messages: int | None = None,
    pipeline: int = 1,
    procs: int = 1,
    source_addrs: list[str] | None = None,
    cpus: list[int] | None = None,
    progress: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> LoadResult:
    """Drive an echo server with closed-loop traffic, every byte verified; block until done.

    ``conns`` connections to ``host:port`` (or the Unix socket ``unix``) are
    spread over ``procs`` forked processes (process ``i`` pinned to
    ``cpus[i % len(cpus)]`` if given) and over ``source_addrs`` (bound before
    connect).  Each connection sends a ``size``-byte message, waits for its
    whole echo, verifies every byte and sends the next, keeping ``pipeline``
    messages in flight.  The measured traffic starts once every connection is
    established and stops after ``duration`` seconds or ``messages`` messages
    in all, whichever comes first (``duration=None``: the count only).

    Args:
        progress: called with a plain progress line, at most once a second.
        timeout: the total wall-clock guard in seconds (default: the ramp
            allowance plus ``duration`` + 20 s, or 600 s for a message count).

    Returns:
        The merged :class:`LoadResult`; errors and mismatches are counted in
        it, not raised.

    Raises:
        ValueError: an argument or a limit (``RLIMIT_NOFILE``, client ports)
            does not allow the run.
        ImportError: hdrhistogram is missing.
        LoadInterrupted: Ctrl-C; its ``result`` holds the partial figures.
    """
    plan = prepare(
        host=host,
        port=port,
        unix=unix,
        conns=conns,
        size=size,
        duration=duration,
        messages=messages,
        pipeline=pipeline,
        procs=procs,
        source_addrs=source_addrs,
        cpus=cpus,
        timeout=timeout,
    )
    return execute(plan, TextMonitor(progress) if progress is not None else None)


def execute(plan: Plan, monitor: Monitor | None = None) -> LoadResult:
    """Run ``plan``: fork, supervise, merge (see the module docstring)."""
    children: list[_Child] = []
    started = time.monotonic()
    connect_s: list[float] = []
    guard_expired = False
    interrupted = False
    try:
        children = _spawn(plan)
        with Epoll() as ep:
            try:
                guard_expired = _supervise(
                    plan,
                    children=children,
                    ep=ep,
                    monitor=monitor,
                    started=started,
                    connect_s=connect_s,
                )
            except KeyboardInterrupt:
                interrupted = True
                _stop(children)
                _collect(children, ep, time.monotonic() + STOP_GRACE_S)
    finally:
        if monitor is not None:
            monitor.close()
        _end(children)
    if not connect_s:
        connect_s.append(time.monotonic() - started)
    result = _merge(plan, children, connect_s[0], guard_expired, interrupted)
    if interrupted:
        raise LoadInterrupted(result)
    return result


class Holding:
    """Connections opened, verified, then held idle until :meth:`release`.

    The load processes of :func:`execute` stopped after step 2, for runs that
    measure what *idle* connections cost (``rawepoll c1m``): every connection
    is established and its message 0 echoed and verified, then held with no
    traffic.  A held connection is still watched: a byte nobody sent, a reset
    or an end-of-file counts as an error in the report :meth:`release` returns.

    Use as a context manager; leaving it reaps every load process, however
    the block ends::

        with Holding(plan) as held:
            seconds = held.open(monitor, deadline)
            ...                      # measure while the connections are held
            result = held.release()
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.children: list[_Child] = []
        self._ep: Epoll | None = None
        self._by_fd: dict[int, _Child] = {}
        self._events = EventArray(max(1, plan.procs))
        self._connect_s = 0.0

    def __enter__(self) -> Holding:
        self.children = _spawn(self.plan)  # before the Epoll: the children need no copy of it
        try:
            self._ep = Epoll()
        except BaseException:
            _end(self.children)
            raise
        self._by_fd = {child.channel.fileno(): child for child in self.children}
        for fd in self._by_fd:
            self._ep.register(fd, EPOLLIN)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            _end(self.children)
        finally:
            if self._ep is not None:
                self._ep.close()

    @property
    def pids(self) -> list[int]:
        """The load processes."""
        return [child.pid for child in self.children]

    @property
    def counts(self) -> dict[str, int]:
        """The counters summed over load processes, as last reported."""
        return {name: sum(child.counts[name] for child in self.children) for name in _COUNTERS}

    def open(self, monitor: Monitor | None, deadline: float) -> float:
        """Wait until every process has its connections up (or failed); the seconds taken.

        Raises:
            TimeoutError: ``deadline`` (monotonic) passed first.
        """
        assert self._ep is not None, "use Holding as a context manager"
        started = time.monotonic()
        while not all(child.ready or child.settled for child in self.children):
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(
                    f"{self.counts['established']} of {self.plan.conns} connections "
                    f"established when the deadline passed"
                )
            _receive(self._ep, self._events, self._by_fd, min(_TICK_S, deadline - now))
            if monitor is not None:
                monitor.update(_snapshot(self.plan, self.children, 0.0))
        self._connect_s = time.monotonic() - started
        if monitor is not None:
            monitor.update(_snapshot(self.plan, self.children, 0.0))
        return self._connect_s

    def measure(self, seconds: float, interval: float = 0.0) -> LoadResult:
        """Closed-loop traffic on the held connections for ``seconds``; its figures.

        ``interval`` > 0 paces it: each connection sends its next message that
        many seconds after an echo instead of at once (so the offered load is
        about ``conns / interval`` messages a second, below saturation).
        The connections stay open and held afterwards.  The error and
        mismatch counts in the result are those since the connections opened.

        Raises:
            TimeoutError: a process did not report within the round's bound.
        """
        assert self._ep is not None, "use Holding as a context manager"
        for child in self.children:
            child.round = None
            if not child.settled:
                _tell(child, "go", seconds=seconds, more=True, interval=interval)
        deadline = time.monotonic() + seconds + 2 * STALL_S + STOP_GRACE_S
        while not all(child.round is not None or child.settled for child in self.children):
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"a load process did not report a {seconds:g} s round")
            _receive(self._ep, self._events, self._by_fd, min(_TICK_S, deadline - now))
        return _merge(self.plan, self.children, self._connect_s, False, False, pick=_round)

    def release(self) -> LoadResult:
        """Tell every process to stop, collect the reports, merge them."""
        assert self._ep is not None, "use Holding as a context manager"
        _stop(self.children)
        _collect(self.children, self._ep, time.monotonic() + STOP_GRACE_S)
        return _merge(self.plan, self.children, self._connect_s, False, False)


# -- the load processes -----------------------------------------------------


def _spawn(plan: Plan) -> list[_Child]:
    children: list[_Child] = []
    try:
        for share in plan.shares:
            ours, theirs = socket.socketpair()
            sys.stdout.flush()  # else the child would hold our buffered output
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                ours.close()
                for child in children:  # the other processes' control sockets are not ours
                    child.channel.close()
                child_main(plan, share, theirs)
            theirs.close()
            children.append(_Child(pid, share, Channel(ours)))
    except BaseException:
        _end(children)
        raise
    return children


def _supervise(
    plan: Plan,
    *,
    children: list[_Child],
    ep: Epoll,
    monitor: Monitor | None,
    started: float,
    connect_s: list[float],
) -> bool:
    """Ready, go, done; returns whether the wall-clock guard expired."""
    by_fd = {child.channel.fileno(): child for child in children}
    for fd in by_fd:
        ep.register(fd, EPOLLIN)
    events = EventArray(max(1, len(children)))
    guard_at = started + plan.guard
    went = 0.0
    while not all(child.settled for child in children):
        now = time.monotonic()
        if now >= guard_at:
            _stop(children)
            _collect(children, ep, now + STOP_GRACE_S)
            return True
        _receive(ep, events, by_fd, min(_TICK_S, guard_at - now))
        if not connect_s and all(child.ready or child.settled for child in children):
            connect_s.append(time.monotonic() - started)
            went = time.monotonic()
            for child in children:
                if child.ready and not child.settled:
                    _tell(child, "go")
        if monitor is not None:
            monitor.update(_snapshot(plan, children, went))
    return False


def _receive(ep: Epoll, events: EventArray, by_fd: dict[int, _Child], timeout: float) -> None:
    n = ep.wait(events, max(0.0, timeout))
    for fd, _ in list(events.ready(n)):
        child = by_fd[fd]
        try:
            messages = child.channel.receive()
        except ValueError as error:
            child.failure = f"load process {child.share.index}: {error}"
            messages = []
            child.channel.eof = True
        for message in messages:
            child.take(message)
        if child.channel.eof:
            child.gone = True
            ep.unregister(fd)


def _tell(child: _Child, what: str, **more: Any) -> None:
    try:
        child.channel.send({"do": what, **more})
    except OSError:
        pass  # it is gone; its end-of-file says so


def _stop(children: list[_Child]) -> None:
    for child in children:
        if not child.settled:
            _tell(child, "stop")


def _collect(children: list[_Child], ep: Epoll, deadline: float) -> None:
    """Read reports until every process has settled or ``deadline`` passed."""
    by_fd = {child.channel.fileno(): child for child in children if not child.gone}
    events = EventArray(max(1, len(children)))
    while not all(child.settled for child in children):
        now = time.monotonic()
        if now >= deadline:
            return
        _receive(ep, events, by_fd, min(_TICK_S, deadline - now))


def _end(children: list[_Child]) -> None:
    """Reap every load process; kill those that do not exit on their own.

    One that has reported gets :data:`EXIT_GRACE_S` to close its sockets and exit.
    SIGINT and SIGTERM wait until every process is reaped (a second Ctrl-C must
    not leave orphans); they are delivered right after.
    """
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        for child in children:
            grace = EXIT_GRACE_S if child.settled else 0.0
            if not child.reaped and _reap(child.pid, grace) is None:
                try:
                    os.kill(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _reap(child.pid, None)
            child.reaped = True
            child.channel.close()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _reap(pid: int, within: float | None) -> int | None:
    """``waitpid(pid)`` within ``within`` seconds (None: however long): status or None."""
    if within is None:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0  # reaped by someone else
    deadline = time.monotonic() + within
    pause = 0.001
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if done:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


# -- merging ------------------------------------------------------------------


def _snapshot(plan: Plan, children: list[_Child], went: float) -> Snapshot:
    now = time.monotonic()
    sums = {name: sum(child.counts[name] for child in children) for name in _COUNTERS}
    phase = "ramp" if not went else "run"
    return Snapshot(
        phase=phase,
        now=now,
        elapsed=now - went if went else 0.0,
        conns=plan.conns,
        connected=sums["connected"],
        established=sums["established"],
        errors=sums["errors"],
        mismatches=sums["mismatches"],
        messages=sums["messages"],
        duration=plan.duration,
        target=plan.messages,
    )


def _round(child: _Child) -> dict[str, Any] | None:
    return child.round


def _final(child: _Child) -> dict[str, Any] | None:
    return child.done


def _merge(
    plan: Plan,
    children: list[_Child],
    connect_s: float,
    guard_expired: bool,
    interrupted: bool,
    *,
    pick: Callable[[_Child], dict[str, Any] | None] = _final,
) -> LoadResult:
    """One result from each child's report (``pick``: the final one unless told)."""
    problems: list[str] = []
    errors = 0
    for child in children:
        report = pick(child)
        if report is not None:
            problems.extend(str(text) for text in report.get("problems", []))
        elif child.failure is not None:
            errors += 1
            problems.append(f"load process {child.share.index} failed: {child.failure}")
        elif not interrupted:
            errors += 1
            problems.append(f"load process {child.share.index} ended without a report")
    if guard_expired:
        errors += 1
        problems.append(f"the wall-clock guard of {plan.guard:g} s expired: run stopped")
    reports = [report for report in map(pick, children) if report is not None]
    messages = sum(int(report["messages"]) for report in reports)
    seconds = max((float(report["seconds"]) for report in reports), default=0.0)
    histogram = latency.merge(str(report["histogram"]) for report in reports)
    figures = latency.percentiles(histogram)
    volume = messages * plan.size
    return LoadResult(
        conns=plan.conns,
        established=sum(child.counts["established"] for child in children),
        messages=messages,
        bytes=volume,
        seconds=seconds,
        msgs_per_s=messages / seconds if seconds > 0 else 0.0,
        mb_per_s=volume / seconds / 1e6 if seconds > 0 else 0.0,
        p50_us=figures["p50_us"],
        p90_us=figures["p90_us"],
        p99_us=figures["p99_us"],
        p999_us=figures["p999_us"],
        max_us=figures["max_us"],
        connect_s=connect_s,
        errors=errors + sum(child.counts["errors"] for child in children),
        mismatches=sum(child.counts["mismatches"] for child in children),
        procs=plan.procs,
        loadgen_cpu_s=sum(float(report["cpu_s"]) for report in reports),
        size=plan.size,
        pipeline=plan.pipeline,
        interrupted=interrupted or guard_expired,
        problems=problems,
    )
