"""Echo integrity over loopback TCP, in both modes: every byte back, in order.

One server per mode serves the whole module; hypothesis draws the clients,
their message sizes (up to a few MB), the split points and the interleaving of
chunks between clients -- pacing by order, never by the clock.
"""

from __future__ import annotations

import os
import random
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.children import python_env
from support.clients import (
    EchoClients,
    echo_all,
    read_until_closed,
    recv_exactly,
    roundtrip,
    send_until_blocked,
)
from support.servers import MODES, Server, ServerRunner


@pytest.fixture(scope="module", params=MODES)
def echo_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """One plain echo server per mode for the module; it must outlive every test."""
    with ServerRunner() as runner:
        server = runner.start("--mode", request.param)
        assert server.mode == request.param
        yield server


@pytest.fixture
def live_echo_server(echo_server: Server) -> Iterator[Server]:
    """The module's server, checked alive before and after the test."""
    assert echo_server.proc.poll() is None, echo_server.describe()
    yield echo_server
    assert echo_server.proc.poll() is None, echo_server.describe()


@dataclass
class Plan:
    messages: list[bytes]
    cuts: list[list[int]]
    order: list[int]
    half_close: list[bool]

    def __repr__(self) -> str:  # hypothesis prints this on failure: sizes, not megabytes
        sizes = [len(m) for m in self.messages]
        return f"Plan(sizes={sizes}, cuts={self.cuts}, order={self.order}, half={self.half_close})"


@st.composite
def plans(draw: st.DrawFn, max_clients: int = 32, budget: int = 8 << 20) -> Plan:
    """Clients with sizes from 0 to 3 MB (a total budget), chunking and interleaving."""
    count = draw(st.integers(1, max_clients))
    sizes = []
    for _ in range(count):
        ceiling = draw(st.sampled_from([1024, 65536, 1 << 20, 3 << 20]))
        size = draw(st.integers(0, min(ceiling, budget)))
        budget -= size
        sizes.append(size)
    cuts = [[*sorted(draw(st.lists(st.integers(0, size), max_size=12))), size] for size in sizes]
    order = draw(st.permutations([i for i, c in enumerate(cuts) for _ in c]))
    half_close = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    messages = [rng.randbytes(size) for size in sizes]
    return Plan(messages, cuts, list(order), half_close)


@pytest.mark.timeout(120)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=plans())
def test_echo_integrity(echo_server: Server, plan: Plan) -> None:
    """Random sizes, random split points, random interleaving: every byte comes back."""
    assert echo_server.proc.poll() is None, echo_server.describe()
    echo_all(
        echo_server,
        plan.messages,
        cuts=plan.cuts,
        order=plan.order,
        half_close=plan.half_close,
        bound=100,
    )


@pytest.mark.timeout(90)
def test_many_clients_at_once(live_echo_server: Server) -> None:
    """300 clients open together, small messages in random chunks, interleaved."""
    rng = random.Random(300)
    messages = [rng.randbytes(rng.randrange(20000)) for _ in range(300)]
    cuts = [[*sorted(rng.randrange(len(m) + 1) for _ in range(4)), len(m)] for m in messages]
    order = [i for i, c in enumerate(cuts) for _ in c]
    rng.shuffle(order)
    echo_all(live_echo_server, messages, cuts=cuts, order=order, bound=80)


@pytest.mark.timeout(90)
def test_half_close_large(live_echo_server: Server) -> None:
    """8 MB (more than the socket buffers hold), then SHUT_WR: exactly 8 MB back, then EOF."""
    message = os.urandom(8 << 20)
    cuts = list(range(65536, len(message) + 1, 65536))
    echo_all(live_echo_server, [message], cuts=[cuts], half_close=True, bound=80)


@pytest.mark.timeout(60)
def test_half_close_without_data(live_echo_server: Server) -> None:
    """SHUT_WR before any byte: the server closes too, having sent nothing."""
    sock = live_echo_server.connect()
    sock.shutdown(socket.SHUT_WR)
    assert read_until_closed(sock) == (b"", "eof")
    sock.close()


@pytest.mark.timeout(60)
def test_peer_vanishing_mid_echo_closes_only_that_connection(live_echo_server: Server) -> None:
    """A client that sends 2 MB and closes without reading: the others are unaffected."""
    bystander = live_echo_server.connect()
    roundtrip(bystander, b"before\n")
    for _ in range(5):
        sock = live_echo_server.connect()
        sock.setblocking(False)
        send_until_blocked(sock, 2 << 20, attempts=1000)
        sock.close()
    roundtrip(bystander, b"after\n")
    bystander.close()
    echo_all(live_echo_server, [os.urandom(100_000) for _ in range(4)])


# ---------------------------------------------------------------- other handlers


@pytest.mark.timeout(60)
def test_handler_option_upper_line(server: Callable[..., Server]) -> None:
    """``--handler MOD:CLASS`` picks a per-connection handler; state is per connection."""
    srv = server("--handler", "rawepoll.server:UpperLineHandler")
    a, b = srv.connect(), srv.connect()
    a.sendall(b"hello\nwor")
    assert recv_exactly(a, 6) == b"HELLO\n"
    b.sendall(b"other\n")
    assert recv_exactly(b, 6) == b"OTHER\n"
    a.sendall(b"ld")
    a.shutdown(socket.SHUT_WR)
    assert read_until_closed(a) == (b"WORLD", "eof")
    b.shutdown(socket.SHUT_WR)
    assert read_until_closed(b) == (b"", "eof")
    a.close()
    b.close()
    assert srv.stop().clean, srv.describe()


COUNTING_HANDLER = '''
class CountHandler:
    """Sends nothing while data comes; at EOF, how many bytes came."""

    shared = False

    def __init__(self):
        self.count = 0

    def data_received(self, data):
        self.count += len(data)
        return None

    def eof_received(self):
        return b"%d\\n" % self.count
'''


@pytest.mark.timeout(60)
def test_user_handler_none_then_eof_output(
    server: Callable[..., Server], tmp_path: os.PathLike[str]
) -> None:
    """A user's handler: ``None`` sends nothing; ``eof_received``'s bytes go out, then EOF."""
    with open(os.path.join(tmp_path, "counting_handler.py"), "w") as f:
        f.write(COUNTING_HANDLER)
    srv = server("--handler", "counting_handler:CountHandler", env=python_env(os.fspath(tmp_path)))
    one, two = srv.connect(), srv.connect()
    one.sendall(b"x" * (1 << 20))
    two.sendall(b"y" * 1000)
    one.shutdown(socket.SHUT_WR)
    two.shutdown(socket.SHUT_WR)
    assert read_until_closed(one) == (b"1048576\n", "eof")
    assert read_until_closed(two) == (b"1000\n", "eof")
    one.close()
    two.close()
    assert srv.stop().clean, srv.describe()


SERVE_FROM_PYTHON = """
import sys
from rawepoll.server import ServerConfig, UpperLineHandler, serve
status_fd = int(sys.argv[sys.argv.index("--status-fd") + 1])
sys.exit(serve(ServerConfig(port=0, handler=UpperLineHandler, mode="et", status_fd=status_fd)))
"""


@pytest.mark.timeout(60)
def test_serve_api_with_upper_line_handler(server: Callable[..., Server]) -> None:
    """``serve(ServerConfig(...))`` from Python: lines come back upper-cased; SIGTERM → 0."""
    srv = server(command=[sys.executable, "-c", SERVE_FROM_PYTHON])
    assert srv.mode == "et"
    sock = srv.connect()
    sock.sendall(b"abc def\nxyz")
    assert recv_exactly(sock, 8) == b"ABC DEF\n"
    sock.sendall(b"\nlast")
    assert recv_exactly(sock, 4) == b"XYZ\n"
    sock.shutdown(socket.SHUT_WR)
    assert read_until_closed(sock) == (b"LAST", "eof")
    sock.close()
    stopped = srv.stop()
    assert stopped.clean, srv.describe()
    assert stopped.counters["accepted"] == 1, srv.describe()


@pytest.mark.timeout(60)
def test_echo_clients_detect_a_wrong_echo(server: Callable[..., Server]) -> None:
    """The oracle itself: against an upper-casing server, ``verify`` must fail."""
    srv = server("--handler", "rawepoll.server:UpperLineHandler")
    with EchoClients(srv, [b"abc\n"]) as clients:
        clients.run(bound=30)
        with pytest.raises(AssertionError, match="first difference at 0"):
            clients.verify()
