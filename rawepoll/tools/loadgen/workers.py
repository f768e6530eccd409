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

import enum
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from rawepoll.epoll import Epoll
from rawepoll.events import EventArray
from rawepoll.limits import SetLimit
from rawepoll.tools.loadgen import latency
from rawepoll.tools.loadgen.channel import Channel
from rawepoll.tools.loadgen.control import (
    Counts,
    Done,
    Failed,
    Go,
    Message,
    Progress,
    Ready,
    Report,
    Round,
    Settled,
    Stop,
)
from rawepoll.tools.loadgen.display import Monitor, Snapshot, TextMonitor
from rawepoll.tools.loadgen.engine import Engine, child_main
from rawepoll.tools.loadgen.plan import STALL_S, Plan, Share, make_plan, port_range
from rawepoll.tools.loadgen.result import LoadInterrupted, LoadResult
from rawepoll.tools.loadgen.spec import LoadSpec
from rawepoll.tools.loadgen.subscriber import Subscribers
from rawepoll.tools.loadgen.wsengine import WebSocketEngine
from rawepoll.unix import EPOLLIN

__all__ = ["Holding", "engine_for", "execute", "prepare", "run_load"]

STOP_GRACE_S: Final = 5.0  # after "stop", how long the load processes have to report
EXIT_GRACE_S: Final = 5.0  # after its report, how long a load process has to exit
_TICK_S: Final = 0.25
_HELD: Final = {signal.SIGINT, signal.SIGTERM}


@dataclass(eq=False)
class _Child:
    """The parent's view of one load process."""

    pid: int
    share: Share
    channel: Channel
    counts: Counts = field(default_factory=Counts)
    ready: bool = False
    round: Report | None = None  # the last round's report (Holding.measure)
    reached: int = 0  # broadcast: messages settled on every subscriber of the process (Settled)
    done: Report | None = None
    failure: str | None = None
    gone: bool = False  # its control socket reached end-of-file
    reaped: bool = False

    def take(self, message: Message) -> None:
        match message:
            case Progress(counts=counts):
                self.counts = counts
            case Ready(counts=counts):
                self.counts, self.ready = counts, True
            case Settled(count=count):
                self.reached = count
            case Round(report=report):
                self.counts, self.round = report.counts, report
            case Done(report=report):
                self.counts, self.done = report.counts, report
            case Failed(error=error):
                self.failure = error

    @property
    def settled(self) -> bool:
        """Nothing more will come: reported, failed or gone."""
        return self.gone or self.done is not None or self.failure is not None


class _Ending(enum.Enum):
    """How a run ended."""

    FINISHED = "finished"
    GUARD = "guard"  # the wall-clock guard expired: the processes were stopped
    INTERRUPTED = "interrupted"  # Ctrl-C (or SIGTERM turned into it)


@dataclass
class _Timing:
    """When a run started, and when it went from the ramp to the measured traffic."""

    started: float  # monotonic seconds
    connect_s: float | None = None  # seconds until every process was ready
    went: float = 0.0  # when "go" was said (monotonic); 0: not yet


def prepare(spec: LoadSpec) -> Plan:
    """Check the extras and the limits, and make the plan.

    Raises ``RLIMIT_NOFILE``'s soft limit to the hard limit (:func:`rawepoll.SetLimit`),
    which the load processes inherit.

    Raises:
        ImportError: hdrhistogram is missing (with the pip command that installs it).
        ValueError: a limit does not allow the run.
    """
    latency.require()
    return make_plan(spec, fd_limit=SetLimit(), ports=port_range())


def run_load(*, progress: Callable[[str], None] | None = None, **options: Any) -> LoadResult:
    """Drive an echo server with closed-loop traffic, every byte verified; block until done.

    ``options`` are the fields of :class:`~rawepoll.tools.loadgen.spec.LoadSpec`,
    each with its default there: ``conns`` connections to ``host:port`` (or the
    Unix socket ``unix``) are spread over ``procs`` forked processes (process
    ``i`` pinned to ``cpus[i % len(cpus)]`` if given) and over ``source_addrs``
    (bound before connect).  Each connection sends a ``size``-byte message,
    waits for its whole echo, verifies every byte and sends the next, keeping
    ``pipeline`` messages in flight.  The measured traffic starts once every
    connection is established and stops after ``duration`` seconds or
    ``messages`` messages in all, whichever comes first (``duration=None``: the
    count only).  ``timeout`` is the total wall-clock guard in seconds
    (default: the ramp allowance plus ``duration`` + 20 s, or 600 s for a
    message count).

    Args:
        progress: called with a plain progress line, at most once a second.

    Returns:
        The merged :class:`LoadResult`; errors and mismatches are counted in
        it, not raised.

    Raises:
        TypeError: an option that :class:`~rawepoll.tools.loadgen.spec.LoadSpec`
            does not have.
        ValueError: an argument or a limit (``RLIMIT_NOFILE``, client ports)
            does not allow the run.
        ImportError: hdrhistogram is missing.
        LoadInterrupted: Ctrl-C; its ``result`` holds the partial figures.
    """
    plan = prepare(LoadSpec(**options))
    return execute(plan, TextMonitor(progress) if progress is not None else None)


def execute(plan: Plan, monitor: Monitor | None = None) -> LoadResult:
    """Run ``plan``: fork, supervise, merge (see the module docstring)."""
    children: list[_Child] = []
    timing = _Timing(started=time.monotonic())
    ending = _Ending.FINISHED
    try:
        children = _spawn(plan)
        with Epoll() as ep:
            try:
                if _supervise(plan, children, ep, monitor, timing):
                    ending = _Ending.GUARD
            except KeyboardInterrupt:
                ending = _Ending.INTERRUPTED
                _stop(children)
                _collect(children, ep, time.monotonic() + STOP_GRACE_S)
    finally:
        if monitor is not None:
            monitor.close()
        _end(children)
    if timing.connect_s is None:
        timing.connect_s = time.monotonic() - timing.started
    result = _merge(plan, children, timing.connect_s, ending)
    if ending is _Ending.INTERRUPTED:
        raise LoadInterrupted(result)
    return result


class Holding:
    """Connections opened, verified, then held idle until :meth:`release`.

    The load processes of :func:`execute` stopped after step 2, for runs that
    measure what *idle* connections cost (``rawepoll c1m``): every connection
    is established and its message 0 echoed and verified, then held with no
    traffic.  A held connection is still watched: a byte nobody sent, a reset
    or an end-of-file counts as an error in the report :meth:`release` returns.

    The load processes run ``engine`` (default: :func:`engine_for` the plan),
    e.g. :class:`~rawepoll.tools.loadgen.wsholding.EchoedSubscribers` for
    WebSocket subscribers each verified by an echo.

    Use as a context manager; leaving it reaps every load process, however
    the block ends::

        with Holding(plan) as held:
            seconds = held.open(monitor, deadline)
            ...                      # measure while the connections are held
            result = held.release()
    """

    def __init__(self, plan: Plan, engine: type[Engine] | None = None) -> None:
        self.plan = plan
        self.engine = engine or engine_for(plan)  # what the load processes run
        self.children: list[_Child] = []
        self._ep: Epoll | None = None
        self._by_fd: dict[int, _Child] = {}
        self._events = EventArray(max(1, plan.procs))
        self._connect_s = 0.0

    def __enter__(self) -> Holding:
        self.children = _spawn(self.plan, self.engine)  # before the Epoll: none of it in them
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
        return asdict(_total(self.children))

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
                _tell(child, Go(seconds=seconds, more=True, interval=interval))
        deadline = time.monotonic() + seconds + 2 * STALL_S + STOP_GRACE_S
        while not all(child.round is not None or child.settled for child in self.children):
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"a load process did not report a {seconds:g} s round")
            _receive(self._ep, self._events, self._by_fd, min(_TICK_S, deadline - now))
        return _merge(self.plan, self.children, self._connect_s, pick=_round)

    def release(self) -> LoadResult:
        """Tell every process to stop, collect the reports, merge them."""
        self.finish()
        return _merge(self.plan, self.children, self._connect_s)

    def poll(self, timeout: float) -> None:
        """Take what the load processes say within ``timeout`` seconds (their messages
        update :attr:`children`)."""
        assert self._ep is not None, "use Holding as a context manager"
        _receive(self._ep, self._events, self._by_fd, timeout)

    def finish(self) -> None:
        """Tell every process that has not reported its last to stop; collect the reports."""
        assert self._ep is not None, "use Holding as a context manager"
        _stop(self.children)
        _collect(self.children, self._ep, time.monotonic() + STOP_GRACE_S)


# -- the load processes -----------------------------------------------------


def engine_for(plan: Plan) -> type[Engine]:
    """The engine of the plan's load processes: subscribers, WebSocket echo or raw TCP echo."""
    if plan.spec.broadcast:
        return Subscribers
    return WebSocketEngine if plan.spec.protocol == "websocket" else Engine


def _spawn(plan: Plan, engine: type[Engine] | None = None) -> list[_Child]:
    children: list[_Child] = []
    engine = engine or engine_for(plan)
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
                child_main(plan, share, theirs, engine)
            theirs.close()
            children.append(_Child(pid, share, Channel(ours)))
    except BaseException:
        _end(children)
        raise
    return children


def _supervise(
    plan: Plan, children: list[_Child], ep: Epoll, monitor: Monitor | None, timing: _Timing
) -> bool:
    """Ready, go, done; returns whether the wall-clock guard expired."""
    by_fd = {child.channel.fileno(): child for child in children}
    for fd in by_fd:
        ep.register(fd, EPOLLIN)
    events = EventArray(max(1, len(children)))
    guard_at = timing.started + plan.guard
    while not all(child.settled for child in children):
        now = time.monotonic()
        if now >= guard_at:
            _stop(children)
            _collect(children, ep, now + STOP_GRACE_S)
            return True
        _receive(ep, events, by_fd, min(_TICK_S, guard_at - now))
        if timing.connect_s is None and all(child.ready or child.settled for child in children):
            _go(children, timing)
        if monitor is not None:
            monitor.update(_snapshot(plan, children, timing.went))
    return False


def _go(children: list[_Child], timing: _Timing) -> None:
    """Every process is ready: start the measured traffic in all at once."""
    timing.connect_s = time.monotonic() - timing.started
    timing.went = time.monotonic()
    for child in children:
        if child.ready and not child.settled:
            _tell(child, Go())


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


def _tell(child: _Child, command: Go | Stop) -> None:
    try:
        child.channel.send(command)
    except OSError:
        pass  # it is gone; its end-of-file says so


def _stop(children: list[_Child]) -> None:
    for child in children:
        if not child.settled:
            _tell(child, Stop())


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


def _total(children: list[_Child]) -> Counts:
    return sum((child.counts for child in children), Counts())


def _snapshot(plan: Plan, children: list[_Child], went: float) -> Snapshot:
    now = time.monotonic()
    sums = _total(children)
    return Snapshot(
        phase="run" if went else "ramp",
        now=now,
        elapsed=now - went if went else 0.0,
        conns=plan.conns,
        connected=sums.connected,
        established=sums.established,
        errors=sums.errors,
        mismatches=sums.mismatches,
        messages=sums.messages,
        duration=plan.spec.duration,
        target=plan.spec.messages,
    )


def _round(child: _Child) -> Report | None:
    return child.round


def _final(child: _Child) -> Report | None:
    return child.done


def _merge(
    plan: Plan,
    children: list[_Child],
    connect_s: float,
    ending: _Ending = _Ending.FINISHED,
    pick: Callable[[_Child], Report | None] = _final,
) -> LoadResult:
    """One result from each child's report (``pick``: the final one unless told)."""
    reports = [report for report in map(pick, children) if report is not None]
    errors, problems = _problems(plan, children, ending, pick)
    messages = sum(report.counts.messages for report in reports)
    seconds = max((report.seconds for report in reports), default=0.0)
    figures = latency.percentiles(latency.merge(report.histogram for report in reports))
    volume = messages * plan.spec.size
    counts = _total(children)
    return LoadResult(
        conns=plan.conns,
        established=counts.established,
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
        errors=errors + counts.errors,
        mismatches=counts.mismatches,
        procs=plan.procs,
        loadgen_cpu_s=sum(report.cpu_s for report in reports),
        size=plan.spec.size,
        pipeline=plan.spec.pipeline,
        interrupted=ending is not _Ending.FINISHED,
        problems=problems,
        protocol=plan.spec.protocol,
    )


def _problems(
    plan: Plan, children: list[_Child], ending: _Ending, pick: Callable[[_Child], Report | None]
) -> tuple[int, list[str]]:
    """The errors of the run itself (not of its connections), and every problem in words."""
    problems: list[str] = []
    errors = 0
    for child in children:
        report = pick(child)
        if report is not None:
            problems.extend(report.problems)
        elif child.failure is not None:
            errors += 1
            problems.append(f"load process {child.share.index} failed: {child.failure}")
        elif ending is not _Ending.INTERRUPTED:
            errors += 1
            problems.append(f"load process {child.share.index} ended without a report")
    if ending is _Ending.GUARD:
        errors += 1
        problems.append(f"the wall-clock guard of {plan.guard:g} s expired: run stopped")
    return errors, problems
