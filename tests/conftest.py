"""Shared fixtures: real descriptors only, in the manner of trio's test suite.

Only fixtures (and the hook that runs ``solo`` tests alone) live here; the
helpers the tests share are in :mod:`support`.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from support.solo import run_lock

import rawepoll

# The oracle and the implementation under test, for contract tests that run
# the same assertions over both.
EPOLL_CLASSES: list[Callable[..., object]] = [select.epoll, rawepoll.Epoll]
EPOLL_IDS = ["select.epoll", "rawepoll.Epoll"]


@pytest.fixture(params=EPOLL_CLASSES, ids=EPOLL_IDS)
def epoll_cls(request: pytest.FixtureRequest) -> Callable[..., object]:
    """``select.epoll`` and ``rawepoll.Epoll``, in turn."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def sockpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected, non-blocking AF_UNIX stream pair, closed afterwards."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture(params=["socket", "int"])
def as_fileobj(request: pytest.FixtureRequest) -> Callable[[socket.socket], object]:
    """Run a test with socket objects and with raw int descriptors."""
    if request.param == "int":
        return lambda sock: sock.fileno()
    return lambda sock: sock


# Modules of whole-machine measurements that do not mark themselves ``solo`` yet.
SOLO_MODULES = {"c1m/test_c1m.py"}  # kernel slab bytes per connection
TESTS_DIR = Path(__file__).resolve().parent


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """A ``solo`` test runs (setup, call, teardown) while no other xdist worker runs one."""
    module = item.path.resolve().relative_to(TESTS_DIR).as_posix()
    solo = item.get_closest_marker("solo") is not None or module in SOLO_MODULES
    with run_lock(exclusive=solo):
        return (yield)
