"""What a run is asked to do: one :class:`LoadSpec`, checked when it is made.

The settings of ``rawepoll bench`` (and of :func:`~rawepoll.tools.loadgen.run_load`)
live here and nowhere else.  A :class:`LoadSpec` checks the settings against
each other; what depends on the machine -- the descriptor limit, the client
ports, the CPUs, the server's address -- is checked when the spec becomes a
:class:`~rawepoll.tools.loadgen.plan.Plan`.

Two kinds of run share them: the **echo** run (the default), over raw TCP or
``protocol="websocket"``; and the **broadcast** run (``broadcast=True``): the
connections subscribe to ``topic`` and ``messages`` messages are published
through the server's control socket ``control``, ``pipeline`` of them at most
on their way to the subscribers at once (see :mod:`rawepoll.tools.loadgen.broadcast`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from rawepoll.server.control import payload_limit
from rawepoll.tools.loadgen.stamp import MIN_SIZE, STAMP_SIZE

__all__ = ["MAX_BROADCAST", "MAX_SIZE", "PROTOCOLS", "LoadSpec"]

MAX_SIZE: Final = 64 << 20  # bytes per message
MAX_BROADCAST: Final = 100_000  # messages of a broadcast run (a report holds a time for each)
PROTOCOLS: Final = ("tcp", "websocket")
_TOPIC: Final = re.compile(r"[A-Za-z0-9._~-]{1,200}")  # fits the line protocol and a URL alike
_PATH: Final = re.compile(r"/[!-~]*")  # a request path: printable ASCII, no spaces


@dataclass(frozen=True)
class LoadSpec:
    """One run's settings, each checked once, here.

    ``source_addrs`` and ``cpus`` take any sequence and are kept as tuples.

    Raises:
        ValueError: a setting is out of range or two do not go together, with
            a sentence naming the ``rawepoll bench`` option to change.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    unix: str | None = None  # a Unix stream socket's path instead of host and port
    conns: int = 100
    size: int = 64  # bytes per message
    duration: float | None = 10.0  # seconds of measured traffic; None: until ``messages``
    messages: int | None = None  # verified echoes in all, over every process
    pipeline: int = 1  # messages in flight per connection
    procs: int = 1  # load processes, forked
    source_addrs: Sequence[str] | None = None  # bound before connect, in turn
    cpus: Sequence[int] | None = None  # load process i runs on cpus[i % len(cpus)]
    timeout: float | None = None  # the run's wall-clock guard; None: derived (see Plan)
    protocol: str = "tcp"  # "tcp": raw bytes; "websocket": an upgrade, then masked frames
    path: str = "/"  # WebSocket echo runs: the request path
    broadcast: bool = False  # subscribe the connections and publish instead of echoing
    topic: str = "bench"  # broadcast: what the connections subscribe to
    control: str | None = None  # broadcast: the server's control socket (rawepoll serve --control)

    def __post_init__(self) -> None:
        if self.source_addrs is not None:
            object.__setattr__(self, "source_addrs", tuple(self.source_addrs))
        if self.cpus is not None:
            object.__setattr__(self, "cpus", tuple(self.cpus))
        self._check_counts()
        self._check_end()
        self._check_target()
        self._check_protocol()
        if self.broadcast:
            self._check_broadcast()

    def _check_counts(self) -> None:
        if self.conns < 1:
            raise ValueError(f"--conns must be at least 1, got {self.conns}")
        if not 1 <= self.size <= MAX_SIZE:
            raise ValueError(f"--size must be in 1..{MAX_SIZE}, got {self.size}")
        if self.pipeline < 1:
            raise ValueError(f"--pipeline must be at least 1, got {self.pipeline}")
        if self.procs < 1:
            raise ValueError(f"--procs must be at least 1, got {self.procs}")
        if self.procs > self.conns:
            raise ValueError(
                f"--procs {self.procs} is more than --conns {self.conns}: a process needs work"
            )

    def _check_end(self) -> None:
        duration, messages, timeout = self.duration, self.messages, self.timeout
        if duration is None and messages is None:
            raise ValueError("give a duration or a message count: the run must end")
        if duration is not None and not (0 < duration < math.inf):
            raise ValueError(f"--duration must be a positive number of seconds, got {duration}")
        if messages is not None and messages < 1:
            raise ValueError(f"--messages must be at least 1, got {messages}")
        if timeout is not None and not (0 < timeout < math.inf):
            raise ValueError(f"--timeout must be a positive number of seconds, got {timeout}")

    def _check_target(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if self.unix is not None and self.source_addrs:
            raise ValueError("--source-addrs is for TCP; a Unix socket has no source address")

    def _check_protocol(self) -> None:
        if self.protocol not in PROTOCOLS:
            known = ", ".join(PROTOCOLS)
            raise ValueError(f"--protocol must be one of {known}, got {self.protocol!r}")
        if not _PATH.fullmatch(self.path):
            raise ValueError(f"--path must start with / and be printable ASCII, got {self.path!r}")

    def _check_broadcast(self) -> None:
        if self.control is None:
            raise ValueError("--broadcast publishes through a control socket: give --control PATH")
        if self.messages is None or self.messages > MAX_BROADCAST:
            raise ValueError(f"--broadcast publishes --messages N, N in 1..{MAX_BROADCAST}")
        if not _TOPIC.fullmatch(self.topic):
            raise ValueError(f"--topic must be 1 to 200 of A-Z a-z 0-9 . _ ~ -, got {self.topic!r}")
        limit = payload_limit(self.topic)
        if not MIN_SIZE <= self.size <= limit:
            raise ValueError(
                f"--size of a broadcast must be in {MIN_SIZE}..{limit} (a message carries its "
                f"number and publish time in {STAMP_SIZE} bytes, then letters), got {self.size}"
            )
