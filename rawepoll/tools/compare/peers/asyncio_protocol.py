"""Echo server on an asyncio ``Protocol``: the callback style, no coroutine per message.

``data_received`` hands the bytes straight to ``transport.write``; the
transport buffers what the kernel does not take and watches for writability
only while it holds output (asyncio sets ``TCP_NODELAY`` on TCP transports).
Flow control as the asyncio docs ask: when the transport's buffer passes its
high-water mark it calls ``pause_writing`` and the protocol stops reading
until ``resume_writing``.  On EOF the protocol returns ``False``, so the
transport flushes and closes.

:mod:`rawepoll.tools.compare.peers.uvloop_protocol` runs this very protocol on uvloop.

Usage: ``python -m rawepoll.tools.compare.peers.asyncio_protocol [--host HOST] [--port PORT]
[--status-fd N]``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

from rawepoll.tools.compare.peers import announce, parse_args


class EchoProtocol(asyncio.Protocol):
    transport: asyncio.Transport  # uvloop's TCPTransport quacks alike without subclassing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close once the pending output is flushed

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


async def serve_until_stopped(server: asyncio.Server, status_fd: int | None) -> None:
    """Announce an asyncio server, serve until SIGTERM or SIGINT, then close it."""
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    announce(server.sockets[0], status_fd)
    async with server:
        await stopped.wait()


async def serve(host: str, port: int, status_fd: int | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, host, port, backlog=4096)
    await serve_until_stopped(server, status_fd)


def main(
    argv: list[str] | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
) -> int:
    args = parse_args(__doc__, argv)
    loop = loop_factory()
    try:
        loop.run_until_complete(serve(args.host, args.port, args.status_fd))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
