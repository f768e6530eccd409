"""Memory per idle connection, and the accept rate: a burst of connections, then idle.

For each server, in every round, started afresh and pinned to the server CPU
(this process, the client, runs on the load CPU):

1. start it, prime it (one connection echoed and closed: lazy set-up is not
   a per-connection cost), let it settle, read its RSS and PSS, descriptors
   and CPU clock: *before*;
2. open N connections **as fast as the client can**: non-blocking connects
   with up to ``window`` of them in flight at once (below the listen
   backlog, so no SYN is dropped and no retransmission timer enters the
   figure), each connection verified with one echo of its own 8-byte index,
   compared byte for byte; the time from the first ``connect`` to the last
   verified echo gives the **accept rate** (connections per second), and the
   server's CPU clock over the same burst gives its **CPU per accepted
   connection** -- the robust figure when the client is the bottleneck.  On
   IPv4 loopback the connections come from several source addresses
   (127.0.0.2, .3, ..., at most ``PER_SOURCE`` each): the kernel picks a
   connecting socket's port by probing the ephemeral range, and once one
   (source, destination) pair has used much of it every connect probes for
   long -- the client's cost, which must not enter the server's figure;
3. with all N connections idle, let it settle, read RSS and PSS again:
   *after*; check that the server now holds N more descriptors (else it has
   dropped connections: a failure); ``(after - before) / N`` is the **memory
   per idle connection**;
4. close every client socket with a reset (``SO_LINGER`` 0: no TIME_WAIT is
   left behind) and stop the server.

Also shown: the kernel's slab growth per connection, system-wide (both ends of
each connection, and anything else the machine did meanwhile), which is in no
process's RSS.  One server process holds at most ``RLIMIT_NOFILE`` descriptors,
and so does the client: N is capped below it.

**Subscribed connections** (when a rawepoll server is among the contenders):
the same N held idle by one worker of ``rawepoll serve``, each *subscribed* to
one topic -- over TCP with ``--handler ...LinePubSubHandler`` (``SUB topic``,
``OK SUB topic`` verified), and over WebSocket (``--protocol websocket``, the
handshake to ``/topic/NAME``, its ``101`` checked) -- opened by ``rawepoll bench
--broadcast``'s load processes (:class:`~rawepoll.tools.loadgen.workers.Holding`).
A warm-up of :data:`WARM_UP` subscribed connections, opened and closed, comes
first (the topic, the handshake parser and the like exist once); then RSS and
PSS before, N subscribed, settle, after: ``(after - before) / N``.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import resource
import socket
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rawepoll
from rawepoll.tools.compare import machine, report
from rawepoll.tools.compare.report import Table
from rawepoll.tools.compare.servers import Contender, EchoError, Server, ServerError
from rawepoll.tools.compare.stats import Spread, round_order
from rawepoll.tools.loadgen.spec import LoadSpec
from rawepoll.tools.loadgen.workers import Holding, prepare
from rawepoll.tools.serverproc import ServerProcess

__all__ = ["SUBSCRIBED", "Plan", "Result", "burst", "measure"]

INDEX = struct.Struct("<Q")  # each connection's verification message
FD_MARGIN = 64  # descriptors a process keeps besides its connections
STALL_S = 30.0  # no connection made progress for this long: the server has stopped
PER_SOURCE = 4000  # connections per source address: a small part of the ephemeral range
WARM_UP = 100  # subscribed connections opened and closed before the memory is read
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


@dataclass(frozen=True)
class Plan:
    rounds: int
    conns: int
    window: int  # connects in flight at once
    settle_s: float  # quiet time before each memory reading
    host: str
    server_cpu: int | None
    load_cpu: int | None


def fd_capacity() -> int:
    """How many connections one process can hold under ``RLIMIT_NOFILE``."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] - FD_MARGIN


# -- the client: a burst of verified connections ---------------------------------


class _Pending:
    __slots__ = ("expected", "got", "index", "sock")

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.index = index
        self.expected = INDEX.pack(index)
        self.got = b""


def sources_for(host: str, count: int) -> list[str]:
    """Source addresses for ``count`` connections to ``host``: none unless it is IPv4 loopback."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return []
    if address.version != 4 or not address.is_loopback:
        return []
    first = ipaddress.ip_address("127.0.0.2")
    return [str(first + k) for k in range(-(-count // PER_SOURCE))]


def burst(host: str, port: int, count: int, window: int, held: list[socket.socket]) -> float:
    """Open ``count`` verified connections, ``window`` in flight; the seconds it took.

    Every connection sends its index as 8 bytes and must get exactly those back.
    The sockets are appended to ``held`` as they are made, so the caller closes
    them whatever happens.  Connections take turns over :func:`sources_for`.

    Raises:
        EchoError: a wrong echo, an early close, or no progress for ``STALL_S``.
        OSError: a connect failed.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sources = sources_for(host, count)
    pending: dict[int, _Pending] = {}
    started = done = 0
    with rawepoll.Epoll() as ep:
        t0 = time.perf_counter()
        last_progress = t0
        while done < count:
            while started < count and len(pending) < window:
                sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                held.append(sock)
                if sources:  # the port is chosen at connect(), by the whole 4-tuple
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((sources[started % len(sources)], 0))
                code = sock.connect_ex((host, port))
                if code not in (0, errno.EINPROGRESS):
                    raise OSError(code, f"connect: {errno.errorcode.get(code, code)}")
                pending[sock.fileno()] = _Pending(sock, started)
                ep.register(sock, rawepoll.EPOLLOUT)
                started += 1
            ready = ep.poll(1.0)
            now = time.perf_counter()
            if not ready and now - last_progress > STALL_S:
                raise EchoError(f"{len(pending)} connections made no progress for {STALL_S:g} s")
            for fd, events in ready:
                conn = pending[fd]
                if events & rawepoll.EPOLLOUT:
                    _connected(ep, conn)
                elif _echoed(conn):
                    ep.unregister(fd)
                    del pending[fd]
                    done += 1
                last_progress = now
        return time.perf_counter() - t0


def _connected(ep: rawepoll.Epoll, conn: _Pending) -> None:
    code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, f"connection {conn.index}: connect: {errno.errorcode.get(code, code)}")
    if conn.sock.send(conn.expected) != len(conn.expected):
        raise OSError(errno.EAGAIN, "8 bytes did not fit an empty send buffer")
    ep.modify(conn.sock, rawepoll.EPOLLIN)


def _echoed(conn: _Pending) -> bool:
    """Read what has come back; True once all of it has, exactly."""
    data = conn.sock.recv(64)
    if not data:
        raise EchoError(f"connection {conn.index}: closed by the server before its echo")
    conn.got += data
    if not conn.expected.startswith(conn.got):
        raise EchoError(
            f"connection {conn.index}: sent {conn.expected.hex()}, echoed {conn.got.hex()}"
        )
    return conn.got == conn.expected


def reset_all(socks: list[socket.socket]) -> None:
    """Close every socket with a reset (``SO_LINGER`` 0): no TIME_WAIT left behind."""
    linger = struct.pack("ii", 1, 0)
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        sock.close()
    socks.clear()


# -- one measurement --------------------------------------------------------------


@dataclass
class Held:
    """One server holding ``conns`` idle connections: its memory before and after.

    What every memory measurement shares (this section's, the subscribed one's,
    the WebSocket section's); ``fds_held`` is the server's descriptors after
    minus before, at least ``conns``.
    """

    conns: int
    rss_before: int
    pss_before: int
    rss_after: int
    pss_after: int
    fds_held: int

    @property
    def rss_per_conn(self) -> float:
        return (self.rss_after - self.rss_before) / self.conns

    @property
    def pss_per_conn(self) -> float:
        return (self.pss_after - self.pss_before) / self.conns


@dataclass
class Sample(Held):
    """:class:`Held` idle echo connections, and the burst that opened them."""

    slab_delta: int  # system-wide, bytes
    open_s: float  # the burst: first connect to last verified echo
    accept_cpu_ns: int  # the server's CPU over the burst
    client_cpu_ns: int  # the client's (this process's) CPU over the burst

    @property
    def slab_per_conn(self) -> float:
        return self.slab_delta / self.conns

    @property
    def accepts_per_s(self) -> float:
        return self.conns / self.open_s

    @property
    def accept_cpu_us(self) -> float:
        return self.accept_cpu_ns / self.conns / 1e3

    @property
    def client_cpu_us(self) -> float:
        return self.client_cpu_ns / self.conns / 1e3


def measure_one(contender: Contender, plan: Plan) -> Sample:
    """One fresh server, one burst of ``plan.conns`` connections held idle."""
    socks: list[socket.socket] = []
    with Server(contender, host=plan.host, cpu=plan.server_cpu) as server:
        try:
            server.prime()
            time.sleep(plan.settle_s)
            rss_before, pss_before = server.memory()
            fds_before = server.fds()
            slab_before = machine.slab_bytes()
            cpu_before, client_before = server.cpu_ns(), time.process_time_ns()
            open_s = burst(server.host, server.port, plan.conns, plan.window, socks)
            accept_cpu_ns = server.cpu_ns() - cpu_before
            client_cpu_ns = time.process_time_ns() - client_before
            time.sleep(plan.settle_s)
            server.check_alive()
            rss_after, pss_after = server.memory()
            slab_delta = machine.slab_bytes() - slab_before
            held = server.fds() - fds_before
            if held < plan.conns:  # each was accepted (it echoed); is it still open?
                raise EchoError(f"the server holds {held:,} connections, not {plan.conns:,}")
        finally:  # the clients reset their connections before the server stops
            reset_all(socks)
    return Sample(
        conns=plan.conns,
        rss_before=rss_before,
        pss_before=pss_before,
        rss_after=rss_after,
        pss_after=pss_after,
        fds_held=held,
        slab_delta=slab_delta,
        open_s=open_s,
        accept_cpu_ns=accept_cpu_ns,
        client_cpu_ns=client_cpu_ns,
    )


# -- idle subscribed connections ----------------------------------------------------


@dataclass(frozen=True)
class Subscribed:
    """A kind of subscribed connection: how ``rawepoll serve`` runs, how clients subscribe."""

    name: str
    serve: tuple[str, ...]  # rawepoll serve options
    protocol: str  # the load generator's: "tcp" (SUB topic) or "websocket" (/topic/NAME)


SUBSCRIBED = (
    Subscribed(
        "rawepoll, TCP subscriber (LinePubSubHandler)",
        ("--handler", "rawepoll.server.handler:LinePubSubHandler"),
        "tcp",
    ),
    Subscribed(
        "rawepoll, WebSocket subscriber (/topic/NAME)", ("--protocol", "websocket"), "websocket"
    ),
)


def _subscribers(server: ServerProcess, control: str, conns: int, kind: Subscribed) -> Holding:
    spec = LoadSpec(
        host=server.host,
        port=server.port,
        conns=conns,
        duration=None,
        messages=1,  # none is published: the connections are released idle
        source_addrs=sources_for(server.host, conns) if conns > PER_SOURCE else None,
        protocol=kind.protocol,
        broadcast=True,
        control=control,
    )
    return Holding(prepare(spec))


def _hold(held: Holding, conns: int) -> None:
    """Open every subscriber of ``held``; raise EchoError if one did not subscribe."""
    held.open(None, time.monotonic() + 60 + conns / 500)
    subscribed = held.counts["established"]
    if subscribed < conns:
        raise EchoError(f"{subscribed:,} of {conns:,} connections subscribed")


def measure_subscribed(kind: Subscribed, plan: Plan) -> Held:
    """One fresh one-worker server, a warm-up, then ``plan.conns`` subscribed connections held."""
    with tempfile.TemporaryDirectory(prefix="rawepoll-memory-") as tmp:
        control = f"{tmp}/control"
        argv = ("--host", plan.host, "--port", "0", "--control", control, "--quiet", *kind.serve)
        with ServerProcess.serve(*argv, cpu=plan.server_cpu, name=kind.name) as server:
            with _subscribers(server, control, min(WARM_UP, plan.conns), kind) as warm:
                _hold(warm, min(WARM_UP, plan.conns))
                warm.release()
            time.sleep(plan.settle_s)
            rss_before, pss_before = machine.memory(server.pid)
            fds_before = machine.open_fds(server.pid)
            with _subscribers(server, control, plan.conns, kind) as held:
                _hold(held, plan.conns)
                time.sleep(plan.settle_s)
                server.check_alive()
                rss_after, pss_after = machine.memory(server.pid)
                fds = machine.open_fds(server.pid) - fds_before
                held.release()
    if fds < plan.conns:
        raise EchoError(f"the server held {fds:,} connections, not {plan.conns:,}")
    return Held(plan.conns, rss_before, pss_before, rss_after, pss_after, fds)


# -- rounds and report --------------------------------------------------------------


@dataclass
class Series:
    server: str
    samples: list[Sample] = field(default_factory=list)

    def spread(self, figure: str) -> Spread:
        return Spread.of([getattr(sample, figure) for sample in self.samples])


@dataclass
class HeldSeries:
    kind: str
    samples: list[Held] = field(default_factory=list)

    def spread(self, figure: str) -> Spread:
        return Spread.of([getattr(sample, figure) for sample in self.samples])


@dataclass
class Result:
    plan: Plan
    series: list[Series]
    skipped: dict[str, str]  # server -> why it did not run
    failures: dict[str, str]  # server -> what went wrong
    subscribed: list[HeldSeries] = field(default_factory=list)  # rawepoll's subscribed kinds

    def tables(self) -> list[Table]:
        tables = [self._idle_table()]
        if any(s.samples for s in self.subscribed):
            tables.append(self._subscribed_table())
        return tables

    def _subscribed_table(self) -> Table:
        rows = []
        for s in self.subscribed:
            if not s.samples:
                continue
            rss = s.spread("rss_per_conn")
            rows.append(
                [
                    s.kind,
                    f"{rss.median:,.0f}",
                    report.fmt_spread(rss, 0),
                    f"{s.spread('pss_per_conn').median:,.0f}",
                ]
            )
        return Table(
            f"4b. memory per idle subscribed connection, {self.plan.conns:,} connections in one "
            f"worker, median of {report.rounds(self.plan.rounds)}",
            ["server", "RSS B/conn", "min-max", "PSS B/conn"],
            rows,
            [
                "B/conn: (after - before) / N of the server's RSS and PSS with N idle connections, "
                f"each subscribed to one topic (SUB acknowledged, or the WebSocket 101 to "
                f"/topic/NAME checked), after a warm-up of {WARM_UP} subscribed connections "
                "opened and closed; goal: <= 32 B."
            ],
        )

    def _idle_table(self) -> Table:
        rows = []
        for s in self.series:
            if not s.samples:
                continue
            rss, pss = s.spread("rss_per_conn"), s.spread("pss_per_conn")
            rate, cpu = s.spread("accepts_per_s"), s.spread("accept_cpu_us")
            rows.append(
                [
                    s.server,
                    f"{rss.median:,.0f}",
                    report.fmt_spread(rss, 0),
                    f"{pss.median:,.0f}",
                    f"{s.spread('slab_per_conn').median:,.0f}",
                    f"{rate.median:,.0f}",
                    report.fmt_spread(rate, 0),
                    f"{cpu.median:.1f}",
                    report.fmt_spread(cpu, 1),
                    f"{s.spread('client_cpu_us').median:.1f}",
                ]
            )
        notes = [
            "B/conn: (after - before) / N of the server's RSS and PSS with N idle connections, "
            "each verified with one echo; slab*: the kernel's slab growth per connection, "
            "system-wide (both ends), in no process's RSS.",
            f"accepts/s: N / (first connect to last verified echo), {self.plan.window} connects "
            "in flight from one client process on the load CPU; CPU µs/conn: the server's "
            "CPU over that burst / N; client µs/conn: the client's.",
            *(f"skipped {name}: {why}" for name, why in self.skipped.items()),
            *(f"FAILED {name}: {what}" for name, what in self.failures.items()),
        ]
        return Table(
            f"4. memory per idle connection and accept rate, {self.plan.conns:,} "
            f"connections, median of {report.rounds(self.plan.rounds)}",
            [
                "server",
                "RSS B/conn",
                "min-max",
                "PSS B/conn",
                "slab B/conn*",
                "accepts/s",
                "min-max",
                "CPU µs/conn",
                "min-max",
                "client µs/conn",
            ],
            rows,
            notes,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "skipped": self.skipped,
            "failures": self.failures,
            "results": [
                {
                    "server": s.server,
                    "rss_per_conn": s.spread("rss_per_conn"),
                    "pss_per_conn": s.spread("pss_per_conn"),
                    "slab_per_conn_system_wide": s.spread("slab_per_conn"),
                    "accepts_per_s": s.spread("accepts_per_s"),
                    "accept_cpu_us_per_conn": s.spread("accept_cpu_us"),
                    "client_cpu_us_per_conn": s.spread("client_cpu_us"),
                    "samples": s.samples,
                }
                for s in self.series
                if s.samples
            ],
            "subscribed": [
                {
                    "server": s.kind,
                    "rss_per_conn": s.spread("rss_per_conn"),
                    "pss_per_conn": s.spread("pss_per_conn"),
                    "samples": s.samples,
                }
                for s in self.subscribed
                if s.samples
            ],
        }

    def plot(self, path: Path, subtitle: str) -> bool:
        """Bytes per idle connection and accepts per second; False without matplotlib or figures."""
        plt = report.pyplot()
        shown = [s for s in self.series if s.samples]
        if plt is None or not shown:
            return False
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
        names = [s.server for s in shown]
        colors = ["tab:blue" if name.startswith("rawepoll") else "tab:grey" for name in names]
        for ax, figure, label in (
            (left, "rss_per_conn", "server RSS bytes per idle connection"),
            (right, "accepts_per_s", "connections accepted and echoed per second"),
        ):
            report.bars(ax, names, [s.spread(figure) for s in shown], "{:,.0f}", colors)
            ax.set_xlabel(label)
        fig.suptitle(
            f"{self.plan.conns:,} connections: memory per idle connection and accept rate "
            "(bars: min-max over rounds)"
        )
        left.set_title(f"{subtitle}; {report.rounds(self.plan.rounds)}", fontsize=8, color="grey")
        report.save(plt, fig, path)
        return True


def measure(contenders: list[Contender], plan: Plan, skipped: dict[str, str]) -> Result:
    """Every contender, fresh each round, in alternating order."""
    series = {c.name: Series(c.name) for c in contenders}
    failures: dict[str, str] = {}
    for round_index in range(plan.rounds):
        for contender in round_order(contenders, round_index):
            if contender.name in failures:
                continue
            report.progress(
                f"memory and accept rate: round {round_index + 1}/{plan.rounds}, "
                f"{contender.name}, {plan.conns:,} connections ..."
            )
            try:
                series[contender.name].samples.append(measure_one(contender, plan))
            except (ServerError, OSError) as exc:
                failures[contender.name] = f"round {round_index + 1}: {exc}"
                report.progress(f"memory and accept rate: FAILED {contender.name}: {exc}")
    subscribed = []
    if any(contender.is_rawepoll for contender in contenders):
        subscribed = measure_subscribed_rounds(plan, failures)
    return Result(plan, list(series.values()), skipped, failures, subscribed)


def measure_subscribed_rounds(plan: Plan, failures: dict[str, str]) -> list[HeldSeries]:
    """Every kind of subscribed connection, fresh each round, in alternating order."""
    series = {kind.name: HeldSeries(kind.name) for kind in SUBSCRIBED}
    for round_index in range(plan.rounds):
        for kind in round_order(SUBSCRIBED, round_index):
            if kind.name in failures:
                continue
            report.progress(
                f"memory, subscribed: round {round_index + 1}/{plan.rounds}, {kind.name}, "
                f"{plan.conns:,} connections ..."
            )
            try:
                series[kind.name].samples.append(measure_subscribed(kind, plan))
            except (ServerError, OSError, ValueError, TimeoutError) as exc:
                failures[kind.name] = f"round {round_index + 1}: {exc}"
                report.progress(f"memory, subscribed: FAILED {kind.name}: {exc}")
    return list(series.values())
