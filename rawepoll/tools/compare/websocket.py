"""WebSocket echo servers side by side: server CPU per message, and memory per idle connection.

The servers are :data:`rawepoll.tools.compare.wsservers.CONTENDERS`: rawepoll's
WebSocket echo server (``rawepoll serve --protocol websocket``, level- and
edge-triggered), the ``websockets`` library and ``picows``, each on asyncio
and on uvloop, and a Go server on gorilla/websocket (built when the section
starts).  Every one serves in one process pinned to the server CPU; the
client is ``rawepoll bench --protocol websocket`` (:func:`rawepoll.tools.loadgen.run_load`,
:mod:`rawepoll.tools.loadgen.wsengine`) on the load CPU: an opening handshake
per connection, checked, then masked binary frames, a fresh masking key each,
and every echo frame verified byte for byte, header and payload.

**CPU per message** (as :mod:`~rawepoll.tools.compare.echo` measures it over
TCP): every server is started once and kept up for all rounds, primed (one
connection upgraded, 4 KiB echoed, closed: lazy set-up and glibc's mmap
threshold are behind it, see :meth:`rawepoll.tools.compare.servers.Server.prime`).
One run reads the server's CPU clock, runs ``conns`` closed-loop connections
for ``seconds`` (connects and handshakes come before the measured traffic, but
within the clock: 50 of them, well under 1 % of a run), reads the clock again:
the difference / messages echoed.  A round runs every server at every size,
in reverse order every other round.  Reported: medians with min-max, and the
median of per-round ratios to picows (on uvloop when it runs, else on asyncio).

**Memory per idle connection** (as :mod:`~rawepoll.tools.compare.memory`
measures it over TCP): per round and server, a fresh server, primed; a warm-up
of :data:`WARM_UP` connections upgraded, echoed once and closed; settle, and
let the server's descriptor count hold still (it closes the warm-up's
connections as it reads their ends); RSS and PSS *before*; ``memory_conns``
connections upgraded and echoed once each (the held connections of
:class:`rawepoll.tools.loadgen.workers.Holding`, from source addresses of
127.0.0.0/8 beyond :data:`~rawepoll.tools.compare.memory.PER_SOURCE`), then
idle; settle; the server must hold that many more descriptors; RSS and PSS
*after*: ``(after - before) / N``.  Also: the server's CPU per upgraded
connection over the opening (accept, handshake, one echo).

A wrong byte, a refused or wrong handshake, an error or a connection that
never echoes is a bug, not a number: that server is reported FAILED, takes no
further part, and the comparison exits 1.  Goals reported against:
rawepoll's CPU per message at most :data:`CPU_GOAL` x picows's, and its memory
per idle connection at most 1/:data:`MEMORY_FACTOR` of the best peer's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rawepoll.tools.compare import machine, memory, report
from rawepoll.tools.compare.echo import (
    Run,
    Series,
    cpu_header,
    cpu_row,
    measure_rounds,
    ratio_to,
)
from rawepoll.tools.compare.memory import PER_SOURCE, sources_for
from rawepoll.tools.compare.report import Table
from rawepoll.tools.compare.servers import START_S, STOP_S, EchoError
from rawepoll.tools.compare.stats import Spread, round_order
from rawepoll.tools.compare.wsservers import Contender, build_go
from rawepoll.tools.loadgen import run_load
from rawepoll.tools.loadgen.spec import LoadSpec
from rawepoll.tools.loadgen.workers import Holding, prepare
from rawepoll.tools.loadgen.wsclient import Framing, check_answer, new_key, upgrade_request
from rawepoll.tools.serverproc import ServerError, ServerProcess

__all__ = ["CPU_GOAL", "MEMORY_FACTOR", "REFERENCES", "Plan", "Result", "measure", "prime"]

REFERENCES: Final = ("picows uvloop", "picows asyncio")  # the ratio's denominator: the first
CPU_GOAL: Final = 1.0  # rawepoll's CPU per message, times picows's, at most
MEMORY_FACTOR: Final = 20  # rawepoll's bytes per idle connection, times this, <= the best peer's
WARM_UP: Final = 100  # connections upgraded and closed before the memory is read
PRIME_SIZE: Final = 4096
FDS_QUIET_S: Final = 0.2  # the server's descriptor count unchanged this long: warm-up closed
FDS_QUIET_BOUND_S: Final = 10.0
_FAILURES: Final = (ServerError, OSError, ValueError, TimeoutError)


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: float  # load per CPU run
    conns: int  # connections of a CPU run
    procs: int  # load processes of a CPU run
    sizes: tuple[int, ...]
    memory_conns: int  # idle connections held
    settle_s: float  # quiet time before each memory reading
    host: str
    server_cpu: int | None
    load_cpu: int | None

    @property
    def load_cpus(self) -> list[int] | None:
        return None if self.load_cpu is None else [self.load_cpu]


# -- a server ---------------------------------------------------------------------


def start(contender: Contender, plan: Plan, go_binary: Path | None) -> ServerProcess:
    """``contender`` listening, pinned to the server CPU; a context manager that stops it."""
    return ServerProcess(
        contender.command(plan.host, go_binary),
        env=contender.environment(),
        cpu=plan.server_cpu,
        start_bound=START_S,
        stop_bound=STOP_S,
        name=contender.name,
    )


def prime(server: ServerProcess) -> None:
    """Upgrade one connection, echo one 4 KiB binary message on it, close it.

    Raises:
        EchoError: the handshake or the echo went wrong.
    """
    framing = Framing(PRIME_SIZE)
    payload = random.Random(-1).randbytes(PRIME_SIZE)
    try:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            key = new_key()
            sock.sendall(upgrade_request("localhost", "/", key))
            head, rest = _answer(sock)
            problem = check_answer(head, key)
            if problem is not None:
                raise EchoError(f"{server.name}: first connection: {problem}")
            sock.sendall(framing.frame(payload, random.getrandbits(32)))
            expected = framing.echo_head + payload
            echoed = _read(sock, rest, len(expected))
    except OSError as exc:
        raise EchoError(f"{server.name}: first connection: {exc}") from exc
    if echoed != expected:
        raise EchoError(f"{server.name}: first connection: the 4 KiB echo frame differs")
    time.sleep(0.05)


def _answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """The server's answer to the upgrade, up to and with its blank line; and what followed."""
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        data += chunk
    return data[: end + 4], data[end + 4 :]


def _read(sock: socket.socket, data: bytes, count: int) -> bytes:
    """``data`` and then what the socket gives, until ``count`` bytes or the end."""
    while len(data) < count and (chunk := sock.recv(count - len(data))):
        data += chunk
    return data


# -- CPU per message ----------------------------------------------------------------


def measure_run(server: ServerProcess, size: int, plan: Plan) -> Run:
    """Closed-loop WebSocket load against ``server`` for ``plan.seconds``, every echo verified."""
    server.check_alive()
    before = machine.usage(server.pid)
    load = run_load(
        host=server.host,
        port=server.port,
        conns=plan.conns,
        size=size,
        duration=plan.seconds,
        procs=plan.procs,
        cpus=plan.load_cpus,
        protocol="websocket",
    )
    spent = machine.usage(server.pid) - before
    server.check_alive()
    if load.mismatches or load.errors or load.established < plan.conns or not load.messages:
        raise EchoError(
            f"{load.mismatches} mismatches, {load.errors} errors, "
            f"{load.established}/{plan.conns} connections established, "
            f"{load.messages} messages verified"
            + (f": {load.problems[0]}" if load.problems else "")
        )
    return Run(
        messages=load.messages,
        msgs_per_s=load.msgs_per_s,
        p50_us=load.p50_us,
        p99_us=load.p99_us,
        server=spent,
        loadgen_cpu_s=load.loadgen_cpu_s,
    )


@contextlib.contextmanager
def running(
    contenders: Sequence[Contender], plan: Plan, go_binary: Path | None, failures: dict[str, str]
) -> Iterator[list[ServerProcess]]:
    """Start every server (pinned, primed, kept up for all rounds); stop them all on the way out."""
    servers: list[ServerProcess] = []
    with contextlib.ExitStack() as stack:
        for contender in contenders:
            report.progress(f"websocket: starting {contender.name} ...")
            try:
                server = stack.enter_context(start(contender, plan, go_binary))
                servers.append(server)
                prime(server)
            except _FAILURES as exc:
                failures[contender.name] = f"did not start or echo: {exc}"
        yield servers


# -- memory per idle connection ---------------------------------------------------


@dataclass
class Held(memory.Held):
    """One fresh server holding ``conns`` idle upgraded connections, and their opening."""

    open_s: float  # opening every connection: connect, handshake, one echo
    open_cpu_ns: int  # the server's CPU over the opening

    @property
    def upgrades_per_s(self) -> float:
        return self.conns / self.open_s

    @property
    def upgrade_cpu_us(self) -> float:
        return self.open_cpu_ns / self.conns / 1e3


def _holding(server: ServerProcess, conns: int, plan: Plan) -> Holding:
    spec = LoadSpec(
        host=server.host,
        port=server.port,
        conns=conns,
        duration=1.0,  # never run: the connections are released idle
        source_addrs=sources_for(server.host, conns) if conns > PER_SOURCE else None,
        cpus=plan.load_cpus,
        protocol="websocket",
    )
    return Holding(prepare(spec))


def _open(held: Holding, conns: int) -> float:
    """Open every connection of ``held``; the seconds it took.

    Raises:
        EchoError: a connection did not upgrade or echo (the first problem said).
    """
    seconds = held.open(None, time.monotonic() + 60 + conns / 200)
    established = held.counts["established"]
    if established < conns:
        held.finish()
        problems = [p for child in held.children if child.done for p in child.done.problems]
        raise EchoError(
            f"{established:,} of {conns:,} connections upgraded and echoed"
            + (f": {problems[0]}" if problems else "")
        )
    return seconds


def measure_held(contender: Contender, plan: Plan, go_binary: Path | None) -> Held:
    """A fresh server, a warm-up, then ``plan.memory_conns`` idle upgraded connections."""
    conns = plan.memory_conns
    with start(contender, plan, go_binary) as server:
        prime(server)
        with _holding(server, min(WARM_UP, conns), plan) as warm:
            _open(warm, min(WARM_UP, conns))
            warm.release()
        time.sleep(plan.settle_s)
        fds_before = _quiet_fds(server.pid)
        rss_before, pss_before = machine.memory(server.pid)
        cpu_before = machine.cpu_ns(server.pid)
        with _holding(server, conns, plan) as held:
            open_s = _open(held, conns)
            open_cpu_ns = machine.cpu_ns(server.pid) - cpu_before
            time.sleep(plan.settle_s)
            server.check_alive()
            rss_after, pss_after = machine.memory(server.pid)
            fds = machine.open_fds(server.pid) - fds_before
            held.release()
    if fds < conns:
        raise EchoError(f"the server held {fds:,} connections, not {conns:,}")
    return Held(conns, rss_before, pss_before, rss_after, pss_after, fds, open_s, open_cpu_ns)


def _quiet_fds(pid: int) -> int:
    """The server's descriptors once their count has held still for ``FDS_QUIET_S`` (a
    server closes the warm-up's connections when it reads their end, which can come later)."""
    deadline = time.monotonic() + FDS_QUIET_BOUND_S
    count, since = machine.open_fds(pid), time.monotonic()
    while time.monotonic() - since < FDS_QUIET_S and time.monotonic() < deadline:
        time.sleep(0.02)
        now = machine.open_fds(pid)
        if now != count:
            count, since = now, time.monotonic()
    return count


@dataclass
class HeldSeries:
    server: str
    samples: list[Held] = field(default_factory=list)

    def spread(self, figure: str) -> Spread:
        return Spread.of([getattr(sample, figure) for sample in self.samples])


def memory_rounds(
    contenders: Sequence[Contender], plan: Plan, go_binary: Path | None, failures: dict[str, str]
) -> list[HeldSeries]:
    series = {c.name: HeldSeries(c.name) for c in contenders}
    for round_index in range(plan.rounds):
        for contender in round_order(contenders, round_index):
            if contender.name in failures:
                continue
            report.progress(
                f"websocket, idle: round {round_index + 1}/{plan.rounds}, {contender.name}, "
                f"{plan.memory_conns:,} connections ..."
            )
            try:
                series[contender.name].samples.append(measure_held(contender, plan, go_binary))
            except _FAILURES as exc:
                failures[contender.name] = f"idle connections, round {round_index + 1}: {exc}"
                report.progress(f"websocket, idle: FAILED {contender.name}: {exc}")
    return list(series.values())


# -- report -------------------------------------------------------------------------


@dataclass
class Result:
    plan: Plan
    series: list[Series]  # CPU per message, per server and size
    held: list[HeldSeries]  # memory per idle connection, per server
    skipped: dict[str, str]  # server -> why it did not run
    failures: dict[str, str]  # server -> what went wrong
    notes: list[str] = field(default_factory=list)

    @property
    def reference(self) -> str | None:
        """The server the ratios are taken to: the first of REFERENCES with every round."""
        complete = {s.server for s in self.series if len(s.runs) == self.plan.rounds}
        return next((name for name in REFERENCES if name in complete), None)

    def ratio(self, s: Series) -> Spread | None:
        return ratio_to(self.series, self.reference, s)

    def memory_goal(self) -> float | None:
        """Bytes per idle connection rawepoll may keep: the best peer's / MEMORY_FACTOR."""
        peers = [
            h.spread("rss_per_conn").median
            for h in self.held
            if h.samples and not h.server.startswith("rawepoll")
        ]
        return min(peers) / MEMORY_FACTOR if peers else None

    def tables(self) -> list[Table]:
        tables = [self._cpu_table(size) for size in self.plan.sizes]
        tables.append(self._memory_table())
        tables[-1].notes = [
            "CPU µs/msg: the server's user+sys CPU (its process CPU clock) / messages echoed, "
            f"{self.plan.conns} connections each a closed loop of masked binary frames, every "
            f"echo verified; x {self.reference or 'picows'}: the median of per-round ratios, "
            "spread their min-max; user: the user-space share of the server's CPU; load "
            "µs/msg: the client's own CPU per message.",
            "B/conn: (after - before) / N of the server's RSS and PSS with N idle connections, "
            f"each upgraded and echoed once, after a warm-up of {WARM_UP} opened and closed; "
            "upgrades/s and CPU µs/upgrade: over the opening of the N (connect, handshake, one "
            "echo).",
            *self._goals(),
            *self.notes,
            *(f"skipped {name}: {why}" for name, why in self.skipped.items()),
            *(f"FAILED {name}: {what}" for name, what in self.failures.items()),
        ]
        return tables

    def _goals(self) -> list[str]:
        lines = []
        for s in self.series:
            ratio = self.ratio(s)
            if s.server.startswith("rawepoll") and ratio is not None:
                verdict = "met" if ratio.median <= CPU_GOAL else "missed"
                lines.append(
                    f"goal CPU/msg <= {CPU_GOAL:g}x {self.reference}: {s.server}, {s.size:,} B: "
                    f"{ratio.median:.2f} ({report.fmt_spread(ratio)}) -- {verdict}"
                )
        goal = self.memory_goal()
        for h in self.held:
            if h.server.startswith("rawepoll") and h.samples and goal is not None:
                rss = h.spread("rss_per_conn").median
                verdict = "met" if rss <= goal else "missed"
                lines.append(
                    f"goal B/idle conn <= best peer / {MEMORY_FACTOR} = {goal:,.0f}: "
                    f"{h.server}: {rss:,.0f} -- {verdict}"
                )
        return lines

    def _cpu_table(self, size: int) -> Table:
        latencies = ("p99_us",)
        rows = [
            cpu_row(s, self.ratio(s), latencies) for s in self.series if s.size == size and s.runs
        ]
        return Table(
            f"6. WebSocket echo servers, {size:,} B messages, {self.plan.conns} connections: "
            f"server CPU per message, median of {report.rounds(self.plan.rounds)}",
            cpu_header(self.reference or "picows", latencies),
            rows,
        )

    def _memory_table(self) -> Table:
        rows = []
        for h in self.held:
            if not h.samples:
                continue
            rss, rate = h.spread("rss_per_conn"), h.spread("upgrades_per_s")
            rows.append(
                [
                    h.server,
                    f"{rss.median:,.0f}",
                    report.fmt_spread(rss, 0),
                    f"{h.spread('pss_per_conn').median:,.0f}",
                    f"{rate.median:,.0f}",
                    report.fmt_spread(rate, 0),
                    f"{h.spread('upgrade_cpu_us').median:.1f}",
                ]
            )
        return Table(
            f"6b. memory per idle WebSocket connection, {self.plan.memory_conns:,} connections "
            f"in one process, median of {report.rounds(self.plan.rounds)}",
            [
                "server",
                "RSS B/conn",
                "min-max",
                "PSS B/conn",
                "upgrades/s",
                "min-max",
                "CPU µs/upgrade",
            ],
            rows,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "reference": self.reference,
            "goals": {"cpu_ratio_to_reference": CPU_GOAL, "memory_bytes": self.memory_goal()},
            "notes": self.notes,
            "skipped": self.skipped,
            "failures": self.failures,
            "results": [self._cpu_json(s) for s in self.series if s.runs],
            "idle": [
                {
                    "server": h.server,
                    "rounds": len(h.samples),
                    "rss_per_conn": h.spread("rss_per_conn"),
                    "pss_per_conn": h.spread("pss_per_conn"),
                    "upgrades_per_s": h.spread("upgrades_per_s"),
                    "upgrade_cpu_us_per_conn": h.spread("upgrade_cpu_us"),
                    "samples": h.samples,
                }
                for h in self.held
                if h.samples
            ],
        }

    def _cpu_json(self, s: Series) -> dict[str, Any]:
        return {
            "server": s.server,
            "size": s.size,
            "rounds": len(s.runs),
            "cpu_us_per_msg": s.spread("cpu_us"),
            "ratio_to_reference": self.ratio(s),
            "msgs_per_s": s.spread("msgs_per_s"),
            "p50_us": s.spread("p50_us"),
            "p99_us": s.spread("p99_us"),
            "server_user_share": s.spread("user_share"),
            "loadgen_us_per_msg": s.spread("loadgen_us"),
            "per_round": s.runs,
        }

    def plot(self, path: Path, subtitle: str) -> bool:
        """CPU per message per size, and bytes per idle connection; False without matplotlib
        or figures."""
        plt = report.pyplot()
        sizes = [z for z in self.plan.sizes if any(s.size == z and s.runs for s in self.series)]
        held = [h for h in self.held if h.samples]
        if plt is None or not (sizes or held):
            return False
        panels = len(sizes) + bool(held)
        fig, axes = plt.subplots(
            1, panels, figsize=(5.0 * panels, 4.2), layout="constrained", squeeze=False
        )
        for ax, size in zip(axes[0], sizes, strict=False):
            shown = [s for s in self.series if s.size == size and s.runs]
            names = [s.server for s in shown]
            report.bars(ax, names, [s.spread("cpu_us") for s in shown], "{:.2f}", _colors(names))
            ax.set_xlabel("server CPU µs per echoed message")
            ax.set_title(f"{size:,} B messages", fontsize=10)
        if held:
            ax, names = axes[0][-1], [h.server for h in held]
            spreads = [h.spread("rss_per_conn") for h in held]
            report.bars(ax, names, spreads, "{:,.0f}", _colors(names))
            ax.set_xlabel("server RSS bytes per idle connection")
            ax.set_title(f"{self.plan.memory_conns:,} idle connections", fontsize=10)
        fig.suptitle(
            f"WebSocket echo servers, one process each (bars: min-max over "
            f"{report.rounds(self.plan.rounds)})\n{subtitle}",
            fontsize=10,
        )
        report.save(plt, fig, path)
        return True


def _colors(names: Sequence[str]) -> list[str]:
    return ["tab:blue" if name.startswith("rawepoll") else "tab:grey" for name in names]


def measure(contenders: list[Contender], plan: Plan, skipped: dict[str, str]) -> Result:
    """Every contender at every size, then idle, alternating in rounds; Go built first."""
    failures: dict[str, str] = {}
    notes = transport_notes(contenders)
    with tempfile.TemporaryDirectory(prefix="rawepoll-ws-") as tmp:
        go_binary, contenders = _build(contenders, Path(tmp), skipped)
        with running(contenders, plan, go_binary, failures) as servers:
            series = measure_rounds("websocket", servers, plan, measure_run, failures=failures)
        held = memory_rounds(contenders, plan, go_binary, failures)
    return Result(plan, series, held, skipped, failures, notes)


def _build(
    contenders: list[Contender], workdir: Path, skipped: dict[str, str]
) -> tuple[Path | None, list[Contender]]:
    """The Go binary (None if no contender needs it or it could not be built), and who runs."""
    wanted = [c for c in contenders if c.go]
    if not wanted:
        return None, contenders
    report.progress("websocket: building the Go peer ...")
    built = build_go(workdir)
    if isinstance(built, Path):
        return built, contenders
    for contender in wanted:
        skipped[contender.name] = built
    return None, [c for c in contenders if not c.go]


def transport_notes(contenders: Sequence[Contender]) -> list[str]:
    """What a reader needs to know about how the peers ran here."""
    if not any(c.name.startswith("picows") for c in contenders):
        return []
    if importlib.util.find_spec("aiofastnet") is not None:
        return ["picows served through aiofastnet's transports (installed: picows's default)."]
    return ["picows served through the event loop's own transports (aiofastnet not installed)."]
