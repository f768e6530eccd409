"""Starting, reporting, draining and stopping; workers and their replacement; the CLI.

Every wait is on an event: the server's ``ready``, ``status``, ``restart`` and
``exit`` events, bytes received, ECONNREFUSED, process exit, or a ``/proc``
reading polled with a bound.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable

import pytest
from support.clients import EchoClients, Traffic, echo_all, read_until_closed, roundtrip
from support.proc import children, server_side_inode, socket_inodes, wait_until
from support.servers import (
    LISTEN_RE,
    MODES,
    STATUS_PREFIX,
    SUMMARY_PREFIX,
    Server,
    fields,
    run_serve,
)

REFUSAL_BOUND = 20.0


def wait_refused(srv: Server, keep_busy: Callable[[], None] | None = None) -> int:
    """Connect until ECONNREFUSED (the listener is closed); ``keep_busy`` runs in between.

    Returns how many probes connected before that (each closed at once).
    """
    deadline = time.monotonic() + REFUSAL_BOUND
    probes = 0
    while True:
        try:
            sock = srv.try_connect(bound=5.0)
        except ConnectionResetError:
            # The probe sat in the accept queue of a listener that was closing:
            # the kernel resets those.  Not refused yet; probe again.
            sock = None
            probes += 1
        else:
            if sock is None:
                return probes
            probes += 1
            sock.close()
        if time.monotonic() > deadline:
            raise AssertionError(f"still accepting {REFUSAL_BOUND} s after the signal")
        if keep_busy is not None:
            keep_busy()
        else:
            threading.Event().wait(0.02)  # pacing only: the wait ends on ECONNREFUSED


# ---------------------------------------------------------------- reporting


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.timeout(60)
def test_listening_line_and_summary(server: Callable[..., Server], mode: str) -> None:
    """The human lines say what the events say: one listening line, one exit line."""
    srv = server("--mode", mode)
    ready = srv.ready
    assert (ready.host, ready.mode, ready.workers) == ("127.0.0.1", mode, (srv.proc.pid,))
    assert ready.pid == srv.proc.pid and srv.port > 0
    stopped = srv.stop()
    assert stopped.clean, srv.describe()
    for key in ("accepted", "closed", "refused", "bytes_in", "bytes_out"):
        assert stopped.counters[key] == 0, srv.describe()
    listening = [found for line in srv.stdout_lines if (found := LISTEN_RE.search(line))]
    assert len(listening) == 1, srv.describe()
    [line] = listening
    assert (line["host"], line["port"], line["mode"], line["pid"]) == (
        "127.0.0.1",
        str(srv.port),
        mode,
        str(srv.proc.pid),
    )
    assert "1 worker," in line.string
    summaries = [fields(line) for line in srv.stdout_lines if line.startswith(SUMMARY_PREFIX)]
    assert len(summaries) == 1, srv.describe()
    assert {key: int(value) for key, value in summaries[0].items() if key in stopped.counters} == (
        stopped.counters
    )


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.timeout(90)
def test_sigterm_right_after_ready(server: Callable[..., Server], workers: int) -> None:
    """The ready event is the moment to rely on: a SIGTERM from then on is graceful."""
    for _ in range(5):
        srv = server("--workers", str(workers))
        stopped = srv.stop()
        assert stopped.clean, srv.describe()
        assert stopped.counters["accepted"] == 0, srv.describe()


@pytest.mark.timeout(60)
def test_summary_counts_the_traffic(server: Callable[..., Server]) -> None:
    srv = server()
    echo_all(srv, [os.urandom(100_000) for _ in range(4)], half_close=True)
    stopped = srv.stop()
    assert stopped.clean, srv.describe()
    counters = stopped.counters
    assert {k: counters[k] for k in ("accepted", "closed", "refused")} == {
        "accepted": 4,
        "closed": 4,
        "refused": 0,
    }, srv.describe()
    assert (counters["bytes_in"], counters["bytes_out"]) == (400000, 400000), srv.describe()


@pytest.mark.timeout(60)
def test_stats_interval_prints_status_lines(server: Callable[..., Server]) -> None:
    """Every --stats-interval: a status event, and a status line that says the same."""
    srv = server("--stats-interval", "0.2")
    sock = srv.connect()
    roundtrip(sock, b"x" * 1000)
    event = srv.status(lambda event: event["counters"]["open"] == 1)
    assert event["counters"]["bytes_in"] >= 1000, event
    # The line is printed before its event is sent.
    lines = [
        line
        for line in srv.stdout_lines
        if line.startswith(STATUS_PREFIX) and "open=1" in line.split()
    ]
    assert lines, srv.describe()
    status = fields(lines[-1])
    for key in ("accepted", "closed", "refused", "bytes_in", "bytes_out", "open"):
        assert status[key].isdigit(), lines[-1]
    assert int(status["bytes_in"]) >= 1000, lines[-1]
    sock.close()
    assert srv.stop().clean, srv.describe()


# ---------------------------------------------------------------- graceful shutdown


@pytest.mark.parametrize(("mode", "workers"), [("lt", 1), ("et", 1), ("lt", 2)])
@pytest.mark.timeout(120)
def test_sigterm_with_traffic_in_flight(
    server: Callable[..., Server], mode: str, workers: int
) -> None:
    """Clients mid-transfer at SIGTERM finish their messages and get every byte back."""
    srv = server("--mode", mode, "--workers", str(workers))
    assert len(srv.ready.workers) == workers
    messages = [os.urandom(3 << 20) for _ in range(8)]
    cuts = [list(range(32768, len(m) + 1, 32768)) for m in messages]
    traffic = Traffic(cuts=cuts, half_close=True, window=1 << 18)
    with EchoClients(srv, messages, traffic) as clients:
        clients.run(until=lambda: all(p.received for p in clients.peers), bound=60)
        assert not all(p.sent == len(p.message) for p in clients.peers), "not in flight"
        srv.signal(signal.SIGTERM)
        wait_refused(srv, keep_busy=lambda: clients.pump(0.02))
        clients.run(bound=90)
        clients.verify()
    assert srv.wait_exit() == 0, srv.describe()
    summary = srv.exit_counters()
    assert summary["closed"] == summary["accepted"], srv.describe()
    assert summary["bytes_in"] == summary["bytes_out"] == 8 * (3 << 20), srv.describe()


@pytest.mark.timeout(60)
def test_sigint_drains_like_sigterm(server: Callable[..., Server]) -> None:
    srv = server()
    sock = srv.connect()
    roundtrip(sock, b"before\n")
    srv.signal(signal.SIGINT)
    probes = wait_refused(srv)
    roundtrip(sock, b"after the signal, still served\n")
    sock.shutdown(socket.SHUT_WR)
    assert read_until_closed(sock) == (b"", "eof")
    sock.close()
    assert srv.wait_exit() == 0, srv.describe()
    assert "Traceback" not in "\n".join(srv.stderr_lines), srv.describe()
    summary = srv.exit_counters()
    assert 1 <= summary["accepted"] <= 1 + probes, srv.describe()
    assert summary["closed"] == summary["accepted"], srv.describe()


@pytest.mark.timeout(60)
def test_drain_timeout_ends_a_connection_that_never_closes(server: Callable[..., Server]) -> None:
    srv = server("--drain-timeout", "1")
    sock = srv.connect()
    roundtrip(sock, b"hello\n")
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit() == 0, srv.describe()
    data, how = read_until_closed(sock, bound=10)
    assert data == b"" and how in ("eof", "reset")
    sock.close()
    assert srv.exit_event()["clean"], srv.describe()


# ---------------------------------------------------------------- workers


def owners(clients: list[socket.socket], workers: set[int]) -> dict[int, int]:
    """Which worker holds the server end of each client (index → worker pid)."""
    inodes = {worker: socket_inodes(worker) for worker in workers}
    found = {}
    for i, sock in enumerate(clients):
        inode = server_side_inode(sock)
        holders = [worker for worker in workers if inode in inodes[worker]]
        assert len(holders) == 1, f"client {i}: server end {inode} held by {holders}"
        found[i] = holders[0]
    return found


@pytest.mark.timeout(90)
def test_sigkill_of_a_worker_is_replaced(server: Callable[..., Server]) -> None:
    srv = server("--workers", "3")
    workers = set(srv.ready.workers)
    assert len(workers) == 3 and srv.ready.pid == srv.proc.pid
    assert children(srv.pid) == workers, srv.describe()

    clients = [srv.connect() for _ in range(12)]
    for i, sock in enumerate(clients):
        roundtrip(sock, b"client %d\n" % i)
    owner = owners(clients, workers)
    victim = min(workers, key=lambda w: sum(1 for o in owner.values() if o == w))

    os.kill(victim, signal.SIGKILL)
    replacement = srv.restart_of(victim)["new_pid"]  # sent once the new worker is forked
    assert replacement not in workers
    assert children(srv.pid) == workers - {victim} | {replacement}, srv.describe()
    assert set(srv.worker_pids) == children(srv.pid)

    for i, sock in enumerate(clients):
        if owner[i] == victim:  # the kernel closed them with the worker
            assert read_until_closed(sock, bound=10)[0] == b""
        else:  # the other workers' connections are untouched
            roundtrip(sock, b"still here %d\n" % i)
    for i in range(10):
        sock = srv.connect()
        roundtrip(sock, b"new client %d\n" % i)
        sock.close()
    for sock in clients:
        sock.close()
    stopped = srv.stop()
    assert stopped.clean and stopped.exit is not None, srv.describe()
    assert stopped.exit["restarted"] == 1, srv.describe()
    wait_until(lambda: not children(srv.pid), "workers gone", bound=5)


@pytest.mark.timeout(60)
def test_workers_auto(server: Callable[..., Server]) -> None:
    srv = server("--workers", "auto")
    assert len(srv.ready.workers) >= 1
    if len(srv.ready.workers) > 1:
        assert children(srv.pid) == set(srv.ready.workers), srv.describe()
    echo_all(srv, [os.urandom(10_000) for _ in range(8)])
    assert srv.stop().clean, srv.describe()


# ---------------------------------------------------------------- the command line

OPTIONS = [
    "--host",
    "--port",
    "--unix",
    "--mode",
    "--workers",
    "--max-conns",
    "--idle-timeout",
    "--drain-timeout",
    "--backlog",
    "--stats-interval",
    "--handler",
    "--high-water",
    "--low-water",
    "--quiet",
]


def option_help(text: str) -> dict[str, str]:
    """argparse's option list: option name → its help text (joined lines)."""
    entries: dict[str, str] = {}
    names: list[str] = []
    for line in text.splitlines():
        match = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if match:
            names = re.findall(r"(?:^|(?<=[\s,]))--?[a-z][\w-]*", match[1])
            for name in names:
                entries[name] = match[2] or ""
        elif line.startswith("    ") and names:
            for name in names:
                entries[name] += " " + line.strip()
        else:
            names = []
    return entries


@pytest.mark.timeout(60)
def test_help_explains_every_option() -> None:
    result = run_serve("--help")
    assert result.returncode == 0, result.stderr
    explained = option_help(result.stdout)
    for option in OPTIONS:
        assert option in explained, f"{option} missing from --help"
        assert len(explained[option].split()) >= 3, f"{option}: {explained[option]!r}"
    assert "lt" in explained["--mode"] and "et" in explained["--mode"]


BAD_ARGUMENTS = [
    ["--mode", "xt"],
    ["--port", "http"],
    ["--workers", "many"],
    ["--max-conns", "lots"],
    ["--idle-timeout", "soon"],
    ["--drain-timeout", "never"],
    ["--high-water", "big"],
    ["--no-such-option"],
]


@pytest.mark.parametrize("args", BAD_ARGUMENTS, ids=" ".join)
@pytest.mark.timeout(60)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    extra = [] if "--port" in args else ["--port", "0"]
    result = run_serve(*args, *extra, bound=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "usage:" in result.stderr
    assert LISTEN_RE.search(result.stdout) is None


@pytest.mark.timeout(60)
def test_address_in_use_exits_1_with_one_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_serve("--port", str(port), bound=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert LISTEN_RE.search(result.stdout) is None
