"""The arithmetic behind the reports, without any process: drift and loss attribution."""

from __future__ import annotations

import pytest

from hardening._common import Sample, drift
from hardening.chaos import attribute


def test_drift_measures_from_the_end_of_the_warm_up() -> None:
    # 1 MiB per minute after a 10 s warm-up spent climbing from 0.
    samples = [
        Sample(float(t), 0 if t < 10 else (t - 10) * (1 << 20) // 60, 20, 3) for t in range(71)
    ]
    figures = drift(samples, 10.0, "rss")
    assert figures["start"] == 0
    assert figures["end"] == 1 << 20
    assert figures["change"] == 1 << 20
    assert figures["slope_per_min"] == pytest.approx(1 << 20, rel=0.01)
    assert drift(samples, 10.0, "fds")["slope_per_min"] == 0


def test_each_loss_goes_to_the_last_kill_before_it() -> None:
    kills = [{"t": 10.0}, {"t": 20.0}]
    losses = [
        {"t": 5.0, "how": "EOF with 0 bytes in flight"},  # before any kill: unexplained
        {"t": 10.1, "how": "recv: Connection reset by peer", "recovered": 10.2},
        {"t": 10.1, "how": "EOF with 12 bytes in flight", "recovered": 10.4},
        {"t": 20.5, "how": "EOF with 0 bytes in flight"},  # never reconnected
    ]
    unexplained = attribute(kills, losses)
    assert unexplained == [losses[0]]
    first, second = kills
    assert (first["lost"], first["lost_reset"], first["lost_eof"]) == (2, 1, 1)
    assert first["reconnected_s"] == pytest.approx(0.4)
    assert (second["lost"], second["lost_eof"], second["recovered"]) == (1, 1, 0)
    assert second["reconnected_s"] is None
