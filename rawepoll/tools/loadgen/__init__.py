"""The closed-loop echo load generator behind ``rawepoll bench``, built on rawepoll.

Each connection sends a message, waits for its whole echo, verifies every byte
and sends the next (``pipeline`` keeps several in flight); connections are
spread over forked load processes, each running its own
:class:`rawepoll.Epoll` loop over non-blocking sockets.  The modules, by layer:

* :mod:`~rawepoll.tools.loadgen.payload` -- the messages and how a difference is told (no I/O);
* :mod:`~rawepoll.tools.loadgen.plan` -- arguments and limits checked, connections split;
* :mod:`~rawepoll.tools.loadgen.engine` -- one load process's loops;
* :mod:`~rawepoll.tools.loadgen.latency` -- latency counts and HdrHistograms (optional extra);
* :mod:`~rawepoll.tools.loadgen.channel` -- the parent <-> load process control messages;
* :mod:`~rawepoll.tools.loadgen.workers` -- forking, starting together, merging: :func:`run_load`;
* :mod:`~rawepoll.tools.loadgen.display` -- progress lines, or rich bars (optional extra);
* :mod:`~rawepoll.tools.loadgen.cli` -- the ``rawepoll bench`` command.

hdrhistogram and rich are imported only when a run needs them.
"""

from __future__ import annotations

from rawepoll.tools.loadgen.result import LoadInterrupted, LoadResult
from rawepoll.tools.loadgen.workers import run_load

__all__ = ["LoadInterrupted", "LoadResult", "run_load"]
