"""A WebSocket application that drops deliveries on purpose, for ``test_c1m_websocket.py``.

It is rawepoll's default application (echo; ``/topic/NAME`` subscribes to
``NAME``), except that every N-th connection a worker opens (N from the
environment variable :data:`EVERY`, default 1000) is left unsubscribed: it
echoes, so it counts as established, but a publish never reaches it.  Each
one it leaves out is written, one line each, to the file named by the
environment variable :data:`RECORD` -- the truth the tool's report is
checked against.
"""

from __future__ import annotations

import os
from typing import Final

from rawepoll.server.websocket import Request, WebSocket, WebSocketApp

RECORD: Final = "RAWEPOLL_TEST_SKIPPED"
EVERY: Final = "RAWEPOLL_TEST_SKIP_EVERY"


class SkipSome(WebSocketApp):
    """The default application, but every N-th connection is not subscribed."""

    def __init__(self) -> None:
        self.opened = 0  # in this worker (the instance is made before the fork)
        self.every = int(os.environ.get(EVERY, "1000"))

    def on_open(self, ws: WebSocket, request: Request) -> None:
        self.opened += 1
        if self.opened % self.every:
            super().on_open(ws, request)
            return
        with open(os.environ[RECORD], "a") as record:  # one write per line: O_APPEND keeps them
            record.write(f"{os.getpid()} {ws.fd} {request.path}\n")
