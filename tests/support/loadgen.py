"""``rawepoll bench`` as a command, the servers it runs against, and servers that echo wrong.

* :class:`EchoServer` -- ``rawepoll serve`` in a child (a
  :class:`~rawepoll.tools.serverproc.ServerProcess`: found through its ``ready``
  event, always stopped: SIGTERM, a bounded drain, SIGKILL of the group), with
  the ``rawepoll bench`` arguments that reach it;
* :func:`bench` -- ``python -m rawepoll bench ...`` in a session of its own, with a
  bound; afterwards no process of its group may be left;
* :class:`BrokenServer` -- a small threaded echo server in the test process that
  knows the message size and spoils some messages on purpose.

Every wait is bounded; none is a timing assertion.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rawepoll.tools.serverproc import ServerProcess, Stopped, serve_argv
from support.children import REPO_ROOT, python_env, run_group

START_BOUND = 30.0
STOP_BOUND = 10.0
BENCH_BOUND = 60.0
SIZE = 64  # the message size every broken-server test uses


# ---------------------------------------------------------------- rawepoll serve


class EchoServer(ServerProcess):
    """``rawepoll serve`` for the load generator to measure."""

    def target(self) -> list[str]:
        """The ``rawepoll bench`` arguments that reach this server."""
        if self.ready.path is not None:
            return ["--unix", self.ready.path]
        return ["--host", self.host, "--port", str(self.port)]


_running: dict[int, EchoServer] = {}  # pid -> server, for stop_server(server.proc)


def start_server(tmp: Path | None, *args: str) -> EchoServer:
    """Start ``rawepoll serve ARGS`` and return it once it is ready (``tmp`` is not needed)."""
    server = EchoServer(
        serve_argv(*args),
        env=python_env(),
        cwd=REPO_ROOT,
        start_bound=START_BOUND,
        stop_bound=STOP_BOUND,
        name="rawepoll serve",
    )
    _running[server.pid] = server
    return server


def stop_server(server: EchoServer | subprocess.Popen[bytes]) -> Stopped | None:
    """SIGTERM, a bounded drain, SIGKILL of the whole group; reaped and released in any case.

    Takes the server or its process (``server.proc``); a second call does nothing.
    """
    found = _running.pop(server.pid, None)
    if found is None:
        return None
    try:
        return found.stop()
    finally:
        found.close()


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
    argv = [sys.executable, "-m", "rawepoll", "bench", *args]
    result = run_group(argv, bound, what=f"rawepoll bench {args}", leave_nothing=True)
    return BenchRun(result.returncode, result.stdout, result.stderr)


# ---------------------------------------------------------------- broken servers


class ThreadedServer:
    """A test server on 127.0.0.1: one thread accepts, one thread serves each connection.

    Subclasses write :meth:`_serve`; :meth:`close` stops every thread and
    closes every socket (each serving thread polls ``stopping`` between reads
    of 50 ms at most, see :meth:`_recv`).
    """

    def __init__(self, name: str, backlog: int = 512) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept, name=f"{name}-accept")
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
                target=self._serve_closing, args=(conn, index), name=f"{self.name}-{index}"
            )
            self.threads.append(thread)
            thread.start()
            index += 1

    def _serve_closing(self, conn: socket.socket, index: int) -> None:
        with conn:
            conn.settimeout(0.05)
            self._serve(conn, index)

    def _serve(self, conn: socket.socket, index: int) -> None:
        raise NotImplementedError

    def _recv(self, conn: socket.socket) -> bytes | None:
        """Bytes, or None once the client has gone (or we stop)."""
        while not self.stopping.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return None
            return data or None
        return None

    def close(self) -> None:
        self.stopping.set()
        self.accepter.join(STOP_BOUND)
        for thread in self.threads:
            thread.join(STOP_BOUND)
        self.listener.close()
        assert not any(t.is_alive() for t in [self.accepter, *self.threads])


class BrokenServer(ThreadedServer):
    """A threaded echo server on 127.0.0.1 that spoils messages on purpose.

    It reads whole messages of ``size`` bytes and hands each to ``mangle``,
    which says what to send back and whether to close the connection then.
    """

    def __init__(self, mangle: Mangle, size: int = SIZE) -> None:
        self.mangle = mangle
        self.size = size
        self.last: dict[int, bytes] = {}  # connection index -> the last message it sent
        super().__init__("broken")

    def _serve(self, conn: socket.socket, index: int) -> None:
        buffer = bytearray()
        count = 0
        while (data := self._recv(conn)) is not None:
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


Mangle = Callable[[BrokenServer, int, int, bytes], tuple[bytes, bool]]
"""``(server, connection index, message index, message) -> (bytes to send, close after)``."""
