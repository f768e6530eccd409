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
from rawepoll.tools.loadgen import latency
from rawepoll.tools.loadgen.broadcast import execute_broadcast
from rawepoll.tools.loadgen.display import Monitor, RichMonitor, TextMonitor
from rawepoll.tools.loadgen.plan import parse_cpus, parse_sources
from rawepoll.tools.loadgen.result import (
    BroadcastInterrupted,
    BroadcastResult,
    LoadInterrupted,
    LoadResult,
)
from rawepoll.tools.loadgen.spec import PROTOCOLS, LoadSpec
from rawepoll.tools.loadgen.workers import execute, prepare

DESCRIPTION = (
    "Drive an echo server (rawepoll serve, or any other) with closed-loop traffic: each "
    "connection sends a message, waits for its whole echo, verifies every byte and sends the "
    "next -- over raw TCP or, with --protocol websocket, as masked WebSocket frames after the "
    "opening handshake. Connections are opened without blocking, spread over forked load "
    "processes and source addresses, and the measured traffic starts once all are "
    "established. Reports messages/s, MB/s, latency percentiles (HdrHistogram), connect time, "
    "errors and mismatches. With --broadcast it measures server push instead: the connections "
    "subscribe to a topic, messages are published through the server's control socket, and "
    "every delivery is verified (number, order, bytes) and timed from publish to arrival. "
    "Exit status: 0 if every byte came back right, 1 on any error, mismatch or lost "
    "delivery, 2 for bad arguments, 130 when interrupted (SIGINT/SIGTERM; partial figures "
    "are shown)."
)
BROADCAST_MESSAGES = 100  # --messages of a broadcast run, unless given


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
        "--protocol",
        choices=PROTOCOLS,
        default="tcp",
        help="tcp: raw bytes, echoed (the default); websocket: each connection opens with the "
        "RFC 6455 handshake (a random Sec-WebSocket-Key; the 101 and Sec-WebSocket-Accept "
        "checked), then sends each message as a binary frame masked with a fresh key and "
        "verifies every echoed frame byte for byte, header and payload; a server's ping is "
        "answered (e.g. against rawepoll serve --protocol websocket)",
    )
    parser.add_argument(
        "--path", default="/", help="websocket: the request path of the handshake (default /)"
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
    push = parser.add_argument_group(
        "server push (--broadcast)",
        "Subscribe every connection to --topic (TCP: 'SUB topic', for rawepoll serve --handler "
        "rawepoll.server.handler:LinePubSubHandler; --protocol websocket: a handshake to "
        "/topic/TOPIC), then publish --messages N (default "
        f"{BROADCAST_MESSAGES}) messages through the server's control socket (rawepoll serve "
        "--control PATH), each carrying its number and publish time (CLOCK_MONOTONIC). Every "
        "delivery is verified byte for byte, in order, once; reported: delivery time "
        "percentiles (publish to arrival), the time until the last subscriber had each message, "
        "deliveries/s, lost, duplicated and reordered deliveries. --pipeline K: at most K "
        "messages in flight (published, not yet at every subscriber); 1, the default, times one "
        "broadcast at a time. --size is the published message's size (at least 32). "
        "--duration does not apply.",
    )
    push.add_argument(
        "--broadcast", action="store_true", help="measure server push instead of echo"
    )
    push.add_argument(
        "--control",
        metavar="PATH",
        help="the server's control socket, through which the messages are published",
    )
    push.add_argument(
        "--topic", default="bench", help="the topic to subscribe and publish to (default bench)"
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


def _spec(args: argparse.Namespace) -> LoadSpec:
    duration, messages = args.duration, args.messages
    if args.broadcast:
        if duration is not None:
            raise ValueError("--duration is for echo runs: a broadcast publishes --messages N")
        messages = messages or BROADCAST_MESSAGES
    elif duration is None and messages is None:
        duration = 10.0
    return LoadSpec(
        host=args.host,
        port=args.port,
        unix=args.unix,
        conns=args.conns,
        size=args.size,
        duration=duration,
        messages=messages,
        pipeline=args.pipeline,
        procs=args.procs,
        source_addrs=args.source_addrs,
        cpus=args.cpus,
        timeout=args.timeout,
        protocol=args.protocol,
        path=args.path,
        broadcast=args.broadcast,
        topic=args.topic,
        control=args.control,
    )


def run(args: argparse.Namespace) -> int:
    """Run the load and report; the exit status says whether every byte came back right."""
    try:
        latency.require()  # a missing extra is said first (status 1), before any setting
        plan = prepare(_spec(args))
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
            result = (
                execute_broadcast(plan, monitor) if plan.spec.broadcast else execute(plan, monitor)
            )
        except (LoadInterrupted, BroadcastInterrupted) as stopped:
            result, status = stopped.result, 130
        except KeyboardInterrupt:  # a second Ctrl-C while stopping: no figures
            print("rawepoll bench: interrupted", file=sys.stderr)
            return 130
    if args.json:
        print(json.dumps(result.as_dict()))
    elif isinstance(result, BroadcastResult):
        report_broadcast(result, plan.target, plan.spec.control or "")
    else:
        report(result, plan.target)
    for problem in result.problems[:10]:
        print(f"rawepoll bench: {problem}", file=sys.stderr)
    if status:
        return status
    return 0 if result.ok else 1


def report(result: LoadResult, target: str) -> None:
    """The figures, for people: a rich table on a terminal, plain lines otherwise."""
    _show(_rows(result, target))


def report_broadcast(result: BroadcastResult, target: str, control: str) -> None:
    """A broadcast run's figures, as :func:`report` shows an echo run's."""
    _show(_broadcast_rows(result, target, control))


def _show(rows: list[tuple[str, str]]) -> None:
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


_UNITS = {"tcp": "messages", "websocket": "messages in masked binary frames"}


def _rows(r: LoadResult, target: str) -> list[tuple[str, str]]:
    cpu = f"{r.loadgen_cpu_s:.2f} s, {r.loadgen_us_per_msg:.1f} µs/msg" if r.messages else "-"
    rows: list[tuple[str, Any]] = [
        ("server", target),
        ("connections", f"{r.established}/{r.conns} established in {r.connect_s:.2f} s"),
        ("load", f"{r.procs} process(es), {r.size} B {_UNITS[r.protocol]}, pipeline {r.pipeline}"),
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


def _broadcast_rows(r: BroadcastResult, target: str, control: str) -> list[tuple[str, str]]:
    per = f", {r.loadgen_cpu_s * 1e6 / r.delivered:.1f} µs/delivery" if r.delivered else ""
    rows = [
        ("server", f"{target}, control {control}, topic {r.topic}"),
        ("subscribers", f"{r.subscribed}/{r.conns} subscribed in {r.connect_s:.2f} s"),
        (
            "load",
            f"{r.procs} process(es), {r.protocol}, {r.size} B messages, pipeline {r.pipeline}",
        ),
        ("published", f"{r.published:,} messages in {r.publish_s:.2f} s"),
        ("deliveries", f"{r.delivered:,} of {r.expected:,} in {r.seconds:.2f} s"),
        ("throughput", f"{r.deliveries_per_s:,.0f} deliveries/s"),
        (
            "delivery µs",
            f"p50 {r.p50_us:,.0f}  p90 {r.p90_us:,.0f}  p99 {r.p99_us:,.0f}  "
            f"p99.9 {r.p999_us:,.0f}  max {r.max_us:,.0f}",
        ),
        (
            "to all µs",
            f"p50 {r.to_all_p50_us:,.0f}  p99 {r.to_all_p99_us:,.0f}  max {r.to_all_max_us:,.0f}",
        ),
        ("load CPU", f"{r.loadgen_cpu_s:.2f} s{per}"),
        ("lost", f"{r.lost:,}"),
        ("duplicates", f"{r.duplicates:,}"),
        ("out of order", f"{r.reordered:,}"),
        ("errors", str(r.errors)),
        ("mismatches", str(r.mismatches)),
    ]
    if r.interrupted:
        rows.append(("interrupted", "yes: partial figures"))
    return rows
