"""The issue's bound: an upgraded, idle, subscribed WebSocket connection costs at most 32
bytes of user space in the worker.

One worker, the default application; connections upgraded to ``/topic/idle`` in
batches (handshakes pipelined, at most :data:`BATCH` in flight: the transient
handshake state peaks the same in every batch).  A warm-up batch first, so that
the allocator's arenas and the per-fd pages the next batch needs are the same;
then the worker's RSS (``/proc/PID/smaps_rollup``) before and after :data:`N` more.
The kernel's memory per socket is not in RSS: this is the server's own cost.
The growth may exceed ``32 * N`` by a fixed :data:`ALLOWANCE` -- page granularity
and unrelated allocations, independent of N.  Every connection is then shown to be
subscribed: one publish through ``--control`` reaches each of them.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from rawepoll.tools.serverproc import ServerProcess

from .conftest import stop_cleanly
from .helpers import BOUND, HOST, RFC_ACCEPT, client_frame, serve, upgrade_request

pytestmark = pytest.mark.timeout(180)
WARM_UP = 2_000
N = 10_000
BATCH = 100
BOUND_PER_CONNECTION = 32  # bytes, the figure
ALLOWANCE = 64 * 1024  # bytes in all, whatever N: pages and unrelated allocations
REQUEST = upgrade_request("/topic/idle")
ANSWER_END = b"\r\n\r\n"


def rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no Rss in /proc/{pid}/smaps_rollup")


def upgraded(port: int, count: int, stack: contextlib.ExitStack) -> list[socket.socket]:
    """``count`` connections upgraded to /topic/idle, :data:`BATCH` handshakes at a time."""
    out: list[socket.socket] = []
    answer = b""  # the 101, the same for every connection (same key): read whole once known
    while len(out) < count:
        batch = [
            stack.enter_context(socket.create_connection((HOST, port), timeout=BOUND))
            for _ in range(min(BATCH, count - len(out)))
        ]
        for sock in batch:
            sock.sendall(REQUEST)
        for sock in batch:
            if not answer:
                while not answer.endswith(ANSWER_END):
                    data = sock.recv(1)  # nothing may follow the 101 here
                    assert data, "the server closed instead of upgrading"
                    answer += data
                assert answer.startswith(b"HTTP/1.1 101 ") and RFC_ACCEPT.encode() in answer
            else:
                assert sock.recv(len(answer), socket.MSG_WAITALL) == answer
        out += batch
    return out


def settled(server: ServerProcess, stack: contextlib.ExitStack) -> None:
    """An echo on another connection: the worker has done everything asked before it."""
    [probe] = upgraded(server.port, 1, stack)
    probe.sendall(client_frame(0x1, b"done?"))
    assert probe.recv(16) == b"\x81\x05done?"


def publish(control: Path, topic: str, payload: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(BOUND)
        sock.connect(str(control))
        sock.sendall(f"PUBLISH {topic} {len(payload)}\n".encode() + payload)
        assert sock.recv(64) == b"OK\n"


def test_an_idle_subscribed_connection_costs_at_most_32_bytes(tmp_path: Path) -> None:
    control = tmp_path / "control.sock"
    with serve("--control", str(control)) as server:
        with contextlib.ExitStack() as stack:  # every client closed before the server stops
            [worker] = server.ready.workers
            clients = upgraded(server.port, WARM_UP, stack)
            settled(server, stack)
            before = rss(worker)
            clients += upgraded(server.port, N, stack)
            settled(server, stack)
            after = rss(worker)
            each = (after - before) / N
            print(
                f"idle subscribed WebSocket: {after - before} B of RSS for {N}: {each:.1f} B each"
            )
            assert after - before <= BOUND_PER_CONNECTION * N + ALLOWANCE, each

            publish(control, "idle", b"to everyone")
            frame = b"\x81\x0bto everyone"
            for sock in clients:
                assert sock.recv(len(frame), socket.MSG_WAITALL) == frame
        stop_cleanly(server)
