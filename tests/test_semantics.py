"""Kernel epoll semantics (``epoll(7)``), observed through ``rawepoll.Epoll``.

Every test runs over ``select.epoll`` too (``epoll_cls``): the stdlib passing
the same test is the proof that the test states the kernel's behaviour and
not an accident of rawepoll.  Readiness is always made by real I/O on real
sockets, never waited for by the clock.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
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

pytestmark = pytest.mark.timeout(60)

Pair = tuple[socket.socket, socket.socket]


@pytest.fixture
def ep(epoll_cls: Callable[..., Any]) -> Iterator[Any]:
    obj = epoll_cls()
    try:
        yield obj
    finally:
        obj.close()


def events_of(ep: Any) -> list[int]:
    """The registered masks, as the kernel holds them (``/proc/self/fdinfo``)."""
    return [events for _, events, _ in epoll_interest(ep.fileno())]


def einval(call: Callable[[], Any]) -> None:
    with pytest.raises(OSError) as info:
        call()
    assert info.value.errno == errno.EINVAL


# -- level- and edge-triggered ----------------------------------------------------------


def test_level_triggered_reports_until_read(ep: Any, sockpair: Pair) -> None:
    """LT (the default): a readable fd is reported by every poll until its data is read."""
    a, b = sockpair
    ep.register(a, EPOLLIN)
    assert ep.poll(0) == []
    b.send(b"hello")
    for _ in range(3):
        assert ep.poll(0) == [(a.fileno(), EPOLLIN)]
    assert a.recv(2) == b"he"
    assert ep.poll(0) == [(a.fileno(), EPOLLIN)]  # still data left
    assert drain(a) == 3
    assert ep.poll(0) == []


def test_edge_triggered_reports_each_arrival_once(ep: Any, sockpair: Pair) -> None:
    """ET: one report per arrival of new data, even while older data stays unread."""
    a, b = sockpair
    ep.register(a, EPOLLIN | EPOLLET)
    b.send(b"ab")
    assert ep.poll(0) == [(a.fileno(), EPOLLIN)]
    assert ep.poll(0) == []
    assert a.recv(1) == b"a"
    assert ep.poll(0) == []  # reading part of it is not a new edge
    b.send(b"c")
    assert ep.poll(0) == [(a.fileno(), EPOLLIN)]  # new data: a new edge
    assert ep.poll(0) == []
    assert drain(a) == 2
    assert ep.poll(0) == []


def test_edge_triggered_modify_rearms(ep: Any, sockpair: Pair) -> None:
    """EPOLL_CTL_MOD re-polls the file: an ET entry with unread data is reported again."""
    a, b = sockpair
    ep.register(a, EPOLLIN | EPOLLET)
    b.send(b"x")
    assert ep.poll(0) == [(a.fileno(), EPOLLIN)]
    assert ep.poll(0) == []
    ep.modify(a, EPOLLIN | EPOLLET)
    assert ep.poll(0) == [(a.fileno(), EPOLLIN)]
    assert ep.poll(0) == []


@pytest.mark.parametrize("writes", [[1], [1, 2, 3], [70_000, 5, 100_000], [4096] * 20])
def test_edge_triggered_drain_loses_nothing(ep: Any, sockpair: Pair, writes: list[int]) -> None:
    """ET with a read-until-EAGAIN loop receives every byte, however the writes fall.

    The peer writes between polls; each reported edge is drained completely.
    No edge is lost, and once drained nothing more is reported.
    """
    a, b = sockpair
    b.setblocking(True)
    ep.register(a, EPOLLIN | EPOLLET)
    sent = received = 0
    for size in writes:
        b.sendall(b"d" * size)
        sent += size
        result = ep.poll(10)  # the data is there: this returns at once
        assert result == [(a.fileno(), EPOLLIN)]
        for _ in range(10_000):
            try:
                chunk = a.recv(65536)
            except BlockingIOError:
                break
            received += len(chunk)
        assert ep.poll(0) == []
    assert received == sent


def test_edge_triggered_wait(sockpair: Pair) -> None:
    """ET through rawepoll's allocation-free ``wait``: one entry per edge."""
    a, b = sockpair
    events = EventArray(4)
    with rawepoll.Epoll() as ep:
        ep.register(a, EPOLLIN | EPOLLET)
        b.send(b"x")
        assert ep.wait(events, 0) == 1
        assert list(events.ready(1)) == [(a.fileno(), EPOLLIN)]
        assert ep.wait(events, 0) == 0
        b.send(b"y")
        assert ep.wait(events, 0) == 1


# -- one-shot and exclusive ------------------------------------------------------------------


def test_oneshot_reports_once_until_rearmed(ep: Any, sockpair: Pair) -> None:
    """EPOLLONESHOT: one report, then the entry is disabled (not removed) until MOD re-arms it."""
    a, b = sockpair
    ep.register(a, EPOLLIN | EPOLLONESHOT)
    b.send(b"x")
    assert ep.poll(0) == [(a.fileno(), EPOLLIN)]
    assert ep.poll(0) == []  # data still unread, but disarmed
    b.send(b"y")
    assert ep.poll(0) == []  # new data does not re-arm it either
    assert events_of(ep) == [EPOLLONESHOT]  # the kernel keeps only the private bits
    with pytest.raises(FileExistsError):
        ep.register(a, EPOLLIN)  # still registered
    ep.modify(a, EPOLLIN | EPOLLONESHOT)
    assert ep.poll(0) == [(a.fileno(), EPOLLIN)]
    assert ep.poll(0) == []
    ep.modify(a, EPOLLIN)  # back to level-triggered
    assert ep.poll(0) == [(a.fileno(), EPOLLIN)]
    assert ep.poll(0) == [(a.fileno(), EPOLLIN)]


def test_exclusive_is_add_only(ep: Any, sockpair: Pair) -> None:
    """EPOLLEXCLUSIVE is accepted by EPOLL_CTL_ADD; MOD refuses it and exclusive entries."""
    a, b = sockpair
    ep.register(a, EPOLLIN | EPOLLEXCLUSIVE)
    b.send(b"x")
    assert ep.poll(0) == [(a.fileno(), EPOLLIN)]
    einval(lambda: ep.modify(a, EPOLLIN | EPOLLEXCLUSIVE))
    einval(lambda: ep.modify(a, EPOLLIN))  # an exclusive entry cannot be modified at all
    ep.unregister(a)  # ... only removed
    ep.register(a, EPOLLIN)
    einval(lambda: ep.modify(a, EPOLLIN | EPOLLEXCLUSIVE))  # nor can MOD make one


@pytest.mark.parametrize(
    ("mask", "ok"),
    [
        (EPOLLIN | EPOLLOUT | EPOLLET | EPOLLERR | EPOLLHUP, True),
        (EPOLLOUT, True),
        (0, True),
        (EPOLLIN | EPOLLONESHOT, False),
        (EPOLLIN | EPOLLRDHUP, False),
        (EPOLLIN | EPOLLPRI | EPOLLOUT, False),  # the default mask has PRI
    ],
)
def test_exclusive_allowed_bits(ep: Any, sockpair: Pair, mask: int, ok: bool) -> None:
    """EPOLLEXCLUSIVE mixes only with IN, OUT, ERR, HUP, WAKEUP and ET; else EINVAL."""
    a, _ = sockpair
    if ok:
        ep.register(a, mask | EPOLLEXCLUSIVE)
        assert events_of(ep) == [mask | EPOLLEXCLUSIVE | EPOLLERR | EPOLLHUP]
    else:
        einval(lambda: ep.register(a, mask | EPOLLEXCLUSIVE))
        assert events_of(ep) == []


def test_exclusive_epoll_target_refused(ep: Any) -> None:
    """An epoll fd cannot be watched with EPOLLEXCLUSIVE (EINVAL), though it can without."""
    with rawepoll.Epoll() as inner:
        einval(lambda: ep.register(inner, EPOLLIN | EPOLLEXCLUSIVE))
        ep.register(inner, EPOLLIN)


# -- descriptors versus open file descriptions -----------------------------------------------


def test_stale_registration_after_dup_and_close(ep: Any, sockpair: Pair) -> None:
    """epoll keys entries by (fd number, open file description).

    Register ``a``, ``dup`` it to ``b`` and close ``a``: the description lives on,
    so events keep arriving under ``a``'s number, which can no longer be
    unregistered (EBADF: ``a`` is closed).  Closing the last duplicate ends it.
    """
    a, peer = sockpair
    number = a.fileno()
    ep.register(number, EPOLLIN)
    dup = os.dup(number)
    try:
        a.close()
        peer.send(b"x")
        assert ep.poll(0) == [(number, EPOLLIN)]
        with pytest.raises(OSError) as info:
            ep.unregister(number)
        assert info.value.errno == errno.EBADF
        assert ep.poll(0) == [(number, EPOLLIN)]
        assert [fd for fd, _, _ in epoll_interest(ep.fileno())] == [number]
    finally:
        os.close(dup)
    assert ep.poll(0) == []
    assert epoll_interest(ep.fileno()) == []


def test_close_removes_registration(ep: Any, sockpair: Pair) -> None:
    """Closing the only descriptor of a registered file drops its entry silently."""
    a, _ = sockpair
    ep.register(a, EPOLLIN | EPOLLOUT)
    assert ep.poll(0) == [(a.fileno(), EPOLLOUT)]
    a.close()
    assert ep.poll(0) == []
    assert epoll_interest(ep.fileno()) == []


def test_nested_epoll(ep: Any, sockpair: Pair) -> None:
    """An epoll fd is itself pollable: readable while its own ready list is not empty."""
    a, b = sockpair
    with rawepoll.Epoll() as inner:
        inner.register(a, EPOLLIN)
        ep.register(inner, EPOLLIN)
        assert ep.poll(0) == []
        b.send(b"x")
        assert ep.poll(0) == [(inner.fileno(), EPOLLIN)]
        assert inner.poll(0) == [(a.fileno(), EPOLLIN)]
        drain(a)
        assert ep.poll(0) == []


# -- hang-ups and errors ---------------------------------------------------------------------


def test_peer_shutdown_write_is_rdhup(ep: Any, sockpair: Pair) -> None:
    """The peer's SHUT_WR: EPOLLIN | EPOLLRDHUP (EOF to read), but no EPOLLHUP."""
    a, b = sockpair
    ep.register(a, EPOLLIN | EPOLLRDHUP)
    b.shutdown(socket.SHUT_WR)
    assert ep.poll(0) == [(a.fileno(), EPOLLIN | EPOLLRDHUP)]
    assert a.recv(1) == b""
    assert ep.poll(0) == [(a.fileno(), EPOLLIN | EPOLLRDHUP)]  # EOF stays readable


def test_peer_close_is_hup(ep: Any, sockpair: Pair) -> None:
    """The peer's close: EPOLLIN | EPOLLRDHUP | EPOLLHUP."""
    a, b = sockpair
    ep.register(a, EPOLLIN | EPOLLRDHUP)
    b.close()
    assert ep.poll(0) == [(a.fileno(), EPOLLIN | EPOLLRDHUP | EPOLLHUP)]


def test_hup_is_reported_unasked(ep: Any, sockpair: Pair) -> None:
    """EPOLLHUP (like EPOLLERR) is always watched: a mask of 0 still reports it."""
    a, b = sockpair
    ep.register(a, 0)
    assert ep.poll(0) == []
    b.send(b"x")
    assert ep.poll(0) == []
    a.shutdown(socket.SHUT_RDWR)  # both directions shut: hang-up
    assert ep.poll(0) == [(a.fileno(), EPOLLHUP)]


def test_err_on_reset(ep: Any, sockpair: Pair) -> None:
    """A peer closing with our data unread resets the connection: EPOLLERR, even with mask 0."""
    a, b = sockpair
    ep.register(a, 0)
    a.send(b"never read")
    b.close()
    assert ep.poll(0) == [(a.fileno(), EPOLLERR | EPOLLHUP)]
    with pytest.raises(ConnectionResetError):
        a.recv(1)


def test_rdhup_only_when_asked(ep: Any, sockpair: Pair) -> None:
    """EPOLLRDHUP is reported only to entries that asked for it."""
    a, b = sockpair
    ep.register(a, EPOLLIN)
    b.shutdown(socket.SHUT_WR)
    assert ep.poll(0) == [(a.fileno(), EPOLLIN)]


# -- writability -----------------------------------------------------------------------------


def test_epollout_returns_after_peer_drains(ep: Any, sockpair: Pair) -> None:
    """A full socket is not writable; EPOLLOUT comes back once the peer has read."""
    a, b = sockpair
    ep.register(a, EPOLLOUT)
    assert ep.poll(0) == [(a.fileno(), EPOLLOUT)]
    assert fill(a) > 0
    assert ep.poll(0) == []
    assert drain(b) > 0
    assert ep.poll(0) == [(a.fileno(), EPOLLOUT)]


def test_epollout_edge_triggered(ep: Any, sockpair: Pair) -> None:
    """ET on EPOLLOUT: one report when space appears, none while it merely stays."""
    a, b = sockpair
    ep.register(a, EPOLLOUT | EPOLLET)
    assert ep.poll(0) == [(a.fileno(), EPOLLOUT)]  # writable at registration
    assert ep.poll(0) == []
    fill(a)
    assert ep.poll(0) == []
    drain(b)
    assert ep.poll(0) == [(a.fileno(), EPOLLOUT)]
    assert ep.poll(0) == []


# -- the default mask's EPOLLPRI ------------------------------------------------------------


@pytest.fixture
def tcp_pair() -> Iterator[Pair]:
    """A connected TCP pair over loopback (TCP has urgent data: EPOLLPRI)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
    try:
        yield client, conn
    finally:
        client.close()
        conn.close()


def test_default_mask_includes_pri(epoll_cls: Callable[..., Any], tcp_pair: Pair) -> None:
    """``register(fd)`` with no mask watches EPOLLPRI: TCP urgent (MSG_OOB) data reports it."""
    client, conn = tcp_pair
    with epoll_cls() as ep, epoll_cls() as no_pri, epoll_cls() as arrival:
        ep.register(conn)
        no_pri.register(conn, EPOLLIN | EPOLLOUT)
        arrival.register(conn, EPOLLPRI)
        client.send(b"!", socket.MSG_OOB)
        assert arrival.poll(30) == [(conn.fileno(), EPOLLPRI)]  # wait for loopback delivery
        ((fd, mask),) = ep.poll(0)
        assert fd == conn.fileno()
        assert mask & EPOLLPRI
        assert [m & EPOLLPRI for _, m in no_pri.poll(0)] == [0]
