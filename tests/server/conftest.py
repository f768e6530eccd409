"""Fixtures for the echo server tests: a server in a subprocess, clients on loopback.

Every server runs as ``python -m rawepoll serve --port 0 ...`` in a session of its
own, is found through its ``ready`` event (``--status-fd``), and is always stopped:
SIGTERM, a bounded drain, then SIGKILL of the whole group -- also when the test
failed.  The helpers are in :mod:`support.servers`, :mod:`support.clients` and
:mod:`support.proc`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from support.servers import Server, ServerRunner


@pytest.fixture
def server() -> Iterator[Callable[..., Server]]:
    """A factory: ``server("--mode", "et")`` starts a server stopped at teardown."""
    with ServerRunner() as runner:
        yield runner.start
