"""Shared fixtures: real descriptors only, in the manner of trio's test suite."""

from __future__ import annotations

import os
import platform
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import rawepoll

# The oracle and the implementation under test, for contract tests that run
# the same assertions over both.
EPOLL_CLASSES: list[Callable[..., object]] = [select.epoll, rawepoll.Epoll]
EPOLL_IDS = ["select.epoll", "rawepoll.Epoll"]


@pytest.fixture(params=EPOLL_CLASSES, ids=EPOLL_IDS)
def epoll_cls(request: pytest.FixtureRequest) -> Callable[..., object]:
    """``select.epoll`` and ``rawepoll.Epoll``, in turn."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def sockpair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected, non-blocking AF_UNIX stream pair, closed afterwards."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture(params=["socket", "int"])
def as_fileobj(request: pytest.FixtureRequest) -> Callable[[socket.socket], object]:
    """Run a test with socket objects and with raw int descriptors."""
    if request.param == "int":
        return lambda sock: sock.fileno()
    return lambda sock: sock


def fill(sock: socket.socket, chunk: int = 65536) -> int:
    """Write until the kernel says EAGAIN; return the bytes written (bounded)."""
    total = 0
    data = b"x" * chunk
    for _ in range(100_000):
        try:
            total += sock.send(data)
        except BlockingIOError:
            return total
    raise AssertionError("socket never filled up")


def drain(sock: socket.socket, chunk: int = 65536) -> int:
    """Read until EAGAIN (or EOF); return the bytes read (bounded)."""
    total = 0
    for _ in range(100_000):
        try:
            data = sock.recv(chunk)
        except BlockingIOError:
            return total
        if not data:
            return total
        total += len(data)
    raise AssertionError("socket never drained")


def open_fds() -> int:
    """How many descriptors this process holds now."""
    return len(os.listdir("/proc/self/fd"))


def epoll_interest(epfd: int) -> list[tuple[int, int, int]]:
    """The kernel's interest list of ``epfd``, sorted: ``(fd, events, data)`` per entry.

    Read from ``/proc/self/fdinfo/<epfd>`` (lines ``tfd: N events: HEX data: HEX``),
    so it shows what the kernel stored, not what a wrapper believes it passed.
    ``select.epoll`` sets only ``data.fd`` and leaves the union's other half
    uninitialised: compare ``data & 0xFFFFFFFF`` across implementations.
    """
    with open(f"/proc/self/fdinfo/{epfd}") as f:
        lines = f.read().splitlines()
    entries = []
    for line in lines:
        if line.startswith("tfd:"):
            words = line.split()
            entries.append((int(words[1]), int(words[3], 16), int(words[5], 16)))
    return sorted(entries)


# System call numbers that block in epoll_wait, per machine (asm/unistd.h).
_EPOLL_WAIT_SYSCALLS = {
    "x86_64": {232, 281, 441},  # epoll_wait, epoll_pwait, epoll_pwait2
    "aarch64": {22, 441},  # epoll_pwait, epoll_pwait2
}


def in_epoll_wait(tid: int) -> bool:
    """Whether thread ``tid`` is inside an epoll_wait-family system call now.

    ``/proc/self/task/<tid>/syscall`` names the call a blocked thread sleeps in;
    on machines not in the table, any blocking system call counts.
    """
    with open(f"/proc/self/task/{tid}/syscall") as f:
        first = f.read().split()[0]
    if not first.isdigit():
        return False  # "running"
    numbers = _EPOLL_WAIT_SYSCALLS.get(platform.machine())
    return numbers is None or int(first) in numbers


def wait_until_in_epoll_wait(tid: int, bound: float = 30.0) -> None:
    """Block until thread ``tid`` sleeps in epoll_wait (a liveness bound, not a timing test)."""
    pause = threading.Event()
    deadline = time.monotonic() + bound
    while not in_epoll_wait(tid):
        if time.monotonic() > deadline:
            raise AssertionError(f"thread {tid} never entered epoll_wait")
        pause.wait(0.001)


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(source: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in a fresh interpreter (this one) with rawepoll importable.

    For tests that must change process-wide state (rlimits, signal masks) or
    may crash: the test process is left untouched.  Output is captured as text.
    """
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + (os.pathsep + path if path else ""))
    return subprocess.run(
        [sys.executable, "-c", source, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO_ROOT,
        check=False,
    )


def epoll_wait_args(tid: int) -> tuple[int, int, int] | None:
    """``(epfd, maxevents, timeout_ms)`` of the epoll_wait thread ``tid`` sleeps in, else None.

    The kernel's view of the call: what a wrapper really asked for, read from
    ``/proc/self/task/<tid>/syscall`` (number, then the argument registers).
    Under epoll_pwait2 the last item is the timespec pointer, not milliseconds.
    """
    with open(f"/proc/self/task/{tid}/syscall") as f:
        words = f.read().split()
    if not words[0].isdigit() or not in_epoll_wait(tid):
        return None
    args = [int(word, 16) for word in words[1:5]]

    def c_int(register: int) -> int:
        low = register & 0xFFFFFFFF
        return low - (1 << 32) if low >= 1 << 31 else low

    return c_int(args[0]), c_int(args[2]), c_int(args[3])
