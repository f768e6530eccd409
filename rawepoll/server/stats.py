"""Counters a worker keeps, and the status line they make.

A worker counts in plain attributes of one :class:`Stats` object and copies
them, when they changed and at most every :data:`PUBLISH_INTERVAL` seconds,
into its slot of a shared anonymous mapping (:class:`SharedStats`) made
before the workers are forked -- and once more on every way out of the worker,
an exception included.  The supervisor reads the slots to report, and keeps a
dead worker's last figures: a worker killed by a signal loses at most the
last interval of counting.

Three kinds of figure:

* ``open`` and ``broker_links`` -- levels: summed over the live workers only;
* ``max_turn_us`` -- the longest loop turn, in microseconds, since the last
  status report (event-loop lag, as Node and asyncio's debug mode report it):
  the maximum over the workers, and it starts again after each report;
* every other field -- a counter that only grows: summed over every worker
  that ever ran, the dead ones included.
"""

from __future__ import annotations

import mmap
from typing import Final

__all__ = ["FIELDS", "MAXIMA", "PUBLISH_INTERVAL", "SharedStats", "Stats", "format_line"]

FIELDS: Final = (
    "open",
    "accepted",
    "closed",
    "refused",
    "bytes_in",
    "bytes_out",
    "events",
    "loops",
    "emfile",
    "idle_closed",
    "overflow",
    "handler_errors",
    "published",
    "delivered",
    "dropped",
    "slow_closed",
    "stale_sends",
    "relay_dropped",
    "fanout_dropped",
    "broker_links",
    "broker_published",
    "broker_received",
    "broker_lost",
    "broker_dropped",
    "broker_reconnects",
    "max_turn_us",
)
MAXIMA: Final = frozenset({"max_turn_us"})  # combined by max, reset after each report
# Levels: summed over live workers, not kept for dead ones.
_LEVELS: Final = frozenset({"open", "broker_links"})
PUBLISH_INTERVAL: Final = 0.01  # seconds: what a SIGKILLed worker's counts may miss


class Stats:
    """One worker's counters (``open`` is a level, ``max_turn_us`` a maximum, the rest grow)."""

    __slots__ = FIELDS

    def __init__(self) -> None:
        for name in FIELDS:
            setattr(self, name, 0)

    open: int
    accepted: int
    closed: int
    refused: int
    bytes_in: int
    bytes_out: int
    events: int
    loops: int
    emfile: int
    idle_closed: int
    overflow: int
    handler_errors: int
    published: int  # publishes made in this worker (handlers, control socket)
    delivered: int  # messages written or queued to subscribers
    dropped: int  # messages not queued to a connection that does not read (--slow-policy drop)
    slow_closed: int  # connections closed for not reading (--slow-policy close)
    stale_sends: int  # sends on a handle whose connection had closed: nothing written
    relay_dropped: int  # relay messages lost because a worker's mailbox stayed full
    fanout_dropped: int  # publishes not delivered in a worker whose fan-out queue was full
    broker_links: int  # Redis connections up (a level: 2 per worker; rawepoll.server.broker)
    broker_published: int  # publishes Redis confirmed
    broker_received: int  # messages Redis delivered to this worker
    broker_lost: int  # publishes not known to have reached Redis (link down, unconfirmed)
    broker_dropped: int  # publishes dropped: the Redis output buffer was full
    broker_reconnects: int  # Redis connections re-established after a loss
    max_turn_us: int

    def values(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in FIELDS)

    def as_dict(self) -> dict[str, int]:
        return dict(zip(FIELDS, self.values(), strict=True))


class SharedStats:
    """``slots`` rows of counters in memory shared with forked children."""

    def __init__(self, slots: int) -> None:
        self._map = mmap.mmap(-1, max(1, slots) * len(FIELDS) * 8)
        self._cells = memoryview(self._map).cast("q")
        self.slots = slots

    def publish(self, slot: int, stats: Stats) -> None:
        """Copy ``stats`` into ``slot``; the maximum only ever rises until the reader resets it."""
        base = slot * len(FIELDS)
        cells = self._cells
        for offset, name in enumerate(FIELDS):
            value = getattr(stats, name)
            if name in MAXIMA:
                value = max(value, cells[base + offset])
            cells[base + offset] = value

    def read(self, slot: int) -> dict[str, int]:
        base = slot * len(FIELDS)
        return {name: self._cells[base + i] for i, name in enumerate(FIELDS)}

    def reset_maxima(self) -> None:
        """After a report: the maxima start again (each worker raises its own cell)."""
        for slot in range(self.slots):
            for offset, name in enumerate(FIELDS):
                if name in MAXIMA:
                    self._cells[slot * len(FIELDS) + offset] = 0

    def total(self, retired: dict[str, int] | None = None) -> dict[str, int]:
        """Over the slots, plus what dead workers had counted (``retired``)."""
        sums = dict.fromkeys(FIELDS, 0)
        for slot in range(self.slots):
            combine(sums, self.read(slot))
        if retired:
            combine(sums, {k: v for k, v in retired.items() if k not in _LEVELS})
        return sums

    def clear(self, slot: int) -> None:
        base = slot * len(FIELDS)
        for offset in range(len(FIELDS)):
            self._cells[base + offset] = 0


def combine(into: dict[str, int], counts: dict[str, int]) -> None:
    """Add ``counts`` to ``into``: maxima by ``max``, everything else by ``+``."""
    for name, value in counts.items():
        into[name] = max(into[name], value) if name in MAXIMA else into[name] + value


def format_line(kind: str, counts: dict[str, int], **extra: object) -> str:
    """``rawepoll serve: KIND key=value ...`` -- one grep-able line."""
    fields = " ".join(f"{name}={counts[name]}" for name in FIELDS)
    more = "".join(f" {key}={value}" for key, value in extra.items())
    return f"rawepoll serve: {kind} {fields}{more}"
