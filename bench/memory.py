"""Memory per idle connection: server RSS and PSS with N idle connections, minus without.

The servers are those of ``bench/echo.py`` (see ``bench/peers/__init__.py``).
For each server, in every round:

1. start it (rawepoll with ``--max-conns N``), echo on and close one
   connection (lazy set-up is not a per-connection cost), fork the client
   processes (they share the interpreter's pages with the server, which
   lowers its PSS), let everything go idle, and read the server's RSS and PSS
   (psutil ``memory_full_info``, summed over the server and any worker it
   forks): *before*;
2. open N connections from ``--procs`` client processes (each process holds
   at most ``RLIMIT_NOFILE`` descriptors, so 19,000 connections take two), in
   batches of ``--batch`` non-blocking connects, each connection verified with
   one small echo round trip (its own 8-byte index, compared byte for byte);
   every client process binds its own source address 127.0.0.2, .3, ... so
   each has a whole ephemeral port range to itself;
3. with all N idle, read RSS and PSS again: *after*; check that the server
   now holds N more descriptors (else it has dropped connections: a failure);
   ``(after - before) / N`` is the figure, in bytes per connection;
4. close every client socket with a reset (``SO_LINGER`` 0: no TIME_WAIT is
   left behind) and stop the server.

Each round starts every server afresh; the order is reversed every other
round; reported are medians over rounds and the min-max.  Also shown: the
kernel's slab growth per connection, system-wide (both ends of each
connection, and anything else the machine did meanwhile), which is not in
any process's RSS.

Target: rawepoll <= 32 bytes per idle connection (one worker).  Expected of
the peers: asyncio ~1.8 KB, uvloop ~1.3 KB.

Usage: ``python bench/memory.py [--quick] [--conns N] [--rounds R]
[--servers NAME,...] [--json PATH]``.  Exits 0 whatever it measures, 1 if a
server fails to accept or echo a connection.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import multiprocessing
import os
import resource
import select
import signal
import socket
import statistics
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import _common
import peers
from _common import Spread

TARGET = 32  # bytes per idle connection, rawepoll, one worker
EXPECTED = {"asyncio protocol": "~1.8 KB", "uvloop protocol": "~1.3 KB"}
FD_MARGIN = 64  # descriptors a process keeps besides its connections
INDEX = struct.Struct("<Q")  # each connection's verification message
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
STEP_TIMEOUT = 30.0  # a batch that has not connected or echoed by then has failed
SETTLE_S = 0.5  # let the server finish what it was doing before reading its memory


@dataclass(frozen=True)
class Plan:
    rounds: int
    conns: int
    procs: int
    batch: int
    host: str
    sources: tuple[str, ...]  # one per client process; empty: let the kernel choose


# -- the clients: forked processes holding their share of connections --------


@dataclass(frozen=True)
class Share:
    host: str
    port: int
    count: int
    first_index: int
    source: str | None


def hold(channel: Connection, share: Share, batch: int) -> None:
    """A client process: on "go", open and verify its connections; hold them until "close"."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent cleans up
    socks: list[socket.socket] = []
    try:
        channel.send(("up", None))
        if channel.recv() != "go":
            return
        started = time.perf_counter()
        with select.epoll() as ep:
            for start in range(0, share.count, batch):
                group = [open_socket(share) for _ in range(min(batch, share.count - start))]
                socks += group
                connect(ep, group, share)
                verify(ep, group, share.first_index + start)
        channel.send(("ready", time.perf_counter() - started))
        channel.recv()  # "close": after the parent has read the server's memory
    except (OSError, peers.EchoError) as exc:
        channel.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        reset = struct.pack("ii", 1, 0)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
            sock.close()


def open_socket(share: Share) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in share.host else socket.AF_INET)
    sock.setblocking(False)
    if share.source is not None:
        # Pick the port at connect(), by the 4-tuple: the whole range per source.
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((share.source, 0))
    return sock


def connect(ep: select.epoll, group: list[socket.socket], share: Share) -> None:
    """Non-blocking connects of a whole batch; wait until every one is established."""
    waiting = {}
    for sock in group:
        code = sock.connect_ex((share.host, share.port))
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, f"connect: {os.strerror(code)}")
        waiting[sock.fileno()] = sock
        ep.register(sock.fileno(), select.EPOLLOUT)
    deadline = time.monotonic() + STEP_TIMEOUT
    while waiting:
        if time.monotonic() > deadline:
            raise peers.EchoError(f"{len(waiting)} connects still pending after {STEP_TIMEOUT} s")
        for fd, _ in ep.poll(1.0):
            code = waiting.pop(fd).getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            ep.unregister(fd)
            if code:
                raise OSError(code, f"connect: {os.strerror(code)}")


def verify(ep: select.epoll, group: list[socket.socket], first_index: int) -> None:
    """One round trip per connection: its index out, the same 8 bytes back."""
    expected: dict[int, bytes] = {}
    got: dict[int, bytes] = {}
    socks = {}
    indices = {}
    for index, sock in enumerate(group, first_index):
        message = INDEX.pack(index)
        if sock.send(message) != len(message):
            raise OSError(errno.EAGAIN, "8 bytes did not fit an empty send buffer")
        fd = sock.fileno()
        expected[fd], got[fd], socks[fd], indices[fd] = message, b"", sock, index
        ep.register(fd, select.EPOLLIN)
    deadline = time.monotonic() + STEP_TIMEOUT
    while expected:
        if time.monotonic() > deadline:
            raise peers.EchoError(f"{len(expected)} echoes missing after {STEP_TIMEOUT} s")
        for fd, _ in ep.poll(1.0):
            data = socks[fd].recv(64)
            if not data:
                raise peers.EchoError(
                    f"connection {indices[fd]}: closed by the server before its echo"
                )
            got[fd] += data
            want = expected[fd]
            if not want.startswith(got[fd]):
                raise peers.EchoError(
                    f"connection {indices[fd]}: sent {want.hex()}, echoed {got[fd].hex()}"
                )
            if got[fd] == want:
                del expected[fd]
                ep.unregister(fd)


# -- one measurement ------------------------------------------------------------


@dataclass
class Sample:
    rss_before: int
    pss_before: int
    rss_after: int
    pss_after: int
    slab_delta: int  # system-wide, bytes
    open_s: float  # the slowest client process: connect and verify all of its share
    conns: int
    fds_held: int  # the server's descriptors after minus before: at least conns

    @property
    def rss_per_conn(self) -> float:
        return (self.rss_after - self.rss_before) / self.conns

    @property
    def pss_per_conn(self) -> float:
        return (self.pss_after - self.pss_before) / self.conns

    @property
    def slab_per_conn(self) -> float:
        return self.slab_delta / self.conns


def measure(contender: peers.Contender, plan: Plan) -> Sample:
    extra = ("--max-conns", str(plan.conns)) if contender.is_rawepoll else ()
    context = multiprocessing.get_context("fork")
    clients: list[tuple[Any, Connection]] = []
    with peers.Server(contender, host=plan.host, extra=extra) as server:
        try:
            server.prime()
            # The clients exist before "before": each process that maps the same
            # interpreter and libraries lowers the server's share of them (PSS).
            counts = split(plan.conns, plan.procs)
            for k, count in enumerate(counts):
                source = plan.sources[k] if plan.sources else None
                share = Share(server.host, server.port, count, sum(counts[:k]), source)
                ours, theirs = context.Pipe()
                process = context.Process(
                    target=hold, args=(theirs, share, plan.batch), daemon=True
                )
                process.start()
                theirs.close()
                clients.append((process, ours))
            for _, channel in clients:
                receive(channel, "up", server)
            time.sleep(SETTLE_S)
            rss_before, pss_before = server.memory()
            fds_before = server.fds()
            slab_before = slab_bytes()
            for _, channel in clients:
                channel.send("go")
            open_s = max(receive(channel, "ready", server) for _, channel in clients)
            time.sleep(SETTLE_S)
            server.check_alive()
            rss_after, pss_after = server.memory()
            slab_delta = slab_bytes() - slab_before
            held = server.fds() - fds_before
            if held < plan.conns:  # the echo proved each was accepted; is it still open?
                raise peers.EchoError(f"the server holds {held:,} connections, not {plan.conns:,}")
        finally:  # clients first (they reset their connections), then the server
            for _, channel in clients:
                with contextlib.suppress(OSError):
                    channel.send("close")
            for process, channel in clients:
                process.join(STEP_TIMEOUT)
                if process.is_alive():
                    process.kill()
                    process.join()
                channel.close()
    return Sample(
        rss_before, pss_before, rss_after, pss_after, slab_delta, open_s, plan.conns, held
    )


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal counts."""
    return [total // parts + (k < total % parts) for k in range(parts)]


def receive(channel: Connection, what: str, server: peers.Server) -> Any:
    """Wait for a client's message, watching the server; raise on error."""
    deadline = time.monotonic() + STEP_TIMEOUT * 10
    while not channel.poll(1.0):
        server.check_alive()
        if time.monotonic() > deadline:
            raise peers.EchoError(f"a client process sent no {what!r}")
    try:
        kind, payload = channel.recv()
    except EOFError:
        raise peers.EchoError(f"a client process died before {what!r}") from None
    if kind == "error":
        raise peers.EchoError(payload)
    return payload


def slab_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1]) * 1024
    return 0


# -- rounds and report ----------------------------------------------------------


@dataclass
class Series:
    server: str
    samples: list[Sample] = field(default_factory=list)

    def spread(self, figure: str) -> Spread:
        return Spread.of([getattr(sample, figure) for sample in self.samples])


def run_rounds(
    contenders: list[peers.Contender], plan: Plan, failures: dict[str, str]
) -> list[Series]:
    series = {c.name: Series(c.name) for c in contenders}
    for round_index in range(plan.rounds):
        order = contenders if round_index % 2 == 0 else contenders[::-1]
        for contender in order:
            if contender.name in failures:
                continue
            _common.progress(
                f"memory: round {round_index + 1}/{plan.rounds}, {contender.name}, "
                f"{plan.conns:,} connections ..."
            )
            try:
                sample = measure(contender, plan)
            except (peers.ServerError, OSError) as exc:
                failures[contender.name] = f"round {round_index + 1}: {exc}"
                _common.progress(f"memory: FAILED {contender.name}: {exc}")
                continue
            series[contender.name].samples.append(sample)
    return [s for s in series.values() if s.samples]


def verdict(name: str, rss: Spread) -> str:
    if not name.startswith("rawepoll"):
        return EXPECTED.get(name, "-")
    return f"<= {TARGET} {'PASS' if rss.median <= TARGET else 'MISS'}"


def show(results: list[Series], plan: Plan) -> None:
    headers = [
        "server",
        "RSS before",
        "RSS after",
        "RSS B/conn",
        "min-max",
        "PSS B/conn",
        "min-max",
        "target/expected",
        "slab B/conn*",
        "open s",
    ]
    rows = []
    for s in results:
        rss, pss = s.spread("rss_per_conn"), s.spread("pss_per_conn")
        rows.append(
            [
                s.server,
                f"{statistics.median(x.rss_before for x in s.samples) / 2**20:.1f} MiB",
                f"{statistics.median(x.rss_after for x in s.samples) / 2**20:.1f} MiB",
                f"{rss.median:,.0f}",
                f"{rss.low:,.0f}-{rss.high:,.0f}",
                f"{pss.median:,.0f}",
                f"{pss.low:,.0f}-{pss.high:,.0f}",
                verdict(s.server, rss),
                f"{s.spread('slab_per_conn').median:,.0f}",
                f"{s.spread('open_s').median:.1f}",
            ]
        )
    _common.show_table(
        f"memory per idle connection, {plan.conns:,} connections: (after - before) / N, "
        f"median of {plan.rounds} round{'s' if plan.rounds > 1 else ''}",
        headers,
        rows,
    )
    print(
        "\n* slab: the kernel's slab growth, system-wide, per connection -- both ends "
        "(socket, inode, dentry, epoll item, ...),\n  plus whatever else the machine did "
        "meanwhile; it is in no process's RSS.  open s: slowest client process, connect + "
        "verify its share."
    )


def show_header(env: dict[str, Any], plan: Plan, skipped: dict[str, str]) -> None:
    print(
        f"{env['python']} on Linux {env['kernel']} {env['machine']}, {env['cpus']} CPUs, "
        f"load {env['loadavg_1m']}; rawepoll {env['rawepoll']}"
    )
    sources = ", ".join(plan.sources) if plan.sources else "chosen by the kernel"
    print(
        f"{plan.rounds} round{'s' if plan.rounds > 1 else ''}, each server started afresh "
        f"per round; {plan.conns:,} connections from {plan.procs} client processes "
        f"(source addresses {sources}), opened in batches of {plan.batch}, each verified "
        "with one 8-byte echo"
    )
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    print(flush=True)


def as_json(
    results: list[Series], env: dict[str, Any], plan: Plan, failures: dict[str, str]
) -> dict[str, Any]:
    return {
        "benchmark": "memory",
        "environment": env,
        "plan": asdict(plan),
        "target": f"rawepoll <= {TARGET} bytes per idle connection (RSS)",
        "failures": failures,
        "results": [
            {
                "server": s.server,
                "rss_per_conn": s.spread("rss_per_conn"),
                "pss_per_conn": s.spread("pss_per_conn"),
                "slab_per_conn_system_wide": s.spread("slab_per_conn"),
                "verdict": verdict(s.server, s.spread("rss_per_conn")),
                "samples": s.samples,
            }
            for s in results
        ],
    }


# -- main -------------------------------------------------------------------------


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--conns", type=int, help="connections (default 19000, quick 5000)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument("--quick", action="store_true", help="1 round of 5000 connections")
    parser.add_argument("--procs", type=int, help="client processes (default: as few as fit)")
    parser.add_argument("--batch", type=int, default=500, help="connects in flight (500)")
    parser.add_argument("--servers", help="a comma-separated subset, e.g. 'rawepoll lt,selectors'")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.conns is not None and args.conns < 1:
        parser.error("--conns must be at least 1")
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    return args


def make_plan(args: argparse.Namespace) -> tuple[Plan, str | None]:
    """The plan; a note if the descriptor limit capped the number of connections."""
    note = None
    per_process = fd_limit() - FD_MARGIN  # the server holds one fd per connection
    conns = args.conns or (5000 if args.quick else 19000)
    if conns > per_process:
        note = (
            f"RLIMIT_NOFILE is {fd_limit():,}: one server process can hold {per_process:,} "
            f"connections, not {conns:,}"
        )
        conns = per_process
    # The clients need one fd per connection too; two processes at least, connecting in parallel.
    procs = max(args.procs or 2, -(-conns // per_process))
    sources: tuple[str, ...] = ()
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(args.host)
        if address.version == 4 and address.is_loopback:
            sources = tuple(str(ipaddress.ip_address("127.0.0.2") + k) for k in range(procs))
    plan = Plan(
        rounds=args.rounds or (1 if args.quick else 3),
        conns=conns,
        procs=procs,
        batch=min(args.batch, conns),
        host=args.host,
        sources=sources,
    )
    return plan, note


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan, note = make_plan(args)
    env = _common.environment(None, "not pinned")
    contenders, skipped = [], {}
    for contender in peers.select(args.servers):
        reason = contender.missing()
        if reason:
            skipped[contender.name] = reason
        else:
            contenders.append(contender)
    show_header(env, plan, skipped)
    if note:
        print(note + "\n", flush=True)

    failures: dict[str, str] = {}
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        results = run_rounds(contenders, plan, failures)
    except KeyboardInterrupt:
        print("interrupted: every server and client process stopped", file=sys.stderr)
        return 130
    show(results, plan)
    print(f"took {time.monotonic() - started:.0f} s")
    if args.json:
        _common.write_json(args.json, as_json(results, env, plan, failures))
        print(f"wrote {args.json}")
    for name, reason in failures.items():
        print(f"FAILED {name}: {reason}", file=sys.stderr)
    return 1 if failures else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind through every finally: clients closed, servers stopped


if __name__ == "__main__":
    sys.exit(main())
