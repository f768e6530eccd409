"""What the server tells the world: JSON events for programs, one line each for people.

Programs that start ``rawepoll serve`` should not parse prose.  With
``--status-fd N`` (or :func:`rawepoll.server.serve`'s ``on_event``) the server
writes one JSON object per line to descriptor ``N``, each naming its
``"event"``:

``ready``
    once, when the listener is bound and every signal handler is in place
    (a SIGTERM sent the moment it is read drains, never kills):
    ``address`` (``127.0.0.1:8080``, ``[::1]:8080`` or ``unix:/path``),
    ``family`` (``inet``, ``inet6``, ``unix``), ``host``, ``port``, ``path``,
    ``pid`` (the process to signal), ``workers`` (their pids; ``[pid]`` for
    one in-process worker), ``mode``, ``balance``, ``version``.
``status``
    every ``--stats-interval`` seconds: ``counters`` (the :data:`FIELDS` of
    :mod:`rawepoll.server.stats` summed over the workers) and ``per_worker_open``.
``restart``
    a worker died and was replaced: ``slot``, ``pid``, ``new_pid``, ``reason``.
``exit``
    once, last: ``counters``, ``restarted``, ``clean`` (every worker left
    through a graceful drain) and ``status`` (the exit status).

The descriptor is written without blocking: a reader that stops reading
loses ``status`` events (counted in the next one as ``dropped``), never
stalls the server.  ``ready`` and ``exit`` wait up to :data:`MUST_WRITE_S`
for room.  Forked workers close their copy; only the supervisor writes.

The human lines (``rawepoll serve: listening on ...``, ``... exit k=v ...``)
are printed to stdout as before, unless ``quiet``.
"""

from __future__ import annotations

import json
import os
import select
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from rawepoll._version import __version__
from rawepoll.server.stats import format_line

__all__ = ["Event", "Ready", "Reporter"]

MUST_WRITE_S: Final = 5.0  # how long `ready` and `exit` may wait for a full pipe

Event = dict[str, Any]
"""One JSON object of the status stream (``event`` names its kind)."""


@dataclass(frozen=True)
class Ready:
    """Where the server listens and who serves: the ``ready`` event."""

    address: str
    family: str
    host: str | None
    port: int | None
    path: str | None
    pid: int
    workers: tuple[int, ...]
    mode: str
    balance: str
    version: str = __version__

    def as_event(self) -> Event:
        return {"event": "ready", **asdict(self), "workers": list(self.workers)}


@dataclass
class Reporter:
    """Sends each event to the status descriptor, the ``on_event`` callback and people.

    Args:
        quiet: no human lines on stdout.
        status_fd: the descriptor of ``--status-fd``, or None.
        on_ready: called with the :class:`Ready` event, in the serving process.
        on_event: called with every event as a dict, in the serving process.
    """

    quiet: bool = False
    status_fd: int | None = None
    on_ready: Callable[[Ready], None] | None = None
    on_event: Callable[[Event], None] | None = None
    dropped: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.status_fd is not None:
            os.set_blocking(self.status_fd, False)

    def ready(self, ready: Ready) -> None:
        if not self.quiet:
            plural = "worker" if len(ready.workers) == 1 else "workers"
            print(
                f"rawepoll serve: listening on {ready.address} "
                f"(mode {ready.mode}, {len(ready.workers)} {plural}, pid {ready.pid})",
                flush=True,
            )
        if self.on_ready is not None:
            self.on_ready(ready)
        self._emit(ready.as_event(), must=True)

    def status(self, counts: dict[str, int], per_worker_open: list[int] | None = None) -> None:
        extra: dict[str, object] = {}
        if per_worker_open is not None:
            extra = {"workers": len(per_worker_open), "per_worker_open": _spread(per_worker_open)}
        if not self.quiet:
            print(format_line("status", counts, **extra), flush=True)
        event: Event = {"event": "status", "counters": counts}
        if per_worker_open is not None:
            event["per_worker_open"] = per_worker_open
        if self.dropped:
            event["dropped"] = self.dropped
        self._emit(event, must=False)

    def restart(self, slot: int, pid: int, new_pid: int, reason: str) -> None:
        self._emit(
            {"event": "restart", "slot": slot, "pid": pid, "new_pid": new_pid, "reason": reason},
            must=False,
        )

    def exit(self, counts: dict[str, int], *, restarted: int, clean: bool) -> None:
        if not self.quiet:
            print(format_line("exit", counts, restarted=restarted), flush=True)
        status = 0 if clean else 1
        self._emit(
            {
                "event": "exit",
                "counters": counts,
                "restarted": restarted,
                "clean": clean,
                "status": status,
            },
            must=True,
        )

    def forget_descriptor(self) -> None:
        """In a forked worker: close this process's copy of the status descriptor."""
        if self.status_fd is not None:
            try:
                os.close(self.status_fd)
            except OSError:
                pass
            self.status_fd = None
        self.on_event = None

    def _emit(self, event: Event, *, must: bool) -> None:
        if self.on_event is not None:
            self.on_event(event)
        if self.status_fd is None:
            return
        data = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        if not _write_all(self.status_fd, data, MUST_WRITE_S if must else 0.0):
            self.dropped += 1


def _write_all(fd: int, data: bytes, patience: float) -> bool:
    """Write ``data`` whole, waiting at most ``patience`` s for room; False if it did not fit.

    A line is written in one ``write`` when it fits the pipe (lines are far
    below ``PIPE_BUF``, so they never interleave); a reader gone away (EPIPE)
    or a closed descriptor drops the line.
    """
    view = memoryview(data)
    while view:
        try:
            sent = os.write(fd, view)
        except BlockingIOError:
            if patience <= 0 or not select.select([], [fd], [], patience)[1]:
                return False
            continue
        except OSError:
            return False
        view = view[sent:]
    return True


def _spread(per_worker_open: list[int]) -> str:
    """Open connections per worker slot, e.g. ``512,498,530,507`` (the balance)."""
    return ",".join(str(n) for n in per_worker_open)
