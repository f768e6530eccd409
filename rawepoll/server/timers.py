"""Timers on the worker's loop: :class:`TimerWheel` for ``call_later``/``call_every``,
and :class:`IdleWheel` for idle timeouts, which the timer wheel drives.

Both are O(1) per event.  The timer wheel is described at the class.  The
idle wheel:

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
from collections.abc import Callable, Iterator

__all__ = ["IdleWheel", "Timer", "TimerWheel"]

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


class Timer:
    """A call on the worker's :class:`TimerWheel`: ``cancel()`` it, or let it fire.

    ``callback(*args)`` runs once (:meth:`TimerWheel.call_later`) or every
    ``interval`` seconds until cancelled (:meth:`TimerWheel.call_every`).
    """

    __slots__ = ("args", "callback", "cancelled", "interval", "rounds", "when")

    def __init__(
        self, callback: Callable[..., object], args: tuple[object, ...], interval: float | None
    ) -> None:
        self.callback = callback
        self.args = args
        self.interval = interval
        self.cancelled = False
        self.rounds = 0  # visits of its bucket to skip before it is due
        self.when = 0.0  # when it is due (monotonic seconds), for people and tests

    def cancel(self) -> None:
        """It will not fire (again); cancelling twice, or after it fired, is harmless."""
        self.cancelled = True

    @property
    def active(self) -> bool:
        """Whether it will still fire."""
        return not self.cancelled

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else f"due at {self.when:.3f}"
        every = f", every {self.interval} s" if self.interval else ""
        return f"<Timer {getattr(self.callback, '__qualname__', self.callback)} {state}{every}>"


class TimerWheel:
    """``call_later``/``call_every`` in O(1) per timer event: a hashed timing wheel.

    Time is cut into ticks of ``tick`` seconds; a timer due ``d`` ticks ahead
    sits in bucket ``(now + d) % slots`` with ``(d - 1) // slots`` *rounds*
    to skip, so scheduling is an append, cancelling is a flag (the entry is
    dropped when its bucket comes round), and each tick visits one bucket.
    The loop sleeps until the next non-empty bucket (a ``bytearray`` of
    occupancy, searched with ``find`` in C), so an idle worker with a timer
    far ahead wakes once per turn of the wheel (``slots * tick`` seconds), not
    once per tick.  A timer fires in the first tick at or after its time:
    late by less than ``tick``, never early.
    """

    def __init__(self, now: float, tick: float = 0.01, slots: int = 4096) -> None:
        if not tick > 0 or slots < 1:
            raise ValueError("a timer wheel needs a positive tick and at least one slot")
        self.tick = tick
        self.slots = slots
        self._origin = now
        self._tick = 0  # the last tick processed
        self._buckets: dict[int, list[Timer]] = {}  # only non-empty ones: 4,096 lists cost 256 KiB
        self._occupied = bytearray(slots)
        self.pending = 0  # timers in buckets, cancelled ones included until dropped

    def call_later(
        self, now: float, delay: float, callback: Callable[..., object], *args: object
    ) -> Timer:
        """Run ``callback(*args)`` once, ``delay`` seconds from ``now``."""
        timer = Timer(callback, args, None)
        self._schedule(timer, now, delay)
        return timer

    def call_every(
        self, now: float, interval: float, callback: Callable[..., object], *args: object
    ) -> Timer:
        """Run ``callback(*args)`` every ``interval`` seconds from ``now`` on, until cancelled."""
        if not interval > 0:
            raise ValueError(f"the interval must be positive, not {interval!r}")
        timer = Timer(callback, args, interval)
        self._schedule(timer, now, interval)
        return timer

    def _schedule(self, timer: Timer, now: float, delay: float) -> None:
        if not math.isfinite(delay):
            raise ValueError(f"the delay must be a finite number of seconds, not {delay!r}")
        timer.when = now + max(0.0, delay)
        due = max(self._tick + 1, math.ceil((timer.when - self._origin) / self.tick))
        timer.rounds = (due - self._tick - 1) // self.slots
        slot = due % self.slots
        self._buckets.setdefault(slot, []).append(timer)
        self._occupied[slot] = 1
        self.pending += 1

    def due(self, now: float) -> list[Timer]:
        """Advance to ``now``; the timers due, in the order they were due.

        A periodic timer is scheduled again before it is returned, so its
        callback may cancel it.
        """
        target = math.floor((now - self._origin) / self.tick)
        fired: list[Timer] = []
        if self.pending == 0:
            self._tick = max(self._tick, target)
            return fired
        while self._tick < target:
            ahead = self._next_occupied()
            if ahead is None or self._tick + ahead > target:
                self._tick = target
                break
            self._tick += ahead
            self._visit(self._tick % self.slots, fired)
        for timer in fired:
            if timer.interval is not None and not timer.cancelled:
                self._schedule(timer, timer.when, timer.interval)
        return fired

    def _visit(self, slot: int, fired: list[Timer]) -> None:
        bucket = self._buckets.pop(slot, [])
        keep: list[Timer] = []
        for timer in bucket:
            if timer.cancelled:
                self.pending -= 1
            elif timer.rounds:
                timer.rounds -= 1
                keep.append(timer)
            else:
                self.pending -= 1
                fired.append(timer)
        if keep:
            self._buckets[slot] = keep
        self._occupied[slot] = 1 if keep else 0

    def _next_occupied(self) -> int | None:
        """Ticks from the current one to the next non-empty bucket (1..slots), or None."""
        start = (self._tick + 1) % self.slots
        found = self._occupied.find(1, start)
        if found < 0:
            found = self._occupied.find(1, 0, start)
            if found < 0:
                return None
        return (found - start) % self.slots + 1

    def next_deadline(self) -> float | None:
        """When the next non-empty bucket comes round (monotonic seconds), or None."""
        if self.pending == 0:
            return None
        ahead = self._next_occupied()
        if ahead is None:
            return None
        return self._origin + (self._tick + ahead) * self.tick
