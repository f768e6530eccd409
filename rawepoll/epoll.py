"""``Epoll``: a drop-in replacement for :class:`select.epoll`, on ctypes.

The promise: every method of ``select.epoll`` -- the constructor, ``register``,
``modify``, ``unregister``, ``poll``, ``close``, ``closed``, ``fileno``,
``fromfd`` and the context manager -- with the same arguments, results and
exception types, to the letter:

* the descriptor is always created with ``EPOLL_CLOEXEC``; ``flags`` may be 0
  or ``EPOLL_CLOEXEC`` (else ``OSError("invalid flags")``), ``sizehint`` must
  be -1 or positive (else ``ValueError``) and is otherwise ignored, as by the
  kernel;
* ``fd`` arguments take an int or an object with ``fileno()``: ``ValueError``
  for a negative one, ``OverflowError`` beyond a C int, ``TypeError`` else;
* ``eventmask`` is taken modulo 2**32 (a negative mask is all ones);
* ``poll`` rounds a timeout in seconds *up* to whole milliseconds, blocks for
  ``None`` or any negative timeout, defaults ``maxevents`` to
  ``FD_SETSIZE - 1`` (1023) and refuses ``maxevents < 1`` other than -1;
* every operation on a closed object raises ``ValueError``;
* kernel errors are ``OSError`` with the stdlib's subclasses
  (``FileExistsError``, ``FileNotFoundError``, ``PermissionError``, ...).

EINTR policy: as PEP 475 asks and ``select.epoll.poll`` does, a signal during
:meth:`Epoll.poll` or :meth:`Epoll.wait` runs the Python handlers (their
exception propagates) and the wait is retried with the time left until a
deadline taken from the monotonic clock; when it has passed, the call returns
no events.

Beyond the stdlib, :meth:`Epoll.wait` fills a caller-owned
:class:`~rawepoll.EventArray` and returns a count, so a server loop allocates
nothing per wait: ``n = ep.wait(events); for fd, mask in events.ready(n): ...``

Threads: the GIL is released during every system call, so one thread may
register, modify and unregister while another is blocked in ``poll``/``wait``;
the kernel's interest list is the only shared state.
"""

from __future__ import annotations

import errno
import math
import operator
import os
import struct
import time
from types import TracebackType
from typing import Any, Final, NoReturn, Protocol, SupportsIndex

from rawepoll import _ffi
from rawepoll.events import MAX_EVENTS, EventArray
from rawepoll.unix import (
    DATA_OFFSET,
    EPOLL_CLOEXEC,
    EPOLL_CTL_ADD,
    EPOLL_CTL_DEL,
    EPOLL_CTL_MOD,
    EPOLLIN,
    EPOLLOUT,
    EPOLLPRI,
    EVENT_SIZE,
)

__all__ = ["Epoll"]


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


FileDescriptorLike = int | _HasFileno

FD_SETSIZE: Final = 1024
_DEFAULT_MASK: Final = EPOLLIN | EPOLLPRI | EPOLLOUT
_INT_MAX: Final = (1 << 31) - 1
_INT_MIN: Final = -(1 << 31)
_NS_LIMIT: Final = 1 << 63  # the range of CPython's _PyTime_t (int64 ns)
_FAST_SECONDS: Final = 2_000_000  # below this, seconds -> ms cannot overflow
_POOL_LIMIT: Final = 1 << 16  # poll() keeps a buffer up to this many entries

_epoll_create1 = _ffi.epoll_create1
_epoll_ctl = _ffi.epoll_ctl  # keeps the GIL: never sleeps
_epoll_wait = _ffi.epoll_wait  # releases the GIL: may sleep
_epoll_poll = _ffi.epoll_wait_nosleep  # timeout 0 only
_epoll_probe = _ffi.epoll_wait_probe  # timeout 0, no errno: a failure is redone by _wait
_errno_error = _ffi.errno_error
_monotonic_ns = time.monotonic_ns

# The event handed to epoll_ctl as immutable bytes: {events, data.fd = fd}
# with the rest of the data word zeroed.  The kernel only reads it.
_pack_event = struct.Struct(f"=I{DATA_OFFSET - 4}xi{EVENT_SIZE - DATA_OFFSET - 4}x").pack


def _closed() -> ValueError:
    return ValueError("I/O operation on closed epoll object")


def _as_fd(obj: Any) -> int:
    """``PyObject_AsFileDescriptor``: what ``select.epoll`` accepts as an fd."""
    if isinstance(obj, int):
        fd = obj
    else:
        try:
            method = obj.fileno
        except AttributeError:
            raise TypeError("argument must be an int, or have a fileno() method.") from None
        fd = method()
        if not isinstance(fd, int):
            raise TypeError("fileno() returned a non-integer")
    if not _INT_MIN <= fd <= _INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    if fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return int(fd)


def _as_cint(obj: Any) -> int:
    value = operator.index(obj)
    if not _INT_MIN <= value <= _INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    return value


def _timeout_ns(timeout: Any) -> int:
    """Seconds (int or float) to ns, rounded away from zero, as CPython does."""
    if isinstance(timeout, float):
        if math.isnan(timeout):
            raise ValueError("Invalid value NaN (not a number)")
        scaled = timeout * 1e9
        if not -_NS_LIMIT <= scaled < _NS_LIMIT:
            raise OverflowError("timestamp out of range for platform time_t")
        return math.ceil(scaled) if scaled >= 0 else math.floor(scaled)
    try:
        seconds = operator.index(timeout)
    except TypeError:
        raise TypeError("timeout must be an integer or None") from None
    ns = seconds * 1_000_000_000
    if not -_NS_LIMIT <= ns < _NS_LIMIT:
        raise OverflowError("timestamp too large to convert to C _PyTime_t")
    return ns


def _timeout_ms(timeout: Any) -> tuple[int, int]:
    """``(ms for epoll_wait, ns or -1)`` from a ``poll`` timeout in seconds.

    Milliseconds round up (wait at least ``timeout``); any negative result
    blocks (-1), as ``select.epoll.poll`` does.  The second item is the
    timeout in ns for the EINTR deadline, -1 when there is none.
    """
    if timeout is None:
        return -1, -1
    if type(timeout) is int and 0 <= timeout < _FAST_SECONDS:
        return timeout * 1000, timeout * 1_000_000_000
    ns = _timeout_ns(timeout)
    ms = -(-ns // 1_000_000)
    if not _INT_MIN <= ms <= _INT_MAX:
        raise OverflowError("timeout is too large")
    return (ms if ms >= 0 else -1), (ns if ns >= 0 else -1)


class Epoll:
    """``select.epoll`` on ctypes: ``Epoll(sizehint=-1, flags=0)``.

    ``epoll_create1(2)`` with ``EPOLL_CLOEXEC``.  See the module docstring for
    the contract; every method matches the stdlib's.
    """

    __slots__ = ("__weakref__", "_epfd", "_pool")

    _epfd: int
    _pool: list[EventArray]

    # Created in __new__, as select.epoll is: calling __init__ again is a no-op
    # (it must not swap in, and leak, a second descriptor).
    def __new__(cls, sizehint: int = -1, flags: int = 0) -> Epoll:
        sizehint = _as_cint(sizehint)
        flags = _as_cint(flags)
        if sizehint != -1 and sizehint <= 0:
            raise ValueError("negative sizehint")
        if flags and flags != EPOLL_CLOEXEC:
            raise OSError("invalid flags")
        return cls._wrap(-1)

    @classmethod
    def _wrap(cls, fd: int) -> Epoll:
        """A new object owning ``fd``, or a new epoll descriptor for -1."""
        self = object.__new__(cls)
        self._pool = []
        self._epfd = -1
        if fd == -1:
            fd = _epoll_create1(EPOLL_CLOEXEC)
            if fd < 0:
                raise _errno_error()
        self._epfd = fd
        return self

    @classmethod
    def fromfd(cls, fd: SupportsIndex, /) -> Epoll:
        """Wrap an existing epoll descriptor; the object owns (and closes) it.

        As in the stdlib, ``fromfd(-1)`` creates a new epoll object.
        """
        fd = _as_cint(fd)
        if fd < -1:  # the stdlib reports the "failed" create as OSError
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return cls._wrap(fd)

    # -- lifetime -------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._epfd < 0

    def close(self) -> None:
        """Close the epoll descriptor; later calls raise ``ValueError``."""
        fd, self._epfd = self._epfd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass  # select.epoll.close() does not report close() errors

    def fileno(self) -> int:
        """The epoll descriptor."""
        if self._epfd < 0:
            raise _closed()
        return self._epfd

    def __enter__(self) -> Epoll:
        if self._epfd < 0:
            raise _closed()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_epfd", -1) >= 0:
            self.close()

    def __reduce__(self) -> NoReturn:
        # A copy would own the same descriptor and close it twice.
        raise TypeError(f"cannot pickle {type(self).__qualname__!r} object")

    def __repr__(self) -> str:
        state = "closed" if self._epfd < 0 else f"fd={self._epfd}"
        return f"<rawepoll.Epoll {state}>"

    # -- interest list --------------------------------------------------
    # The three methods are written out in full: this is the hot path of
    # every server, and a shared helper would cost a Python call each time.

    def register(self, fd: FileDescriptorLike, eventmask: int = _DEFAULT_MASK) -> None:
        """``epoll_ctl(EPOLL_CTL_ADD)``: watch ``fd`` for ``eventmask``.

        Raises:
            FileExistsError: ``fd`` is already registered.
            PermissionError: ``fd`` does not support polling (a regular file).
            ValueError: closed, or a negative ``fd``.
        """
        if type(fd) is not int or not 0 <= fd <= _INT_MAX:
            fd = _as_fd(fd)
        if type(eventmask) is not int:
            eventmask = operator.index(eventmask)
        epfd = self._epfd
        if epfd < 0:
            raise _closed()
        if _epoll_ctl(epfd, EPOLL_CTL_ADD, fd, _pack_event(eventmask & 0xFFFFFFFF, fd)):
            raise _errno_error()

    def modify(self, fd: FileDescriptorLike, eventmask: int) -> None:
        """``epoll_ctl(EPOLL_CTL_MOD)``: change the mask of a registered ``fd``.

        Raises:
            FileNotFoundError: ``fd`` is not registered.
            OSError: EINVAL for ``EPOLLEXCLUSIVE`` (ADD only).
        """
        if type(fd) is not int or not 0 <= fd <= _INT_MAX:
            fd = _as_fd(fd)
        if type(eventmask) is not int:
            eventmask = operator.index(eventmask)
        epfd = self._epfd
        if epfd < 0:
            raise _closed()
        if _epoll_ctl(epfd, EPOLL_CTL_MOD, fd, _pack_event(eventmask & 0xFFFFFFFF, fd)):
            raise _errno_error()

    def unregister(self, fd: FileDescriptorLike) -> None:
        """``epoll_ctl(EPOLL_CTL_DEL)``: stop watching ``fd``.

        Raises:
            FileNotFoundError: ``fd`` is not registered.
            OSError: EBADF if ``fd`` is already closed.
        """
        if type(fd) is not int or not 0 <= fd <= _INT_MAX:
            fd = _as_fd(fd)
        epfd = self._epfd
        if epfd < 0:
            raise _closed()
        if _epoll_ctl(epfd, EPOLL_CTL_DEL, fd, None):  # NULL is fine since 2.6.9
            raise _errno_error()

    # -- waiting --------------------------------------------------------

    def _wait_into(self, array: Any, maxevents: int, ms: int, ns: int) -> int:
        """``epoll_wait`` into ``array`` (``maxevents <= len(array)``), PEP 475.

        ``ns`` is the timeout in ns (-1: none) that bounds EINTR retries.
        """
        if ms == 0:
            n: int = _epoll_poll(self._epfd, array, maxevents, 0)
            if n >= 0:
                return n
            deadline = _monotonic_ns()
        else:
            deadline = _monotonic_ns() + ns if ns >= 0 else -1
            n = _epoll_wait(self._epfd, array, maxevents, ms)
            if n >= 0:
                return n
        while True:
            if _ffi.last_errno() != errno.EINTR:
                raise _errno_error()  # unbound: no frame <-> exception cycle
            _ffi.check_signals()  # a handler's exception ends the wait here
            if deadline >= 0:
                left = deadline - _monotonic_ns()
                if left < 0:
                    return 0
                ms = -(-left // 1_000_000)
            # A handler that closed us leaves -1 here: EBADF, as in the stdlib.
            n = _epoll_wait(self._epfd, array, maxevents, ms)
            if n >= 0:
                return n

    def wait(self, events: EventArray, timeout: float | None = None) -> int:
        """``epoll_wait(2)`` into ``events``; the allocation-free :meth:`poll`.

        Args:
            events: a reusable :class:`~rawepoll.EventArray`; at most
                ``len(events)`` entries are asked of the kernel.
            timeout: seconds, exactly as :meth:`poll` takes it.

        Returns:
            ``n``, the number of ready entries; read them with ``events.ready(n)``.

        Raises:
            TypeError: ``events`` is not an ``EventArray``.
            ValueError: the object is closed.
        """
        # The busy server's call, first and checked by the kernel: a closed
        # object (-1) fails with EBADF and takes the general path below, which
        # calls again, capturing errno this time.
        if timeout == 0 and type(timeout) is int and type(events) is EventArray:
            n: int = _epoll_probe(self._epfd, events, events.maxevents, 0)
            if n >= 0:
                return n
        return self._wait(events, timeout)

    def _wait(self, events: EventArray, timeout: float | None) -> int:
        """:meth:`wait` for every case: checks, timeouts in seconds, EINTR."""
        if self._epfd < 0:
            raise _closed()
        if not isinstance(events, EventArray):
            raise TypeError(f"events must be an EventArray, not {type(events).__name__}")
        if timeout is None:
            ms = ns = -1
        else:
            ms, ns = _timeout_ms(timeout)
        return self._wait_into(events, events.maxevents, ms, ns)

    def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
        """``epoll_wait(2)``: a list of ``(fd, events)`` for the ready descriptors.

        Args:
            timeout: seconds (int or float), rounded up to milliseconds;
                ``None`` or negative blocks.
            maxevents: at most this many results; -1 means ``FD_SETSIZE - 1``.

        Raises:
            ValueError: closed, a NaN timeout, or ``maxevents`` < 1 (not -1).
            OverflowError: a timeout beyond ``INT_MAX`` milliseconds.
            TypeError: a timeout that is not a number.
        """
        if type(maxevents) is not int or maxevents != -1:
            # Checked first, as the stdlib's argument parsing does: its
            # TypeError/OverflowError win over "closed" and timeout errors.
            maxevents = _as_cint(maxevents)
        if self._epfd < 0:
            raise _closed()
        if timeout is None:
            ms = ns = -1
        else:
            ms, ns = _timeout_ms(timeout)
        if maxevents == -1:
            maxevents = FD_SETSIZE - 1
        elif maxevents < 1:
            raise ValueError(f"maxevents must be greater than 0, got {maxevents}")
        elif maxevents > MAX_EVENTS:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))  # as the kernel would
        pool = self._pool
        try:
            events = pool.pop()  # atomic: concurrent polls never share a buffer
        except IndexError:
            events = EventArray(max(maxevents, FD_SETSIZE - 1))
        if len(events) < maxevents:
            events = EventArray(maxevents)
        n = self._wait_into(events, maxevents, ms, ns)
        result = list(events.ready(n))
        if not pool and len(events) <= _POOL_LIMIT:
            pool.append(events)
        return result
