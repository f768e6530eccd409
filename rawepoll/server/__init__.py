"""The echo server built on rawepoll: ``rawepoll serve`` and :func:`serve`.

Layers, each in its own module:

* :mod:`~rawepoll.server.handler` -- protocol logic, sans-IO (bytes in, bytes out);
* :mod:`~rawepoll.server.loop` -- one worker's level- and edge-triggered loops;
* :mod:`~rawepoll.server.timers` -- idle timeouts in O(1) per event;
* :mod:`~rawepoll.server.supervisor` -- one worker in-process, or many forked;
* :mod:`~rawepoll.server.listen` -- the listening socket (TCP v4/v6, Unix);
* :mod:`~rawepoll.server.cli` -- the ``rawepoll serve`` command line.

From Python::

    from rawepoll.server import ServerConfig, UpperLineHandler, serve
    serve(ServerConfig(port=9000, handler=UpperLineHandler))
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

from rawepoll.limits import SetLimit
from rawepoll.server import listen
from rawepoll.server.handler import EchoHandler, Handler, Output, UpperLineHandler
from rawepoll.server.loop import WorkerConfig
from rawepoll.server.stats import format_line
from rawepoll.server.supervisor import run_single, supervise

__all__ = [
    "EchoHandler",
    "Handler",
    "Output",
    "ServerConfig",
    "UpperLineHandler",
    "plan_workers",
    "serve",
]

FD_RESERVE = 32  # descriptors a worker keeps for itself: listener, epoll, pipes, stdio


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

    def check(self) -> None:
        """Raise ``ValueError`` naming the first setting that makes no sense."""
        if self.mode not in ("lt", "et"):
            raise ValueError(f"mode must be 'lt' or 'et', not {self.mode!r}")
        if self.balance not in ("rotate", "fill"):
            raise ValueError(f"balance must be 'rotate' or 'fill', not {self.balance!r}")
        if not (isinstance(self.workers, int) and self.workers >= 1) and self.workers != "auto":
            raise ValueError(f"workers must be a positive integer or 'auto', not {self.workers!r}")
        if self.max_conns is not None and self.max_conns < 1:
            raise ValueError("max_conns must be at least 1")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, not {self.port}")
        for name in ("idle_timeout", "drain_timeout", "stats_interval"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if self.backlog < 1:
            raise ValueError("backlog must be at least 1")
        if not 0 < self.low_water <= self.high_water:
            raise ValueError("need 0 < low_water <= high_water")


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


def serve(config: ServerConfig) -> int:
    """Run the server until SIGTERM/SIGINT and a graceful drain; the exit status."""
    config.check()
    workers, per_worker = plan_workers(config.workers, config.max_conns)
    listener, is_tcp = listen.open_listener(config.host, config.port, config.unix, config.backlog)
    worker_config = WorkerConfig(
        handler=config.handler,
        max_conns=per_worker,
        high_water=config.high_water,
        low_water=config.low_water,
        idle_timeout=config.idle_timeout,
        drain_timeout=config.drain_timeout,
        stats_interval=config.stats_interval,
        is_tcp=is_tcp,
        exclusive=workers > 1,
        rotate=config.balance == "rotate",
        refuse_when_full=workers == 1,
    )
    where = listen.describe(listener)

    def announce(pid: int) -> None:
        if not config.quiet:
            plural = "worker" if workers == 1 else "workers"
            print(
                f"rawepoll serve: listening on {where} "
                f"(mode {config.mode}, {workers} {plural}, pid {pid})",
                flush=True,
            )

    try:
        if workers == 1:
            counts = run_single(listener, worker_config, config.mode, announce)
            restarted, clean = 0, True
        else:
            counts, restarted, clean = supervise(
                listener, worker_config, config.mode, workers, announce
            )
    finally:
        listen.remove_unix_path(config.unix)
        listener.close()
    if not config.quiet:
        print(format_line("exit", counts, restarted=restarted), flush=True)
    sys.stdout.flush()
    return 0 if clean else 1
