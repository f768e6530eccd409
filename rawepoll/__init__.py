"""rawepoll: Linux epoll from pure ctypes.

Layers, lowest first (each module's docstring says what the kernel does and
what the layer promises):

* :mod:`rawepoll.unix` -- Go's ``golang.org/x/sys/unix`` epoll API, name for name;
* :class:`EventArray` -- Go's ``[]EpollEvent``, reusable, read without allocation;
* :class:`Epoll` -- a drop-in for :class:`select.epoll`, plus :meth:`Epoll.wait`;
* :class:`EpollSelector` -- a :mod:`selectors` selector that asyncio runs on;
* :func:`SetLimit` -- raise ``RLIMIT_NOFILE`` as the seed does;
* :func:`run`, :func:`install`, :func:`new_event_loop`, :class:`EventLoopPolicy`
  -- asyncio on :class:`EpollSelector`, in the manner of uvloop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rawepoll import unix
from rawepoll._version import __version__
from rawepoll.epoll import Epoll
from rawepoll.events import MAX_EVENTS, EventArray
from rawepoll.limits import SetLimit
from rawepoll.selector import EpollSelector
from rawepoll.unix import (
    EPOLL_CLOEXEC,
    EPOLLERR,
    EPOLLET,
    EPOLLEXCLUSIVE,
    EPOLLHUP,
    EPOLLIN,
    EPOLLMSG,
    EPOLLONESHOT,
    EPOLLOUT,
    EPOLLPRI,
    EPOLLRDBAND,
    EPOLLRDHUP,
    EPOLLRDNORM,
    EPOLLWAKEUP,
    EPOLLWRBAND,
    EPOLLWRNORM,
)

if TYPE_CHECKING:
    from rawepoll._asyncio import EventLoopPolicy, install, new_event_loop, run

__all__ = [
    "EPOLLERR",
    "EPOLLET",
    "EPOLLEXCLUSIVE",
    "EPOLLHUP",
    "EPOLLIN",
    "EPOLLMSG",
    "EPOLLONESHOT",
    "EPOLLOUT",
    "EPOLLPRI",
    "EPOLLRDBAND",
    "EPOLLRDHUP",
    "EPOLLRDNORM",
    "EPOLLWAKEUP",
    "EPOLLWRBAND",
    "EPOLLWRNORM",
    "EPOLL_CLOEXEC",
    "MAX_EVENTS",
    "Epoll",
    "EpollSelector",
    "EventArray",
    "EventLoopPolicy",
    "SetLimit",
    "__version__",
    "install",
    "new_event_loop",
    "run",
    "unix",
]

# Importing asyncio costs ~30 ms and ~5 MB per process, which the binding and the
# server's workers never need: the asyncio names are loaded on first use.
_ASYNCIO_NAMES = frozenset({"EventLoopPolicy", "install", "new_event_loop", "run"})


def __getattr__(name: str) -> object:
    if name in _ASYNCIO_NAMES:
        from rawepoll import _asyncio  # noqa: PLC0415 -- deferred on purpose

        value: object = getattr(_asyncio, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
