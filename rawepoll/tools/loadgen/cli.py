"""``rawepoll bench``: the command line of the load generator."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rawepoll._cli import positive_int, positive_seconds
from rawepoll.tools.loadgen.display import Monitor, RichMonitor, TextMonitor
from rawepoll.tools.loadgen.plan import parse_cpus, parse_sources
from rawepoll.tools.loadgen.result import LoadInterrupted, LoadResult
from rawepoll.tools.loadgen.workers import execute, prepare

DESCRIPTION = (
    "Drive an echo server (rawepoll serve, or any other) with closed-loop traffic: each "
    "connection sends a message, waits for its whole echo, verifies every byte and sends the "
    "next. Connections are opened without blocking, spread over forked load processes and "
    "source addresses, and the measured traffic starts once all are established. Reports "
    "messages/s, MB/s, latency percentiles (HdrHistogram), connect time, errors and "
    "mismatches. Exit status: 0 if every byte came back right, 1 on any error or mismatch, "
    "2 for bad arguments, 130 when interrupted (SIGINT/SIGTERM; partial figures are shown)."
)


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 1..65535, got {value}")
    return value


def _sources(text: str) -> list[str]:
    try:
        return parse_sources(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _cpus(text: str) -> list[int]:
    try:
        return parse_cpus(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rawepoll bench`` options."""
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8080, help="server port (default 8080)")
    parser.add_argument(
        "--unix", metavar="PATH", help="connect to a Unix stream socket at PATH instead of TCP"
    )
    parser.add_argument(
        "--conns", type=positive_int, default=100, metavar="N", help="connections (default 100)"
    )
    parser.add_argument(
        "--size",
        type=positive_int,
        default=64,
        metavar="BYTES",
        help="bytes per message (default 64; 12 or more carry the whole header)",
    )
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument(
        "--duration",
        type=positive_seconds,
        metavar="SECONDS",
        help="measured traffic time, after every connection is up (default 10)",
    )
    stop.add_argument(
        "--messages",
        type=positive_int,
        metavar="N",
        help="stop after N verified echoes in all instead of after a duration",
    )
    parser.add_argument(
        "--pipeline",
        type=positive_int,
        default=1,
        metavar="K",
        help="messages in flight per connection (default 1)",
    )
    parser.add_argument(
        "--procs",
        type=positive_int,
        default=1,
        metavar="P",
        help="load processes, forked; each holds at most RLIMIT_NOFILE connections (default 1)",
    )
    parser.add_argument(
        "--source-addrs",
        type=_sources,
        metavar="ADDRS",
        help="bind connections to these source addresses in turn, e.g. 127.0.0.2-127.0.0.40 "
        "or 127.0.0.2,127.0.0.3: each brings its own range of client ports (~28K), so one "
        "server port can take more than 64K connections; connecting slows down as a range "
        "fills up, so keep well below it per address",
    )
    parser.add_argument(
        "--cpus",
        type=_cpus,
        metavar="LIST",
        help="pin load process i to the (i mod len)-th CPU of LIST, e.g. 1 or 0,1 or 2-5",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="wall-clock guard for the whole run (default: a ramp allowance of 30 s + 2 ms "
        "per connection of a process, plus the duration + 20 s, or plus 600 s with --messages)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object with every figure on stdout, nothing else",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display")


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops a run as Ctrl-C does: load processes stopped, partial figures shown."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _monitor(args: argparse.Namespace) -> Monitor | None:
    if args.quiet:
        return None
    if sys.stdout.isatty():
        return RichMonitor()
    return TextMonitor(lambda line: print(line, file=sys.stderr, flush=True))


def run(args: argparse.Namespace) -> int:
    """Run the load and report; the exit status says whether every byte came back right."""
    duration = args.duration
    if duration is None and args.messages is None:
        duration = 10.0
    try:
        plan = prepare(
            host=args.host,
            port=args.port,
            unix=args.unix,
            conns=args.conns,
            size=args.size,
            duration=duration,
            messages=args.messages,
            pipeline=args.pipeline,
            procs=args.procs,
            source_addrs=args.source_addrs,
            cpus=args.cpus,
            timeout=args.timeout,
        )
        monitor = _monitor(args)
    except ValueError as error:
        print(f"rawepoll bench: error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(f"rawepoll bench: error: {error}", file=sys.stderr)
        return 1
    status = 0
    with _sigterm_interrupts():
        try:
            result = execute(plan, monitor)
        except LoadInterrupted as stopped:
            result, status = stopped.result, 130
        except KeyboardInterrupt:  # a second Ctrl-C while stopping: no figures
            print("rawepoll bench: interrupted", file=sys.stderr)
            return 130
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        report(result, plan.target)
    for problem in result.problems[:10]:
        print(f"rawepoll bench: {problem}", file=sys.stderr)
    if status:
        return status
    return 0 if result.ok else 1


def report(result: LoadResult, target: str) -> None:
    """The figures, for people: a rich table on a terminal, plain lines otherwise."""
    rows = _rows(result, target)
    if sys.stdout.isatty():
        try:
            from rich.console import Console  # noqa: PLC0415 -- optional extra
            from rich.table import Table  # noqa: PLC0415
        except ImportError:
            pass
        else:
            table = Table(title="rawepoll bench", show_header=False)
            table.add_column(style="bold")
            table.add_column()
            for name, value in rows:
                table.add_row(name, value)
            Console().print(table)
            return
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _rows(r: LoadResult, target: str) -> list[tuple[str, str]]:
    cpu = f"{r.loadgen_cpu_s:.2f} s, {r.loadgen_us_per_msg:.1f} µs/msg" if r.messages else "-"
    rows: list[tuple[str, Any]] = [
        ("server", target),
        ("connections", f"{r.established}/{r.conns} established in {r.connect_s:.2f} s"),
        ("load", f"{r.procs} process(es), {r.size} B messages, pipeline {r.pipeline}"),
        ("messages", f"{r.messages:,} in {r.seconds:.2f} s"),
        ("throughput", f"{r.msgs_per_s:,.0f} msg/s, {r.mb_per_s:.2f} MB/s"),
        (
            "latency µs",
            f"p50 {r.p50_us:,.0f}  p90 {r.p90_us:,.0f}  p99 {r.p99_us:,.0f}  "
            f"p99.9 {r.p999_us:,.0f}  max {r.max_us:,.0f}",
        ),
        ("load CPU", cpu),
        ("errors", str(r.errors)),
        ("mismatches", str(r.mismatches)),
    ]
    if r.interrupted:
        rows.append(("interrupted", "yes: partial figures"))
    return [(name, str(value)) for name, value in rows]
