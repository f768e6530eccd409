"""Running out of things: descriptors (EMFILE), connection slots, peers that reset or idle."""

from __future__ import annotations

import os
import random
import resource
import select
import selectors
import socket
import threading
import time
from collections.abc import Callable

import pytest
from support.clients import (
    echo_all,
    read_until_closed,
    recv_exactly,
    roundtrip,
    rst_close,
    send_until_blocked,
)
from support.proc import accept_queue, children, cpu_seconds, fd_count, wait_until
from support.servers import MODES, Server


def settle(sock: socket.socket, tag: bytes) -> str | None:
    """Without blocking: ``"echoed"`` (tag back), ``"closed"`` (EOF/RST) or None (nothing yet)."""
    sock.setblocking(False)  # a socket with a timeout would first wait for readability
    try:
        data = sock.recv(len(tag), socket.MSG_PEEK)
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return "closed"
    if not data:
        return "closed"
    if len(data) < len(tag):
        return None
    assert recv_exactly(sock, len(tag)) == tag
    return "echoed"


# ---------------------------------------------------------------- EMFILE


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.timeout(90)
def test_emfile_backs_off_without_spinning_and_recovers(
    server: Callable[..., Server], mode: str
) -> None:
    """At RLIMIT_NOFILE the server survives, does not spin, and serves again once fds free up."""
    srv = server("--mode", mode)
    numbers = [int(name) for name in os.listdir(f"/proc/{srv.pid}/fd")]
    limit = max(max(numbers) + 1, len(numbers)) + 10  # room for about ten connections
    resource.prlimit(srv.pid, resource.RLIMIT_NOFILE, (limit, limit))

    clients = [srv.connect() for _ in range(40)]
    tags = [b"client %02d\n" % i for i in range(len(clients))]
    for sock, tag in zip(clients, tags, strict=True):
        sock.sendall(tag)
    outcome: dict[int, str] = {}

    def at_the_limit() -> bool:
        for i, sock in enumerate(clients):
            if i not in outcome and (state := settle(sock, tags[i])) is not None:
                outcome[i] = state
        pending = len(clients) - len(outcome)
        return (
            bool(outcome)
            and pending == accept_queue(srv.port or 0)
            and fd_count(srv.pid) >= limit - 2
        )

    wait_until(at_the_limit, "server holding all the descriptors it may")
    assert len(outcome) < len(clients), "the lowered limit never bit"

    # Sitting at EMFILE with connections queued: the server must back off, not spin.
    cpu_before, wall_before = cpu_seconds(srv.pid), time.monotonic()
    threading.Event().wait(2.0)  # a measuring window (its length is the denominator only)
    cpu_used, wall = cpu_seconds(srv.pid) - cpu_before, time.monotonic() - wall_before
    assert srv.proc.poll() is None, srv.describe()
    assert cpu_used < 0.5 * wall, f"server burned {cpu_used:.2f} s CPU in {wall:.2f} s at EMFILE"
    assert len(srv.stderr_lines) < 100, "EMFILE logged more than once per back-off interval"

    # Free the descriptors: every queued client is served (or refused), one after another.
    for i, state in outcome.items():
        if state == "echoed":
            clients[i].close()
    settle_the_rest(clients, tags, outcome, bound=30)
    assert len(outcome) == len(clients)

    fresh = srv.connect()
    roundtrip(fresh, b"recovered\n")
    fresh.close()
    assert srv.stop().clean, srv.describe()


def settle_the_rest(
    clients: list[socket.socket], tags: list[bytes], outcome: dict[int, str], bound: float
) -> None:
    """Wait for each client not in ``outcome`` to settle; record how, and close it."""
    deadline = time.monotonic() + bound
    with selectors.DefaultSelector() as selector:
        for i, sock in enumerate(clients):
            if i not in outcome:
                selector.register(sock, selectors.EVENT_READ, i)
        while selector.get_map():
            assert time.monotonic() < deadline, f"{len(selector.get_map())} clients never served"
            for key, _ in selector.select(1.0):
                i = key.data
                state = settle(clients[i], tags[i])
                if state is not None:
                    outcome[i] = state
                    selector.unregister(clients[i])
                    clients[i].close()


# ---------------------------------------------------------------- --max-conns


@pytest.mark.timeout(60)
def test_max_conns_closes_the_excess_and_counts_it(server: Callable[..., Server]) -> None:
    srv = server("--max-conns", "5")
    held = [srv.connect() for _ in range(5)]
    for i, sock in enumerate(held):
        roundtrip(sock, b"held %d\n" % i)

    refused = 0
    for _ in range(5):
        sock = srv.connect()
        data, how = read_until_closed(sock, bound=10)
        assert data == b"" and how in ("eof", "reset")
        refused += 1
        sock.close()
    for i, sock in enumerate(held):
        roundtrip(sock, b"still held %d\n" % i)

    # Once the server has closed one of them, a slot is free again.
    before = fd_count(srv.pid)
    held.pop().close()
    wait_until(lambda: fd_count(srv.pid) < before, "server closing the released connection")
    newcomer = srv.connect()
    roundtrip(newcomer, b"newcomer\n")
    for sock in [*held, newcomer]:
        sock.close()

    assert srv.stop().clean, srv.describe()
    assert srv.exit_counters()["refused"] == refused, srv.describe()


def test_full_workers_wait_without_spinning(server: Callable[..., Server]) -> None:
    """Several workers, all at --max-conns: they stop accepting and sleep.

    A new connection waits in the kernel's queue (not refused: another worker
    may free a slot) and is served once one does.  A regression test: full
    workers used to wait with a zero timeout, burning a core each.
    """
    srv = server("--workers", "2", "--max-conns", "3")
    held = [srv.connect() for _ in range(6)]
    for i, sock in enumerate(held):
        roundtrip(sock, b"held %d\n" % i)
    queued = srv.connect()
    workers = sorted(children(srv.pid))
    assert len(workers) == 2
    before = sum(cpu_seconds(pid) for pid in workers)
    start = time.monotonic()
    sink = threading.Event()
    sink.wait(1.0)  # a window to measure CPU over, not a synchronisation
    elapsed = time.monotonic() - start
    burnt = sum(cpu_seconds(pid) for pid in workers) - before
    assert burnt < 0.5 * elapsed, f"full workers used {burnt:.2f} s CPU in {elapsed:.2f} s"
    held.pop().close()
    roundtrip(queued, b"served at last\n")
    for sock in [*held, queued]:
        sock.close()
    assert srv.stop().clean, srv.describe()


# ---------------------------------------------------------------- --idle-timeout


@pytest.mark.timeout(60)
def test_idle_timeout_closes_idle_but_not_active(server: Callable[..., Server]) -> None:
    """Idle clients see EOF; a client in constant round trips meanwhile stays open.

    The active client's pauses are short (its waits end on the idle client's
    EOF), far below the 1 s timeout.
    """
    srv = server("--idle-timeout", "1")
    idle = srv.connect()
    roundtrip(idle, b"then silence\n")
    silent = srv.connect()  # never sends a byte
    active = srv.connect()

    trips = 0
    deadline = time.monotonic() + 20
    while not select.select([idle], [], [], 0.02)[0]:
        assert time.monotonic() < deadline, "the idle client was never closed"
        trips += 1
        roundtrip(active, b"ping %d\n" % trips)
    assert read_until_closed(idle, bound=20) == (b"", "eof")
    assert read_until_closed(silent, bound=20) == (b"", "eof")
    for i in range(5):
        roundtrip(active, b"after %d round trips: %d\n" % (trips, i))
    for sock in (idle, silent, active):
        sock.close()
    assert srv.stop().clean, srv.describe()


# ---------------------------------------------------------------- RST storms


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.timeout(90)
def test_rst_storm_leaks_no_descriptors(server: Callable[..., Server], mode: str) -> None:
    srv = server("--mode", mode)
    warm = srv.connect()
    roundtrip(warm, b"warm up\n")
    with_one = fd_count(srv.pid)
    warm.close()
    wait_until(lambda: fd_count(srv.pid) < with_one, "warm-up connection closed")
    baseline = fd_count(srv.pid)

    rng = random.Random(mode)
    for _ in range(3):
        batch = [srv.connect() for _ in range(100)]
        for sock in batch:
            sock.sendall(rng.randbytes(rng.randrange(1, 3000)))
        for i, sock in enumerate(batch):
            if i % 3 == 0:  # some are reset after the echo began, some before
                assert recv_exactly(sock, 1)
            rst_close(sock)
    # Resets while the server has output pending for the peer.
    for _ in range(5):
        sock = srv.connect(rcvbuf=4096)
        sock.setblocking(False)
        send_until_blocked(sock, 4 << 20, attempts=10_000)
        rst_close(sock)

    wait_until(lambda: fd_count(srv.pid) == baseline, "server fds back to baseline", bound=30)
    assert srv.proc.poll() is None, srv.describe()
    echo_all(srv, [os.urandom(50_000) for _ in range(5)])
    assert srv.stop().clean, srv.describe()
    summary = srv.exit_counters()
    assert summary["accepted"] == summary["closed"], srv.describe()
