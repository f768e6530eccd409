"""``EpollSelector``: :class:`selectors.EpollSelector` on rawepoll.

The promise: behave like the stdlib's ``selectors.EpollSelector`` in every
respect -- file objects and raw fds, ``KeyError``/``ValueError`` exactly where
it raises them, EPOLLERR and EPOLLHUP reported as both read and write
readiness (so the owner finds out on its next ``recv``/``send``), the key rolled
back when the system call fails, ``OSError`` ignored on unregister of an fd that
was closed meanwhile, ``RuntimeError`` from ``get_key`` after ``close``.  It is
enough for asyncio: ``asyncio.SelectorEventLoop(rawepoll.EpollSelector())``.

The bookkeeping (the fd -> ``SelectorKey`` map, file-object lookup, the
read-only mapping view) is inherited from the stdlib's own poll-like selector
base, so it cannot drift from the original; only the kernel side is ours:
:class:`rawepoll.Epoll` for the interest list and a reusable
:class:`rawepoll.EventArray` for the waits (one per thread selecting at once,
as ``select.epoll`` gives each poll its own buffer), grown (doubling) as more
fds are registered, so ``select()`` allocates only the list it returns.

EINTR policy: as the stdlib, ``select()`` returns an empty list if the wait is
interrupted and not retried by :class:`rawepoll.Epoll` (PEP 475 retries it).

The seed's Go ``Epoll`` wrapper maps onto it directly:

==============================  ===============================================
seed (Go)                       rawepoll
==============================  ===============================================
``MkEpoll()``                   ``sel = EpollSelector()``
``Add(conn)``                   ``sel.register(conn, EVENT_READ)``
``Remove(conn)``                ``sel.unregister(conn)``
``Wait(msec) -> []net.Conn``    ``[key.fileobj for key, _ in sel.select(msec / 1000)]``
``socketFD(conn)`` (reflect)    ``conn.fileno()`` -- no reflection needed
==============================  ===============================================
"""

from __future__ import annotations

import math
import selectors
from typing import Final

from rawepoll.epoll import Epoll
from rawepoll.events import EventArray
from rawepoll.unix import EPOLLIN, EPOLLOUT

__all__ = ["EpollSelector"]

_READ: Final = selectors.EVENT_READ
_WRITE: Final = selectors.EVENT_WRITE
_NOT_IN: Final = ~EPOLLIN
_NOT_OUT: Final = ~EPOLLOUT
_FIRST_CAPACITY: Final = 64


class EpollSelector(selectors._PollLikeSelector):  # the stdlib's poll/epoll base
    """A :class:`selectors.BaseSelector` on :class:`rawepoll.Epoll`."""

    _selector_cls = Epoll
    _EVENT_READ = EPOLLIN
    _EVENT_WRITE = EPOLLOUT
    _selector: Epoll  # set by the base class from _selector_cls
    _fd_to_key: dict[int, selectors.SelectorKey]  # the base class's map

    def __init__(self) -> None:
        super().__init__()
        # Buffers not in use: each select() pops one (atomic), so threads
        # selecting at once never read each other's kernel output.
        self._spare = [EventArray(_FIRST_CAPACITY)]

    def fileno(self) -> int:
        """The epoll descriptor (asyncio does not need it; users sometimes do)."""
        fd: int = self._selector.fileno()
        return fd

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """Wait until some registered file objects are ready, or the timeout passes.

        Same contract as :meth:`selectors.BaseSelector.select`: ``None`` blocks,
        ``<= 0`` polls, else wait at least ``timeout`` seconds (rounded up to
        whole milliseconds).  Returns ``(key, events)`` pairs.
        """
        if timeout is None:
            timeout = -1
        elif timeout <= 0:
            timeout = 0
        else:
            # epoll_wait has millisecond resolution: round up, wait at least timeout.
            timeout = math.ceil(timeout * 1e3) * 1e-3
        fd_to_key = self._fd_to_key
        spare = self._spare
        try:
            events = spare.pop()
        except IndexError:
            events = EventArray(_FIRST_CAPACITY)
        if len(events) < len(fd_to_key):
            events = EventArray(_grown(len(events), len(fd_to_key)))
        ready: list[tuple[selectors.SelectorKey, int]] = []
        try:
            n = self._selector.wait(events, timeout)
        except InterruptedError:
            return ready
        for fd, mask in events.ready(n):
            key = fd_to_key.get(fd)
            if key:
                got = (_WRITE if mask & _NOT_IN else 0) | (_READ if mask & _NOT_OUT else 0)
                ready.append((key, got & key.events))
        spare.append(events)
        return ready

    def close(self) -> None:
        """Close the epoll descriptor and forget every registration."""
        self._selector.close()
        super().close()


def _grown(capacity: int, needed: int) -> int:
    while capacity < needed:
        capacity *= 2
    return capacity
