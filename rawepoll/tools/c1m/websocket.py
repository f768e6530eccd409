"""The WebSocket run of ``rawepoll c1m``: held subscribers, and one broadcast to all of them.

``rawepoll c1m --protocol websocket`` holds its connections as WebSocket
clients of the server's default application at ``/topic/c1m``
(:class:`~rawepoll.tools.loadgen.wsholding.EchoedSubscribers`): each is
upgraded, subscribed and verified by one echo before it counts as
established.  After the hold, **one** message is published to the topic
through the server's control socket (``rawepoll serve --control PATH``,
:mod:`rawepoll.server.control`), carrying its publish time
(``CLOCK_MONOTONIC``, one clock for every process of the machine); every held
connection must receive exactly that message, exactly once
(:mod:`rawepoll.tools.loadgen.broadcast` publishes and merges).

**The server's side of the fan-out.**  The worker that reads the publish from
the control socket hands it to every other worker's mailbox at once (one
``SOCK_SEQPACKET`` write each, :mod:`rawepoll.server.relay`), then each worker
writes the frame -- encoded once -- to its own ~20,000 subscribers in slices
of :data:`rawepoll.server.delivery.SLICE` per loop turn
(:mod:`rawepoll.server.delivery`).  No syscall writes to many sockets: the
broadcast is one ``write`` per subscriber, and on loopback each also runs the
receiver's TCP input in the writer's context.

**Why no heartbeat** (``--ping-interval 0``): a ping to every connection is
itself a fan-out as big as the broadcast (and a million pongs back).  Every
``--ping-interval`` seconds it would land somewhere in the run -- during the
open, the memory reading or the broadcast -- and its cost would show in
whichever figure it hit.  A held connection is watched anyway: a byte nobody
sent, an end-of-file or a reset during the hold is an error.

**Where the time goes** is reported with the delivery times: the CPU time of
the server's processes and of the load processes from just before the
publish until every subscriber has it, per delivery.  The load processes
share the machine's cores with the server, so the time to the last client is
bounded below by (server CPU + load CPU) / cores.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from typing import Any, Final

from rawepoll.tools.c1m import measure
from rawepoll.tools.loadgen.broadcast import Publication, merge, publish
from rawepoll.tools.loadgen.control import Fanout
from rawepoll.tools.loadgen.workers import Holding

__all__ = [
    "QUIET_S",
    "TOPIC",
    "BroadcastFigures",
    "Sent",
    "figures",
    "require",
    "send_one",
    "server_args",
    "spec_fields",
]

TOPIC: Final = "c1m"
PUBLISH_BOUND_S: Final = 120.0  # the publish and every delivery of it, at most
QUIET_S: Final = 1.0  # after the last delivery: a second one now is a duplicate
EXTRA_HINT: Final = "install the websocket extra: pip install 'rawepoll[websocket]'"


def require() -> None:
    """Raise ``ImportError`` if the server cannot speak WebSocket here (httptools)."""
    if importlib.util.find_spec("httptools") is None:
        raise ImportError(f"--protocol websocket needs httptools: {EXTRA_HINT}")


def server_args(control: str) -> tuple[str, ...]:
    """``rawepoll serve`` options of a WebSocket run: no heartbeat, a control socket."""
    return ("--protocol", "websocket", "--ping-interval", "0", "--control", control)


def spec_fields(control: str) -> dict[str, Any]:
    """The held connections' :class:`~rawepoll.tools.loadgen.spec.LoadSpec` fields: WebSocket
    subscribers of :data:`TOPIC`, one message to be published through ``control``."""
    return {
        "protocol": "websocket",
        "broadcast": True,
        "topic": TOPIC,
        "control": control,
        "messages": 1,
    }


@dataclass(frozen=True)
class Sent:
    """The broadcast as published, and the CPU it cost until every subscriber had it."""

    publication: Publication
    seconds: float  # publish to settled everywhere (or given up)
    server_cpu_s: tuple[float, float]  # (user, system) of every server process
    load_cpu_s: tuple[float, float]  # ... of every load process of the held connections


@dataclass(frozen=True)
class BroadcastFigures:
    """What the broadcast measured (the ``broadcast`` object of ``rawepoll c1m --json``)."""

    topic: str
    subscribers: int  # held connections established: each must receive the message once
    published: int  # 1 once the server said OK
    delivered: int  # deliveries verified byte for byte
    lost: int  # subscribers that stayed open and never received it
    duplicates: int  # deliveries beyond the first, until the connections were released
    first_us: float  # publish to the first arrival anywhere
    p50_us: float  # delivery time (publish to arrival), over every delivery
    p99_us: float
    max_us: float  # publish to the arrival at the last subscriber
    publish_us: float  # publish to the server's OK on the control socket
    deliveries_per_s: float  # delivered / (publish to the last arrival)
    server_cpu_s: tuple[float, float]  # (user, system) from the publish until all had it
    load_cpu_s: tuple[float, float]
    server_us_per_delivery: float  # user + system
    load_us_per_delivery: float
    publish_error: str | None  # why the publish failed (None: the server said OK)

    @property
    def ok(self) -> bool:
        """Published, and every subscriber had it exactly once."""
        return (
            self.published == 1
            and self.publish_error is None
            and self.delivered == self.subscribers
            and not self.lost
            and not self.duplicates
        )

    def shortfalls(self) -> list[str]:
        """What went wrong, in words (nothing when :attr:`ok`)."""
        said = [] if self.publish_error is None else [f"broadcast: {self.publish_error}"]
        if self.lost:
            said.append(f"broadcast: {self.lost:,} subscriber(s) never received the message")
        if self.duplicates:
            said.append(f"broadcast: {self.duplicates:,} delivery(ies) came a second time")
        return said


def send_one(holding: Holding, server_pid: int) -> Sent:
    """Publish the one message and wait until every subscriber settled it; then a quiet
    second, in which a second delivery would be counted as a duplicate."""
    server = measure.process_tree_cpu([server_pid])
    load = measure.process_tree_cpu(holding.pids)
    publication = Publication()
    started = time.monotonic()
    publish(holding, publication, started + PUBLISH_BOUND_S)
    seconds = time.monotonic() - started
    server = _spent(server, measure.process_tree_cpu([server_pid]))
    load = _spent(load, measure.process_tree_cpu(holding.pids))
    quiet_until = time.monotonic() + QUIET_S
    while (left := quiet_until - time.monotonic()) > 0:
        holding.poll(left)
    return Sent(publication, seconds, server, load)


def figures(holding: Holding, sent: Sent, connect_s: float) -> BroadcastFigures:
    """The figures, from the load processes' last reports (after ``holding.release()``)."""
    merged = merge(holding, sent.publication, connect_s)
    stamps = sent.publication.stamps
    first = _first_arrival(holding)
    per = 1e6 / max(1, merged.delivered)
    return BroadcastFigures(
        topic=TOPIC,
        subscribers=merged.subscribed,
        published=merged.published,
        delivered=merged.delivered,
        lost=merged.lost,
        duplicates=merged.duplicates,
        first_us=(first - stamps[0]) / 1e3 if stamps and first else 0.0,
        p50_us=merged.p50_us,
        p99_us=merged.p99_us,
        max_us=merged.to_all_max_us,
        publish_us=merged.publish_s * 1e6,
        deliveries_per_s=merged.deliveries_per_s,
        server_cpu_s=sent.server_cpu_s,
        load_cpu_s=sent.load_cpu_s,
        server_us_per_delivery=sum(sent.server_cpu_s) * per,
        load_us_per_delivery=sum(sent.load_cpu_s) * per,
        publish_error=sent.publication.error,
    )


def _first_arrival(holding: Holding) -> int:
    """The earliest arrival over every load process (0: none)."""
    fanouts: list[Fanout] = [
        child.done.fanout
        for child in holding.children
        if child.done is not None and child.done.fanout is not None
    ]
    return min((f.first_ns for f in fanouts if f.first_ns), default=0)


def _spent(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    return after[0] - before[0], after[1] - before[1]
