"""``EventArray``: Go's ``[]EpollEvent``, allocated once and reused.

One contiguous block of ``struct epoll_event`` that ``epoll_wait`` fills in.
Reading it back must not cost a ctypes object per entry (a ctypes attribute
read is ~50 ns; the kernel fills an entry in less), so :meth:`EventArray.ready`
reads the block through two ``memoryview`` casts of the same memory -- one as
``int32`` (for ``Fd``), one as ``uint32`` (for ``Events``) -- sliced with the
struct's stride, and zips them: the only Python objects made are the pairs.
"""

from __future__ import annotations

import ctypes
import operator
import struct
from collections.abc import Iterator
from typing import Any, Final

from rawepoll.unix import DATA_OFFSET, EVENT_SIZE, EpollEvent

__all__ = ["MAX_EVENTS", "EventArray"]

# The kernel refuses maxevents above INT_MAX / sizeof(struct epoll_event).
MAX_EVENTS: Final = ((1 << 31) - 1) // EVENT_SIZE

_WORDS: Final = EVENT_SIZE // 4  # stride in 32-bit words
_FD_WORD: Final = DATA_OFFSET // 4  # the union's `int fd` is at its start
_DATA: Final = struct.Struct("=Q")
_CACHED_VIEWS: Final = 128  # ready(n) keeps its slices for n up to this


class EventArray:
    """A reusable array of ``n`` :class:`~rawepoll.unix.EpollEvent` (Go's ``[]EpollEvent``).

    Pass it to :func:`rawepoll.unix.EpollWait` or :meth:`rawepoll.Epoll.wait`
    -- or straight to a C function: ctypes passes it as a pointer to its first
    entry (``_as_parameter_``) -- and ask the kernel for at most
    :attr:`maxevents` (= ``len(array)``) entries.  Then read the
    first ``n`` entries with :meth:`ready` (fast), :meth:`data` (the 64-bit
    token), or by indexing (an ``EpollEvent`` view of the same memory).

    Not safe to fill from two threads at once: give each waiting thread its own.
    """

    __slots__ = ("__weakref__", "_array", "_as_parameter_", "_fds", "_masks", "_views", "maxevents")

    _array: ctypes.Array[EpollEvent]
    _as_parameter_: Any
    _fds: memoryview
    _masks: memoryview
    _views: list[tuple[memoryview, memoryview] | None]

    # _as_parameter_: what ctypes passes to C when the array itself is an
    # argument -- byref(_array), made once: a pointer object per call would
    # cost ~300 ns of a ~450 ns zero-timeout wait.
    # _fds / _masks: strided views, one item per entry, over the same memory.
    # _views[n]: (_fds[:n], _masks[:n]), made on first use for small n -- two
    # memoryview slices cost more than a wait with one ready fd.

    def __init__(self, n: int) -> None:
        """Allocate ``n`` zeroed entries, ``1 <= n <= MAX_EVENTS``.

        Raises:
            TypeError: ``n`` is not an integer.
            ValueError: ``n`` is out of range.
        """
        n = operator.index(n)
        if not 1 <= n <= MAX_EVENTS:
            raise ValueError(f"EventArray size must be in 1..{MAX_EVENTS}, got {n}")
        array = (EpollEvent * n)()
        raw = memoryview(array).cast("B")
        views: list[tuple[memoryview, memoryview] | None] = [None] * (min(n, _CACHED_VIEWS) + 1)
        # Set together and never again (__setattr__ refuses): the pointer C
        # gets and the count it is told must always describe the same block.
        _set = object.__setattr__
        _set(self, "maxevents", n)
        _set(self, "_array", array)
        _set(self, "_as_parameter_", ctypes.byref(array))
        _set(self, "_fds", raw.cast("i")[_FD_WORD::_WORDS])
        _set(self, "_masks", raw.cast("I")[0::_WORDS])
        _set(self, "_views", views)

    maxevents: int
    """How many entries the kernel may fill (``epoll_wait``'s ``maxevents``): ``len(self)``."""

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"EventArray.{name} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"EventArray.{name} is read-only")

    def __len__(self) -> int:
        return self.maxevents

    def __getitem__(self, index: int) -> EpollEvent:
        """Entry ``index`` as an :class:`EpollEvent` that shares this memory."""
        result: EpollEvent = self._array[operator.index(index)]
        return result

    def __iter__(self) -> Iterator[EpollEvent]:
        return iter(self._array)

    def __repr__(self) -> str:
        return f"EventArray({self.maxevents})"

    @property
    def array(self) -> ctypes.Array[EpollEvent]:
        """The underlying ctypes array (what ``epoll_wait`` writes into)."""
        return self._array

    def ready(self, n: int) -> Iterator[tuple[int, int]]:
        """``(fd, events)`` for the first ``n`` entries, as ``epoll.poll`` returns them.

        ``fd`` is the signed ``data.fd`` word, ``events`` the unsigned mask.
        The iterator reads the array lazily: consume it before the next wait
        into the same array (``list(arr.ready(n))`` keeps a copy).

        Raises:
            ValueError: ``n`` outside ``0..len(self)``.
        """
        if type(n) is int and 0 <= n < len(self._views):
            views = self._views[n]
            if views is None:
                views = self._views[n] = (self._fds[:n], self._masks[:n])
            return zip(*views)  # noqa: B905 -- equal lengths; strict= costs 130 ns on 3.11
        n = self._count(n)
        return zip(self._fds[:n], self._masks[:n])  # noqa: B905

    def data(self, index: int) -> int:
        """The whole 64-bit ``data`` word of entry ``index`` (a u64 token)."""
        index = operator.index(index)
        if index < 0:
            index += self.maxevents
        if not 0 <= index < self.maxevents:
            raise IndexError("EventArray index out of range")
        value: int = _DATA.unpack_from(self._array, index * EVENT_SIZE + DATA_OFFSET)[0]
        return value

    def _count(self, n: object) -> int:
        count = operator.index(n)  # type: ignore[arg-type]
        if not 0 <= count <= self.maxevents:
            raise ValueError(f"n must be in 0..{self.maxevents}, got {count}")
        return count
