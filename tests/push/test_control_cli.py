"""``rawepoll publish``: its arguments, its exit statuses, and what it sends.

A stand-in control server (a thread on a Unix socket, parsing with the real
:class:`~rawepoll.server.control.ControlParser`) answers as told, so each exit
status is reached on purpose; the real server is driven in test_control_server.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rawepoll.server import control
from rawepoll.server.control import Broadcast, Command, ControlParser, Publish

pytestmark = pytest.mark.timeout(120)

BOUND = 15.0  # seconds any one wait may take


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rwp-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(*args: str | bytes, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "rawepoll", "publish", *args],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def stand_in(path: Path, reply: bytes | None) -> Iterator[list[Command]]:
    """A control server for one connection: records its request, answers ``reply``
    (None: never answers, waits for the client to give up)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    listener.settimeout(BOUND)
    got: list[Command] = []

    def serve_one() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(BOUND)
            parser = ControlParser()
            while not got and (data := conn.recv(65536)):
                parser.feed(data)
                command = parser.next_command()
                if command is not None:
                    got.append(command)
            if reply is not None:
                conn.sendall(reply)
            else:
                while conn.recv(65536):
                    pass

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    try:
        yield got
    finally:
        thread.join(BOUND)
        listener.close()
    assert not thread.is_alive()


def one_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    return text


def test_the_command_is_listed_and_explains_itself() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "rawepoll", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0
    assert "publish" in listed.stdout
    result = publish("--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    for word in ("--control PATH", "--broadcast", "TOPIC", "MESSAGE", "standard input", "Exit"):
        assert word in text


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["news", "hello"], id="no-control"),
        pytest.param(["--control", "/nowhere", "news"], id="no-message"),
        pytest.param(["--control", "/nowhere"], id="nothing"),
        pytest.param(
            ["--control", "/nowhere", "--broadcast", "news", "hello"], id="broadcast-topic"
        ),
        pytest.param(["--control", "/nowhere", "--broadcast"], id="broadcast-nothing"),
        pytest.param(["--control", "/nowhere", "two words", "hello"], id="bad-topic"),
        pytest.param(["--control", "/nowhere", "t" * 256, "hello"], id="long-topic"),
        pytest.param(["--control", "/nowhere", "--timeout", "0", "news", "x"], id="bad-timeout"),
        pytest.param(["--control", "/nowhere", "news", "x", "extra"], id="extra"),
    ],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    result = publish(*args)
    assert result.returncode == 2, result.stderr
    assert b"error" in result.stderr


def test_stdin_above_the_limit_exits_2_without_sending(short_dir: Path) -> None:
    too_big = bytes(control.payload_limit("news") + 1)
    result = publish("--control", str(short_dir / "nobody.sock"), "news", "-", stdin=too_big)
    assert result.returncode == 2
    assert "more than the limit" in one_line(result.stderr)


def test_no_server_exits_1_with_one_line(short_dir: Path) -> None:
    result = publish("--control", str(short_dir / "nobody.sock"), "news", "hello")
    assert result.returncode == 1
    assert "No such file or directory" in one_line(result.stderr)


def test_a_file_nobody_listens_on_exits_1(short_dir: Path) -> None:
    path = short_dir / "dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    result = publish("--control", str(path), "news", "hello")
    assert result.returncode == 1
    assert "refused" in one_line(result.stderr)


def test_ok_exits_0_and_sends_the_bytes_as_given(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    message = b"caf\xe9 \xff not UTF-8, and\nnewlines"  # argv carries bytes; fsencode keeps them
    with stand_in(path, b"OK\n") as got:
        result = publish("--control", str(path), "news", message)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert got == [Publish("news", message)]


def test_stdin_is_read_as_bytes(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    payload = bytes(range(256)) * 10
    with stand_in(path, b"OK\n") as got:
        result = publish("--control", str(path), "--broadcast", "-", stdin=payload)
    assert result.returncode == 0, result.stderr
    assert got == [Broadcast(payload)]


def test_err_exits_1_with_the_servers_reason(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    with stand_in(path, b"ERR busy: 32 control connections already\n"):
        result = publish("--control", str(path), "news", "hello")
    assert result.returncode == 1
    assert "busy: 32 control connections already" in one_line(result.stderr)


def test_a_server_that_closes_without_reply_exits_1(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    with stand_in(path, b""):
        result = publish("--control", str(path), "news", "hello")
    assert result.returncode == 1
    assert "without a reply" in one_line(result.stderr)


def test_a_server_that_never_answers_exits_1_at_the_timeout(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    with stand_in(path, None):
        result = publish("--control", str(path), "--timeout", "0.5", "news", "hello")
    assert result.returncode == 1
    assert "timed out" in one_line(result.stderr)


def test_a_reply_that_is_not_the_protocols_exits_1(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    with stand_in(path, b"HTTP/1.1 400 Bad Request\r\n\r\n"):
        result = publish("--control", str(path), "news", "hello")
    assert result.returncode == 1
    assert "unexpected reply" in one_line(result.stderr)
