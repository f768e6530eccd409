"""A deliberately broken fan-out server: the asyncio peer, but one subscriber misses a message.

The second publish skips one subscriber (the first the hub happens to hold):
that subscriber sees message 2 after message 0.  Run as a script with the
asyncio peer's options (``--host``, ``--port 0``, ``--control PATH``,
``--status-fd N``); a comparison that measures it must count the lost
delivery and fail.
"""

from __future__ import annotations

import sys

from rawepoll.tools.compare.peers import asyncio_fanout

publishes = 0


def fan_out(self: asyncio_fanout.Hub, topic: bytes, frame: bytes) -> None:
    global publishes
    publishes += 1
    for index, transport in enumerate(self.topics.get(topic, ())):
        if not (publishes == 2 and index == 0):
            transport.write(frame)


asyncio_fanout.Hub.fan_out = fan_out  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(asyncio_fanout.main())
