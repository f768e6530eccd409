"""A real ``redis-server`` for the broker tests: on a free port, in a temporary directory.

Never a fake: the broker is tested against the Redis it will meet.  Each
:class:`RedisServer` runs ``redis-server --port N --save '' --appendonly no``
in a session of its own and is always stopped (``with redis_server(...)``),
also when the test fails.  It can be killed and started again on the same
port (a Redis restart), and paused (``SIGSTOP``: a Redis that does not keep up).

Without ``redis-server``, ``redis-cli`` or hiredis the tests that need them
skip -- unless ``RAWEPOLL_REQUIRE_REDIS`` is set (``.ci/run`` sets it when it
installed Redis), and then they fail.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Final

import pytest

REQUIRE_ENV: Final = "RAWEPOLL_REQUIRE_REDIS"
START_BOUND: Final = 15.0  # seconds for redis-server to answer PING
STOP_BOUND: Final = 10.0
CLI_BOUND: Final = 15.0


def need_redis() -> tuple[str, str]:
    """The paths of ``redis-server`` and ``redis-cli``; skip (or fail, in CI) without them."""
    server = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    missing = [
        name
        for name, found in (
            ("redis-server", server),
            ("redis-cli", cli),
            ("hiredis", importlib.util.find_spec("hiredis")),
        )
        if found is None
    ]
    if missing:
        why = f"the broker tests need {', '.join(missing)}"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{why}, and {REQUIRE_ENV} is set")
        pytest.skip(why)
    assert server is not None
    assert cli is not None
    return server, cli


def free_port() -> int:
    """A TCP port nothing listens on now (bind to port 0, read it back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], object], bound: float, what: str, step: float = 0.02
) -> None:
    """Poll ``condition()`` until it is true; fail naming ``what`` after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {bound:g} s: {what}")
        time.sleep(step)


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``, restartable on the same port."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.server, self.cli_path = need_redis()
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait until it answers ``PING``."""
        assert self.proc is None, "already running"
        self._log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._answers, START_BOUND, f"redis-server answering on port {self.port}")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"redis-server exited ({self.proc.returncode}):\n{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: Redis dies at once, as a crash does (its connections get a reset or EOF)."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """Stop it if it runs (SIGKILL also ends a paused one); idempotent."""
        self._end(signal.SIGKILL)

    def _end(self, signum: int) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)
            proc.wait(STOP_BOUND)
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        """SIGSTOP: Redis stops reading (a Redis that cannot keep up)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    # -- redis-cli ---------------------------------------------------------

    def cli(self, *args: str, commands: Iterable[str] | None = None) -> str:
        """``redis-cli -p PORT ARGS`` (with ``commands`` on its stdin, one a line); its output."""
        stdin = None if commands is None else "".join(f"{line}\n" for line in commands)
        result = subprocess.run(
            [self.cli_path, "-p", str(self.port), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=CLI_BOUND,
            check=True,
        )
        return result.stdout

    def channels(self) -> set[str]:
        """``PUBSUB CHANNELS``: the channels someone subscribes to."""
        return set(self.cli("PUBSUB", "CHANNELS").split())

    def numsub(self, topic: str) -> int:
        """``PUBSUB NUMSUB topic``: how many connections subscribe to it."""
        name, count = self.cli("PUBSUB", "NUMSUB", topic).split()
        assert name == topic
        return int(count)

    def publish(self, topic: str, messages: Iterable[str]) -> None:
        """``redis-cli PUBLISH topic message`` for each message, in order, in one redis-cli."""
        self.cli(commands=(f"PUBLISH {topic} {message}" for message in messages))


@contextlib.contextmanager
def redis_server(directory: Path, port: int | None = None) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped on the way out whatever happened."""
    server = RedisServer(directory, port)
    try:
        server.start()
        yield server
    finally:
        server.stop()
