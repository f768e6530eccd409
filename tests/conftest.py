"""Shared fixtures: real descriptors only, in the manner of trio's test suite."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Callable, Iterator

import pytest

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


def fill(sock: socket.socket, chunk: int = 65536) -> int:
    """Write until the kernel says EAGAIN; return the bytes written (bounded)."""
    total = 0
    data = b"x" * chunk
    for _ in range(100_000):
        try:
            total += sock.send(data)
        except BlockingIOError:
            return total
    raise AssertionError("socket never filled up")


def drain(sock: socket.socket, chunk: int = 65536) -> int:
    """Read until EAGAIN (or EOF); return the bytes read (bounded)."""
    total = 0
    for _ in range(100_000):
        try:
            data = sock.recv(chunk)
        except BlockingIOError:
            return total
        if not data:
            return total
        total += len(data)
    raise AssertionError("socket never drained")


def open_fds() -> int:
    """How many descriptors this process holds now."""
    return len(os.listdir("/proc/self/fd"))
