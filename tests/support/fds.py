"""Real descriptors, in the manner of trio's test suite: fill, drain, count, look inside."""

from __future__ import annotations

import os
import socket

BOUND_CALLS = 100_000  # no fill or drain loop runs longer than this many calls


def fill(sock: socket.socket, chunk: int = 65536) -> int:
    """Write until the kernel says EAGAIN; return the bytes written (bounded)."""
    total = 0
    data = b"x" * chunk
    for _ in range(BOUND_CALLS):
        try:
            total += sock.send(data)
        except BlockingIOError:
            return total
    raise AssertionError("socket never filled up")


def drain(sock: socket.socket, chunk: int = 65536) -> int:
    """Read until EAGAIN (or EOF); return the bytes read (bounded)."""
    total = 0
    for _ in range(BOUND_CALLS):
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
