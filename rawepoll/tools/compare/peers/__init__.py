"""The peer echo servers ``rawepoll compare`` measures rawepoll's server against.

Each is a module anyone can start by hand, ``python -m
rawepoll.tools.compare.peers.NAME [--host HOST] [--port PORT]`` (port 0, the
default, picks a free one); it prints ``listening on HOST:PORT`` on stdout when
ready and runs until SIGTERM or SIGINT, then exits 0:

========================  ===================================================
``selectors_echo``        :class:`selectors.DefaultSelector` (epoll on Linux),
                          non-blocking sockets, buffered writes, backpressure
``asyncio_protocol``      an :class:`asyncio.Protocol`: ``data_received`` ->
                          ``transport.write``
``asyncio_streams``       ``asyncio.start_server``: ``read``/``write``/``drain``
``uvloop_protocol``       the asyncio protocol above on uvloop (if installed)
========================  ===================================================

Each is written the way a careful user of that library would write it, so it
is a fair peer rather than a strawman.  How the comparison starts, pins and
measures them is :mod:`rawepoll.tools.compare.servers`.
"""

from __future__ import annotations

import argparse
import socket

__all__ = ["announce", "parse_args"]


def parse_args(doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    """``--host`` and ``--port``, the options of every peer; ``doc``'s first line describes it."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free one)")
    return parser.parse_args(argv)


def announce(sock: socket.socket) -> None:
    """Print the line the comparison waits for: ``listening on HOST:PORT``."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on {shown}:{port}", flush=True)
