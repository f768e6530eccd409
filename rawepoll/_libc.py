"""libc, loaded once: the C functions rawepoll calls and the one errno helper.

Every ctypes declaration of the package lives in the table below, so it can be
checked against ``<sys/epoll.h>`` and ``<sys/resource.h>`` in a minute.

Each function comes in two flavours.  ``function(name)`` is loaded through a
``CDLL``: ctypes releases the GIL around the call, so a thread blocked in
``epoll_wait`` lets other threads run, register descriptors and close them
(the seed's accept-loop pattern).  ``function(name, blocking=False)`` comes
through a ``PyDLL``, which keeps the GIL: about 40 ns cheaper per call, and
used only for calls that cannot block -- ``epoll_ctl`` and ``epoll_wait`` with
a zero timeout.  Both capture errno right after the call (``use_errno``), so a
signal handler that runs before the caller looks cannot overwrite it.

``argtypes`` is deliberately left unset. Every caller in this package checks
its integers (range and type) before the call and passes pointers as ctypes
objects or ``bytes``, so ctypes' own per-argument ``from_param`` conversion
would only add cost on the hot path. ``restype`` is ``c_int`` for all of them.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from typing import Any, Final

__all__ = ["LIBC", "check_signals", "errno_error", "function", "has", "last_errno"]


def _candidates() -> Iterator[str | None]:
    # None means "the C library this interpreter already links against";
    # find_library is a fallback for interpreters built in odd ways, imported
    # only then: ctypes.util brings subprocess, tempfile and random along, and
    # every forked server worker would carry them (random even reseeds at fork).
    yield None
    yield "libc.so.6"
    from ctypes.util import find_library  # noqa: PLC0415

    yield find_library("c")


def _load() -> ctypes.CDLL:
    for name in _candidates():
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
        if hasattr(lib, "epoll_create1"):
            return lib
    raise ImportError("rawepoll needs a C library with epoll_create1 (Linux)")


LIBC: Final = _load()
_LIBC_HELD: Final = ctypes.PyDLL(LIBC._name, use_errno=True)

# name -> why rawepoll needs it.  All return int; -1 and errno on failure.
_FUNCTIONS: Final = {
    "epoll_create": "int epoll_create(int size)",
    "epoll_create1": "int epoll_create1(int flags)",
    "epoll_ctl": "int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)",
    "epoll_wait": "int epoll_wait(int epfd, struct epoll_event *evs, int maxevents, int timeout)",
    "epoll_pwait": (
        "int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, "
        "int timeout, const sigset_t *sigmask)"
    ),
    # For the server, which works on bare descriptors (rawepoll.server._sys).
    "accept4": "int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags)",
    "setsockopt": (
        "int setsockopt(int sockfd, int level, int optname, const void *optval, socklen_t optlen)"
    ),
    # For rawepoll c1m, which runs in a network namespace of its own.
    "unshare": "int unshare(int flags)",
    # glibc >= 2.35 and Linux >= 5.11; absent elsewhere (see has()).
    "epoll_pwait2": (
        "int epoll_pwait2(int epfd, struct epoll_event *events, int maxevents, "
        "const struct timespec *timeout, const sigset_t *sigmask)"
    ),
}

for _lib in (LIBC, _LIBC_HELD):
    for _name in _FUNCTIONS:
        _func = getattr(_lib, _name, None)
        if _func is not None:
            _func.restype = ctypes.c_int
            _func.argtypes = None


def has(name: str) -> bool:
    """Whether this libc exports ``name`` (one of the functions above)."""
    return hasattr(LIBC, name)


def function(name: str, *, blocking: bool = True) -> Any:
    """The C function ``name``, declared as in the table above.

    ``blocking=False`` gives the variant that keeps the GIL: only for calls
    that return without sleeping.
    """
    if name not in _FUNCTIONS:
        raise KeyError(name)
    return getattr(LIBC if blocking else _LIBC_HELD, name)


last_errno = ctypes.get_errno  # errno as the last ctypes call on this thread left it


def errno_error() -> OSError:
    """The ``OSError`` for the errno the last ctypes call left behind.

    ``OSError(errno, strerror)`` picks the stdlib subclass by itself
    (``FileExistsError`` for EEXIST, ``InterruptedError`` for EINTR, ...).
    """
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err))


# PyErr_CheckSignals runs pending Python signal handlers now, as the C code of
# select.epoll does after EINTR; pythonapi is a PyDLL, so an exception raised
# by a handler propagates out of this call.
_check_signals = ctypes.pythonapi.PyErr_CheckSignals
_check_signals.restype = ctypes.c_int
_check_signals.argtypes = []


def check_signals() -> None:
    """Run pending signal handlers (PEP 475), raising what they raise."""
    _check_signals()
