"""The load generator behind ``rawepoll bench``, built on rawepoll.

An **echo** run: each connection sends a message, waits for its whole echo,
verifies every byte and sends the next (``pipeline`` keeps several in
flight) -- over raw TCP, or over WebSocket (the opening handshake, then
masked frames whose echoes are verified header and payload).  A
**broadcast** run: the connections subscribe to a topic, messages are
published through the server's control socket, and every delivery is
verified and timed.  Connections are spread over forked load processes,
each running its own :class:`rawepoll.Epoll` loop over non-blocking sockets.
The modules, by layer:

* :mod:`~rawepoll.tools.loadgen.payload` -- the echo messages and how a difference is told (no I/O);
* ``stamp`` -- broadcast messages that carry their number and publish time (no I/O);
* ``wsclient`` -- the WebSocket client's handshake and frames (no I/O);
* :mod:`~rawepoll.tools.loadgen.spec` -- a run's settings, checked against each other once;
* :mod:`~rawepoll.tools.loadgen.plan` -- the settings checked against the limits, connections split;
* :mod:`~rawepoll.tools.loadgen.engine` -- one load process's loops;
* ``wsengine`` -- the engine over WebSocket; ``subscriber`` -- the engine of a broadcast run;
* ``wsholding`` -- WebSocket subscribers each verified by an echo (``rawepoll c1m``);
* :mod:`~rawepoll.tools.loadgen.latency` -- latency counts and HdrHistograms (optional extra);
* :mod:`~rawepoll.tools.loadgen.control` -- the parent <-> load process messages (no I/O);
* :mod:`~rawepoll.tools.loadgen.channel` -- the socketpair that carries them;
* :mod:`~rawepoll.tools.loadgen.workers` -- forking, starting together, merging: :func:`run_load`;
* ``broadcast`` -- a broadcast run's publisher and figures: :func:`run_broadcast`;
* :mod:`~rawepoll.tools.loadgen.display` -- progress lines, or rich bars (optional extra);
* :mod:`~rawepoll.tools.loadgen.cli` -- the ``rawepoll bench`` command.

hdrhistogram and rich are imported only when a run needs them.
"""

from __future__ import annotations

from rawepoll.tools.loadgen.broadcast import run_broadcast
from rawepoll.tools.loadgen.result import (
    BroadcastInterrupted,
    BroadcastResult,
    LoadInterrupted,
    LoadResult,
)
from rawepoll.tools.loadgen.workers import run_load

__all__ = [
    "BroadcastInterrupted",
    "BroadcastResult",
    "LoadInterrupted",
    "LoadResult",
    "run_broadcast",
    "run_load",
]
