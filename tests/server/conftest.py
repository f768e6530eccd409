"""Fixtures for the echo server tests: a server in a subprocess, clients on loopback.

Every server runs as ``python -m rawepoll serve --port 0 ...`` in a session of its
own (so in its own process group), is found through the listening line it prints,
and is always stopped: SIGTERM, a bounded wait, then SIGKILL of the whole group --
also when the test failed.  The clients here use the standard library (``socket``,
``selectors``) so that the code under test is never its own oracle.

Synchronisation is on events only: the listening line, bytes received, process
exit, or a ``/proc`` count polled with a bound.  Every loop is bounded and no
wait is a timing assertion.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from hardening._common import LineReader  # one pipe reader for the tests and the tools

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODES = ["lt", "et"]

# The interface spec's regex for the one line printed when the server listens.
LISTEN_RE = re.compile(
    r"listening on (?:unix:(?P<path>\S+)|\[?(?P<host>[^\]\s]+?)\]?:(?P<port>\d+)) "
    r"\(mode (?P<mode>lt|et), (?P<workers>\d+) workers?, pid (?P<pid>\d+)\)"
)
SUMMARY_PREFIX = "rawepoll serve: exit"
STATUS_PREFIX = "rawepoll serve: status"
FIELD_RE = re.compile(r"(\w+)=(\S+)")

START_BOUND = 30.0  # from spawn to the listening line
STOP_BOUND = 30.0  # from a signal to the exit of the process
IO_BOUND = 20.0  # any one client operation
CLEANUP_BOUND = 5.0  # SIGTERM grace in teardown before SIGKILL of the group


def python_env(*extra_paths: str) -> dict[str, str]:
    """The environment for a child interpreter: rawepoll (and ``extra_paths``) importable."""
    paths = [*extra_paths, REPO_ROOT]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def serve_command(*args: str) -> list[str]:
    """``python -m rawepoll serve ARGS`` with this interpreter."""
    return [sys.executable, "-m", "rawepoll", "serve", *args]


def fields(line: str) -> dict[str, str]:
    """The ``key=value`` fields of a summary or status line."""
    return dict(FIELD_RE.findall(line))


def wait_until(predicate: Callable[[], bool], what: str, bound: float = IO_BOUND) -> None:
    """Poll ``predicate`` (a ``/proc`` read, say) until it holds; fail after ``bound`` s."""
    pacer = threading.Event()
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {bound} s")
        pacer.wait(0.02)


# ---------------------------------------------------------------- /proc readings


def fd_count(pid: int) -> int:
    """How many descriptors process ``pid`` holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (``/proc/PID/stat`` utime + stime)."""
    with open(f"/proc/{pid}/stat") as f:
        after_name = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5); the list starts at field 3 (state).
    return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK")


def status_bytes(pid: int, key: str) -> int:
    """A ``kB`` line of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def children(pid: int) -> set[int]:
    """The live (not zombie) child processes of ``pid``."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.update(int(word) for word in f.read().split())
        except FileNotFoundError:
            continue
    return {child for child in found if not _is_zombie(child)}


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds (``socket:[N]`` links)."""
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def server_side_inode(client: socket.socket) -> int | None:
    """The inode of the server's end of the IPv4 loopback connection ``client``."""
    local_port = client.getsockname()[1]
    server_port = client.getpeername()[1]
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            words = line.split()
            local, remote = words[1], words[2]
            if (
                int(local.split(":")[1], 16) == server_port
                and int(remote.split(":")[1], 16) == local_port
            ):
                return int(words[9])
    return None


def accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the IPv4 listener on ``port``.

    For a socket in LISTEN state ``/proc/net/tcp`` shows the accept-queue length
    as ``rx_queue``.
    """
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            words = line.split()
            if words[3] == "0A" and int(words[1].split(":")[1], 16) == port:
                return int(words[4].split(":")[1], 16)
    raise AssertionError(f"no IPv4 listener on port {port}")


# ---------------------------------------------------------------- client helpers


def recv_exactly(sock: socket.socket, n: int, bound: float = IO_BOUND) -> bytes:
    """Read until ``n`` bytes came (or EOF came first: fewer are returned)."""
    got = bytearray()
    deadline = time.monotonic() + bound
    while len(got) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"received {len(got)} of {n} bytes within {bound} s")
        sock.settimeout(remaining)
        try:
            data = sock.recv(min(n - len(got), 1 << 20))
        except TimeoutError:
            continue
        if not data:
            break
        got += data
    return bytes(got)


def roundtrip(sock: socket.socket, data: bytes, bound: float = IO_BOUND) -> None:
    """Send ``data`` (small enough to fit the buffers) and expect it back exactly."""
    sock.settimeout(bound)
    sock.sendall(data)
    echoed = recv_exactly(sock, len(data), bound)
    assert echoed == data, f"sent {len(data)} bytes, got {len(echoed)} back (or other bytes)"


def read_until_closed(sock: socket.socket, bound: float = IO_BOUND) -> tuple[bytes, str]:
    """Read to the end: ``(bytes, "eof")`` or ``(bytes, "reset")``; fail after ``bound`` s."""
    got = bytearray()
    deadline = time.monotonic() + bound
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no EOF within {bound} s ({len(got)} bytes read)")
        sock.settimeout(remaining)
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return bytes(got), "reset"
        if not data:
            return bytes(got), "eof"
        got += data


def send_until_blocked(sock: socket.socket, size: int, attempts: int) -> int:
    """Send up to ``size`` random bytes without blocking; stop at EAGAIN (bounded)."""
    view = memoryview(os.urandom(size))
    sent = 0
    for _ in range(attempts):
        try:
            sent += sock.send(view[sent:])
        except BlockingIOError:
            break
        if sent == len(view):
            break
    return sent


def rst_close(sock: socket.socket) -> None:
    """Close with SO_LINGER (on, 0 s): the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def first_difference(a: bytes | bytearray, b: bytes | bytearray) -> int:
    """The first offset where ``a`` and ``b`` differ (``min(len)`` if one is a prefix)."""
    block = 65536
    n = min(len(a), len(b))
    start = 0
    while start < n and a[start : start + block] == b[start : start + block]:
        start += block
    for i in range(start, min(start + block, n)):
        if a[i] != b[i]:
            return i
    return n


# ---------------------------------------------------------------- the server process


class Server:
    """One ``rawepoll serve`` process (the supervisor if there are workers)."""

    host: str | None
    port: int | None
    path: str | None
    pid: int
    mode: str
    workers: int

    def __init__(self, command: Sequence[str], env: dict[str, str]) -> None:
        self.command = list(command)
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._out = LineReader(self.proc.stdout, f"stdout-{self.proc.pid}")
        self._err = LineReader(self.proc.stderr, f"stderr-{self.proc.pid}")
        self._sockets: list[socket.socket] = []
        self.listening_line = ""

    # -- startup and output

    def await_listening(self, bound: float = START_BOUND) -> None:
        line = self._out.wait_for(LISTEN_RE.search, bound)
        if line is None:
            raise AssertionError(f"no listening line within {bound} s\n{self.describe()}")
        match = LISTEN_RE.search(line)
        assert match is not None
        self.listening_line = line
        self.path = match["path"]
        self.host = match["host"]
        self.port = int(match["port"]) if match["port"] else None
        self.pid = int(match["pid"])
        self.mode = match["mode"]
        self.workers = int(match["workers"])

    @property
    def stdout_lines(self) -> list[str]:
        return self._out.snapshot()

    @property
    def stderr_lines(self) -> list[str]:
        return self._err.snapshot()

    def describe(self) -> str:
        """Command, exit status and output so far: for assertion messages."""
        out = "\n".join(self.stdout_lines[-30:])
        err = "\n".join(self.stderr_lines[-30:])
        return (
            f"command: {' '.join(self.command)}\nreturncode: {self.proc.poll()}\n"
            f"stdout:\n{out}\nstderr:\n{err}"
        )

    def wait_stdout(self, predicate: Callable[[str], object], bound: float, since: int = 0) -> str:
        line = self._out.wait_for(predicate, bound, since)
        if line is None:
            raise AssertionError(
                f"expected stdout line not seen within {bound} s\n{self.describe()}"
            )
        return line

    # -- clients

    @property
    def family(self) -> socket.AddressFamily:
        if self.path is not None:
            return socket.AF_UNIX
        assert self.host is not None
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def address(self) -> Any:
        return self.path if self.path is not None else (self.host, self.port)

    def connect(
        self, *, bound: float = IO_BOUND, rcvbuf: int | None = None, sndbuf: int | None = None
    ) -> socket.socket:
        """A new blocking client socket (with a timeout), closed at teardown at the latest."""
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        self._sockets.append(sock)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.settimeout(bound)
        try:
            sock.connect(self.address)
        except BaseException:
            sock.close()
            raise
        return sock

    def try_connect(self, bound: float = IO_BOUND) -> socket.socket | None:
        """A connected client, or None if the connection is refused."""
        try:
            return self.connect(bound=bound)
        except ConnectionRefusedError:
            return None

    def close_clients(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    # -- the process

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, bound: float = STOP_BOUND) -> int:
        try:
            return self.proc.wait(bound)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"server did not exit within {bound} s\n{self.describe()}"
            ) from None

    def stop(self, signum: int = signal.SIGTERM, bound: float = STOP_BOUND) -> int:
        """Signal the server and return its exit status."""
        self.send_signal(signum)
        return self.wait_exit(bound)

    def summary(self, bound: float = 10.0) -> dict[str, str]:
        """The fields of the exit summary line (after the server exited)."""
        line = self.wait_stdout(lambda text: text.startswith(SUMMARY_PREFIX), bound)
        return fields(line)

    def cleanup(self) -> None:
        """Close clients, then SIGTERM, a bounded wait, SIGKILL of the group; reap; close pipes."""
        self.close_clients()
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(CLEANUP_BOUND)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(CLEANUP_BOUND)
        except subprocess.TimeoutExpired:
            pass
        self._out.close(CLEANUP_BOUND)
        self._err.close(CLEANUP_BOUND)


class ServerRunner:
    """Starts servers and stops every one of them when closed."""

    def __init__(self) -> None:
        self.servers: list[Server] = []

    def start(
        self, *args: str, command: Sequence[str] | None = None, env: dict[str, str] | None = None
    ) -> Server:
        """``rawepoll serve --port 0 ARGS`` (or ``command``), returned once it listens."""
        if command is None:
            if "--port" not in args and "--unix" not in args:
                args = ("--port", "0", *args)
            command = serve_command(*args)
        server = Server(command, env if env is not None else python_env())
        self.servers.append(server)
        server.await_listening()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.cleanup()

    def __enter__(self) -> ServerRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture
def server() -> Iterator[Callable[..., Server]]:
    """A factory: ``server("--mode", "et")`` starts a server stopped at teardown."""
    with ServerRunner() as runner:
        yield runner.start


def run_serve(*args: str, bound: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``rawepoll serve ARGS`` expecting it to exit on its own (help, bad arguments)."""
    with subprocess.Popen(
        serve_command(*args),
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
            out, err = proc.communicate()
            raise AssertionError(f"rawepoll serve {args} still running after {bound} s") from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# ---------------------------------------------------------------- many clients at once


@dataclass(eq=False)
class _Peer:
    sock: socket.socket
    message: bytes
    cuts: list[int]  # where each chunk ends, ascending; the last is len(message)
    half_close: bool
    window: int | None  # at most this many bytes sent and not yet echoed
    view: memoryview = field(init=False)
    released: int = 0  # the client may send message[:released]
    sent: int = 0
    next_cut: int = 0
    shut: bool = False
    eof: bool = False
    error: str | None = None
    closed: bool = False
    mask: int = 0
    received: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.view = memoryview(self.message)

    @property
    def send_limit(self) -> int:
        if self.window is None:
            return self.released
        return min(self.released, len(self.received) + self.window)

    @property
    def done(self) -> bool:
        if self.eof:
            return True
        return not self.half_close and len(self.received) >= len(self.message)


class EchoClients:
    """Non-blocking echo clients driven by one standard-library selector.

    Client ``i`` sends ``messages[i]`` in chunks ending at ``cuts[i]``; ``order``
    lists client indices and says which client may send its next chunk next (a
    client's next chunk is released once its previous one is in the kernel).
    All clients read all the time.  A client with ``half_close`` shuts down
    writing after its last chunk and is done at EOF; the others are done once
    their message is back.  With a ``window``, a client keeps at most that many
    bytes sent but not yet echoed (pacing by bytes received, not by the clock).
    ``verify`` compares every byte.
    """

    def __init__(
        self,
        server: Server,
        messages: Sequence[bytes],
        *,
        cuts: Sequence[Sequence[int]] | None = None,
        order: Sequence[int] | None = None,
        half_close: bool | Sequence[bool] = True,
        window: int | None = None,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
    ) -> None:
        self.selector = selectors.DefaultSelector()
        self.peers: list[_Peer] = []
        flags = [half_close] * len(messages) if isinstance(half_close, bool) else half_close
        try:
            for i, message in enumerate(messages):
                peer_cuts = list(cuts[i]) if cuts is not None else [len(message)]
                assert peer_cuts == sorted(peer_cuts) and peer_cuts[-1] == len(message)
                sock = server.connect(rcvbuf=rcvbuf, sndbuf=sndbuf)
                sock.setblocking(False)
                peer = _Peer(sock, message, peer_cuts, flags[i], window)
                self.peers.append(peer)
                self._set_mask(peer, selectors.EVENT_READ)
        except BaseException:
            self.close()
            raise
        if order is None:
            longest = max((len(p.cuts) for p in self.peers), default=0)
            order = [i for k in range(longest) for i, p in enumerate(self.peers) if k < len(p.cuts)]
        self.order = list(order)
        assert sorted(self.order) == sorted(i for i, p in enumerate(self.peers) for _ in p.cuts), (
            "order must name each client once per chunk"
        )
        self.pos = 0

    # -- one client

    def _set_mask(self, peer: _Peer, mask: int) -> None:
        if mask == peer.mask:
            return
        if peer.mask == 0:
            self.selector.register(peer.sock, mask, peer)
        elif mask == 0:
            self.selector.unregister(peer.sock)
        else:
            self.selector.modify(peer.sock, mask, peer)
        peer.mask = mask

    def _send(self, peer: _Peer) -> None:
        for _ in range(64):
            if peer.sent >= peer.send_limit or peer.error is not None:
                break
            try:
                peer.sent += peer.sock.send(peer.view[peer.sent : peer.send_limit])
            except BlockingIOError:
                break
            except OSError as exc:  # ECONNRESET, EPIPE: the verdict comes in verify()
                peer.error = f"send: {exc!r}"
                break
        if (
            peer.half_close
            and not peer.shut
            and peer.error is None
            and peer.next_cut == len(peer.cuts)
            and peer.sent == len(peer.message)
        ):
            try:
                peer.sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                peer.error = f"shutdown: {exc!r}"
            peer.shut = True

    def _recv(self, peer: _Peer) -> None:
        for _ in range(16):
            try:
                data = peer.sock.recv(1 << 18)
            except BlockingIOError:
                return
            except OSError as exc:
                peer.error = f"recv: {exc!r}"
                peer.eof = True
                return
            if not data:
                peer.eof = True
                return
            peer.received += data

    def _update(self, peer: _Peer) -> None:
        if peer.closed:
            return
        if peer.done:
            self._set_mask(peer, 0)
            peer.sock.close()
            peer.closed = True
            return
        mask = selectors.EVENT_READ
        if peer.sent < peer.send_limit and peer.error is None:
            mask |= selectors.EVENT_WRITE
        self._set_mask(peer, mask)

    def _advance(self) -> set[_Peer]:
        """Release chunks in ``order`` while each named client has sent its last one."""
        touched = set()
        while self.pos < len(self.order):
            peer = self.peers[self.order[self.pos]]
            if peer.sent < peer.released and peer.error is None and not peer.closed:
                break
            peer.released = peer.cuts[peer.next_cut]
            peer.next_cut += 1
            self.pos += 1
            if not peer.closed:
                self._send(peer)
                touched.add(peer)
        return touched

    # -- all clients

    def pump(self, timeout: float) -> None:
        """One round: release what may go, wait up to ``timeout`` for readiness, serve it."""
        for peer in self._advance():
            self._update(peer)
        if not self.selector.get_map():
            threading.Event().wait(timeout)  # nothing left to wait on: pace the caller's loop
            return
        for key, events in self.selector.select(timeout):
            peer = key.data
            if events & selectors.EVENT_WRITE:
                self._send(peer)
            if events & selectors.EVENT_READ:
                self._recv(peer)
            self._update(peer)

    def all_done(self) -> bool:
        return self.pos == len(self.order) and all(p.closed for p in self.peers)

    def run(self, until: Callable[[], bool] | None = None, bound: float = 60.0) -> None:
        """Pump until ``until()`` (default: every client done); fail after ``bound`` s."""
        condition = until or self.all_done
        for peer in self.peers:
            self._update(peer)
        deadline = time.monotonic() + bound
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"echo clients unfinished after {bound} s: {self.progress()}")
            self.pump(0.1)

    def progress(self) -> str:
        done = sum(p.done for p in self.peers)
        sent = sum(p.sent for p in self.peers)
        received = sum(len(p.received) for p in self.peers)
        total = sum(len(p.message) for p in self.peers)
        errors = [p.error for p in self.peers if p.error]
        return (
            f"{done}/{len(self.peers)} done, {sent}/{total} bytes sent, {received} received,"
            f" chunk {self.pos}/{len(self.order)}, errors {errors[:3]}"
        )

    def verify(self) -> None:
        """Every client got exactly its own bytes back (then EOF, if it half-closed)."""
        problems = []
        for i, peer in enumerate(self.peers):
            if peer.received != peer.message:
                problems.append(
                    f"client {i}: sent {peer.sent}/{len(peer.message)}, received"
                    f" {len(peer.received)}, first difference at"
                    f" {first_difference(peer.received, peer.message)}, error {peer.error}"
                )
            elif peer.half_close and (not peer.eof or peer.error is not None):
                problems.append(f"client {i}: all bytes back but no clean EOF ({peer.error})")
        assert not problems, "\n".join(problems[:10]) + f"\n({len(problems)} clients wrong)"

    def close(self) -> None:
        for peer in self.peers:
            peer.sock.close()
        self.selector.close()

    def __enter__(self) -> EchoClients:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def echo_all(server: Server, messages: Sequence[bytes], bound: float = 60.0, **kwargs: Any) -> None:
    """Echo ``messages`` through ``server`` concurrently and verify every byte."""
    with EchoClients(server, messages, **kwargs) as clients:
        clients.run(bound=bound)
        clients.verify()
