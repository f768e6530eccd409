"""Publish/subscribe on asyncio, fanning out the way ``websockets.broadcast`` does, over plain TCP.

It speaks the protocols of ``rawepoll serve --handler
rawepoll.server.handler:LinePubSubHandler --control PATH``, so that the same
subscribers (``rawepoll bench --broadcast``) and the same publisher
(:mod:`rawepoll.server.control`) drive it:

* a client's ``SUB topic`` line is answered ``OK SUB topic``, ``UNSUB topic``
  ``OK UNSUB topic``, ``PUB topic message`` publishes (``OK PUB topic``);
  a subscriber receives ``MSG topic message\\n``;
* the control socket (``--control PATH``, a Unix socket): ``PUBLISH topic
  length\\n`` and ``length`` bytes of payload publish, answered ``OK``;
  ``PING`` is answered ``PONG``.

A publish is fanned out as :func:`websockets.asyncio.server.broadcast` does it:
the frame is built once, then written synchronously to every subscriber whose
transport is not closing (``transport.write`` buffers what the kernel does not
take) -- no coroutine, no await, no backpressure.

With ``--workers W`` > 1 there are W processes, each with its own event loop
and its own ``SO_REUSEPORT`` listener on the one port (the kernel spreads the
connections); process 0 also serves the control socket and hands each publish
to the others over a socketpair, and answers ``OK`` once every worker has
written it (each says so with one byte).

Usage: ``python -m rawepoll.tools.compare.peers.asyncio_fanout [--host HOST] [--port PORT]
--control PATH [--workers W] [--status-fd N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final, NoReturn

from rawepoll.tools.compare.peers import parser
from rawepoll.tools.serverproc import write_ready

__all__ = ["Hub", "main"]

MAX_LINE: Final = 65536  # bytes of an unfinished client line
MAX_PAYLOAD: Final = 256 * 1024  # bytes of a control publish
_SIZE: Final = struct.Struct("<I")


class Hub:
    """One process's subscribers, by topic, and its fan-out."""

    def __init__(self) -> None:
        self.topics: dict[bytes, set[asyncio.Transport]] = {}

    def publish(self, topic: bytes, payload: bytes) -> None:
        """``MSG topic payload`` to every subscriber here, the bytes built once."""
        self.fan_out(topic, b"MSG %s %s\n" % (topic, payload))

    def fan_out(self, topic: bytes, frame: bytes) -> None:
        for transport in self.topics.get(topic, ()):
            if not transport.is_closing():
                transport.write(frame)

    def forget(self, transport: asyncio.Transport) -> None:
        for subscribers in self.topics.values():
            subscribers.discard(transport)


class LinePubSub(asyncio.Protocol):
    """A client speaking ``LinePubSubHandler``'s line protocol."""

    transport: asyncio.Transport

    def __init__(self, hub: Hub, publish: Callable[[bytes, bytes], None]) -> None:
        self.hub = hub
        self.publish = publish  # this process only, or every worker
        self.partial = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        data = self.partial + data
        end = data.rfind(b"\n") + 1
        self.partial = data[end:]
        if len(self.partial) > MAX_LINE:
            self.transport.close()
            return
        replies = [self._command(line) for line in data[:end].splitlines()]
        self.transport.write(b"".join(replies))

    def _command(self, line: bytes) -> bytes:
        verb, _, rest = line.strip().partition(b" ")
        if verb == b"SUB":
            self.hub.topics.setdefault(rest, set()).add(self.transport)
        elif verb == b"UNSUB":
            self.hub.topics.get(rest, set()).discard(self.transport)
        elif verb == b"PUB":
            rest, _, message = rest.partition(b" ")
            self.publish(rest, message)
        else:
            return b"ERR unknown command (SUB, UNSUB or PUB)\n"
        return b"OK %s %s\n" % (verb, rest)

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.forget(self.transport)


class Relay:
    """Process 0's link to the other workers: each publish to all of them, then their acks."""

    def __init__(self, links: list[socket.socket]) -> None:
        self.links = links
        for link in links:
            link.setblocking(False)

    async def publish(self, topic: bytes, frame: bytes) -> None:
        loop = asyncio.get_running_loop()
        message = _SIZE.pack(len(topic)) + topic + _SIZE.pack(len(frame)) + frame
        for link in self.links:
            await loop.sock_sendall(link, message)
        for link in self.links:
            if await loop.sock_recv(link, 1) != b"\x01":
                raise ConnectionError("a worker is gone")


async def _control_client(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hub: Hub, relay: Relay
) -> None:
    """One control connection: PUBLISH and PING, one after another, until it closes."""
    with contextlib.closing(writer):
        while line := await reader.readline():
            verb, *fields = line.rstrip(b"\n").split(b" ")
            if verb == b"PING" and not fields:
                writer.write(b"PONG\n")
                continue
            if verb != b"PUBLISH" or len(fields) != 2 or not fields[1].isdigit():
                writer.write(b"ERR bad request\n")
                return
            length = int(fields[1])
            if length > MAX_PAYLOAD:
                writer.write(b"ERR payload too large\n")
                return
            payload = await reader.readexactly(length)
            frame = b"MSG %s %s\n" % (fields[0], payload)
            await relay.publish(fields[0], frame)
            hub.fan_out(fields[0], frame)
            writer.write(b"OK\n")
            await writer.drain()


async def _relayed(link: socket.socket, hub: Hub) -> None:
    """A worker's side of the relay: fan out what process 0 hands over, ack each."""
    loop = asyncio.get_running_loop()
    link.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=link)
    while True:
        try:
            topic = await reader.readexactly(_SIZE.unpack(await reader.readexactly(4))[0])
            frame = await reader.readexactly(_SIZE.unpack(await reader.readexactly(4))[0])
        except asyncio.IncompleteReadError:
            loop.stop()
            return
        hub.fan_out(topic, frame)
        writer.write(b"\x01")


async def _serve(
    listener: socket.socket,
    control: socket.socket | None,
    links: list[socket.socket],
    ready: Callable[[], None],
) -> None:
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    hub = Hub()
    relay = Relay(links if control is not None else [])
    server = await loop.create_server(lambda: LinePubSub(hub, hub.publish), sock=listener)
    servers = [server]
    tasks = []
    if control is not None:
        servers.append(
            await asyncio.start_unix_server(
                lambda r, w: _control_client(r, w, hub, relay), sock=control
            )
        )
    else:
        tasks.append(asyncio.ensure_future(_relayed(links[0], hub)))
    ready()
    await stopped.wait()
    for running in servers:
        running.close()
    for task in tasks:
        task.cancel()


def _listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def _control_socket(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a stale socket file
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _run(coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coroutine())
    finally:
        loop.close()


def _fork_workers(host: str, port: int, count: int) -> tuple[list[int], list[socket.socket]]:
    """Workers 1 .. ``count`` - 1, each on its own listener; their pids and process 0's links."""
    pids: list[int] = []
    links: list[socket.socket] = []
    for _ in range(1, count):
        ours, theirs = socket.socketpair()
        listener = _listener(host, port)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            ours.close()
            for link in links:
                link.close()
            _worker(listener, theirs)
        theirs.close()
        listener.close()
        pids.append(pid)
        links.append(ours)
    return pids, links


def _worker(listener: socket.socket, link: socket.socket) -> NoReturn:
    """A forked worker's whole life: serve until SIGTERM (or process 0 is gone)."""
    status = 1
    try:
        _run(functools.partial(_serve, listener, None, [link], _nothing))
        status = 0
    finally:
        os._exit(status)


def _nothing() -> None:
    pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options of every peer, ``--control PATH`` and ``--workers W``."""
    options = parser(__doc__)
    options.add_argument("--control", required=True, metavar="PATH", help="the control socket")
    options.add_argument(
        "--workers", type=int, default=1, metavar="W", help="worker processes (default 1)"
    )
    args = options.parse_args(argv)
    if args.workers < 1:
        options.error(f"--workers must be at least 1, got {args.workers}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    listener = _listener(args.host, args.port)
    port = listener.getsockname()[1]
    control = _control_socket(args.control)
    pids, links = _fork_workers(args.host, port, args.workers)
    shown = f"[{args.host}]" if ":" in args.host else args.host

    def ready() -> None:
        print(f"listening on {shown}:{port}", flush=True)
        write_ready(args.status_fd, listener, workers=[os.getpid(), *pids])

    try:
        _run(lambda: _serve(listener, control, links, ready))
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            os.waitpid(pid, 0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
