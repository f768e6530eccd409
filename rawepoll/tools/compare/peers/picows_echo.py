"""WebSocket echo server on ``picows``: the fastest asyncio WebSocket library.

picows parses frames in Cython and hands each one to a listener's
``on_ws_frame`` callback, its payload a view into the read buffer -- no
coroutine and no copy per message.  The listener follows the echo server of
picows's README: a data frame (text, binary, continuation) goes straight back
with the same opcode and FIN bit, from the view; a close frame is answered and
the connection dropped; pings are answered by picows itself
(``enable_auto_pong``, its default).  picows forwards frames without checking
reserved bits, fragmentation or UTF-8 (the application must), so it does less
per message than a checking server: a bar to measure against.

Its defaults otherwise, which include its choice of transport: when
``aiofastnet`` is installed (picows 2 depends on it) picows serves through
aiofastnet's Cython transports instead of the loop's own; ``--loop`` picks the
event loop under them, ``asyncio`` (default) or ``uvloop`` (exit status 2 if
uvloop is not installed).  ``picows`` is in the ``wspeers`` extra (``pip install
'rawepoll[wspeers]'``); without it this module does not import.

Usage: ``python -m rawepoll.tools.compare.peers.picows_echo [--host HOST] [--port PORT]
[--status-fd N] [--loop asyncio|uvloop]``.
"""

from __future__ import annotations

import sys

from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from rawepoll.tools.compare.peers import LOOPS, new_loop, parser
from rawepoll.tools.compare.peers.asyncio_protocol import serve_until_stopped

DATA = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION)


class Echo(WSListener):
    """One connection's listener: every data frame straight back."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type in DATA:
            transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


def route(request: WSUpgradeRequest) -> Echo:
    return Echo()  # every path echoes


async def serve(host: str, port: int, status_fd: int | None) -> None:
    server = await ws_create_server(route, host, port, backlog=4096)
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
