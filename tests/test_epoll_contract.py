"""The ``select.epoll`` contract, run over ``select.epoll`` (the oracle) and ``rawepoll.Epoll``.

Two kinds of test.  Most are parametrised over ``epoll_cls`` and state the
expected behaviour outright, so both classes must pass them (which also proves
the expectation right).  Where exact exception types matter, ``assert_same``
runs one action on each class and requires the same value or *exactly* the
same exception type, the stdlib's being the answer.  What the kernel really
received is read back from ``/proc`` (``epoll_interest`` for the interest
list, ``epoll_wait_args`` for the arguments of a blocked ``epoll_wait``), never
inferred from timings.
"""

from __future__ import annotations

import copy
import ctypes
import errno
import fcntl
import math
import os
import pickle
import re
import resource
import select
import socket
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fds import epoll_interest, open_fds
from support.proc import epoll_wait_args, wait_until_in_epoll_wait

import rawepoll
from rawepoll import (
    EPOLL_CLOEXEC,
    EPOLLERR,
    EPOLLET,
    EPOLLEXCLUSIVE,
    EPOLLHUP,
    EPOLLIN,
    EPOLLONESHOT,
    EPOLLOUT,
    EPOLLPRI,
    MAX_EVENTS,
    EventArray,
)

pytestmark = pytest.mark.timeout(60)

DEFAULT_MASK = EPOLLIN | EPOLLPRI | EPOLLOUT
ALWAYS = EPOLLERR | EPOLLHUP  # the kernel adds these to every registration
INT_MAX = 2**31 - 1
INT_MIN = -(2**31)

Outcome = tuple[str, Any]


# -- the oracle -------------------------------------------------------------


def outcome(call: Callable[[], Any]) -> Outcome:
    """``("returned", value)`` or ``("raised", exception type)``."""
    try:
        return ("returned", call())
    except Exception as exc:
        return ("raised", type(exc))


def assert_same(action: Callable[[Any], Any]) -> Outcome:
    """Run ``action(cls)`` for ``select.epoll``, then ``rawepoll.Epoll``; demand equal outcomes.

    Returns the stdlib's outcome, so a caller can also pin it down.
    """
    expected = outcome(lambda: action(select.epoll))
    actual = outcome(lambda: action(rawepoll.Epoll))
    assert actual == expected, f"rawepoll: {actual}, select.epoll: {expected}"
    return expected


def on_fresh(action: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An oracle action running ``action(ep)`` on a new epoll object, closed afterwards."""

    def run(cls: Any) -> Any:
        ep = cls()
        try:
            return action(ep)
        finally:
            ep.close()

    return run


def on_closed(action: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An oracle action running ``action(ep)`` on a closed epoll object."""

    def run(cls: Any) -> Any:
        ep = cls()
        ep.close()
        return action(ep)

    return run


def created(cls: Any, *args: Any, **kwargs: Any) -> str:
    """Construct, check and close an epoll object (an oracle action's value)."""
    ep = cls(*args, **kwargs)
    try:
        assert not ep.closed
        return os.readlink(f"/proc/self/fd/{ep.fileno()}")
    finally:
        ep.close()


def interest(ep: Any) -> list[tuple[int, int, int]]:
    """The kernel's interest list of ``ep``: ``(fd, events, data.fd)`` per entry.

    Only the ``fd`` half of the data word is compared: ``select.epoll`` sets
    ``data.fd`` and leaves the other half of the union uninitialised.
    """
    return [(fd, events, data & 0xFFFFFFFF) for fd, events, data in epoll_interest(ep.fileno())]


def cloexec(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)


# -- objects that stand in for descriptors --------------------------------------


def show(value: object) -> str:
    """A test id: ``repr`` without memory addresses, so every xdist worker sees the same."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


class Fileno:
    """An object whose ``fileno()`` returns ``value`` (any object)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Fileno({self.value!r})"

    def fileno(self) -> Any:
        return self.value


class RaisingFileno:
    def fileno(self) -> int:
        raise RuntimeError("no descriptor")


class LookupRaises:
    """Looking up ``fileno`` itself fails with something other than AttributeError."""

    @property
    def fileno(self) -> Any:
        raise KeyError("fileno")


class Index:
    """Not an int, but usable as one (``__index__``)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Index({self.value})"

    def __index__(self) -> int:
        return self.value


class IntSubclass(int):
    pass


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture
def ep(epoll_cls: Any) -> Iterator[Any]:
    """An open epoll object of the class under test, closed afterwards."""
    obj = epoll_cls()
    try:
        yield obj
    finally:
        obj.close()


@pytest.fixture
def ready(sockpair: tuple[socket.socket, socket.socket]) -> socket.socket:
    """A socket with a byte waiting to be read (readable and writable)."""
    a, b = sockpair
    b.send(b"x")
    return a


@pytest.fixture
def closed_fd() -> int:
    """A descriptor number that is surely not open."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd = min(soft, 1 << 20) - 1
    try:
        os.fstat(fd)
    except OSError:
        return fd
    pytest.skip(f"descriptor {fd} happens to be open")


@pytest.fixture
def many_ready() -> Iterator[list[socket.socket]]:
    """Five readable sockets (each the first of a pair whose peer has written)."""
    pairs = [socket.socketpair() for _ in range(5)]
    try:
        for a, b in pairs:
            a.setblocking(False)
            b.send(b"x")
        yield [a for a, _ in pairs]
    finally:
        for a, b in pairs:
            a.close()
            b.close()


# -- constructor ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((-1,), {}),
        ((1,), {}),
        ((1024,), {}),
        ((INT_MAX,), {}),
        ((-1, 0), {}),
        ((-1, EPOLL_CLOEXEC), {}),
        ((5, EPOLL_CLOEXEC), {}),
        ((), {"sizehint": 3}),
        ((), {"flags": EPOLL_CLOEXEC}),
        ((), {"sizehint": -1, "flags": 0}),
        ((True,), {}),
        ((Index(7),), {}),
    ],
)
def test_constructor_accepts(epoll_cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``epoll(sizehint=-1, flags=0)``: -1 or a positive hint, flags 0 or EPOLL_CLOEXEC."""
    assert created(epoll_cls, *args, **kwargs) == "anon_inode:[eventpoll]"


CONSTRUCTOR_ERRORS: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception]]] = [
    ((0,), {}, ValueError),
    ((-2,), {}, ValueError),
    ((INT_MIN,), {}, ValueError),
    ((), {"sizehint": 0}, ValueError),
    ((-1, 1), {}, OSError),
    ((-1, EPOLL_CLOEXEC | 1), {}, OSError),
    ((-1, -1), {}, OSError),
    ((-1, select.EPOLLIN), {}, OSError),
    ((), {"flags": 2}, OSError),
    ((0, 1), {}, ValueError),  # sizehint is checked before flags
    ((1.0,), {}, TypeError),
    (("1",), {}, TypeError),
    ((None,), {}, TypeError),
    ((-1, 0.0), {}, TypeError),
    ((0, 1.5), {}, TypeError),  # both are parsed before either is checked
    ((-1, None), {}, TypeError),
    ((), {"size": 1}, TypeError),
    ((-1, 0, 0), {}, TypeError),
    ((2**31,), {}, OverflowError),
    ((INT_MIN - 1,), {}, OverflowError),
    ((-1, 2**32), {}, OverflowError),
    ((0, 2**40), {}, OverflowError),
]


@pytest.mark.parametrize(("args", "kwargs", "error"), CONSTRUCTOR_ERRORS)
def test_constructor_rejects(
    epoll_cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    """sizehint 0 or < -1: ValueError; other flags: OSError; non-int: TypeError; huge: Overflow."""
    with pytest.raises(error) as info:
        created(epoll_cls, *args, **kwargs)
    assert type(info.value) is error


@pytest.mark.parametrize(("args", "kwargs", "error"), CONSTRUCTOR_ERRORS)
def test_constructor_matches_stdlib(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    """The same constructor arguments fail with exactly the stdlib's exception type."""
    assert assert_same(lambda cls: created(cls, *args, **kwargs)) == ("raised", error)


@pytest.mark.parametrize("flags", [0, EPOLL_CLOEXEC])
def test_descriptor_is_always_cloexec(epoll_cls: Any, flags: int) -> None:
    """``select.epoll`` always uses EPOLL_CLOEXEC, whatever ``flags`` says."""
    with epoll_cls(flags=flags) as ep:
        assert cloexec(ep.fileno())


def test_fromfd_minus_one_is_a_new_cloexec_epoll(epoll_cls: Any) -> None:
    """``fromfd(-1)`` creates a fresh (close-on-exec, empty) epoll, as the stdlib does."""
    ep = epoll_cls.fromfd(-1)
    try:
        assert isinstance(ep, epoll_cls)
        assert not ep.closed
        assert cloexec(ep.fileno())
        assert interest(ep) == []
    finally:
        ep.close()


# -- fromfd -------------------------------------------------------------------------


def test_fromfd_wraps_and_owns_a_descriptor(
    epoll_cls: Any, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """``fromfd(fd)`` wraps an existing epoll fd (same interest list) and closes it on close()."""
    a, b = sockpair
    with epoll_cls() as original:
        original.register(a, EPOLLIN)
        fd = os.dup(original.fileno())
        twin = epoll_cls.fromfd(fd)
        try:
            assert twin.fileno() == fd
            b.send(b"x")
            assert twin.poll(0) == [(a.fileno(), EPOLLIN)]
            twin.unregister(a)  # one interest list behind both descriptors
            assert original.poll(0) == []
        finally:
            twin.close()
        assert twin.closed
        with pytest.raises(OSError) as info:
            os.fstat(fd)
        assert info.value.errno == errno.EBADF


@pytest.mark.parametrize("fd", [-2, INT_MIN])
def test_fromfd_other_negative_fails(epoll_cls: Any, fd: int) -> None:
    """``fromfd(fd < -1)`` fails with OSError (the stdlib's "epoll_create" failure path)."""
    with pytest.raises(OSError):
        epoll_cls.fromfd(fd)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda cls: cls.fromfd("3"), TypeError),
        (lambda cls: cls.fromfd(3.0), TypeError),
        (lambda cls: cls.fromfd(None), TypeError),
        (lambda cls: cls.fromfd(2**31), OverflowError),
        (lambda cls: cls.fromfd(INT_MIN - 1), OverflowError),
        (lambda cls: cls.fromfd(fd=3), TypeError),  # positional-only
        (lambda cls: cls.fromfd(), TypeError),
    ],
)
def test_fromfd_argument_errors_match_stdlib(
    call: Callable[[Any], Any], error: type[Exception]
) -> None:
    """``fromfd`` takes one positional C int; anything else fails as in the stdlib."""
    assert assert_same(call) == ("raised", error)


@pytest.mark.parametrize("args", [(), (5,), (0,), (-1, 1), ("x",)], ids=show)
def test_init_again_is_a_no_op(
    epoll_cls: Any, sockpair: tuple[socket.socket, ...], args: Any
) -> None:
    """The object is made by ``__new__``: ``__init__`` again changes nothing, opens nothing."""
    with epoll_cls() as ep:
        ep.register(sockpair[0], EPOLLIN)
        fd, before, fds = ep.fileno(), interest(ep), open_fds()
        ep.__init__(*args)
        assert (ep.fileno(), interest(ep), open_fds()) == (fd, before, fds)


def test_new_makes_an_open_object(epoll_cls: Any) -> None:
    """``epoll.__new__(epoll)`` alone yields a working object, as the stdlib's does."""
    ep = epoll_cls.__new__(epoll_cls)
    try:
        assert not ep.closed
        assert cloexec(ep.fileno())
        assert ep.poll(0) == []
    finally:
        ep.close()
    with pytest.raises(ValueError):
        epoll_cls.__new__(epoll_cls, 0)


@pytest.mark.parametrize(
    "duplicate", [copy.copy, copy.deepcopy, pickle.dumps], ids=["copy", "deepcopy", "pickle"]
)
def test_cannot_be_copied(epoll_cls: Any, duplicate: Callable[[Any], Any]) -> None:
    """Not picklable or copyable: a copy would own, and close, the same descriptor."""
    with epoll_cls() as ep:
        with pytest.raises(TypeError):
            duplicate(ep)
        assert not ep.closed


# -- register / modify / unregister --------------------------------------------------


def test_register_modify_unregister(
    ep: Any, sockpair: tuple[socket.socket, socket.socket], as_fileobj: Callable[[Any], Any]
) -> None:
    """The three epoll_ctl operations take a socket or its int fd; poll reports the fd number."""
    a, b = sockpair
    fa = a.fileno()
    ep.register(as_fileobj(a), EPOLLIN)
    assert interest(ep) == [(fa, EPOLLIN | ALWAYS, fa)]
    assert ep.poll(0) == []
    b.send(b"x")
    assert ep.poll(0) == [(fa, EPOLLIN)]
    ep.modify(as_fileobj(a), EPOLLOUT)
    assert ep.poll(0) == [(fa, EPOLLOUT)]
    ep.unregister(as_fileobj(a))
    assert ep.poll(0) == []
    assert interest(ep) == []


def test_default_mask(
    ep: Any, sockpair: tuple[socket.socket, socket.socket], as_fileobj: Callable[[Any], Any]
) -> None:
    """``register(fd)`` watches EPOLLIN | EPOLLPRI | EPOLLOUT, with the fd as the data word."""
    a, b = sockpair
    fa = a.fileno()
    ep.register(as_fileobj(a))
    assert interest(ep) == [(fa, DEFAULT_MASK | ALWAYS, fa)]
    b.send(b"x")
    assert ep.poll(0) == [(fa, EPOLLIN | EPOLLOUT)]


def test_keyword_arguments(ep: Any, sockpair: tuple[socket.socket, socket.socket]) -> None:
    """The stdlib's keyword names: ``fd``, ``eventmask``, ``timeout``, ``maxevents``."""
    a, b = sockpair
    fa, fb = a.fileno(), b.fileno()
    ep.register(fd=a, eventmask=EPOLLIN)
    ep.register(fd=b)
    assert interest(ep) == sorted([(fa, EPOLLIN | ALWAYS, fa), (fb, DEFAULT_MASK | ALWAYS, fb)])
    ep.modify(fd=a, eventmask=EPOLLOUT)
    assert sorted(ep.poll(timeout=0, maxevents=2)) == sorted([(fa, EPOLLOUT), (fb, EPOLLOUT)])
    assert len(ep.poll(timeout=0.0, maxevents=1)) == 1
    ep.unregister(fd=a)
    ep.unregister(fd=b)
    assert interest(ep) == []


def test_objects_with_fileno(ep: Any, sockpair: tuple[socket.socket, socket.socket]) -> None:
    """Any object with ``fileno()`` returning an int is a descriptor (PyObject_AsFileDescriptor)."""
    a, _ = sockpair
    fa = a.fileno()
    ep.register(Fileno(fa), EPOLLIN)
    ep.modify(Fileno(IntSubclass(fa)), EPOLLOUT)
    assert ep.poll(0) == [(fa, EPOLLOUT)]
    ep.unregister(Fileno(fa))
    ep.register(IntSubclass(fa), EPOLLIN)
    assert interest(ep) == [(fa, EPOLLIN | ALWAYS, fa)]


def test_double_register_is_file_exists(ep: Any, sockpair: tuple[socket.socket, ...]) -> None:
    """EEXIST from EPOLL_CTL_ADD is FileExistsError; the first registration stays."""
    a, _ = sockpair
    ep.register(a, EPOLLIN)
    with pytest.raises(FileExistsError) as info:
        ep.register(a, EPOLLOUT)
    assert type(info.value) is FileExistsError
    assert interest(ep) == [(a.fileno(), EPOLLIN | ALWAYS, a.fileno())]


@pytest.mark.parametrize("method", ["modify", "unregister"])
def test_unknown_fd_is_file_not_found(
    ep: Any, sockpair: tuple[socket.socket, ...], method: str
) -> None:
    """ENOENT from EPOLL_CTL_MOD/DEL of an open but unregistered fd is FileNotFoundError."""
    a, _ = sockpair
    args = (a, EPOLLIN) if method == "modify" else (a,)
    with pytest.raises(FileNotFoundError) as info:
        getattr(ep, method)(*args)
    assert type(info.value) is FileNotFoundError


@pytest.mark.parametrize("method", ["register", "modify", "unregister"])
def test_closed_fd_is_ebadf(ep: Any, closed_fd: int, method: str) -> None:
    """A descriptor that is not open: EBADF, a plain OSError."""
    args = (closed_fd,) if method == "unregister" else (closed_fd, EPOLLIN)
    with pytest.raises(OSError) as info:
        getattr(ep, method)(*args)
    assert type(info.value) is OSError
    assert info.value.errno == errno.EBADF


def test_regular_file_is_permission_error(ep: Any, tmp_path: Any) -> None:
    """EPERM: a regular file does not support epoll."""
    with open(tmp_path / "plain", "wb") as f:
        with pytest.raises(PermissionError) as info:
            ep.register(f)
        assert type(info.value) is PermissionError
        assert info.value.errno == errno.EPERM


def test_register_self_is_einval(ep: Any) -> None:
    """An epoll cannot watch itself: EINVAL."""
    with pytest.raises(OSError) as info:
        ep.register(ep.fileno())
    assert type(info.value) is OSError
    assert info.value.errno == errno.EINVAL


BAD_FDS: list[tuple[Any, type[Exception]]] = [
    (-1, ValueError),
    (INT_MIN, ValueError),
    (Fileno(-1), ValueError),
    (Fileno(INT_MIN), ValueError),
    (2**31, OverflowError),
    (2**40, OverflowError),
    (INT_MIN - 1, OverflowError),
    (Fileno(2**31), OverflowError),
    (Fileno(-(2**63)), OverflowError),
    ("3", TypeError),
    (3.0, TypeError),
    (None, TypeError),
    (b"3", TypeError),
    (object(), TypeError),
    (Index(3), TypeError),  # __index__ is not enough: an int or fileno()
    (Fileno("3"), TypeError),
    (Fileno(3.0), TypeError),
    (Fileno(None), TypeError),
    (Fileno(Index(3)), TypeError),
    (RaisingFileno(), RuntimeError),
    (LookupRaises(), KeyError),
]


@pytest.mark.parametrize("method", ["register", "modify", "unregister"])
@pytest.mark.parametrize(("fd", "error"), BAD_FDS, ids=show)
def test_bad_fd_arguments(ep: Any, method: str, fd: Any, error: type[Exception]) -> None:
    """Negative fd: ValueError; beyond a C int: OverflowError; not a descriptor: TypeError."""
    args = (fd,) if method == "unregister" else (fd, EPOLLIN)
    with pytest.raises(error) as info:
        getattr(ep, method)(*args)
    assert type(info.value) is error


@pytest.mark.parametrize("method", ["register", "modify", "unregister"])
@pytest.mark.parametrize("fd", [fd for fd, _ in BAD_FDS] + [True, IntSubclass(0)], ids=show)
def test_fd_arguments_match_stdlib(method: str, fd: Any) -> None:
    """Every fd argument, good or bad, has the stdlib's outcome (open and closed objects)."""
    args = (fd,) if method == "unregister" else (fd, EPOLLIN)
    assert_same(on_fresh(lambda ep: getattr(ep, method)(*args)))
    assert_same(on_closed(lambda ep: getattr(ep, method)(*args)))


@pytest.mark.parametrize(
    ("mask", "stored"),
    [
        (2**70, 0),  # taken modulo 2**32
        (2**32 | EPOLLIN, EPOLLIN),
        (2**64 + EPOLLOUT, EPOLLOUT),
        (0, 0),
        (True, EPOLLIN),
        (Index(EPOLLIN | EPOLLET), EPOLLIN | EPOLLET),
        (EPOLLIN | EPOLLONESHOT, EPOLLIN | EPOLLONESHOT),
        (-(2**32) + EPOLLIN, EPOLLIN),  # negative masks wrap as well
        (EPOLLIN | EPOLLEXCLUSIVE, EPOLLIN | EPOLLEXCLUSIVE),
    ],
    ids=show,
)
def test_eventmask_modulo_2_32(
    ep: Any, sockpair: tuple[socket.socket, ...], mask: Any, stored: int
) -> None:
    """``eventmask`` is an unsigned int taken bitwise (mod 2**32); the kernel adds ERR|HUP."""
    a, _ = sockpair
    fa = a.fileno()
    ep.register(a, mask)
    assert interest(ep) == [(fa, stored | ALWAYS, fa)]
    if not stored & EPOLLEXCLUSIVE:
        ep.modify(a, mask)
        assert interest(ep) == [(fa, stored | ALWAYS, fa)]


@pytest.mark.parametrize("method", ["register", "modify"])
def test_eventmask_minus_one_is_einval(
    ep: Any, sockpair: tuple[socket.socket, ...], method: str
) -> None:
    """-1 sets every bit, so EPOLLEXCLUSIVE with bits it cannot be mixed with: EINVAL."""
    a, _ = sockpair
    if method == "modify":
        ep.register(a, EPOLLIN)
    with pytest.raises(OSError) as info:
        getattr(ep, method)(a, -1)
    assert type(info.value) is OSError
    assert info.value.errno == errno.EINVAL


BAD_MASKS: list[tuple[Any, type[Exception]]] = [
    (1.0, TypeError),
    ("1", TypeError),
    (None, TypeError),
    (b"\x01", TypeError),
    (Decimal(1), TypeError),
]


@pytest.mark.parametrize("method", ["register", "modify"])
@pytest.mark.parametrize(("mask", "error"), BAD_MASKS, ids=show)
def test_eventmask_must_be_an_integer(
    ep: Any, sockpair: tuple[socket.socket, ...], method: str, mask: Any, error: type[Exception]
) -> None:
    """A mask that is not an integer (or ``__index__``) is a TypeError."""
    a, _ = sockpair
    with pytest.raises(error) as info:
        getattr(ep, method)(a, mask)
    assert type(info.value) is error


@pytest.mark.parametrize("method", ["register", "modify"])
@pytest.mark.parametrize(
    "mask",
    [m for m, _ in BAD_MASKS] + [-1, 2**70, -(2**70), 0, EPOLLIN | EPOLLEXCLUSIVE, Index(1)],
    ids=show,
)
def test_eventmask_matches_stdlib(
    sockpair: tuple[socket.socket, ...], method: str, mask: Any
) -> None:
    """Every mask has the stdlib's outcome and leaves the same interest list."""
    a, _ = sockpair

    def action(ep: Any) -> Any:
        if method == "modify":
            ep.register(a, EPOLLIN)
        result = outcome(lambda: getattr(ep, method)(a, mask))
        return result, interest(ep)

    assert_same(on_fresh(action))


def test_missing_arguments(epoll_cls: Any) -> None:
    """``modify`` needs a mask; every method needs its fd."""
    with epoll_cls() as ep:
        for call in (ep.register, ep.modify, ep.unregister):
            with pytest.raises(TypeError):
                call()
        with pytest.raises(TypeError):
            ep.modify(0)


# -- poll: results and timeouts -------------------------------------------------------


def test_poll_returns_list_of_int_pairs(ep: Any, ready: socket.socket) -> None:
    """``poll`` returns a list of ``(fd, events)`` tuples of ints."""
    ep.register(ready)
    result = ep.poll(0)
    assert type(result) is list
    assert result == [(ready.fileno(), EPOLLIN | EPOLLOUT)]
    (entry,) = result
    assert type(entry) is tuple
    assert all(type(item) is int for item in entry)


@pytest.mark.parametrize(
    "timeout",
    [None, -1, -1.5, -2147483, 0, 0.0, 1, 0.5, 1e-4, 2147483, 2147483.647, True, Index(2)],
    ids=show,
)
def test_poll_timeouts_accepted(ep: Any, ready: socket.socket, timeout: Any) -> None:
    """None or negative blocks, else seconds (int or float); a ready fd returns at once."""
    ep.register(ready, EPOLLIN)
    assert ep.poll(timeout) == [(ready.fileno(), EPOLLIN)]
    assert ep.poll(timeout=timeout) == [(ready.fileno(), EPOLLIN)]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("timeout", [0, 0.0, -0.0, 1e-4, 1e-9, 5e-324, 0.001, -1e-4], ids=show)
def test_poll_short_timeouts_return_empty(ep: Any, timeout: float) -> None:
    """Short timeouts return [] with nothing ready.

    1e-4 s is not 0: it rounds *up* to 1 ms (see ``test_poll_asks_kernel_for``).
    -1e-4 s rounds (up, towards +inf) to 0 ms, so it does not block, as in the stdlib.
    """
    assert ep.poll(timeout) == []


TIMEOUT_ERRORS: list[tuple[Any, type[Exception]]] = [
    (math.nan, ValueError),
    (-math.nan, ValueError),
    (math.inf, OverflowError),
    (-math.inf, OverflowError),
    (1e300, OverflowError),
    (-1e300, OverflowError),
    (1e10, OverflowError),  # 1e19 ns is beyond the 64-bit ns clock
    (2**40, OverflowError),
    (-(2**40), OverflowError),
    (2**63, OverflowError),
    (2**31, OverflowError),  # fits in ns, but not in int milliseconds
    (-(2**31), OverflowError),
    (2147483.648, OverflowError),
    ("1", TypeError),
    (b"1", TypeError),
    ([], TypeError),
    (1j, TypeError),
    (Decimal(1), TypeError),
    (Fraction(1, 2), TypeError),
    (object(), TypeError),
]


@pytest.mark.parametrize(("timeout", "error"), TIMEOUT_ERRORS, ids=show)
def test_poll_timeout_errors(ep: Any, timeout: Any, error: type[Exception]) -> None:
    """NaN: ValueError; beyond the clock or INT_MAX ms: OverflowError; not a number: TypeError."""
    with pytest.raises(error) as info:
        ep.poll(timeout)
    assert type(info.value) is error


@pytest.mark.parametrize(
    "timeout",
    [t for t, _ in TIMEOUT_ERRORS]
    + [None, -1, 0, 1e-4, -1e-4, 2147483.647, 2147483.6475, -2147483.648, -2147483.649],
    ids=show,
)
def test_poll_timeout_matches_stdlib(ready: socket.socket, timeout: Any) -> None:
    """Every timeout has the stdlib's outcome (a ready fd keeps valid ones from blocking)."""
    assert_same(on_fresh(lambda ep: (ep.register(ready), ep.poll(timeout))))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    timeout=st.one_of(
        st.none(),
        st.floats(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.integers(min_value=-(2**32), max_value=2**32),
        st.floats(min_value=-3e6, max_value=3e6),
        st.floats(min_value=-1.0, max_value=1.0),
    )
)
def test_poll_timeout_property(timeout: Any) -> None:
    """For any number, poll succeeds or fails exactly as ``select.epoll.poll`` does."""
    a, b = socket.socketpair()
    try:
        b.send(b"x")
        assert_same(on_fresh(lambda ep: (ep.register(a), ep.poll(timeout))))
    finally:
        a.close()
        b.close()


def _blocked_poll_args(
    ep: Any, sockpair: tuple[socket.socket, socket.socket], call: Callable[[], Any]
) -> tuple[tuple[int, int, int], Any]:
    """Run ``call`` (a poll/wait blocked on ``sockpair[0]``) in a thread; read its epoll_wait args.

    Then wake it by writing to the peer and return ``((epfd, maxevents, ms), result)``.
    """
    a, b = sockpair
    ep.register(a, EPOLLIN)
    tid: list[int] = []
    started = threading.Event()
    result: list[Any] = []

    def worker() -> None:
        tid.append(threading.get_native_id())
        started.set()
        result.append(outcome(call))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        assert started.wait(30)
        wait_until_in_epoll_wait(tid[0])
        args = epoll_wait_args(tid[0])
    finally:
        b.send(b"x")
        thread.join(30)
    assert not thread.is_alive()
    assert args is not None
    return args, result[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("timeout", "maxevents", "asked"),
    [
        (None, -1, (1023, -1)),  # maxevents defaults to FD_SETSIZE - 1
        (-1, -1, (1023, -1)),
        (-5.5, 7, (7, -1)),  # any negative timeout blocks: -1
        (3600, 1, (1, 3_600_000)),
        (3600.0001, 2, (2, 3_600_001)),  # rounded up to whole milliseconds
        (1000.0000001, 3, (3, 1_000_001)),
        (2147483.647, 1024, (1024, INT_MAX)),
    ],
)
def test_poll_asks_kernel_for(
    ep: Any,
    sockpair: tuple[socket.socket, socket.socket],
    timeout: Any,
    maxevents: int,
    asked: tuple[int, int],
) -> None:
    """What epoll_wait receives: (maxevents, ms): default 1023, ms rounded *up*, -1 if negative."""
    args, result = _blocked_poll_args(ep, sockpair, lambda: ep.poll(timeout, maxevents))
    assert args == (ep.fileno(), *asked)
    assert result == ("returned", [(sockpair[0].fileno(), EPOLLIN)])


# -- poll: maxevents -----------------------------------------------------------------------


@pytest.mark.parametrize("maxevents", [-1, 1, 5, 1023, 1024, 10_000, True, Index(3)], ids=show)
def test_poll_maxevents_accepted(ep: Any, ready: socket.socket, maxevents: Any) -> None:
    """-1 (the default, FD_SETSIZE - 1) or any positive C int."""
    ep.register(ready, EPOLLIN)
    assert ep.poll(0, maxevents) == [(ready.fileno(), EPOLLIN)]
    assert ep.poll(maxevents=maxevents, timeout=0) == [(ready.fileno(), EPOLLIN)]


MAXEVENTS_ERRORS: list[tuple[Any, type[Exception]]] = [
    (0, ValueError),
    (-2, ValueError),
    (INT_MIN, ValueError),
    (False, ValueError),
    (1.0, TypeError),
    (-1.0, TypeError),
    ("1", TypeError),
    (None, TypeError),
    (Decimal(1), TypeError),
    (2**31, OverflowError),
    (2**40, OverflowError),
    (INT_MIN - 1, OverflowError),
]


@pytest.mark.parametrize(("maxevents", "error"), MAXEVENTS_ERRORS, ids=show)
def test_poll_maxevents_errors(ep: Any, maxevents: Any, error: type[Exception]) -> None:
    """maxevents < 1 other than -1: ValueError; not an int: TypeError; beyond a C int: Overflow."""
    with pytest.raises(error) as info:
        ep.poll(0, maxevents)
    assert type(info.value) is error


@pytest.mark.parametrize("maxevents", [m for m, _ in MAXEVENTS_ERRORS] + [-1, 1, 64], ids=show)
def test_poll_maxevents_matches_stdlib(ready: socket.socket, maxevents: Any) -> None:
    """Every maxevents has the stdlib's outcome."""
    assert_same(on_fresh(lambda ep: (ep.register(ready), ep.poll(0, maxevents))))


def test_poll_maxevents_beyond_kernel_limit() -> None:
    """Above INT_MAX / sizeof(struct epoll_event) the kernel says EINVAL (rawepoll: no buffer).

    The stdlib allocates the buffer first, so it may say MemoryError instead;
    only rawepoll is checked.
    """
    with rawepoll.Epoll() as ep:
        assert ep.poll(0, MAX_EVENTS) == []
        with pytest.raises(OSError) as info:
            ep.poll(0, MAX_EVENTS + 1)
        assert type(info.value) is OSError
        assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize(("maxevents", "count"), [(1, 1), (2, 2), (4, 4), (5, 5), (6, 5), (-1, 5)])
def test_poll_maxevents_limits_results(
    ep: Any, many_ready: list[socket.socket], maxevents: int, count: int
) -> None:
    """At most ``maxevents`` entries come back, each a distinct registered fd."""
    fds = {sock.fileno() for sock in many_ready}
    for sock in many_ready:
        ep.register(sock, EPOLLIN)
    result = ep.poll(0, maxevents)
    assert len(result) == count
    assert len({fd for fd, _ in result}) == count
    assert {fd for fd, _ in result} <= fds
    assert all(mask == EPOLLIN for _, mask in result)


def test_poll_maxevents_rotates_level_triggered(ep: Any, many_ready: list[socket.socket]) -> None:
    """Level-triggered entries go back to the end of the ready list: small batches cover all."""
    fds = {sock.fileno() for sock in many_ready}
    for sock in many_ready:
        ep.register(sock, EPOLLIN)
    seen = [fd for _ in range(5) for fd, _ in ep.poll(0, 1)]
    assert sorted(seen) == sorted(fds)


@pytest.mark.parametrize(
    ("timeout", "maxevents"),
    [
        (math.nan, 1.5),  # maxevents' TypeError first: it is parsed as an argument
        (math.nan, 2**40),
        ("x", 2**40),
        (1e300, 0),  # timeout errors come before maxevents' range check
        ("x", 0),
        (math.nan, 0),
        (-1, 0),
        (None, -2),
        (0, -1),
    ],
    ids=show,
)
def test_poll_argument_check_order(ready: socket.socket, timeout: Any, maxevents: Any) -> None:
    """With two bad arguments, the same one wins as in the stdlib."""
    assert_same(on_fresh(lambda ep: (ep.register(ready), ep.poll(timeout, maxevents))))


# -- closed objects ------------------------------------------------------------------------


def test_closed_property_and_double_close(epoll_cls: Any) -> None:
    """``closed`` turns True on close(); close() again is a no-op."""
    ep = epoll_cls()
    assert ep.closed is False
    ep.close()
    assert ep.closed is True
    ep.close()
    assert ep.closed is True


@pytest.mark.parametrize(
    "call",
    [
        lambda ep, s: ep.poll(),
        lambda ep, s: ep.poll(0),
        lambda ep, s: ep.poll(-1),
        lambda ep, s: ep.poll("x"),  # the timeout is parsed after the closed check
        lambda ep, s: ep.poll(math.nan),
        lambda ep, s: ep.poll(0, 0),
        lambda ep, s: ep.register(s),
        lambda ep, s: ep.register(s, EPOLLIN),
        lambda ep, s: ep.register(-1),
        lambda ep, s: ep.modify(s, EPOLLIN),
        lambda ep, s: ep.unregister(s),
        lambda ep, s: ep.fileno(),
        lambda ep, s: ep.__enter__(),
    ],
)
def test_closed_object_raises_value_error(
    epoll_cls: Any, sockpair: tuple[socket.socket, ...], call: Callable[[Any, Any], Any]
) -> None:
    """Every operation on a closed epoll object raises ValueError."""
    ep = epoll_cls()
    ep.close()
    with pytest.raises(ValueError) as info:
        call(ep, sockpair[0])
    assert type(info.value) is ValueError


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda ep: ep.register("x"), TypeError),  # arguments are parsed first
        (lambda ep: ep.register(2**40), OverflowError),
        (lambda ep: ep.register(0, "x"), TypeError),
        (lambda ep: ep.modify(0, 1.0), TypeError),
        (lambda ep: ep.modify(0), TypeError),
        (lambda ep: ep.unregister(object()), TypeError),
        (lambda ep: ep.poll(0, "x"), TypeError),  # maxevents is an argument ...
        (lambda ep: ep.poll(0, 2**40), OverflowError),
        (lambda ep: ep.poll("x", "x"), TypeError),
        (lambda ep: ep.poll("x"), ValueError),  # ... the timeout is not
        (lambda ep: ep.poll(math.nan, 0), ValueError),
        (lambda ep: ep.poll(0, -2), ValueError),
        (lambda ep: ep.fileno(), ValueError),
        (lambda ep: ep.close(), None),
        (lambda ep: ep.closed, None),
    ],
)
def test_closed_check_order_matches_stdlib(
    call: Callable[[Any], Any], error: type[Exception] | None
) -> None:
    """On a closed object, argument errors and "closed" come in the stdlib's order."""
    result = assert_same(on_closed(call))
    if error is not None:
        assert result == ("raised", error)


def test_context_manager_closes(epoll_cls: Any) -> None:
    """``with epoll() as ep`` yields the object itself and closes it on exit."""
    with epoll_cls() as ep:
        assert isinstance(ep, epoll_cls)
        fd = ep.fileno()
        assert not ep.closed
    assert ep.closed
    with pytest.raises(OSError):
        os.fstat(fd)


def test_context_manager_does_not_swallow(epoll_cls: Any) -> None:
    """``__exit__`` closes and lets the exception through."""
    with pytest.raises(ZeroDivisionError), epoll_cls() as ep:
        1 / 0  # noqa: B018
    assert ep.closed


def test_exit_arguments_are_optional(epoll_cls: Any) -> None:
    """``select.epoll.__exit__`` takes up to three optional arguments."""
    ep = epoll_cls()
    ep.__exit__()
    assert ep.closed
    ep = epoll_cls()
    ep.__exit__(None, None, None)
    assert ep.closed


def test_closed_object_is_not_reusable(epoll_cls: Any) -> None:
    """``__enter__`` on a closed object raises ValueError instead of entering."""
    ep = epoll_cls()
    ep.close()
    with pytest.raises(ValueError), ep:
        pass


# -- wait() (rawepoll only) ----------------------------------------------------------------


@pytest.fixture
def rep() -> Iterator[rawepoll.Epoll]:
    with rawepoll.Epoll() as ep:
        yield ep


def test_wait_matches_poll(rep: rawepoll.Epoll, many_ready: list[socket.socket]) -> None:
    """``wait(events, timeout)`` returns n; ``events.ready(n)`` holds what ``poll`` returns."""
    for sock in many_ready:
        rep.register(sock, EPOLLIN)
    events = EventArray(16)
    n = rep.wait(events, 0)
    assert n == len(many_ready)
    assert sorted(events.ready(n)) == sorted(rep.poll(0))
    assert sorted(events.ready(n)) == sorted((s.fileno(), EPOLLIN) for s in many_ready)


def test_wait_nothing_ready(rep: rawepoll.Epoll, sockpair: tuple[socket.socket, ...]) -> None:
    """No ready fd: ``wait`` returns 0 after the timeout."""
    rep.register(sockpair[0], EPOLLIN)
    events = EventArray(4)
    assert rep.wait(events, 0) == 0
    assert rep.wait(events, 0.001) == 0
    assert rep.wait(events, timeout=1e-4) == 0


@pytest.mark.parametrize("size", [1, 2, 4])
def test_wait_asks_at_most_len(
    rep: rawepoll.Epoll, many_ready: list[socket.socket], size: int
) -> None:
    """``wait`` never asks for more entries than the EventArray holds."""
    for sock in many_ready:
        rep.register(sock, EPOLLIN)
    events = EventArray(size)
    n = rep.wait(events, 0)
    assert n == size
    assert {fd for fd, _ in events.ready(n)} <= {s.fileno() for s in many_ready}


@pytest.mark.timeout(60)
def test_wait_kernel_sees_len(
    rep: rawepoll.Epoll, sockpair: tuple[socket.socket, socket.socket]
) -> None:
    """The maxevents epoll_wait receives is ``len(events)``; no timeout blocks (-1)."""
    events = EventArray(7)
    args, result = _blocked_poll_args(rep, sockpair, lambda: rep.wait(events))
    assert args == (rep.fileno(), 7, -1)
    assert result == ("returned", 1)
    assert list(events.ready(1)) == [(sockpair[0].fileno(), EPOLLIN)]


@pytest.mark.parametrize(
    "events", [[], None, bytearray(12), (rawepoll.unix.EpollEvent * 4)(), 4], ids=show
)
def test_wait_needs_event_array(rep: rawepoll.Epoll, events: Any) -> None:
    """Anything but an EventArray is a TypeError (the kernel writes into it)."""
    with pytest.raises(TypeError):
        rep.wait(events, 0)


def test_wait_accepts_event_array_subclass(rep: rawepoll.Epoll, ready: socket.socket) -> None:
    """An EventArray subclass is an EventArray."""

    class Mine(EventArray):
        pass

    rep.register(ready, EPOLLIN)
    events = Mine(2)
    assert rep.wait(events, 0) == 1
    assert list(events.ready(1)) == [(ready.fileno(), EPOLLIN)]


@pytest.mark.parametrize("events", [EventArray(1), None])
def test_wait_on_closed(events: Any) -> None:
    """``wait`` on a closed object: ValueError, checked before the buffer."""
    ep = rawepoll.Epoll()
    ep.close()
    with pytest.raises(ValueError):
        ep.wait(events, 0)


@pytest.mark.parametrize("stale_errno", [0, errno.ENOENT, errno.EINTR])
def test_zero_timeout_wait_failure_carries_its_own_errno(stale_errno: int) -> None:
    """``wait(events, 0)`` whose fd is no longer an epoll instance: the kernel's errno.

    The zero-timeout fast path does not capture errno; a failure there is
    redone by a call that does, so an errno left over from an earlier call
    (EINTR would even be retried) never stands in for the real one.
    """
    ep = rawepoll.Epoll()
    a, b = socket.socketpair()
    with a, b, ep:
        os.dup2(a.fileno(), ep.fileno())  # the fd now names a socket: EINVAL
        ctypes.set_errno(stale_errno)
        with pytest.raises(OSError) as raised:
            ep.wait(EventArray(4), 0)
        assert raised.value.errno == errno.EINVAL
        os.close(ep.fileno())  # now nothing at all: EBADF
        ctypes.set_errno(stale_errno)
        with pytest.raises(OSError) as raised:
            ep.wait(EventArray(4), 0)
        assert raised.value.errno == errno.EBADF
        os.dup2(a.fileno(), ep.fileno())  # for close() to close


@pytest.mark.parametrize(
    "timeout",
    [t for t, _ in TIMEOUT_ERRORS] + [None, -1, 0, 0.5, 1e-4, -1e-4, True],
    ids=show,
)
def test_wait_timeout_matches_stdlib_poll(ready: socket.socket, timeout: Any) -> None:
    """``wait`` takes its timeout exactly as ``select.epoll.poll`` does."""
    with select.epoll() as oracle, rawepoll.Epoll() as ep:
        oracle.register(ready, EPOLLIN)
        ep.register(ready, EPOLLIN)
        events = EventArray(4)
        expected = outcome(lambda: oracle.poll(timeout))
        actual = outcome(lambda: list(events.ready(ep.wait(events, timeout))))
        assert actual == expected
