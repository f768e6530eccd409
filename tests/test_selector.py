"""``rawepoll.EpollSelector`` against its oracle, ``selectors.EpollSelector``.

One contract, run over both classes (as CPython's ``test_selectors`` runs one
mixin over every selector): registration with file objects and raw fds, the
``KeyError``/``ValueError`` cases, the rollback when ``epoll_ctl`` fails,
readiness (ERR/HUP as both read and write, masked by the key), the read-only
map, closing, growth past the first event buffer, and PEP 475 retries.  A
hypothesis state machine then drives both selectors over the same sockets and
compares every result and every exception type.
"""

from __future__ import annotations

import collections.abc
import errno
import os
import selectors
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from support.fds import drain, fill, open_fds
from support.proc import wait_until_in_epoll_wait

import rawepoll

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
BOTH = READ | WRITE

SELECTOR_CLASSES: list[type[selectors.BaseSelector]] = [
    selectors.EpollSelector,
    rawepoll.EpollSelector,
]
SELECTOR_IDS = ["selectors.EpollSelector", "rawepoll.EpollSelector"]

Pair = tuple[socket.socket, socket.socket]


@pytest.fixture(params=SELECTOR_CLASSES, ids=SELECTOR_IDS)
def selector_cls(request: pytest.FixtureRequest) -> type[selectors.BaseSelector]:
    """``selectors.EpollSelector`` and ``rawepoll.EpollSelector``, in turn."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def sel(selector_cls: type[selectors.BaseSelector]) -> Iterator[selectors.BaseSelector]:
    """A fresh selector of the class under test, closed afterwards."""
    selector = selector_cls()
    try:
        yield selector
    finally:
        selector.close()


class Descriptors:
    """Socketpairs and pipes made for one test; whatever is still open is closed after it."""

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []
        self._fds: set[int] = set()

    def pair(self) -> Pair:
        a, b = socket.socketpair()
        self._sockets += [a, b]
        a.setblocking(False)
        b.setblocking(False)
        return a, b

    def pairs(self, n: int) -> list[Pair]:
        return [self.pair() for _ in range(n)]

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        self._fds |= {r, w}
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        return r, w

    def close(self, fd: int) -> None:
        """Close a raw fd made by :meth:`pipe` (behind a selector's back)."""
        self._fds.remove(fd)
        os.close(fd)

    def close_all(self) -> None:
        for sock in self._sockets:
            sock.close()
        for fd in self._fds:
            os.close(fd)


@pytest.fixture
def fds() -> Iterator[Descriptors]:
    made = Descriptors()
    try:
        yield made
    finally:
        made.close_all()


def ready_fds(result: list[tuple[selectors.SelectorKey, int]]) -> list[tuple[int, int]]:
    """``select()``'s result as sorted ``(fd, events)`` pairs."""
    return sorted((key.fd, events) for key, events in result)


# -- register -----------------------------------------------------------


def test_register_returns_the_key(
    sel: selectors.BaseSelector, sockpair: Pair, as_fileobj: Any
) -> None:
    a, _ = sockpair
    obj = as_fileobj(a)
    key = sel.register(obj, READ, "token")
    assert isinstance(key, selectors.SelectorKey)
    assert key.fileobj is obj
    assert key.fd == a.fileno()
    assert key.events == READ
    assert key.data == "token"
    assert sel.get_key(obj) is key
    assert sel.get_key(a.fileno()) is key


def test_register_data_defaults_to_none(sel: selectors.BaseSelector, sockpair: Pair) -> None:
    key = sel.register(sockpair[0], BOTH)
    assert key.data is None
    assert key.events == BOTH


@pytest.mark.parametrize("events", [0, 4, -1, 8, BOTH | 4])
def test_register_invalid_events(
    sel: selectors.BaseSelector, sockpair: Pair, as_fileobj: Any, events: int
) -> None:
    obj = as_fileobj(sockpair[0])
    with pytest.raises(ValueError):
        sel.register(obj, events)
    assert len(sel.get_map()) == 0
    # Nothing was left behind in the kernel either: a valid register succeeds.
    assert sel.register(obj, READ).events == READ


class _NegativeFileno:
    def fileno(self) -> int:
        return -1


class _BrokenFileno:
    def fileno(self) -> int:
        raise ValueError("I/O operation on closed file")


@pytest.mark.parametrize(
    "fileobj",
    [-1, -100, "not a file", 1.5, None, object(), _NegativeFileno(), _BrokenFileno()],
    ids=["-1", "-100", "str", "float", "None", "object", "fileno=-1", "fileno-raises"],
)
def test_invalid_file_objects_raise_valueerror(sel: selectors.BaseSelector, fileobj: Any) -> None:
    with pytest.raises(ValueError):
        sel.register(fileobj, READ)
    with pytest.raises(ValueError):
        sel.unregister(fileobj)
    with pytest.raises(ValueError):
        sel.modify(fileobj, READ)
    with pytest.raises(ValueError):
        sel.get_key(fileobj)
    assert len(sel.get_map()) == 0


def test_register_closed_socket_raises_valueerror(
    sel: selectors.BaseSelector, fds: Descriptors
) -> None:
    a, _ = fds.pair()
    a.close()  # fileno() is now -1
    with pytest.raises(ValueError):
        sel.register(a, READ)
    assert len(sel.get_map()) == 0


def test_register_twice_raises_keyerror(
    sel: selectors.BaseSelector, sockpair: Pair, as_fileobj: Any
) -> None:
    a, _ = sockpair
    key = sel.register(as_fileobj(a), READ, "first")
    with pytest.raises(KeyError):
        sel.register(as_fileobj(a), WRITE, "second")
    # The same fd under its other name (int vs socket) is the same registration.
    with pytest.raises(KeyError):
        sel.register(a.fileno() if key.fileobj is a else a, WRITE)
    assert sel.get_key(a) is key
    assert len(sel.get_map()) == 1


def test_register_unpollable_fd_rolls_back(
    sel: selectors.BaseSelector, tmp_path: Any, sockpair: Pair
) -> None:
    # epoll refuses regular files with EPERM; the key must not stay behind.
    with open(tmp_path / "regular", "wb") as f:
        with pytest.raises(PermissionError):
            sel.register(f, READ)
        assert f not in sel.get_map()
        assert len(sel.get_map()) == 0
    sel.register(sockpair[0], READ)
    assert len(sel.get_map()) == 1


def test_register_closed_fd_number_rolls_back(
    sel: selectors.BaseSelector, fds: Descriptors
) -> None:
    _, w = fds.pipe()
    fds.close(w)
    with pytest.raises(OSError) as excinfo:
        sel.register(w, WRITE)
    assert excinfo.value.errno == errno.EBADF
    assert w not in sel.get_map()


# -- unregister ---------------------------------------------------------


def test_unregister_returns_the_key_and_forgets_it(
    sel: selectors.BaseSelector, sockpair: Pair, as_fileobj: Any
) -> None:
    a, _ = sockpair
    obj = as_fileobj(a)
    key = sel.register(obj, WRITE, "data")
    assert sel.unregister(obj) is key
    assert len(sel.get_map()) == 0
    with pytest.raises(KeyError):
        sel.get_key(obj)
    # Still writable, but no longer reported: the kernel forgot it too.
    assert sel.select(0) == []
    # And it can be registered again.
    assert sel.register(obj, WRITE).events == WRITE
    assert ready_fds(sel.select(0)) == [(a.fileno(), WRITE)]


def test_unregister_unknown_raises_keyerror(
    sel: selectors.BaseSelector, sockpair: Pair, as_fileobj: Any
) -> None:
    a, b = sockpair
    with pytest.raises(KeyError):
        sel.unregister(as_fileobj(a))
    sel.register(as_fileobj(b), READ)
    with pytest.raises(KeyError):
        sel.unregister(as_fileobj(a))
    sel.unregister(as_fileobj(b))
    with pytest.raises(KeyError):
        sel.unregister(as_fileobj(b))


def test_unregister_after_fd_closed_ignores_oserror(
    sel: selectors.BaseSelector, fds: Descriptors
) -> None:
    r, _ = fds.pipe()
    key = sel.register(r, READ, "gone")
    fds.close(r)  # behind the selector's back: epoll_ctl(DEL) now fails with EBADF
    assert sel.unregister(r) is key
    assert len(sel.get_map()) == 0


def test_unregister_closed_file_object_found_by_identity(
    sel: selectors.BaseSelector, fds: Descriptors
) -> None:
    a, _ = fds.pair()
    fd = a.fileno()
    key = sel.register(a, READ)
    a.close()  # a.fileno() is -1 now; the selector must search its keys
    assert sel.unregister(a) is key
    assert fd not in sel.get_map()
    assert len(sel.get_map()) == 0


def test_unregister_closed_file_object_never_registered(
    sel: selectors.BaseSelector, fds: Descriptors
) -> None:
    a, b = fds.pair()
    sel.register(b, READ)
    a.close()
    with pytest.raises(ValueError):
        sel.unregister(a)
    assert len(sel.get_map()) == 1


# -- modify -------------------------------------------------------------


def test_modify_events(sel: selectors.BaseSelector, sockpair: Pair, as_fileobj: Any) -> None:
    a, _ = sockpair
    obj = as_fileobj(a)
    key = sel.register(obj, READ, "data")
    assert sel.select(0) == []  # writable, but only READ is asked for
    new = sel.modify(obj, WRITE, "data")
    assert new.fileobj is obj
    assert (new.fd, new.events, new.data) == (key.fd, WRITE, "data")
    assert sel.get_key(obj) is new
    assert sel.select(0) == [(new, WRITE)]


def test_modify_data_defaults_to_none(sel: selectors.BaseSelector, sockpair: Pair) -> None:
    sel.register(sockpair[0], READ, "data")
    assert sel.modify(sockpair[0], WRITE).data is None
    assert sel.modify(sockpair[0], WRITE, "again").data == "again"
    assert sel.modify(sockpair[0], WRITE).data is None


def test_modify_only_data_keeps_events(
    sel: selectors.BaseSelector, sockpair: Pair, as_fileobj: Any
) -> None:
    a, b = sockpair
    obj = as_fileobj(a)
    sel.register(obj, BOTH, "old")
    new = sel.modify(obj, BOTH, "new")
    assert (new.events, new.data) == (BOTH, "new")
    assert sel.get_key(obj) is new
    b.send(b"x")
    assert sel.select(0) == [(new, BOTH)]


def test_modify_unchanged_returns_the_same_key(
    sel: selectors.BaseSelector, sockpair: Pair, as_fileobj: Any
) -> None:
    obj = as_fileobj(sockpair[0])
    data = object()
    key = sel.register(obj, READ, data)
    assert sel.modify(obj, READ, data) is key


def test_modify_unknown_raises_keyerror(
    sel: selectors.BaseSelector, sockpair: Pair, as_fileobj: Any
) -> None:
    a, b = sockpair
    with pytest.raises(KeyError):
        sel.modify(as_fileobj(a), READ)
    sel.register(b, READ)
    with pytest.raises(KeyError):
        sel.modify(as_fileobj(a), READ)
    assert len(sel.get_map()) == 1


def test_modify_failure_rolls_back_the_key(
    sel: selectors.BaseSelector, fds: Descriptors, as_fileobj: Any
) -> None:
    a, _ = fds.pair()
    fd = a.fileno()
    obj = as_fileobj(a)
    sel.register(obj, READ)
    a.close()  # behind the selector's back; the kernel drops the registration
    with pytest.raises(OSError) as excinfo:
        sel.modify(obj, WRITE)
    assert excinfo.value.errno == errno.EBADF
    assert fd not in sel.get_map()
    assert len(sel.get_map()) == 0


def test_modify_only_data_makes_no_system_call(
    sel: selectors.BaseSelector, fds: Descriptors
) -> None:
    r, _ = fds.pipe()
    sel.register(r, READ, "old")
    fds.close(r)
    # Same events: the kernel is not asked, so the closed fd goes unnoticed.
    assert sel.modify(r, READ, "new").data == "new"
    assert sel.unregister(r).data == "new"


@pytest.mark.parametrize("events", [0, 4, -1, 8, BOTH | 4])
def test_modify_invalid_events_as_stdlib(events: int) -> None:
    # The stdlib's poll-like selectors do not validate modify()'s events; the
    # drop-in must neither be stricter nor looser.  Compare the two directly.
    outcomes = []
    for cls in SELECTOR_CLASSES:
        a, b = socket.socketpair()
        with a, b, cls() as selector:
            selector.register(a, READ)
            b.send(b"x")
            try:
                key = selector.modify(a, events)
                outcome: object = (key.events, ready_fds(selector.select(0)))
            except Exception as exc:
                outcome = type(exc)
            left = [key.events for key in selector.get_map().values()]
            outcomes.append((outcome, left))
    assert outcomes[0] == outcomes[1]


# -- select -------------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, 0, 0.0, -1, -0.5, 0.0001, 0.5, 1, 2.5])
def test_select_timeouts_return_ready_keys(
    sel: selectors.BaseSelector, sockpair: Pair, timeout: float | None
) -> None:
    a, _ = sockpair
    key = sel.register(a, WRITE)
    result = sel.select(timeout)
    assert isinstance(result, list)
    assert result == [(key, WRITE)]
    assert result[0][0] is key


@pytest.mark.parametrize(
    "timeout",
    [1e9, 1e200, -1e200, 10**400, float("nan"), float("inf"), float("-inf"), "1", 2**31 // 1000],
    ids=["1e9", "1e200", "-1e200", "10**400", "nan", "inf", "-inf", "str", "INT_MAX-ms"],
)
def test_select_odd_timeouts_as_stdlib(timeout: object) -> None:
    # Errors from converting the timeout (OverflowError, ValueError,
    # TypeError) come from both layers of each selector; they must agree.
    outcomes: list[object] = []
    for cls in SELECTOR_CLASSES:
        a, b = socket.socketpair()
        with a, b, cls() as selector:
            selector.register(a, WRITE)  # ready: a valid timeout returns at once
            try:
                outcomes.append([events for _, events in selector.select(timeout)])  # type: ignore[arg-type]
            except Exception as exc:
                outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("timeout", [0, -1, 0.0, 0.001, 0.01])
def test_select_nothing_ready(sel: selectors.BaseSelector, sockpair: Pair, timeout: float) -> None:
    sel.register(sockpair[0], READ)
    assert sel.select(timeout) == []


@pytest.mark.parametrize("timeout", [0, -1, 0.0, 0.001])
def test_select_with_nothing_registered(sel: selectors.BaseSelector, timeout: float) -> None:
    assert sel.select(timeout) == []


def test_select_reports_read_and_write(
    sel: selectors.BaseSelector, sockpair: Pair, as_fileobj: Any
) -> None:
    a, b = sockpair
    key = sel.register(as_fileobj(a), BOTH)
    assert sel.select(0) == [(key, WRITE)]
    b.send(b"ping")
    assert sel.select(0) == [(key, BOTH)]
    assert sel.select(None) == [(key, BOTH)]  # level-triggered: still ready
    drain(a)
    assert sel.select(0) == [(key, WRITE)]


def test_select_masks_events_by_key(sel: selectors.BaseSelector, fds: Descriptors) -> None:
    (a, b), (c, d) = fds.pairs(2)
    b.send(b"data")  # a: readable and writable
    d.send(b"data")  # c: readable and writable
    ka = sel.register(a, READ)
    kc = sel.register(c, WRITE)
    assert sorted(sel.select(0), key=lambda ready: ready[0].fd) == sorted(
        [(ka, READ), (kc, WRITE)], key=lambda ready: ready[0].fd
    )


def test_select_write_blocks_when_buffer_full(sel: selectors.BaseSelector, sockpair: Pair) -> None:
    a, b = sockpair
    key = sel.register(a, WRITE)
    fill(a)
    assert sel.select(0) == []
    drain(b)
    assert sel.select(None) == [(key, WRITE)]


def test_peer_close_reports_read_and_write(sel: selectors.BaseSelector, fds: Descriptors) -> None:
    a, b = fds.pair()
    key = sel.register(a, BOTH)
    assert sel.select(0) == [(key, WRITE)]
    b.close()
    assert sel.select(0) == [(key, BOTH)]


def test_hup_alone_is_read_and_write(sel: selectors.BaseSelector, fds: Descriptors) -> None:
    # The read end of an empty pipe whose writer is gone reports EPOLLHUP
    # without EPOLLIN: the selector turns it into READ | WRITE.
    r, w = fds.pipe()
    key = sel.register(r, BOTH)
    assert sel.select(0) == []
    fds.close(w)
    assert sel.select(0) == [(key, BOTH)]


def test_hup_alone_is_masked_by_key(sel: selectors.BaseSelector, fds: Descriptors) -> None:
    r, w = fds.pipe()
    key = sel.register(r, WRITE)  # EPOLLOUT on a read end: never set by itself
    assert sel.select(0) == []
    fds.close(w)
    assert sel.select(0) == [(key, WRITE)]


def test_err_alone_is_read_and_write(sel: selectors.BaseSelector, fds: Descriptors) -> None:
    # A full pipe whose reader is gone reports EPOLLERR without EPOLLOUT.
    r, w = fds.pipe()
    while True:
        try:
            os.write(w, b"x" * 65536)
        except BlockingIOError:
            break
    key = sel.register(w, BOTH)
    assert sel.select(0) == []
    fds.close(r)
    assert sel.select(0) == [(key, BOTH)]
    sel.modify(w, READ)
    assert sel.select(0) == [(sel.get_key(w), READ)]


def test_unconnected_tcp_socket_hup_is_read(sel: selectors.BaseSelector) -> None:
    # A fresh TCP socket reports EPOLLOUT | EPOLLHUP; with only READ asked
    # for, the HUP still surfaces as READ.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        key = sel.register(s, READ)
        assert sel.select(0) == [(key, READ)]


@pytest.mark.parametrize("count", [1, 63, 64, 65, 200])
def test_select_returns_every_ready_fd(
    sel: selectors.BaseSelector, fds: Descriptors, count: int
) -> None:
    # More fds than the first event buffer holds (64): the buffer must grow.
    ends = [a for a, _ in fds.pairs(count)]
    keys = {sel.register(a, WRITE, i).fd: i for i, a in enumerate(ends)}
    result = sel.select(0)
    assert len(result) == count
    assert {key.fd: key.data for key, _ in result} == keys
    assert {events for _, events in result} == {WRITE}
    assert len(sel.select(None)) == count


def test_select_grows_after_first_wait(sel: selectors.BaseSelector, fds: Descriptors) -> None:
    pairs = fds.pairs(200)
    sel.register(pairs[0][0], WRITE)
    assert len(sel.select(0)) == 1
    for a, _ in pairs[1:]:
        sel.register(a, WRITE)
    assert len(sel.select(0)) == 200
    for a, _ in pairs[50:]:
        sel.unregister(a)
    assert ready_fds(sel.select(0)) == sorted((a.fileno(), WRITE) for a, _ in pairs[:50])
    for a, b in pairs[50:]:
        sel.register(a, READ)
        b.send(b"!")
    result = sel.select(0)
    assert len(result) == 200
    assert sorted(events for _, events in result) == [READ] * 150 + [WRITE] * 50


def test_select_skips_fds_unregistered_meanwhile(
    sel: selectors.BaseSelector, fds: Descriptors
) -> None:
    (a, _), (c, _) = fds.pairs(2)
    sel.register(a, WRITE)
    kc = sel.register(c, WRITE)
    sel.unregister(a)
    assert sel.select(0) == [(kc, WRITE)]


# -- get_key / get_map --------------------------------------------------


def test_get_key(sel: selectors.BaseSelector, sockpair: Pair, as_fileobj: Any) -> None:
    a, b = sockpair
    key = sel.register(as_fileobj(a), READ)
    assert sel.get_key(as_fileobj(a)) is key
    with pytest.raises(KeyError):
        sel.get_key(as_fileobj(b))
    with pytest.raises(KeyError):
        sel.get_key(b)


def test_get_map_is_a_live_read_only_mapping(sel: selectors.BaseSelector, fds: Descriptors) -> None:
    (a, b), (c, d) = fds.pairs(2)
    mapping = sel.get_map()
    assert isinstance(mapping, collections.abc.Mapping)
    assert len(mapping) == 0
    ka = sel.register(a, READ, "a")
    kc = sel.register(c.fileno(), WRITE, "c")
    assert len(mapping) == 2
    assert set(mapping) == {a.fileno(), c.fileno()}
    assert a in mapping
    assert a.fileno() in mapping
    assert c in mapping
    assert b not in mapping
    assert mapping[a] is ka
    assert mapping[a.fileno()] is ka
    assert mapping[c] is kc
    assert mapping.get(d) is None
    assert dict(mapping.items()) == {a.fileno(): ka, c.fileno(): kc}
    with pytest.raises(KeyError):
        mapping[b]
    with pytest.raises(TypeError):
        mapping[b] = ka  # type: ignore[index]
    with pytest.raises(TypeError):
        del mapping[a]  # type: ignore[attr-defined]
    sel.unregister(a)
    assert len(mapping) == 1
    assert a not in mapping
    assert list(mapping.values()) == [kc]


# -- lifetime -----------------------------------------------------------


def test_get_key_after_close_raises_runtimeerror(
    selector_cls: type[selectors.BaseSelector], sockpair: Pair
) -> None:
    selector = selector_cls()
    selector.register(sockpair[0], READ)
    selector.close()
    with pytest.raises(RuntimeError):
        selector.get_key(sockpair[0])


def test_get_map_after_close(selector_cls: type[selectors.BaseSelector], sockpair: Pair) -> None:
    # Whatever this Python's stdlib returns after close(), the drop-in returns too.
    with selectors.EpollSelector() as oracle:
        pass
    expected = oracle.get_map()
    selector = selector_cls()
    selector.register(sockpair[0], READ)
    selector.close()
    assert selector.get_map() == expected
    assert selector.get_map() is None


def test_close_closes_the_epoll_fd(
    selector_cls: type[selectors.BaseSelector], sockpair: Pair
) -> None:
    before = open_fds()
    selector = selector_cls()
    fd = selector.fileno()  # type: ignore[attr-defined]
    assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventpoll]"
    selector.register(sockpair[0], READ)
    assert open_fds() == before + 1
    selector.close()
    assert open_fds() == before
    selector.close()  # twice is harmless
    with pytest.raises(ValueError):
        selector.fileno()  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        selector.select(0)
    with pytest.raises(ValueError):
        selector.register(sockpair[1], READ)


def test_context_manager(selector_cls: type[selectors.BaseSelector], sockpair: Pair) -> None:
    before = open_fds()
    with selector_cls() as selector:
        assert isinstance(selector, selector_cls)
        key = selector.register(sockpair[0], WRITE)
        assert selector.select(0) == [(key, WRITE)]
    assert selector.get_map() is None
    assert open_fds() == before


def test_context_manager_closes_on_exception(selector_cls: type[selectors.BaseSelector]) -> None:
    before = open_fds()
    with pytest.raises(ZeroDivisionError), selector_cls() as selector:
        1 / 0  # noqa: B018
    assert selector.get_map() is None
    assert open_fds() == before


def test_fileno_is_a_private_epoll_fd(sel: selectors.BaseSelector) -> None:
    fd = sel.fileno()  # type: ignore[attr-defined]
    assert isinstance(fd, int)
    assert fd >= 0
    assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventpoll]"
    assert not os.get_inheritable(fd)  # EPOLL_CLOEXEC
    assert sel.fileno() == fd  # type: ignore[attr-defined]


def test_selectors_do_not_share_state(
    selector_cls: type[selectors.BaseSelector], sockpair: Pair
) -> None:
    a, _ = sockpair
    with selector_cls() as one, selector_cls() as two:
        assert one.fileno() != two.fileno()  # type: ignore[attr-defined]
        key = one.register(a, WRITE)
        assert two.select(0) == []
        assert one.select(0) == [(key, WRITE)]


def test_register_from_another_thread_wakes_select(
    sel: selectors.BaseSelector, sockpair: Pair
) -> None:
    # The wait must release the GIL, and epoll must see registrations made
    # while it sleeps (as with select.epoll).
    a, _ = sockpair
    main = threading.get_native_id()
    seen: list[bool] = []

    def register_later() -> None:
        seen.append(_reached_epoll_wait(main))
        sel.register(a, WRITE, "late")  # even if not: no hang

    thread = threading.Thread(target=register_later)
    thread.start()
    try:
        result = sel.select(None)
    finally:
        thread.join()
    assert seen == [True]
    assert [(key.data, events) for key, events in result] == [("late", WRITE)]


@pytest.mark.timeout(60)
def test_concurrent_selects_get_their_own_results(
    sel: selectors.BaseSelector, fds: Descriptors
) -> None:
    # Two threads blocked in select() on one selector (the GIL is released in
    # the wait) must each get the kernel's answer to their own call: select.epoll
    # gives every poll its own buffer, so no key can appear twice in a result.
    pairs = fds.pairs(8)
    for a, b in pairs:
        b.send(b"x")  # all readable; the last four stay so, select(None) never sleeps
        sel.register(a, READ)
    toggled = pairs[:4]
    stop = threading.Event()
    duplicates: list[list[int]] = []

    def toggle() -> None:
        i = 0
        while not stop.is_set():
            a, b = toggled[i % len(toggled)]
            a.recv(1)
            b.send(b"x")
            i += 1

    def select_many() -> None:
        for _ in range(20_000):
            got = [key.fd for key, _ in sel.select(None)]
            if len(got) != len(set(got)):
                duplicates.append(got)

    toggler = threading.Thread(target=toggle)
    selecting = [threading.Thread(target=select_many) for _ in range(2)]
    toggler.start()
    try:
        for thread in selecting:
            thread.start()
        for thread in selecting:
            thread.join()
    finally:
        stop.set()
        toggler.join()
    assert duplicates == []


# -- signals (PEP 475) --------------------------------------------------


def _reached_epoll_wait(tid: int) -> bool:
    try:
        wait_until_in_epoll_wait(tid)
    except AssertionError:
        return False
    return True


class _Interrupter:
    """Sends SIGUSR1 to the main thread once it sleeps in epoll_wait."""

    def __init__(self, handler: Callable[[int, object], object]) -> None:
        self.calls = 0
        self.seen: list[bool] = []
        self._handler = handler
        self._tid = threading.get_native_id()
        self._ident = threading.get_ident()
        self._thread = threading.Thread(target=self._run)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.calls += 1
        self._handler(signum, frame)

    def _run(self) -> None:
        self.seen.append(_reached_epoll_wait(self._tid))
        signal.pthread_kill(self._ident, signal.SIGUSR1)  # even if not: no hang

    def __enter__(self) -> _Interrupter:
        self._previous = signal.signal(signal.SIGUSR1, self._on_signal)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._thread.join()
        signal.signal(signal.SIGUSR1, self._previous)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("timeout", [None, 30.0])
def test_signal_during_select_is_retried(
    sel: selectors.BaseSelector, sockpair: Pair, timeout: float | None
) -> None:
    a, b = sockpair
    key = sel.register(a, READ)
    # The handler itself makes the fd ready: the select can only return it if
    # the wait was retried after EINTR (and it must not raise InterruptedError).
    with _Interrupter(lambda signum, frame: b.send(b"!")) as interrupter:
        result = sel.select(timeout)
    assert interrupter.seen == [True]
    assert interrupter.calls == 1
    assert result == [(key, READ)]


@pytest.mark.timeout(60)
def test_signal_during_select_with_timeout_returns_empty(
    sel: selectors.BaseSelector, sockpair: Pair
) -> None:
    sel.register(sockpair[0], READ)
    with _Interrupter(lambda signum, frame: None) as interrupter:
        result = sel.select(0.5)
    assert interrupter.seen == [True]
    assert interrupter.calls == 1
    assert result == []


class _HandlerError(Exception):
    pass


def _raise_handler_error(signum: int, frame: object) -> None:
    raise _HandlerError


@pytest.mark.timeout(60)
def test_signal_handler_exception_propagates(sel: selectors.BaseSelector, sockpair: Pair) -> None:
    a, _ = sockpair
    key = sel.register(a, READ)
    with pytest.raises(_HandlerError), _Interrupter(_raise_handler_error):
        sel.select(None)
    # The selector is unharmed.
    assert sel.get_key(a) is key
    assert sel.select(0) == []


# -- the two selectors agree, step by step --------------------------------

_PAIRS = 4


def _outcome(call: Callable[[], Any]) -> object:
    """What a call did: its (normalised) result, or the type of its exception."""
    try:
        result = call()
    except Exception as exc:
        return type(exc)
    if isinstance(result, list):
        return ready_fds(result)
    if isinstance(result, selectors.SelectorKey):
        return (id(result.fileobj), result.fd, result.events, result.data)
    return result


def _ignore_oserror(call: Callable[[], object]) -> None:
    try:
        call()
    except OSError:
        pass  # EAGAIN, EPIPE, ENOTCONN, EBADF: the step just does nothing


class SelectorsAgree(RuleBasedStateMachine):
    """``selectors.EpollSelector`` and ``rawepoll.EpollSelector`` over the same sockets.

    The pool: ``_PAIRS`` socketpairs (socket ``i``'s peer is ``i ^ 1``), an
    unconnected TCP socket (EPOLLHUP without EPOLLIN) and an unbound UDP
    socket.  Sockets may be closed behind the selectors' backs; their fd
    numbers stay in use as raw-int file objects.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sockets: list[socket.socket] = []
        for _ in range(_PAIRS):
            self.sockets += socket.socketpair()
        self.sockets.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        self.sockets.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        for sock in self.sockets:
            sock.setblocking(False)
        self.fds = [sock.fileno() for sock in self.sockets]
        self.selectors = [cls() for cls in SELECTOR_CLASSES]

    def teardown(self) -> None:
        for selector in self.selectors:
            selector.close()
        for sock in self.sockets:
            sock.close()

    def fileobj(self, index: int, as_int: bool) -> Any:
        return self.fds[index] if as_int else self.sockets[index]

    def both(self, call: Callable[[selectors.BaseSelector], Any]) -> None:
        expected, got = (_outcome(lambda s=s: call(s)) for s in self.selectors)  # type: ignore[misc]
        assert got == expected

    sockets_ = st.integers(0, 2 * _PAIRS + 1)
    events_ = st.one_of(st.sampled_from([READ, WRITE, BOTH]), st.integers(-1, 8))
    data_ = st.sampled_from([None, "a", "b"])

    @rule(i=sockets_, events=events_, data=data_, as_int=st.booleans())
    def register(self, i: int, events: int, data: str | None, as_int: bool) -> None:
        obj = self.fileobj(i, as_int)
        self.both(lambda s: s.register(obj, events, data))

    @rule(i=sockets_, events=events_, data=data_, as_int=st.booleans())
    def modify(self, i: int, events: int, data: str | None, as_int: bool) -> None:
        obj = self.fileobj(i, as_int)
        self.both(lambda s: s.modify(obj, events, data))

    @rule(i=sockets_, as_int=st.booleans())
    def unregister(self, i: int, as_int: bool) -> None:
        obj = self.fileobj(i, as_int)
        self.both(lambda s: s.unregister(obj))

    @rule(i=sockets_, as_int=st.booleans())
    def get_key(self, i: int, as_int: bool) -> None:
        obj = self.fileobj(i, as_int)
        self.both(lambda s: s.get_key(obj))

    @rule(timeout=st.sampled_from([0, 0.0, -1, 0.0001]))
    def select(self, timeout: float) -> None:
        self.both(lambda s: s.select(timeout))

    @rule(i=sockets_, size=st.integers(1, 4096))
    def send(self, i: int, size: int) -> None:
        _ignore_oserror(lambda: self.sockets[i].send(b"s" * size))

    @rule(i=sockets_)
    def drain(self, i: int) -> None:
        _ignore_oserror(lambda: drain(self.sockets[i]))

    @rule(i=sockets_)
    def fill(self, i: int) -> None:
        _ignore_oserror(lambda: fill(self.sockets[i]))

    @rule(i=sockets_, how=st.sampled_from([socket.SHUT_RD, socket.SHUT_WR, socket.SHUT_RDWR]))
    def shutdown(self, i: int, how: int) -> None:
        _ignore_oserror(lambda: self.sockets[i].shutdown(how))

    @rule(i=sockets_)
    def close(self, i: int) -> None:
        self.sockets[i].close()  # behind the selectors' backs

    @invariant()
    def maps_agree(self) -> None:
        maps = [
            {fd: (id(k.fileobj), k.events, k.data) for fd, k in s.get_map().items()}
            for s in self.selectors
        ]
        assert maps[0] == maps[1]


TestSelectorsAgree = SelectorsAgree.TestCase
TestSelectorsAgree.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
