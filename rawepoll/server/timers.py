"""Idle timeouts with O(1) work per event: a wheel of coarse buckets.

Time is cut into ticks of a quarter of the timeout.  Each connection's last
active tick is kept in a flat ``array('I')`` indexed by fd (4 bytes per
possible descriptor, allocated once); the first activity of a connection in a
tick appends its fd to that tick's bucket, an ``array('i')`` (4 bytes per
entry).  When a bucket is old enough, each fd in it whose last active tick is
still the bucket's tick has been idle for at least the timeout: it expires.
An fd that was active later is simply skipped -- it sits in a newer bucket too.

So an event costs one comparison (and, once per tick, one append), and an idle
connection costs 4 bytes of bucket; nothing scans all connections.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Iterator

__all__ = ["IdleWheel"]

_TICKS_PER_TIMEOUT = 4


class IdleWheel:
    """Expire descriptors idle for at least ``timeout`` seconds (closing within +25%)."""

    def __init__(self, timeout: float, fd_limit: int, now: float) -> None:
        if timeout <= 0:
            raise ValueError("the idle timeout must be positive")
        self.tick_seconds = timeout / _TICKS_PER_TIMEOUT
        self._origin = now
        self.tick = 1  # 0 in `_last` means "not tracked"
        self._last = array("I", bytes(4 * fd_limit))
        self._current = array("i")
        self._buckets: deque[tuple[int, array[int]]] = deque([(self.tick, self._current)])

    def advance(self, now: float) -> None:
        """Move to the tick ``now`` falls in (call once per loop turn)."""
        tick = 1 + int((now - self._origin) / self.tick_seconds)
        if tick != self.tick:
            self.tick = tick
            self._current = array("i")
            self._buckets.append((tick, self._current))

    def touch(self, fd: int) -> None:
        """``fd`` saw traffic now."""
        if self._last[fd] != self.tick:
            self._last[fd] = self.tick
            self._current.append(fd)

    def forget(self, fd: int) -> None:
        """``fd`` closed: a later descriptor with this number starts afresh."""
        self._last[fd] = 0

    def expired(self) -> Iterator[int]:
        """Descriptors idle for a whole timeout; each is forgotten as it is yielded."""
        # A bucket of tick t holds fds last active in [t, t+1) ticks; all of
        # them are idle >= timeout once the current tick is t + 1 + TICKS.
        oldest_live = self.tick - _TICKS_PER_TIMEOUT - 1
        buckets = self._buckets
        while buckets and buckets[0][0] <= oldest_live:
            tick, bucket = buckets.popleft()
            for fd in bucket:
                if self._last[fd] == tick:
                    self._last[fd] = 0
                    yield fd

    def seconds_to_next_tick(self, now: float) -> float:
        """How long the loop may sleep before the wheel needs to move."""
        next_tick_at = self._origin + self.tick * self.tick_seconds
        return max(0.0, next_tick_at - now) if math.isfinite(next_tick_at) else 1.0
