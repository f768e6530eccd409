"""What ``/proc`` says about a thread or a process, and the one bounded poll of a condition.

Synchronisation on such a reading is a poll with a deadline
(:func:`wait_until`): the deadline is a liveness bound, never a timing
assertion.
"""

from __future__ import annotations

import os
import platform
import socket
import threading
import time
from collections.abc import Callable

WAIT_BOUND = 20.0  # default bound of wait_until


def wait_until(
    predicate: Callable[[], object], what: str, bound: float = WAIT_BOUND, pace: float = 0.02
) -> None:
    """Poll ``predicate`` (a ``/proc`` read, say) every ``pace`` s until it holds; fail after
    ``bound`` s."""
    pacer = threading.Event()
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {bound} s")
        pacer.wait(pace)


# ---------------------------------------------------------------- threads of this process

# System call numbers that block in epoll_wait, per machine (asm/unistd.h).
_EPOLL_WAIT_SYSCALLS = {
    "x86_64": {232, 281, 441},  # epoll_wait, epoll_pwait, epoll_pwait2
    "aarch64": {22, 441},  # epoll_pwait, epoll_pwait2
}


def in_epoll_wait(tid: int, process: int | str = "self") -> bool:
    """Whether thread ``tid`` (of this process, or of ``process``) is inside an
    epoll_wait-family system call now.

    ``/proc/PID/task/<tid>/syscall`` names the call a blocked thread sleeps in;
    on machines not in the table, any blocking system call counts.  A
    single-threaded process is its own thread: ``in_epoll_wait(pid, pid)``.
    """
    try:
        with open(f"/proc/{process}/task/{tid}/syscall") as f:
            first = f.read().split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False  # gone
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


# ---------------------------------------------------------------- other processes


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


def descendants(pid: int) -> set[int]:
    """The live children of ``pid``, their children, and so on (bounded by the tree)."""
    found: set[int] = set()
    frontier = children(pid)
    for _ in range(64):  # depth bound: no tree of ours is deeper
        if not frontier:
            break
        found |= frontier
        frontier = set().union(*(children(child) for child in frontier)) - found
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    return not _is_zombie(pid)


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


# ---------------------------------------------------------------- IPv4 sockets (/proc/net/tcp)


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


def listening_ports(pid: int) -> set[int]:
    """The TCP ports (IPv4 and IPv6) on which process ``pid`` holds a listening socket."""
    inodes = socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            words = line.split()
            if words[3] == "0A" and int(words[9]) in inodes:
                ports.add(int(words[1].rsplit(":", 1)[1], 16))
    return ports
