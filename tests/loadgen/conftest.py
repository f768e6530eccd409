"""Fixtures for the load generator tests: a real echo server, broken ones, and the command.

* :func:`echo_server` -- ``python -m rawepoll serve --port 0`` (or ``--unix``) in a
  session of its own, found through its listening line (read from a file, so the
  test process has no reader thread and may fork), always stopped at teardown:
  SIGTERM, a bounded wait, SIGKILL of the group.
* :class:`BrokenServer` -- a small threaded echo server in the test process that
  knows the message size and spoils some messages on purpose.
* :func:`bench` -- ``python -m rawepoll bench ...`` in a session of its own, with a
  bound; afterwards no process of its group may be left.

Every wait is bounded; none is a timing assertion.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
LISTEN_RE = re.compile(r"listening on (?:unix:(?P<path>\S+)|(?P<host>[^\s]+):(?P<port>\d+)) \(")
START_BOUND = 30.0
STOP_BOUND = 10.0
BENCH_BOUND = 60.0
SIZE = 64  # the message size every broken-server test uses


def python_env() -> dict[str, str]:
    """The environment for a child interpreter: rawepoll importable."""
    paths = [str(REPO_ROOT)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is left (zombies included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_group_gone(pgid: int, bound: float = STOP_BOUND) -> bool:
    """Wait until process group ``pgid`` is empty; False if it is not within ``bound``."""
    pacer = threading.Event()
    deadline = time.monotonic() + bound
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        pacer.wait(0.02)
    return True


# ---------------------------------------------------------------- rawepoll serve


@dataclass
class EchoServer:
    proc: subprocess.Popen[bytes]
    host: str | None
    port: int | None
    path: str | None

    def target(self) -> list[str]:
        """The ``rawepoll bench`` arguments that reach this server."""
        if self.path is not None:
            return ["--unix", self.path]
        return ["--host", str(self.host), "--port", str(self.port)]


def start_server(tmp: Path, *args: str) -> EchoServer:
    """Start ``rawepoll serve ARGS`` and return it once it listens."""
    out = tmp / "serve.out"
    with open(out, "wb") as stdout, open(tmp / "serve.err", "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rawepoll", "serve", *args],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=REPO_ROOT,
            env=python_env(),
            start_new_session=True,
        )
    pacer = threading.Event()
    deadline = time.monotonic() + START_BOUND
    while True:
        match = LISTEN_RE.search(out.read_text(errors="replace"))
        if match:
            port = match["port"]
            return EchoServer(proc, match["host"], int(port) if port else None, match["path"])
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            raise AssertionError(
                f"rawepoll serve {args} did not listen: {(tmp / 'serve.err').read_text()}"
            )
        pacer.wait(0.02)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a bounded wait, SIGKILL of the whole group; reaped in any case."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_BOUND)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(STOP_BOUND)


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoServer]:
    """One ``rawepoll serve --port 0`` for the module."""
    server = start_server(tmp_path_factory.mktemp("serve"), "--port", "0")
    try:
        yield server
    finally:
        stop_server(server.proc)


@pytest.fixture
def live_server(echo_server: EchoServer) -> EchoServer:
    """The module's server, checked alive."""
    assert echo_server.proc.poll() is None, "rawepoll serve died"
    return echo_server


# ---------------------------------------------------------------- rawepoll bench


@dataclass
class BenchRun:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        """The one JSON object of ``--json`` (it must be all of stdout)."""
        lines = self.stdout.strip().splitlines()
        assert len(lines) == 1, f"expected one JSON line on stdout, got:\n{self.stdout}"
        result: dict[str, Any] = json.loads(lines[0])
        return result


def bench(*args: str, bound: float = BENCH_BOUND) -> BenchRun:
    """Run ``rawepoll bench ARGS`` to its end; no process of it may be left afterwards."""
    with subprocess.Popen(
        [sys.executable, "-m", "rawepoll", "bench", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=python_env(),
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=bound)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise AssertionError(f"rawepoll bench {args} still running after {bound} s") from None
    assert wait_group_gone(proc.pid), f"rawepoll bench {args} left processes behind"
    return BenchRun(proc.returncode, out, err)


# ---------------------------------------------------------------- broken servers


class BrokenServer:
    """A threaded echo server on 127.0.0.1 that spoils messages on purpose.

    It reads whole messages of ``size`` bytes and hands each to ``mangle``,
    which says what to send back and whether to close the connection then.
    One thread accepts, one thread serves each connection; all of them stop,
    and every socket is closed, in :meth:`close`.
    """

    def __init__(self, mangle: Mangle, size: int = SIZE) -> None:
        self.mangle = mangle
        self.size = size
        self.last: dict[int, bytes] = {}  # connection index -> the last message it sent
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept, name="broken-accept")
        self.accepter.start()

    def _accept(self) -> None:
        index = 0
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(
                target=self._serve, args=(conn, index), name=f"broken-{index}"
            )
            self.threads.append(thread)
            thread.start()
            index += 1

    def _serve(self, conn: socket.socket, index: int) -> None:
        with conn:
            conn.settimeout(0.05)
            buffer = bytearray()
            count = 0
            while not self.stopping.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while len(buffer) >= self.size:
                    message = bytes(buffer[: self.size])
                    del buffer[: self.size]
                    out, close = self.mangle(self, index, count, message)
                    with self.lock:
                        self.last[index] = message
                    count += 1
                    try:
                        conn.sendall(out)
                    except OSError:
                        return
                    if close:
                        return

    def close(self) -> None:
        self.stopping.set()
        self.accepter.join(STOP_BOUND)
        for thread in self.threads:
            thread.join(STOP_BOUND)
        self.listener.close()
        assert not any(t.is_alive() for t in [self.accepter, *self.threads])


Mangle = Callable[[BrokenServer, int, int, bytes], tuple[bytes, bool]]
"""``(server, connection index, message index, message) -> (bytes to send, close after)``."""


@pytest.fixture
def broken_server() -> Iterator[Callable[[Mangle], BrokenServer]]:
    """A factory: ``broken_server(mangle)`` starts a server closed at teardown."""
    servers: list[BrokenServer] = []

    def start(mangle: Mangle) -> BrokenServer:
        server = BrokenServer(mangle)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
