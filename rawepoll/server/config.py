"""What a server is asked to be: :class:`ServerConfig`, and how many workers that takes.

The command line (:mod:`rawepoll.server.cli`) takes its defaults from the
fields below; there is no second copy of them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Final

from rawepoll.limits import SetLimit
from rawepoll.server.broker import parse_url
from rawepoll.server.handler import EchoHandler, Handler

__all__ = ["FD_RESERVE", "ServerConfig", "plan_workers"]

FD_RESERVE: Final = 32  # descriptors a worker keeps for itself: listener, epoll, pipes, stdio


@dataclasses.dataclass
class ServerConfig:
    """Everything ``rawepoll serve`` takes; the defaults are the CLI's."""

    host: str = "127.0.0.1"
    port: int = 8080
    unix: str | None = None
    mode: str = "lt"
    workers: int | str = 1
    max_conns: int | None = None
    idle_timeout: float = 0.0
    drain_timeout: float = 10.0
    backlog: int = 4096
    balance: str = "rotate"
    stats_interval: float = 0.0
    handler: type[Handler] = EchoHandler
    high_water: int = 262144
    low_water: int = 65536
    quiet: bool = False
    status_fd: int | None = None  # JSON events, one per line (rawepoll.server.report)
    max_pending: int = 65536  # pushed bytes a connection may have waiting (slow consumers)
    slow_policy: str = "drop"  # past max_pending: "drop" the message or "close" the connection
    broker: str | None = None  # redis://HOST:PORT[/DB]: publishes across hosts (server.broker)
    control: str | None = None  # a control socket's path (rawepoll.server.control); None: off
    protocol: str = "raw"  # "raw": the handler gets the bytes; "websocket": RFC 6455
    ping_interval: float = 30.0  # websocket: heartbeat ping period (0: none)
    ping_timeout: float = 10.0  # websocket: a ping unanswered this long closes (1011)
    handshake_timeout: float = 10.0  # websocket: the upgrade request must be in by then
    max_message: int = 1 << 20  # websocket: bytes of one message; above: close 1009
    origins: tuple[str, ...] | None = None  # websocket: allowed Origin values (None: any)
    subprotocols: tuple[str, ...] = ()  # websocket: offered, in order of preference

    def __post_init__(self) -> None:
        # from the command line these come as lists
        if self.origins is not None:
            self.origins = tuple(self.origins)
        self.subprotocols = tuple(self.subprotocols or ())

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting that makes no sense."""
        self._check_choices()
        self._check_numbers()
        if self.broker is not None:
            parse_url(self.broker)  # ValueError saying what is wrong with the URL

    def _check_choices(self) -> None:
        if self.mode not in ("lt", "et"):
            raise ValueError(f"mode must be 'lt' or 'et', not {self.mode!r}")
        if self.balance not in ("rotate", "fill"):
            raise ValueError(f"balance must be 'rotate' or 'fill', not {self.balance!r}")
        if not (isinstance(self.workers, int) and self.workers >= 1) and self.workers != "auto":
            raise ValueError(f"workers must be a positive integer or 'auto', not {self.workers!r}")
        if self.slow_policy not in ("drop", "close"):
            raise ValueError(f"slow_policy must be 'drop' or 'close', not {self.slow_policy!r}")
        if self.protocol not in ("raw", "websocket"):
            raise ValueError(f"protocol must be 'raw' or 'websocket', not {self.protocol!r}")

    def _check_numbers(self) -> None:
        if self.max_conns is not None and self.max_conns < 1:
            raise ValueError("max_conns must be at least 1")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, not {self.port}")
        for name in (
            "idle_timeout",
            "drain_timeout",
            "stats_interval",
            "ping_interval",
            "ping_timeout",
            "handshake_timeout",
        ):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if self.backlog < 1:
            raise ValueError("backlog must be at least 1")
        if self.max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if self.max_message < 1:
            raise ValueError("max_message must be at least 1")
        if not 0 < self.low_water <= self.high_water:
            raise ValueError("need 0 < low_water <= high_water")
        if self.status_fd is not None and self.status_fd < 0:
            raise ValueError(f"status_fd must be a descriptor (>= 0), not {self.status_fd}")


def plan_workers(workers: int | str, max_conns: int | None) -> tuple[int, int]:
    """``(workers, max_conns per worker)`` after ``SetLimit``.

    ``max_conns`` is per worker.  A worker can hold at most ``RLIMIT_NOFILE``
    minus :data:`FD_RESERVE` connections; ``auto`` starts one worker per core,
    multiplied as needed so that ``cores x max_conns`` connections fit when the
    descriptor limit caps each process below ``max_conns``.
    """
    capacity = max(1, SetLimit() - FD_RESERVE)
    wanted = capacity if max_conns is None else max_conns
    per_worker = min(wanted, capacity)
    if workers == "auto":
        cores = len(os.sched_getaffinity(0)) or 1
        return cores * math.ceil(wanted / per_worker), per_worker
    assert isinstance(workers, int)
    return workers, per_worker
