"""A worker that dies as it starts is replaced with a back-off, not hundreds of times a second."""

from __future__ import annotations

import re

import pytest
from support.children import python_env
from support.servers import EVENT_BOUND

from rawepoll.tools.serverproc import ServerProcess

HANDLER = "tests.server.crashing_handler:DiesAtStart"


@pytest.mark.timeout(60)
def test_a_crash_loop_backs_off_doubling() -> None:
    with ServerProcess.serve(
        "--port", "0", "--workers", "2", "--handler", HANDLER, env=python_env()
    ) as server:
        # Each restart event is a replacement that was forked; collect a few of one slot's.
        restarts = [
            server.wait_event("restart", EVENT_BOUND, lambda e: e["slot"] == 0) for _ in range(4)
        ]
        assert all(event is not None for event in restarts), server.stderr()
        assert all(e is not None and e["reason"] == "exit status 3" for e in restarts)
        stopped = server.stop()
        log = server.stderr()
    waits = re.findall(
        r"worker 0 \(pid \d+\) died \(exit status 3\); restarting it (at once|in [\d.]+ s)",
        log,
    )
    # The first death is replaced at once; then 0.1 s, doubling: a crash loop, slowed.
    assert (
        waits[:5] == ["at once", "in 0.1 s", "in 0.2 s", "in 0.4 s", "in 0.8 s"][: len(waits[:5])]
    )
    assert len(waits) >= 4
    assert stopped.exit is not None and stopped.exit["restarted"] >= 4
