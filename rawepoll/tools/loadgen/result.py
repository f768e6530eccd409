"""What a run measured: :class:`LoadResult` (an echo run; the contract with ``rawepoll compare``)
or :class:`BroadcastResult` (a broadcast run)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["BroadcastInterrupted", "BroadcastResult", "LoadInterrupted", "LoadResult"]


@dataclass
class LoadResult:
    """The figures of one ``rawepoll bench`` run (``run_load``'s result).

    The first fields are the contract with ``rawepoll compare``; the last five
    (with defaults) add context.  Latencies are per-message round trips, from
    the send to the moment the last byte of the echo was read and verified.
    Over WebSocket a message is one masked frame, its echo one frame; ``size``
    and ``bytes`` count payload bytes.
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
    protocol: str = "tcp"  # "tcp" or "websocket"

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


@dataclass
class BroadcastResult:
    """The figures of one ``rawepoll bench --broadcast`` run (``run_broadcast``'s result).

    A *delivery* is one published message arriving at one subscriber, verified
    byte for byte; its *delivery time* runs from the publish (the parent's
    ``time.monotonic_ns()`` just before it sent the request to the control
    socket, carried in the message) to the moment a subscriber had read it.
    """

    conns: int  # connections asked for
    subscribed: int  # ... that subscribed (OK SUB back, or upgraded to /topic/<topic>)
    published: int  # messages the server accepted (OK) through its control socket
    expected: int  # published x subscribed
    delivered: int  # deliveries verified (in order, or late: see reordered)
    lost: int  # deliveries that never came (to subscribers that stayed open)
    duplicates: int  # deliveries of a message the subscriber already had
    reordered: int  # deliveries that came after a later message (no longer lost)
    seconds: float  # the first publish to the last delivery
    deliveries_per_s: float  # delivered / seconds
    p50_us: float  # delivery times, over every delivery (HdrHistogram, merged)
    p90_us: float
    p99_us: float
    p999_us: float
    max_us: float
    to_all_p50_us: float  # per message: publish to its arrival at the last subscriber
    to_all_p99_us: float
    to_all_max_us: float
    publish_s: float  # the first publish to the last OK
    connect_s: float  # until every connection was subscribed (or failed)
    errors: int  # connect failures, resets, stalls, closes, dead processes, publish failures
    mismatches: int  # bytes that are no delivery of this run, or a wrong publish time
    procs: int
    loadgen_cpu_s: float  # user+sys CPU of the load processes while they listened
    size: int  # bytes per published message
    pipeline: int  # messages in flight at most (published, not yet settled everywhere)
    protocol: str
    topic: str
    interrupted: bool = False
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready; the keys are the field names."""
        return dataclasses.asdict(self)

    @property
    def ok(self) -> bool:
        """Every message published, every delivery there exactly once, in order; no error."""
        return (
            not self.errors
            and not self.mismatches
            and not self.lost
            and not self.duplicates
            and not self.reordered
            and self.subscribed == self.conns
            and self.delivered == self.expected
            and not self.interrupted
        )


class LoadInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM turned into it) stopped a run; :attr:`result` holds what it got.

    A subclass of :class:`KeyboardInterrupt`, so a caller that does not look
    for it is interrupted as usual.
    """

    def __init__(self, result: LoadResult) -> None:
        super().__init__("load run interrupted")
        self.result = result


class BroadcastInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a broadcast run; :attr:`result` holds what it got."""

    def __init__(self, result: BroadcastResult) -> None:
        super().__init__("broadcast run interrupted")
        self.result = result
