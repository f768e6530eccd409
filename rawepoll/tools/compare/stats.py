"""Figures from alternating rounds: the order of a round, medians, spreads, ratios.

A timing is only meaningful as a ratio measured side by side in one run, so
every section of ``rawepoll compare`` runs its contenders in *rounds*: one
figure per contender per round, the contenders interleaved within a round
(A B C ...) and every other round in reverse order (... C B A), so no
contender always goes first or last.  What is reported:

* per contender, the **median** of its per-round figures and their **min-max**
  (a :class:`Spread`);
* per pair, the **median of the per-round ratios** and their min-max: both
  figures of a ratio come from the same round, so noise that hits a whole round
  cancels out, and a ratio whose spread straddles 1.0 is a tie.

Standard library only: this module is imported by the peers' processes too.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Spread", "ratios", "round_order"]

T = TypeVar("T")


@dataclass(frozen=True)
class Spread:
    """The median of per-round figures and their range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        """The median, min and max of ``samples`` (at least one).

        Raises:
            ValueError: ``samples`` is empty.
        """
        if not samples:
            raise ValueError("a spread needs at least one sample")
        return cls(statistics.median(samples), min(samples), max(samples))


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-round ratios of two contenders measured in the same rounds.

    Raises:
        ValueError: the two have not run the same number of rounds.
    """
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def round_order(contenders: Sequence[T], round_index: int) -> list[T]:
    """The order in which round ``round_index`` (from 0) runs ``contenders``.

    Even rounds run them as given, odd rounds reversed.
    """
    return list(contenders) if round_index % 2 == 0 else list(reversed(contenders))
