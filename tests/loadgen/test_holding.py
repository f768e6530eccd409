"""``Holding``: connections opened and verified, then held, measured in rounds, released.

``rawepoll c1m`` is built on it; these tests need no root.  Bounds on message
counts follow from the protocol (a paced connection waits ``interval`` after
each echo), not from how fast the machine is.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.loadgen import EchoServer, start_server, stop_server

from rawepoll.tools.loadgen.plan import Plan
from rawepoll.tools.loadgen.spec import LoadSpec
from rawepoll.tools.loadgen.workers import Holding, prepare

CONNS = 20


def _plan(port: int, procs: int = 2) -> Plan:
    return prepare(LoadSpec(port=port, conns=CONNS, size=64, duration=10.0, procs=procs))


@pytest.mark.timeout(120)
def test_rounds_on_the_same_connections(live_server: EchoServer) -> None:
    assert live_server.port is not None
    with Holding(_plan(live_server.port)) as held:
        held.open(None, time.monotonic() + 60)
        assert held.counts["established"] == CONNS
        first = held.measure(0.5)  # closed loop
        second = held.measure(0.5)  # the same connections, still open
        released = held.release()
    for result in (first, second):
        assert result.messages > 0
        assert result.errors == 0 and result.mismatches == 0
        assert 0 < result.p50_us <= result.p99_us
    # Nothing was reopened: the connections of the rounds are the ones opened first.
    assert released.established == CONNS
    assert released.errors == 0 and released.mismatches == 0
    assert released.messages == 0  # released while idle: no traffic in the last report


@pytest.mark.timeout(120)
def test_paced_round_waits_between_echoes(live_server: EchoServer) -> None:
    """With an interval each connection sends at most one message per interval (plus the first)."""
    assert live_server.port is not None
    interval = 0.1
    with Holding(_plan(live_server.port, procs=1)) as held:
        held.open(None, time.monotonic() + 60)
        paced = held.measure(1.0, interval)
        closed = held.measure(1.0)
        held.release()
    assert paced.errors == 0 and paced.mismatches == 0
    assert 0 < paced.messages <= CONNS * (paced.seconds / interval + 1)
    assert closed.messages > CONNS * (closed.seconds / interval + 1)  # unpaced: far more


@pytest.mark.timeout(120)
def test_held_connections_see_a_server_going_away(tmp_path: Path) -> None:
    """A held connection that the server closes counts as an error in the release report."""
    server = start_server(tmp_path, "--port", "0", "--drain-timeout", "0.5")
    try:
        assert server.port is not None
        with Holding(_plan(server.port)) as held:
            held.open(None, time.monotonic() + 60)
            stop_server(server.proc)  # SIGTERM: the server drains and closes every connection
            released = held.release()
    finally:
        stop_server(server.proc)
    assert released.established == CONNS
    assert released.errors == CONNS
