"""``rawepoll serve``: the command line of the echo server."""

from __future__ import annotations

import argparse
import importlib
import sys

from rawepoll._cli import non_negative_seconds, port, positive_int
from rawepoll.server import ServerConfig, serve
from rawepoll.server.handler import Handler

DESCRIPTION = (
    "Serve TCP (IPv4/IPv6) or Unix-socket connections with an echo handler (or your own), "
    "on rawepoll's epoll binding: level- or edge-triggered loops, buffered writes with "
    "backpressure, forked workers sharing one listener, graceful shutdown on SIGTERM/SIGINT. "
    "Prints one line when listening and a summary when it exits."
)


def _workers(text: str) -> int | str:
    return "auto" if text == "auto" else positive_int(text)


def _handler(text: str) -> type[Handler]:
    module_name, _, attribute = text.partition(":")
    if not module_name or not attribute:
        raise argparse.ArgumentTypeError(f"expected MODULE:CLASS, got {text!r}")
    try:
        handler: type[Handler] = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise argparse.ArgumentTypeError(f"cannot load {text}: {error}") from None
    return handler


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rawepoll serve`` options."""
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; "
        "never all interfaces unless you ask, e.g. 0.0.0.0 or ::)",
    )
    parser.add_argument(
        "--port",
        type=port,
        default=8080,
        help="TCP port (default 8080; 0 picks a free one, shown when listening)",
    )
    parser.add_argument(
        "--unix",
        metavar="PATH",
        help="listen on a Unix stream socket at PATH instead of TCP "
        "(a stale socket file is replaced; removed on exit)",
    )
    parser.add_argument(
        "--mode",
        choices=("lt", "et"),
        default="lt",
        help="level-triggered (one read per event) or edge-triggered "
        "(drain each event, with a per-turn read budget); default lt",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="worker processes (default 1: in-process, no supervisor); N > 1 forks "
        "N workers sharing one listener with EPOLLEXCLUSIVE and restarts any that "
        "dies; auto = one per core, more if RLIMIT_NOFILE caps a process below "
        "--max-conns",
    )
    parser.add_argument(
        "--max-conns",
        type=positive_int,
        metavar="N",
        help="connections per worker (default: as many as RLIMIT_NOFILE allows); "
        "a single worker closes connections beyond it at once (counted as refused), "
        "a full worker among several stops accepting so others take them",
    )
    parser.add_argument(
        "--idle-timeout",
        type=non_negative_seconds,
        default=0.0,
        metavar="SECONDS",
        help="close connections without traffic for this long (default 0: never)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=non_negative_seconds,
        default=10.0,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, serve open connections this long at most before "
        "closing them (default 10)",
    )
    parser.add_argument(
        "--backlog",
        type=positive_int,
        default=4096,
        metavar="N",
        help="listen() backlog (default 4096; the kernel caps it at somaxconn)",
    )
    parser.add_argument(
        "--balance",
        choices=("rotate", "fill"),
        default="rotate",
        help="how workers share new connections: rotate (default) moves a worker to the "
        "back of the listener's queue after each accept batch, so workers take turns and "
        "active connections spread evenly; fill lets the first idle worker take "
        "connections until it is full, in bigger batches -- cheaper per connection when "
        "there are very many mostly idle ones (rawepoll c1m uses it)",
    )
    parser.add_argument(
        "--stats-interval",
        type=non_negative_seconds,
        default=0.0,
        metavar="SECONDS",
        help="print a status line every SECONDS (default 0: only at exit)",
    )
    parser.add_argument(
        "--handler",
        type=_handler,
        default=None,
        metavar="MODULE:CLASS",
        help="handler class (default rawepoll.server.handler:EchoHandler)",
    )
    parser.add_argument(
        "--high-water",
        type=positive_int,
        default=262144,
        metavar="BYTES",
        help="pause reading a connection while its pending output exceeds this (default 262144)",
    )
    parser.add_argument(
        "--low-water",
        type=positive_int,
        default=65536,
        metavar="BYTES",
        help="resume reading once pending output falls below this (default 65536)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print neither the listening line nor the exit summary"
    )


def run(args: argparse.Namespace) -> int:
    """Build the configuration from ``args`` and serve."""
    config = ServerConfig(
        host=args.host,
        port=args.port,
        unix=args.unix,
        mode=args.mode,
        workers=args.workers,
        max_conns=args.max_conns,
        idle_timeout=args.idle_timeout,
        drain_timeout=args.drain_timeout,
        backlog=args.backlog,
        balance=args.balance,
        stats_interval=args.stats_interval,
        high_water=args.high_water,
        low_water=args.low_water,
        quiet=args.quiet,
    )
    if args.handler is not None:
        config.handler = args.handler
    try:
        config.check()
    except ValueError as error:
        print(f"rawepoll serve: error: {error}", file=sys.stderr)
        return 2
    try:
        return serve(config)
    except OSError as error:
        print(f"rawepoll serve: error: {error}", file=sys.stderr)
        return 1
