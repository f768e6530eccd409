"""``rawepoll compare``: rawepoll against the standard library and its peers, side by side.

The four sections, one module each, every one of them run in alternating
rounds and reported as medians with their min-max:

* :mod:`~rawepoll.compare.scaling` -- one wait with 1 ready fd among N idle:
  ``select.select``, ``select.poll``, ``select.epoll``, ``rawepoll.Epoll.wait``,
  ``rawepoll.unix.EpollWait``;
* :mod:`~rawepoll.compare.binding` -- what the ctypes binding costs next to
  ``select.epoll``, with the bare-ctypes floor;
* :mod:`~rawepoll.compare.echo` -- echo servers: server CPU per message,
  messages per second, p99 latency, the load from :func:`rawepoll.loadgen.run_load`;
* :mod:`~rawepoll.compare.memory` -- memory per idle connection and the
  accept rate.

The machinery they share: :mod:`~rawepoll.compare.stats` (rounds, medians,
spreads, ratios), :mod:`~rawepoll.compare.timing` (timers, calibration,
alternation), :mod:`~rawepoll.compare.loops` (the timed loops),
:mod:`~rawepoll.compare.machine` (pinning, CPU clocks, memory),
:mod:`~rawepoll.compare.servers` (starting and measuring a server),
:mod:`~rawepoll.compare.peers` (the peer servers), and
:mod:`~rawepoll.compare.report` (tables, JSON, plots).  The ``bench/``
scripts of the repository run single sections through :mod:`~rawepoll.compare.cli`.

Nothing here is imported by ``import rawepoll``; the optional extras (rich,
matplotlib, psutil, uvloop, hdrhistogram) are imported only when used.
"""

from __future__ import annotations

from rawepoll.compare.stats import Spread, ratios, round_order
from rawepoll.compare.timing import Settings, Timer, alternate, calibrate

__all__ = ["Settings", "Spread", "Timer", "alternate", "calibrate", "ratios", "round_order"]
