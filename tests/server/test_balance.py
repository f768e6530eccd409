"""How workers share a listener: ``--balance rotate`` (default) against ``--balance fill``.

Sequential connections are the telling case: between two of them there is
always an idle worker to wake (the test waits until every worker sleeps in
``epoll_wait`` before it connects again).  With rotation a worker moves to the back of
the listener's queue after each accept, so three workers take turns; with
``fill`` the first idle worker takes them all while it keeps up.  The
assertions are about shares, with wide margins: a connection may go elsewhere
when its worker happens to be busy at that instant.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support.clients import roundtrip
from support.proc import in_epoll_wait, wait_until
from support.servers import Server, run_serve

CONNS = 150
WORKERS = 3


def _spread(server: Server) -> list[int]:
    workers = server.ready.workers
    clients = []
    for _ in range(CONNS):
        # Every worker back in epoll_wait: the policy alone picks the next one, not
        # which worker a busy machine happened to leave off the CPU.
        wait_until(
            lambda: all(in_epoll_wait(pid, pid) for pid in workers),
            "every worker idle in epoll_wait",
            pace=0.001,
        )
        client = server.connect()
        roundtrip(client, b"x")  # accepted and served before the next one comes
        clients.append(client)

    status = server.status(lambda event: sum(event["per_worker_open"]) == CONNS, bound=30)
    return [int(count) for count in status["per_worker_open"]]


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
