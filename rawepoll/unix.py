"""The ``golang.org/x/sys/unix`` epoll API, name for name, on ctypes.

A reader of Go netpoll code (or of the seed's ``unix.EpollCreate1`` /
``unix.EpollCtl`` / ``unix.EpollWait`` echo server) finds every name here with
the same spelling, the same argument order and the same meaning.  Only the
error convention is Python's: where Go returns ``err``, this module raises
``OSError`` built from errno, so the stdlib subclass comes for free
(``FileExistsError`` for EEXIST, ``FileNotFoundError`` for ENOENT, ...).

EINTR policy of this layer: **none**.  As Go's ``unix.EpollWait`` hands
``EINTR`` back, ``EpollWait``/``EpollPwait``/``EpollPwait2`` raise
``InterruptedError`` after running the pending Python signal handlers (a
handler that raises wins).  Retrying is the caller's business; the Pythonic
layers (:class:`rawepoll.Epoll`, :class:`rawepoll.EpollSelector`) retry.

What the kernel does, in brief (``epoll(7)``):

* ``epoll_create1`` makes an *interest list* and a *ready list* behind one fd.
* ``epoll_ctl(ADD|MOD|DEL)`` edits the interest list.  An entry is keyed by the
  pair (fd number, open file description): after ``dup()`` + ``close()`` of
  the registered number, the entry lives on (the description is still open)
  and keeps reporting under the old number, which ``EPOLL_CTL_DEL`` can no
  longer name.  Close the last duplicate, or DEL before closing.
* ``epoll_wait`` copies at most ``maxevents`` ready entries out.  Each carries
  the 64-bit ``data`` word that was given at ADD/MOD, untouched: usually the
  fd (``Fd``), but any token will do (``EpollEvent.Data``).
* ``struct epoll_event`` is packed (12 bytes) on x86-64; everywhere else the
  64-bit ``data`` union is 8-aligned (16 bytes).  See ``_LAYOUTS``.

Buffers: the number of events asked of the kernel is always the length of the
buffer passed in (as Go takes it from the slice), never a separate argument,
so no call can make the kernel write past Python memory.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import operator
import os
import platform
import resource
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Union

from rawepoll import _ffi

if TYPE_CHECKING:
    from rawepoll.events import EventArray

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
    "EPOLL_CTL_ADD",
    "EPOLL_CTL_DEL",
    "EPOLL_CTL_MOD",
    "RLIMIT_NOFILE",
    "RLIM_INFINITY",
    "EpollCreate",
    "EpollCreate1",
    "EpollCtl",
    "EpollEvent",
    "EpollPwait",
    "EpollPwait2",
    "EpollWait",
    "Getrlimit",
    "NsecToTimespec",
    "Rlimit",
    "Setrlimit",
    "Timespec",
]

# --------------------------------------------------------------------------
# Constants: <linux/eventpoll.h>, <asm-generic/poll.h>, <linux/fcntl.h>.
# Identical on every Linux architecture except EPOLL_CLOEXEC (= O_CLOEXEC).
# All are non-negative Python ints; EPOLLET is 0x80000000, not Go's old
# negative syscall.EPOLLET.

EPOLLIN: Final = 0x1
EPOLLPRI: Final = 0x2
EPOLLOUT: Final = 0x4
EPOLLERR: Final = 0x8
EPOLLHUP: Final = 0x10
EPOLLRDNORM: Final = 0x40
EPOLLRDBAND: Final = 0x80
EPOLLWRNORM: Final = 0x100
EPOLLWRBAND: Final = 0x200
EPOLLMSG: Final = 0x400
EPOLLRDHUP: Final = 0x2000
EPOLLEXCLUSIVE: Final = 1 << 28
EPOLLWAKEUP: Final = 1 << 29
EPOLLONESHOT: Final = 1 << 30
EPOLLET: Final = 1 << 31

EPOLL_CTL_ADD: Final = 1
EPOLL_CTL_DEL: Final = 2
EPOLL_CTL_MOD: Final = 3

_MACHINE: Final = platform.machine().lower()
# EPOLL_CLOEXEC is O_CLOEXEC, which three architecture families number differently.
_CLOEXEC_BY_FAMILY: Final = {"sparc": 0x400000, "alpha": 0x200000, "parisc": 0x200000}
EPOLL_CLOEXEC: Final = next(
    (value for family, value in _CLOEXEC_BY_FAMILY.items() if _MACHINE.startswith(family)),
    0x80000,
)

RLIMIT_NOFILE: Final = resource.RLIMIT_NOFILE
RLIM_INFINITY: Final = (1 << 64) - 1  # Go: ^uint64(0)

_INT_MIN: Final = _ffi.INT_MIN
_INT_MAX: Final = _ffi.INT_MAX

# --------------------------------------------------------------------------
# struct epoll_event, per architecture.
#
# C:   struct epoll_event { uint32_t events; epoll_data_t data; } EPOLL_PACKED;
#      typedef union { void *ptr; int fd; uint32_t u32; uint64_t u64; } epoll_data_t;
# The kernel (and glibc) add __attribute__((packed)) on x86-64 only; i386
# packs the same way naturally, since it aligns uint64_t to 4.  Elsewhere the
# union sits at offset 8.  Go names the words after Events:
#
#   layout   size  data@  Go fields after Events       archs
#   packed    12     4    Fd, Pad                      amd64, 386 (and x32)
#   aligned   16     8    PadFd, Fd, Pad  (PadFd="_")  arm64, arm, riscv64, ppc64(le),
#                                                      s390x, mips*, loong64, sparc64
#
# Fd is the union's `int fd` member, so it sits at the union's start on both
# byte orders; Data is its `uint64_t u64` member (on big-endian machines Fd
# overlaps Data's high half, as in C).
_PACKED_MACHINES: Final = frozenset({"x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"})
_LAYOUTS: Final = {
    # name: (sizeof, offsetof(data), _pack_, fields before data)
    "packed": (12, 4, 1, ()),
    "aligned": (16, 8, 0, (("PadFd", ctypes.c_int32),)),
}
LAYOUT: Final = "packed" if _MACHINE in _PACKED_MACHINES else "aligned"
_SIZE, _DATA_OFFSET, _PACK, _PRE_DATA = _LAYOUTS[LAYOUT]


class _FdPad(ctypes.Structure):
    _fields_ = [("Fd", ctypes.c_int32), ("Pad", ctypes.c_int32)]


class _EpollData(ctypes.Union):
    _anonymous_ = ("_fdpad",)
    _fields_ = [("_fdpad", _FdPad), ("Data", ctypes.c_uint64)]


_event_fields: list[tuple[str, Any]] = [("Events", ctypes.c_uint32)]
_event_fields += list(_PRE_DATA)
_event_fields.append(("_data", _EpollData))


class EpollEvent(ctypes.Structure):
    """Go's ``unix.EpollEvent``: one ``struct epoll_event``, laid out for this CPU.

    Fields: ``Events`` (uint32 mask), ``Fd`` (int32, the union's ``fd``),
    ``Pad`` (int32, the union's upper half on little-endian), ``PadFd`` (only
    on 16-byte layouts, the alignment gap), and ``Data`` -- the whole 64-bit
    ``data`` word, for tokens that are not file descriptors.  ``Fd``/``Pad``
    and ``Data`` overlap, as in the C union.

    >>> EpollEvent(Events=EPOLLIN, Fd=5).Data & 0xFFFFFFFF
    5
    """

    if _PACK:
        _pack_ = _PACK
        _layout_ = "ms"  # Python 3.14 asks _pack_ users to name the layout; same bytes here
    _anonymous_ = ("_data",)
    _fields_ = _event_fields

    if TYPE_CHECKING:
        Events: int
        Fd: int
        Pad: int
        Data: int

        def __init__(
            self, Events: int = 0, *, Fd: int = 0, Pad: int = 0, Data: int = 0
        ) -> None: ...

    def __repr__(self) -> str:
        return f"EpollEvent(Events={self.Events:#x}, Fd={self.Fd}, Data={self.Data:#x})"


assert ctypes.sizeof(EpollEvent) == _SIZE, "epoll_event layout table is wrong"
assert EpollEvent._data.offset == _DATA_OFFSET, "epoll_event layout table is wrong"

EVENT_SIZE: Final = _SIZE
DATA_OFFSET: Final = _DATA_OFFSET

# --------------------------------------------------------------------------
# Other structs Go's API takes.


class Rlimit(ctypes.Structure):
    """Go's ``unix.Rlimit``: ``Cur`` (soft) and ``Max`` (hard), uint64."""

    _fields_ = [("Cur", ctypes.c_uint64), ("Max", ctypes.c_uint64)]

    if TYPE_CHECKING:
        Cur: int
        Max: int

        def __init__(self, Cur: int = 0, Max: int = 0) -> None: ...


class Timespec(ctypes.Structure):
    """Go's ``unix.Timespec``: ``Sec`` and ``Nsec`` (C ``struct timespec``)."""

    _fields_ = [("Sec", ctypes.c_long), ("Nsec", ctypes.c_long)]

    if TYPE_CHECKING:
        Sec: int
        Nsec: int

        def __init__(self, Sec: int = 0, Nsec: int = 0) -> None: ...


def NsecToTimespec(nsec: int) -> Timespec:
    """Go's ``unix.NsecToTimespec``: nanoseconds to a :class:`Timespec`."""
    nsec = operator.index(nsec)
    sec, ns = divmod(nsec, 1_000_000_000)
    return Timespec(Sec=sec, Nsec=ns)


# glibc's sigset_t is 1024 bits; the kernel reads the first _NSIG bits.
_SIGSET_WORDS: Final = 1024 // (8 * ctypes.sizeof(ctypes.c_ulong))
_SigsetT = ctypes.c_ulong * _SIGSET_WORDS
_NSIG: Final = 65
_MAX_SIGNUMS: Final = 1024  # repeats are harmless, but a sigmask is not a stream

# --------------------------------------------------------------------------
# The calls.

_EventBuffer = Union["EventArray", "ctypes.Array[EpollEvent]"]


_cint = _ffi.c_int


def _buffer(events: Any) -> tuple[Any, int]:
    """What C gets for ``events`` and how many entries it may fill (Go's slice).

    An :class:`~rawepoll.EventArray` passes itself (ctypes takes its
    ``_as_parameter_``) with its ``maxevents``; a ctypes array of
    :class:`EpollEvent` passes itself with its length.  Nothing else: the
    count must describe the very memory the kernel writes.
    """
    if type(events) is _events.EventArray:
        return events, events.maxevents
    if isinstance(events, ctypes.Array) and events._type_ is EpollEvent:
        return events, len(events)
    if isinstance(events, _events.EventArray):
        return events, events.maxevents
    raise TypeError(
        "events must be a rawepoll.EventArray or a ctypes array of EpollEvent, "
        f"not {type(events).__name__}"
    )


def _sigset(sigmask: Iterable[int] | None) -> Any:
    if sigmask is None:
        return None
    # A ctypes pointer "iterates" forever through memory it does not own.
    if isinstance(sigmask, (str, bytes, ctypes._Pointer)):
        raise TypeError("sigmask must be an iterable of signal numbers or None")
    try:
        # Bounded: an endless iterator must not hang the call.
        signums = list(itertools.islice(sigmask, _MAX_SIGNUMS + 1))
    except TypeError:
        raise TypeError("sigmask must be an iterable of signal numbers or None") from None
    if len(signums) > _MAX_SIGNUMS:
        raise ValueError(f"sigmask lists more than {_MAX_SIGNUMS} signal numbers")
    bits = _SigsetT()
    width = 8 * ctypes.sizeof(ctypes.c_ulong)
    for signum in signums:
        num = _cint(signum, "signal number")
        if not 1 <= num < _NSIG:
            raise ValueError(f"signal number {num} out of range 1-{_NSIG - 1}")
        word, bit = divmod(num - 1, width)
        bits[word] |= 1 << bit
    return ctypes.byref(bits)


_result = _ffi.check


def EpollCreate(size: int) -> int:
    """``epoll_create(2)`` as Go has it: EINVAL for ``size <= 0``.

    Go ignores the size hint beyond that check and calls ``epoll_create1(0)``;
    so does this.  The descriptor is *not* close-on-exec (use
    ``EpollCreate1(EPOLL_CLOEXEC)`` for that).

    Raises:
        OSError: EINVAL for ``size <= 0``; EMFILE/ENFILE/ENOMEM from the kernel.
    """
    if _cint(size, "size") <= 0:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    return EpollCreate1(0)


def EpollCreate1(flag: int) -> int:
    """``epoll_create1(2)``: a new epoll descriptor.

    Args:
        flag: 0 or ``EPOLL_CLOEXEC``; anything else is EINVAL from the kernel.

    Returns:
        The new descriptor; the caller owns it (``os.close`` it).
    """
    fd: int = _ffi.epoll_create1(_cint(flag, "flag"))
    return _result(fd)


def EpollCtl(epfd: int, op: int, fd: int, event: EpollEvent | None) -> None:
    """``epoll_ctl(2)``: add, modify or delete ``fd`` in ``epfd``'s interest list.

    Args:
        epfd: the epoll descriptor.
        op: ``EPOLL_CTL_ADD``, ``EPOLL_CTL_MOD`` or ``EPOLL_CTL_DEL``.
        fd: the target descriptor.
        event: the mask and data word; ``None`` is allowed (and usual) for DEL.
            The kernel copies it during the call; it may be reused at once.

    Raises:
        TypeError: ``event`` is neither an :class:`EpollEvent` nor ``None``.
        OSError: from errno -- ``FileExistsError`` (ADD of a registered fd),
            ``FileNotFoundError`` (MOD/DEL of an unknown one), ``PermissionError``
            (a target without poll support, e.g. a regular file), EINVAL
            (``EPOLLEXCLUSIVE`` with MOD, ``fd == epfd``), EBADF, ELOOP, ...
    """
    epfd = _cint(epfd, "epfd")
    op = _cint(op, "op")
    fd = _cint(fd, "fd")
    if event is None:
        pointer = None
    elif isinstance(event, EpollEvent):
        pointer = ctypes.byref(event)
    else:
        raise TypeError(f"event must be an EpollEvent or None, not {type(event).__name__}")
    _result(_ffi.epoll_ctl(epfd, op, fd, pointer))


def EpollWait(epfd: int, events: _EventBuffer, msec: int) -> int:
    """``epoll_wait(2)``: wait up to ``msec`` ms (-1: forever) for ready entries.

    Args:
        epfd: the epoll descriptor.
        events: an :class:`rawepoll.EventArray` or a ctypes array of
            :class:`EpollEvent` (Go's ``[]EpollEvent``); the kernel is asked for
            at most ``len(events)`` entries.
        msec: timeout in milliseconds; -1 blocks, 0 returns at once.

    Returns:
        How many entries at the start of ``events`` were filled in.

    Raises:
        InterruptedError: a signal arrived (EINTR); not retried, as in Go.
        OSError: EBADF, EINVAL (not an epoll fd, or an empty buffer), ...
    """
    array, length = _buffer(events)
    # Checks inlined for plain ints: this is a server loop's hottest call.
    if type(epfd) is not int or not _INT_MIN <= epfd <= _INT_MAX:
        epfd = _cint(epfd, "epfd")
    if type(msec) is not int or not _INT_MIN <= msec <= _INT_MAX:
        msec = _cint(msec, "msec")
    wait = _ffi.epoll_wait_nosleep if msec == 0 else _ffi.epoll_wait
    n: int = wait(epfd, array, length, msec)
    if n < 0:
        _result(n)
    return n


def EpollPwait(epfd: int, events: _EventBuffer, msec: int, sigmask: Iterable[int] | None) -> int:
    """``epoll_pwait(2)``: :func:`EpollWait` with ``sigmask`` blocked meanwhile.

    Args:
        sigmask: the signal numbers to block *during* the wait (the thread's
            mask is replaced for the duration, then restored), or ``None`` to
            leave the mask alone (then this is ``EpollWait``).

    Raises:
        ValueError: a signal number outside 1..64.
        InterruptedError, OSError: as :func:`EpollWait`.
    """
    array, length = _buffer(events)
    epfd = _cint(epfd, "epfd")
    msec = _cint(msec, "msec")
    mask = _sigset(sigmask)
    n: int = _ffi.epoll_pwait(epfd, array, length, msec, mask)
    return _result(n)


def EpollPwait2(
    epfd: int,
    events: _EventBuffer,
    timeout: Timespec | int | None,
    sigmask: Iterable[int] | None,
) -> int:
    """``epoll_pwait2(2)``: :func:`EpollPwait` with a nanosecond timeout.

    Args:
        timeout: a :class:`Timespec`, an int of nanoseconds, or ``None`` to block.

    Raises:
        OSError: ENOSYS where libc (glibc < 2.35) or the kernel (< 5.11) lacks
            ``epoll_pwait2``; EINVAL for a negative or malformed timeout.
        InterruptedError, ValueError: as :func:`EpollPwait`.
    """
    array, length = _buffer(events)
    epfd = _cint(epfd, "epfd")
    if timeout is None:
        spec = None
    elif isinstance(timeout, Timespec):
        spec = ctypes.byref(timeout)
    elif isinstance(timeout, int):
        if timeout < 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        holder = NsecToTimespec(timeout)
        if holder.Sec * 1_000_000_000 + holder.Nsec != timeout:
            raise OverflowError(f"timeout {timeout} ns does not fit in a timespec")
        spec = ctypes.byref(holder)
    else:
        raise TypeError(
            f"timeout must be a Timespec, an int of nanoseconds or None, "
            f"not {type(timeout).__name__}"
        )
    mask = _sigset(sigmask)
    pwait2 = _ffi.epoll_pwait2
    if pwait2 is None:
        raise OSError(errno.ENOSYS, "epoll_pwait2 is not provided by this C library")
    n: int = pwait2(epfd, array, length, spec, mask)
    return _result(n)


def Getrlimit(resource_: int, rlim: Rlimit) -> None:
    """``getrlimit(2)`` into ``rlim``, as Go's ``unix.Getrlimit(resource, &rlim)``.

    ``RLIM_INFINITY`` reads as ``2**64 - 1``, as in Go.
    """
    if not isinstance(rlim, Rlimit):
        raise TypeError(f"rlim must be an Rlimit, not {type(rlim).__name__}")
    soft, hard = resource.getrlimit(_cint(resource_, "resource"))
    rlim.Cur = RLIM_INFINITY if soft == resource.RLIM_INFINITY else soft
    rlim.Max = RLIM_INFINITY if hard == resource.RLIM_INFINITY else hard


def Setrlimit(resource_: int, rlim: Rlimit) -> None:
    """``setrlimit(2)`` from ``rlim``, as Go's ``unix.Setrlimit(resource, &rlim)``.

    Raises:
        PermissionError: raising the hard limit without CAP_SYS_RESOURCE.
        ValueError: soft above hard (EINVAL, as the stdlib reports it).
    """
    if not isinstance(rlim, Rlimit):
        raise TypeError(f"rlim must be an Rlimit, not {type(rlim).__name__}")

    def _py(value: int) -> int:
        return resource.RLIM_INFINITY if value == RLIM_INFINITY else value

    # prlimit, not setrlimit: the stdlib's setrlimit reports EPERM as ValueError.
    resource.prlimit(0, _cint(resource_, "resource"), (_py(rlim.Cur), _py(rlim.Max)))


# EventArray's module imports this one; by the time a call runs, both exist.
from rawepoll import events as _events  # noqa: E402
