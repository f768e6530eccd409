"""Counters a worker keeps, and the status line they make.

A worker counts in plain attributes of one :class:`Stats` object and copies
them, once per loop turn at most, into its slot of a shared anonymous mapping
(:class:`SharedStats`) made before the workers are forked, so the supervisor
can print one line for all of them without any message passing.
"""

from __future__ import annotations

import mmap
from typing import Final

__all__ = ["FIELDS", "SharedStats", "Stats", "format_line"]

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
)


class Stats:
    """One worker's counters (``open`` is a level, the rest only grow)."""

    __slots__ = FIELDS

    def __init__(self) -> None:
        self.open = 0
        self.accepted = 0
        self.closed = 0
        self.refused = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.events = 0
        self.loops = 0
        self.emfile = 0
        self.idle_closed = 0
        self.overflow = 0

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
        base = slot * len(FIELDS)
        for offset, value in enumerate(stats.values()):
            self._cells[base + offset] = value

    def read(self, slot: int) -> dict[str, int]:
        base = slot * len(FIELDS)
        return {name: self._cells[base + i] for i, name in enumerate(FIELDS)}

    def total(self, retired: dict[str, int] | None = None) -> dict[str, int]:
        """Sum over slots, plus what dead workers had counted (``retired``)."""
        sums = dict.fromkeys(FIELDS, 0)
        for slot in range(self.slots):
            for name, value in self.read(slot).items():
                sums[name] += value
        for name, value in (retired or {}).items():
            if name != "open":
                sums[name] += value
        return sums

    def clear(self, slot: int) -> None:
        base = slot * len(FIELDS)
        for offset in range(len(FIELDS)):
            self._cells[base + offset] = 0


def format_line(kind: str, counts: dict[str, int], **extra: object) -> str:
    """``rawepoll serve: KIND key=value ...`` -- one grep-able line."""
    fields = " ".join(f"{name}={counts[name]}" for name in FIELDS)
    more = "".join(f" {key}={value}" for key, value in extra.items())
    return f"rawepoll serve: {kind} {fields}{more}"
