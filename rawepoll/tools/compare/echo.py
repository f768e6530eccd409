"""Echo servers side by side: server CPU time per message, messages per second, p99 latency.

The servers are :data:`rawepoll.tools.compare.servers.CONTENDERS`: rawepoll's echo
server in level- and edge-triggered mode, a ``selectors.DefaultSelector``
server, asyncio with a Protocol and with streams, and uvloop with the same
Protocol (when installed).

How a figure is made:

* Every server is started once, **pinned to the server CPU** from its first
  instruction, and kept running for the whole section; all of them sit idle
  but the one being measured.  Each is primed first (one connection, 4 KiB
  echoed, closed: see :meth:`rawepoll.tools.compare.servers.Server.prime`).
* The **load** is :func:`rawepoll.tools.loadgen.run_load` -- ``rawepoll bench`` --
  in processes pinned to the load CPU: ``conns`` connections, each a closed
  loop (send one message, wait for its whole echo, verify every byte, send the
  next).  A mismatch, an error or a connection that never completes an echo
  is a bug in the server, not a number: the section reports it and the
  comparison exits 1.
* One **run** (one server, one size) reads the server's CPU clock, runs the
  load for ``seconds``, and reads the clock again.  **Server CPU per
  message** = the difference / messages echoed.  The clock also covers the
  run's connects and closes (``conns`` of each, a few µs apiece: well under
  1 % of a run).  Messages per second and the p50/p99 round-trip latency are
  the load generator's.
* One **round** runs every server at every size, in reverse order every
  other round.  Reported: medians over rounds with min-max, and per server the
  **median of per-round ratios** to the reference server (uvloop when it runs,
  else the ``selectors`` server): both figures of a ratio come from one round.

CPU per message ranks the servers even when the load generator is the
bottleneck (on one CPU it is: it costs about as much per message as a fast
server), which messages per second cannot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rawepoll.tools.compare import machine, report
from rawepoll.tools.compare.report import Table
from rawepoll.tools.compare.servers import Contender, EchoError, Server, ServerError
from rawepoll.tools.compare.stats import Spread, ratios, round_order
from rawepoll.tools.loadgen import run_load
from rawepoll.tools.serverproc import ServerProcess

__all__ = ["REFERENCES", "Plan", "Result", "measure"]

REFERENCES = ("uvloop protocol", "selectors")  # the ratio's denominator: the first that ran


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: float  # load per run
    conns: int
    procs: int  # load processes
    sizes: tuple[int, ...]
    host: str
    server_cpu: int | None
    load_cpu: int | None


@dataclass
class Run:
    """One server, one size, one round."""

    messages: int
    msgs_per_s: float
    p50_us: float
    p99_us: float
    server: machine.Usage  # what the server spent meanwhile
    loadgen_cpu_s: float

    @property
    def cpu_us(self) -> float:
        return self.server.cpu_ns / self.messages / 1e3

    @property
    def user_share(self) -> float:
        """The share of the server's CPU spent in user space (the rest is the kernel's)."""
        return self.server.user_ns / max(1, self.server.user_ns + self.server.system_ns)

    @property
    def loadgen_us(self) -> float:
        return self.loadgen_cpu_s * 1e6 / self.messages


def measure_run(server: Server, size: int, plan: Plan) -> Run:
    """Closed-loop load against ``server`` for ``plan.seconds``, every byte verified."""
    server.check_alive()
    before = server.usage()
    load = run_load(
        host=server.host,
        port=server.port,
        conns=plan.conns,
        size=size,
        duration=plan.seconds,
        procs=plan.procs,
        cpus=None if plan.load_cpu is None else [plan.load_cpu],
    )
    spent = server.usage() - before
    server.check_alive()
    if load.mismatches or load.errors or load.established < plan.conns or not load.messages:
        raise EchoError(
            f"{server.name}, {size} B: {load.mismatches} mismatches, {load.errors} errors, "
            f"{load.established}/{plan.conns} connections established, "
            f"{load.messages} messages verified"
        )
    return Run(
        messages=load.messages,
        msgs_per_s=load.msgs_per_s,
        p50_us=load.p50_us,
        p99_us=load.p99_us,
        server=spent,
        loadgen_cpu_s=load.loadgen_cpu_s,
    )


# -- rounds -------------------------------------------------------------------


@dataclass
class Series:
    """One server at one size: a run per round."""

    server: str
    size: int
    runs: list[Run] = field(default_factory=list)

    def spread(self, figure: str) -> Spread:
        return Spread.of([getattr(run, figure) for run in self.runs])


def ratio_to(series: Sequence[Series], reference: str | None, s: Series) -> Spread | None:
    """``s``'s CPU per message over ``reference``'s at the same size, round by round."""
    ref = next((r for r in series if r.server == reference and r.size == s.size), None)
    if ref is None or not s.runs or len(ref.runs) != len(s.runs):
        return None
    return Spread.of(ratios([r.cpu_us for r in s.runs], [r.cpu_us for r in ref.runs]))


def cpu_header(reference: str, latencies: Sequence[str]) -> list[str]:
    """The columns of :func:`cpu_row` (``latencies``: the keys of the latency columns)."""
    return [
        "server",
        "CPU µs/msg",
        "min-max",
        f"x {reference}",
        "spread",
        "msg/s",
        *(f"{key.removesuffix('_us')} µs" for key in latencies),
        "user",
        "load µs/msg",
    ]


def cpu_row(s: Series, ratio: Spread | None, latencies: Sequence[str]) -> list[str]:
    """One server's line of a CPU-per-message table (a section's, at one size)."""
    cpu = s.spread("cpu_us")
    return [
        s.server,
        f"{cpu.median:.2f}",
        report.fmt_spread(cpu),
        "-" if ratio is None else report.fmt_ratio(ratio.median),
        "-" if ratio is None else report.fmt_spread(ratio),
        f"{s.spread('msgs_per_s').median:,.0f}",
        *(f"{s.spread(key).median:,.0f}" for key in latencies),
        f"{s.spread('user_share').median:.0%}",
        f"{s.spread('loadgen_us').median:.2f}",
    ]


@contextlib.contextmanager
def running(
    contenders: Sequence[Contender], plan: Plan, failures: dict[str, str]
) -> Iterator[list[Server]]:
    """Start every server (pinned, primed, kept up for all rounds); stop them all on the way out."""
    servers: list[Server] = []
    with contextlib.ExitStack() as stack:
        for contender in contenders:
            report.progress(f"echo: starting {contender.name} ...")
            try:
                server = stack.enter_context(Server(contender, host=plan.host, cpu=plan.server_cpu))
            except ServerError as exc:
                failures[contender.name] = f"did not start: {exc}"
                continue
            servers.append(server)
            try:
                server.prime()
            except ServerError as exc:
                failures[contender.name] = str(exc)
        yield servers


class Rounds(Protocol):
    """What :func:`measure_rounds` reads of a section's plan."""

    @property
    def rounds(self) -> int: ...

    @property
    def sizes(self) -> tuple[int, ...]: ...


S = TypeVar("S", bound=ServerProcess)
P = TypeVar("P", bound=Rounds)


# What a run may fail with: the server's fault (it died, answered wrongly, or
# could not be reached), never a bug of ours, which propagates.
MEASURE_ERRORS: tuple[type[Exception], ...] = (ServerError, OSError, ValueError)


def measure_rounds(
    section: str,
    servers: Sequence[S],
    plan: P,
    measure: Callable[[S, int, P], Run],
    *,
    failures: dict[str, str],
) -> list[Series]:
    """Every server at every size, ``plan.rounds`` times, in alternating order.

    A server whose run fails (:data:`MEASURE_ERRORS`) is named in ``failures``
    and left out of the rounds after; its runs so far stay in its series.
    """
    series = {(s.name, size): Series(s.name, size) for size in plan.sizes for s in servers}
    for round_index in range(plan.rounds):
        for size in plan.sizes:
            for server in round_order(list(servers), round_index):
                if server.name in failures:
                    continue
                report.progress(
                    f"{section}: round {round_index + 1}/{plan.rounds}, {size} B, {server.name} ..."
                )
                try:
                    series[server.name, size].runs.append(measure(server, size, plan))
                except MEASURE_ERRORS as exc:
                    failures[server.name] = f"{size} B, round {round_index + 1}: {exc}"
                    report.progress(f"{section}: FAILED {server.name}: {exc}")
    return list(series.values())


# -- report -------------------------------------------------------------------


@dataclass
class Result:
    plan: Plan
    series: list[Series]
    skipped: dict[str, str]  # server -> why it did not run
    failures: dict[str, str]  # server -> what went wrong

    @property
    def reference(self) -> str | None:
        """The server the ratios are taken to: the first of REFERENCES with every round."""
        complete = {s.server for s in self.series if len(s.runs) == self.plan.rounds}
        return next((name for name in REFERENCES if name in complete), None)

    def _ratio(self, s: Series) -> Spread | None:
        return ratio_to(self.series, self.reference, s)

    def tables(self) -> list[Table]:
        reference = self.reference or "reference"
        latencies = ("p50_us", "p99_us")
        tables = []
        for size in self.plan.sizes:
            rows = [
                cpu_row(s, self._ratio(s), latencies)
                for s in self.series
                if s.size == size and s.runs
            ]
            tables.append(
                Table(
                    f"3. echo servers, {size:,} B messages, {self.plan.conns} connections: "
                    f"server CPU per message, median of {report.rounds(self.plan.rounds)}",
                    cpu_header(reference, latencies),
                    rows,
                )
            )
        tables[-1].notes = [
            "CPU µs/msg: the server's user+sys CPU (its process CPU clock) / messages echoed; "
            "user: the user-space share of it; msg/s, p50, p99: round trips as the load "
            "generator saw them; load µs/msg: the load generator's own CPU per message.",
            *(f"skipped {name}: {why}" for name, why in self.skipped.items()),
            *(f"FAILED {name}: {what}" for name, what in self.failures.items()),
        ]
        return tables

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "reference": self.reference,
            "skipped": self.skipped,
            "failures": self.failures,
            "results": [
                {
                    "server": s.server,
                    "size": s.size,
                    "rounds": len(s.runs),
                    "cpu_us_per_msg": s.spread("cpu_us"),
                    "ratio_to_reference": self._ratio(s),
                    "msgs_per_s": s.spread("msgs_per_s"),
                    "p50_us": s.spread("p50_us"),
                    "p99_us": s.spread("p99_us"),
                    "server_user_share": s.spread("user_share"),
                    "loadgen_us_per_msg": s.spread("loadgen_us"),
                    "per_round": s.runs,
                }
                for s in self.series
                if s.runs
            ],
        }

    def plot(self, path: Path, subtitle: str) -> bool:
        """Server CPU per message, per server and size; False without matplotlib or figures."""
        plt = report.pyplot()
        if plt is None or not any(s.runs for s in self.series):
            return False
        sizes = self.plan.sizes
        fig, axes = plt.subplots(
            1, len(sizes), figsize=(5.5 * len(sizes), 4.5), layout="constrained", squeeze=False
        )
        for ax, size in zip(axes[0], sizes, strict=True):
            shown = [s for s in self.series if s.size == size and s.runs]
            colors = ["tab:blue" if s.server.startswith("rawepoll") else "tab:grey" for s in shown]
            spreads = [s.spread("cpu_us") for s in shown]
            report.bars(ax, [s.server for s in shown], spreads, "{:.2f}", colors)
            ax.set_xlabel("server CPU µs per echoed message")
            ax.set_title(f"{size:,} B messages", fontsize=10)
        fig.suptitle(
            f"Echo servers: server CPU per message, {self.plan.conns} connections "
            f"(bars: min-max over {report.rounds(self.plan.rounds)})\n{subtitle}",
            fontsize=10,
        )
        report.save(plt, fig, path)
        return True


def measure(contenders: list[Contender], plan: Plan, skipped: dict[str, str]) -> Result:
    """Every contender at every size, alternating in rounds."""
    failures: dict[str, str] = {}
    with running(contenders, plan, failures) as servers:
        series = measure_rounds("echo", servers, plan, measure_run, failures=failures)
    return Result(plan, series, skipped, failures)
