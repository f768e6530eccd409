"""What a run measured: :class:`LoadResult`, the contract with ``rawepoll compare``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["LoadInterrupted", "LoadResult"]


@dataclass
class LoadResult:
    """The figures of one ``rawepoll bench`` run (``run_load``'s result).

    The first fields are the contract with ``rawepoll compare``; the last four
    (with defaults) add context.  Latencies are per-message round trips, from
    the send to the moment the last byte of the echo was read and verified.
    """

    conns: int  # connections asked for
    established: int  # connections that connected and completed >= 1 verified echo
    messages: int  # complete, verified echoes in the measured period
    bytes: int  # payload bytes echoed and verified (messages * size)
    seconds: float  # measured duration (after ramp-up): go to the last echo
    msgs_per_s: float
    mb_per_s: float  # bytes / seconds / 1e6
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    connect_s: float  # wall time until every connection was established (or failed)
    errors: int  # connect failures, resets, stalls, unexpected EOF, dead load processes
    mismatches: int  # echoes that differ from what was sent (or arrive in the wrong order)
    procs: int
    loadgen_cpu_s: float  # user+sys CPU of all load processes during the measured period
    size: int = 0  # bytes per message
    pipeline: int = 1  # messages in flight per connection
    interrupted: bool = False  # stopped early (Ctrl-C, SIGTERM, or the wall-clock guard)
    problems: list[str] = field(default_factory=list)  # the first few errors, as sentences

    def as_dict(self) -> dict[str, object]:
        """JSON-ready; the keys are the field names."""
        return dataclasses.asdict(self)

    @property
    def ok(self) -> bool:
        """No error, no mismatch, every connection established, not interrupted."""
        return (
            not self.errors
            and not self.mismatches
            and self.established == self.conns
            and not self.interrupted
        )

    @property
    def loadgen_us_per_msg(self) -> float:
        """The load generator's own CPU per message, in µs (0 without messages)."""
        return self.loadgen_cpu_s / self.messages * 1e6 if self.messages else 0.0


class LoadInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM turned into it) stopped a run; :attr:`result` holds what it got.

    A subclass of :class:`KeyboardInterrupt`, so a caller that does not look
    for it is interrupted as usual.
    """

    def __init__(self, result: LoadResult) -> None:
        super().__init__("load run interrupted")
        self.result = result
