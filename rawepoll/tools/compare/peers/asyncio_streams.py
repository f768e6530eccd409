"""Echo server on asyncio streams: one coroutine per connection, ``read``/``write``/``drain``.

The idiom the asyncio documentation teaches: ``asyncio.start_server`` calls
``handle(reader, writer)`` per connection; it loops
``data = await reader.read(65536)``, ``writer.write(data)``,
``await writer.drain()`` (which waits only when the transport's buffer is
above its high-water mark), and closes after EOF.

Usage: ``python -m rawepoll.tools.compare.peers.asyncio_streams [--host HOST] [--port PORT]
[--status-fd N]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from rawepoll.tools.compare.peers import parse_args
from rawepoll.tools.compare.peers.asyncio_protocol import serve_until_stopped

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


async def serve(host: str, port: int, status_fd: int | None = None) -> None:
    server = await asyncio.start_server(handle, host, port, backlog=4096)
    await serve_until_stopped(server, status_fd)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    asyncio.run(serve(args.host, args.port, args.status_fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
