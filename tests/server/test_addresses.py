"""Other addresses: IPv6 loopback and Unix stream sockets."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from support.clients import echo_all
from support.servers import LISTEN_RE, MODES, Server, run_serve


def ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def some_messages() -> list[bytes]:
    return [os.urandom(size) for size in (0, 1, 1000, 300_000, 3 << 20)]


@pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.timeout(60)
def test_ipv6_loopback(server: Callable[..., Server], mode: str) -> None:
    srv = server("--host", "::1", "--mode", mode)
    assert (srv.host, srv.family) == ("::1", socket.AF_INET6)
    assert srv.ready.address == f"[::1]:{srv.port}"
    echo_all(srv, some_messages(), half_close=True)
    assert srv.stop().clean, srv.describe()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.timeout(60)
def test_unix_socket(server: Callable[..., Server], tmp_path: Path, mode: str) -> None:
    path = tmp_path / "echo.sock"
    srv = server("--unix", str(path), "--mode", mode)
    assert srv.path == str(path)
    assert stat.S_ISSOCK(path.stat().st_mode)
    echo_all(srv, some_messages(), half_close=True)
    echo_all(srv, some_messages(), half_close=False)
    assert srv.stop().clean, srv.describe()
    assert not path.exists(), "socket file left behind"


@pytest.mark.timeout(60)
def test_unix_socket_stale_file_is_replaced(server: Callable[..., Server], tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(str(path))  # closed without unlink: a stale socket file remains
    assert path.exists()
    srv = server("--unix", str(path))
    echo_all(srv, [b"fresh\n"])
    assert srv.stop().clean, srv.describe()
    assert not path.exists()


@pytest.mark.timeout(60)
def test_unix_socket_with_workers(server: Callable[..., Server], tmp_path: Path) -> None:
    path = tmp_path / "workers.sock"
    srv = server("--unix", str(path), "--workers", "2")
    assert len(srv.ready.workers) == 2
    echo_all(srv, [os.urandom(100_000) for _ in range(10)])
    assert srv.stop().clean, srv.describe()
    assert not path.exists()


@pytest.mark.timeout(60)
def test_unix_socket_in_a_missing_directory_exits_1(tmp_path: Path) -> None:
    result = run_serve("--unix", str(tmp_path / "no" / "such" / "dir.sock"), bound=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert LISTEN_RE.search(result.stdout) is None
