"""asyncio on rawepoll: ``run()``, ``install()``, ``new_event_loop()``, ``EventLoopPolicy``.

asyncio's Unix event loop, :class:`asyncio.SelectorEventLoop`, takes its
selector as an argument; everything here hands it a
:class:`rawepoll.EpollSelector`, so that every ``epoll_create1``,
``epoll_ctl`` and ``epoll_wait`` the loop makes goes through rawepoll's ctypes
binding instead of the :mod:`select` module.  The loop itself -- transports,
protocols, streams, timers, signal handling, subprocesses -- is the
standard library's, unchanged.

Two ways in, as uvloop offers them:

* :func:`run` -- ``asyncio.run(main)`` on a rawepoll loop, nothing global
  changed.  The way for new code, and the only one once asyncio drops event
  loop policies (deprecated in Python 3.14, to go in 3.16).
* :func:`install` -- make :class:`EventLoopPolicy` asyncio's policy, so
  that a program's unchanged ``asyncio.run()``, ``asyncio.new_event_loop()``
  and main-thread ``get_event_loop()`` all create rawepoll loops.

EINTR policy: the selector's.  A signal that interrupts ``epoll_wait`` is
retried by :class:`rawepoll.Epoll` with the remaining timeout (PEP 475), so
the loop never sees ``InterruptedError``; asyncio's own signal handlers run
through its wake-up descriptor as on the stdlib selector.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Coroutine
from typing import Any, TypeVar

from rawepoll.selector import EpollSelector

__all__ = ["EventLoopPolicy", "install", "new_event_loop", "run"]

_T = TypeVar("_T")

if sys.version_info >= (3, 14):
    # The public name warns from 3.14 on; child watchers are gone, so the base does.
    _PolicyBase = asyncio.events._BaseDefaultEventLoopPolicy
else:
    # The Unix policy: through 3.13 SelectorEventLoop asks it for the child watcher.
    _PolicyBase = asyncio.DefaultEventLoopPolicy


def new_event_loop() -> asyncio.SelectorEventLoop:
    """A new :class:`asyncio.SelectorEventLoop` on a new :class:`rawepoll.EpollSelector`.

    The loop owns the selector: ``loop.close()`` closes the epoll descriptor.
    """
    return asyncio.SelectorEventLoop(EpollSelector())


class EventLoopPolicy(_PolicyBase):
    """asyncio's default Unix policy, except that new loops run on rawepoll.

    ``asyncio.set_event_loop_policy(rawepoll.EventLoopPolicy())`` (or
    :func:`install`) makes ``asyncio.run()``, ``asyncio.new_event_loop()``
    and the main thread's implicit loop rawepoll loops (see
    :func:`new_event_loop`); per-thread loops and, through Python 3.13, the
    child watcher behave as under the default policy.
    """

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """A new loop on :class:`rawepoll.EpollSelector`."""
        return new_event_loop()


def install() -> None:
    """Set :class:`EventLoopPolicy` as asyncio's event loop policy (process-wide).

    After it, unchanged asyncio code -- ``asyncio.run(main())`` included --
    runs on rawepoll.  Loops created before the call are left alone.

    Python 3.14 deprecated event loop policies, so there this warns
    (``DeprecationWarning``) and points to :func:`run`, which needs no
    global state.
    """
    if sys.version_info >= (3, 14):
        warnings.warn(
            "rawepoll.install() relies on asyncio event loop policies, deprecated since "
            "Python 3.14; use rawepoll.run(main()) instead",
            DeprecationWarning,
            stacklevel=2,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # said once, above
            asyncio.set_event_loop_policy(EventLoopPolicy())
        return
    asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None) -> _T:
    """Run coroutine ``main`` to completion on a new rawepoll loop; return its result.

    :func:`asyncio.run` with :func:`new_event_loop` as the loop factory, and
    nothing global changed: a new loop, ``main`` run on it, then leftover
    tasks cancelled, async generators and the default executor shut down and
    the loop (with its epoll descriptor) closed.  ``debug`` as in
    :func:`asyncio.run`.

    Raises:
        RuntimeError: called from a running event loop.
        ValueError: ``main`` is not a coroutine.
    """
    _check_can_run(main)
    if sys.version_info >= (3, 11):
        # Refused above, not by the Runner: its __enter__ makes a loop first.
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    return _run_without_runner(main, debug)


def _check_can_run(main: object) -> None:
    if asyncio.events._get_running_loop() is not None:
        raise RuntimeError("rawepoll.run() cannot be called from a running event loop")
    if not asyncio.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")


def _run_without_runner(main: Coroutine[Any, Any, _T], debug: bool | None) -> _T:
    """:func:`run` where there is no ``asyncio.Runner`` (3.10): 3.10's ``asyncio.run``."""
    _check_can_run(main)
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what ``main`` left running and let it finish, reporting stray errors."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during rawepoll.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
