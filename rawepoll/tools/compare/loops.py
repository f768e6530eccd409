"""The timed loops: one :data:`~rawepoll.tools.compare.timing.Timer` per way to wait or register.

Each builder takes what the loop works on and returns a timer whose loop is
written out in place, with every attribute looked up once before the clock
starts, so nothing but the operation and one ``for`` step is timed.  A loop
that waits also iterates what the wait returned, unpacking each ``(fd, ev)``
pair, as a server loop would.
"""

from __future__ import annotations

import select
import time
from typing import Any

import rawepoll
from rawepoll import _ffi, unix
from rawepoll.events import EventArray
from rawepoll.tools.compare.timing import Timer

__all__ = [
    "bare_ctypes",
    "bare_ctypes_iter",
    "raw_poll_iter",
    "raw_wait",
    "raw_wait_iter",
    "register_unregister",
    "select_iter",
    "std_poll",
    "std_poll_iter",
    "unix_wait_iter",
]


def std_poll_iter(std: Any) -> Timer:
    """``for fd, ev in std.poll(0)`` on a ``select.epoll`` or a ``select.poll`` object."""
    poll = std.poll

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            for _fd, _ev in poll(0):
                pass
        return time.perf_counter_ns() - t0

    return run


def std_poll(std: select.epoll) -> Timer:
    """``std.poll(0)``, the result dropped."""
    poll = std.poll

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            poll(0)
        return time.perf_counter_ns() - t0

    return run


def select_iter(fds: list[int]) -> Timer:
    """``for fd in select.select(fds, [], [], 0)[0]``."""
    rlist = list(fds)
    empty: list[int] = []
    sel = select.select

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            for _fd in sel(rlist, empty, empty, 0)[0]:
                pass
        return time.perf_counter_ns() - t0

    return run


def raw_wait_iter(ep: rawepoll.Epoll, events: EventArray) -> Timer:
    """``n = ep.wait(events, 0); for fd, ev in events.ready(n)``."""
    wait = ep.wait
    ready = events.ready

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            n = wait(events, 0)
            for _fd, _ev in ready(n):
                pass
        return time.perf_counter_ns() - t0

    return run


def raw_wait(ep: rawepoll.Epoll, events: EventArray) -> Timer:
    """``ep.wait(events, 0)``, the count dropped."""
    wait = ep.wait

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            wait(events, 0)
        return time.perf_counter_ns() - t0

    return run


def raw_poll_iter(ep: rawepoll.Epoll) -> Timer:
    """``for fd, ev in ep.poll(0)``: rawepoll's drop-in, building a list."""
    poll = ep.poll

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            for _fd, _ev in poll(0):
                pass
        return time.perf_counter_ns() - t0

    return run


def unix_wait_iter(epfd: int, events: EventArray) -> Timer:
    """``n = unix.EpollWait(epfd, events, 0); for fd, ev in events.ready(n)``: the Go mirror."""
    epoll_wait = unix.EpollWait
    ready = events.ready

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            n = epoll_wait(epfd, events, 0)
            for _fd, _ev in ready(n):
                pass
        return time.perf_counter_ns() - t0

    return run


def bare_ctypes_iter(epfd: int, events: EventArray) -> Timer:
    """The bare GIL-holding ctypes ``epoll_wait``, no checks, then ``events.ready(n)``."""
    epoll_wait = _ffi.epoll_wait_nosleep
    array = events  # passed as its _as_parameter_, a pointer made once
    length = events.maxevents
    ready = events.ready

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            n = epoll_wait(epfd, array, length, 0)
            for _fd, _ev in ready(n):
                pass
        return time.perf_counter_ns() - t0

    return run


def bare_ctypes(epfd: int, events: EventArray) -> Timer:
    """The bare GIL-holding ctypes ``epoll_wait``, the count dropped."""
    epoll_wait = _ffi.epoll_wait_nosleep
    array = events  # passed as its _as_parameter_, a pointer made once
    length = events.maxevents

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            epoll_wait(epfd, array, length, 0)
        return time.perf_counter_ns() - t0

    return run


def register_unregister(ep: select.epoll | rawepoll.Epoll, fd: int, mask: int) -> Timer:
    """``ep.register(fd, mask); ep.unregister(fd)``."""
    register = ep.register
    unregister = ep.unregister

    def run(loops: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            register(fd, mask)
            unregister(fd)
        return time.perf_counter_ns() - t0

    return run
