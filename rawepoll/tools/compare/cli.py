"""``rawepoll compare``: the command line, the settings of a run, and its output files."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from rawepoll._cli import positive_int, positive_seconds
from rawepoll.tools.compare import (
    binding,
    broadcast,
    echo,
    machine,
    memory,
    report,
    scaling,
    servers,
    websocket,
    wsservers,
)
from rawepoll.tools.compare.extras import optional
from rawepoll.tools.compare.timing import Settings

DESCRIPTION = (
    "rawepoll against the standard library and its peers, side by side in one run: "
    "(1) wait scaling -- one wait with 1 ready fd among N idle, select.select/poll/epoll vs "
    "rawepoll.Epoll.wait and unix.EpollWait; (2) binding cost -- empty wait, busy wait, "
    "register/unregister vs select.epoll, with the bare-ctypes floor; (3) echo servers -- "
    "server CPU per message, msg/s and p99 latency for rawepoll serve (LT, ET), selectors, "
    "asyncio (protocol, streams) and uvloop, the server pinned to one core and the load "
    "(rawepoll bench, every byte verified) to the other; (4) memory per idle connection and "
    "accept rate, and per idle subscribed connection (TCP and WebSocket); (5, on request: "
    "--sections ...,broadcast) broadcast -- server CPU per delivery of one publish to N "
    "subscribers, rawepoll serve next to an asyncio fan-out and a C floor, and the delivery "
    "times; (6, on request: --sections ...,websocket) WebSocket echo servers -- server CPU "
    "per message and memory per idle connection for rawepoll serve --protocol websocket (LT, "
    "ET), websockets and picows on asyncio and uvloop, and Go's gorilla/websocket (built with "
    "go when installed).  Contenders alternate within rounds (A B C ... C B A ...); figures are "
    "medians with their min-max.  Writes results.json, results.md and PNG plots to --out and "
    "prints the tables.  Exits 0 whatever it measures, 1 if a server fails to echo or deliver "
    "correctly."
)

SECTIONS = ("scaling", "binding", "echo", "memory", "broadcast", "websocket")
DEFAULT_SECTIONS = ("scaling", "binding", "echo", "memory")  # broadcast opens 100,000 connections


@dataclass(frozen=True)
class Preset:
    """The defaults of a full, a --quick and a --smoke run."""

    timing_rounds: int
    repeat: int
    scaling_batch_ms: float
    binding_batch_ms: float
    ns: tuple[int, ...]
    server_rounds: int
    seconds: float
    conns: int
    memory_conns: int
    settle_s: float
    subscribers: tuple[int, ...]  # broadcast: N
    deliveries: int  # broadcast: per run (publishes = deliveries / N, at least 3)
    broadcast_rounds: int
    websocket_rounds: int


FULL = Preset(
    11, 5, 10, 20, scaling.DEFAULT_NS, 5, 2.0, 50, 19_000, 0.5,
    subscribers=(1000, 10_000, 100_000), deliveries=100_000, broadcast_rounds=3,
    websocket_rounds=5,
)  # fmt: skip
QUICK = Preset(
    5, 3, 3, 4, scaling.QUICK_NS, 3, 0.5, 50, 2_000, 0.2,
    subscribers=(200, 2000), deliveries=20_000, broadcast_rounds=3, websocket_rounds=3,
)  # fmt: skip
SMOKE = Preset(  # for the test suite
    1, 1, 1, 1, (10, 100), 1, 0.2, 4, 200, 0.05,
    subscribers=(50,), deliveries=150, broadcast_rounds=1, websocket_rounds=1,
)  # fmt: skip


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _sections(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = set(names) - set(SECTIONS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(SECTIONS)}, got {text!r}")
    return names


def _servers(text: str) -> str:
    try:
        servers.select(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _ws_servers(text: str) -> str:
    try:
        wsservers.select(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rawepoll compare`` options."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer N, 5 timing rounds and 3 server rounds, 0.5 s runs, 2,000 connections "
        "for memory (under two minutes)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        metavar="DIR",
        help="where results.json, results.md and the PNG plots go (default bench-results/)",
    )
    parser.add_argument(
        "--sections",
        type=_sections,
        default=DEFAULT_SECTIONS,
        metavar="LIST",
        help=f"which sections to run, of {','.join(SECTIONS)} (default "
        f"{','.join(DEFAULT_SECTIONS)}: broadcast, which opens up to 100,000 connections per "
        "server and round, and websocket, seven servers at two sizes and 19,000 idle "
        "connections each, run when named)",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        metavar="N",
        help="rounds of every section (default 11 for scaling and binding, 5 for echo, memory "
        "and websocket, 3 for broadcast; --quick 5, 3, 3 and 3)",
    )
    parser.add_argument(
        "--n",
        type=_int_list,
        metavar="LIST",
        help="wait scaling: N idle fds (default "
        f"{','.join(map(str, scaling.DEFAULT_NS))}, --quick "
        f"{','.join(map(str, scaling.QUICK_NS))}; capped by RLIMIT_NOFILE)",
    )
    parser.add_argument(
        "--servers",
        type=_servers,
        metavar="LIST",
        help="echo and memory: a comma-separated subset of "
        f"{', '.join(repr(c.name) for c in servers.CONTENDERS)} (default all)",
    )
    parser.add_argument(
        "--ws-servers",
        type=_ws_servers,
        metavar="LIST",
        help="websocket: a comma-separated subset of "
        f"{', '.join(repr(c.name) for c in wsservers.CONTENDERS)} (default all)",
    )
    parser.add_argument(
        "--sizes",
        type=_int_list,
        default=(64, 4096),
        metavar="LIST",
        help="echo and websocket: message sizes in bytes (default 64,4096)",
    )
    parser.add_argument(
        "--seconds",
        type=positive_seconds,
        metavar="S",
        help="echo and websocket: load per server, size and round (default 2, --quick 0.5)",
    )
    parser.add_argument(
        "--conns",
        type=positive_int,
        metavar="N",
        help="echo and websocket: connections of the load (default 50)",
    )
    parser.add_argument(
        "--procs",
        type=positive_int,
        default=1,
        metavar="N",
        help="echo and websocket: load processes, all on the load CPU (default 1)",
    )
    parser.add_argument(
        "--memory-conns",
        type=positive_int,
        metavar="N",
        help="memory: idle connections, plain and (with a rawepoll server) subscribed to a topic; "
        "websocket: idle upgraded connections (default 19,000, --quick 2,000; capped by "
        "RLIMIT_NOFILE)",
    )
    parser.add_argument(
        "--subscribers",
        type=_int_list,
        metavar="LIST",
        help="broadcast: subscriber counts N (default 1000,10000,100000, --quick 200,2000; "
        "capped by RLIMIT_NOFILE and fs.file-max); one server process per 19,000, as many load "
        "processes, 3 rounds unless --rounds",
    )
    parser.add_argument(
        "--window",
        type=positive_int,
        default=1000,
        metavar="N",
        help="memory: connects in flight during the accept burst (default 1000)",
    )
    parser.add_argument(
        "--server-cpu",
        type=int,
        default=0,
        metavar="K",
        help="the CPU for the servers and the timed loops (default 0)",
    )
    parser.add_argument(
        "--load-cpu",
        type=int,
        default=1,
        metavar="K",
        help="the CPU for the load and this process during the server sections (default 1)",
    )
    parser.add_argument("--no-pin", action="store_true", help="pin nothing to any CPU")
    parser.add_argument("--host", default="127.0.0.1", help="address of the servers")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)


# -- the run -------------------------------------------------------------------


class Section(Protocol):
    def tables(self) -> list[report.Table]: ...

    def to_json(self) -> dict[str, Any]: ...

    def plot(self, path: Path, subtitle: str) -> bool: ...


@dataclass
class Cpus:
    """Where the timed loops, the servers and the load run (None: anywhere)."""

    server: int | None
    load: int | None
    sentence: str

    @classmethod
    def choose(cls, args: argparse.Namespace) -> Cpus:
        if args.no_pin:
            return cls(None, None, "not pinned: the scheduler places every process")
        allowed = sorted(os.sched_getaffinity(0))
        for cpu in (args.server_cpu, args.load_cpu):
            if cpu not in allowed:
                raise SystemExit(f"rawepoll compare: CPU {cpu} is not among {allowed}")
        sentence = (
            f"timed loops and servers pinned to CPU {args.server_cpu}, the load and this "
            f"process (during the server sections) to CPU {args.load_cpu}, of {allowed}"
        )
        if args.server_cpu == args.load_cpu:
            sentence += " -- the SAME CPU: server and load compete"
        return cls(args.server_cpu, args.load_cpu, sentence)

    def pin(self, cpu: int | None) -> None:
        """Move this process to ``cpu`` (checked by :meth:`choose`), if pinning."""
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})


def _preset(args: argparse.Namespace) -> Preset:
    return SMOKE if args.smoke else QUICK if args.quick else FULL


def _contenders(args: argparse.Namespace) -> tuple[list[servers.Contender], dict[str, str]]:
    contenders, skipped = [], {}
    for contender in servers.select(args.servers):
        reason = contender.missing()
        if reason:
            skipped[contender.name] = reason
        else:
            contenders.append(contender)
    return contenders, skipped


def run_scaling(args: argparse.Namespace, preset: Preset, cpus: Cpus) -> scaling.Result:
    cpus.pin(cpus.server)
    settings = Settings(args.rounds or preset.timing_rounds, preset.repeat, preset.scaling_batch_ms)
    return scaling.measure(args.n or preset.ns, settings)


def run_binding(args: argparse.Namespace, preset: Preset, cpus: Cpus) -> binding.Result:
    cpus.pin(cpus.server)
    settings = Settings(args.rounds or preset.timing_rounds, preset.repeat, preset.binding_batch_ms)
    return binding.measure(settings)


def run_echo(args: argparse.Namespace, preset: Preset, cpus: Cpus) -> echo.Result | str:
    if optional("hdrh") is None:
        return "the load generator needs hdrhistogram (pip install 'rawepoll[bench]')"
    cpus.pin(cpus.load)
    plan = echo.Plan(
        rounds=args.rounds or preset.server_rounds,
        seconds=args.seconds or preset.seconds,
        conns=args.conns or preset.conns,
        procs=args.procs,
        sizes=args.sizes,
        host=args.host,
        server_cpu=cpus.server,
        load_cpu=cpus.load,
    )
    contenders, skipped = _contenders(args)
    return echo.measure(contenders, plan, skipped)


def run_memory(args: argparse.Namespace, preset: Preset, cpus: Cpus) -> memory.Result:
    cpus.pin(cpus.load)
    wanted = args.memory_conns or preset.memory_conns
    conns = min(wanted, memory.fd_capacity())
    if conns < wanted:
        report.progress(f"memory: {wanted:,} connections capped at {conns:,} by RLIMIT_NOFILE")
    plan = memory.Plan(
        rounds=args.rounds or preset.server_rounds,
        conns=conns,
        window=min(args.window, conns),
        settle_s=preset.settle_s,
        host=args.host,
        server_cpu=cpus.server,
        load_cpu=cpus.load,
    )
    contenders, skipped = _contenders(args)
    return memory.measure(contenders, plan, skipped)


def run_broadcast(args: argparse.Namespace, preset: Preset, cpus: Cpus) -> broadcast.Result | str:
    if optional("hdrh") is None:
        return "the subscribers need hdrhistogram (pip install 'rawepoll[bench]')"
    cpus.pin(cpus.load)
    subscribers, notes = broadcast.scale(args.subscribers or preset.subscribers)
    for note in notes:
        report.progress(f"broadcast: {note}")
    plan = broadcast.Plan(
        rounds=args.rounds or preset.broadcast_rounds,
        subscribers=subscribers,
        deliveries=preset.deliveries,
        host=args.host,
        server_cpu=cpus.server,
        load_cpu=cpus.load,
    )
    return broadcast.measure(plan, notes)


def run_websocket(args: argparse.Namespace, preset: Preset, cpus: Cpus) -> websocket.Result | str:
    if optional("hdrh") is None:
        return "the load generator needs hdrhistogram (pip install 'rawepoll[bench]')"
    cpus.pin(cpus.load)
    wanted = args.memory_conns or preset.memory_conns
    plan = websocket.Plan(
        rounds=args.rounds or preset.websocket_rounds,
        seconds=args.seconds or preset.seconds,
        conns=args.conns or preset.conns,
        procs=args.procs,
        sizes=args.sizes,
        memory_conns=min(wanted, memory.fd_capacity()),
        settle_s=preset.settle_s,
        host=args.host,
        server_cpu=cpus.server,
        load_cpu=cpus.load,
    )
    if plan.memory_conns < wanted:
        report.progress(f"websocket: {wanted:,} connections capped at {plan.memory_conns:,}")
    contenders = wsservers.select(args.ws_servers)
    skipped = {c.name: why for c in contenders if (why := c.missing())}
    return websocket.measure([c for c in contenders if c.name not in skipped], plan, skipped)


RUNNERS: dict[str, Callable[[argparse.Namespace, Preset, Cpus], Section | str]] = {
    "scaling": run_scaling,
    "binding": run_binding,
    "echo": run_echo,
    "memory": run_memory,
    "broadcast": run_broadcast,
    "websocket": run_websocket,
}


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, so every finally runs: servers and loads stopped."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    """Run the chosen sections, print their tables, write the files; the exit status."""
    preset = _preset(args)
    cpus = Cpus.choose(args)
    env = machine.environment(cpus.sentence)
    subtitle = f"{env['python']}, Linux {env['kernel']}, {env['cpus']} CPUs, {env['date'][:10]}"
    print(
        f"rawepoll compare{' --quick' if args.quick else ''}: {env['python']} on Linux "
        f"{env['kernel']} {env['machine']}, {env['cpus']} CPUs, load {env['loadavg_1m']}; "
        f"rawepoll {env['rawepoll']}; {env['date']}\n{cpus.sentence}\n",
        flush=True,
    )
    started = time.monotonic()
    results: dict[str, Section | str] = {}
    try:
        with _sigterm_unwinds():
            for name in SECTIONS:
                if name not in args.sections:
                    results[name] = "not in --sections"
                    continue
                results[name] = result = RUNNERS[name](args, preset, cpus)
                if isinstance(result, str):
                    print(f"{name}: skipped -- {result}\n", flush=True)
                else:
                    for table in result.tables():
                        report.show(table)
    except KeyboardInterrupt:
        print(
            "rawepoll compare: interrupted; every server and load process stopped", file=sys.stderr
        )
        return 130
    seconds = time.monotonic() - started
    failures = write(args.out, results, env, seconds, subtitle)
    print(f"took {seconds:.0f} s")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


def write(
    out: Path,
    results: dict[str, Section | str],
    env: dict[str, Any],
    seconds: float,
    subtitle: str,
) -> list[str]:
    """results.json, results.md and a PNG per section in ``out``; the failures to report."""
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    for name, result in results.items():
        if not isinstance(result, str) and result.plot(out / f"{name}.png", subtitle):
            plots[name] = f"{name}.png"
    failures = [
        f"{name}: {server}: {what}"
        for name, result in results.items()
        if isinstance(result, (echo.Result, memory.Result, broadcast.Result, websocket.Result))
        for server, what in result.failures.items()
    ]
    payload: dict[str, Any] = {
        "environment": env,
        "seconds": round(seconds, 1),
        "plots": plots,
        "failures": failures,
    }
    for name, result in results.items():
        payload[name] = {"skipped": result} if isinstance(result, str) else result.to_json()
    report.write_json(out / "results.json", payload)
    (out / "results.md").write_text(_markdown(results, env, plots))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}")
    if plots:
        print(f"wrote {', '.join(str(out / png) for png in plots.values())}")
    if report.pyplot() is None:
        print("no plots: matplotlib is not installed (pip install 'rawepoll[bench]')")
    return failures


def _markdown(results: dict[str, Section | str], env: dict[str, Any], plots: dict[str, str]) -> str:
    parts = [
        "# rawepoll compare\n",
        f"{env['date']}: {env['python']} on Linux {env['kernel']} {env['machine']}, "
        f"{env['cpus']} CPUs, load {env['loadavg_1m']}; rawepoll {env['rawepoll']}. "
        f"{env['pinning']}.\n",
    ]
    for name, result in results.items():
        if isinstance(result, str):
            parts.append(f"**{name}**: skipped -- {result}\n")
            continue
        parts += [report.markdown(table) for table in result.tables()]
        if name in plots:
            parts.append(f"![{name}]({plots[name]})\n")
    return "\n".join(parts)
