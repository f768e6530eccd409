"""``rawepoll serve --broker``: two servers ("hosts") on one real redis-server.

Each server runs ``LinePubSubHandler`` (``SUB topic`` / ``PUB topic message``;
subscribers read ``MSG topic message``), one with a single worker and one
with three, in LT and ET.  What is checked:

* a publish on either server, or from ``redis-cli PUBLISH``, reaches every
  subscriber of both once, in order per publisher -- and nothing else
  arrives before a last marker published after everything;
* each worker subscribes in Redis to exactly the topics it has local
  subscribers for (``PUBSUB CHANNELS``/``NUMSUB``, with the worker of each
  client read from ``/proc``);
* Redis killed mid-stream: publishes reach their own server's subscribers
  only (counted as lost); Redis started again on the same port: the servers
  reconnect, subscribe again, and delivery across hosts resumes;
* Redis unreachable at start: local delivery, then the broker when it comes;
* Redis that stops reading: the publisher's buffer is capped, drops counted.

Every wait is for an event (a reply, a status event, a Redis state), bounded.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from rawepoll.tools.serverproc import ServerProcess

from .redis_fixture import RedisServer, free_port, need_redis, redis_server, wait_until

HANDLER: Final = "rawepoll.server.handler:LinePubSubHandler"
BOUND: Final = 30.0  # seconds for any one thing to happen
N: Final = 150  # messages per publisher and round

pytestmark = pytest.mark.timeout(180)


# -- clients -------------------------------------------------------------------


class Client:
    """A blocking line client of ``LinePubSubHandler``; every read is bounded."""

    def __init__(self, address: Any) -> None:
        self.sock = socket.create_connection(address, timeout=BOUND)
        self.buffer = b""

    def line(self) -> str:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def command(self, text: str) -> None:
        """Send one command and check its ``OK`` (a non-subscriber gets nothing else)."""
        self.sock.sendall(f"{text}\n".encode())
        verb, topic = text.split()[:2]
        assert self.line() == f"OK {verb} {topic}"

    def subscribe(self, topic: str) -> None:
        self.command(f"SUB {topic}")

    def publish(self, topic: str, messages: list[str]) -> None:
        """``PUB topic message`` for each, in one write; then every ``OK``."""
        self.sock.sendall(b"".join(f"PUB {topic} {m}\n".encode() for m in messages))
        for _ in messages:
            assert self.line() == f"OK PUB {topic}"

    def receive(self, topic: str, count: int) -> list[str]:
        """The next ``count`` messages (``MSG topic message``) this subscriber gets."""
        got = []
        for _ in range(count):
            verb, name, message = self.line().split(" ", 2)
            assert (verb, name) == ("MSG", topic)
            got.append(message)
        return got

    def close(self) -> None:
        self.sock.close()


def in_order(messages: list[str], sources: dict[str, int]) -> None:
    """Each source's messages ``SOURCE-0 .. SOURCE-(n-1)``, all of them, once, in order."""
    seen: dict[str, list[int]] = {source: [] for source in sources}
    for message in messages:
        source, _, index = message.partition("-")
        seen[source].append(int(index))
    assert seen == {source: list(range(n)) for source, n in sources.items()}


def batch(source: str, count: int = N) -> list[str]:
    return [f"{source}-{i}" for i in range(count)]


# -- which worker holds a client's connection -----------------------------------------


def worker_of(server: ServerProcess, client: Client) -> int:
    """The pid of the worker that accepted ``client`` (its socket's inode, found in /proc)."""
    target = f"socket:[{_server_side_inode(server.port, client.sock.getsockname()[1])}]"
    for pid in server.worker_pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # a descriptor closed meanwhile
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
    raise AssertionError(f"no worker of {server.worker_pids} holds {target}")


def _server_side_inode(server_port: int, client_port: int) -> str:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if (
            int(local.rsplit(":", 1)[1], 16) == server_port
            and int(remote.rsplit(":", 1)[1], 16) == client_port
            and inode != "0"
        ):
            return inode
    raise AssertionError(f"no accepted socket from port {client_port} in /proc/net/tcp")


def holders(server: ServerProcess, clients: list[Client]) -> int:
    """How many workers of ``server`` hold at least one of ``clients``."""
    return len({worker_of(server, client) for client in clients})


# -- fixtures --------------------------------------------------------------------


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
def start() -> Iterator[Callable[..., ServerProcess]]:
    """``start(url, mode, workers)``: a pub/sub server on the broker, stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def start_server(url: str, mode: str, workers: int) -> ServerProcess:
            server = ServerProcess.serve(
                *("--port", "0", "--handler", HANDLER, "--broker", url),
                *("--mode", mode, "--workers", str(workers)),
                *("--stats-interval", "0.05", "--drain-timeout", "2", "--quiet"),
            )
            return stack.enter_context(server)

        yield start_server


@pytest.fixture
def connect() -> Iterator[Callable[[ServerProcess], Client]]:
    """``connect(server)``: a client, closed at teardown (before the servers stop)."""
    clients: list[Client] = []

    def connect_to(server: ServerProcess) -> Client:
        client = Client(server.address)
        clients.append(client)
        return client

    yield connect_to
    for client in clients:
        client.close()


def wait_links(server: ServerProcess, count: int) -> dict[str, int]:
    """The first status event (not yet seen) whose ``broker_links`` is ``count``: its counters."""
    event = server.wait_event(
        "status", BOUND, where=lambda e: e["counters"]["broker_links"] == count
    )
    if event is None:
        pytest.fail(f"{server.name}: never {count} Redis links up{server.tail()}")
    counters: dict[str, int] = event["counters"]
    return counters


def wait_numsub(redis: RedisServer, topic: str, count: int) -> None:
    wait_until(lambda: redis.numsub(topic) == count, BOUND, f"PUBSUB NUMSUB {topic} == {count}")


def stop(server: ServerProcess, clients: list[Client]) -> dict[str, int]:
    """Close ``clients``, stop the server (a clean drain), its exit counters."""
    for client in clients:
        client.close()
    stopped = server.stop()
    assert stopped.clean, server.tail()
    return stopped.counters


# -- across hosts ----------------------------------------------------------------------


@pytest.mark.parametrize(("mode_a", "mode_b"), [("lt", "et"), ("et", "lt")])
def test_a_publish_reaches_every_host_once_in_order(
    redis: RedisServer,
    start: Callable[..., ServerProcess],
    connect: Callable[[ServerProcess], Client],
    mode_a: str,
    mode_b: str,
) -> None:
    a = start(redis.url, mode_a, 1)
    b = start(redis.url, mode_b, 3)
    wait_links(a, 2)
    wait_links(b, 6)
    subscribers = {a: [connect(a) for _ in range(2)], b: [connect(b) for _ in range(6)]}
    everyone = subscribers[a] + subscribers[b]
    for client in everyone:
        client.subscribe("news")
    workers = {server: holders(server, clients) for server, clients in subscribers.items()}
    wait_numsub(redis, "news", workers[a] + workers[b])

    pa, pb = connect(a), connect(b)
    pa.publish("news", batch("a"))
    redis.publish("news", batch("r"))
    pb.publish("news", batch("b"))
    for client in everyone:
        in_order(client.receive("news", 3 * N), {"a": N, "b": N, "r": N})
    redis.publish("news", ["end"])  # after everything: nothing may come before it
    for client in everyone:
        assert client.receive("news", 1) == ["end"]

    for server, publisher in ((a, pa), (b, pb)):
        counts = stop(server, [*subscribers[server], publisher])
        assert counts["published"] == counts["broker_published"] == N
        assert counts["broker_lost"] == counts["broker_dropped"] == 0
        assert counts["broker_reconnects"] == 0
        # Redis brought each message once to each worker that has subscribers
        assert counts["broker_received"] == (3 * N + 1) * workers[server]
        assert counts["delivered"] == (3 * N + 1) * len(subscribers[server])


def test_subscribes_only_to_topics_with_local_subscribers(
    redis: RedisServer,
    start: Callable[..., ServerProcess],
    connect: Callable[[ServerProcess], Client],
) -> None:
    a = start(redis.url, "lt", 1)
    b = start(redis.url, "et", 3)
    wait_links(a, 2)
    wait_links(b, 6)
    clients = redis.cli("CLIENT", "LIST").splitlines()
    assert len(clients) == 2 * (1 + 3) + 1  # two per worker, and redis-cli itself
    assert redis.channels() == set()

    a1, a2 = connect(a), connect(a)
    a1.subscribe("alpha")
    a2.subscribe("alpha")  # a second local subscriber: no second SUBSCRIBE
    on_b = [connect(b) for _ in range(6)]
    for client in on_b:
        client.subscribe("beta")
    wait_until(lambda: redis.channels() == {"alpha", "beta"}, BOUND, "alpha and beta")
    assert redis.numsub("alpha") == 1
    wait_numsub(redis, "beta", holders(b, on_b))

    publisher = connect(a)
    publisher.publish("gamma", ["to-nobody"])  # published through Redis, subscribed nowhere
    status = a.wait_event("status", BOUND, where=lambda e: e["counters"]["broker_published"] > 0)
    assert status is not None
    assert redis.channels() == {"alpha", "beta"}

    a1.command("UNSUB alpha")  # a2 still subscribes: the worker keeps the channel
    a1.subscribe("delta")  # sent after any (wrong) UNSUBSCRIBE alpha: a barrier
    wait_until(lambda: "delta" in redis.channels(), BOUND, "delta subscribed")
    assert redis.numsub("alpha") == 1

    a2.close()  # its last local subscriber gone: UNSUBSCRIBE alpha
    a1.command("UNSUB delta")
    wait_until(lambda: redis.channels() == {"beta"}, BOUND, "only beta left")
    for client in on_b:
        client.close()
    wait_until(lambda: redis.channels() == set(), BOUND, "no channel left")


# -- when Redis goes away --------------------------------------------------------------


def test_redis_restarted_mid_stream(
    redis: RedisServer,
    start: Callable[..., ServerProcess],
    connect: Callable[[ServerProcess], Client],
) -> None:
    a = start(redis.url, "lt", 1)
    b = start(redis.url, "et", 3)
    wait_links(a, 2)
    wait_links(b, 6)
    on_a = [connect(a) for _ in range(2)]
    on_b = [connect(b) for _ in range(6)]
    for client in on_a + on_b:
        client.subscribe("live")
    workers = holders(a, on_a) + holders(b, on_b)
    wait_numsub(redis, "live", workers)
    pa, pb = connect(a), connect(b)

    # Round 1: through Redis, to both hosts.
    pa.publish("live", batch("1a"))
    pb.publish("live", batch("1b"))
    for client in on_a + on_b:
        in_order(client.receive("live", 2 * N), {"1a": N, "1b": N})

    # Round 2: Redis is gone; each server's publishes reach its own subscribers only.
    redis.kill()
    wait_links(a, 0)
    wait_links(b, 0)
    pa.publish("live", batch("2a"))
    pb.publish("live", batch("2b"))
    for client in on_a:
        in_order(client.receive("live", N), {"2a": N})
    for client in on_b:
        in_order(client.receive("live", N), {"2b": N})

    # Round 3: Redis is back on its port; the links come back and subscribe again.
    redis.start()
    wait_links(a, 2)
    wait_links(b, 6)
    wait_numsub(redis, "live", workers)
    pa.publish("live", batch("3a"))
    pb.publish("live", batch("3b"))
    redis.publish("live", batch("3r"))
    for client in on_a + on_b:
        in_order(client.receive("live", 3 * N), {"3a": N, "3b": N, "3r": N})
    redis.publish("live", ["end"])
    for client in on_a + on_b:
        assert client.receive("live", 1) == ["end"]

    for server, clients, publisher, links in ((a, on_a, pa, 2), (b, on_b, pb, 6)):
        counts = stop(server, [*clients, publisher])
        assert counts["published"] == 3 * N
        assert counts["broker_lost"] >= N  # round 2, made while Redis was down
        assert counts["broker_published"] + counts["broker_lost"] == 3 * N
        assert counts["broker_dropped"] == 0
        assert counts["broker_reconnects"] == links  # each link came back once


def test_unreachable_at_start_then_redis_comes(
    tmp_path: Path,
    start: Callable[..., ServerProcess],
    connect: Callable[[ServerProcess], Client],
) -> None:
    need_redis()  # before anything starts: it is needed halfway
    port = free_port()  # nothing listens there yet
    b = start(f"redis://127.0.0.1:{port}", "et", 3)
    subscribers = [connect(b) for _ in range(6)]
    for client in subscribers:
        client.subscribe("early")
    publisher = connect(b)
    publisher.publish("early", batch("l"))  # local delivery, relayed to the other workers
    for client in subscribers:
        in_order(client.receive("early", N), {"l": N})
    lost = b.wait_event("status", BOUND, where=lambda e: e["counters"]["broker_lost"] == N)
    assert lost is not None

    with redis_server(tmp_path, port) as redis:
        wait_links(b, 6)
        wait_numsub(redis, "early", holders(b, subscribers))
        publisher.publish("early", batch("b"))
        redis.publish("early", batch("r"))
        for client in subscribers:
            in_order(client.receive("early", 2 * N), {"b": N, "r": N})
        redis.publish("early", ["end"])
        for client in subscribers:
            assert client.receive("early", 1) == ["end"]
        counts = stop(b, [*subscribers, publisher])
    assert counts["broker_lost"] == N
    assert counts["broker_published"] == N
    assert counts["broker_reconnects"] == 0  # the first connection is not a reconnect


def test_a_redis_that_stops_reading_caps_the_publisher(
    redis: RedisServer,
    start: Callable[..., ServerProcess],
    connect: Callable[[ServerProcess], Client],
) -> None:
    a = start(redis.url, "lt", 1)
    wait_links(a, 2)
    watcher = connect(a)
    watcher.subscribe("after")
    wait_numsub(redis, "after", 1)
    publisher = connect(a)
    payload = "x" * 60000
    sent = 0
    redis.pause()
    try:
        dropped = None
        while dropped is None and sent < 2000:  # 120 MB at most; the cap is 8 MiB
            publisher.publish("bulk", [payload] * 20)
            sent += 20
            a.poll_events()
            dropped = a.wait_event(
                "status", 0.0, where=lambda e: e["counters"]["broker_dropped"] > 0
            )
        assert dropped is not None, "nothing dropped: the publisher's buffer grew instead"
    finally:
        redis.resume()
    wait_until(lambda: redis.numsub("after") == 1, BOUND, "Redis answers again")
    settled = a.wait_event(
        "status",
        BOUND,
        where=lambda e: e["counters"]["broker_published"] + e["counters"]["broker_dropped"] == sent,
    )
    assert settled is not None, "the publishes Redis took were never all confirmed"
    publisher.publish("after", ["done"])  # the link is usable again
    assert watcher.receive("after", 1) == ["done"]

    counts = stop(a, [watcher, publisher])
    assert counts["published"] == sent + 1
    assert counts["broker_dropped"] > 0
    assert counts["broker_published"] + counts["broker_dropped"] == sent + 1
    assert counts["broker_lost"] == 0
    assert counts["broker_links"] == 0
