"""The ``websockets`` library as the client, against 1 and 2 workers, level- and edge-triggered.

The default application (echo: the inline path for small whole frames, the general
path for the rest) and the test application (:class:`websocket.helpers.PublishApp`,
loaded with ``--handler``): echo of text, binary, fragmented, empty and large
messages, ping/pong, the closing handshake with a code and a reason, and a publish
by one client reaching the subscribers of ``/topic/NAME`` in every worker.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import pytest
from websockets.sync.client import ClientConnection

from rawepoll.tools.serverproc import ServerProcess

from .conftest import stop_cleanly
from .helpers import APP, BOUND, serve, ws_connect

pytestmark = pytest.mark.timeout(120)
CONFIGS = [(1, "lt"), (1, "et"), (2, "lt"), (2, "et")]


@pytest.fixture(scope="module", params=CONFIGS, ids=[f"{w}w-{m}" for w, m in CONFIGS])
def config(request: pytest.FixtureRequest) -> tuple[int, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def echo(config: tuple[int, str]) -> Iterator[ServerProcess]:
    workers, mode = config
    with serve(workers=workers, mode=mode) as server:
        yield server
        stop_cleanly(server)


@pytest.fixture(scope="module")
def app(config: tuple[int, str]) -> Iterator[ServerProcess]:
    workers, mode = config
    with serve(workers=workers, mode=mode, app=APP) as server:
        yield server
        stop_cleanly(server)


def echoes(ws: ClientConnection) -> None:
    rng = random.Random(6455)
    for message in ["héllo 😀", "", b"", b"\x00\xff" * 10, "x" * 125, b"y" * 126, "z" * 65536]:
        ws.send(message)
        assert ws.recv(BOUND) == message
    ws.send(["frag", "ment", "ed é"])  # one message in three fragments
    assert ws.recv(BOUND) == "fragmented é"
    ws.send([b"\x01", b"", b"\x02\x03"])
    assert ws.recv(BOUND) == b"\x01\x02\x03"
    large = rng.randbytes(1_000_000)
    ws.send(large)
    assert ws.recv(BOUND) == large
    text = "".join(rng.choices("aé€😀", k=200_000))
    ws.send(text)
    assert ws.recv(BOUND) == text


def test_echo(echo: ServerProcess) -> None:
    with ws_connect(echo) as ws:
        echoes(ws)


def test_echo_through_an_application(app: ServerProcess) -> None:
    with ws_connect(app) as ws:
        echoes(ws)


def test_ping_pong(echo: ServerProcess, app: ServerProcess) -> None:
    for server in (echo, app):
        with ws_connect(server) as ws:
            for payload in (b"", b"are you there?", bytes(125)):
                assert ws.ping(payload).wait(BOUND)
            ws.send("after the pings")
            assert ws.recv(BOUND) == "after the pings"


def test_the_closing_handshake(echo: ServerProcess, app: ServerProcess) -> None:
    for server in (echo, app):
        with ws_connect(server) as ws:
            ws.send("before the close")
            assert ws.recv(BOUND) == "before the close"
            ws.close(4000, "bye-bye")
            assert ws.close_code == 4000  # the server echoes the code


def test_the_application_hears_the_code_and_the_reason(app: ServerProcess) -> None:
    with ws_connect(app, "/topic/events") as observer, ws_connect(app, "/leaving") as ws:
        ws.close(4321, "see you, é")
        assert observer.recv(BOUND) == "closed /leaving 4321 see you, é"


def test_a_publish_reaches_every_subscriber_in_every_worker(
    app: ServerProcess, config: tuple[int, str]
) -> None:
    workers, _ = config
    subscribers: list[ClientConnection] = []
    seen: set[str] = set()
    with contextlib.ExitStack() as stack:
        for _ in range(8 * workers):  # until every worker has subscribers (bounded)
            ws = stack.enter_context(ws_connect(app, "/topic/news"))
            subscribers.append(ws)
            ws.send("!worker")
            seen.add(str(ws.recv(BOUND)))
            if len(seen) == workers and len(subscribers) >= 2 * workers:
                break
        assert len(seen) == workers, f"subscribers only in workers {seen}"
        with ws_connect(app, "/") as publisher:
            publisher.send("!publish news extra, extra")
            publisher.send("!publish other not for them")
            publisher.send("!publish news read all about it")
            for ws in subscribers:
                assert ws.recv(BOUND) == "extra, extra"
                assert ws.recv(BOUND) == "read all about it"
            publisher.send("still echoing")
            assert publisher.recv(BOUND) == "still echoing"  # a publisher gets none of it
