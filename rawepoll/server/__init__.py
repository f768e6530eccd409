"""The echo server built on rawepoll: ``rawepoll serve`` and :func:`serve`.

Layers, each in its own module:

* :mod:`~rawepoll.server.handler` -- protocol logic, sans-IO (bytes in, bytes out);
* :mod:`~rawepoll.server.loop` -- one worker's level- and edge-triggered loops;
* :mod:`~rawepoll.server.timers` -- idle timeouts in O(1) per event;
* :mod:`~rawepoll.server.stats` -- the counters, shared with the supervisor;
* :mod:`~rawepoll.server.supervisor` -- one worker in-process, or many forked;
* :mod:`~rawepoll.server.listen` -- the listening socket (TCP v4/v6, Unix);
* :mod:`~rawepoll.server.config` -- :class:`ServerConfig` and the worker plan;
* :mod:`~rawepoll.server.report` -- the JSON events (``--status-fd``) and the human lines;
* :mod:`~rawepoll.server.serving` -- :func:`serve`, which puts them together;
* :mod:`~rawepoll.server.cli` -- the ``rawepoll serve`` command line;
* :mod:`~rawepoll.server.control` -- the control socket (``--control``): publish from
  outside the server, e.g. ``control.publish(path, topic, payload)``;
* :mod:`~rawepoll.server.publish_cli` -- the ``rawepoll publish`` command line.

From Python::

    from rawepoll.server import ServerConfig, UpperLineHandler, serve
    serve(ServerConfig(port=9000, handler=UpperLineHandler))
"""

from __future__ import annotations

from rawepoll.server.config import FD_RESERVE, ServerConfig, plan_workers
from rawepoll.server.handler import EchoHandler, Handler, Output, UpperLineHandler
from rawepoll.server.report import Event, Ready
from rawepoll.server.serving import serve

__all__ = [
    "FD_RESERVE",
    "EchoHandler",
    "Event",
    "Handler",
    "Output",
    "Ready",
    "ServerConfig",
    "UpperLineHandler",
    "plan_workers",
    "serve",
]
