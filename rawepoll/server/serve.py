"""``serve``: open the listener, run the workers, report, drain, return the exit status."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rawepoll.server import listen
from rawepoll.server.config import ServerConfig, plan_workers
from rawepoll.server.faults import check_handler
from rawepoll.server.loop import WorkerConfig
from rawepoll.server.report import Event, Ready, Reporter
from rawepoll.server.supervisor import Supervisor, run_single

__all__ = ["serve"]


def serve(
    config: ServerConfig,
    *,
    on_ready: Callable[[Ready], None] | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> int:
    """Run the server until SIGTERM/SIGINT and a graceful drain; the exit status.

    Args:
        config: what to serve and how (checked first).
        on_ready: called once, in this process, with where the server listens
            and its worker pids, after the signal handlers are in place.
        on_event: called in this process with every event of
            :mod:`rawepoll.server.report` (``ready``, ``status``, ``restart``,
            ``exit``) as a dict -- what ``--status-fd`` writes as JSON.

    Returns:
        0 if every worker drained and exited cleanly, 1 otherwise.

    Raises:
        ValueError: a setting makes no sense (:meth:`ServerConfig.check`).
        HandlerError: (a ``TypeError``) ``config.handler`` is not a handler
            class, or its shared instance cannot be built -- one sentence,
            before anything listens.
        OSError: the address cannot be bound.
    """
    config.check()
    shared_handler = check_handler(config.handler)  # refused here, before anything listens
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
        mode=config.mode,
        shared_handler=shared_handler,
        workers=workers,
        max_pending=config.max_pending,
        slow_policy=config.slow_policy,
    )
    reporter = Reporter(config.quiet, config.status_fd, on_ready, on_event)
    address = listen.address_of(listener)

    def ready(pid: int, worker_pids: tuple[int, ...]) -> Ready:
        return Ready(
            *address, pid=pid, workers=worker_pids, mode=config.mode, balance=config.balance
        )

    try:
        if workers == 1:
            outcome = run_single(listener, worker_config, reporter, ready)
        else:
            outcome = Supervisor(listener, worker_config, workers, reporter, ready).run()
    finally:
        listen.remove_unix_path(config.unix)
        listener.close()
    reporter.exit(outcome.counts, restarted=outcome.restarted, clean=outcome.clean)
    sys.stdout.flush()
    return 0 if outcome.clean else 1
