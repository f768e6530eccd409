"""Echo server: the asyncio ``Protocol`` of ``asyncio_protocol``, run on uvloop.

The protocol is imported, not copied, so the two peers differ only in the
event loop (uvloop: libuv and Cython, TCP_NODELAY on TCP transports).  uvloop
is an optional extra: without it this module exits with status 2 and says so.

Usage: ``python -m rawepoll.tools.compare.peers.uvloop_protocol [--host HOST] [--port PORT]
[--status-fd N]``.
"""

from __future__ import annotations

import sys

from rawepoll.tools.compare.extras import optional
from rawepoll.tools.compare.peers.asyncio_protocol import main

if __name__ == "__main__":
    uvloop = optional("uvloop")
    if uvloop is None:
        print("uvloop is not installed (pip install 'rawepoll[bench]')", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(loop_factory=uvloop.new_event_loop))
