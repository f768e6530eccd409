"""Arguments and limits are checked, and connections split, before anything is forked."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

from rawepoll.tools.loadgen.plan import FD_RESERVE, Plan, make_plan, parse_cpus, parse_sources
from rawepoll.tools.loadgen.spec import LoadSpec

pytestmark = pytest.mark.timeout(60)


def plan(*, fd_limit: int = 20000, ports: int = 28232, **changes: Any) -> Plan:
    """A plan of ``LoadSpec(**changes)`` (its defaults otherwise) on a machine with these limits."""
    return make_plan(LoadSpec(**changes), fd_limit=fd_limit, ports=ports)


def test_sources_range_and_list() -> None:
    assert parse_sources("127.0.0.2-127.0.0.4,127.0.1.1") == [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.1.1",
    ]
    assert parse_sources("::1") == ["::1"]
    assert parse_sources("fd00::1-fd00::3") == ["fd00::1", "fd00::2", "fd00::3"]


@pytest.mark.parametrize(
    "text",
    ["127.0.0.9-127.0.0.2", "nonsense", "", "127.0.0.1,::1", "127.0.0.1-::1", "10.0.0.0-10.1.0.0"],
)
def test_sources_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_sources(text)


def test_cpus() -> None:
    assert parse_cpus("1") == [1]
    assert parse_cpus("0,2-4") == [0, 2, 3, 4]
    with pytest.raises(ValueError):
        parse_cpus("3-1")


def test_connections_and_messages_split_over_processes() -> None:
    made = plan(conns=10, procs=3, messages=1000, duration=None)
    assert [share.conns for share in made.shares] == [4, 3, 3]
    assert [share.first for share in made.shares] == [0, 4, 7]
    assert sum(share.messages for share in made.shares) == 1000
    assert made.family == socket.AF_INET
    assert made.guard > 0


def test_cpus_assigned_in_turn() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    made = plan(conns=10, procs=3, cpus=allowed[:1])
    assert {share.cpu for share in made.shares} == {allowed[0]}


def test_descriptor_limit_per_process() -> None:
    limit = 1000
    room = limit - FD_RESERVE
    plan(conns=room, fd_limit=limit)  # fits
    with pytest.raises(ValueError, match=r"RLIMIT_NOFILE .* use --procs 2 or more"):
        plan(conns=room + 1, fd_limit=limit)
    plan(conns=room + 1, procs=2, fd_limit=limit)


def test_client_ports_per_source_address() -> None:
    plan(conns=30000, procs=2, ports=28232, source_addrs=["127.0.0.2", "127.0.0.3"])
    with pytest.raises(ValueError, match="--source-addrs with 2 addresses"):
        plan(conns=30000, procs=2, ports=28232)


def test_unix_socket_plan() -> None:
    made = plan(unix="/tmp/echo.sock")
    assert made.family == socket.AF_UNIX
    assert made.address == "/tmp/echo.sock"
    assert not made.is_tcp
    with pytest.raises(ValueError, match="Unix socket"):
        plan(unix="/tmp/echo.sock", source_addrs=["127.0.0.2"])


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"conns": 0}, "--conns"),
        ({"size": 0}, "--size"),
        ({"pipeline": 0}, "--pipeline"),
        ({"procs": 0}, "--procs"),
        ({"procs": 200}, "more than --conns"),
        ({"duration": None}, "must end"),
        ({"duration": -1.0}, "--duration"),
        ({"duration": float("nan")}, "--duration"),
        ({"messages": 0}, "--messages"),
        ({"source_addrs": ["::1"]}, "family"),
        ({"cpus": [10_000]}, "--cpus"),
        ({"size": 1 << 20, "pipeline": 64, "conns": 100}, "in flight"),
    ],
)
def test_refused(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan(**changes)
