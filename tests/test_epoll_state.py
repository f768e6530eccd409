"""``select.epoll`` and ``rawepoll.Epoll`` driven side by side by a hypothesis state machine.

Both objects get the same operations on the same descriptors -- a small pool of
real socketpairs, a descriptor that is not open, one that cannot be polled
(``/dev/null``) and a few non-descriptors -- with masks drawn from the epoll
flags (ET and ONESHOT included, so polling twice exercises their semantics)
and occasional garbage.  Sending, receiving, filling, draining and shutting
down the sockets changes what the kernel reports.  After each step the two
must agree on everything: every result in order (each epoll's ready list sees
the same events in the same order, so even a batch truncated by ``maxevents``
is identical), every exception type and errno, and the kernel's interest
list as read from ``/proc``.
"""

from __future__ import annotations

import functools
import operator
import os
import resource
import select
import socket
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from support.fds import drain, epoll_interest, fill

import rawepoll
from rawepoll import (
    EPOLLERR,
    EPOLLET,
    EPOLLEXCLUSIVE,
    EPOLLHUP,
    EPOLLIN,
    EPOLLONESHOT,
    EPOLLOUT,
    EPOLLPRI,
    EPOLLRDHUP,
    EventArray,
)

PAIRS = 5
SOCKETS = 2 * PAIRS
# Targets beyond the sockets: a descriptor that is not open, one that cannot be
# polled, a negative one and a non-descriptor.
CLOSED, DEVNULL, NEGATIVE, GARBAGE = range(SOCKETS, SOCKETS + 4)

FLAGS = [
    EPOLLIN,
    EPOLLOUT,
    EPOLLPRI,
    EPOLLRDHUP,
    EPOLLET,
    EPOLLONESHOT,
    EPOLLEXCLUSIVE,
    EPOLLERR,
    EPOLLHUP,
]
flag_masks = st.lists(st.sampled_from(FLAGS), max_size=4).map(
    lambda bits: functools.reduce(operator.or_, bits, 0)
)
garbage_masks = st.one_of(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.sampled_from([-1, 2**32, 2**70 | EPOLLIN, -(2**40), 1.5, "1", None]),
)
# Mostly meaningful masks, occasionally garbage.
masks = st.one_of(flag_masks, flag_masks, flag_masks, garbage_masks)
# Biased towards the first two pairs, so that steps meet on the same descriptors.
HOT = 3
sockets = st.one_of(
    st.integers(min_value=0, max_value=HOT), st.integers(min_value=0, max_value=SOCKETS - 1)
)
targets = st.one_of(sockets, sockets, st.integers(min_value=SOCKETS, max_value=GARBAGE))
sizes = st.sampled_from([1, 7, 4096, 300_000])
maxevents = st.one_of(st.just(-1), st.integers(min_value=1, max_value=SOCKETS + 2))


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """``("returned", value)`` or ``("raised", exception type, errno)``."""
    try:
        return ("returned", call())
    except Exception as exc:
        return ("raised", type(exc), getattr(exc, "errno", None))


def interest(ep: Any) -> list[tuple[int, int, int]]:
    """The kernel's interest list; only ``data.fd`` of the data word (see ``epoll_interest``)."""
    return [(fd, events, data & 0xFFFFFFFF) for fd, events, data in epoll_interest(ep.fileno())]


class SideBySide(RuleBasedStateMachine):
    """The oracle (``select.epoll``) and ``rawepoll.Epoll`` under identical operations."""

    def __init__(self) -> None:
        super().__init__()
        self.socks: list[socket.socket] = []
        for _ in range(PAIRS):
            a, b = socket.socketpair()
            a.setblocking(False)
            b.setblocking(False)
            self.socks += [a, b]
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.closed_fd = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 20) - 1
        self.oracle = select.epoll()
        self.raw = rawepoll.Epoll()

    def teardown(self) -> None:
        self.oracle.close()
        self.raw.close()
        os.close(self.devnull)
        for sock in self.socks:
            sock.close()

    # -- helpers ----------------------------------------------------------------

    def target(self, index: int, as_int: bool) -> Any:
        if index < SOCKETS:
            sock = self.socks[index]
            return sock.fileno() if as_int else sock
        return {
            CLOSED: self.closed_fd,
            DEVNULL: self.devnull,
            NEGATIVE: -1,
            GARBAGE: "not a descriptor",
        }[index]

    def peer(self, index: int) -> socket.socket:
        return self.socks[index ^ 1]

    def same(self, action: Callable[[Any], Any]) -> tuple[Any, ...]:
        """Run ``action`` on the oracle, then on rawepoll; the outcomes must be equal."""
        expected = outcome(lambda: action(self.oracle))
        actual = outcome(lambda: action(self.raw))
        assert actual == expected, f"rawepoll: {actual}, select.epoll: {expected}"
        return expected

    # -- the interest list ------------------------------------------------------

    @initialize(pool_masks=st.lists(flag_masks, min_size=SOCKETS, max_size=SOCKETS))
    def register_pool(self, pool_masks: list[int]) -> None:
        """Start with every socket registered, so later steps find entries to act on."""
        for sock, mask in zip(self.socks, pool_masks, strict=True):
            self.same(lambda ep, sock=sock, mask=mask: ep.register(sock, mask))

    @rule(index=targets, mask=masks, as_int=st.booleans())
    def register(self, index: int, mask: Any, as_int: bool) -> None:
        fd = self.target(index, as_int)
        self.same(lambda ep: ep.register(fd, mask))

    @rule(index=targets, as_int=st.booleans())
    def register_default(self, index: int, as_int: bool) -> None:
        fd = self.target(index, as_int)
        self.same(lambda ep: ep.register(fd))

    @rule(index=targets, mask=masks, as_int=st.booleans())
    def modify(self, index: int, mask: Any, as_int: bool) -> None:
        fd = self.target(index, as_int)
        self.same(lambda ep: ep.modify(fd, mask))

    @rule(index=targets, as_int=st.booleans())
    def unregister(self, index: int, as_int: bool) -> None:
        fd = self.target(index, as_int)
        self.same(lambda ep: ep.unregister(fd))

    # -- the sockets (shared, so done once) ---------------------------------------

    @rule(index=sockets, size=sizes)
    def send(self, index: int, size: int) -> None:
        try:
            self.socks[index].send(b"s" * size)
        except OSError:
            pass  # full (EAGAIN) or shut down (EPIPE): a state worth polling too

    @rule(index=sockets, size=sizes)
    def recv(self, index: int, size: int) -> None:
        try:
            self.socks[index].recv(size)
        except OSError:
            pass  # nothing to read (EAGAIN)

    @rule(index=sockets)
    def fill(self, index: int) -> None:
        try:
            fill(self.socks[index])
        except OSError:
            pass  # shut down (EPIPE)

    @rule(index=sockets)
    def drain(self, index: int) -> None:
        drain(self.socks[index])

    @rule(index=sockets, how=st.sampled_from([socket.SHUT_WR, socket.SHUT_WR, socket.SHUT_RDWR]))
    def shutdown(self, index: int, how: int) -> None:
        try:
            self.peer(index).shutdown(how)
        except OSError:
            pass

    # -- waiting -----------------------------------------------------------------

    @rule(limit=maxevents)
    def poll(self, limit: int) -> None:
        self.same(lambda ep: ep.poll(0, limit))

    @rule(limit=maxevents)
    def poll_twice(self, limit: int) -> None:
        """Back to back: ET and ONESHOT entries must not come back the second time."""
        self.same(lambda ep: (ep.poll(0, limit), ep.poll(0.0, limit)))

    @rule(size=st.integers(min_value=1, max_value=SOCKETS + 2))
    def wait(self, size: int) -> None:
        """rawepoll's ``wait`` against the oracle's ``poll(maxevents=len(events))``."""
        events = EventArray(size)
        expected = outcome(lambda: self.oracle.poll(0, size))
        actual = outcome(lambda: list(events.ready(self.raw.wait(events, 0))))
        assert actual == expected

    @invariant()
    def same_interest_list(self) -> None:
        assert interest(self.raw) == interest(self.oracle)


SideBySide.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
)
TestSideBySide = pytest.mark.timeout(300)(SideBySide.TestCase)
