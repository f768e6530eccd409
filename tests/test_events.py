"""``EventArray``: Go's ``[]EpollEvent``, and what the kernel writes into it.

The array is the only memory the kernel writes to, so its bounds, its stride
and its views (``ready()`` / ``data()`` / indexing) must agree with each other
and with ``struct epoll_event``.  The kernel returns the 64-bit ``data`` word
it was given at ``EPOLL_CTL_ADD`` untouched: whatever token goes in comes back.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import sys
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawepoll import MAX_EVENTS, EventArray, unix

U64 = st.integers(min_value=0, max_value=2**64 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
UINT32 = st.integers(min_value=0, max_value=2**32 - 1)


class Index:
    """An int-like object (``__index__`` only), as numpy integers are."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


@contextlib.contextmanager
def epoll_fd() -> Iterator[int]:
    """A fresh epoll descriptor, closed afterwards."""
    epfd = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
    try:
        yield epfd
    finally:
        os.close(epfd)


@contextlib.contextmanager
def readable_eventfds(count: int) -> Iterator[list[int]]:
    """``count`` eventfds with a non-zero counter: each is readable until read."""
    fds: list[int] = []
    try:
        for _ in range(count):
            fds.append(os.eventfd(1, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


# --------------------------------------------------------------------------
# The array in memory.


def test_len_repr_and_zeroed() -> None:
    """A new array has ``n`` zeroed entries: fd 0, mask 0, data 0."""
    arr = EventArray(5)
    assert len(arr) == 5
    assert repr(arr) == "EventArray(5)"
    assert list(arr.ready(5)) == [(0, 0)] * 5
    assert [arr.data(i) for i in range(5)] == [0] * 5


def test_array_property_is_the_ctypes_array() -> None:
    """``.array`` is the ctypes ``EpollEvent * n`` the kernel writes into."""
    arr = EventArray(3)
    assert isinstance(arr.array, ctypes.Array)
    assert arr.array._type_ is unix.EpollEvent
    assert len(arr.array) == 3
    assert ctypes.sizeof(arr.array) == 3 * unix.EVENT_SIZE
    assert ctypes.addressof(arr.array) == ctypes.addressof(arr[0])


def test_index_shares_memory_with_ready_and_data() -> None:
    """Writing through ``arr[i]`` is what ``ready()`` and ``data()`` read back."""
    arr = EventArray(4)
    arr[0].Fd = 7
    arr[0].Events = unix.EPOLLIN | unix.EPOLLOUT
    arr[1].Events = unix.EPOLLET | unix.EPOLLHUP
    arr[1].Fd = -3
    arr[3].Data = 0xDEADBEEFCAFEF00D
    assert list(arr.ready(2)) == [(7, 0x5), (-3, 0x80000010)]
    assert arr.data(3) == 0xDEADBEEFCAFEF00D
    assert arr[3].Data == 0xDEADBEEFCAFEF00D
    # And the other way: what the ctypes array holds, indexing sees.
    arr.array[2].Fd = 42
    assert arr[2].Fd == 42
    assert list(arr.ready(3))[2] == (42, 0)


def test_entries_do_not_overlap() -> None:
    """Each entry is its own ``EVENT_SIZE`` bytes: writing one leaves its neighbours alone."""
    arr = EventArray(3)
    arr[1].Events = 0xFFFFFFFF
    arr[1].Data = 2**64 - 1
    assert list(arr.ready(3)) == [(0, 0), (-1, 0xFFFFFFFF), (0, 0)]
    assert (arr.data(0), arr.data(2)) == (0, 0)
    raw = bytes(arr.array)
    size = unix.EVENT_SIZE
    assert raw[:size] == bytes(size)
    assert raw[2 * size :] == bytes(size)


def test_iteration_yields_every_entry() -> None:
    """Iterating gives ``len(arr)`` EpollEvents over the same memory."""
    arr = EventArray(3)
    for i, event in enumerate(arr):
        event.Fd = 10 + i
    assert [fd for fd, _ in arr.ready(3)] == [10, 11, 12]


def test_negative_index() -> None:
    """``arr[-1]`` and ``data(-1)`` are the last entry, as for a list."""
    arr = EventArray(4)
    arr[-1].Fd = 9
    arr[-4].Data = 5
    assert list(arr.ready(4))[3] == (9, 0)
    assert arr[3].Fd == 9
    assert arr.data(-1) == arr.data(3)
    assert arr.data(-4) == arr.data(0) == 5


@pytest.mark.parametrize("index", [4, 5, -5, 2**31, -(2**63)])
def test_index_out_of_range(index: int) -> None:
    """Outside ``-len..len-1`` both indexing and ``data()`` raise IndexError."""
    arr = EventArray(4)
    with pytest.raises(IndexError):
        arr[index]
    with pytest.raises(IndexError):
        arr.data(index)


@pytest.mark.parametrize("index", [1.0, "0", None, slice(0, 1)])
def test_index_wrong_type(index: object) -> None:
    """Only integers index an EventArray."""
    arr = EventArray(2)
    with pytest.raises(TypeError):
        arr[index]  # type: ignore[index]
    with pytest.raises(TypeError):
        arr.data(index)  # type: ignore[arg-type]


def test_index_accepts_int_like() -> None:
    """Objects with ``__index__`` are integers here, as for a list."""
    arr = EventArray(2)
    arr[Index(1)].Fd = 3  # type: ignore[index]
    assert arr.data(Index(1)) & 0xFFFFFFFF == 3  # type: ignore[arg-type]
    assert list(arr.ready(Index(2))) == [(0, 0), (3, 0)]  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, 1, 3])
def test_ready_bounds_accepted(n: int) -> None:
    """``ready(n)`` takes ``0 <= n <= len`` and gives exactly n pairs."""
    arr = EventArray(3)
    assert len(list(arr.ready(n))) == n


def test_ready_bool_is_an_int() -> None:
    """``ready(True)`` is ``ready(1)``, as ``bool`` is an int."""
    assert len(list(EventArray(2).ready(True))) == 1


@pytest.mark.parametrize("n", [-1, 4, 2**31, -(2**70)])
def test_ready_out_of_range(n: int) -> None:
    """``ready(n)`` for n < 0 or n > len raises ValueError (never reads past the array)."""
    with pytest.raises(ValueError):
        EventArray(3).ready(n)


@pytest.mark.parametrize("n", [1.0, "1", None, [1]])
def test_ready_wrong_type(n: object) -> None:
    """``ready(n)`` refuses non-integers with TypeError."""
    with pytest.raises(TypeError):
        EventArray(3).ready(n)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -1, MAX_EVENTS + 1, 2**31, 2**64])
def test_size_out_of_range(size: int) -> None:
    """Sizes outside ``1..MAX_EVENTS`` are refused before any allocation."""
    with pytest.raises(ValueError):
        EventArray(size)


@pytest.mark.parametrize("size", [1.0, 2.5, "3", None, b"4"])
def test_size_wrong_type(size: object) -> None:
    """Only integers size an EventArray."""
    with pytest.raises(TypeError):
        EventArray(size)  # type: ignore[arg-type]


def test_size_accepts_int_like() -> None:
    """``EventArray(obj)`` takes any object with ``__index__``."""
    assert len(EventArray(Index(7))) == 7  # type: ignore[arg-type]


@pytest.mark.skipif(sys.byteorder != "little", reason="the overlap is byte-order specific")
@given(data=U64)
def test_fd_and_pad_overlap_data(data: int) -> None:
    """As in the C union: ``Fd`` is the low 32 bits of ``Data``, ``Pad`` the high 32 (LE)."""
    event = EventArray(1)[0]
    event.Data = data
    low, high = data & 0xFFFFFFFF, data >> 32
    assert event.Fd == low - (1 << 32) * (low >> 31)
    assert event.Pad == high - (1 << 32) * (high >> 31)


@given(entries=st.lists(st.tuples(INT32, UINT32, U64), min_size=1, max_size=16))
def test_memory_round_trip(entries: list[tuple[int, int, int]]) -> None:
    """Any int32 fd and uint32 mask written to an entry come back from ``ready()``;
    any u64 written to ``Data`` comes back from ``data()``."""
    arr = EventArray(len(entries))
    for i, (fd, mask, _) in enumerate(entries):
        arr[i].Fd = fd
        arr[i].Events = mask
    assert list(arr.ready(len(entries))) == [(fd, mask) for fd, mask, _ in entries]
    for i, (_, _, data) in enumerate(entries):
        arr[i].Data = data
    assert [arr.data(i) for i in range(len(entries))] == [data for _, _, data in entries]
    assert [event.Data for event in arr] == [data for _, _, data in entries]


# --------------------------------------------------------------------------
# What the kernel writes.


@pytest.mark.timeout(30)
def test_kernel_fills_entries_read_by_ready() -> None:
    """``epoll_wait`` writes ``{events, data}`` per ready fd; ``ready(n)`` reads them back."""
    with epoll_fd() as epfd, readable_eventfds(5) as fds:
        for fd in fds:
            unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, unix.EpollEvent(Events=unix.EPOLLIN, Fd=fd))
        arr = EventArray(8)
        n = unix.EpollWait(epfd, arr, 0)
        assert n == 5
        assert sorted(arr.ready(n)) == sorted((fd, unix.EPOLLIN) for fd in fds)
        # Entries past n are left as they were (zero).
        assert list(arr.ready(8))[n:] == [(0, 0)] * 3


@pytest.mark.timeout(60)
@settings(deadline=None, max_examples=60)
@given(tokens=st.lists(U64, min_size=1, max_size=24))
def test_u64_token_round_trips_through_kernel(tokens: list[int]) -> None:
    """Any u64 given as ``Data`` at EPOLL_CTL_ADD comes back unchanged from epoll_wait,
    through ``EventArray.data(i)`` and through ``arr[i].Data``."""
    with epoll_fd() as epfd, readable_eventfds(len(tokens)) as fds:
        for fd, token in zip(fds, tokens, strict=True):
            event = unix.EpollEvent(Events=unix.EPOLLIN, Data=token)
            unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, event)
        arr = EventArray(len(tokens))
        n = unix.EpollWait(epfd, arr, 0)
        assert n == len(tokens)
        assert Counter(arr.data(i) for i in range(n)) == Counter(tokens)
        assert Counter(arr[i].Data for i in range(n)) == Counter(tokens)
        assert [mask for _, mask in arr.ready(n)] == [unix.EPOLLIN] * n


@pytest.mark.timeout(60)
@settings(deadline=None, max_examples=60)
@given(values=st.lists(st.tuples(INT32, INT32), min_size=1, max_size=24))
def test_fd_word_round_trips_through_kernel(values: list[tuple[int, int]]) -> None:
    """Any int32 in ``Fd`` (with any ``Pad``) comes back from ``ready()``: the kernel
    does not interpret the data word, so it need not be the registered fd."""
    with epoll_fd() as epfd, readable_eventfds(len(values)) as fds:
        for fd, (fake_fd, pad) in zip(fds, values, strict=True):
            event = unix.EpollEvent(Events=unix.EPOLLIN, Fd=fake_fd, Pad=pad)
            unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, event)
        arr = EventArray(len(values))
        n = unix.EpollWait(epfd, arr, 0)
        assert n == len(values)
        assert Counter(arr.ready(n)) == Counter((fake, unix.EPOLLIN) for fake, _ in values)
        assert Counter((arr[i].Fd, arr[i].Pad) for i in range(n)) == Counter(values)


@pytest.mark.timeout(60)
def test_max_events_is_exactly_the_kernel_limit() -> None:
    """epoll_wait accepts ``MAX_EVENTS`` entries and refuses one more with EINVAL.

    The buffers are lazily-zeroed anonymous mappings viewed as ctypes arrays, so
    no 2 GiB is touched: the epoll instance is empty and the kernel writes nothing.
    """
    size = (MAX_EVENTS + 1) * unix.EVENT_SIZE
    try:
        memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError as exc:  # strict overcommit, or a small address space
        pytest.skip(f"cannot map 2 GiB of address space: {exc}")
    with epoll_fd() as epfd, memory:
        largest = (unix.EpollEvent * MAX_EVENTS).from_buffer(memory)
        assert unix.EpollWait(epfd, largest, 0) == 0
        del largest
        too_large = (unix.EpollEvent * (MAX_EVENTS + 1)).from_buffer(memory)
        with pytest.raises(OSError) as info:
            unix.EpollWait(epfd, too_large, 0)
        assert info.value.errno == errno.EINVAL
        del too_large, info  # release the views before the mapping closes
