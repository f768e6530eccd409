"""``rawepoll c1m``: one million concurrent connections on one small machine, measured.

The seed asks how to hold a million TCP connections; this package answers
with a run anyone with root can repeat.  A process may hold at most
``RLIMIT_NOFILE`` descriptors (20,000 on the machines it was written on, and
not raisable there), so a million connections take ~51 server workers and
~51 load processes; everything runs in a private network namespace
(:mod:`~rawepoll.tools.c1m.netns`) so the host's ports, backlogs and conntrack
table are untouched.  Over TCP (the default) or WebSocket (``protocol="websocket"``:
every connection a subscriber verified by an echo, then one broadcast to all).
The modules:

* :mod:`~rawepoll.tools.c1m.netns` -- the namespace, its loopback and sysctls;
* :mod:`~rawepoll.tools.c1m.measure` -- server PSS/RSS, kernel slab, CPU time;
* ``websocket`` -- the WebSocket run: held subscribers, one broadcast to all;
* :mod:`~rawepoll.tools.c1m.run` -- the run, step by step: :func:`run_c1m`;
* :mod:`~rawepoll.tools.c1m.cli` -- the ``rawepoll c1m`` command.

docs/c1m.md explains the setup and publishes a measured run.
"""

from __future__ import annotations

from rawepoll.tools.c1m.run import C1MConfig, C1MResult, run_c1m

__all__ = ["C1MConfig", "C1MResult", "run_c1m"]
