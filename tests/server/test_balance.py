"""How workers share a listener: ``--balance rotate`` (default) against ``--balance fill``.

Sequential connections are the telling case: between two of them there is
always an idle worker to wake.  With rotation a worker moves to the back of
the listener's queue after each accept, so three workers take turns; with
``fill`` the first idle worker takes them all while it keeps up.  The
assertions are about shares, with wide margins: a connection may go elsewhere
when its worker happens to be busy at that instant.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from .conftest import Server, roundtrip, run_serve

CONNS = 150
WORKERS = 3


def _spread(server: Server) -> list[int]:
    clients = []
    for _ in range(CONNS):
        client = server.connect()
        roundtrip(client, b"x")  # accepted and served before the next one comes
        clients.append(client)

    def counted(line: str) -> bool:
        found = re.search(r"per_worker_open=([\d,]+)", line)
        return bool(found) and sum(map(int, found.group(1).split(","))) == CONNS

    line = server.wait_stdout(counted, bound=30)
    found = re.search(r"per_worker_open=([\d,]+)", line)
    assert found is not None
    return [int(count) for count in found.group(1).split(",")]


@pytest.mark.timeout(120)
def test_rotate_takes_turns(server: Callable[..., Server]) -> None:
    spread = _spread(server("--workers", str(WORKERS), "--stats-interval", "0.1"))
    assert len(spread) == WORKERS
    assert max(spread) <= CONNS // 2, spread  # even turns give 50 each


@pytest.mark.timeout(120)
def test_fill_leaves_them_to_the_first_idle_worker(server: Callable[..., Server]) -> None:
    spread = _spread(
        server("--workers", str(WORKERS), "--balance", "fill", "--stats-interval", "0.1")
    )
    assert max(spread) > CONNS // 2, spread


@pytest.mark.timeout(120)
def test_fill_moves_on_when_a_worker_is_full(server: Callable[..., Server]) -> None:
    """A full worker stops watching the listener: the others take the rest, none refused."""
    spread = _spread(
        server(
            "--workers",
            str(WORKERS),
            "--balance",
            "fill",
            "--max-conns",
            "60",
            "--stats-interval",
            "0.1",
        )
    )
    assert max(spread) <= 60 and sum(spread) == CONNS, spread


def test_balance_must_be_known() -> None:
    result = run_serve("--balance", "random")
    assert result.returncode == 2
    assert "--balance" in result.stderr
