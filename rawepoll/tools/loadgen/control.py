"""What the parent and a load process say to each other: one frozen dataclass per kind.

The parent says :class:`Go` or :class:`Stop`.  A load process says
:class:`Progress` now and then, :class:`Ready` once its connections are up,
:class:`Round` after a round that keeps the connections, :class:`Done` last,
or :class:`Failed` if it breaks.  In a broadcast run a load process also says
:class:`Settled` whenever more of the published messages have reached (or
are known lost to) every one of its subscribers, and its report carries a
:class:`Fanout`.

On the wire each message is one JSON line, ``{"kind": "go", ...fields}``:
:func:`encode` and :func:`decode` are the only code that knows it, and
:class:`~rawepoll.tools.loadgen.channel.Channel` the only code that calls them.
A process sends a few messages per run, so JSON costs nothing that matters.
Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import types
import typing
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

__all__ = [
    "Counts",
    "Done",
    "Failed",
    "Fanout",
    "Go",
    "Message",
    "Progress",
    "Ready",
    "Report",
    "Round",
    "Settled",
    "Stop",
    "decode",
    "encode",
]


@dataclass(frozen=True)
class Counts:
    """A load process's counters, as it last reported them."""

    connected: int = 0
    established: int = 0  # connected and message 0 echoed and verified
    errors: int = 0
    mismatches: int = 0
    messages: int = 0  # verified echoes in the measured traffic

    def __add__(self, other: Counts) -> Counts:
        return Counts(*map(operator.add, dataclasses.astuple(self), dataclasses.astuple(other)))


@dataclass(frozen=True)
class Fanout:
    """What a load process of a broadcast run saw of the published messages.

    ``counts.messages`` of its report are the deliveries verified, its
    histogram their delivery times (publish to arrival).
    """

    lost: int  # deliveries skipped (a later message came first) and not come since
    duplicates: int  # deliveries of a message the connection already had
    reordered: int  # deliveries that came after a later message
    behind: int  # over the open subscribers: messages after the last one each got
    subscribers: int  # ... how many those are
    first_ns: int  # the first delivery's arrival (time.monotonic_ns); 0: none
    last_ns: int  # the last delivery's arrival
    latest: tuple[int, ...]  # per message: the last arrival among its subscribers (0: none)


@dataclass(frozen=True)
class Report:
    """What a load process measured in a round of traffic."""

    counts: Counts
    seconds: float  # go to the last echo
    cpu_s: float  # user + sys CPU of the process over those seconds
    problems: tuple[str, ...]  # the first few errors, as sentences
    histogram: str  # the round trips, an encoded HdrHistogram
    fanout: Fanout | None = None  # a broadcast run's figures


# -- parent -> load process


@dataclass(frozen=True)
class Go:
    """Start the measured traffic."""

    seconds: float | None = None  # this round's length; None: the plan's duration
    more: bool = False  # keep the connections for another round afterwards
    interval: float = 0.0  # seconds between an echo and the next message; 0: at once


@dataclass(frozen=True)
class Stop:
    """Stop now: report what was measured, drop what is in flight."""


# -- load process -> parent


@dataclass(frozen=True)
class Progress:
    """The counters so far (at most twice a second)."""

    counts: Counts


@dataclass(frozen=True)
class Ready:
    """Every connection of the process is established, or has failed."""

    counts: Counts
    ramp_s: float  # seconds it took


@dataclass(frozen=True)
class Settled:
    """The first ``count`` published messages have reached every subscriber of the process
    (or are known lost, or their subscriber failed)."""

    count: int


@dataclass(frozen=True)
class Round:
    """A round is over; the connections are held for the next :class:`Go`."""

    report: Report


@dataclass(frozen=True)
class Done:
    """The last report: the process closes its connections and exits."""

    report: Report


@dataclass(frozen=True)
class Failed:
    """The process broke; it exits."""

    error: str


Message: TypeAlias = Go | Stop | Progress | Ready | Settled | Round | Done | Failed

_KINDS: Final[dict[str, type[Message]]] = {
    "go": Go,
    "stop": Stop,
    "progress": Progress,
    "ready": Ready,
    "settled": Settled,
    "round": Round,
    "done": Done,
    "failed": Failed,
}
_KIND_OF: Final = {cls: kind for kind, cls in _KINDS.items()}


def encode(message: Message) -> bytes:
    """One JSON line, without its newline."""
    fields = dataclasses.asdict(message)
    return json.dumps({"kind": _KIND_OF[type(message)], **fields}, separators=(",", ":")).encode()


def decode(line: bytes | bytearray) -> Message:
    """The message of one JSON line.

    Raises:
        ValueError: not JSON, or not a message of a known kind with its fields.
    """
    data = json.loads(line)
    try:
        cls = _KINDS[data.pop("kind")]
        message: Message = _build(cls, data)
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"control channel: not a message: {line[:200]!r}") from None
    return message


def _build(cls: type[Any], data: dict[str, Any]) -> Any:
    """``cls`` from JSON values: nested dataclasses rebuilt, lists made tuples."""
    hints = typing.get_type_hints(cls)
    return cls(**{name: _value(hints[name], value) for name, value in data.items()})


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value)
    kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
    if len(kinds) == 1 and typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _value(kinds[0], value)  # X | None
    if typing.get_origin(hint) is tuple:
        return tuple(value)
    return value
