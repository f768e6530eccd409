"""Liveness and endings: the heartbeat, the drain on SIGTERM, a faulty application, and
``on_close`` told once for every connection, however it ends.

The heartbeat runs with ``--ping-interval 0.2 --ping-timeout 0.2``: the tests wait for
pings and closes to *happen* (each wait bounded), never for time to pass.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from rawepoll.tools.serverproc import ServerProcess

from .conftest import stop_cleanly
from .helpers import (
    APP,
    BOUND,
    PING,
    PONG,
    TEXT,
    RawClient,
    client_frame,
    raw_frame,
    serve,
    ws_connect,
)

pytestmark = pytest.mark.timeout(120)
HEARTBEAT = ("--ping-interval", "0.2", "--ping-timeout", "0.2")


@pytest.fixture(scope="module")
def beating() -> Iterator[ServerProcess]:
    """The test application with a fast heartbeat."""
    with serve(*HEARTBEAT, app=APP) as server:
        yield server
        stop_cleanly(server)


@pytest.fixture
def app() -> Iterator[ServerProcess]:
    """The test application, for one test: the one ``!boom`` each test sends is counted."""
    with serve(app=APP) as server:
        yield server
        stopped = server.stop()
        assert stopped.clean, stopped
        assert stopped.counters["handler_errors"] == 1, stopped.counters


def pings_seen(client: RawClient) -> int:
    return sum(1 for event in client.events if event[0] == "ping")


# ---------------------------------------------------------------- heartbeat


def answer_pings(port: int, rounds: int, late: float) -> None:
    """A raw client that answers ``rounds`` pings, each ``late`` seconds after it came;
    then its connection must still echo."""
    with RawClient(port) as client:
        client.upgrade("/answering")
        for round_ in range(1, rounds + 1):
            client.wait_for(round_)
            event = client.events[-1]
            assert event[0] == "ping", client.events
            if late:
                time.sleep(late)  # the client's own latency (not a wait for the server)
            client.send(client_frame(PONG, event[1]))  # type: ignore[arg-type]
        client.send(client_frame(TEXT, b"still open?"))
        client.exchange([], lambda events: events[-1][0] == "text")
        assert client.events[-1] == ("text", "still open?")
        assert all(event[0] == "ping" for event in client.events[:-1])


def test_a_client_that_answers_pings_stays_open(beating: ServerProcess) -> None:
    answer_pings(beating.port, rounds=8, late=0.0)


def test_a_client_that_answers_in_time_but_not_at_once_stays_open() -> None:
    """A pong within the timeout counts, even when the next ping is already out (interval
    = timeout: the next round's ping goes out just before this round's check)."""
    with serve("--ping-interval", "0.5", "--ping-timeout", "0.5") as server:
        answer_pings(server.port, rounds=4, late=0.1)
        stop_cleanly(server)


def test_a_client_that_never_answers_is_closed_with_1011(beating: ServerProcess) -> None:
    """... while a client that answers (``websockets`` answers every ping at once) stays."""
    with (
        ws_connect(beating, "/topic/events", ping_interval=None) as observer,
        RawClient(beating.port) as silent,
    ):
        silent.upgrade("/silent")
        silent.exchange([], lambda events: events[-1:] and events[-1][0] == "close")
        assert pings_seen(silent) >= 1
        assert silent.events[-1][:2] == ("close", 1011)
        assert silent.wait_end() in ("eof", "reset")
        assert str(observer.recv(BOUND)).startswith("closed /silent 1006 ")
        observer.send("and me?")
        assert observer.recv(BOUND) == "and me?"


# ---------------------------------------------------------------- drain


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_sends_1001_to_every_client_and_exits_0(workers: int) -> None:
    with serve(workers=workers) as server, contextlib.ExitStack() as stack:
        clients = [stack.enter_context(ws_connect(server, f"/topic/t{i % 3}")) for i in range(6)]
        for ws in clients:
            ws.send("up")
            assert ws.recv(BOUND) == "up"
        server.signal(signal.SIGTERM)
        for ws in clients:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(BOUND)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        server.proc.wait(BOUND)
        stopped = server.stop()
        assert stopped.returncode == 0 and stopped.clean, stopped


# ---------------------------------------------------------------- a faulty application


def test_a_fault_costs_its_connection_only(app: ServerProcess) -> None:
    with ws_connect(app, "/bystander") as bystander, ws_connect(app, "/faulty") as faulty:
        faulty.send("!boom")
        with pytest.raises(ConnectionClosed) as closed:
            faulty.recv(BOUND)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        for i in range(3):
            bystander.send(f"fine {i}")
            assert bystander.recv(BOUND) == f"fine {i}"
    with ws_connect(app, "/newcomer") as newcomer:
        newcomer.send("and a new one")
        assert newcomer.recv(BOUND) == "and a new one"


def test_on_close_is_told_once_however_a_connection_ends(app: ServerProcess) -> None:
    """The closing handshake begun by either side, a protocol error, a dropped TCP
    connection, a fault of the application: each is one ``on_close`` (1006 where no close
    frame came), so an application's per-connection dict loses its entry every time."""
    with ws_connect(app, "/topic/events", ping_interval=None) as observer:

        def told() -> str:
            return str(observer.recv(BOUND))

        with ws_connect(app, "/client-close") as ws:
            ws.close(4000, "client says bye")
        assert told() == "closed /client-close 4000 client says bye"

        with ws_connect(app, "/server-close") as ws:
            ws.send("!close 4001 server says bye")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(BOUND)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "server says bye")
        assert told().startswith("closed /server-close 4001 ")

        with RawClient(app.port) as raw:
            raw.upgrade("/protocol-error")
            raw.exchange([raw_frame(0x81, b"unmasked", mask=False)])
            assert raw.events[-1][:2] == ("close", 1002)
        assert told().startswith("closed /protocol-error 1006 ")

        with RawClient(app.port) as raw:
            raw.upgrade("/dropped")
            raw.sock.shutdown(socket.SHUT_RDWR)
        assert told().startswith("closed /dropped 1006 ")

        with ws_connect(app, "/fault") as ws:
            ws.send("!boom")
            with pytest.raises(ConnectionClosed):
                ws.recv(BOUND)
        assert told().startswith("closed /fault 1006 ")

        with ws_connect(app, "/counting") as ws:
            ws.send("!open")
            assert ws.recv(BOUND) == "2"  # the observer and this one: nothing left behind


def test_frames_after_a_close_are_not_read(beating: ServerProcess) -> None:
    """After the client's close, what it sends is ignored; the server closes."""
    with RawClient(beating.port) as raw:
        raw.upgrade("/closing")
        close = client_frame(0x8, b"\x03\xe8done")
        raw.exchange([close + client_frame(TEXT, b"too late") + client_frame(PING, b"?")])
        assert raw.events == [("close", 1000, "")]
        assert raw.ended in ("eof", "reset")
