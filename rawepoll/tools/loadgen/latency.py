"""Round-trip latencies: counted cheaply in the loop, kept in an HdrHistogram.

``HdrHistogram.record_value`` is pure Python and costs ~0.9 µs, as much as a
tenth of what the load generator spends per message.  So the loop only counts
whole microseconds in a dict (~50 ns per message) and :meth:`Latencies.flush`
moves the counts into the histogram once the dict holds many distinct values
(bounded memory) and at the end.  Each process encodes its histogram; the
parent decodes and adds them up (:func:`merge`), so percentiles are those of
all messages, not an average of per-process percentiles.

hdrhistogram is an optional extra: it is imported here, inside the functions
that use it, never by ``import rawepoll``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, Final

__all__ = ["HIGHEST_US", "Latencies", "merge", "percentiles", "require"]

HIGHEST_US: Final = 600_000_000  # ten minutes; longer values are clamped
FLUSH_AT: Final = 4096  # distinct values in the dict before moving them to the histogram
EXTRA_HINT: Final = "pip install 'rawepoll[bench]'"


def require() -> Any:
    """The ``HdrHistogram`` class, or an ``ImportError`` that says how to install it."""
    try:
        from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError:
        raise ImportError(
            f"rawepoll bench needs the hdrhistogram package for latency percentiles: {EXTRA_HINT}"
        ) from None
    return HdrHistogram


def _new() -> Any:
    return require()(1, HIGHEST_US, 3)


class Latencies:
    """Counts of round-trip times in whole microseconds, then an HdrHistogram.

    The engine's closed loop writes :meth:`add` out in place (no call).
    """

    __slots__ = ("counts", "histogram")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.histogram = _new()

    def add(self, now: int, sent: deque[int], done: int) -> None:
        """Count the round trips of the ``done`` oldest messages of ``sent``, back ``now``.

        Args:
            now: when their echoes were verified (ns).
            sent: send times (ns) of the messages in flight, oldest first; the
                ``done`` oldest leave it.
            done: how many came back.
        """
        counts = self.counts
        for _ in range(done):
            us = (now - sent.popleft()) // 1000
            counts[us] = counts.get(us, 0) + 1

    def flush_if_large(self) -> None:
        """Move the counts to the histogram if the dict has grown large."""
        if len(self.counts) >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Move every count to the histogram."""
        record = self.histogram.record_value
        for value, count in self.counts.items():
            record(min(max(value, 1), HIGHEST_US), count)
        self.counts.clear()

    def encode(self) -> str:
        """The histogram (after a flush), compressed and base64-encoded."""
        self.flush()
        encoded: bytes = self.histogram.encode()
        return encoded.decode("ascii")


def merge(encoded: Iterable[str]) -> Any:
    """One histogram holding every value of the encoded ones."""
    histogram = _new()
    decode = require().decode
    for text in encoded:
        histogram.add(decode(text.encode("ascii")))
    return histogram


def percentiles(histogram: Any) -> dict[str, float]:
    """``p50_us`` ... ``p999_us`` and ``max_us`` (0 for an empty histogram)."""
    if histogram.get_total_count() == 0:
        return dict.fromkeys(("p50_us", "p90_us", "p99_us", "p999_us", "max_us"), 0.0)
    return {
        "p50_us": float(histogram.get_value_at_percentile(50)),
        "p90_us": float(histogram.get_value_at_percentile(90)),
        "p99_us": float(histogram.get_value_at_percentile(99)),
        "p999_us": float(histogram.get_value_at_percentile(99.9)),
        "max_us": float(histogram.get_max_value()),
    }
