"""Servers shared by the tests of a module (each started once, checked when it stops)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rawepoll.tools.serverproc import ServerProcess

from .helpers import serve

MAX_MESSAGE = 4096  # the limited server's --max-message


def stop_cleanly(server: ServerProcess) -> dict[str, int]:
    """Stop ``server``; it must drain and exit 0, no handler having failed. Its counters."""
    stopped = server.stop()
    assert stopped.clean, (stopped, server.tail())
    assert stopped.counters["handler_errors"] == 0, stopped.counters
    return stopped.counters


@pytest.fixture(scope="module", params=["lt", "et"])
def echo_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """The default application (echo), one worker, level- and edge-triggered in turn."""
    with serve(mode=request.param) as server:
        yield server
        stop_cleanly(server)


@pytest.fixture(scope="module")
def limited_server() -> Iterator[ServerProcess]:
    """The default application with ``--max-message`` :data:`MAX_MESSAGE`."""
    with serve("--max-message", str(MAX_MESSAGE)) as server:
        yield server
        stop_cleanly(server)
