"""rawepoll: Linux epoll from pure ctypes.

Layers, lowest first (each module's docstring says what the kernel does and
what the layer promises):

* :mod:`rawepoll.unix` -- Go's ``golang.org/x/sys/unix`` epoll API, name for name;
* :class:`EventArray` -- Go's ``[]EpollEvent``, reusable, read without allocation;
* :class:`Epoll` -- a drop-in for :class:`select.epoll`, plus :meth:`Epoll.wait`;
* :class:`EpollSelector` -- a :mod:`selectors` selector that asyncio runs on;
* :func:`SetLimit` -- raise ``RLIMIT_NOFILE`` as the seed does.
"""

from __future__ import annotations

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
    "SetLimit",
    "__version__",
    "unix",
]
