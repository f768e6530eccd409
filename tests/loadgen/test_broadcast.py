"""``rawepoll bench --broadcast``: every delivery verified, once, in order, and timed.

Against ``rawepoll serve`` (LinePubSubHandler over TCP, one worker and two;
the WebSocket application's ``/topic/NAME``) every subscriber must get every
message once, in order, and the run must say so.  Against
:class:`BrokenPubSub` -- the same line and control protocols, served by
threads written here, with one delivery spoiled on purpose -- the run must
count exactly what was spoiled (lost, duplicated, reordered, mismatched) and
exit 1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.children import REPO_ROOT, python_env, wait_group_gone
from support.loadgen import BenchRun, EchoServer, bench, start_server, stop_server

from rawepoll.tools.loadgen.spec import LoadSpec
from rawepoll.tools.loadgen.stamp import MIN_SIZE, Deliveries

pytestmark = pytest.mark.timeout(120)

BOUND_S = 10.0
HANDLER = "rawepoll.server.handler:LinePubSubHandler"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket's path has at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="rb-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def broadcast(port: int, control: Path, *args: str) -> BenchRun:
    return bench(
        "--port", str(port), "--broadcast", "--control", str(control), "--json", "--quiet", *args
    )  # fmt: skip


def assert_every_delivery(result: dict[str, Any], conns: int, messages: int) -> None:
    assert result["subscribed"] == conns
    assert result["published"] == messages
    assert result["expected"] == result["delivered"] == conns * messages
    assert result["lost"] == result["duplicates"] == result["reordered"] == 0
    assert result["errors"] == result["mismatches"] == 0
    assert 0 < result["p50_us"] <= result["p99_us"] <= result["max_us"]
    assert 0 < result["to_all_p50_us"] <= result["to_all_max_us"]
    assert result["deliveries_per_s"] > 0


# ---------------------------------------------------------------- rawepoll serve


@pytest.fixture(scope="module")
def control_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rb-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module", params=[1, 2], ids=["1 worker", "2 workers"])
def pubsub(request: pytest.FixtureRequest, control_dir: Path) -> Iterator[tuple[EchoServer, Path]]:
    control = control_dir / f"ctl{request.param}"
    server = start_server(
        None, "--port", "0", "--handler", HANDLER, "--control", str(control),
        "--workers", str(request.param),
    )  # fmt: skip
    try:
        yield server, control
    finally:
        stop_server(server)


@pytest.mark.parametrize("args", [[], ["--procs", "2", "--pipeline", "8", "--size", "200"]])
def test_every_subscriber_gets_every_message_once_in_order(
    pubsub: tuple[EchoServer, Path], args: list[str]
) -> None:
    server, control = pubsub
    run = broadcast(server.port, control, "--conns", "200", "--messages", "30", *args)
    assert run.returncode == 0, run.stderr
    result = run.json()
    assert_every_delivery(result, 200, 30)
    assert result["protocol"] == "tcp" and result["topic"] == "bench"


def test_websocket_subscribers_of_a_topic(short_dir: Path) -> None:
    """``/topic/bench`` subscribes; the server pings every 50 ms meanwhile: answered, or
    the connections would close (1011) and count as errors."""
    control = short_dir / "ctl"
    server = start_server(
        None, "--port", "0", "--protocol", "websocket", "--control", str(control),
        "--ping-interval", "0.05", "--ping-timeout", "0.5",
    )  # fmt: skip
    try:
        run = broadcast(
            server.port, control, "--protocol", "websocket", "--conns", "100",
            "--messages", "40", "--procs", "2",
        )  # fmt: skip
    finally:
        stop_server(server)
    assert run.returncode == 0, run.stderr
    result = run.json()
    assert_every_delivery(result, 100, 40)
    assert result["protocol"] == "websocket"


def test_the_report_names_the_figures(pubsub: tuple[EchoServer, Path]) -> None:
    server, control = pubsub
    run = bench(
        "--port", str(server.port), "--broadcast", "--control", str(control), "--conns", "10",
        "--messages", "5", "--quiet",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    for row in ("subscribers", "published", "deliveries", "delivery µs", "to all µs", "lost"):
        assert row in run.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--broadcast"], "give --control"),
        (["--broadcast", "--control", "/x", "--duration", "3"], "--duration is for echo runs"),
        (["--broadcast", "--control", "/x", "--size", "31"], "--size of a broadcast must be"),
        (["--broadcast", "--control", "/x", "--topic", "a b"], "--topic must be"),
    ],
)
def test_bad_broadcast_arguments_exit_2(args: list[str], said: str) -> None:
    run = bench(*args)
    assert run.returncode == 2
    assert said in run.stderr


# ---------------------------------------------------------------- a broken server

Deliver = Callable[[int, int, bytes], list[bytes]]
"""``(subscriber index, message number, the line) -> the bytes to send it, in pieces``."""


def faithful(subscriber: int, seq: int, line: bytes) -> list[bytes]:
    return [line]


class BrokenPubSub:
    """``SUB topic`` on TCP and ``PUBLISH topic length`` on a control socket, in threads.

    Each publish goes to every subscriber, in the order they subscribed, as
    ``deliver`` says (faithfully: one ``MSG topic payload`` line).
    """

    def __init__(self, control: Path, deliver: Deliver = faithful, ack: bytes = b"OK ") -> None:
        self.deliver = deliver
        self.ack = ack  # what answers a SUB line, before the line itself
        self.control = control
        self.subscribers: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.controller = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.controller.bind(str(control))
        self.controller.listen(8)
        self.controller.settimeout(0.05)
        self.threads = [
            threading.Thread(target=self._accept, name="pubsub-accept"),
            threading.Thread(target=self._publishes, name="pubsub-control"),
        ]
        for thread in self.threads:
            thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(BOUND_S)
            line = b""
            while not line.endswith(b"\n"):
                line += conn.recv(256)
            assert line.startswith(b"SUB ")
            conn.sendall(self.ack + line)
            with self.lock:
                self.subscribers.append(conn)

    def _publishes(self) -> None:
        seq = 0
        while not self.stopping.is_set():
            try:
                conn, _ = self.controller.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(BOUND_S)
                reader = conn.makefile("rb")
                while header := reader.readline():
                    verb, topic, length = header.split()
                    assert verb == b"PUBLISH"
                    line = b"MSG %s %s\n" % (topic, reader.read(int(length)))
                    with self.lock:
                        subscribers = list(self.subscribers)
                    for index, sub in enumerate(subscribers):
                        for piece in self.deliver(index, seq, line):
                            with contextlib.suppress(OSError):  # a subscriber that left
                                sub.sendall(piece)
                    seq += 1
                    conn.sendall(b"OK\n")

    def close(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(BOUND_S)
        with self.lock:
            for sub in self.subscribers:
                sub.close()
        self.listener.close()
        self.controller.close()
        assert not any(thread.is_alive() for thread in self.threads)


@pytest.fixture
def broken(short_dir: Path) -> Iterator[Callable[[Deliver], BrokenPubSub]]:
    servers: list[BrokenPubSub] = []

    def start(deliver: Deliver) -> BrokenPubSub:
        server = BrokenPubSub(short_dir / f"ctl{len(servers)}", deliver)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def against(server: BrokenPubSub, *args: str) -> tuple[BenchRun, dict[str, Any]]:
    """4 subscribers, 10 messages, all published at once (no waiting on a lost one)."""
    run = broadcast(
        server.port, server.control, "--conns", "4", "--messages", "10", "--pipeline", "10", *args
    )
    return run, run.json()


def test_interrupt_reports_partial_and_reaps(broken: Callable[[Deliver], BrokenPubSub]) -> None:
    """Ctrl-C while the run waits on a message subscriber 0 never gets: exit 130, the partial
    figures -- and what was not published yet is not counted lost."""

    def never_to_0(subscriber: int, seq: int, line: bytes) -> list[bytes]:
        return [] if subscriber == 0 else [line]

    server = broken(never_to_0)
    with subprocess.Popen(
        [
            sys.executable, "-m", "rawepoll", "bench", "--port", str(server.port), "--broadcast",
            "--control", str(server.control), "--conns", "4", "--messages", "100", "--json",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=python_env(),
        start_new_session=True,
        # SIGINT's default action even when the tests run where it is ignored (a background job)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    ) as proc:  # fmt: skip
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # the first progress line of the publishing
                if " messages, " in line:
                    break
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
            out, _ = proc.communicate(timeout=BOUND_S * 3)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    assert wait_group_gone(proc.pid), "load processes left behind"
    assert proc.returncode == 130
    result = BenchRun(proc.returncode, out, "").json()
    assert result["interrupted"] is True
    assert 1 <= result["published"] < 100
    assert result["delivered"] == 3 * result["published"]
    assert result["lost"] == result["published"]  # subscriber 0's, and only those published
    assert result["errors"] == result["mismatches"] == 0


def test_a_faithful_server_passes(broken: Callable[[Deliver], BrokenPubSub]) -> None:
    """Also in pieces of 7 bytes: a delivery cut anywhere is put together again."""

    def in_pieces(subscriber: int, seq: int, line: bytes) -> list[bytes]:
        return [line[k : k + 7] for k in range(0, len(line), 7)]

    for deliver in (faithful, in_pieces):
        run, result = against(broken(deliver))
        assert run.returncode == 0, run.stderr
        assert_every_delivery(result, 4, 10)


def test_a_refused_subscription_is_an_error(short_dir: Path) -> None:
    server = BrokenPubSub(short_dir / "ctl", ack=b"ERR no ")
    try:
        run, result = against(server)
    finally:
        server.close()
    assert run.returncode == 1
    assert result["subscribed"] == 0 and result["errors"] == 4
    assert "subscribing: the server answered b'ERR no SUB bench\\n', not b'OK SUB bench\\n'" in (
        run.stderr
    )


def test_a_dropped_delivery_is_lost(broken: Callable[[Deliver], BrokenPubSub]) -> None:
    def drop(subscriber: int, seq: int, line: bytes) -> list[bytes]:
        return [] if (subscriber, seq) == (0, 3) else [line]

    run, result = against(broken(drop))
    assert run.returncode == 1
    assert result["lost"] == 1
    assert result["delivered"] == 4 * 10 - 1
    assert result["duplicates"] == result["reordered"] == result["mismatches"] == 0
    assert result["errors"] == 0


def test_the_last_message_never_delivered_is_lost(
    broken: Callable[[Deliver], BrokenPubSub],
) -> None:
    """Nothing comes after it to show the gap: the run waits (SETTLE_S) and counts it."""

    def drop_last(subscriber: int, seq: int, line: bytes) -> list[bytes]:
        return [] if (subscriber, seq) == (2, 9) else [line]

    run, result = against(broken(drop_last))
    assert run.returncode == 1
    assert result["lost"] == 1 and result["delivered"] == 39


def test_a_delivery_sent_twice_is_a_duplicate(broken: Callable[[Deliver], BrokenPubSub]) -> None:
    def twice(subscriber: int, seq: int, line: bytes) -> list[bytes]:
        return [line, line] if (subscriber, seq) == (1, 2) else [line]

    run, result = against(broken(twice))
    assert run.returncode == 1
    assert result["duplicates"] == 1
    assert result["lost"] == result["reordered"] == 0
    assert result["delivered"] == 40


def test_deliveries_swapped_are_out_of_order(broken: Callable[[Deliver], BrokenPubSub]) -> None:
    held: list[bytes] = []

    def swap(subscriber: int, seq: int, line: bytes) -> list[bytes]:
        if (subscriber, seq) == (3, 4):
            held.append(line)
            return []
        if (subscriber, seq) == (3, 5):
            return [line, held.pop()]
        return [line]

    run, result = against(broken(swap))
    assert run.returncode == 1
    assert result["reordered"] == 1
    assert result["lost"] == result["duplicates"] == 0
    assert result["delivered"] == 40


def test_a_message_never_published_is_a_mismatch(
    broken: Callable[[Deliver], BrokenPubSub],
) -> None:
    """After the last message, one more that looks right but carries number 10 of 10."""
    extra = Deliveries("bench", 64, "tcp").delivery(10, 1)

    def one_more(subscriber: int, seq: int, line: bytes) -> list[bytes]:
        return [line, extra] if (subscriber, seq) == (2, 9) else [line]

    run, result = against(broken(one_more))
    assert run.returncode == 1
    assert result["mismatches"] == 1 and result["delivered"] == 40
    assert "message 10 arrived; only 10 are published" in run.stderr


def test_a_changed_byte_is_a_mismatch(broken: Callable[[Deliver], BrokenPubSub]) -> None:
    def corrupt(subscriber: int, seq: int, line: bytes) -> list[bytes]:
        if (subscriber, seq) != (0, 6):
            return [line]
        spoiled = bytearray(line)
        spoiled[-2] ^= 0x01  # the last letter of the padding
        return [bytes(spoiled)]

    run, result = against(broken(corrupt))
    assert run.returncode == 1
    assert result["mismatches"] == 1
    assert result["delivered"] == 40 - 4  # subscriber 0 closed at message 6: 6 of 10
    assert "message 6 differs at byte" in run.stderr


# ---------------------------------------------------------------- the messages


def test_a_delivery_is_read_back_exactly() -> None:
    for protocol in ("tcp", "websocket"):
        deliveries = Deliveries("news", 100, protocol)
        delivery = deliveries.delivery(12, 345_678_901_234)
        assert len(delivery) == deliveries.unit
        assert deliveries.read(delivery) == (12, 345_678_901_234)
        for at in range(len(delivery)):
            spoiled = bytearray(delivery)
            spoiled[at] ^= 0x04
            assert deliveries.read(bytes(spoiled)) is None, (protocol, at)
    assert len(Deliveries("t", MIN_SIZE, "tcp").message(0, 0)) == MIN_SIZE
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Deliveries("t", MIN_SIZE - 1, "tcp")


# ---------------------------------------------------------------- settings


def test_help_explains_the_new_modes() -> None:
    run = bench("--help")
    assert run.returncode == 0
    for option in ("--protocol", "--path", "--broadcast", "--control", "--topic"):
        assert option in run.stdout
    assert "server push (--broadcast)" in run.stdout


def test_the_spec_checks_the_new_settings() -> None:
    with pytest.raises(ValueError, match="--protocol must be one of tcp, websocket"):
        LoadSpec(protocol="udp")
    with pytest.raises(ValueError, match="--path must start with /"):
        LoadSpec(protocol="websocket", path="no slash")
    with pytest.raises(ValueError, match="give --control"):
        LoadSpec(broadcast=True, duration=None, messages=5)
    with pytest.raises(ValueError, match="--messages N"):
        LoadSpec(broadcast=True, control="/x")
    spec = LoadSpec(broadcast=True, control="/x", duration=None, messages=5, protocol="websocket")
    assert spec.topic == "bench" and spec.size == 64
