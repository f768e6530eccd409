"""``rawepoll serve --control PATH`` end to end: real servers, real ``rawepoll publish``.

Every server here runs ``LinePubSubHandler`` with one worker and with three,
level- and edge-triggered; subscribers are plain TCP clients speaking its line
protocol (``SUB topic``; they receive ``MSG topic payload\\n``).  Every wait is
bounded by a socket timeout or a subprocess timeout, and every server is
stopped (its whole process group killed if need be) when its test ends.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rawepoll.server import control
from rawepoll.server.config import ServerConfig
from rawepoll.tools.serverproc import ServerProcess

pytestmark = pytest.mark.timeout(180)

HANDLER = "rawepoll.server.handler:LinePubSubHandler"
SO_SNDBUFFORCE = 32  # <asm-generic/socket.h>; the socket module does not name it
BOUND = 15.0  # seconds any one wait may take
COMBOS = [
    pytest.param(1, "lt", id="1-worker-lt"),
    pytest.param(1, "et", id="1-worker-et"),
    pytest.param(3, "lt", id="3-workers-lt"),
    pytest.param(3, "et", id="3-workers-et"),
]


# -- helpers ----------------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh directory with a short path (a Unix socket's path is at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="rwp-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def serve(path: Path | None, workers: int = 1, mode: str = "lt", **kwargs: object) -> ServerProcess:
    """``rawepoll serve`` with the pub/sub handler (and ``--control path`` unless None)."""
    args = ["--port", "0", "--handler", HANDLER, "--workers", str(workers), "--mode", mode]
    args += ["--drain-timeout", "5"]
    if path is not None:
        args += ["--control", str(path)]
    return ServerProcess.serve(*args, **kwargs)  # type: ignore[arg-type]


def frame(topic: str, payload: bytes) -> bytes:
    """What a subscriber of LinePubSubHandler receives for one message."""
    return b"MSG %s %s\n" % (topic.encode(), payload)


def read_to_eof(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything ``sock`` receives until the peer closes (each recv bounded by its timeout)."""
    data = b""
    while len(data) <= limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


class Peer:
    """A TCP client of LinePubSubHandler, subscribed to ``topics``."""

    def __init__(self, server: ServerProcess, topics: tuple[str, ...] = ()) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=BOUND)
        self.buffer = b""
        for topic in topics:
            self.sock.sendall(b"SUB %s\n" % topic.encode())
            reply = b"OK SUB %s\n" % topic.encode()
            assert self.read_exactly(len(reply)) == reply

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            assert chunk, f"the server closed after {self.buffer!r}"
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def rest(self) -> bytes:
        """Shut down writing (the server then closes): what came besides."""
        self.sock.shutdown(socket.SHUT_WR)
        return self.buffer + read_to_eof(self.sock)

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def peers(server: ServerProcess, *topics: tuple[str, ...]) -> Iterator[list[Peer]]:
    made: list[Peer] = []
    try:
        for subscribed in topics:
            made.append(Peer(server, subscribed))
        yield made
    finally:
        for peer in made:
            peer.close()


def control_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(BOUND)
    try:
        sock.connect(str(path))
    except BaseException:
        sock.close()
        raise
    return sock


def exchange(path: Path, data: bytes) -> bytes:
    """``data`` on a fresh control connection, writing shut down after it: every reply."""
    with control_socket(path) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)


def rawepoll_publish(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The real ``rawepoll publish`` command, as a child process."""
    return subprocess.run(
        [sys.executable, "-m", "rawepoll", "publish", *args],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        timeout=60,
        check=False,
    )


def unix_listeners(pid: int) -> list[str]:
    """The paths of the listening Unix sockets process ``pid`` holds (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    paths = []
    with open("/proc/net/unix") as table:  # Num RefCount Protocol Flags Type St Inode Path
        next(table)
        for line in table:
            fields = line.split()
            listening = int(fields[3], 16) & 0x10000  # __SO_ACCEPTCON
            if fields[6] in inodes and listening and len(fields) > 7:
                paths.append(fields[7])
    return paths


def assert_quiet(counters: dict[str, int]) -> None:
    """Nothing went wrong inside the server."""
    for name in ("handler_errors", "dropped", "slow_closed", "relay_dropped", "overflow"):
        assert counters[name] == 0, (name, counters)


# -- delivery ---------------------------------------------------------------------


@pytest.mark.parametrize(("workers", "mode"), COMBOS)
def test_publishes_reach_every_subscriber_once_in_order(
    short_dir: Path, workers: int, mode: str
) -> None:
    """Through one pipelined connection, the command (argv and stdin) and the function,
    alternating over fresh connections that any worker may accept."""
    path = short_dir / "control.sock"
    with serve(path, workers, mode) as server:
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert str(path) in unix_listeners(server.worker_pids[0])
        with peers(server, *[("news",)] * 6, ("other",), ()) as everyone:
            news, other, plain = everyone[:6], everyone[6], everyone[7]
            sent: list[bytes] = []
            with control.ControlClient(str(path)) as client:
                for i in range(20):
                    sent.append(b"pipelined %d" % i)
                    client.publish("news", sent[-1])
            for i in range(3):
                sent.append(b"command %d" % i)
                result = rawepoll_publish("--control", str(path), "news", sent[-1].decode())
                assert (result.returncode, result.stderr) == (0, b"")
                sent.append(b"function %d\n\x00 binary" % i)
                control.publish(str(path), "news", sent[-1])
            sent.append(bytes(range(256)) * 4)
            result = rawepoll_publish("--control", str(path), "news", "-", stdin=sent[-1])
            assert (result.returncode, result.stderr) == (0, b"")
            control.publish(str(path), "other", "elsewhere")
            result = rawepoll_publish("--control", str(path), "--broadcast", "to all")
            assert (result.returncode, result.stderr) == (0, b"")
            control.broadcast(str(path), b"to all, again")

            to_all = frame("", b"to all") + frame("", b"to all, again")
            expected = b"".join(frame("news", payload) for payload in sent) + to_all
            for peer in news:
                assert peer.read_exactly(len(expected)) == expected
            assert other.read_exactly(len(frame("other", b"elsewhere") + to_all)) == (
                frame("other", b"elsewhere") + to_all
            )
            assert plain.read_exactly(len(to_all)) == to_all
            for peer in everyone:
                assert peer.rest() == b""  # nothing twice, nothing else
        stopped = server.stop()
    assert stopped.clean
    counters = stopped.counters
    assert counters["published"] == len(sent) + 3
    assert counters["delivered"] == 6 * len(sent) + 1 + 2 * 8
    assert counters["accepted"] == 8  # control connections are not the server's clients
    assert_quiet(counters)
    assert not path.exists()


# -- bad input --------------------------------------------------------------------

BAD_INPUT = [
    (b"HELLO\n", b"unknown request"),
    (b"\x00\xff\xfe garbage \x7f\n", b"unknown request"),
    (b"PUBLISH news\n", b"usage: PUBLISH"),
    (b"PUBLISH news 999999\n", b"above the limit"),
    (b"PUBLISH news 99999999999999999999\n" + b"x" * 1000, b"decimal digits"),
    (b"BROADCAST -1\n", b"decimal digits"),
    (b"PUBLISH bad\x01topic 1\nx", b"control characters"),
    (b"PUBLISH \xff\xfe 1\nx", b"UTF-8"),
    (b"PUBLISH news 10\nabc", b"3 bytes into a payload of 10"),
    (b"PUBLISH news 5", b"inside a request line"),
    (b"A" * 100_000, b"at most 512 bytes"),
]


@pytest.mark.parametrize(("workers", "mode"), COMBOS)
def test_bad_control_input_gets_err_and_changes_nothing(
    short_dir: Path, workers: int, mode: str
) -> None:
    path = short_dir / "control.sock"
    with serve(path, workers, mode) as server:
        with peers(server, ("news",), ("news",), ("news",), ()) as everyone:
            with control_socket(path) as silent:
                for data, reason in BAD_INPUT:
                    reply = exchange(path, data)
                    assert reply.startswith(b"ERR ") and reply.endswith(b"\n"), (data, reply)
                    assert reply.count(b"\n") == 1 and reason in reply, (data, reply)
                reply = exchange(path, b"PING\nNOPE\nPING\n")
                assert reply == b"PONG\nERR unknown request (PING, PUBLISH or BROADCAST)\n"
                with (  # what the functions raise on ERR
                    control.ControlClient(str(path)) as client,
                    pytest.raises(control.ControlError, match="above the limit"),
                ):
                    client.request(b"BROADCAST 999999\n", b"OK")
                # A silent client is answered and closed at its deadline.
                silent.settimeout(control.READ_TIMEOUT + BOUND)
                assert read_to_eof(silent) == b"ERR no complete request within 5 s\n"

            assert server.alive()
            control.publish(str(path), "news", b"after")  # the first thing anyone receives
            for peer in everyone[:3]:
                assert peer.read_exactly(len(frame("news", b"after"))) == frame("news", b"after")
            for peer in everyone:
                assert peer.rest() == b""
        stopped = server.stop()
    assert stopped.clean
    counters = stopped.counters
    assert (counters["published"], counters["delivered"], counters["accepted"]) == (1, 3, 4)
    assert_quiet(counters)
    assert not path.exists()


def test_a_worker_serves_at_most_max_clients_control_connections(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    with serve(path) as server, contextlib.ExitStack() as stack:
        clients = [stack.enter_context(control_socket(path)) for _ in range(control.MAX_CLIENTS)]
        for sock in clients:
            sock.sendall(b"PING\n")
            assert sock.recv(5) == b"PONG\n"  # accepted and served
        assert exchange(path, b"PING\n") == b"ERR busy: 32 control connections already\n"
        clients[1].sendall(b"PING\n")
        assert clients[1].recv(5) == b"PONG\n"  # the others go on
        clients[0].sendall(b"NOPE\n")
        assert read_to_eof(clients[0]).startswith(b"ERR ")  # closed by the server: a free slot
        control.ping(str(path))
        assert server.alive()
        stopped = server.stop()
    assert stopped.clean


def test_a_client_that_does_not_read_its_replies_is_not_read_and_closed_at_its_deadline(
    short_dir: Path,
) -> None:
    path = short_dir / "control.sock"
    if os.geteuid() != 0:
        pytest.skip("needs SO_SNDBUFFORCE (root) to outsend the server's replies")
    with serve(path) as server, control_socket(path) as sock:
        # Far more than the server's send buffer: its replies back up before our requests do.
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)
        sock.setblocking(False)
        sent = 0
        with contextlib.suppress(BlockingIOError):
            for _ in range(10_000):  # until the kernel's buffers are full both ways
                sent += sock.send(b"PING\n" * 1000)
        assert sent % 5 == 0
        poller = select.poll()
        poller.register(sock, select.POLLRDHUP)
        hung_up = poller.poll((control.READ_TIMEOUT + BOUND) * 1000)  # without reading
        assert hung_up and hung_up[0][1] & (select.POLLRDHUP | select.POLLHUP)
        sock.settimeout(BOUND)
        replies = read_to_eof(sock, limit=1 << 30)
        pongs = replies.count(b"PONG\n")
        assert replies[: 5 * pongs] == b"PONG\n" * pongs
        assert pongs < sent // 5  # it stopped reading what it could not answer
        control.ping(str(path))
        assert server.alive()
        stopped = server.stop()
    assert stopped.clean


# -- the socket file ----------------------------------------------------------------


def test_control_is_off_by_default(short_dir: Path) -> None:
    assert ServerConfig().control is None
    with serve(None, cwd=str(short_dir)) as server:
        assert unix_listeners(server.pid) == []
        stopped = server.stop()
    assert stopped.clean
    assert list(short_dir.iterdir()) == []


def test_the_socket_is_0600_even_under_umask_0(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    old = os.umask(0)  # the child inherits it
    try:
        server = serve(path, workers=3)
    finally:
        os.umask(old)
    with server:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert all(str(path) in unix_listeners(pid) for pid in server.worker_pids)
        control.ping(str(path))
        stopped = server.stop()
    assert stopped.clean
    assert not path.exists()


def test_a_stale_socket_file_is_replaced(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # closed without unlinking: nobody listens there
    with serve(path) as server:
        control.ping(str(path))
        stopped = server.stop()
    assert stopped.clean
    assert not path.exists()


def serve_fails(path: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "rawepoll", "serve", "--port", "0", "--control", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_a_file_that_is_not_a_socket_is_refused(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    path.write_bytes(b"precious")
    result = serve_fails(path)
    assert result.returncode == 1
    assert "exists and is not a socket" in result.stderr
    assert path.read_bytes() == b"precious"


def test_a_live_control_socket_is_refused(short_dir: Path) -> None:
    path = short_dir / "control.sock"
    with serve(path) as server:
        result = serve_fails(path)
        assert result.returncode == 1
        assert "a server is listening there" in result.stderr
        control.ping(str(path))  # the first server still has it
        stopped = server.stop()
    assert stopped.clean


def test_the_control_socket_is_removed_when_the_listener_cannot_be_bound(
    short_dir: Path,
) -> None:
    path = short_dir / "control.sock"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [sys.executable, "-m", "rawepoll", "serve", "--port", str(port)]
        result = subprocess.run(
            [*argv, "--control", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
    assert result.returncode == 1, result.stderr
    assert not path.exists()


# -- the Python function's errors ----------------------------------------------------


def test_the_functions_raise_clear_errors(short_dir: Path) -> None:
    missing = str(short_dir / "nobody.sock")
    with pytest.raises(FileNotFoundError):
        control.publish(missing, "news", b"x")
    with pytest.raises(ValueError, match="whitespace"):
        control.publish(missing, "two words", b"x")  # checked before connecting
    with pytest.raises(ValueError, match="above the limit"):
        control.broadcast(missing, bytes(control.payload_limit(None) + 1))
    with pytest.raises(TypeError):
        control.publish(missing, "news", 42)  # type: ignore[arg-type]
