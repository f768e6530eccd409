"""What ``rawepoll serve`` says and keeps when user code fails: counters, log lines, refusals.

* ``handler_errors`` in the ``status`` and ``exit`` events and in the human lines; the first
  fault's traceback in full on stderr, and a flood of 300 faults in a few log lines;
* ``--handler`` naming something that is not a handler class: exit status 2, one line saying
  what is wrong, nothing listened (no ``ready`` event, the Unix socket never made); from Python,
  :func:`rawepoll.server.serve` raises :class:`~rawepoll.server.faults.HandlerError` with the
  same sentence;
* a worker killed by SIGKILL, or dying of an exception that escapes the handler isolation, does
  not take its counts with it;
* a handler that blocks shows in ``max_turn_us``, and the value falls back afterwards.

The handlers are in :mod:`.faulty_handlers`; every server is stopped, its process group killed
if need be, also when a test fails.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.children import REPO_ROOT, python_env
from support.clients import read_until_closed, roundtrip
from support.counters import settle, stop_quietly
from support.proc import server_side_inode, socket_inodes, wait_until
from support.servers import STATUS_PREFIX, SUMMARY_PREFIX, Server, fields

from rawepoll.server import ServerConfig, serve
from rawepoll.server.faults import HandlerError
from rawepoll.tools.serverproc import serve_argv

from . import faulty_handlers
from .faulty_handlers import SLEEP_S

pytestmark = pytest.mark.timeout(120)

TESTS_DIR = str(Path(REPO_ROOT) / "tests")
HANDLERS = "server.faulty_handlers"
BOUND = 30.0


def start(*args: str, handler: str = "FaultyEcho", workers: int = 1) -> Server:
    argv = serve_argv("--port", "0", "--handler", f"{HANDLERS}:{handler}", "--drain-timeout", "2")
    return Server([*argv, "--workers", str(workers), *args], env=python_env(TESTS_DIR))


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers started by the test, stopped at its end whatever happened."""
    started: list[Server] = []
    yield started
    for server in started:
        stop_quietly(server)


def fault_once(server: Server) -> None:
    """A connection whose only message makes the handler raise: closed, nothing echoed."""
    sock = server.connect()
    sock.sendall(b"!raise flood")
    assert read_until_closed(sock) == (b"", "eof")
    sock.close()


# ---------------------------------------------------------------- counted and logged


MORE_RE = re.compile(r"rawepoll serve: (\d+) more handler error\(s\) since the last report")


@pytest.mark.parametrize("workers", [1, 3])
def test_a_flood_of_faults_is_counted_and_logged_in_a_few_lines(
    servers: list[Server], workers: int
) -> None:
    """300 faulting connections, in three batches each seen in a status report: the events
    and the human lines count them; stderr has one traceback per worker that faulted, then at
    most one line per 5 s per worker, and the last count at exit."""
    server = start("--stats-interval", "0.1", workers=workers)
    servers.append(server)
    began = time.monotonic()
    for batch in range(1, 4):
        for _ in range(100):
            fault_once(server)
        event = server.status(lambda e, n=batch * 100: e["counters"]["handler_errors"] >= n)
        assert event["counters"]["handler_errors"] == batch * 100
    roundtrip(server.connect(), b"the workers go on")
    server.close_clients()
    server.poll_events()
    stopped = server.stop()
    elapsed = time.monotonic() - began
    assert stopped.clean, server.describe()
    assert stopped.counters["handler_errors"] == 300
    assert stopped.exit is not None and stopped.exit["restarted"] == 0

    summary = [line for line in server.stdout_lines if line.startswith(SUMMARY_PREFIX)]
    assert [fields(line)["handler_errors"] for line in summary] == ["300"]
    reported = [
        fields(line)["handler_errors"]
        for line in server.stdout_lines
        if line.startswith(STATUS_PREFIX)
    ]
    assert "300" in reported, reported

    # Workers write to one stderr, and print() writes a message and its newline apart: a
    # line of one worker may be glued to another's, so count matches in the text, not lines.
    err = server.stderr()
    first = err.count("handler error, connection closed; the worker goes on")
    more = [int(n) for n in MORE_RE.findall(err)]
    assert 1 <= first <= workers, err
    assert err.count("Traceback (most recent call last):") == first
    assert err.count("ValueError: asked to fail by !raise") == first
    assert err.count("rawepoll serve:") == first + len(more), err
    assert len(more) <= workers * (int(elapsed / 5.0) + 1), (elapsed, err)
    assert first + sum(more) == 300
    assert len(err.splitlines()) <= 20 * workers, err  # the tracebacks are a dozen lines each


# ---------------------------------------------------------------- refused at the door


def run_with_status(*args: str, bound: float = BOUND) -> tuple[int, str, str, bytes]:
    """``rawepoll serve ARGS --status-fd N`` expected to exit by itself: its exit status,
    stdout, stderr and every byte written on the status descriptor."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        proc = subprocess.Popen(
            [*serve_argv(*args), "--status-fd", str(write_fd)],
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=python_env(TESTS_DIR),
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    try:
        with proc:
            try:
                out, err = proc.communicate(timeout=bound)
            except BaseException:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise
        os.set_blocking(read_fd, False)
        try:
            status = os.read(read_fd, 1 << 16)
        except BlockingIOError:
            status = b""  # a process of its group still holds the descriptor, silent
    finally:
        os.close(read_fd)
    return proc.returncode, out, err, status


NOT_HANDLERS = [
    ("not_a_class", "is not a handler class: it is a function"),
    ("NoShared", "it needs a class attribute 'shared' (True or False), not None"),
    ("SharedNotBool", "it needs a class attribute 'shared' (True or False), not 1"),
    ("DataNotCallable", "it has no callable data_received()"),
    ("NoEof", "it has no callable eof_received()"),
    (
        "BrokenSharedConstructor",
        "() raised OSError('cannot open the configuration'): a shared handler must build",
    ),
]


@pytest.mark.parametrize(("name", "what"), NOT_HANDLERS)
def test_what_is_not_a_handler_is_refused_before_listening(
    tmp_path: Path, name: str, what: str
) -> None:
    """Exit status 2 and one line on stderr; no ready event, no listening line, no socket file.
    From Python, ``serve`` raises HandlerError (a TypeError) with the same sentence."""
    path = tmp_path / "s.sock"
    code, out, err, status = run_with_status("--unix", str(path), "--handler", f"{HANDLERS}:{name}")
    sentence = f"{HANDLERS}:{name}"
    assert (code, out, status) == (2, "", b""), err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"rawepoll serve: error: {sentence}") and what in err, err
    assert not path.exists()

    with pytest.raises(HandlerError) as caught:
        serve(ServerConfig(unix=str(path), handler=getattr(faulty_handlers, name)))
    assert isinstance(caught.value, TypeError)
    assert f"rawepoll serve: error: {caught.value}\n" == err
    assert not path.exists()


# ---------------------------------------------------------------- counts outlive a worker


def holders(server: Server, socks: list[socket.socket]) -> dict[int, list[socket.socket]]:
    """Which worker holds the server's end of each client (from /proc socket inodes)."""
    held: dict[int, list[socket.socket]] = {pid: [] for pid in server.worker_pids}
    for sock in socks:
        inode = server_side_inode(sock)
        assert inode is not None

        def found(inode: int = inode) -> bool:
            return any(inode in socket_inodes(pid) for pid in held)

        wait_until(found, "a worker holds the connection")
        owner = next(pid for pid in held if inode in socket_inodes(pid))
        held[owner].append(sock)
    return held


def payloads(count: int) -> list[bytes]:
    return [bytes([65 + i]) * (100 * (i + 1)) for i in range(count)]


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == (b"", "eof")
        sock.close()


def test_a_worker_killed_by_sigkill_keeps_its_counts(servers: list[Server]) -> None:
    """Connections served and closed, their counts in shared memory (a status event shows
    them): SIGKILL of the worker that served most; the summary still has them."""
    server = start("--stats-interval", "0.1", workers=3)
    servers.append(server)
    messages = payloads(9)
    socks = [server.connect() for _ in messages]
    for sock, message in zip(socks, messages, strict=True):
        roundtrip(sock, message)
    held = holders(server, socks)
    victim = max(held, key=lambda pid: len(held[pid]))
    assert held[victim]
    close_all(socks)
    seen = settle(server, closed=len(socks))
    assert seen["bytes_in"] == seen["bytes_out"] == sum(map(len, messages))

    os.kill(victim, signal.SIGKILL)
    server.restart_of(victim)
    roundtrip(server.connect(), b"probe")
    server.close_clients()
    server.poll_events()
    stopped = server.stop()
    assert stopped.clean, server.describe()
    assert stopped.exit is not None and stopped.exit["restarted"] == 1
    counters = stopped.counters
    assert counters["accepted"] == counters["closed"] == len(socks) + 1
    assert counters["bytes_in"] == counters["bytes_out"] == sum(map(len, messages)) + len(b"probe")
    assert "restarted=1" in server.stdout_lines[-1]


def test_a_base_exception_of_a_handler_costs_its_connection_only(servers: list[Server]) -> None:
    """``!fatal`` raises a ``BaseException`` that is not ``KeyboardInterrupt`` or ``SystemExit``
    (as ``asyncio.CancelledError`` is): a fault like any other -- that connection closed,
    counted, logged -- and no worker dies, the other connections of its worker go on."""
    server = start(workers=3)
    servers.append(server)
    messages = payloads(6)
    socks = [server.connect() for _ in messages]
    for sock, message in zip(socks, messages, strict=True):
        roundtrip(sock, message)
    held = holders(server, socks)
    victim = next(pid for pid in held if held[pid])
    fatal = b"!fatal now"
    faulty = held[victim][0]
    faulty.sendall(fatal)
    assert read_until_closed(faulty) == (b"", "eof")
    survivors = [sock for sock in socks if sock is not faulty]
    for sock in survivors:
        roundtrip(sock, b"still here")
    close_all(survivors)
    server.poll_events()
    stopped = server.stop()
    assert stopped.clean, server.describe()
    assert stopped.exit is not None and stopped.exit["restarted"] == 0
    counters = stopped.counters
    assert counters["accepted"] == counters["closed"] == len(socks)
    echoed = sum(map(len, messages)) + len(b"still here") * len(survivors)
    assert counters["bytes_out"] == echoed
    assert counters["bytes_in"] == echoed + len(fatal)
    assert counters["handler_errors"] == 1
    assert "Fatal: asked to die by !fatal" in server.stderr()


# ---------------------------------------------------------------- a handler that blocks


def test_a_handler_that_blocks_shows_in_max_turn_us(servers: list[Server]) -> None:
    """``!sleep`` blocks the worker for SLEEP_S: the first report that counts its bytes shows
    a turn at least that long; a later one, nothing blocking, shows less."""
    server = start("--stats-interval", "0.2")
    servers.append(server)
    blocked_us = int(SLEEP_S * 1e6)
    sock = server.connect()
    roundtrip(sock, b"warm up")
    message = b"!sleep please"
    roundtrip(sock, message)
    read = len(b"warm up") + len(message)
    first = server.status(lambda e: e["counters"]["bytes_in"] >= read)
    assert first["counters"]["max_turn_us"] >= blocked_us, first
    later = server.status(lambda e: e["counters"]["max_turn_us"] < blocked_us // 2)
    assert later["counters"]["bytes_in"] == read
