"""The statistics of alternating rounds: spreads, per-round ratios, round order, alternation.

Property-based (hypothesis): the invariants hold for any samples, any number of
contenders and rounds.  The timers here are fakes that report a cost they are
given, so what is checked is the bookkeeping, never the speed of anything.
"""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawepoll.tools.compare import Settings, Spread, alternate, calibrate, ratios, round_order

finite = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
samples = st.lists(finite, min_size=1, max_size=40)


@given(samples)
def test_spread_is_median_min_max(values: list[float]) -> None:
    spread = Spread.of(values)
    assert spread.low == min(values)
    assert spread.high == max(values)
    assert spread.median == statistics.median(values)
    assert spread.low <= spread.median <= spread.high


@given(samples, st.randoms(use_true_random=False))
def test_spread_does_not_depend_on_order(values: list[float], rnd: object) -> None:
    shuffled = list(values)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert Spread.of(shuffled) == Spread.of(values)


def test_spread_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Spread.of([])


@given(st.lists(st.tuples(finite, finite), min_size=1, max_size=40))
def test_ratios_pair_rounds(pairs: list[tuple[float, float]]) -> None:
    numerators = [a for a, _ in pairs]
    denominators = [b for _, b in pairs]
    result = ratios(numerators, denominators)
    assert len(result) == len(pairs)
    for (a, b), ratio in zip(pairs, result, strict=True):
        assert math.isclose(ratio * b, a, rel_tol=1e-9)


@given(finite, st.lists(finite, min_size=1, max_size=20))
def test_a_common_factor_per_round_cancels(factor: float, base: list[float]) -> None:
    """Noise that slows a whole round alike leaves that round's ratio unchanged."""
    slowed = [x * factor for x in base]
    doubled = [2 * x * factor for x in base]
    for ratio in ratios(doubled, slowed):
        assert math.isclose(ratio, 2.0, rel_tol=1e-9)


@given(samples, samples)
def test_ratios_of_different_round_counts_are_refused(a: list[float], b: list[float]) -> None:
    if len(a) == len(b):
        b = [*b, 1.0]
    with pytest.raises(ValueError):
        ratios(a, b)


@given(st.lists(st.integers(), min_size=0, max_size=12, unique=True), st.integers(0, 50))
def test_round_order_alternates(contenders: list[int], round_index: int) -> None:
    order = round_order(contenders, round_index)
    assert sorted(order) == sorted(contenders)
    expected = contenders if round_index % 2 == 0 else contenders[::-1]
    assert order == expected


@given(st.lists(st.integers(), min_size=1, max_size=12, unique=True), st.integers(0, 50))
def test_two_consecutive_rounds_give_every_contender_the_same_mean_position(
    contenders: list[int], first: int
) -> None:
    """Over a pair of rounds nobody always goes first: positions sum to len - 1 for all."""
    a = round_order(contenders, first)
    b = round_order(contenders, first + 1)
    for contender in contenders:
        assert a.index(contender) + b.index(contender) == len(contenders) - 1


class FakeTimer:
    """Reports ``costs[k % len(costs)]`` ns per loop on its k-th batch; logs every call."""

    def __init__(self, name: str, costs: list[float], log: list[str]) -> None:
        self.name = name
        self.costs = costs
        self.log = log
        self.reported: list[float] = []  # the cost of each batch, in call order

    @property
    def calls(self) -> int:
        return len(self.reported)

    def __call__(self, loops: int) -> int:
        cost = self.costs[self.calls % len(self.costs)]
        self.reported.append(cost)
        self.log.append(self.name)
        return round(cost * loops)


@given(
    st.lists(st.floats(min_value=10, max_value=1e5), min_size=1, max_size=5),
    st.integers(1, 6),
    st.integers(1, 4),
)
def test_alternate_reports_each_timers_cost_per_round(
    costs: list[float], rounds: int, repeat: int
) -> None:
    log: list[str] = []
    timers = [FakeTimer(str(i), [cost], log) for i, cost in enumerate(costs)]
    per_round = alternate(timers, Settings(rounds=rounds, repeat=repeat, batch_ms=0.01))
    assert len(per_round) == len(costs)
    for cost, figures in zip(costs, per_round, strict=True):
        assert len(figures) == rounds
        for figure in figures:
            assert math.isclose(figure, cost, rel_tol=0.01, abs_tol=1.0)


@given(st.integers(2, 5), st.integers(1, 5), st.integers(1, 3))
def test_alternate_interleaves_and_reverses_every_other_round(
    count: int, rounds: int, repeat: int
) -> None:
    log: list[str] = []
    timers = [FakeTimer(str(i), [100.0], log) for i in range(count)]
    alternate(timers, Settings(rounds=rounds, repeat=repeat, batch_ms=0.01))
    calibration = sum(t.calls for t in timers) - count * rounds * repeat
    measured = log[calibration:]
    names = [str(i) for i in range(count)]
    expected: list[str] = []
    for round_index in range(rounds):
        expected += round_order(names, round_index) * repeat
    assert measured == expected


@given(
    st.lists(st.floats(min_value=100, max_value=1e4), min_size=1, max_size=8),
    st.integers(1, 4),
    st.integers(1, 4),
)
def test_alternate_keeps_the_fastest_batch_of_each_round(
    costs: list[float], rounds: int, repeat: int
) -> None:
    """Noise only adds time: a round's figure is the fastest of its batches."""
    timer = FakeTimer("a", costs, [])
    (figures,) = alternate([timer], Settings(rounds=rounds, repeat=repeat, batch_ms=0.01))
    measured = timer.reported[-rounds * repeat :]
    for round_index, figure in enumerate(figures):
        batches = measured[round_index * repeat : (round_index + 1) * repeat]
        assert math.isclose(figure, min(batches), rel_tol=0.01, abs_tol=1.0)


@given(st.floats(min_value=1, max_value=1e6), st.integers(10_000, 50_000_000))
def test_calibrate_aims_at_the_batch_length(cost: float, batch_ns: int) -> None:
    loops = calibrate(FakeTimer("t", [cost], []), batch_ns)
    assert loops >= 1
    if batch_ns >= 2 * cost:
        assert math.isclose(loops * cost, batch_ns, rel_tol=0.1, abs_tol=cost)
