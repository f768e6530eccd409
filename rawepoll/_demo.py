"""``rawepoll demo``: the binding next to ``select.epoll``, on loopback TCP.

What it does, and so what it can honestly claim:

1. opens ``--conns`` real TCP connections to a listener on 127.0.0.1 (port 0);
2. registers the server ends with both ``select.epoll`` and ``rawepoll.Epoll``;
3. for several rounds, writes to a random subset of clients and checks that both
   epolls report exactly the same ready set;
4. echoes a message on every connection through a small ``rawepoll.Epoll`` loop
   and verifies every byte came back;
5. times, side by side and alternating, a wait with one active connection among
   all of them idle, for ``select.epoll.poll`` and ``rawepoll.Epoll.wait``.

It uses nothing beyond the standard library, prints what it measured and exits
non-zero if any comparison or byte check failed.
"""

from __future__ import annotations

import argparse
import random
import resource
import select
import socket
import statistics
import time
from collections.abc import Callable

from rawepoll.epoll import Epoll
from rawepoll.events import EventArray
from rawepoll.unix import EPOLLIN

DESCRIPTION = (
    "Open real TCP connections on 127.0.0.1, check that rawepoll.Epoll reports exactly "
    "the ready sets select.epoll reports, echo one message per connection through a "
    "rawepoll loop verifying every byte, and time a wait with one active connection "
    "among all the idle ones, side by side with select.epoll. Exits 1 if anything differed."
)


def _connections(count: int) -> tuple[list[socket.socket], list[socket.socket]]:
    """``count`` connected (client, server) TCP pairs over 127.0.0.1."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    clients: list[socket.socket] = []
    servers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(min(count, 4096))
        address = listener.getsockname()
        for start in range(0, count, 512):
            batch = min(512, count - start)
            for _ in range(batch):
                client = socket.create_connection(address)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                clients.append(client)
            for _ in range(batch):
                server, _peer = listener.accept()
                server.setblocking(False)
                servers.append(server)
    finally:
        listener.close()
    return clients, servers


def _compare_ready_sets(
    clients: list[socket.socket], servers: list[socket.socket], rounds: int
) -> int:
    """Write to random clients; both epolls must report the same ready fds."""
    rng = random.Random(1)
    mismatches = 0
    with select.epoll() as std, Epoll() as raw:
        for server in servers:
            std.register(server.fileno(), select.EPOLLIN)
            raw.register(server.fileno(), EPOLLIN)
        for _ in range(rounds):
            chosen = rng.sample(range(len(clients)), k=min(50, len(clients)))
            for index in chosen:
                clients[index].sendall(b"!")
            expected = {servers[index].fileno() for index in chosen}
            got_std = _poll_until(std, expected)
            got_raw = _poll_until(raw, expected)
            if got_std != got_raw or got_raw != expected:
                mismatches += 1
            for index in chosen:
                servers[index].recv(16)
    return mismatches


def _poll_until(ep: select.epoll | Epoll, expected: set[int]) -> set[int]:
    """Poll until every expected fd is reported (bounded); return what was seen."""
    seen: set[int] = set()
    for _ in range(200):
        seen = {fd for fd, _mask in ep.poll(0.05, len(expected) + 64)}
        if seen >= expected:
            break
    return seen


def _echo_round(clients: list[socket.socket], servers: list[socket.socket]) -> tuple[int, int]:
    """Every client sends one message; a rawepoll loop echoes; count bad bytes."""
    by_fd = {server.fileno(): server for server in servers}
    messages = [f"hello {index:06d} ".encode() * 3 for index in range(len(clients))]
    for client, message in zip(clients, messages, strict=True):
        client.sendall(message)
    pending = sum(len(message) for message in messages)
    events = EventArray(256)
    with Epoll() as ep:
        for fd in by_fd:
            ep.register(fd, EPOLLIN)
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            n = ep.wait(events, 0.1)
            for fd, _mask in events.ready(n):
                data = by_fd[fd].recv(65536)
                by_fd[fd].sendall(data)  # small messages: the send buffer has room
                pending -= len(data)
    bad = 0
    for client, message in zip(clients, messages, strict=True):
        client.settimeout(10)
        got = b""
        while len(got) < len(message):
            chunk = client.recv(len(message) - len(got))
            if not chunk:
                break
            got += chunk
        bad += got != message
    return len(clients) - bad, bad


def _alternate(a: Callable[[], float], b: Callable[[], float], rounds: int) -> list[float]:
    ratios = []
    for _ in range(rounds):
        ta = a()
        tb = b()
        ratios.append(tb / ta)
    return ratios


def _idle_wait_ratio(clients: list[socket.socket], servers: list[socket.socket]) -> list[float]:
    """One active connection among all idle: stdlib poll vs rawepoll wait."""
    std = select.epoll()
    raw = Epoll()
    events = EventArray(64)
    try:
        for server in servers:
            std.register(server.fileno(), select.EPOLLIN)
            raw.register(server.fileno(), EPOLLIN)
        clients[0].sendall(b"x")  # one active descriptor, never read: stays ready
        _poll_until(raw, {servers[0].fileno()})
        loops = 20_000

        def run_std() -> float:
            start = time.perf_counter_ns()
            for _ in range(loops):
                for _fd, _mask in std.poll(0):
                    pass
            return (time.perf_counter_ns() - start) / loops

        def run_raw() -> float:
            start = time.perf_counter_ns()
            for _ in range(loops):
                n = raw.wait(events, 0)
                for _fd, _mask in events.ready(n):
                    pass
            return (time.perf_counter_ns() - start) / loops

        return _alternate(run_std, run_raw, 7)
    finally:
        std.close()
        raw.close()
        servers[0].recv(16)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rawepoll demo`` options."""
    parser.add_argument(
        "--conns", type=_positive, default=5000, help="TCP connections to open (default 5000)"
    )
    parser.add_argument(
        "--rounds", type=_positive, default=20, help="ready-set comparison rounds (default 20)"
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 if every comparison and every byte checked out."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    conns = max(1, min(args.conns, (soft - 64) // 2))
    if conns < args.conns:
        print(f"RLIMIT_NOFILE is {soft}: using {conns} connections instead of {args.conns}")

    started = time.monotonic()
    clients, servers = _connections(conns)
    try:
        print(f"opened {conns} TCP connections on 127.0.0.1 in {time.monotonic() - started:.2f} s")
        mismatches = _compare_ready_sets(clients, servers, args.rounds)
        print(
            f"ready sets, select.epoll vs rawepoll.Epoll: {args.rounds - mismatches}/{args.rounds}"
            " rounds identical"
        )
        good, bad = _echo_round(clients, servers)
        print(f"echo through a rawepoll.Epoll loop: {good}/{conns} messages verified byte for byte")
        ratios = _idle_wait_ratio(clients, servers)
        print(
            f"wait with 1 active among {conns} idle, rawepoll.Epoll.wait / select.epoll.poll:"
            f" median {statistics.median(ratios):.2f}x"
            f" (spread {min(ratios):.2f}-{max(ratios):.2f}, 7 alternating rounds)"
        )
    finally:
        for sock in clients + servers:
            sock.close()
    ok = mismatches == 0 and bad == 0
    print("demo: OK" if ok else "demo: FAILED")
    return 0 if ok else 1
