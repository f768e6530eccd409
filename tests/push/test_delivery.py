"""Delivery under stress: subscribers that do not read, and a worker that is killed.

* **Slow consumers.**  ``--max-pending 4096``: a subscriber that never reads (a small receive
  buffer, never read) while a stream of 20 MB is published must not grow the server's memory
  (RSS, from ``/proc``, within a generous bound far below the stream) -- with ``--slow-policy
  drop`` its messages are dropped and counted, with ``close`` it is closed and counted -- and
  the subscribers that read get every message, in order.  The publisher waits for the answers
  to each small batch, and the readers are read all the while, so only the slow one falls behind.
* **A worker killed.**  Three workers, subscribers in each (found through ``/proc``): SIGKILL of
  one loses only its connections; the others keep receiving, and the replacement serves new
  subscribers.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from collections.abc import Iterator

import pytest
from support.children import python_env
from support.clients import read_until_closed, recv_exactly
from support.counters import stop_quietly
from support.proc import server_side_inode, socket_inodes, status_bytes, wait_until
from support.servers import Server

from rawepoll.tools.serverproc import serve_argv

pytestmark = pytest.mark.timeout(120)

HANDLER = "rawepoll.server.handler:LinePubSubHandler"
BOUND = 20.0
PAYLOAD = 4000  # bytes per message
MESSAGES = 5000  # 20 MB in all
BATCH = 8  # publishes in flight: 32 KB, far below a reader's receive buffer
RSS_BOUND = 8 << 20  # growth allowed; an uncapped slow subscriber would take ~20 MB


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        stop_quietly(server)


def start(servers: list[Server], *args: str, workers: int = 1) -> Server:
    argv = serve_argv("--port", "0", "--handler", HANDLER, "--workers", str(workers))
    server = Server([*argv, "--drain-timeout", "2", *args], env=python_env())
    servers.append(server)
    return server


def subscribe(sock: socket.socket, topic: bytes) -> None:
    sock.sendall(b"SUB %s\n" % topic)
    reply = b"OK SUB %s\n" % topic
    assert recv_exactly(sock, len(reply)) == reply


class Reader:
    """A subscriber that reads everything and checks the sequence numbers as they come."""

    def __init__(self, sock: socket.socket, topic: bytes) -> None:
        self.sock = sock
        self.prefix = b"MSG %s " % topic
        self.buffer = b""
        self.next = 0  # the sequence number expected next

    def take(self) -> None:
        data = self.sock.recv(1 << 20)
        assert data, f"a reader was closed after message {self.next}"
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        for line in lines:
            assert line.startswith(self.prefix), line[:40]
            seq = int(line[len(self.prefix) :].split(b":", 1)[0])
            assert seq == self.next, f"message {seq} where {self.next} was due"
            self.next += 1


def message(seq: int) -> bytes:
    head = b"%d:" % seq
    return head + b"x" * (PAYLOAD - len(head))


def stream(
    server: Server, publisher: socket.socket, readers: list[Reader], count: int, topic: bytes
) -> int:
    """Publish ``count`` messages in batches, reading every reader meanwhile; the largest RSS
    growth of the (one-worker) server over the first reading."""
    selector = selectors.DefaultSelector()
    for reader in readers:
        reader.sock.setblocking(False)
        selector.register(reader.sock, selectors.EVENT_READ, reader)
    publisher.setblocking(False)
    selector.register(publisher, selectors.EVENT_READ, None)
    ok = b"OK PUB %s\n" % topic
    replies = b""
    baseline = status_bytes(server.pid, "VmRSS")
    grown = 0
    try:
        for start in range(0, count, BATCH):
            size = min(BATCH, count - start)
            batch = b"".join(b"PUB %s %s\n" % (topic, message(start + i)) for i in range(size))
            publisher.setblocking(True)
            publisher.sendall(batch)
            publisher.setblocking(False)
            deadline = time.monotonic() + BOUND
            while len(replies) < size * len(ok):
                assert time.monotonic() < deadline, "no answer to a batch of publishes"
                for key, _ in selector.select(BOUND):
                    if key.data is None:
                        replies += publisher.recv(65536)
                    else:
                        key.data.take()
            assert replies == ok * size, replies[:80]
            replies = b""
            grown = max(grown, status_bytes(server.pid, "VmRSS") - baseline)
        deadline = time.monotonic() + BOUND
        while any(reader.next < count for reader in readers):
            assert time.monotonic() < deadline, [reader.next for reader in readers]
            for key, _ in selector.select(BOUND):
                if key.data is not None:
                    key.data.take()
    finally:
        selector.close()
    return grown


@pytest.mark.parametrize("mode", ["lt", "et"])
@pytest.mark.parametrize("policy", ["drop", "close"])
def test_a_subscriber_that_does_not_read_costs_bounded_memory(
    servers: list[Server], policy: str, mode: str
) -> None:
    server = start(servers, "--mode", mode, "--max-pending", "4096", "--slow-policy", policy)
    slow = server.connect(rcvbuf=4096)
    subscribe(slow, b"t")  # and never read again
    readers = []
    for _ in range(3):
        sock = server.connect(rcvbuf=1 << 20)
        subscribe(sock, b"t")
        readers.append(Reader(sock, b"t"))
    publisher = server.connect()
    stream(server, publisher, readers, 200, b"t")  # the slow one is full and capped by now
    for reader in readers:
        reader.next = 0
    grown = stream(server, publisher, readers, MESSAGES, b"t")
    assert grown < RSS_BOUND, f"the server grew by {grown >> 20} MiB"

    total = 200 + MESSAGES
    _, how = read_until_closed(slow) if policy == "close" else (b"", "")
    slow.close()
    for sock in [reader.sock for reader in readers] + [publisher]:
        sock.close()
    server.poll_events()
    counters = server.stop().counters
    if policy == "drop":
        assert counters["dropped"] > 0 and counters["slow_closed"] == 0
        assert counters["delivered"] + counters["dropped"] == total * 4
    else:
        assert how in ("eof", "reset")
        assert counters["slow_closed"] == 1 and counters["dropped"] == 0
        assert counters["delivered"] >= total * 3
    assert counters["published"] == total


# ---------------------------------------------------------------- a worker killed


def owner(server: Server, sock: socket.socket) -> int:
    """The worker that holds the server's end of ``sock``."""
    inode = server_side_inode(sock)
    assert inode is not None
    pids = server.worker_pids
    wait_until(lambda: any(inode in socket_inodes(pid) for pid in pids), "accepted")
    return next(pid for pid in pids if inode in socket_inodes(pid))


def publish(publisher: socket.socket, topic: bytes, count: int) -> None:
    publisher.sendall(b"".join(b"PUB %s %s\n" % (topic, message(i)[:40]) for i in range(count)))
    ok = b"OK PUB %s\n" % topic
    assert recv_exactly(publisher, len(ok) * count) == ok * count


def receive(sock: socket.socket, topic: bytes, count: int) -> None:
    expected = b"".join(b"MSG %s %s\n" % (topic, message(i)[:40]) for i in range(count))
    assert recv_exactly(sock, len(expected)) == expected


def test_a_killed_worker_loses_only_its_own_connections(servers: list[Server]) -> None:
    server = start(servers, "--stats-interval", "0.1", workers=3)
    held: dict[int, list[socket.socket]] = {pid: [] for pid in server.worker_pids}
    for _ in range(30):  # rotate balance spreads them; bounded all the same
        sock = server.connect(bound=BOUND)
        subscribe(sock, b"t1")
        held[owner(server, sock)].append(sock)
        if all(len(socks) >= 2 for socks in held.values()):
            break
    assert all(held.values()), "a worker holds no subscriber"
    publisher = server.connect(bound=BOUND)
    home = owner(server, publisher)
    victim = next(pid for pid in held if pid != home)

    os.kill(victim, signal.SIGKILL)
    replacement = server.restart_of(victim)["new_pid"]
    for sock in held.pop(victim):
        assert read_until_closed(sock)[1] in ("eof", "reset")
    survivors = [sock for socks in held.values() for sock in socks]
    publish(publisher, b"t1", 20)
    for sock in survivors:
        receive(sock, b"t1", 20)

    newcomers = []
    for _ in range(30):
        sock = server.connect(bound=BOUND)
        subscribe(sock, b"t2")
        newcomers.append(sock)
        if owner(server, sock) == replacement:
            break
    assert owner(server, newcomers[-1]) == replacement, "the replacement took no connection"
    for sock in survivors:
        subscribe(sock, b"t2")
    publish(publisher, b"t2", 20)
    for sock in survivors + newcomers:
        receive(sock, b"t2", 20)

    for sock in [*survivors, *newcomers, publisher]:
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == (b"", "eof")
        sock.close()
    server.poll_events()
    stopped = server.stop()
    assert stopped.clean, server.describe()
    assert stopped.exit is not None and stopped.exit["restarted"] == 1
