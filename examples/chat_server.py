"""A chat server on server push: rooms are topics, a line said in a room reaches all of it.

Run it (two workers: a room spans both), then talk to it with any line client::

    python examples/chat_server.py --port 9000 --workers 2 &
    nc 127.0.0.1 9000         # in two terminals: type, /nick NAME, /join ROOM, /who

Every connection starts in room ``lobby`` as ``guestN``.  What it types is
published to its room (``hub.publish``) and reaches every member, in every
worker; ``/join ROOM`` moves it (``conn.unsubscribe`` / ``conn.subscribe``);
``/who`` tells how many are in the room *in this worker* (topics are counted
per worker; the publish reaches all).  Each worker announces the time in
``lobby`` every minute (a timer: ``hub.call_every``).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from typing import ClassVar

from rawepoll.server import ServerConfig, serve
from rawepoll.server.push import Connection, Hub

_guests = itertools.count(1)


class Chat:
    """One per connection (``shared = False``): it keeps the member's name, room and half line."""

    shared: ClassVar[bool] = False
    max_line: ClassVar[int] = 4096

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.name = "guest"
        self.room = "lobby"
        self.partial = bytearray()

    @staticmethod
    def worker_started(hub: Hub) -> None:
        hub.call_every(60.0, lambda: hub.publish("lobby", f"* worker {hub.worker}: {time.ctime()}"))

    @staticmethod
    def push_frame(topic: str, payload: bytes) -> bytes:
        """What members read: ``[room] text``, one line."""
        return b"[%s] %s\n" % (topic.encode(), payload)

    def connection_made(self, conn: Connection) -> None:
        self.conn = conn
        self.name = f"guest{conn.hub.worker}.{next(_guests)}"  # unique across the workers
        conn.subscribe(self.room)
        conn.send(f"welcome, {self.name}: /nick NAME, /join ROOM, /who; lines go to the room\n")
        conn.hub.publish(self.room, f"* {self.name} joins")

    def data_received(self, data: memoryview) -> bytes | None:
        self.partial += data
        if len(self.partial) > self.max_line and b"\n" not in self.partial:
            self.partial.clear()
            return b"! line too long\n"
        *lines, rest = self.partial.split(b"\n")
        self.partial = bytearray(rest)
        answers = [self.line(line.decode("utf-8", "replace").strip()) for line in lines]
        return "".join(a for a in answers if a).encode() or None

    def line(self, text: str) -> str | None:
        assert self.conn is not None
        hub = self.conn.hub
        if text.startswith("/nick "):
            old, self.name = self.name, text[6:].strip() or self.name
            hub.publish(self.room, f"* {old} is now {self.name}")
        elif text.startswith("/join "):
            room = text[6:].strip()
            try:
                self.conn.subscribe(room)
            except ValueError as error:
                return f"! {error}\n"
            hub.publish(self.room, f"* {self.name} leaves for {room}")
            self.conn.unsubscribe(self.room)
            self.room = room
            hub.publish(room, f"* {self.name} joins")
        elif text == "/who":
            return f"! {hub.subscribers(self.room)} in {self.room} on worker {hub.worker}\n"
        elif text:
            hub.publish(self.room, f"{self.name}: {text}")
        return None

    def eof_received(self) -> None:
        return None

    def connection_lost(self, conn: Connection, reason: str) -> None:
        conn.hub.publish(self.room, f"* {self.name} left ({reason})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--status-fd", type=int, default=None, help="JSON events, as rawepoll serve"
    )
    args = parser.parse_args()
    config = ServerConfig(
        port=args.port, workers=args.workers, handler=Chat, status_fd=args.status_fd
    )
    sys.exit(serve(config))
