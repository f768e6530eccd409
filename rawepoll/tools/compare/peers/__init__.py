"""The peer echo servers ``rawepoll compare`` measures rawepoll's server against.

Each is a module anyone can start by hand, ``python -m
rawepoll.tools.compare.peers.NAME [--host HOST] [--port PORT] [--status-fd N]``
(port 0, the default, picks a free one); when ready it prints ``listening on
HOST:PORT`` on stdout for people and, with ``--status-fd``, writes the
``ready`` event of ``rawepoll serve`` (:mod:`rawepoll.server.report`) to
descriptor ``N`` for programs; it runs until SIGTERM or SIGINT, then exits 0:

========================  ===================================================
``selectors_echo``        :class:`selectors.DefaultSelector` (epoll on Linux),
                          non-blocking sockets, buffered writes, backpressure
``asyncio_protocol``      an :class:`asyncio.Protocol`: ``data_received`` ->
                          ``transport.write``
``asyncio_streams``       ``asyncio.start_server``: ``read``/``write``/``drain``
``uvloop_protocol``       the asyncio protocol above on uvloop (if installed)
``asyncio_fanout``        publish/subscribe (rawepoll's line and control
                          protocols), fanned out as ``websockets.broadcast``
                          does; for the broadcast section
``websockets_echo``       WebSocket echo on the ``websockets`` library,
                          ``--loop asyncio`` or ``--loop uvloop``
``picows_echo``           WebSocket echo on ``picows``, ``--loop asyncio`` or
                          ``--loop uvloop``
``gorilla/main.go``       WebSocket echo in Go on gorilla/websocket, a program
                          built at run time (see ``compare.wsservers``)
========================  ===================================================

Each is written the way a careful user of that library would write it, so it
is a fair peer rather than a strawman.  How the comparison starts, pins and
measures them is :mod:`rawepoll.tools.compare.servers`.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

from rawepoll.tools.compare.extras import optional
from rawepoll.tools.serverproc import write_ready

__all__ = ["LOOPS", "announce", "new_loop", "parse_args", "parser"]

LOOPS = ("asyncio", "uvloop")  # the event loops of a peer's --loop option


def parse_args(doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    """``--host``, ``--port`` and ``--status-fd``, the options of every peer.

    ``doc``'s first line describes the peer.
    """
    return parser(doc).parse_args(argv)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The parser of :func:`parse_args`, for a peer that adds options of its own."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free one)")
    parser.add_argument(
        "--status-fd",
        type=int,
        default=None,
        metavar="N",
        help="write the JSON 'ready' event of rawepoll serve to descriptor N once listening",
    )
    return parser


def announce(sock: socket.socket, status_fd: int | None) -> None:
    """Say that ``sock`` listens: ``listening on HOST:PORT`` on stdout for people, then
    (as ``rawepoll serve`` does, in that order) the ``ready`` event on ``status_fd``."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on {shown}:{port}", flush=True)
    write_ready(status_fd, sock)


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    """A new event loop of :data:`LOOPS`: asyncio's own, or uvloop's.

    Raises:
        SystemExit: ``uvloop`` is asked for and is not installed (status 2, with the reason).
    """
    if name != "uvloop":
        return asyncio.new_event_loop()
    uvloop = optional("uvloop")
    if uvloop is None:
        print("uvloop is not installed (pip install 'rawepoll[bench]')", file=sys.stderr)
        raise SystemExit(2)
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop
