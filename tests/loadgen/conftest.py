"""Fixtures for the load generator tests: a real echo server and broken ones.

The helpers -- ``rawepoll serve`` as :class:`~support.loadgen.EchoServer`, the
:func:`~support.loadgen.bench` command, the threaded
:class:`~support.loadgen.BrokenServer` -- are in :mod:`support.loadgen`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from support.children import REPO_ROOT, python_env, wait_group_gone
from support.loadgen import (
    BENCH_BOUND,
    SIZE,
    BenchRun,
    BrokenServer,
    EchoServer,
    Mangle,
    bench,
    start_server,
    stop_server,
)

# What the test modules imported from here before support/ existed; import from support.
__all__ = [
    "BENCH_BOUND",
    "REPO_ROOT",
    "SIZE",
    "BenchRun",
    "BrokenServer",
    "EchoServer",
    "Mangle",
    "bench",
    "python_env",
    "start_server",
    "stop_server",
    "wait_group_gone",
]


@pytest.fixture(scope="module")
def echo_server() -> Iterator[EchoServer]:
    """One ``rawepoll serve --port 0`` for the module."""
    server = start_server(None, "--port", "0")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def live_server(echo_server: EchoServer) -> EchoServer:
    """The module's server, checked alive."""
    assert echo_server.alive(), f"rawepoll serve died{echo_server.tail()}"
    return echo_server


@pytest.fixture
def broken_server() -> Iterator[Callable[[Mangle], BrokenServer]]:
    """A factory: ``broken_server(mangle)`` starts a server closed at teardown."""
    servers: list[BrokenServer] = []

    def start(mangle: Mangle) -> BrokenServer:
        server = BrokenServer(mangle)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
