"""When user code fails: the handler checked at the door, its faults counted and logged.

A server holding a million connections on a few workers cannot let one bug,
reached by one hostile input, take a worker down: every call into user code
is isolated by the loop (:mod:`rawepoll.server.loop`), and what it raises --
or a return value that is neither bytes-like nor ``None`` -- costs that one
connection (or that one timer).  This module holds the two pieces the loop
needs for that:

* :func:`check_handler` -- what ``--handler`` names must be a handler class
  (``shared``, callable ``data_received`` and ``eof_received``); a shared one
  is built once, before anything listens, so a constructor that raises is
  refused at the door (:class:`HandlerError`, a ``TypeError``) and not on the
  first connection.
* :class:`FaultLog` -- the traceback of the first fault in full, then at most
  one line per :data:`LOG_EVERY_S` seconds with the count since: a client that
  triggers the same bug a million times cannot flood the log.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any, Final

from rawepoll.server.handler import Handler

__all__ = ["LOG_EVERY_S", "FaultLog", "HandlerError", "check_handler", "describe"]

LOG_EVERY_S: Final = 5.0


class HandlerError(TypeError):
    """The class given as a handler is not one (or its shared instance cannot be built)."""


def describe(handler: object) -> str:
    """``module:Class`` for a class, as ``--handler`` spells it."""
    module = getattr(handler, "__module__", None)
    name = getattr(handler, "__qualname__", None) or repr(handler)
    return f"{module}:{name}" if module else str(name)


def check_handler(handler: Any) -> Handler | None:
    """Check that ``handler`` is a handler class; build its shared instance, if it has one.

    Returns:
        The instance every connection shares (``shared = True``), or None
        (``shared = False``: one instance per connection, made by the loop).

    Raises:
        HandlerError: with one sentence saying what is wrong.
    """
    name = describe(handler)
    if not isinstance(handler, type):
        raise HandlerError(f"{name} is not a handler class: it is a {type(handler).__name__}")
    shared = getattr(handler, "shared", None)
    if not isinstance(shared, bool):
        raise HandlerError(
            f"{name} is not a handler class: it needs a class attribute 'shared' "
            f"(True or False), not {shared!r}"
        )
    for method in ("data_received", "eof_received"):
        if not callable(getattr(handler, method, None)):
            raise HandlerError(f"{name} is not a handler class: it has no callable {method}()")
    if not shared:
        return None
    try:
        instance: Handler = handler()
    except Exception as error:
        raise HandlerError(f"{name}() raised {error!r}: a shared handler must build") from error
    return instance


class FaultLog:
    """Counts faults of user code and logs them without letting a flood through."""

    def __init__(self, log: Callable[[str], None], *, every: float = LOG_EVERY_S) -> None:
        self.log = log
        self.every = every
        self.count = 0  # faults in all
        self._unlogged = 0  # faults since the last line
        self._next_line = 0.0
        self._last = ""

    def record(self, error: BaseException, where: str) -> None:
        """One fault: ``error`` raised (or was made) by user code ``where``."""
        self.count += 1
        self._unlogged += 1
        self._last = f"{where}: {error!r}"
        now = time.monotonic()
        if self.count == 1:
            text = "".join(traceback.format_exception(error)).rstrip()
            self.log(f"{where}: handler error, connection closed; the worker goes on\n{text}")
            self._unlogged = 0
            self._next_line = now + self.every
        elif now >= self._next_line:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """The line for the faults not yet logged, if any: at ``now`` only once the interval
        since the last line has passed; without ``now`` (on the way out) at once."""
        if not self._unlogged or (now is not None and now < self._next_line):
            return
        self.log(
            f"{self._unlogged} more handler error(s) since the last report, "
            f"{self.count} in all; the last {self._last}"
        )
        self._unlogged = 0
        self._next_line = (now if now is not None else time.monotonic()) + self.every
