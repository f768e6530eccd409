"""Echo server on asyncio streams: one coroutine per connection, ``read``/``write``/``drain``.

The idiom the asyncio documentation teaches: ``asyncio.start_server`` calls
``handle(reader, writer)`` per connection; it loops
``data = await reader.read(65536)``, ``writer.write(data)``,
``await writer.drain()`` (which waits only when the transport's buffer is
above its high-water mark), and closes after EOF.

Usage: ``python bench/peers/asyncio_streams.py [--host HOST] [--port PORT]``;
prints ``listening on HOST:PORT`` on stdout when ready and runs until SIGTERM
or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

READ_SIZE = 65536


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except OSError:  # ECONNRESET, EPIPE, ...: this connection only
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(handle, host, port, backlog=4096)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    address = server.sockets[0].getsockname()
    shown = f"[{address[0]}]" if ":" in address[0] else address[0]
    print(f"listening on {shown}:{address[1]}", flush=True)
    async with server:
        await stopped.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (default)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
