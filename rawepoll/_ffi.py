"""The one foreign-function seam: every C function rawepoll calls, declared here, once.

Nothing else in the package looks a C function up.  Each foreign function is
a named object of this module, declared in the table :data:`FUNCTIONS` with
three choices a reviewer can check against ``<sys/epoll.h>``,
``<sys/socket.h>`` and ``<sched.h>`` in a minute:

**Which handle: the GIL.**  A function loaded through a ``CDLL`` releases the
GIL around the call, so a thread blocked in ``epoll_wait`` lets other threads
run, register descriptors and close them (the seed's accept-loop pattern).  A
function loaded through a ``PyDLL`` keeps the GIL: about 40 ns cheaper per
call, and used only for calls that cannot sleep -- ``epoll_ctl``,
``epoll_wait`` with a zero timeout (:data:`epoll_wait_nosleep`), ``accept4``
on a non-blocking listener, ``setsockopt``, ``unshare``.  Both capture errno
right after the call (``use_errno``), so a signal handler that runs before
the caller looks cannot overwrite it.  One row does not:
:data:`epoll_wait_probe`, the zero-timeout wait of a busy server's every
turn, skips ctypes' errno swap (a thread-dict lookup and two copies, ~270 of
the call's ~4,000 user-space instructions under callgrind); its callers redo
a failed call through :data:`epoll_wait_nosleep` to learn why.

**Declared signature, or not: the hot path.**  ``argtypes`` makes ctypes run a
``from_param`` conversion per argument on every call.  The functions of the
hot path -- ``epoll_wait`` (both), ``epoll_ctl``, ``accept4``, ``setsockopt``,
which a server calls per event or per connection -- are left undeclared
(``argtypes = None``): measured here, a zero-timeout ``epoll_wait`` declared
with ``(c_int, c_void_p, c_int, c_int)`` costs 2.4x the undeclared call
(~1,000 ns against ~430 ns, median of 9 rounds).  Their callers pass only plain ints that they have
range-checked (:func:`c_int`), ``None``, ``bytes``, and ctypes objects
(buffers hand themselves over through ``_as_parameter_``, see
:class:`rawepoll.EventArray`), which ctypes converts exactly.  The rest are
declared with their C types.  ``restype`` is ``c_int`` for every one.

**Errors: errno, one way.**  A call returns -1 and leaves errno;
:func:`errno_error` turns that into ``OSError(errno, strerror)``, which picks
the stdlib subclass by itself (``FileExistsError`` for EEXIST,
``InterruptedError`` for EINTR, ...).  :func:`check` raises it, running the
pending Python signal handlers first when the call was interrupted (a
handler's own exception wins, as in ``select.epoll``).  Where an exception per
failure would cost the hot path, the caller reads :func:`last_errno` instead.
"""

from __future__ import annotations

import ctypes
import errno
import operator
import os
import socket
from collections.abc import Iterator
from typing import Any, Final, NamedTuple

__all__ = [
    "FUNCTIONS",
    "INT_MAX",
    "INT_MIN",
    "accept4",
    "c_int",
    "check",
    "check_signals",
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_nosleep",
    "epoll_wait_probe",
    "errno_error",
    "last_errno",
    "set_parent_death_signal",
    "set_tcp_nodelay",
    "unshare",
]

INT_MIN: Final = -(1 << 31)
INT_MAX: Final = (1 << 31) - 1


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


_RELEASES_GIL: Final = _load()
_KEEPS_GIL: Final = ctypes.PyDLL(_RELEASES_GIL._name, use_errno=True)
# For the one call whose failure the caller redoes through a function that
# captures errno (epoll_wait_probe): the errno swap is ~6 % of that call.
_KEEPS_GIL_NO_ERRNO: Final = ctypes.PyDLL(_RELEASES_GIL._name, use_errno=False)

_int = ctypes.c_int
_ptr = ctypes.c_void_p  # accepts ctypes arrays, byref(), None and _as_parameter_ holders


class Declaration(NamedTuple):
    """One row of the table: the C name, the GIL choice, the declared argument types."""

    c_name: str
    releases_gil: bool
    argtypes: tuple[Any, ...] | None  # None: undeclared on purpose (hot path)
    prototype: str
    errno: bool = True  # False: errno is not captured (epoll_wait_probe only)


# Python name -> declaration.  Hot-path rows have argtypes None (see above).
FUNCTIONS: Final = {
    "epoll_create1": Declaration("epoll_create1", False, (_int,), "int epoll_create1(int flags)"),
    "epoll_ctl": Declaration(
        "epoll_ctl", False, None, "int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)"
    ),
    "epoll_wait": Declaration(
        "epoll_wait",
        True,
        None,
        "int epoll_wait(int epfd, struct epoll_event *evs, int maxevents, int timeout)",
    ),
    "epoll_wait_nosleep": Declaration(  # timeout 0 only: it cannot sleep, so keep the GIL
        "epoll_wait",
        False,
        None,
        "int epoll_wait(int epfd, struct epoll_event *evs, int maxevents, 0)",
    ),
    # epoll_wait_nosleep without errno, for the busiest call (a server's
    # zero-timeout turn, Epoll.wait(events, 0)): on -1 the caller makes the
    # call again through a row that captures errno.  A zero-timeout epoll_wait
    # cannot be interrupted, so the second call fails the same way.
    "epoll_wait_probe": Declaration(
        "epoll_wait",
        False,
        None,
        "int epoll_wait(int epfd, struct epoll_event *evs, int maxevents, 0)",
        errno=False,
    ),
    "epoll_pwait": Declaration(
        "epoll_pwait",
        True,
        (_int, _ptr, _int, _int, _ptr),
        "int epoll_pwait(int epfd, struct epoll_event *evs, int maxevents, int timeout, "
        "const sigset_t *sigmask)",
    ),
    # glibc >= 2.35 and Linux >= 5.11; None where libc lacks it.
    "epoll_pwait2": Declaration(
        "epoll_pwait2",
        True,
        (_int, _ptr, _int, _ptr, _ptr),
        "int epoll_pwait2(int epfd, struct epoll_event *evs, int maxevents, "
        "const struct timespec *timeout, const sigset_t *sigmask)",
    ),
    # The server works on bare descriptors: an idle connection has no socket object.
    "accept4": Declaration(
        "accept4",
        False,
        None,
        "int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)",
    ),
    "setsockopt": Declaration(
        "setsockopt",
        False,
        None,
        "int setsockopt(int fd, int level, int name, const void *value, socklen_t len)",
    ),
    # rawepoll c1m runs in a network namespace of its own.
    "unshare": Declaration("unshare", False, (_int,), "int unshare(int flags)"),
    # A forked worker asks for a signal when its supervisor dies (PR_SET_PDEATHSIG).
    "prctl": Declaration(
        "prctl",
        False,
        (_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong),
        "int prctl(int option, unsigned long arg2, arg3, arg4, arg5)",
    ),
}


def _declare(declaration: Declaration) -> Any:
    if declaration.releases_gil:
        lib = _RELEASES_GIL
    else:
        lib = _KEEPS_GIL if declaration.errno else _KEEPS_GIL_NO_ERRNO
    # A fresh function object per row: two rows may name one C function with
    # different handles, and their settings must not overwrite each other.
    if not hasattr(lib, declaration.c_name):
        return None
    func = lib._FuncPtr((declaration.c_name, lib))
    func.restype = ctypes.c_int
    func.argtypes = declaration.argtypes  # type: ignore[assignment]  # None: undeclared
    return func


epoll_create1: Final = _declare(FUNCTIONS["epoll_create1"])
epoll_ctl: Final = _declare(FUNCTIONS["epoll_ctl"])
epoll_wait: Final = _declare(FUNCTIONS["epoll_wait"])
epoll_wait_nosleep: Final = _declare(FUNCTIONS["epoll_wait_nosleep"])
epoll_wait_probe: Final = _declare(FUNCTIONS["epoll_wait_probe"])
epoll_pwait: Final = _declare(FUNCTIONS["epoll_pwait"])
epoll_pwait2: Final = _declare(FUNCTIONS["epoll_pwait2"])  # None without libc support
_accept4: Final = _declare(FUNCTIONS["accept4"])
_setsockopt: Final = _declare(FUNCTIONS["setsockopt"])
_unshare: Final = _declare(FUNCTIONS["unshare"])
_prctl: Final = _declare(FUNCTIONS["prctl"])

# -- errno ---------------------------------------------------------------

last_errno: Final = ctypes.get_errno  # errno as the last ctypes call on this thread left it


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


def check(result: int) -> int:
    """``result``, or the errno of the failed call as an exception (EINTR included).

    After EINTR the pending signal handlers run first; an exception of theirs
    wins.  The exception is never bound to a local name: error -> traceback ->
    frame -> error would be a cycle that keeps the caller's buffers alive
    until the next garbage collection.
    """
    if result < 0:
        if ctypes.get_errno() == errno.EINTR:
            _check_signals()
        raise errno_error()
    return result


def c_int(value: Any, name: str) -> int:
    """``value`` as a C int, or ``TypeError``/``OverflowError`` naming the argument.

    What every undeclared call's integer arguments go through (ctypes would
    silently truncate a Python int that does not fit).
    """
    if type(value) is not int:
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None
    if not INT_MIN <= value <= INT_MAX:
        raise OverflowError(f"{name} {value} does not fit in a C int")
    return int(value)


# -- the server's socket calls, on bare descriptors -------------------------

_ACCEPT_FLAGS: Final = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_ONE: Final = ctypes.c_int(1)
_ONE_REF: Final = ctypes.byref(_ONE)
_INT_SIZE: Final = ctypes.sizeof(ctypes.c_int)


def accept4(listen_fd: int) -> int:
    """``accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)``: a descriptor, or ``-errno``.

    No exception on failure: a server drains its listener until EAGAIN, and
    the last accept of every burst fails.
    """
    fd: int = _accept4(listen_fd, None, None, _ACCEPT_FLAGS)
    return fd if fd >= 0 else -ctypes.get_errno()


def set_tcp_nodelay(fd: int) -> None:
    """``TCP_NODELAY`` on a TCP socket (errors ignored: the socket may be gone already)."""
    _setsockopt(fd, socket.IPPROTO_TCP, socket.TCP_NODELAY, _ONE_REF, _INT_SIZE)


def unshare(flags: int) -> None:
    """``unshare(2)``; ``OSError`` from errno (EPERM without CAP_SYS_ADMIN, EINVAL)."""
    if _unshare(c_int(flags, "flags")) < 0:
        raise errno_error()


_PR_SET_PDEATHSIG: Final = 1


def set_parent_death_signal(signum: int) -> None:
    """``prctl(PR_SET_PDEATHSIG, signum)``: this process gets ``signum`` when its parent dies.

    Raises:
        OSError: EINVAL for a bad signal number.
    """
    if _prctl(_PR_SET_PDEATHSIG, c_int(signum, "signum"), 0, 0, 0) < 0:
        raise errno_error()
