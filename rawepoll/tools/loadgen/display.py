"""Progress while a run goes on: plain lines, or rich's bars on a terminal.

The parent hands a :class:`Snapshot` (the sum of what its load processes last
reported) to a monitor a few times a second; each monitor decides what to show
and how often.  rich is an optional extra, imported only by :class:`RichMonitor`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from rawepoll.tools.loadgen.latency import EXTRA_HINT

__all__ = ["Monitor", "RichMonitor", "Snapshot", "TextMonitor"]


@dataclass
class Snapshot:
    """The run so far, summed over load processes."""

    phase: str  # "ramp" (connecting) or "run" (the measured traffic and its drain)
    now: float  # monotonic seconds
    elapsed: float  # seconds since "go" (0 during the ramp)
    conns: int
    connected: int
    established: int
    errors: int
    mismatches: int
    messages: int
    duration: float | None
    target: int | None  # the message count asked for


class Monitor(Protocol):
    """Shows a run's progress."""

    def update(self, snapshot: Snapshot) -> None: ...

    def close(self) -> None: ...


class TextMonitor:
    """One plain line per ``interval`` seconds at most, handed to ``write``."""

    def __init__(self, write: Callable[[str], None], interval: float = 1.0) -> None:
        self.write = write
        self.interval = interval
        self._shown = -float("inf")
        self._last: tuple[float, int] | None = None  # (elapsed, messages) at the last line

    def update(self, snapshot: Snapshot) -> None:
        if snapshot.now - self._shown < self.interval:
            return
        self._shown = snapshot.now
        s = snapshot
        if s.phase == "ramp":
            self.write(
                f"rawepoll bench: connecting {s.established}/{s.conns} established"
                f" ({s.connected} connected, {s.errors} errors)"
            )
            return
        since, before = self._last if self._last is not None else (0.0, 0)
        rate = (s.messages - before) / (s.elapsed - since) if s.elapsed > since else 0.0
        self._last = (s.elapsed, s.messages)
        self.write(
            f"rawepoll bench: {s.elapsed:.1f} s {s.messages} messages, {rate:,.0f} msg/s now,"
            f" {s.errors} errors, {s.mismatches} mismatches"
        )

    def close(self) -> None:
        pass


class RichMonitor:
    """A bar while connections ramp up, then a bar for the run with a live line."""

    def __init__(self, console: Any = None) -> None:
        try:
            from rich import progress as bars  # noqa: PLC0415 -- optional extra
        except ImportError:
            raise ImportError(f"the progress display needs rich: {EXTRA_HINT}") from None
        self._progress = bars.Progress(
            bars.TextColumn("{task.description}"),
            bars.BarColumn(),
            bars.MofNCompleteColumn(),
            bars.TimeElapsedColumn(),
            bars.TextColumn("{task.fields[status]}"),
            console=console,
            transient=False,
        )
        self._ramp: Any = None
        self._run: Any = None
        self._last: tuple[float, int] | None = None
        self._rate = 0.0
        self._started = False

    def update(self, snapshot: Snapshot) -> None:
        s = snapshot
        progress = self._progress
        if not self._started:
            progress.start()  # its refresh thread starts only now, after the forks
            self._started = True
            self._ramp = progress.add_task("connect", total=s.conns, status="")
        progress.update(
            self._ramp,
            completed=s.established,
            status=f"{s.connected} connected, {s.errors} errors",
        )
        if s.phase == "ramp":
            return
        if self._run is None:
            total = s.duration if s.target is None else s.target
            self._run = progress.add_task("run", total=total, status="")
        if self._last is None:
            self._last = (s.elapsed, s.messages)
        elif s.elapsed - self._last[0] >= 0.5:
            self._rate = (s.messages - self._last[1]) / (s.elapsed - self._last[0])
            self._last = (s.elapsed, s.messages)
        done = s.messages if s.target is not None else min(s.elapsed, s.duration or 0.0)
        progress.update(
            self._run,
            completed=done,
            status=f"{s.messages:,} msgs  {self._rate:,.0f} msg/s  "
            f"errors {s.errors}  mismatches {s.mismatches}",
        )

    def close(self) -> None:
        if self._started:
            self._progress.stop()
