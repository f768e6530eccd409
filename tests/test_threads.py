"""Threads around one epoll: the seed's accept-loop pattern, and concurrent waiters.

The kernel's interest list is the only shared state, and the GIL is released
while a thread sleeps in ``epoll_wait``: so one thread may register, modify
and write while another is blocked, and the blocked one must see it.  Two
threads polling the same object must each get well-formed results of their
own (rawepoll reuses buffers between ``poll`` calls: never two at once).

Synchronisation is by ``threading.Event``/``Barrier`` and by ``/proc`` showing
a thread asleep in epoll_wait, never by sleeping.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.proc import wait_until_in_epoll_wait

import rawepoll
from rawepoll import EPOLLIN, EventArray

pytestmark = pytest.mark.timeout(60)

JOIN = 30.0  # seconds: liveness bound for joins


class Waiter(threading.Thread):
    """Run ``call`` in a thread; keep its result or exception and the thread's native id."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.started_call = threading.Event()
        self.tid = 0
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        self.tid = threading.get_native_id()
        self.started_call.set()
        try:
            self.result = self.call()
        except BaseException as exc:
            self.error = exc

    def blocked(self) -> None:
        """Return once the thread sleeps in epoll_wait."""
        assert self.started_call.wait(JOIN)
        wait_until_in_epoll_wait(self.tid)

    def outcome(self) -> Any:
        self.join(JOIN)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """Eight non-blocking socketpairs, closed afterwards."""
    made = [socket.socketpair() for _ in range(8)]
    try:
        for a, b in made:
            a.setblocking(False)
            b.setblocking(False)
        yield made
    finally:
        for a, b in made:
            a.close()
            b.close()


def release(waiter: Waiter, ep: Any, a: socket.socket, b: socket.socket) -> None:
    """After a failure, wake a waiter still asleep on ``ep`` so no thread outlives the test."""
    if waiter.is_alive():
        with contextlib.suppress(OSError):
            ep.register(a, EPOLLIN)
        with contextlib.suppress(OSError):
            ep.modify(a, EPOLLIN)
        b.send(b"wake up")
        waiter.join(JOIN)


def waiting_call(ep: Any, method: str, timeout: float | None) -> Callable[[], Any]:
    if method == "poll":
        return lambda: ep.poll(timeout)
    events = EventArray(8)
    return lambda: list(events.ready(ep.wait(events, timeout)))


METHODS = [
    pytest.param("select.epoll", "poll", id="select.epoll.poll"),
    pytest.param("rawepoll", "poll", id="rawepoll.Epoll.poll"),
    pytest.param("rawepoll", "wait", id="rawepoll.Epoll.wait"),
]
CLASSES: dict[str, Any] = {"select.epoll": select.epoll, "rawepoll": rawepoll.Epoll}


@pytest.mark.parametrize(("cls", "method"), METHODS)
@pytest.mark.parametrize("timeout", [None, 3600.0])
def test_blocked_wait_sees_new_registration(cls: str, method: str, timeout: float | None) -> None:
    """The seed's pattern: a new connection registered by another thread wakes the event loop.

    One thread sleeps in epoll_wait on an empty interest list; another creates a
    socketpair, registers it and writes: the sleeper returns that descriptor.
    """
    with CLASSES[cls]() as ep:
        waiter = Waiter(waiting_call(ep, method, timeout))
        waiter.start()
        a, b = socket.socketpair()
        try:
            waiter.blocked()
            ep.register(a, EPOLLIN)
            b.send(b"hello")
            assert waiter.outcome() == [(a.fileno(), EPOLLIN)]
        finally:
            release(waiter, ep, a, b)
            a.close()
            b.close()


@pytest.mark.parametrize(("cls", "method"), METHODS)
def test_blocked_wait_sees_modify(cls: str, method: str) -> None:
    """EPOLL_CTL_MOD from another thread re-polls the file and wakes the sleeper."""
    a, b = socket.socketpair()
    try:
        with CLASSES[cls]() as ep:
            ep.register(a, 0)
            b.send(b"x")  # pending, but not watched
            waiter = Waiter(waiting_call(ep, method, None))
            waiter.start()
            try:
                waiter.blocked()
                ep.modify(a, EPOLLIN)
                assert waiter.outcome() == [(a.fileno(), EPOLLIN)]
            finally:
                release(waiter, ep, a, b)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("cls", ["select.epoll", "rawepoll"])
def test_concurrent_waiters_get_well_formed_results(
    cls: str, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    """Threads polling one epoll at once each get a sane list of their own.

    Eight level-triggered readable sockets stay ready throughout.  Waiters with
    different ``maxevents`` (and, for rawepoll, ``wait`` with private
    EventArrays) run together, their epoll_wait calls overlapping since the
    GIL is released: every result must be non-empty, at most ``maxevents``
    long, free of duplicates, and hold only registered fds with EPOLLIN.
    """
    registered = {a.fileno() for a, _ in pairs}
    rounds = 1000
    ep = CLASSES[cls]()
    for a, b in pairs:
        b.send(b"x")
        ep.register(a, EPOLLIN)

    plans: list[tuple[int, Callable[[], list[tuple[int, int]]]]] = [
        (1023, ep.poll),
        (3, lambda: ep.poll(None, 3)),
        (1, lambda: ep.poll(3600.0, 1)),
    ]
    if cls == "rawepoll":
        for size in (2, 8):
            events = EventArray(size)
            plans.append((size, lambda events=events: list(events.ready(ep.wait(events, None)))))
    barrier = threading.Barrier(len(plans), timeout=JOIN)
    results: list[list[tuple[int, list[tuple[int, int]]]]] = [[] for _ in plans]

    def run(index: int) -> list[tuple[int, list[tuple[int, int]]]]:
        limit, call = plans[index]
        barrier.wait()
        for _ in range(rounds):
            results[index].append((limit, call()))
        return results[index]

    threads = [Waiter(lambda index=index: run(index)) for index in range(len(plans))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.outcome()
    finally:
        ep.close()

    for per_thread in results:
        assert len(per_thread) == rounds
        for limit, result in per_thread:
            assert type(result) is list
            assert 1 <= len(result) <= limit
            fds = [fd for fd, _ in result]
            assert len(set(fds)) == len(fds), result
            assert set(fds) <= registered
            assert all(type(entry) is tuple and len(entry) == 2 for entry in result)
            assert all(mask == EPOLLIN for _, mask in result)
