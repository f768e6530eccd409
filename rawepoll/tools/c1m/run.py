"""One measured million-connection run: :func:`run_c1m`.

The sequence, every step bounded in time:

1. **checks** -- root, ``fs.file-max`` headroom for two descriptors per
   connection, memory for the kernel's ~10 KB per connection, the extras;
2. **namespace** -- :func:`rawepoll.tools.c1m.netns.enter`;
3. **server** -- ``rawepoll serve`` with as many workers as ``RLIMIT_NOFILE``
   requires (``ceil(conns / (limit - 32))``), one listener shared with
   ``EPOLLEXCLUSIVE``, in a session of its own (the run stops it, not Ctrl-C);
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
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Final

from rawepoll.limits import SetLimit
from rawepoll.server import FD_RESERVE as SERVER_FD_RESERVE
from rawepoll.tools.c1m import measure, netns
from rawepoll.tools.loadgen import latency
from rawepoll.tools.loadgen.display import Monitor
from rawepoll.tools.loadgen.plan import FD_RESERVE as LOAD_FD_RESERVE
from rawepoll.tools.loadgen.plan import Plan, port_range
from rawepoll.tools.loadgen.result import LoadResult
from rawepoll.tools.loadgen.workers import Holding, prepare

__all__ = ["C1MConfig", "C1MResult", "ehash_buckets", "plan_processes", "run_c1m"]

KERNEL_BYTES_PER_CONN: Final = 12_000  # both ends' slab, with room (measured ~9.6-10 KB)
FILE_HEADROOM: Final = 10_000  # file structures left for everyone else
SERVER_START_S: Final = 60.0
SERVER_STOP_S: Final = 60.0
SOURCE_FILL: Final = 4  # use at most 1/SOURCE_FILL of a source address's client ports
HOST: Final = "127.0.0.1"
_LISTENING = re.compile(r"listening on (\S+):(\d+) \(")
_EXIT = re.compile(r"rawepoll serve: exit (.*)")


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
        TimeoutError: the server did not start, or the connections did not open in time.
    """
    preflight(config)
    buckets = config.ehash if config.ehash is not None else ehash_buckets(config.conns)
    netns.enter(config.keep_netns, buckets)
    where = f"network namespace {config.keep_netns}" if config.keep_netns else "a private netns"
    fd_limit = SetLimit()
    interval = 1 / config.rate if config.rate else 0.0
    procs = plan_processes(config.conns, config.active, fd_limit, port_range())
    say(
        f"{where}: {config.conns:,} connections = {procs.workers} server workers, "
        f"{procs.load_procs} load processes over {len(procs.sources)} source addresses "
        f"(RLIMIT_NOFILE {fd_limit}, {port_range()} client ports per address)"
    )
    server = _Server(procs.workers, config.mode, config.balance)
    try:
        port = server.start()
        slab_before = measure.slab_bytes()
        idle = measure.process_tree_memory(server.pid)
        say(
            f"server: pid {server.pid}, {idle.processes} processes, "
            f"PSS {idle.pss_bytes / 2**20:.1f} MiB, "
            f"RSS {idle.rss_bytes / 2**20:.1f} MiB before any connection"
        )
        with contextlib.ExitStack() as stack:
            active = None
            if config.active:
                active = stack.enter_context(Holding(_plan(config, port, config.active, 1, ())))
                active.open(None, time.monotonic() + 60 + config.active / 1000)
                baseline = active.measure(config.baseline, interval)
                _say_round(say, "baseline, only the active set open", baseline)
            held_plan = _plan(
                config, port, config.conns - config.active, procs.load_procs, procs.sources
            )
            with Holding(held_plan) as holding:
                server_cpu = measure.process_tree_cpu([server.pid])
                load_cpu = measure.process_tree_cpu(holding.pids)
                seconds = holding.open(monitor(held_plan.conns), _open_deadline(held_plan.conns))
                server_cpu = _spent(server_cpu, measure.process_tree_cpu([server.pid]))
                load_cpu = _spent(load_cpu, measure.process_tree_cpu(holding.pids))
                counts = holding.counts
                each = 1e6 / max(1, counts["established"])
                say(
                    f"open: {counts['established']:,} established and verified in {seconds:.1f} s "
                    f"({counts['established'] / seconds:,.0f}/s), {counts['errors']} errors; "
                    f"CPU per connection: server {server_cpu[0] * each:.0f} us user + "
                    f"{server_cpu[1] * each:.0f} us system, load {load_cpu[0] * each:.0f} us user"
                    f" + {load_cpu[1] * each:.0f} us system"
                )
                full = measure.process_tree_memory(server.pid)
                slab_after = measure.slab_bytes()
                say(
                    f"server: PSS {full.pss_bytes / 2**20:.1f} MiB, "
                    f"RSS {full.rss_bytes / 2**20:.1f} MiB; "
                    f"kernel slab +{(slab_after - slab_before) / 2**20:,.0f} MiB"
                )
                if active is not None:
                    loaded = active.measure(config.hold, interval)
                    _say_round(say, "hold, every connection open", loaded)
                else:
                    time.sleep(config.hold)  # holding is the point: nothing to measure meanwhile
                released = holding.release()
            closing = _wait_closed(2 * config.active + 64)
            say(
                f"release: {released.established:,} held connections reported and closed; "
                f"the server had closed its ends {closing:.1f} s later"
            )
            if active is not None:
                after = active.measure(config.baseline, interval)
                _say_round(say, "baseline again, the held connections closed", after)
            finals = [released] if active is None else [released, active.release()]
        stopped = server.stop()
    finally:
        server.kill()
    established = sum(r.established for r in finals)
    per = max(1, established)
    return C1MResult(
        conns=config.conns,
        active=config.active,
        established=established,
        verified=established,  # established means: message 0 echoed and verified
        seconds_to_establish=seconds,
        connect_rate=released.established / seconds if seconds > 0 else 0.0,
        open_server_cpu_s=server_cpu,
        open_load_cpu_s=load_cpu,
        server_rss_bytes=full.rss_bytes,
        server_pss_bytes=full.pss_bytes,
        server_pss_idle_bytes=idle.pss_bytes,
        bytes_per_conn=full.pss_bytes / per,
        pss_growth_per_conn=(full.pss_bytes - idle.pss_bytes) / per,
        kernel_slab_bytes_per_conn=(slab_after - slab_before) / per,
        active_p50_us=loaded.p50_us if active else 0.0,
        active_p99_us=loaded.p99_us if active else 0.0,
        baseline_p50_us=baseline.p50_us if active else 0.0,
        baseline_p99_us=baseline.p99_us if active else 0.0,
        baseline_after_p50_us=after.p50_us if active else 0.0,
        baseline_after_p99_us=after.p99_us if active else 0.0,
        active_rate=config.rate,
        active_messages=loaded.messages if active else 0,
        baseline_messages=baseline.messages if active else 0,
        errors=sum(r.errors for r in finals),
        mismatches=sum(r.mismatches for r in finals),
        refused=stopped.get("refused", -1),
        server_restarts=stopped.get("restarted", -1),
        server_clean_exit=server.returncode == 0,
        workers=procs.workers,
        server_processes=full.processes,
        load_procs=procs.load_procs,
        source_addrs=len(procs.sources),
        hold_s=config.hold,
        conntrack_entries=netns.conntrack_entries(),
        sysctls={name: netns.read_sysctl(name) for name in netns.REPORTED},
        problems=[p for r in finals for p in r.problems],
    )


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


def _plan(config: C1MConfig, port: int, conns: int, procs: int, sources: tuple[str, ...]) -> Plan:
    return prepare(
        host=HOST,
        port=port,
        unix=None,
        conns=conns,
        size=config.size,
        duration=config.baseline + config.hold,  # a bound: rounds say their own length
        messages=None,
        pipeline=1,
        procs=procs,
        source_addrs=list(sources) or None,
        cpus=None,
        timeout=None,
    )


def _say_round(say: Callable[[str], None], label: str, result: LoadResult) -> None:
    say(
        f"{label}: {result.messages:,} echoes in {result.seconds:.1f} s "
        f"({result.msgs_per_s:,.0f}/s), p50 {result.p50_us:,.0f} us, "
        f"p99 {result.p99_us:,.0f} us, {result.errors} errors, {result.mismatches} mismatches"
    )


class _Server:
    """``rawepoll serve`` as a child in its own session: started, stopped, killed."""

    def __init__(self, workers: int, mode: str, balance: str) -> None:
        self.command = [
            sys.executable,
            "-m",
            "rawepoll",
            "serve",
            "--host",
            HOST,
            "--port",
            "0",
            "--workers",
            str(workers),
            "--mode",
            mode,
            "--backlog",
            "65535",
            "--balance",
            balance,
            "--drain-timeout",
            "10",
        ]
        self.process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def start(self) -> int:
        """Spawn it and wait for its listening line; the port."""
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        line = self._line(SERVER_START_S)
        match = _LISTENING.search(line)
        if match is None:
            raise TimeoutError(f"rawepoll serve did not start: {line!r}")
        return int(match.group(2))

    def stop(self) -> dict[str, int]:
        """SIGTERM, a graceful drain, the exit line's counters (empty if none came)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            output, _ = self.process.communicate(timeout=SERVER_STOP_S)
        except subprocess.TimeoutExpired:
            return {}
        counts: dict[str, int] = {}
        for match in _EXIT.finditer(output):
            for item in match.group(1).split():
                name, _, value = item.partition("=")
                if value.isdigit():
                    counts[name] = int(value)
        return counts

    def kill(self) -> None:
        """Make sure nothing of the server outlives the run."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _line(self, within: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(within):
                return ""
        return self.process.stdout.readline()
