"""A line-based server in a dozen lines: every line comes back upper-cased.

Run it, then talk to it::

    python examples/upper_server.py --port 9000 &
    printf 'hello\\nworld\\n' | nc -q1 127.0.0.1 9000     # HELLO / WORLD

The protocol is a sans-IO handler: bytes in, bytes out, no sockets.  The
rawepoll server owns the sockets, the event loop, backpressure and shutdown.
"""

from __future__ import annotations

import argparse
import sys
from typing import ClassVar

from rawepoll.server import ServerConfig, serve
from rawepoll.server.handler import Output


class Upper:
    """Buffer until a newline; send complete lines back upper-cased."""

    shared: ClassVar[bool] = False  # one per connection: it keeps a partial line

    def __init__(self) -> None:
        self.partial = bytearray()

    def data_received(self, data: memoryview) -> Output:
        self.partial += data
        cut = self.partial.rfind(b"\n") + 1
        lines, self.partial = bytes(self.partial[:cut]), self.partial[cut:]
        return lines.upper() or None

    def eof_received(self) -> Output:
        return bytes(self.partial).upper() or None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--mode", choices=("lt", "et"), default="lt")
    args = parser.parse_args()
    sys.exit(serve(ServerConfig(port=args.port, mode=args.mode, handler=Upper)))
