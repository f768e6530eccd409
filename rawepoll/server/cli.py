"""``rawepoll serve``: the command line of the echo server."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys

from rawepoll._cli import non_negative_int, non_negative_seconds, port, positive_int
from rawepoll.server.broker import BrokerDependencyError
from rawepoll.server.config import ServerConfig
from rawepoll.server.faults import HandlerError
from rawepoll.server.handler import Handler
from rawepoll.server.serving import serve

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


_DEFAULTS = ServerConfig()  # every default below is read from here


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rawepoll serve`` options; defaults are :class:`ServerConfig`'s."""
    parser.set_defaults(**{f.name: getattr(_DEFAULTS, f.name) for f in _OPTIONS})
    parser.add_argument(
        "--host",
        help="address to bind (default %(default)s; "
        "never all interfaces unless you ask, e.g. 0.0.0.0 or ::)",
    )
    parser.add_argument(
        "--port",
        type=port,
        help="TCP port (default %(default)s; 0 picks a free one, shown when listening)",
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
        help="level-triggered (one read per event) or edge-triggered "
        "(drain each event, with a per-turn read budget); default %(default)s",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        metavar="N|auto",
        help="worker processes (default %(default)s: in-process, no supervisor); N > 1 forks "
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
        metavar="SECONDS",
        help="close connections without traffic for this long (default %(default)s: never)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=non_negative_seconds,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, serve open connections this long at most before "
        "closing them (default %(default)s)",
    )
    parser.add_argument(
        "--backlog",
        type=positive_int,
        metavar="N",
        help="listen() backlog (default %(default)s; the kernel caps it at somaxconn)",
    )
    parser.add_argument(
        "--balance",
        choices=("rotate", "fill"),
        help="how workers share new connections: rotate (the default) moves a worker to the "
        "back of the listener's queue after each accept batch, so workers take turns and "
        "active connections spread evenly; fill lets the first idle worker take "
        "connections until it is full, in bigger batches -- cheaper per connection when "
        "there are very many mostly idle ones (rawepoll c1m uses it)",
    )
    parser.add_argument(
        "--stats-interval",
        type=non_negative_seconds,
        metavar="SECONDS",
        help="print a status line (and a status event, see --status-fd) every SECONDS "
        "(default %(default)s: only at exit)",
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
        metavar="BYTES",
        help="pause reading a connection while its pending output exceeds this "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--low-water",
        type=positive_int,
        metavar="BYTES",
        help="resume reading once pending output falls below this (default %(default)s)",
    )
    parser.add_argument(
        "--max-pending",
        type=positive_int,
        metavar="BYTES",
        help="pushed output (published or sent through a handle) a connection may have "
        "waiting before --slow-policy applies (default %(default)s)",
    )
    parser.add_argument(
        "--slow-policy",
        choices=("drop", "close"),
        help="what happens to a connection that does not read its pushed messages once "
        "--max-pending is reached: drop the new message (counted as dropped) or close the "
        "connection (counted as slow_closed); default %(default)s",
    )
    websocket = parser.add_argument_group(
        "WebSocket (--protocol websocket; --handler then names a WebSocketApp subclass)"
    )
    websocket.add_argument(
        "--protocol",
        choices=("raw", "websocket"),
        help="raw: the handler gets the bytes (default %(default)s); websocket: RFC 6455 -- "
        "echo every message by default, and a client of ws://HOST:PORT/topic/NAME "
        "receives what is published to NAME",
    )
    websocket.add_argument(
        "--ping-interval",
        type=non_negative_seconds,
        metavar="SECONDS",
        help="heartbeat: ping every open connection this often (default %(default)s; 0: never)",
    )
    websocket.add_argument(
        "--ping-timeout",
        type=non_negative_seconds,
        metavar="SECONDS",
        help="close (1011) a connection whose pong has not come this long after a ping "
        "(default %(default)s)",
    )
    websocket.add_argument(
        "--handshake-timeout",
        type=non_negative_seconds,
        metavar="SECONDS",
        help="close a connection whose upgrade request is not complete by then "
        "(default %(default)s)",
    )
    websocket.add_argument(
        "--max-message",
        type=positive_int,
        metavar="BYTES",
        help="the largest message accepted, fragments together; above it: close 1009 "
        "(default %(default)s)",
    )
    websocket.add_argument(
        "--origin",
        dest="origins",
        action="append",
        default=None,  # not ServerConfig's tuple: "append" needs a list to grow
        metavar="ORIGIN",
        help="accept handshakes only from this Origin (repeat for more; default: any)",
    )
    websocket.add_argument(
        "--subprotocol",
        dest="subprotocols",
        action="append",
        default=None,  # not ServerConfig's tuple: "append" needs a list to grow
        metavar="NAME",
        help="a subprotocol to agree to when the client offers it (repeat, in order of "
        "preference; default: none)",
    )
    parser.add_argument(
        "--control",
        metavar="PATH",
        help="also listen on a local control socket at PATH (mode 0600; a stale socket file "
        "is replaced, removed on exit), through which 'rawepoll publish' publishes to "
        "subscribers or broadcasts from outside the server (default: none)",
    )
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="relay publishes across hosts through Redis pub/sub: redis://HOST:PORT[/DB] "
        "(or redis://:PASSWORD@HOST:PORT); each topic is the Redis channel of the same name, "
        "delivery is at most once (see docs/push.md); needs pip install 'rawepoll[redis]'",
    )
    parser.add_argument(
        "--status-fd",
        type=non_negative_int,
        metavar="N",
        help="write JSON events to descriptor N, one object per line, for programs that "
        "start the server: 'ready' (address, family, pid, worker pids, mode) once "
        "listening, 'status' every --stats-interval, 'restart' when a worker is replaced, "
        "'exit' (the counters) last; see docs/server.md",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print neither the listening line nor the exit summary"
    )


# The options that map one to one onto a ServerConfig field (all but --handler).
_OPTIONS = [f for f in dataclasses.fields(ServerConfig) if f.name != "handler"]


def run(args: argparse.Namespace) -> int:
    """Build the configuration from ``args`` and serve."""
    config = ServerConfig(**{f.name: getattr(args, f.name) for f in _OPTIONS})
    if args.handler is not None:
        config.handler = args.handler
    try:
        config.check()
    except ValueError as error:
        print(f"rawepoll serve: error: {error}", file=sys.stderr)
        return 2
    if config.status_fd is not None and not _is_open(config.status_fd):
        print(
            f"rawepoll serve: error: --status-fd {config.status_fd} is not an open descriptor",
            file=sys.stderr,
        )
        return 2
    try:
        return serve(config)
    except (HandlerError, BrokerDependencyError) as error:
        print(f"rawepoll serve: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"rawepoll serve: error: {error}", file=sys.stderr)
        return 1


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
