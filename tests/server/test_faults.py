"""A handler's fault costs its connection, never the worker: properties over real servers.

Hypothesis draws a handful of connections, the chunks each sends, and for some of them a fault:
``data_received`` raises or returns a wrong type (an ``int``, a ``str``, a ``list``, ``0``) on one
chunk, ``eof_received`` does so at the end, or a per-connection handler's constructor raises.
The handlers (:mod:`.faulty_handlers`) decide from the bytes they get.  Against ``rawepoll
serve`` (level- and edge-triggered, one worker and three, shared and per-connection handlers):

* every connection that did not fault gets exactly its bytes back, in order, then EOF;
* every faulting connection gets the echo of what it sent before the fault, then is closed;
* the worker survives (no restart; a new connection is served), and the counters grew by
  exactly what was sent and echoed, and ``handler_errors`` by the number of faults.

The connections take turns: each sends one chunk and reads its answer before sending the next,
so a command chunk is always a read of its own.  The first chunks go one connection at a time
(a per-connection handler is built then, so an armed constructor fails for the right one); later
rounds send every connection's chunk before reading any answer, so one loop turn serves several
connections and a fault falls in the middle of them.

Also here: a timer that raises is dropped and the others go on; the inlined per-message path
and the general one (a handler that takes a handle) give the same echoes and counters; and
:class:`~rawepoll.server.faults.FaultLog` keeps a flood of faults to a few lines (no sockets).
"""

from __future__ import annotations

import itertools
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support.children import REPO_ROOT, python_env
from support.clients import read_until_closed, recv_exactly, roundtrip
from support.counters import SharedServer, stop_quietly
from support.proc import wait_until
from support.servers import Server

from rawepoll.server import faults
from rawepoll.server.faults import FaultLog
from rawepoll.tools.serverproc import serve_argv

from .faulty_handlers import (
    ARM_ENV,
    DATA_FAULTS,
    EOF_FAULTS,
    WRONG,
    FaultyEcho,
    FaultyPerConnection,
)

pytestmark = pytest.mark.timeout(300)

TESTS_DIR = str(Path(REPO_ROOT) / "tests")
HANDLERS = "server.faulty_handlers"
STATS_INTERVAL = "0.05"
IO = 10.0  # any one client read: generous on loopback, short enough to shrink a failure
EXAMPLES = settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def start(handler: str, mode: str, workers: int, arm: Path | None = None) -> Server:
    """``rawepoll serve`` with a handler of :mod:`.faulty_handlers`, reporting every 50 ms."""
    env = python_env(TESTS_DIR)
    if arm is not None:
        env[ARM_ENV] = str(arm)
    args = ["--port", "0", "--handler", f"{HANDLERS}:{handler}", "--mode", mode]
    args += ["--workers", str(workers), "--stats-interval", STATS_INTERVAL, "--drain-timeout", "2"]
    return Server(serve_argv(*args), env=env)


# ---------------------------------------------------------------- what a connection does


@dataclass(frozen=True)
class Plan:
    """One connection: the chunks it sends (a command among them, maybe) and its fault.

    ``fault`` is ``""`` (none), ``"data"`` (``chunks[at]`` is a command that makes
    ``data_received`` fail), ``"eof"`` (``chunks[at]`` is echoed and makes ``eof_received``
    fail) or ``"ctor"`` (the handler cannot be built: the first bytes, or the EOF, fail).
    """

    chunks: tuple[bytes, ...]
    fault: str = ""
    at: int = 0

    @property
    def close_after(self) -> int:
        """After which send the server closes: sends are the chunks, then the half-close."""
        if self.fault == "data":
            return self.at
        if self.fault == "ctor":
            return 0
        return len(self.chunks)

    @property
    def echo(self) -> bytes:
        """What the client must receive before the close."""
        if self.fault == "ctor":
            return b""
        return b"".join(self.chunks[: self.close_after])

    @property
    def sent(self) -> bytes:
        """What the server reads from this connection."""
        return b"".join(self.chunks[: self.close_after + 1])


plain_chunks = st.binary(min_size=1, max_size=1024).map(
    lambda chunk: b"." + chunk[1:] if chunk.startswith(b"!") else chunk
)


@st.composite
def plans(draw: st.DrawFn, kinds: tuple[str, ...]) -> Plan:
    """A connection's chunks and its fault, one of ``kinds`` (``""``: none)."""
    chunks = draw(st.lists(plain_chunks, max_size=4))
    kind = draw(st.sampled_from(kinds))
    if kind not in ("data", "eof"):
        return Plan(tuple(chunks), kind)
    command = draw(st.sampled_from(DATA_FAULTS if kind == "data" else EOF_FAULTS))
    at = draw(st.integers(0, len(chunks)))
    chunks.insert(at, command + b" " + draw(st.binary(max_size=32)))
    return Plan(tuple(chunks), kind, at)


SHARED_KINDS = ("", "", "data")
PER_CONNECTION_KINDS = ("", "", "data", "eof", "ctor")


@dataclass
class Client:
    plan: Plan
    sock: socket.socket
    sends: int = 0
    received: bytearray = field(default_factory=bytearray)
    ended: str = ""  # "eof" or "reset" once the server closed it

    @property
    def done(self) -> bool:
        return self.sends > self.plan.close_after

    def send(self) -> None:
        """The next chunk, or the half-close after the last."""
        if self.sends < len(self.plan.chunks):
            self.sock.sendall(self.plan.chunks[self.sends])
        else:
            self.sock.shutdown(socket.SHUT_WR)
        self.sends += 1

    def answer(self) -> None:
        """Read the answer to the last send: its echo, or everything up to the close."""
        last = self.sends - 1
        if last == self.plan.close_after:
            data, self.ended = read_until_closed(self.sock, IO)
            self.received += data
        else:
            chunk = self.plan.chunks[last]
            self.received += recv_exactly(self.sock, len(chunk), IO)


def drive(server: Server, connection_plans: list[Plan], arm: Path | None = None) -> list[Client]:
    """Run every plan against ``server`` (see the module docstring for the turns)."""
    clients = [Client(plan, server.connect(bound=IO)) for plan in connection_plans]
    for client in clients:  # the first sends, one connection at a time
        if client.plan.fault == "ctor":
            assert arm is not None and not arm.exists()
            arm.touch()
        client.send()
        client.answer()
        if client.plan.fault == "ctor":
            assert arm is not None and not arm.exists(), "no handler was built"
    for _ in range(max(len(p.chunks) for p in connection_plans) + 1):
        active = [client for client in clients if not client.done]
        for client in active:
            client.send()
        for client in active:
            client.answer()
    for client in clients:
        assert client.done
        client.sock.close()
    return clients


def check_clients(clients: list[Client]) -> None:
    """Each connection got exactly its echo; a clean one ended with EOF, a faulty one closed."""
    for i, client in enumerate(clients):
        plan = client.plan
        assert bytes(client.received) == plan.echo, f"connection {i}: {plan}"
        expected = ("eof",) if not plan.fault else ("eof", "reset")
        assert client.ended in expected, f"connection {i} ended by {client.ended}: {plan}"


def probe(server: Server) -> int:
    """A new connection is served: a round trip, then EOF.  The bytes it sent."""
    sock = server.connect()
    roundtrip(sock, b"still serving")
    sock.shutdown(socket.SHUT_WR)
    assert read_until_closed(sock) == (b"", "eof")
    sock.close()
    return len(b"still serving")


def check_counters(delta: dict[str, int], clients: list[Client], probed: int) -> None:
    plans_ = [client.plan for client in clients]
    assert delta["handler_errors"] == sum(1 for p in plans_ if p.fault)
    assert delta["accepted"] == delta["closed"] == len(plans_) + 1
    assert delta["bytes_in"] == sum(len(p.sent) for p in plans_) + probed
    assert delta["bytes_out"] == sum(len(p.echo) for p in plans_) + probed


def test_the_faulty_handlers_fail_as_asked() -> None:
    """The doubles themselves, without a loop: each command raises or returns its wrong type
    (a double that raised instead would leave the wrong-type checks untested)."""
    echo, per_connection = FaultyEcho(), FaultyPerConnection()
    assert bytes(echo.data_received(memoryview(b"plain"))) == b"plain"  # type: ignore[arg-type]
    for command, wrong in WRONG.items():
        assert echo.data_received(memoryview(command + b" x")) == wrong
        eof = b"!eof-" + command[1:]
        handler = FaultyPerConnection()
        assert bytes(handler.data_received(memoryview(eof))) == eof  # type: ignore[arg-type]
        assert handler.eof_received() == wrong
    with pytest.raises(ValueError, match="asked to fail"):
        echo.data_received(memoryview(b"!raise x"))
    per_connection.data_received(memoryview(b"!eof-raise"))
    with pytest.raises(ValueError, match="asked to fail"):
        per_connection.eof_received()


# ---------------------------------------------------------------- the property, 8 servers


CONFIGS = [
    pytest.param(handler, mode, workers, id=f"{handler}-{mode}-{workers}w")
    for handler in ("FaultyEcho", "FaultyPerConnection")
    for mode in ("lt", "et")
    for workers in (1, 3)
]


@dataclass
class Served:
    """A configuration's long-lived server and the file that arms its constructors."""

    shared: SharedServer
    arm: Path


@pytest.fixture(scope="module")
def shared_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """One server per configuration, started when first used, stopped with the module."""
    root = tmp_path_factory.mktemp("arm")
    servers: dict[str, Served] = {}
    for handler, mode, workers in (param.values for param in CONFIGS):
        key = f"{handler}-{mode}-{workers}"
        arm = root / key

        def make(h: str = handler, m: str = mode, w: int = workers, a: Path = arm) -> Server:
            return start(h, m, w, a)

        servers[key] = Served(SharedServer(make), arm)
    yield servers
    for served in servers.values():
        served.shared.close()


@pytest.mark.parametrize(("handler", "mode", "workers"), CONFIGS)
@EXAMPLES
@given(data=st.data())
def test_a_fault_costs_its_connection_only(
    shared_servers: dict[str, Served], handler: str, mode: str, workers: int, data: st.DataObject
) -> None:
    """Random connections, traffic and faults: exact echoes, faulty ones closed, the worker
    on, ``handler_errors`` == the faults, bytes in and out exactly what went through."""
    kinds = SHARED_KINDS if handler == "FaultyEcho" else PER_CONNECTION_KINDS
    connection_plans = data.draw(st.lists(plans(kinds), min_size=1, max_size=12), label="plans")
    for plan in connection_plans:
        event(f"a connection with fault {plan.fault or 'none'!r}")
    served = shared_servers[f"{handler}-{mode}-{workers}"]
    with served.shared.example() as server:
        workers_before = server.worker_pids
        clients = drive(server, connection_plans, served.arm)
        check_clients(clients)
        probed = probe(server)
        check_counters(served.shared.delta(len(clients) + 1), clients, probed)
        assert server.worker_pids == workers_before, "a worker was replaced"
        assert server.alive()


# ---------------------------------------------------------------- timers


def ask(sock: socket.socket, question: bytes, bound: float = 10.0) -> bytes:
    """Send ``question``; the answer, up to its newline."""
    sock.sendall(question)
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = recv_exactly(sock, 1, bound)
        assert chunk, f"closed after {answer!r}"
        answer += chunk
    return answer


@pytest.mark.timeout(60)
def test_a_timer_that_raises_is_dropped_and_the_others_go_on() -> None:
    """``bad`` raises on its 3rd call: never called again, one fault counted; ``good`` (same
    period, scheduled after it) keeps going, and so do the connections."""
    server = start("TimerFaults", "lt", 1)
    try:
        sock = server.connect()
        calls: list[str] = []

        def good_called_six_times() -> bool:
            calls[:] = ask(sock, b"?\n").decode().strip().split(",")
            return "good 6" in calls

        wait_until(good_called_six_times, "the good timer's 6th call")
        # A 4th call of `bad` would be due before the 6th of `good` and come first.
        assert [c for c in calls if c.startswith("bad")] == ["bad 1", "bad 2"], calls
        assert [c for c in calls if c.startswith("good")][:6] == [f"good {i}" for i in range(1, 7)]
        roundtrip(sock, b"connections go on")
        event = server.status(lambda e: e["counters"]["handler_errors"] >= 1)
        assert event["counters"]["handler_errors"] == 1
        sock.close()
        server.poll_events()
        stopped = server.stop()
        assert stopped.clean, server.describe()
        assert stopped.counters["handler_errors"] == 1
        assert "(dropped)" in server.stderr()
    finally:
        stop_quietly(server)


# ---------------------------------------------------------------- the inlined path


@pytest.fixture(scope="module")
def path_servers() -> Iterator[dict[str, SharedServer]]:
    """The same echo through the inlined path and through the general one, LT and ET."""
    servers = {
        f"{handler}-{mode}": SharedServer(lambda h=handler, m=mode: start(h, m, 1))
        for handler in ("FaultyEcho", "FaultyEchoWithHandle")
        for mode in ("lt", "et")
    }
    yield servers
    for shared in servers.values():
        shared.close()


COMPARED = ("handler_errors", "bytes_in", "bytes_out", "accepted", "closed")


@pytest.mark.parametrize("mode", ["lt", "et"])
@EXAMPLES
@given(data=st.data())
def test_the_inlined_path_behaves_like_the_general_one(
    path_servers: dict[str, SharedServer], mode: str, data: st.DataObject
) -> None:
    """``data_received(data)`` (served inline, ``_common_case``) and ``data_received(data,
    conn)`` (a handle, ``_receive``): the same traffic and faults give the same echoes, the
    same ends and the same counters -- and the expected ones."""
    connection_plans = data.draw(st.lists(plans(SHARED_KINDS), min_size=1, max_size=8))
    outcomes = []
    for handler in ("FaultyEcho", "FaultyEchoWithHandle"):
        shared = path_servers[f"{handler}-{mode}"]
        with shared.example() as server:
            clients = drive(server, connection_plans)
            check_clients(clients)
            delta = shared.delta(len(clients))
        seen = [(bytes(c.received), c.ended) for c in clients]
        outcomes.append((seen, {name: delta[name] for name in COMPARED}))
    inline, general = outcomes
    assert inline == general
    assert inline[1]["handler_errors"] == sum(1 for p in connection_plans if p.fault)


# ---------------------------------------------------------------- the fault log, no sockets


class FakeTime:
    """Stands for the ``time`` module in :mod:`rawepoll.server.faults`: a clock we move."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def failure() -> ValueError:
    try:
        raise ValueError("the same bug again")
    except ValueError as error:
        return error


MORE_RE = re.compile(r"^(\d+) more handler error\(s\) since the last report, (\d+) in all")


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["fault", "report"]), st.integers(0, 3000)), max_size=80
    )
)
def test_a_flood_of_faults_makes_a_few_lines(steps: list[tuple[str, int]]) -> None:
    """Faults and status reports (``flush(now)``) at any times, then the exit (``flush()``):
    the first fault's traceback, then lines at least 5 s apart (but the exit's), and every
    fault in the count."""
    clock = FakeTime()
    lines: list[tuple[float, str]] = []
    log = FaultLog(lambda text: lines.append((clock.now, text)), every=5.0)
    with mock.patch.object(faults, "time", clock):
        for kind, milliseconds in steps:
            clock.now += milliseconds / 1000
            if kind == "fault":
                log.record(failure(), "worker 0, connection fd 7")
            else:
                log.flush(clock.now)
        before_exit = len(lines)
        log.flush()
    count = sum(1 for kind, _ in steps if kind == "fault")
    if not count:
        assert lines == []
        return
    assert "handler error" in lines[0][1]
    assert "Traceback (most recent call last)" in lines[0][1]
    assert "ValueError: the same bug again" in lines[0][1]
    for (earlier, _), (later, text) in itertools.pairwise(lines[:before_exit]):
        assert later - earlier >= 5.0, f"two lines {later - earlier:.3f} s apart: {text}"
    counted = [MORE_RE.match(text) for _, text in lines[1:]]
    assert all(counted), lines
    assert 1 + sum(int(m.group(1)) for m in counted if m) == count
    if counted:
        assert counted[-1] is not None and int(counted[-1].group(2)) == count
