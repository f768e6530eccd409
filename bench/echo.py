"""Echo servers side by side: server CPU time per echoed message.

The servers (see ``bench/peers/__init__.py``): rawepoll's echo server in
level- and edge-triggered mode, a ``selectors.DefaultSelector`` server, asyncio
with a Protocol and with streams, and uvloop with the same Protocol.

How a figure is made:

* Every server is started once, **pinned to one CPU** (``--server-cpu``,
  default 0) from its first instruction, and kept running for the whole
  benchmark; all of them sit idle except the one being measured.  Each is
  primed first: one connection, 4 KiB echoed, closed (see
  ``peers.Server.prime``: asyncio costs 3x per message before that).
* The **load generator** runs in ``--procs`` forked processes pinned to
  another CPU (``--loadgen-cpu``, default 1): ``--conns`` TCP connections,
  each a closed loop -- send one message of SIZE bytes, wait until all SIZE
  bytes are back, compare them with what was sent, send the next.  Every
  message carries its sequence number and connection index in its first
  12 bytes and a per-connection random payload after, so a lost, reordered,
  duplicated or crossed byte is a mismatch.  A mismatch, a stall or a server
  that closes or dies is a bug, not a number: the benchmark reports it and
  exits 1.
* One **run** = fresh connections, a warm-up of ``--warmup`` seconds, then
  the server's CPU clock (user + system, all threads, children included) is
  read, ``--seconds`` of closed-loop traffic, the messages still in flight
  are drained, and the clock is read again.  Server CPU per message = the
  difference / messages echoed.  The load generator's own CPU per message,
  the message rate, the server's busy share of one CPU and the p50/p99
  round-trip latency (HdrHistogram) are reported with it.
* One **round** runs every server at every size; the order is reversed every
  other round.  Reported: medians over rounds with min-max spread, and per
  server the **median of per-round ratios** to uvloop (below 1.0: less CPU
  per message than uvloop).  Target: rawepoll <= 1.0 x uvloop.

Usage: ``python bench/echo.py [--quick] [--rounds N] [--seconds S] [--conns C]
[--sizes 64,4096] [--servers NAME,...] [--json PATH]``.  Exits 0 whatever it
measures, 1 if a server echoed wrongly, died or stalled.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import gc
import multiprocessing
import os
import random
import select
import signal
import socket
import statistics
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import _common
import peers
from _common import Spread

HEADER = struct.Struct("<QI")  # sequence number, connection index
SEQUENCE = struct.Struct("<Q")
STALL_S = 10.0  # no echo for this long: the server has stopped echoing
TARGET = 1.0  # rawepoll CPU per message / uvloop's


@dataclass(frozen=True)
class Plan:
    """What to run, how long and where."""

    rounds: int
    seconds: float
    warmup: float
    conns: int
    procs: int
    sizes: tuple[int, ...]
    host: str
    server_cpu: int | None
    loadgen_cpu: int | None


# -- the load generator: runs in forked children pinned to the load CPU -------


class Load:
    """``conns`` blocking TCP connections watched by one ``select.epoll``.

    The sockets are blocking: a read happens only after epoll reports the
    socket readable, so it never waits, and ``sendall`` of one message to a
    socket whose previous message has come back never finds the send buffer
    full.  Per-connection state lives in lists indexed by fd, so the loop does
    no attribute look-ups.
    """

    def __init__(self, host: str, port: int, conns: int, size: int, first_index: int) -> None:
        self.size = size
        self.epoll = select.epoll()
        self.socks: list[socket.socket] = []
        self.index: dict[int, int] = {}  # fd -> connection index, for messages
        for index in range(first_index, first_index + conns):
            sock = socket.create_connection((host, port), timeout=STALL_S)
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks.append(sock)
            self.index[sock.fileno()] = index
            self.epoll.register(sock.fileno(), select.EPOLLIN)
        top = max(self.index) + 1
        self.sock: list[Any] = [None] * top
        self.msg: list[Any] = [None] * top
        self.buf: list[Any] = [None] * top
        self.view: list[Any] = [None] * top
        self.got = [0] * top
        self.seq = [0] * top
        self.sent_at = [0] * top
        for sock in self.socks:
            fd = sock.fileno()
            message = bytearray(random.Random(self.index[fd]).randbytes(size))
            HEADER.pack_into(message, 0, 0, self.index[fd])
            self.sock[fd] = sock
            self.msg[fd] = message
            self.buf[fd] = bytearray(size)
            self.view[fd] = memoryview(self.buf[fd])

    def run(self, seconds: float, latencies: array.array[int] | None) -> tuple[int, int]:
        """Closed-loop traffic for ``seconds``, then drain; (messages echoed, elapsed ns)."""
        size = self.size
        sock, msg, buf, view = self.sock, self.msg, self.buf, self.view
        got_of, seq_of, sent_at = self.got, self.seq, self.sent_at
        pack_seq = SEQUENCE.pack_into
        clock = time.perf_counter_ns
        poll = self.epoll.poll
        record = None if latencies is None else latencies.append
        stall_ns = int(STALL_S * 1e9)

        start = clock()
        deadline = start + int(seconds * 1e9)
        for s in self.socks:
            fd = s.fileno()
            seq_of[fd] += 1
            pack_seq(msg[fd], 0, seq_of[fd])
            sent_at[fd] = clock()
            s.sendall(msg[fd])
        outstanding = len(self.socks)
        done = 0
        sending = True
        last_echo = start
        while outstanding:
            ready = poll(1.0)
            now = clock()
            if not ready:
                if now - last_echo > stall_ns:
                    raise peers.EchoError(
                        f"no echo for {STALL_S:g} s, {outstanding} messages in flight"
                    )
                continue
            last_echo = now
            if sending and now >= deadline:
                sending = False
            for fd, _ in ready:
                s = sock[fd]
                got = got_of[fd]
                n = s.recv_into(view[fd][got:]) if got else s.recv_into(buf[fd])
                if not n:
                    raise peers.EchoError(f"{self._where(fd)}: the server closed the connection")
                got += n
                if got < size:
                    got_of[fd] = got
                    continue
                got_of[fd] = 0
                if buf[fd] != msg[fd]:
                    raise peers.EchoError(self._mismatch(fd))
                t = clock()
                if record is not None:
                    record(t - sent_at[fd])
                done += 1
                if sending:
                    seq_of[fd] += 1
                    pack_seq(msg[fd], 0, seq_of[fd])
                    sent_at[fd] = t
                    s.sendall(msg[fd])
                else:
                    outstanding -= 1
        return done, clock() - start

    def check_quiet(self) -> None:
        """Nothing more may arrive: every byte sent has come back exactly once."""
        time.sleep(0.05)
        for s in self.socks:
            try:
                extra = s.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            what = f"{len(extra)} unexpected bytes" if extra else "EOF"
            raise peers.EchoError(f"{self._where(s.fileno())}: {what} after the last echo")

    def _where(self, fd: int) -> str:
        return f"connection {self.index[fd]}, message {self.seq[fd]}"

    def _mismatch(self, fd: int) -> str:
        got, want = self.buf[fd], self.msg[fd]
        offset = next(i for i in range(self.size) if got[i] != want[i])
        return (
            f"{self._where(fd)}: echo differs from what was sent at byte {offset} of "
            f"{self.size}: got {bytes(got[offset : offset + 8]).hex()}, "
            f"sent {bytes(want[offset : offset + 8]).hex()}"
        )

    def close(self) -> None:
        self.epoll.close()
        for s in self.socks:
            s.close()


@dataclass(frozen=True)
class Share:
    """One load process's part of a run: its connections to one server."""

    host: str
    port: int
    conns: int
    first_index: int  # connection indices first_index ... first_index + conns - 1
    size: int


def generate(channel: Connection, share: Share, plan: Plan) -> None:
    """A load-generator process: connect, warm up, report ready, run on "go", report."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent cleans up
    if plan.loadgen_cpu is not None:
        os.sched_setaffinity(0, {plan.loadgen_cpu})
    gc.disable()
    load = None
    try:
        load = Load(share.host, share.port, share.conns, share.size, share.first_index)
        load.run(plan.warmup, None)
        channel.send(("ready", None))
        if channel.recv() != "go":
            return
        latencies: array.array[int] = array.array("q")
        cpu0 = time.process_time_ns()
        messages, elapsed = load.run(plan.seconds, latencies)
        cpu = time.process_time_ns() - cpu0
        load.check_quiet()
        channel.send(("done", (messages, elapsed, cpu, histogram(latencies).encode())))
        channel.recv()  # "close": after the parent has read the server's clock
    except (peers.EchoError, OSError) as exc:
        channel.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        if load is not None:
            load.close()


def histogram(latencies_ns: Sequence[int]) -> Any:
    from hdrh.histogram import HdrHistogram

    hist = HdrHistogram(1, 60 * 10**9, 3)
    for value in latencies_ns:
        hist.record_value(value)
    return hist


# -- one run: a server, a size, fresh connections ----------------------------


@dataclass
class Run:
    messages: int
    elapsed_ns: int  # the slowest load process, first send to last echo
    server: peers.Usage  # what the server spent meanwhile
    loadgen_cpu_ns: int
    p50_us: float
    p99_us: float

    @property
    def server_cpu_ns(self) -> int:
        return self.server.cpu_ns

    @property
    def cpu_us(self) -> float:
        return self.server_cpu_ns / self.messages / 1e3

    @property
    def user_share(self) -> float:
        """The share of the server's CPU spent in user space (the rest is the kernel's)."""
        return self.server.user_ns / max(1, self.server.user_ns + self.server.system_ns)

    @property
    def per_wakeup(self) -> float:
        """Messages echoed per voluntary context switch: per time the server blocked."""
        return self.messages / max(1, self.server.wakeups)

    @property
    def rate(self) -> float:
        return self.messages / (self.elapsed_ns / 1e9)

    @property
    def busy(self) -> float:
        return self.server_cpu_ns / self.elapsed_ns

    @property
    def loadgen_us(self) -> float:
        return self.loadgen_cpu_ns / self.messages / 1e3


def receive(channel: Connection, timeout: float, what: str) -> tuple[str, Any]:
    if not channel.poll(timeout):
        raise peers.EchoError(f"load generator: no {what} within {timeout:g} s")
    try:
        kind, payload = channel.recv()
    except EOFError:
        raise peers.EchoError(f"load generator died before {what}") from None
    if kind == "error":
        raise peers.EchoError(payload)
    return kind, payload


def measure(server: peers.Server, size: int, plan: Plan) -> Run:
    """One run of closed-loop traffic against ``server``."""
    from hdrh.histogram import HdrHistogram

    context = multiprocessing.get_context("fork")
    workers: list[tuple[Any, Connection]] = []
    finished = False
    counts = [plan.conns // plan.procs + (k < plan.conns % plan.procs) for k in range(plan.procs)]
    try:
        for k, count in enumerate(counts):
            share = Share(server.host, server.port, count, sum(counts[:k]), size)
            ours, theirs = context.Pipe()
            process = context.Process(target=generate, args=(theirs, share, plan), daemon=True)
            process.start()
            theirs.close()
            workers.append((process, ours))
        for _, channel in workers:
            receive(channel, 30 + plan.warmup * 3, "ready")
        server.check_alive()
        before = server.usage()
        for _, channel in workers:
            channel.send("go")
        results = [receive(channel, plan.seconds + 30, "result")[1] for _, channel in workers]
        spent = server.usage() - before
        server.check_alive()
        for _, channel in workers:
            channel.send("close")
        finished = True
    finally:
        for process, channel in workers:
            process.join(5 if finished else 0)  # on an error, don't wait: kill
            if process.is_alive():
                process.kill()
                process.join()
            channel.close()
    merged = HdrHistogram(1, 60 * 10**9, 3)
    for *_, encoded in results:
        merged.add(HdrHistogram.decode(encoded))
    return Run(
        messages=sum(r[0] for r in results),
        elapsed_ns=max(r[1] for r in results),
        server=spent,
        loadgen_cpu_ns=sum(r[2] for r in results),
        p50_us=merged.get_value_at_percentile(50) / 1e3,
        p99_us=merged.get_value_at_percentile(99) / 1e3,
    )


# -- rounds -------------------------------------------------------------------


@dataclass
class Series:
    """One server at one size: a run per round."""

    server: str
    size: int
    runs: list[Run] = field(default_factory=list)

    def spread(self, figure: str) -> Spread:
        return Spread.of([getattr(run, figure) for run in self.runs])


@contextlib.contextmanager
def running(
    contenders: Sequence[peers.Contender], plan: Plan, failures: dict[str, str]
) -> Iterator[list[peers.Server]]:
    """Start every server (pinned, kept up for all rounds); stop them all on the way out."""
    servers: list[peers.Server] = []
    try:
        for contender in contenders:
            _common.progress(f"echo: starting {contender.name} ...")
            try:
                server = peers.Server(contender, host=plan.host, cpu=plan.server_cpu)
            except peers.ServerError as exc:
                failures[contender.name] = f"did not start: {exc}"
                continue
            servers.append(server)
            try:
                server.prime()
            except peers.ServerError as exc:
                failures[contender.name] = str(exc)
        yield servers
    finally:
        for server in servers:
            server.stop()


def run_rounds(
    servers: list[peers.Server], plan: Plan, failures: dict[str, str]
) -> dict[tuple[str, int], Series]:
    series = {(s.name, size): Series(s.name, size) for s in servers for size in plan.sizes}
    for round_index in range(plan.rounds):
        order = servers if round_index % 2 == 0 else servers[::-1]
        for size in plan.sizes:
            for server in order:
                if server.name in failures:
                    continue
                _common.progress(
                    f"echo: round {round_index + 1}/{plan.rounds}, {size} B, {server.name} ..."
                )
                try:
                    run = measure(server, size, plan)
                except (peers.ServerError, OSError) as exc:
                    failures[server.name] = f"{size} B, round {round_index + 1}: {exc}"
                    _common.progress(f"echo: FAILED {server.name}: {exc}")
                    continue
                series[server.name, size].runs.append(run)
    return series


# -- report -------------------------------------------------------------------


@dataclass
class Row:
    server: str
    size: int
    rounds: int
    cpu_us: Spread
    ratio: Spread | None  # to the reference, per round
    target: float | None
    rate: Spread
    p50_us: Spread
    p99_us: Spread
    busy: Spread
    loadgen_us: Spread
    user_share: Spread  # of the server's CPU, from /proc/PID/stat ticks
    per_wakeup: Spread  # messages per voluntary context switch of the server
    per_round: dict[str, list[Any]]

    @property
    def verdict(self) -> str:
        if self.target is None or self.ratio is None:
            return "-"
        return "PASS" if self.ratio.median <= self.target else "MISS"


def summarise(series: dict[tuple[str, int], Series], plan: Plan) -> list[Row]:
    rows = []
    for size in plan.sizes:
        reference = series.get((peers.REFERENCE, size))
        for (name, s_size), s in series.items():
            if s_size != size or not s.runs:
                continue
            cpu_us = [r.cpu_us for r in s.runs]
            ratios: list[float] = []
            if reference is not None and len(reference.runs) == len(s.runs):
                ratios = _common.ratios(cpu_us, [r.cpu_us for r in reference.runs])
            rows.append(
                Row(
                    server=name,
                    size=size,
                    rounds=len(s.runs),
                    cpu_us=Spread.of(cpu_us),
                    ratio=Spread.of(ratios) if ratios else None,
                    target=TARGET if name.startswith("rawepoll") else None,
                    rate=s.spread("rate"),
                    p50_us=s.spread("p50_us"),
                    p99_us=s.spread("p99_us"),
                    busy=s.spread("busy"),
                    loadgen_us=s.spread("loadgen_us"),
                    user_share=s.spread("user_share"),
                    per_wakeup=s.spread("per_wakeup"),
                    per_round={
                        "cpu_us_per_msg": cpu_us,
                        "ratio_to_reference": ratios,
                        "messages": [r.messages for r in s.runs],
                        "msgs_per_s": [r.rate for r in s.runs],
                        "p50_us": [r.p50_us for r in s.runs],
                        "p99_us": [r.p99_us for r in s.runs],
                        "server_busy": [r.busy for r in s.runs],
                        "loadgen_us_per_msg": [r.loadgen_us for r in s.runs],
                        "server_user_share": [r.user_share for r in s.runs],
                        "msgs_per_server_wakeup": [r.per_wakeup for r in s.runs],
                        "server_usage": [r.server for r in s.runs],
                    },
                )
            )
    return rows


def show(rows: list[Row], plan: Plan) -> None:
    headers = [
        "server",
        "CPU us/msg",
        "min-max",
        "x uvloop",
        "min-max",
        "target",
        "msg/s",
        "p50 us",
        "p99 us",
        "srv busy",
        "user",
        "msg/wake",
        "loadgen us/msg",
    ]
    for size in plan.sizes:
        table = [
            [
                r.server,
                f"{r.cpu_us.median:.2f}",
                f"{r.cpu_us.low:.2f}-{r.cpu_us.high:.2f}",
                "-" if r.ratio is None else _common.fmt_ratio(r.ratio.median),
                "-" if r.ratio is None else _common.fmt_spread(r.ratio),
                "-" if r.target is None else f"<= {r.target:.1f} {r.verdict}",
                f"{r.rate.median:,.0f}",
                f"{r.p50_us.median:,.0f}",
                f"{r.p99_us.median:,.0f}",
                f"{r.busy.median:.0%}",
                f"{r.user_share.median:.0%}",
                f"{r.per_wakeup.median:.1f}",
                f"{r.loadgen_us.median:.2f}",
            ]
            for r in rows
            if r.size == size
        ]
        if not table:
            continue
        _common.show_table(
            f"echo, {size} B messages, {plan.conns} connections: server CPU per message "
            f"(median of {plan.rounds} rounds), ratio to {peers.REFERENCE}",
            headers,
            table,
        )
        print()


def show_header(env: dict[str, Any], plan: Plan, skipped: dict[str, str]) -> None:
    print(
        f"{env['python']} on Linux {env['kernel']} {env['machine']}, {env['cpus']} CPUs, "
        f"load {env['loadavg_1m']}; rawepoll {env['rawepoll']}"
    )
    print(env["pinning"])
    print(
        f"{plan.rounds} rounds (order reversed every other round), each server started once "
        f"and kept running; per run: {plan.conns} fresh connections in {plan.procs} load "
        f"process(es), {plan.warmup:g} s warm-up, {plan.seconds:g} s closed-loop, drained; "
        "every echoed byte compared"
    )
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    print(flush=True)


def show_notes(rows: list[Row]) -> None:
    loadgen = [r.loadgen_us.median for r in rows]
    if loadgen:
        print(
            f"load generator: {statistics.median(loadgen):.2f} us CPU per message "
            f"(median over servers and sizes; range {min(loadgen):.2f}-{max(loadgen):.2f})"
        )
    print(
        "CPU us/msg: the server's user+sys CPU time (process CPU clock: all threads, children,\n"
        "  and the softirq work its system calls run) / messages echoed.  user: the user-space\n"
        "  share of it (tick-sampled, +-2 points).  srv busy: server CPU / elapsed time.\n"
        "  msg/wake: messages per time the server blocked in its wait.  Busy well below 100%\n"
        "  with many msg/wake means the server was runnable but not running (another process\n"
        "  or the hypervisor had its CPU): expect a wider spread then."
    )


def as_json(
    rows: list[Row], env: dict[str, Any], plan: Plan, failures: dict[str, str]
) -> dict[str, Any]:
    return {
        "benchmark": "echo",
        "environment": env,
        "plan": asdict(plan),
        "reference": peers.REFERENCE,
        "target": f"rawepoll CPU per message <= {TARGET} x {peers.REFERENCE}",
        "failures": failures,
        "results": [
            {
                "server": r.server,
                "size": r.size,
                "rounds": r.rounds,
                "cpu_us_per_msg": r.cpu_us,
                "ratio_to_reference": r.ratio,
                "target": r.target,
                "verdict": r.verdict,
                "msgs_per_s": r.rate,
                "p50_us": r.p50_us,
                "p99_us": r.p99_us,
                "server_busy": r.busy,
                "loadgen_us_per_msg": r.loadgen_us,
                "server_user_share": r.user_share,
                "msgs_per_server_wakeup": r.per_wakeup,
                "per_round": r.per_round,
            }
            for r in rows
        ],
    }


# -- main ---------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 5, quick 3)")
    parser.add_argument("--quick", action="store_true", help="3 short rounds (~30 s)")
    parser.add_argument("--seconds", type=float, help="measured traffic per run (2, quick 0.5)")
    parser.add_argument("--warmup", type=float, help="warm-up per run (0.5, quick 0.2)")
    parser.add_argument("--conns", type=int, default=50, help="connections (default 50)")
    parser.add_argument("--procs", type=int, default=1, help="load processes (default 1)")
    parser.add_argument("--sizes", default="64,4096", help="message sizes in bytes, >= 12")
    parser.add_argument("--servers", help="a comma-separated subset, e.g. 'rawepoll lt,selectors'")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU for the servers (0)")
    parser.add_argument("--loadgen-cpu", type=int, default=1, help="CPU for the load (1)")
    parser.add_argument("--no-pin", action="store_true", help="pin nothing")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    try:
        args.sizes = tuple(int(size) for size in args.sizes.split(","))
    except ValueError:
        parser.error("--sizes: comma-separated integers")
    if min(args.sizes) < HEADER.size:
        parser.error(f"--sizes: at least {HEADER.size} bytes (sequence number and index)")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.conns < 1 or not 1 <= args.procs <= args.conns:
        parser.error("need --conns >= 1 and 1 <= --procs <= --conns")
    return args


def make_plan(args: argparse.Namespace) -> tuple[Plan, str]:
    allowed = sorted(os.sched_getaffinity(0))
    server_cpu, loadgen_cpu = args.server_cpu, args.loadgen_cpu
    if args.no_pin:
        server_cpu = loadgen_cpu = None
        pinning = "not pinned: servers and load generator share whatever CPUs the scheduler picks"
    else:
        for cpu in (server_cpu, loadgen_cpu):
            if cpu not in allowed:
                raise SystemExit(f"CPU {cpu} is not among the allowed CPUs {allowed}")
        pinning = (
            f"servers pinned to CPU {server_cpu}, load generator (and this harness) to CPU "
            f"{loadgen_cpu}, of {allowed} (os.sched_setaffinity)"
        )
        if server_cpu == loadgen_cpu:
            pinning += " -- the SAME CPU: server and load compete"
        os.sched_setaffinity(0, {loadgen_cpu})
    quick = args.quick
    plan = Plan(
        rounds=args.rounds or (3 if quick else 5),
        seconds=args.seconds or (0.5 if quick else 2.0),
        warmup=args.warmup if args.warmup is not None else (0.2 if quick else 0.5),
        conns=args.conns,
        procs=args.procs,
        sizes=args.sizes,
        host=args.host,
        server_cpu=server_cpu,
        loadgen_cpu=loadgen_cpu,
    )
    return plan, pinning


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan, pinning = make_plan(args)
    env = _common.environment(plan.loadgen_cpu, pinning)
    contenders, skipped = [], {}
    for contender in peers.select(args.servers):
        reason = contender.missing()
        if reason:
            skipped[contender.name] = reason
        else:
            contenders.append(contender)
    show_header(env, plan, skipped)

    failures: dict[str, str] = {}
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        with running(contenders, plan, failures) as servers:
            series = run_rounds(servers, plan, failures)
    except KeyboardInterrupt:
        print("interrupted: every server and load process stopped", file=sys.stderr)
        return 130
    rows = summarise(series, plan)
    show(rows, plan)
    show_notes(rows)
    print(f"took {time.monotonic() - started:.0f} s")
    if args.json:
        _common.write_json(args.json, as_json(rows, env, plan, failures))
        print(f"wrote {args.json}")
    for name, reason in failures.items():
        print(f"FAILED {name}: {reason}", file=sys.stderr)
    return 1 if failures else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind through every finally: stop servers and load processes


if __name__ == "__main__":
    sys.exit(main())
