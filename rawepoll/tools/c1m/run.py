"""One measured million-connection run: :func:`run_c1m`.

The sequence, every step bounded in time:

1. **checks** -- root, ``fs.file-max`` headroom for two descriptors per
   connection, memory for the kernel's ~10 KB per connection, the extras;
2. **namespace** -- :func:`rawepoll.tools.c1m.netns.enter`;
3. **server** -- ``rawepoll serve`` with as many workers as ``RLIMIT_NOFILE``
   requires (``ceil(conns / (limit - 32))``), one listener shared with
   ``EPOLLEXCLUSIVE``, in a session of its own (the run stops it, not Ctrl-C),
   driven by :class:`rawepoll.tools.serverproc.ServerProcess`: its ``ready``
   event gives the port, its ``exit`` event the counters;
4. **baseline** -- ``active`` connections echo for ``baseline`` seconds with
   nothing else open, each sending ``rate`` messages a second (paced, so the
   machine is not saturated and latency is service time, not queueing):
   their latency percentiles;
5. **open** -- ``conns - active`` connections over as many load processes as
   the descriptor limit requires and enough source addresses of 127.0.0.0/8
   to use at most a quarter of each one's client ports; each connection's
   message 0 is echoed and verified before it counts as established
   (:class:`rawepoll.tools.loadgen.workers.Holding`);
6. **hold** -- memory is read (server PSS/RSS, slab growth), then the
   ``active`` connections echo again for ``hold`` seconds while the others
   sit idle: epoll's promise is that they cost the active ones nothing;
7. **release** -- the held connections report (a reset, an end-of-file or a
   stray byte during the hold is an error) and close; the active set's
   baseline is measured once more (drift check); the server is stopped with
   SIGTERM and must exit cleanly.

With ``protocol="websocket"`` the server speaks WebSocket (no heartbeat, a
control socket), the held connections are subscribers of one topic, each
upgraded and verified by one echo before it counts as established, and
between steps 6 and 7 one message is published to all of them through the
control socket: every one must receive it exactly once, and the delivery
times are measured (:mod:`rawepoll.tools.c1m.websocket`).  The active set,
if any, echoes over WebSocket too and is not subscribed.

Each step is a function of its own (:func:`preflight`, then the private
``_enter_namespace`` ... ``_hold``), reading what the steps share from one
frozen ``_Run`` and returning its figures as a frozen record; :func:`run_c1m`
calls them in order and ``_result`` turns the records into a :class:`C1MResult`.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from rawepoll.limits import SetLimit
from rawepoll.server import FD_RESERVE as SERVER_FD_RESERVE
from rawepoll.tools.c1m import measure, netns, websocket
from rawepoll.tools.c1m.websocket import BroadcastFigures
from rawepoll.tools.loadgen import latency
from rawepoll.tools.loadgen.display import Monitor
from rawepoll.tools.loadgen.engine import Engine
from rawepoll.tools.loadgen.plan import FD_RESERVE as LOAD_FD_RESERVE
from rawepoll.tools.loadgen.plan import Plan, port_range
from rawepoll.tools.loadgen.result import LoadResult
from rawepoll.tools.loadgen.spec import LoadSpec
from rawepoll.tools.loadgen.workers import Holding, prepare
from rawepoll.tools.loadgen.wsholding import EchoedSubscribers
from rawepoll.tools.serverproc import ServerProcess, Stopped

__all__ = ["C1MConfig", "C1MResult", "ehash_buckets", "plan_processes", "run_c1m"]

KERNEL_BYTES_PER_CONN: Final = 12_000  # both ends' slab, with room (measured ~9.6-10 KB)
FILE_HEADROOM: Final = 10_000  # file structures left for everyone else
SERVER_START_S: Final = 60.0
SERVER_STOP_S: Final = 60.0
SOURCE_FILL: Final = 4  # use at most 1/SOURCE_FILL of a source address's client ports
HOST: Final = "127.0.0.1"
PROTOCOLS: Final = ("tcp", "websocket")


@dataclass
class C1MConfig:
    """What ``rawepoll c1m`` takes; the defaults are the CLI's."""

    conns: int = 1_000_000
    hold: float = 30.0
    active: int = 1000
    rate: float = 10.0  # messages a second per active connection; 0: closed loop, saturating
    baseline: float = 10.0
    size: int = 64
    mode: str = "lt"
    balance: str = "fill"
    ehash: int | None = None  # buckets of the namespace's own TCP hash table; None: 2 per conn
    keep_netns: str | None = None
    protocol: str = "tcp"  # or "websocket": subscribers verified by an echo, then a broadcast
    handler: str | None = None  # the server's --handler (MODULE:CLASS); None: its default

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting that makes no sense."""
        if self.conns < 1:
            raise ValueError(f"--conns must be at least 1, got {self.conns}")
        if not 0 <= self.active < self.conns:
            raise ValueError(f"--active must be in 0..{self.conns - 1} (fewer than --conns)")
        for name in ("hold", "baseline"):
            value = getattr(self, name)
            if not (0 < value < math.inf):
                raise ValueError(f"--{name} must be a positive number of seconds, got {value}")
        if not 0 <= self.rate < math.inf:
            raise ValueError(f"--active-rate must be 0 or more, got {self.rate}")
        if self.mode not in ("lt", "et"):
            raise ValueError(f"--mode must be lt or et, got {self.mode!r}")
        if self.balance not in ("fill", "rotate"):
            raise ValueError(f"--balance must be fill or rotate, got {self.balance!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"--protocol must be tcp or websocket, got {self.protocol!r}")


@dataclass
class C1MResult:
    """What a run measured (``--json`` prints :meth:`as_dict`)."""

    conns: int
    active: int
    established: int
    verified: int
    seconds_to_establish: float
    connect_rate: float
    open_server_cpu_s: tuple[float, float]  # (user, system) while the connections opened
    open_load_cpu_s: tuple[float, float]
    server_rss_bytes: int
    server_pss_bytes: int
    server_pss_idle_bytes: int  # before any connection
    bytes_per_conn: float  # total server PSS / established, interpreters included
    pss_growth_per_conn: float  # (PSS with the connections - PSS before) / established
    kernel_slab_bytes_per_conn: float  # both ends, machine-wide
    active_p50_us: float
    active_p99_us: float
    baseline_p50_us: float
    baseline_p99_us: float
    baseline_after_p50_us: float  # the same, once the held connections are closed again
    baseline_after_p99_us: float
    active_rate: float  # messages a second per active connection (0: closed loop)
    active_messages: int
    baseline_messages: int
    errors: int
    mismatches: int
    refused: int
    server_restarts: int
    server_clean_exit: bool
    workers: int
    server_processes: int
    load_procs: int
    source_addrs: int
    hold_s: float
    conntrack_entries: int | None
    sysctls: dict[str, str]
    problems: list[str] = field(default_factory=list)
    protocol: str = "tcp"
    broadcast: BroadcastFigures | None = None  # a WebSocket run's one broadcast to all

    @property
    def held(self) -> int:
        """The connections held (every one but the active set's)."""
        return self.conns - self.active

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def p99_ratio(self) -> float:
        """Active p99 with every connection open over the baseline p99."""
        return self.active_p99_us / self.baseline_p99_us if self.baseline_p99_us else math.nan

    @property
    def ok(self) -> bool:
        """Every connection established and verified; no error, mismatch or refusal."""
        return (
            self.established == self.conns
            and self.verified == self.established
            and self.errors == 0
            and self.mismatches == 0
            and self.refused == 0
            and self.server_clean_exit
            and (self.broadcast is None or self.broadcast.ok)
        )


@dataclass(frozen=True)
class Processes:
    """How a run is spread: server workers, load processes, source addresses."""

    workers: int
    load_procs: int
    sources: tuple[str, ...]


def plan_processes(conns: int, active: int, fd_limit: int, ports: int) -> Processes:
    """Workers, load processes and source addresses for ``conns`` connections.

    Each process holds at most ``fd_limit`` descriptors, less what it keeps for
    itself; each source address has ``ports`` client ports, of which a run uses
    at most a quarter so the kernel finds a free one at once.
    """
    workers = math.ceil(conns / (fd_limit - SERVER_FD_RESERVE))
    held = conns - active
    load_procs = math.ceil(held / (fd_limit - LOAD_FD_RESERVE))
    count = max(1, math.ceil(held / (ports // SOURCE_FILL)))
    # 127.1.0.1, 127.1.0.2, ...: never 127.0.0.1, which the active set uses
    sources = tuple(f"127.1.{k // 250}.{k % 250 + 1}" for k in range(count))
    return Processes(workers=workers, load_procs=load_procs, sources=sources)


def ehash_buckets(conns: int) -> int:
    """A bucket per socket, both ends on loopback: the next power of two, 2**10 .. 2**24."""
    return 1 << max(10, min(24, (2 * conns - 1).bit_length()))


def preflight(config: C1MConfig) -> None:
    """Raise ``PermissionError``/``ValueError``/``ImportError`` if the run cannot work here."""
    config.check()
    reason = netns.why_not()
    if reason is not None:
        raise PermissionError(reason)
    latency.require()
    measure.process_tree_memory(os.getpid())  # psutil present
    if config.protocol == "websocket":
        websocket.require()
    allocated, file_max = measure.file_handles()
    need = 2 * config.conns + FILE_HEADROOM
    if allocated + need > file_max:
        raise ValueError(
            f"{config.conns} connections need {need} file structures (two per connection), "
            f"but fs.file-max is {file_max} with {allocated} in use: raise it "
            f"(sysctl -w fs.file-max={allocated + need}) or ask for fewer --conns"
        )
    available = measure.meminfo().get("MemAvailable", 0)
    if config.conns * KERNEL_BYTES_PER_CONN > available:
        raise ValueError(
            f"{config.conns} connections need about {config.conns * KERNEL_BYTES_PER_CONN >> 20} "
            f"MiB of kernel memory, but only {available >> 20} MiB is available"
        )


def run_c1m(
    config: C1MConfig,
    *,
    say: Callable[[str], None],
    monitor: Callable[[int], Monitor | None],
) -> C1MResult:
    """Do the whole run (see the module docstring); errors are counted, not raised.

    Args:
        say: takes one line of narration per step.
        monitor: makes the progress display for ``n`` connections being opened.

    Raises:
        PermissionError, ValueError, ImportError: from the checks, before anything starts.
        ServerError: the server did not start (:mod:`rawepoll.tools.serverproc`).
        TimeoutError: the connections did not open in time.
    """
    preflight(config)
    procs = _layout(config, _enter_namespace(config), say)
    with contextlib.ExitStack() as stack:  # the server first, then its control socket's directory
        protocol = _protocol(config, stack)
        server = _start_server(config, procs.workers, protocol)
        # killed whatever happens: nothing of it outlives the run
        stack.enter_context(contextlib.closing(server))
        run = _Run(config, procs, server, say, monitor, protocol)
        measured = _measure(run)
        stopped = server.stop()  # step 7's end: SIGTERM, and a clean exit expected
    return _result(run, measured, stopped)


@dataclass(frozen=True)
class _Protocol:
    """What the run's protocol changes: the server's options, the connections' settings."""

    server_args: tuple[str, ...] = ()
    active: dict[str, Any] = field(default_factory=dict)  # the active set's LoadSpec fields
    held: dict[str, Any] = field(default_factory=dict)  # ... the held connections'
    engine: type[Engine] | None = None  # the held connections' load processes (None: the plan's)
    broadcasts: bool = False  # after the hold, one message to every held connection


def _protocol(config: C1MConfig, stack: contextlib.ExitStack) -> _Protocol:
    """TCP: the defaults.  WebSocket: a control socket in a directory ``stack`` removes."""
    if config.protocol == "tcp":
        return _Protocol()
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="rawepoll-c1m-"))
    control = os.path.join(directory, "control")
    return _Protocol(
        server_args=websocket.server_args(control),
        active={"protocol": "websocket"},
        held=websocket.spec_fields(control),
        engine=EchoedSubscribers,
        broadcasts=True,
    )


@dataclass(frozen=True)
class _Run:
    """What every step of a run reads: the settings, the layout, the server, the narrator."""

    config: C1MConfig
    procs: Processes
    server: ServerProcess
    say: Callable[[str], None]
    monitor: Callable[[int], Monitor | None]
    protocol: _Protocol


@dataclass(frozen=True)
class _Footprint:
    """The server's memory and the kernel's slab, at one moment."""

    memory: measure.ProcessMemory
    slab: int

    @classmethod
    def now(cls, pid: int) -> _Footprint:
        slab = measure.slab_bytes()
        return cls(measure.process_tree_memory(pid), slab)


@dataclass(frozen=True)
class _Opened:
    """How long opening the held connections took, and the CPU it cost each side."""

    seconds: float
    server_cpu: tuple[float, float]  # (user, system)
    load_cpu: tuple[float, float]


@dataclass(frozen=True)
class _Held:
    """What the hold step measured: opening, memory with everything open, the active set."""

    opened: _Opened
    full: _Footprint
    loaded: LoadResult | None  # the active set's round during the hold (None: no active set)
    released: LoadResult  # the held connections' report
    broadcast: BroadcastFigures | None  # WebSocket: the one message to every held connection


@dataclass(frozen=True)
class _Measured:
    """Every figure of a run, before the server is stopped."""

    idle: _Footprint  # before any connection
    held: _Held
    baseline: LoadResult | None  # the active set alone, before and after the hold
    after: LoadResult | None
    finals: tuple[LoadResult, ...]  # every connection's report: the held, then the active


@dataclass(frozen=True)
class _Latency:
    """An active-set round's figures in the report: zeros when there was no active set."""

    p50_us: float = 0.0
    p99_us: float = 0.0
    messages: int = 0

    @classmethod
    def of(cls, result: LoadResult | None) -> _Latency:
        if result is None:
            return cls()
        return cls(result.p50_us, result.p99_us, result.messages)


@dataclass(frozen=True)
class _ActiveSet:
    """The ``active`` connections, echoing in measured rounds; with ``active=0``, none."""

    holding: Holding | None
    interval: float  # between one connection's messages (0: closed loop)
    say: Callable[[str], None]

    def round(self, label: str, seconds: float) -> LoadResult | None:
        """Echo for ``seconds`` at the set's pace and narrate it (None without an active set)."""
        if self.holding is None:
            return None
        result = self.holding.measure(seconds, self.interval)
        self.say(
            f"{label}: {result.messages:,} echoes in {result.seconds:.1f} s "
            f"({result.msgs_per_s:,.0f}/s), p50 {result.p50_us:,.0f} us, "
            f"p99 {result.p99_us:,.0f} us, {result.errors} errors, "
            f"{result.mismatches} mismatches"
        )
        return result

    def hold(self, seconds: float) -> LoadResult | None:
        """The round while every connection is open; without an active set, just the wait."""
        if self.holding is None:
            time.sleep(seconds)  # holding is the point: nothing to measure meanwhile
            return None
        return self.round("hold, every connection open", seconds)

    def release(self) -> tuple[LoadResult, ...]:
        """The active connections' report, once closed (nothing without an active set)."""
        return () if self.holding is None else (self.holding.release(),)


# -- the steps, in order ------------------------------------------------------


def _enter_namespace(config: C1MConfig) -> str:
    """Step 2: into the network namespace; its name for the narration."""
    buckets = config.ehash if config.ehash is not None else ehash_buckets(config.conns)
    netns.enter(config.keep_netns, buckets)
    return f"network namespace {config.keep_netns}" if config.keep_netns else "a private netns"


def _layout(config: C1MConfig, where: str, say: Callable[[str], None]) -> Processes:
    """Workers, load processes and source addresses for this machine's limits."""
    fd_limit = SetLimit()
    procs = plan_processes(config.conns, config.active, fd_limit, port_range())
    say(
        f"{where}: {config.conns:,} connections = {procs.workers} server workers, "
        f"{procs.load_procs} load processes over {len(procs.sources)} source addresses "
        f"(RLIMIT_NOFILE {fd_limit}, {port_range()} client ports per address)"
    )
    return procs


def _start_server(config: C1MConfig, workers: int, protocol: _Protocol) -> ServerProcess:
    """Step 3: ``rawepoll serve`` in a session of its own, once it is ready.

    Raises:
        ServerError: it did not start within ``SERVER_START_S``.
    """
    return ServerProcess.serve(
        "--host", HOST,
        "--port", "0",
        "--workers", str(workers),
        "--mode", config.mode,
        "--backlog", "65535",
        "--balance", config.balance,
        "--drain-timeout", "10",
        *protocol.server_args,
        *(("--handler", config.handler) if config.handler else ()),
        start_bound=SERVER_START_S,
        stop_bound=SERVER_STOP_S,
    )  # fmt: skip


def _measure(run: _Run) -> _Measured:
    """Steps 4 to 7: baseline, open, hold, release, baseline again."""
    idle = _idle(run)
    with contextlib.ExitStack() as stack:
        active = _open_active(run, stack)
        baseline = active.round("baseline, only the active set open", run.config.baseline)
        held = _hold(run, active, idle)
        after = active.round("baseline again, the held connections closed", run.config.baseline)
        finals = (held.released, *active.release())
    return _Measured(idle=idle, held=held, baseline=baseline, after=after, finals=finals)


def _idle(run: _Run) -> _Footprint:
    """Step 3's end: the server's footprint before any connection."""
    idle = _Footprint.now(run.server.pid)
    run.say(
        f"server: pid {run.server.pid}, {idle.memory.processes} processes, "
        f"PSS {idle.memory.pss_bytes / 2**20:.1f} MiB, "
        f"RSS {idle.memory.rss_bytes / 2**20:.1f} MiB before any connection"
    )
    return idle


def _open_active(run: _Run, stack: contextlib.ExitStack) -> _ActiveSet:
    """Step 4's connections: the active set, opened and verified, closed by ``stack``."""
    config = run.config
    interval = 1 / config.rate if config.rate else 0.0
    if not config.active:
        return _ActiveSet(None, interval, run.say)
    plan = _plan(run, config.active, 1, (), run.protocol.active)
    holding = stack.enter_context(Holding(plan))
    holding.open(None, _open_deadline(config.active))
    return _ActiveSet(holding, interval, run.say)


def _hold(run: _Run, active: _ActiveSet, idle: _Footprint) -> _Held:
    """Steps 5 to 7 for the held connections: open, measure, hold, release."""
    config, procs = run.config, run.procs
    held = config.conns - config.active
    plan = _plan(run, held, procs.load_procs, procs.sources, run.protocol.held)
    with Holding(plan, run.protocol.engine) as holding:
        opened = _open(run, holding, plan.conns)
        full = _full(run, idle)
        loaded = active.hold(config.hold)
        sent = websocket.send_one(holding, run.server.pid) if run.protocol.broadcasts else None
        released = holding.release()
        broadcast = _broadcast(run, holding, sent, opened)
    closing = _wait_closed(2 * config.active + 64)
    run.say(
        f"release: {released.established:,} held connections reported and closed; "
        f"the server had closed its ends {closing:.1f} s later"
    )
    return _Held(opened=opened, full=full, loaded=loaded, released=released, broadcast=broadcast)


def _broadcast(
    run: _Run, holding: Holding, sent: websocket.Sent | None, opened: _Opened
) -> BroadcastFigures | None:
    """Between steps 6 and 7 of a WebSocket run: the broadcast's figures, narrated."""
    if sent is None:
        return None
    b = websocket.figures(holding, sent, opened.seconds)
    run.say(
        f"broadcast: 1 message to {b.subscribers:,} subscribers, {b.delivered:,} delivered "
        f"and verified, {b.lost:,} lost, {b.duplicates:,} duplicates; delivery time "
        f"p50 {b.p50_us / 1e3:,.0f} ms, p99 {b.p99_us / 1e3:,.0f} ms, to the last "
        f"{b.max_us / 1e3:,.0f} ms (first after {b.first_us / 1e3:,.1f} ms); CPU per delivery: "
        f"server {b.server_us_per_delivery:.1f} us, load {b.load_us_per_delivery:.1f} us"
    )
    return b


def _open(run: _Run, holding: Holding, conns: int) -> _Opened:
    """Step 5: open and verify ``conns`` connections; the time and CPU it took."""
    server_cpu = measure.process_tree_cpu([run.server.pid])
    load_cpu = measure.process_tree_cpu(holding.pids)
    seconds = holding.open(run.monitor(conns), _open_deadline(conns))
    server_cpu = _spent(server_cpu, measure.process_tree_cpu([run.server.pid]))
    load_cpu = _spent(load_cpu, measure.process_tree_cpu(holding.pids))
    counts = holding.counts
    each = 1e6 / max(1, counts["established"])
    run.say(
        f"open: {counts['established']:,} established and verified in {seconds:.1f} s "
        f"({counts['established'] / seconds:,.0f}/s), {counts['errors']} errors; "
        f"CPU per connection: server {server_cpu[0] * each:.0f} us user + "
        f"{server_cpu[1] * each:.0f} us system, load {load_cpu[0] * each:.0f} us user"
        f" + {load_cpu[1] * each:.0f} us system"
    )
    return _Opened(seconds=seconds, server_cpu=server_cpu, load_cpu=load_cpu)


def _full(run: _Run, idle: _Footprint) -> _Footprint:
    """Step 6: the server's footprint with every connection open."""
    full = _Footprint.now(run.server.pid)
    run.say(
        f"server: PSS {full.memory.pss_bytes / 2**20:.1f} MiB, "
        f"RSS {full.memory.rss_bytes / 2**20:.1f} MiB; "
        f"kernel slab +{(full.slab - idle.slab) / 2**20:,.0f} MiB"
    )
    return full


def _result(run: _Run, measured: _Measured, stopped: Stopped) -> C1MResult:
    """The report: the figures measured, and how the server ended."""
    config, procs, held = run.config, run.procs, measured.held
    idle, full, opened = measured.idle.memory, held.full.memory, held.opened
    established = sum(r.established for r in measured.finals)
    per = max(1, established)
    loaded, baseline, after = map(_Latency.of, (held.loaded, measured.baseline, measured.after))
    return C1MResult(
        conns=config.conns,
        active=config.active,
        established=established,
        verified=established,  # established means: message 0 echoed and verified
        seconds_to_establish=opened.seconds,
        connect_rate=held.released.established / opened.seconds if opened.seconds > 0 else 0.0,
        open_server_cpu_s=opened.server_cpu,
        open_load_cpu_s=opened.load_cpu,
        server_rss_bytes=full.rss_bytes,
        server_pss_bytes=full.pss_bytes,
        server_pss_idle_bytes=idle.pss_bytes,
        bytes_per_conn=full.pss_bytes / per,
        pss_growth_per_conn=(full.pss_bytes - idle.pss_bytes) / per,
        kernel_slab_bytes_per_conn=(held.full.slab - measured.idle.slab) / per,
        active_p50_us=loaded.p50_us,
        active_p99_us=loaded.p99_us,
        baseline_p50_us=baseline.p50_us,
        baseline_p99_us=baseline.p99_us,
        baseline_after_p50_us=after.p50_us,
        baseline_after_p99_us=after.p99_us,
        active_rate=config.rate,
        active_messages=loaded.messages,
        baseline_messages=baseline.messages,
        errors=sum(r.errors for r in measured.finals),
        mismatches=sum(r.mismatches for r in measured.finals),
        refused=stopped.counters.get("refused", -1),
        server_restarts=int(stopped.exit["restarted"]) if stopped.exit else -1,
        server_clean_exit=stopped.clean,
        workers=procs.workers,
        server_processes=full.processes,
        load_procs=procs.load_procs,
        source_addrs=len(procs.sources),
        hold_s=config.hold,
        conntrack_entries=netns.conntrack_entries(),
        sysctls={name: netns.read_sysctl(name) for name in netns.REPORTED},
        problems=[p for r in measured.finals for p in r.problems] + _shortfalls(held.broadcast),
        protocol=config.protocol,
        broadcast=held.broadcast,
    )


def _shortfalls(broadcast: BroadcastFigures | None) -> list[str]:
    return [] if broadcast is None else broadcast.shortfalls()


# -- helpers ------------------------------------------------------------------


def _wait_closed(sockets: int, bound: float = 300.0) -> float:
    """Wait until at most ``sockets`` TCP sockets are in use in this namespace; seconds taken.

    A measurement started while the server is still closing a million
    connections would see its workers busy with that, not with the active set.
    """
    started = time.monotonic()
    pause = 0.05
    while measure.tcp_sockstat().get("inuse", 0) > sockets:
        if time.monotonic() - started >= bound:
            break
        time.sleep(pause)  # polling the kernel's count; nothing to wait on instead
        pause = min(pause * 2, 0.5)
    return time.monotonic() - started


def _spent(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    return after[0] - before[0], after[1] - before[1]


def _open_deadline(conns: int) -> float:
    """A generous bound on opening ``conns`` connections: 60 s + 1 ms each."""
    return time.monotonic() + 60 + conns / 1000


def _plan(
    run: _Run, conns: int, procs: int, sources: tuple[str, ...], fields: dict[str, Any]
) -> Plan:
    """The load's plan: ``conns`` connections over ``procs`` processes, with the protocol's
    ``fields`` of :class:`LoadSpec`."""
    config = run.config
    spec = LoadSpec(
        host=HOST,
        port=run.server.port,
        conns=conns,
        size=config.size,
        duration=config.baseline + config.hold,  # a bound: rounds say their own length
        procs=procs,
        source_addrs=sources or None,
    )
    return prepare(replace(spec, **fields))
