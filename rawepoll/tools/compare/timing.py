"""Timing operations side by side in one process: timers, batches, alternating rounds.

How a number is made (the wait-scaling and binding-cost sections):

* Every contender is a *timer*: ``timer(loops) -> ns`` runs its operation
  ``loops`` times inside one ``time.perf_counter_ns`` pair, with the loop
  written out in the timer itself, so the only per-operation overhead besides
  the operation is one ``for`` step (a few ns, the same for every contender).
* ``loops`` is calibrated per contender so that one *batch* lasts about
  ``batch_ms``.
* One *round* runs ``repeat`` batches of every contender, interleaved
  (A B A B ...), and keeps each contender's fastest batch: noise (another
  process, an interrupt) only ever adds time.  Odd rounds run the contenders in
  reverse order (:func:`rawepoll.tools.compare.stats.round_order`).

The garbage collector is off while a batch runs, as in :mod:`timeit`.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rawepoll.tools.compare.stats import round_order

__all__ = ["Settings", "Timer", "alternate", "calibrate"]

Timer = Callable[[int], int]
"""Runs an operation ``loops`` times and returns the elapsed nanoseconds."""

MAX_LOOPS = 1 << 24  # calibration stops doubling here, however cheap the operation


@dataclass(frozen=True)
class Settings:
    """How long and how often to time."""

    rounds: int
    repeat: int  # batches per contender per round; the fastest one counts
    batch_ms: float  # target duration of one batch

    @property
    def batch_ns(self) -> int:
        return int(self.batch_ms * 1e6)


def _run(timer: Timer, loops: int) -> int:
    enabled = gc.isenabled()
    gc.disable()
    try:
        return timer(loops)
    finally:
        if enabled:
            gc.enable()


def calibrate(timer: Timer, batch_ns: int) -> int:
    """The loop count that makes one batch of ``timer`` last about ``batch_ns``."""
    _run(timer, 1)  # warm up: first-call caches, lazy allocations
    loops = 1
    while True:
        elapsed = _run(timer, loops)
        if elapsed >= batch_ns // 10 or loops >= MAX_LOOPS:
            break
        loops *= 2
    per_op = max(elapsed / loops, 1.0)
    return max(1, round(batch_ns / per_op))


def alternate(timers: Sequence[Timer], settings: Settings) -> list[list[float]]:
    """Time ``timers`` side by side; per timer, one ns-per-operation figure per round."""
    loops = [calibrate(timer, settings.batch_ns) for timer in timers]
    per_round: list[list[float]] = [[] for _ in timers]
    for round_index in range(settings.rounds):
        order = round_order(range(len(timers)), round_index)
        best = [float("inf")] * len(timers)
        for _ in range(settings.repeat):
            for i in order:
                best[i] = min(best[i], _run(timers[i], loops[i]) / loops[i])
        for i, value in enumerate(best):
            per_round[i].append(value)
    return per_round
