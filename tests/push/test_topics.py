"""Topics: a publish reaches exactly the subscribers of the moment, in every worker, once each,
in order per publisher; UNSUB and close remove.

Over a real server (``LinePubSubHandler``, three workers, level- and edge-triggered),
hypothesis draws subscribers and their topics, publishers and what they publish, then
unsubscribes and closes some subscribers and publishes again.  Phases are separated by what
the clients saw, never by the clock: a phase ends when every subscriber has read every message
it must get, and the last ends with a *barrier* -- each publisher publishes to ``end``, which
every client subscribes to, and since a publisher's messages reach a client in order, a client
that has its barriers has everything those publishers sent before them.  So "nothing else" can
be checked: nothing but the expected lines came before the barriers, and nothing after (EOF).
The counters must agree: ``published`` and ``delivered`` grew by exactly what the model says.

Below, without sockets: :class:`~rawepoll.server.topics.Topics` against a model (a hypothesis
state machine): subscribe, unsubscribe and drop over descriptors and topics; counts, snapshots,
``on_first``/``on_last``.
"""

from __future__ import annotations

import itertools
import socket
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from support.children import python_env
from support.clients import read_until_closed
from support.counters import SharedServer
from support.proc import server_side_inode, socket_inodes, wait_until
from support.servers import Server

from rawepoll.server.topics import Topics, token_of
from rawepoll.tools.serverproc import serve_argv

pytestmark = pytest.mark.timeout(300)

HANDLER = "rawepoll.server.handler:LinePubSubHandler"
TOPICS = ("a", "b", "c")
BARRIER = "end"
BOUND = 10.0  # any one client read


def start(mode: str, workers: int = 3) -> Server:
    argv = serve_argv("--port", "0", "--handler", HANDLER, "--mode", mode)
    argv += ["--workers", str(workers), "--stats-interval", "0.05", "--drain-timeout", "2"]
    return Server(argv, env=python_env())


class Client:
    """A line client of LinePubSubHandler."""

    def __init__(self, server: Server) -> None:
        self.sock = server.connect(bound=BOUND)
        self.buffer = b""
        self.open = True

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, f"closed after {self.buffer!r}"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def command(self, line: str) -> None:
        """Send a SUB/UNSUB and expect its OK (no message can be in flight to us then)."""
        self.sock.sendall(line.encode() + b"\n")
        assert self.line() == b"OK " + line.encode()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)
        rest, how = read_until_closed(self.sock, BOUND)
        assert (self.buffer + rest, how) == (b"", "eof"), f"left over: {rest!r}"
        self.sock.close()
        self.open = False


@dataclass
class Subscriber:
    client: Client
    topics: set[str]  # BARRIER among them


Message = tuple[int, str, bytes]  # (publisher, topic, payload)


def message_of(line: bytes) -> tuple[str, bytes]:
    verb, topic, payload = line.split(b" ", 2)
    assert verb == b"MSG", line
    return topic.decode(), payload


def publisher_of(payload: bytes) -> int:
    return int(payload.split(b"-")[0][1:])


def check_stream(got: list[tuple[str, bytes]], expected: list[Message]) -> None:
    """Exactly the expected messages, once each; each publisher's in its order."""
    assert Counter(got) == Counter((topic, payload) for _, topic, payload in expected)
    publishers = {publisher for publisher, _, _ in expected}
    for publisher in publishers:
        mine = [payload for _, payload in got if publisher_of(payload) == publisher]
        assert mine == [payload for p, _, payload in expected if p == publisher]


@dataclass
class Round:
    """The publishes of one phase, and the deliveries the server should have made."""

    server_delivered: int = 0
    published: int = 0
    seq: Iterator[int] = field(default_factory=itertools.count)


def publish(
    publishers: list[Client],
    subscribers: list[Subscriber],
    plan: list[tuple[int, str]],
    tally: Round,
) -> list[Message]:
    """Every publisher sends its PUB lines at once, then their OKs are read."""
    messages = [
        (p % len(publishers), topic, b"p%d-%d" % (p % len(publishers), next(tally.seq)))
        for p, topic in plan
    ]
    for index, client in enumerate(publishers):
        lines = [b"PUB %s %s\n" % (t.encode(), payload) for p, t, payload in messages if p == index]
        if lines:
            client.sock.sendall(b"".join(lines))
    for index, client in enumerate(publishers):
        for p, topic, _ in messages:
            if p == index:
                assert client.line() == b"OK PUB " + topic.encode()
    for _, topic, _ in messages:
        tally.published += 1
        tally.server_delivered += sum(1 for s in subscribers if s.client.open and topic in s.topics)
    return messages


def receive(subscriber: Subscriber, messages: list[Message]) -> None:
    """A subscriber reads the messages of its topics and checks them."""
    expected = [m for m in messages if m[1] in subscriber.topics]
    got = [message_of(subscriber.client.line()) for _ in expected]
    check_stream(got, expected)


def receive_to_barrier(subscriber: Subscriber, messages: list[Message], publishers: int) -> None:
    """Read up to every publisher's barrier: before them, exactly the expected messages."""
    got = []
    barriers = 0
    for _ in range(len(messages) + publishers):
        topic, payload = message_of(subscriber.client.line())
        if topic == BARRIER:
            barriers += 1
            if barriers == publishers:
                break
        else:
            got.append((topic, payload))
    assert barriers == publishers, got
    check_stream(got, [m for m in messages if m[1] in subscriber.topics])


publish_plans = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(TOPICS)), max_size=10)
changes = st.one_of(
    st.just(("keep", "")),
    st.tuples(st.just("unsub"), st.sampled_from(TOPICS)),
    st.just(("close", "")),
)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, SharedServer]]:
    shared = {mode: SharedServer(lambda m=mode: start(m)) for mode in ("lt", "et")}
    yield shared
    for server in shared.values():
        server.close()


@dataclass(frozen=True)
class Scenario:
    subscriptions: list[set[str]]  # each subscriber's topics
    publishers: int
    first: list[tuple[int, str]]  # (publisher, topic) of each publish, before the changes
    changes: list[tuple[str, str]]  # per subscriber: keep, ("unsub", topic) or close
    then: list[tuple[int, str]]  # the publishes after


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    subscriptions = draw(st.lists(st.sets(st.sampled_from(TOPICS)), min_size=1, max_size=6))
    count = len(subscriptions)
    return Scenario(
        subscriptions,
        draw(st.integers(1, 3)),
        draw(publish_plans),
        draw(st.lists(changes, min_size=count, max_size=count)),
        draw(publish_plans),
    )


@pytest.mark.parametrize("mode", ["lt", "et"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_a_publish_reaches_exactly_the_subscribers(
    servers: dict[str, SharedServer], mode: str, scenario: Scenario
) -> None:
    """Subscribe, publish, unsubscribe or close some, publish again, barrier: every
    subscriber got exactly the messages of its topics of the moment, once, in order per
    publisher; ``published`` and ``delivered`` grew by exactly that."""
    shared = servers[mode]
    with shared.example() as server:
        subs = [Subscriber(Client(server), {*t, BARRIER}) for t in scenario.subscriptions]
        for sub in subs:
            for topic in sorted(sub.topics):
                sub.client.command(f"SUB {topic}")
        pubs = [Client(server) for _ in range(scenario.publishers)]
        tally = Round()

        messages = publish(pubs, subs, scenario.first, tally)
        for sub in subs:
            receive(sub, messages)

        for sub, (change, topic) in zip(subs, scenario.changes, strict=True):
            if change == "unsub" and topic in sub.topics:
                sub.client.command(f"UNSUB {topic}")
                sub.topics.discard(topic)
            elif change == "close":
                sub.client.close()

        messages = publish(pubs, subs, scenario.then, tally)
        publish(pubs, subs, [(p, BARRIER) for p in range(len(pubs))], tally)
        for sub in subs:
            if sub.client.open:
                receive_to_barrier(sub, messages, len(pubs))
                sub.client.close()
        for pub in pubs:
            pub.close()
        delta = shared.delta(len(subs) + len(pubs))
    assert delta["published"] == tally.published
    assert delta["delivered"] == tally.server_delivered
    assert delta["dropped"] == delta["fanout_dropped"] == delta["relay_dropped"] == 0


def test_a_publish_reaches_subscribers_in_every_worker(servers: dict[str, SharedServer]) -> None:
    """Subscribers in all three workers (found through /proc), two publishers: each
    subscriber gets every message once, in each publisher's order."""
    shared = servers["lt"]
    with shared.example() as server:
        workers = server.worker_pids
        subs: list[Subscriber] = []
        where: set[int] = set()
        for _ in range(30):  # rotate balance spreads them; bounded all the same
            sub = Subscriber(Client(server), {"a", BARRIER})
            sub.client.command("SUB a")
            sub.client.command(f"SUB {BARRIER}")
            subs.append(sub)
            inode = server_side_inode(sub.client.sock)
            assert inode is not None
            wait_until(lambda i=inode: any(i in socket_inodes(pid) for pid in workers), "accepted")
            where |= {pid for pid in workers if inode in socket_inodes(pid)}
            if len(where) == len(workers) and len(subs) >= 6:
                break
        assert where == set(workers), "no subscriber in some worker"
        pubs = [Client(server), Client(server)]
        tally = Round()
        messages = publish(pubs, subs, [(i % 2, "a") for i in range(40)], tally)
        publish(pubs, subs, [(0, BARRIER), (1, BARRIER)], tally)
        for sub in subs:
            receive_to_barrier(sub, messages, 2)
            sub.client.close()
        for pub in pubs:
            pub.close()
        delta = shared.delta(len(subs) + 2)
    assert delta["delivered"] == tally.server_delivered == 42 * len(subs)


# ---------------------------------------------------------------- Topics, no sockets


FDS = st.integers(0, 7)
NAMES = st.sampled_from(["a", "b", "c", "d"])


class TopicsMachine(RuleBasedStateMachine):
    """:class:`Topics` against a dict of sets; a descriptor's generation moves on at drop.

    Each rule checks the ``on_first``/``on_last`` calls it caused (in any order: a drop ends
    several topics at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []
        self.topics = Topics(8, on_first=self._first, on_last=self._last)
        self.model: dict[int, set[str]] = {fd: set() for fd in range(8)}
        self.gens = dict.fromkeys(range(8), 0)
        self.snapshots: list[tuple[array[int], list[int]]] = []

    def _first(self, name: str) -> None:
        self.calls.append(("first", name))

    def _last(self, name: str) -> None:
        self.calls.append(("last", name))

    def _count(self, name: str) -> int:
        return sum(1 for names in self.model.values() if name in names)

    def _tokens(self, name: str) -> list[int]:
        fds = [fd for fd, names in self.model.items() if name in names]
        return sorted(token_of(self.gens[fd], fd) for fd in fds)

    def _told(self, expected: list[tuple[str, str]]) -> None:
        assert sorted(self.calls) == sorted(expected)
        self.calls.clear()

    @rule(fd=FDS, name=NAMES)
    def subscribe(self, fd: int, name: str) -> None:
        fresh = name not in self.model[fd]
        first = fresh and not self._count(name)
        assert self.topics.subscribe(fd, token_of(self.gens[fd], fd), name) == fresh
        self.model[fd].add(name)
        self._told([("first", name)] if first else [])

    @rule(fd=FDS, name=NAMES)
    def unsubscribe(self, fd: int, name: str) -> None:
        had = name in self.model[fd]
        assert self.topics.unsubscribe(fd, name) == had
        self.model[fd].discard(name)
        self._told([("last", name)] if had and not self._count(name) else [])

    @rule(fd=FDS)
    def drop(self, fd: int) -> None:
        """The connection closed: every subscription goes; the number's next owner is new."""
        gone, self.model[fd] = self.model[fd], set()
        self.topics.drop(fd)
        self.gens[fd] += 1
        self._told([("last", name) for name in gone if not self._count(name)])

    @precondition(lambda self: len(self.snapshots) < 20)
    @rule(name=NAMES)
    def keep_a_snapshot(self, name: str) -> None:
        """A fan-out keeps one while it runs: later changes must not show in it."""
        snapshot = self.topics.snapshot(name)
        if snapshot is not None:
            self.snapshots.append((snapshot, list(snapshot)))

    @invariant()
    def agrees_with_the_model(self) -> None:
        topics = self.topics
        names = {name for names in self.model.values() for name in names}
        assert set(topics.names()) == names
        assert len(topics) == len(names)
        assert topics.subscriptions == sum(len(n) for n in self.model.values())
        for name in "abcd":
            assert topics.count(name) == self._count(name)
            snapshot = topics.snapshot(name)
            if name in names:
                assert snapshot is not None and sorted(snapshot) == self._tokens(name)
            else:
                assert snapshot is None
        for fd, subscribed in self.model.items():
            assert sorted(topics.topics_of(fd)) == sorted(subscribed)
            for name in "abcd":
                assert topics.subscribed(fd, name) == (name in subscribed)
        for snapshot, taken in self.snapshots:
            assert list(snapshot) == taken


TestTopicsMachine = TopicsMachine.TestCase
TestTopicsMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
