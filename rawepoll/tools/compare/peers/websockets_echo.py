"""WebSocket echo server on the ``websockets`` library (its asyncio implementation).

The handler is the library's own echo example: ``async for message in
connection: await connection.send(message)`` -- one coroutine per connection,
each message reassembled from its frames, checked (UTF-8 for text), and sent
back whole, with the library's flow control (``send`` waits while the write
buffer is above its high-water mark).  Its defaults otherwise (keepalive pings
every 20 s, 1 MiB messages at most, 16 frames queued), but ``compression=None``:
``permessage-deflate`` keeps tens of KB per connection, and the comparison's
client does not offer it anyway.  A connection the client drops without a close
frame ends the handler quietly, as a server expecting such clients would write it.

``--loop asyncio`` (default) runs it on asyncio's own loop, ``--loop uvloop`` on
uvloop (exit status 2 if uvloop is not installed).  ``websockets`` is in the
``wspeers`` extra (``pip install 'rawepoll[wspeers]'``); without it this module
does not import.

Usage: ``python -m rawepoll.tools.compare.peers.websockets_echo [--host HOST] [--port PORT]
[--status-fd N] [--loop asyncio|uvloop]``.
"""

from __future__ import annotations

import sys

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from rawepoll.tools.compare.peers import LOOPS, new_loop, parser
from rawepoll.tools.compare.peers.asyncio_protocol import serve_until_stopped


async def echo(connection: ServerConnection) -> None:
    try:
        async for message in connection:
            await connection.send(message)
    except ConnectionClosed:
        pass  # the client went away without a close frame: nothing to answer


async def serve(host: str, port: int, status_fd: int | None) -> None:
    server = await ws_serve(echo, host, port, compression=None, backlog=4096)
    await serve_until_stopped(server, status_fd)


def main(argv: list[str] | None = None) -> int:
    options = parser(__doc__)
    options.add_argument("--loop", choices=LOOPS, default="asyncio", help="the event loop")
    args = options.parse_args(argv)
    loop = new_loop(args.loop)
    try:
        loop.run_until_complete(serve(args.host, args.port, args.status_fd))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
