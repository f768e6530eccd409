"""Echo server on an asyncio ``Protocol``: the callback style, no coroutine per message.

``data_received`` hands the bytes straight to ``transport.write``; the
transport buffers what the kernel does not take and watches for writability
only while it holds output (asyncio sets ``TCP_NODELAY`` on TCP transports).
Flow control as the asyncio docs ask: when the transport's buffer passes its
high-water mark it calls ``pause_writing`` and the protocol stops reading
until ``resume_writing``.  On EOF the protocol returns ``False``, so the
transport flushes and closes.

``bench/peers/uvloop_protocol.py`` runs this very protocol on uvloop.

Usage: ``python bench/peers/asyncio_protocol.py [--host HOST] [--port PORT]``;
prints ``listening on HOST:PORT`` on stdout when ready and runs until SIGTERM
or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable


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


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, host, port, backlog=4096)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    address = server.sockets[0].getsockname()
    shown = f"[{address[0]}]" if ":" in address[0] else address[0]
    print(f"listening on {shown}:{address[1]}", flush=True)
    async with server:
        await stopped.wait()


def main(
    argv: list[str] | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (default)")
    args = parser.parse_args(argv)
    loop = loop_factory()
    try:
        loop.run_until_complete(serve(args.host, args.port))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
