"""A connection handle never reaches a stranger, however the kernel reuses descriptors.

The kernel gives the lowest free descriptor to the next connection, so a closed connection's
number is soon a new one's.  :class:`~.push_handlers.HandleKeeper` keeps every connection's
handle by name and sends through it on command (``SEND id text``), long after the connection
may have closed.  Hypothesis interleaves opens, closes and sends; every client must receive
exactly what was sent to *its* name while it was open, a send on a closed name must write
nothing and say so (``SENT id 0``), and ``stale_sends`` must count those sends.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support.children import REPO_ROOT, python_env
from support.clients import read_until_closed
from support.counters import SharedServer
from support.servers import Server

from rawepoll.tools.serverproc import serve_argv

pytestmark = pytest.mark.timeout(300)

TESTS_DIR = str(Path(REPO_ROOT) / "tests")
HANDLER = "push.push_handlers:HandleKeeper"
BOUND = 10.0  # any one client read


def start(mode: str) -> Server:
    """One worker: the handles live in its memory, and it is the one that reuses fds."""
    argv = serve_argv("--port", "0", "--handler", HANDLER, "--mode", mode)
    argv += ["--stats-interval", "0.05", "--drain-timeout", "2"]
    return Server(argv, env=python_env(TESTS_DIR))


@dataclass
class Peer:
    """A client of HandleKeeper, known to it by ``name``."""

    name: bytes
    sock: socket.socket
    fd: int = -1  # the server's descriptor for it
    buffer: bytes = b""
    open: bool = True

    def line(self) -> bytes:
        """The next line (each recv bounded by the socket's timeout)."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, f"{self.name!r}: closed after {self.buffer!r}"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def ask(self, command: bytes) -> bytes:
        self.sock.sendall(command + b"\n")
        return self.line()

    def close(self) -> None:
        """Half-close and read to the end: the server closed its side, and nothing was left
        for this client beyond what it already read."""
        self.sock.shutdown(socket.SHUT_WR)
        rest, how = read_until_closed(self.sock, BOUND)
        assert (self.buffer + rest, how) == (b"", "eof"), f"{self.name!r} got {rest!r}"
        self.sock.close()
        self.open = False


@dataclass
class Model:
    """The clients by name, and what the server must have done."""

    server: Server
    note: Callable[[str], None] = lambda what: None  # hypothesis.event, inside a property
    peers: dict[bytes, Peer] = field(default_factory=dict)
    closed_fds: set[int] = field(default_factory=set)
    stale: int = 0
    sends: int = 0

    def live(self) -> list[Peer]:
        return [peer for peer in self.peers.values() if peer.open]

    def open(self) -> Peer:
        name = b"c%d" % len(self.peers)
        peer = Peer(name, self.server.connect(bound=BOUND))
        verb, named, fd = peer.ask(b"NAME " + name).split()
        assert (verb, named) == (b"NAMED", name)
        peer.fd = int(fd)
        if peer.fd in self.closed_fds:
            self.note("a new connection got a closed one's descriptor")
        self.peers[name] = peer
        return peer

    def close(self, peer: Peer) -> None:
        peer.close()  # after the EOF, the server's descriptor is free for the next accept
        self.closed_fds.add(peer.fd)

    def send(self, sender: Peer, target: Peer) -> None:
        self.sends += 1
        text = b"for %s #%d" % (target.name, self.sends)
        sender.sock.sendall(b"SEND %s %s\n" % (target.name, text))
        if target.open and target is sender:
            assert sender.line() == text  # written during the call, before its answer
        assert sender.line() == b"SENT %s %d" % (target.name, target.open)
        if target.open and target is not sender:
            assert target.line() == text
        if not target.open:
            self.stale += 1
            if any(peer.fd == target.fd for peer in self.live()):
                self.note("a stale handle's descriptor belonged to an open connection")


operations = st.lists(
    st.tuples(
        st.sampled_from(["open", "close", "cycle", "send", "stale"]),
        st.integers(0, 99),
        st.integers(0, 99),
    ),
    min_size=1,
    max_size=40,
)


def run(model: Model, steps: list[tuple[str, int, int]]) -> None:
    for kind, a, b in steps:
        live = model.live()
        if kind == "open" or not live:
            model.open()
        elif kind in ("close", "cycle"):
            model.close(live[a % len(live)])
            if kind == "cycle":  # at once: the new connection gets the freed descriptor
                model.open()
        else:  # "stale" aims at a closed name whose descriptor is an open connection's now
            reused = {peer.fd for peer in live}
            targets = [p for p in model.peers.values() if not p.open and p.fd in reused]
            if kind == "send" or not targets:
                targets = list(model.peers.values())
            model.send(live[a % len(live)], targets[b % len(targets)])
    for peer in model.live():
        model.close(peer)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, SharedServer]]:
    shared = {mode: SharedServer(lambda m=mode: start(m)) for mode in ("lt", "et")}
    yield shared
    for server in shared.values():
        server.close()


@pytest.mark.parametrize("mode", ["lt", "et"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=operations)
def test_a_stale_handle_never_reaches_a_stranger(
    servers: dict[str, SharedServer], mode: str, steps: list[tuple[str, int, int]]
) -> None:
    """Opens, closes and sends in any order: each client receives exactly what was sent to its
    name while it was open; a send on a closed name writes nothing and counts ``stale_sends``."""
    shared = servers[mode]
    with shared.example() as server:
        model = Model(server, event)
        run(model, steps)
        delta = shared.delta(len(model.peers))
    assert delta["stale_sends"] == model.stale
    assert delta["accepted"] == len(model.peers)


@pytest.mark.parametrize("mode", ["lt", "et"])
def test_the_reused_descriptor_gets_only_its_own(
    servers: dict[str, SharedServer], mode: str
) -> None:
    """The case the property is for, spelled out: A closes, B gets A's descriptor; a send on
    A's handle writes nothing (B reads only its own), one on B's reaches B."""
    shared = servers[mode]
    with shared.example() as server:
        model = Model(server)
        a = model.open()
        model.close(a)
        b = model.open()
        assert b.fd == a.fd, "the kernel did not reuse the descriptor: the test proves nothing"
        model.send(b, a)
        model.send(b, b)
        model.close(b)
        delta = shared.delta(2)
    assert delta["stale_sends"] == 1
