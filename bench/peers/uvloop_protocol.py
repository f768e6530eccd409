"""Echo server: the asyncio ``Protocol`` of ``asyncio_protocol.py``, run on uvloop.

The protocol class is imported, not copied, so the two peers differ only in
the event loop (uvloop: libuv and Cython, TCP_NODELAY on TCP transports).

Usage: ``python bench/peers/uvloop_protocol.py [--host HOST] [--port PORT]``;
prints ``listening on HOST:PORT`` on stdout when ready and runs until SIGTERM
or SIGINT.
"""

from __future__ import annotations

import sys

import uvloop
from asyncio_protocol import main  # a sibling script: this directory is sys.path[0]

if __name__ == "__main__":
    sys.exit(main(loop_factory=uvloop.new_event_loop))
