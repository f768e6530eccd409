"""``--broker`` at the door: the URL, the optional hiredis, the zero-dependency core.

None of these needs a Redis server: they run everywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rawepoll.server import ServerConfig
from rawepoll.server.broker import INSTALL_HINT, RedisURL, command, parse_url

SERVE = [sys.executable, "-m", "rawepoll", "serve", "--port", "0", "--quiet"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVE, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_without_hiredis_serve_exits_2_with_one_line(tmp_path: Path) -> None:
    """A ``hiredis`` that cannot be imported (as when it is not installed): one line, exit 2."""
    (tmp_path / "hiredis.py").write_text('raise ImportError("hiredis is hidden by the test")\n')
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    result = run("--broker", "redis://127.0.0.1:6379", env={**os.environ, "PYTHONPATH": path})
    assert result.returncode == 2
    assert result.stdout == ""  # nothing listened
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert INSTALL_HINT in lines[0]
    assert INSTALL_HINT == "pip install 'rawepoll[redis]'"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "rediss://127.0.0.1:6379",
        "redis://",
        "redis://:6379",
        "redis://127.0.0.1:99999",
        "redis://127.0.0.1:port",
        "redis://127.0.0.1:0",
        "redis://127.0.0.1:6379/db",
        "redis://127.0.0.1:6379?timeout=1",
        "redis://user@127.0.0.1",
        "127.0.0.1:6379",
    ],
)
def test_a_bad_broker_url_exits_2_with_one_line(url: str) -> None:
    result = run("--broker", url)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rawepoll serve: error: broker must be redis://")


def test_the_error_does_not_repeat_the_password() -> None:
    result = run("--broker", "redis://:hunter2@127.0.0.1:99999")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr
    assert ":***@" in result.stderr


def test_importing_the_server_does_not_import_hiredis() -> None:
    code = (
        "import sys, rawepoll, rawepoll.server, rawepoll.server.broker, rawepoll.server.cli\n"
        "assert 'hiredis' not in sys.modules, 'the core imported hiredis'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("redis://127.0.0.1", RedisURL("127.0.0.1", 6379)),
        ("redis://localhost:6380", RedisURL("localhost", 6380)),
        ("redis://h:1/15", RedisURL("h", 1, db=15)),
        ("redis://:se%40cret@h:7000", RedisURL("h", 7000, password="se@cret")),
        ("redis://alice:pw@h/2", RedisURL("h", 6379, 2, "alice", "pw")),
        ("redis://[::1]:7000/", RedisURL("::1", 7000)),
    ],
)
def test_parse_url(url: str, parsed: RedisURL) -> None:
    assert parse_url(url) == parsed


def test_a_url_shown_in_logs_has_no_credentials() -> None:
    assert str(parse_url("redis://alice:pw@h:7000/3")) == "redis://h:7000/3"
    assert str(parse_url("redis://[::1]")) == "redis://[::1]:6379/0"


def test_server_config_checks_the_broker_url() -> None:
    with pytest.raises(ValueError, match="broker must be"):
        ServerConfig(broker="redis://127.0.0.1:99999").check()
    ServerConfig(broker="redis://127.0.0.1:6379/1").check()
    assert ServerConfig().broker is None


def test_commands_are_resp_arrays_of_bulk_strings() -> None:
    """hiredis, the oracle, reads a command back as the array it is."""
    hiredis = pytest.importorskip("hiredis")
    reader = hiredis.Reader()
    args = (b"PUBLISH", "tö".encode(), b"line\r\nbreak", b"")
    reader.feed(command(*args))
    assert reader.gets() == list(args)
    assert reader.gets() is False
