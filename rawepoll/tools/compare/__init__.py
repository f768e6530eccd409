"""``rawepoll compare``: rawepoll against the standard library and its peers, side by side.

The sections, one module each, every one of them run in alternating rounds
and reported as medians with their min-max (the last two on request):

* :mod:`~rawepoll.tools.compare.scaling` -- one wait with 1 ready fd among N idle:
  ``select.select``, ``select.poll``, ``select.epoll``, ``rawepoll.Epoll.wait``,
  ``rawepoll.unix.EpollWait``;
* :mod:`~rawepoll.tools.compare.binding` -- what the ctypes binding costs next to
  ``select.epoll``, with the bare-ctypes floor;
* :mod:`~rawepoll.tools.compare.echo` -- echo servers: server CPU per message,
  messages per second, p99 latency, the load from :func:`rawepoll.tools.loadgen.run_load`;
* :mod:`~rawepoll.tools.compare.memory` -- memory per idle connection and the
  accept rate;
* :mod:`~rawepoll.tools.compare.broadcast` -- server CPU per delivery of one
  publish to N subscribers, next to a C floor;
* :mod:`~rawepoll.tools.compare.websocket` -- WebSocket echo servers: server CPU
  per message and memory per idle connection, rawepoll next to ``websockets``,
  ``picows`` and Go's gorilla/websocket (:mod:`~rawepoll.tools.compare.wsservers`).

The machinery they share: :mod:`~rawepoll.tools.compare.stats` (rounds, medians,
spreads, ratios), :mod:`~rawepoll.tools.compare.timing` (timers, calibration,
alternation), :mod:`~rawepoll.tools.compare.loops` (the timed loops),
:mod:`~rawepoll.tools.compare.machine` (pinning, CPU clocks, memory),
:mod:`~rawepoll.tools.compare.servers` (starting and measuring a server),
:mod:`~rawepoll.tools.compare.peers` (the peer servers), and
:mod:`~rawepoll.tools.compare.report` (tables, JSON, plots).  The ``bench/``
scripts of the repository run single sections through :mod:`~rawepoll.tools.compare.cli`.

Nothing here is imported by ``import rawepoll``; the optional extras (rich,
matplotlib, psutil, uvloop, hdrhistogram) are imported only when used.
"""

from __future__ import annotations

from rawepoll.tools.compare.stats import Spread, ratios, round_order
from rawepoll.tools.compare.timing import Settings, Timer, alternate, calibrate

__all__ = ["Settings", "Spread", "Timer", "alternate", "calibrate", "ratios", "round_order"]
