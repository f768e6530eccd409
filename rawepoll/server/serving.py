"""``serve``: open the listener, run the workers, report, drain, return the exit status."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rawepoll.server import broker, control, listen
from rawepoll.server.config import ServerConfig, plan_workers
from rawepoll.server.faults import HandlerError, check_handler, describe
from rawepoll.server.handler import EchoHandler, Handler, Lifecycle
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
        BrokerDependencyError: (an ``ImportError``) ``config.broker`` is set and hiredis
            is not installed (``pip install 'rawepoll[redis]'``).
        OSError: the address cannot be bound, or the broker's host does not resolve.
    """
    config.check()
    handler, shared_handler = _handler(config)  # refused here, before anything listens
    Lifecycle.of(handler)  # cached now, inherited by the workers (see Lifecycle)
    workers, per_worker = plan_workers(config.workers, config.max_conns)
    brokers = (broker.extension(config.broker),) if config.broker is not None else ()
    control_socket = control.open_socket(config.control)  # None unless --control
    try:
        listener, is_tcp = listen.open_listener(
            config.host, config.port, config.unix, config.backlog
        )
    except BaseException:
        control.close_socket(control_socket, config.control)
        raise
    worker_config = WorkerConfig(
        handler=handler,
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
        extensions=control.extensions(control_socket) + brokers,
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
        control.close_socket(control_socket, config.control)
        listen.remove_unix_path(config.unix)
        listener.close()
    reporter.exit(outcome.counts, restarted=outcome.restarted, clean=outcome.clean)
    sys.stdout.flush()
    return 0 if outcome.clean else 1


def _handler(config: ServerConfig) -> tuple[type[Handler], Handler | None]:
    """The handler class the loop runs and its shared instance (checked: HandlerError)."""
    if config.protocol == "websocket":
        protocol = websocket_protocol(config)
        return type(protocol), protocol
    return config.handler, check_handler(config.handler)


def websocket_protocol(config: ServerConfig) -> Handler:
    """``--protocol websocket``: the WebSocket protocol around the application ``handler``.

    ``config.handler`` is then a :class:`~rawepoll.server.websocket.WebSocketApp`
    class (the default handler, echo, stands for the default application).
    """
    from rawepoll.server.websocket import (  # noqa: PLC0415 -- only for this protocol
        WebSocketApp,
        WebSocketOptions,
        WebSocketProtocol,
    )
    from rawepoll.server.websocket.handshake import _parser_module  # noqa: PLC0415

    try:
        _parser_module()
    except ImportError as error:
        raise HandlerError(str(error)) from None
    app_class = WebSocketApp if config.handler is EchoHandler else config.handler
    name = describe(app_class)
    if not (isinstance(app_class, type) and issubclass(app_class, WebSocketApp)):
        raise HandlerError(
            f"{name} is not a WebSocket application: subclass "
            "rawepoll.server.websocket.WebSocketApp"
        )
    try:
        app = app_class()
    except Exception as error:
        raise HandlerError(f"{name}() raised {error!r}: the application must build") from error
    options = WebSocketOptions(
        ping_interval=config.ping_interval,
        ping_timeout=config.ping_timeout,
        handshake_timeout=config.handshake_timeout,
        max_message=config.max_message,
        origins=config.origins,
        subprotocols=config.subprotocols,
    )
    protocol: Handler = WebSocketProtocol(app, options)  # type: ignore[arg-type, assignment]
    return protocol
