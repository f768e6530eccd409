"""``rawepoll demo``: the main job end to end on loopback, and what it measured.

Three steps, each of which checks what it shows and fails the demo if not:

1. **the binding**: real TCP connections on 127.0.0.1, registered with both
   ``select.epoll`` and ``rawepoll.Epoll``; both must report the same ready
   sets round after round, an echo through a ``rawepoll.Epoll`` loop must
   return every byte, and one wait is timed side by side;
2. **the server**: ``rawepoll serve --workers 2`` driven by ``rawepoll bench``
   (5,000 connections for 10 s by default), every echoed byte verified; the
   server must then drain and exit 0 on SIGTERM;
3. **the comparison**: ``rawepoll compare --quick``, whose table is printed
   and whose files (JSON, markdown, PNG plots) land in ``--out``.

Every process it starts is stopped when it ends, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import random
import resource
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Final

from rawepoll._cli import positive_int
from rawepoll.epoll import Epoll
from rawepoll.events import EventArray
from rawepoll.tools.loadgen import run_load
from rawepoll.tools.serverproc import ServerError, ServerProcess
from rawepoll.unix import EPOLLIN

DESCRIPTION = (
    "The main job end to end on loopback: (1) rawepoll.Epoll next to select.epoll on real "
    "TCP connections (same ready sets, every byte echoed, one wait timed side by side); "
    "(2) rawepoll serve --workers 2 driven by rawepoll bench, every byte verified; "
    "(3) rawepoll compare --quick, its table printed and its plots written to --out. "
    "Exits 1 if anything was lost or differed."
)

SERVER_STOP_S: Final = 60.0  # SIGTERM to exit: the drain of the server step


def _connections(count: int) -> tuple[list[socket.socket], list[socket.socket]]:
    """``count`` connected (client, server) TCP pairs over 127.0.0.1."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    clients: list[socket.socket] = []
    servers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(min(count, 4096))
        address = listener.getsockname()
        for start in range(0, count, 512):
            batch = min(512, count - start)
            for _ in range(batch):
                client = socket.create_connection(address)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                clients.append(client)
            for _ in range(batch):
                server, _peer = listener.accept()
                server.setblocking(False)
                servers.append(server)
    finally:
        listener.close()
    return clients, servers


def _compare_ready_sets(
    clients: list[socket.socket], servers: list[socket.socket], rounds: int
) -> int:
    """Write to random clients; both epolls must report the same ready fds."""
    rng = random.Random(1)
    mismatches = 0
    with select.epoll() as std, Epoll() as raw:
        for server in servers:
            std.register(server.fileno(), select.EPOLLIN)
            raw.register(server.fileno(), EPOLLIN)
        for _ in range(rounds):
            chosen = rng.sample(range(len(clients)), k=min(50, len(clients)))
            for index in chosen:
                clients[index].sendall(b"!")
            expected = {servers[index].fileno() for index in chosen}
            got_std = _poll_until(std, expected)
            got_raw = _poll_until(raw, expected)
            if got_std != got_raw or got_raw != expected:
                mismatches += 1
            for index in chosen:
                servers[index].recv(16)
    return mismatches


def _poll_until(ep: select.epoll | Epoll, expected: set[int]) -> set[int]:
    """Poll until every expected fd is reported (bounded); return what was seen."""
    seen: set[int] = set()
    for _ in range(200):
        seen = {fd for fd, _mask in ep.poll(0.05, len(expected) + 64)}
        if seen >= expected:
            break
    return seen


def _echo_round(clients: list[socket.socket], servers: list[socket.socket]) -> tuple[int, int]:
    """Every client sends one message; a rawepoll loop echoes; count bad bytes."""
    by_fd = {server.fileno(): server for server in servers}
    messages = [f"hello {index:06d} ".encode() * 3 for index in range(len(clients))]
    for client, message in zip(clients, messages, strict=True):
        client.sendall(message)
    pending = sum(len(message) for message in messages)
    events = EventArray(256)
    with Epoll() as ep:
        for fd in by_fd:
            ep.register(fd, EPOLLIN)
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            n = ep.wait(events, 0.1)
            for fd, _mask in events.ready(n):
                data = by_fd[fd].recv(65536)
                by_fd[fd].sendall(data)  # small messages: the send buffer has room
                pending -= len(data)
    bad = 0
    for client, message in zip(clients, messages, strict=True):
        client.settimeout(10)
        got = b""
        while len(got) < len(message):
            chunk = client.recv(len(message) - len(got))
            if not chunk:
                break
            got += chunk
        bad += got != message
    return len(clients) - bad, bad


def _alternate(a: Callable[[], float], b: Callable[[], float], rounds: int) -> list[float]:
    ratios = []
    for _ in range(rounds):
        ta = a()
        tb = b()
        ratios.append(tb / ta)
    return ratios


def _idle_wait_ratio(clients: list[socket.socket], servers: list[socket.socket]) -> list[float]:
    """One active connection among all idle: stdlib poll vs rawepoll wait."""
    std = select.epoll()
    raw = Epoll()
    events = EventArray(64)
    try:
        for server in servers:
            std.register(server.fileno(), select.EPOLLIN)
            raw.register(server.fileno(), EPOLLIN)
        clients[0].sendall(b"x")  # one active descriptor, never read: stays ready
        _poll_until(raw, {servers[0].fileno()})
        loops = 20_000

        def run_std() -> float:
            start = time.perf_counter_ns()
            for _ in range(loops):
                for _fd, _mask in std.poll(0):
                    pass
            return (time.perf_counter_ns() - start) / loops

        def run_raw() -> float:
            start = time.perf_counter_ns()
            for _ in range(loops):
                n = raw.wait(events, 0)
                for _fd, _mask in events.ready(n):
                    pass
            return (time.perf_counter_ns() - start) / loops

        return _alternate(run_std, run_raw, 7)
    finally:
        std.close()
        raw.close()
        servers[0].recv(16)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rawepoll demo`` options."""
    parser.add_argument(
        "--conns",
        type=positive_int,
        default=5000,
        help="connections for the server step (default 5000)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds of load in the server step (default 10)",
    )
    parser.add_argument(
        "--binding-conns",
        type=positive_int,
        default=2000,
        help="connections for the binding step (default 2000)",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=20,
        help="ready-set comparison rounds in the binding step (default 20)",
    )
    parser.add_argument(
        "--out",
        default="bench-results",
        help="where rawepoll compare writes its files (default bench-results/)",
    )
    parser.add_argument(
        "--steps",
        default="binding,server,compare",
        help="which steps to run, comma-separated (default: all three)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen steps; 0 if every one of them checked out."""
    steps = [step.strip() for step in args.steps.split(",") if step.strip()]
    unknown = set(steps) - {"binding", "server", "compare"}
    if unknown:
        print(f"rawepoll demo: unknown steps: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    try:
        ok = _run_steps(steps, args)
    except KeyboardInterrupt:  # every step has stopped what it started on the way out
        print("\ndemo: interrupted", flush=True)
        return 130
    print("demo: OK" if ok else "demo: FAILED", flush=True)
    return 0 if ok else 1


def _run_steps(steps: list[str], args: argparse.Namespace) -> bool:
    ok = True
    if "binding" in steps:
        print("== 1/3 the binding: rawepoll.Epoll next to select.epoll ==", flush=True)
        ok &= _binding_step(args.binding_conns, args.rounds)
    if "server" in steps:
        print(
            "\n== 2/3 the server: rawepoll serve --workers 2, driven by rawepoll bench ==",
            flush=True,
        )
        ok &= _server_step(args.conns, args.duration)
    if "compare" in steps:
        print("\n== 3/3 rawepoll compare --quick ==", flush=True)
        ok &= _compare_step(args.out)
    return ok


def _binding_step(wanted: int, rounds: int) -> bool:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    conns = max(1, min(wanted, (soft - 64) // 2))
    if conns < wanted:
        print(f"RLIMIT_NOFILE is {soft}: using {conns} connections instead of {wanted}")
    started = time.monotonic()
    clients, servers = _connections(conns)
    try:
        print(f"opened {conns} TCP connections on 127.0.0.1 in {time.monotonic() - started:.2f} s")
        mismatches = _compare_ready_sets(clients, servers, rounds)
        print(
            f"ready sets, select.epoll vs rawepoll.Epoll: {rounds - mismatches}/{rounds}"
            " rounds identical"
        )
        good, bad = _echo_round(clients, servers)
        print(f"echo through a rawepoll.Epoll loop: {good}/{conns} messages verified byte for byte")
        ratios = _idle_wait_ratio(clients, servers)
        print(
            f"wait with 1 active among {conns} idle, rawepoll.Epoll.wait / select.epoll.poll:"
            f" median {statistics.median(ratios):.2f}x"
            f" (spread {min(ratios):.2f}-{max(ratios):.2f}, 7 alternating rounds)"
        )
    finally:
        for sock in clients + servers:
            sock.close()
    return mismatches == 0 and bad == 0


def _server_step(conns: int, duration: float) -> bool:
    try:
        server = ServerProcess.serve(
            "--port", "0", "--workers", "2", capture=False, stop_bound=SERVER_STOP_S
        )
    except ServerError as error:
        print(f"rawepoll demo: the server did not start: {error}", file=sys.stderr)
        return False
    with server:  # its own lines, listening and the exit summary, go to our stdout
        result = run_load(
            host=server.host,
            port=server.port,
            conns=conns,
            size=64,
            duration=duration,
            procs=2,
            progress=lambda text: print(text, flush=True),
        )
        print(
            f"rawepoll bench: {result.established}/{conns} connections, "
            f"{result.messages:,} messages verified, {result.msgs_per_s:,.0f} msg/s, "
            f"p50 {result.p50_us:.0f} us, "
            f"p99 {result.p99_us:.0f} us, errors {result.errors}, mismatches {result.mismatches}",
            flush=True,  # before the server's exit summary
        )
        stopped = server.stop()
    print(f"server drained and exited with status {stopped.returncode}")
    return (
        stopped.clean
        and result.errors == 0
        and result.mismatches == 0
        and result.established == conns
    )


def _compare_step(out: str) -> bool:
    status = subprocess.call([sys.executable, "-m", "rawepoll", "compare", "--quick", "--out", out])
    print(f"rawepoll compare wrote its results, table and plots to {out}/")
    return status == 0
