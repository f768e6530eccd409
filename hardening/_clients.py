"""Client processes for the hardening runs: ``python -m hardening._clients JOB``.

``JOB`` is a JSON object (built by soak.py, chaos.py, flood.py).  The process
prints JSON lines on stdout -- ``{"event": "ready", ...}`` once its first
connections are up, ``{"event": "done", ...}`` with every counter at the end
-- and stops when its stdin reaches end-of-file or ``seconds`` pass, then
finishes (at most ``grace`` seconds) what is in flight.

Two kinds of job, both on one standard-library selector (the code under test
is never its own oracle):

``mixed``
    Keeps a number of connections of each behaviour open, starting a new one
    whenever one ends:

    * ``short`` -- connect, echo a few messages one at a time, half-close,
      expect the server's EOF;
    * ``reset`` -- stream with bytes in flight, then ``SO_LINGER`` 0 and close
      at a random point: the server sees an RST mid-stream;
    * ``slow`` -- a small receive buffer, a large window of bytes sent ahead,
      reading only a little every tick: the server's output backs up and its
      backpressure must pause reading;
    * ``large`` -- one message of megabytes, sent while the echo comes back;
    * ``steady`` -- long-lived; one message every ``pause`` seconds until the
      end (with a latency recorded per message, in whole microseconds, per
      tenth of a second of the run), then half-close and EOF.  With size 1 and a pause
      of 1 s this is a slowloris connection.

    Every byte that comes back is compared with what was sent (the stream
    is the load generator's self-describing messages).  A connection ends
    exactly one way: ``completed``, ``reset`` (we reset it, on purpose),
    ``lost`` (the server closed or reset it first), ``failed`` (connect error,
    stall, unfinished at the end) or ``mismatched``; so ``started`` is their
    sum.  With ``reconnect`` a lost steady connection is replaced at once and
    the loss is recorded with its time and the time its replacement had its
    first echo back (chaos).

``flood``
    Opens connections as fast as the kernel lets it, keeping ``conns``
    connections held or being tried, at most ``FLOOD_IN_FLIGHT`` of them being
    tried; it is ready once that many are there, or once the most it may try
    are in flight.  Each attempt sends one byte and is classed as ``served``
    (the byte came back; the connection is then held), ``refused`` (reset or
    EOF before the echo: the server closed it), ``connect_failed``, or -- at
    the end, after up to ``SETTLE`` seconds more for answers -- ``queued``
    (connected, no echo yet: waiting in the server's accept queue) or
    ``connecting``.  Refused and failed attempts are repeated until the end
    (at most ``attempts``).

Times are ``time.monotonic()``, which every process of the machine shares.
"""

from __future__ import annotations

import errno
import heapq
import json
import os
import random
import resource
import selectors
import socket
import struct
import sys
import time
from typing import Any, Final

from rawepoll.tools.loadgen.payload import Payloads, first_difference

TICK: Final = 0.01
SWEEP: Final = 1.0
MAX_CONNECTING: Final = 256  # connects in progress at once
FLOOD_IN_FLIGHT: Final = 2048  # flood: attempts in progress at once
MAX_PROBLEMS: Final = 10
MAX_EVENTS: Final = 20000  # loss records kept
BULK: Final = 16384  # bytes per generated bulk message
READ_MAX: Final = 262144
SETTLE: Final = 2.0  # flood: at the end, seconds for attempts in flight to be answered
IP_BIND_ADDRESS_NO_PORT: Final = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
ENDINGS: Final = ("completed", "reset", "lost", "failed", "mismatched")

# Defaults of each behaviour; a job's "params" may override any of them.
DEFAULTS: Final[dict[str, Any]] = {
    "short_messages": [1, 20],  # messages per connection (uniform)
    "short_sizes": [16, 64, 512, 4096],
    "reset_bytes": [65536, 1048576],  # reset after this many bytes sent (uniform)
    "reset_window": 262144,
    "slow_bytes": [2 << 20, 8 << 20],
    "slow_window": 4 << 20,  # bytes sent ahead of the echo
    "slow_read": 16384,  # bytes read per tick
    "slow_rcvbuf": 16384,
    "large_bytes": [1 << 20, 16 << 20],
    "steady_size": 256,
    "steady_pause": 0.1,
    "steady_life": [0, 0],  # seconds (uniform); 0: until the end of the run
    "life": 120.0,  # longest life of a non-steady connection, seconds
    "stall": 30.0,  # no byte back for this long with bytes in flight: failed
    "max_starts": 1_000_000,
}


class Conn:
    """One connection of a mixed job and where its stream stands."""

    __slots__ = (
        "cid",
        "connected",
        "expect",
        "first_echo",
        "kind",
        "last",
        "life",
        "mask",
        "messages_left",
        "outbuf",
        "planned",
        "queued",
        "replaces",
        "reset_at",
        "sent",
        "sent_at",
        "seq",
        "shut",
        "sock",
        "started",
        "verified",
    )

    def __init__(self, kind: str, cid: int, sock: socket.socket, now: float) -> None:
        self.kind = kind
        self.cid = cid
        self.sock = sock
        self.started = self.last = now
        self.connected = False
        self.expect = bytearray()  # sent, echo not verified yet (oldest first)
        self.outbuf = bytearray()  # generated, not yet taken by the kernel
        self.seq = 0  # next message number
        self.queued = 0  # bytes generated so far
        self.planned = 0  # bytes this connection will send in all (bulk kinds)
        self.sent = 0
        self.verified = 0
        self.messages_left = 0
        self.reset_at = -1
        self.sent_at = 0.0
        self.shut = False
        self.first_echo = False
        self.replaces = -1  # index of the loss record this connection replaces
        self.life = float("inf")  # steady: finish cleanly this long after the start
        self.mask = selectors.EVENT_WRITE  # what the selector watches for it (0: not registered)


class Mixed:
    """A mixed job: see the module docstring."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.address = (job["host"], job["port"])
        self.family = socket.AF_INET6 if ":" in job["host"] else socket.AF_INET
        self.params = {**DEFAULTS, **job.get("params", {})}
        self.targets: dict[str, int] = {k: int(v) for k, v in job["kinds"].items() if v}
        self.reconnect = bool(job.get("reconnect", False))
        self.record_latency = bool(job.get("latency", False))
        self.sources: list[str] = list(job.get("sources", []))
        self.rng = random.Random(job.get("seed", 0))
        self.next_cid = int(job.get("base", 0))
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, Conn] = {}
        self.by_kind: dict[str, int] = dict.fromkeys(self.targets, 0)
        self.connecting = 0
        self.payloads: dict[int, Payloads] = {}
        self.counts: dict[str, dict[str, int]] = {
            kind: dict.fromkeys(("started", *ENDINGS, "bytes_sent", "bytes_verified"), 0)
            for kind in self.targets
        }
        self.mismatched_bytes = 0
        self.problems: list[str] = []
        self.losses: list[dict[str, Any]] = []
        self.latency: dict[int, dict[int, int]] = {}  # tenth of a second -> {us: count}
        self.timers: list[tuple[float, int, int]] = []  # (when, cid, fd): steady sends, slow reads
        self.stopping = False
        self.starts = 0
        self.ready_sent = False
        self.started_at = time.monotonic()

    # -- starting and ending connections --------------------------------------

    def payload(self, size: int) -> Payloads:
        found = self.payloads.get(size)
        if found is None:
            found = self.payloads[size] = Payloads(size)
        return found

    def open(self, kind: str, now: float) -> Conn | None:
        cid = self.next_cid
        self.next_cid += 1
        self.starts += 1
        counts = self.counts[kind]
        counts["started"] += 1
        sock = socket.socket(self.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        conn = Conn(kind, cid, sock, now)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if kind == "slow":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.params["slow_rcvbuf"])
            if self.sources:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.rng.choice(self.sources), 0))
            code = sock.connect_ex(self.address)
        except OSError as error:
            code = error.errno or errno.EIO
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            counts["failed"] += 1
            self.problem(f"{kind} {cid}: connect: {os.strerror(code)}")
            return None
        self.conns[sock.fileno()] = conn
        self.by_kind[kind] += 1
        self.connecting += 1
        self.selector.register(sock, selectors.EVENT_WRITE, conn)
        self.plan(conn)
        return conn

    def plan(self, conn: Conn) -> None:
        """Decide what ``conn`` will send."""
        p, rng = self.params, self.rng
        kind = conn.kind
        if kind == "short":
            conn.messages_left = rng.randint(*p["short_messages"])
        elif kind == "reset":
            conn.reset_at = rng.randint(*p["reset_bytes"])
            conn.planned = conn.reset_at + p["reset_window"]
        elif kind == "slow":
            conn.planned = rng.randint(*p["slow_bytes"])
        elif kind == "large":
            conn.planned = rng.randint(*p["large_bytes"])
        elif kind == "steady" and p["steady_life"][1] > 0:
            conn.life = rng.uniform(*p["steady_life"])

    def end(self, conn: Conn, how: str, why: str = "") -> None:
        """Close ``conn``, counting how it ended."""
        fd = conn.sock.fileno()
        if fd < 0 or self.conns.get(fd) is not conn:
            return
        del self.conns[fd]
        self.by_kind[conn.kind] -= 1
        if not conn.connected:
            self.connecting -= 1
        counts = self.counts[conn.kind]
        counts[how] += 1
        counts["bytes_sent"] += conn.sent
        counts["bytes_verified"] += conn.verified
        if conn.mask:
            self.selector.unregister(conn.sock)
        if how == "reset":
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.sock.close()
        if why and how != "lost":
            self.problem(f"{conn.kind} {conn.cid}: {why}")
        if how == "lost":
            self.record_loss(conn, why)

    def record_loss(self, conn: Conn, why: str) -> None:
        now = time.monotonic()
        if len(self.losses) < MAX_EVENTS:
            self.losses.append(
                {"kind": conn.kind, "t": now, "how": why, "in_flight": len(conn.expect)}
            )
            index = len(self.losses) - 1
        else:
            index = -1
        if not self.reconnect:
            self.problem(f"{conn.kind} {conn.cid}: lost: {why}")
            return
        if not self.stopping and self.by_kind[conn.kind] < self.targets[conn.kind]:
            replacement = self.open(conn.kind, now)
            if replacement is not None:
                replacement.replaces = index

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    # -- one connection's I/O ------------------------------------------------

    def connected(self, conn: Conn, now: float) -> None:
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.end(conn, "failed", f"connect: {os.strerror(code)}")
            return
        conn.connected = True
        conn.last = now
        self.connecting -= 1
        if conn.kind == "steady":
            self.queue_message(conn, self.params["steady_size"], now)
        elif conn.kind == "short":
            self.queue_message(conn, self.rng.choice(self.params["short_sizes"]), now)
        else:
            self.refill(conn)
        if conn.kind == "slow":
            self.schedule(conn, now + TICK)
        self.update(conn)

    def queue_message(self, conn: Conn, size: int, now: float) -> None:
        data = self.payload(size).message(conn.cid, conn.seq)
        conn.seq += 1
        conn.outbuf += data
        conn.sent_at = now
        self.send(conn)

    def refill(self, conn: Conn) -> None:
        """Bulk kinds: generate more of the stream while the window allows."""
        window = self.params["slow_window"] if conn.kind == "slow" else self.params["reset_window"]
        if conn.kind == "large":
            window = 1 << 22
        make = self.payload(BULK).message
        while conn.queued < conn.planned and len(conn.expect) + len(conn.outbuf) < window:
            data = make(conn.cid, conn.seq)[: conn.planned - conn.queued]
            conn.seq += 1
            conn.queued += len(data)
            conn.outbuf += data

    def send(self, conn: Conn) -> None:
        for _ in range(64):
            if not conn.outbuf:
                break
            try:
                n = conn.sock.send(conn.outbuf[:READ_MAX])
            except BlockingIOError:
                break
            except OSError as error:
                self.end(conn, "lost", f"send: {error.strerror}")
                return
            conn.expect += conn.outbuf[:n]
            del conn.outbuf[:n]
            conn.sent += n
            if conn.kind not in ("short", "steady"):
                self.refill(conn)
        if conn.kind == "reset" and conn.sent >= conn.reset_at:
            self.end(conn, "reset")  # with bytes in flight: the server sees an RST
            return
        if (
            conn.kind in ("slow", "large")
            and not conn.shut
            and conn.queued >= conn.planned
            and not conn.outbuf
        ):
            self.shut(conn)

    def shut(self, conn: Conn) -> None:
        conn.shut = True
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError as error:
            self.end(conn, "lost", f"shutdown: {error.strerror}")

    def receive(self, conn: Conn, now: float, limit: int = READ_MAX) -> None:
        want = min(len(conn.expect) + 1, limit)
        try:
            data = conn.sock.recv(want)
        except BlockingIOError:
            return
        except OSError as error:
            self.end(conn, "lost", f"recv: {error.strerror}")
            return
        if not data:
            self.eof(conn)
            return
        expect = conn.expect
        if not expect.startswith(data):
            at = first_difference(data, expect)
            common = min(len(data), len(expect))
            wrong = sum(a != b for a, b in zip(data[:common], expect[:common], strict=True))
            self.mismatched_bytes += wrong + len(data) - common
            self.end(
                conn,
                "mismatched",
                f"byte {conn.verified + at} of the stream differs "
                f"({len(data)} bytes read, {len(expect)} expected)",
            )
            return
        n = len(data)
        del expect[:n]
        conn.verified += n
        conn.last = now
        if not conn.first_echo:  # served: for a replacement, its loss is recovered
            conn.first_echo = True
            if conn.replaces >= 0:
                self.losses[conn.replaces]["recovered"] = now
        if expect:
            return
        self.echoed(conn, now)

    def echoed(self, conn: Conn, now: float) -> None:
        """Everything sent so far came back."""
        kind = conn.kind
        if kind == "steady":
            if self.record_latency:
                bucket = self.latency.setdefault(int(now * 10), {})
                us = int((now - conn.sent_at) * 1e6)
                bucket[us] = bucket.get(us, 0) + 1
            if self.stopping or now - conn.started >= conn.life:
                self.shut(conn)
            else:
                pause = self.params["steady_pause"]
                due = conn.sent_at + pause if conn.seq > 1 else now + self.rng.uniform(0, pause)
                self.schedule(conn, max(due, now))
        elif kind == "short":
            conn.messages_left -= 1
            if conn.messages_left > 0 and not self.stopping:
                self.queue_message(conn, self.rng.choice(self.params["short_sizes"]), now)
            elif not conn.shut:
                self.shut(conn)
        else:  # the bulk kinds: more of the stream may go now
            self.refill(conn)
            self.send(conn)

    def eof(self, conn: Conn) -> None:
        if conn.shut and not conn.expect and not conn.outbuf:
            self.end(conn, "completed")
        else:
            self.end(conn, "lost", f"EOF with {len(conn.expect)} bytes in flight")

    def update(self, conn: Conn) -> None:
        """Watch ``conn`` for what it waits for (slow readers read on a timer instead)."""
        if self.conns.get(conn.sock.fileno()) is not conn:
            return
        mask = 0 if conn.kind == "slow" else selectors.EVENT_READ
        if conn.outbuf or not conn.connected:
            mask |= selectors.EVENT_WRITE
        if mask == conn.mask:
            return
        if not conn.mask:
            self.selector.register(conn.sock, mask, conn)
        elif not mask:
            self.selector.unregister(conn.sock)
        else:
            self.selector.modify(conn.sock, mask, conn)
        conn.mask = mask

    def schedule(self, conn: Conn, when: float) -> None:
        heapq.heappush(self.timers, (when, conn.cid, conn.sock.fileno()))

    def timer(self, conn: Conn, now: float) -> None:
        if conn.kind == "slow":
            self.receive(conn, now, self.params["slow_read"])
            if self.conns.get(conn.sock.fileno()) is conn:
                self.schedule(conn, now + TICK)
                self.update(conn)
        elif conn.kind == "steady" and not conn.expect and not conn.shut:
            if self.stopping:
                self.shut(conn)
            else:
                self.queue_message(conn, self.params["steady_size"], now)
            self.update(conn)

    # -- the loop -----------------------------------------------------------

    def top_up(self, now: float) -> None:
        for kind, target in self.targets.items():
            while (
                self.by_kind[kind] < target
                and self.connecting < MAX_CONNECTING
                and self.starts < self.params["max_starts"]
            ):
                self.open(kind, now)

    def is_ready(self) -> bool:
        steady = self.counts.get("steady")
        if steady is None:
            return self.starts >= sum(self.targets.values())
        up = sum(1 for c in self.conns.values() if c.kind == "steady" and c.first_echo)
        ended = steady["failed"] + steady["lost"] + steady["completed"]
        return up + ended >= self.targets["steady"]

    def sweep(self, now: float) -> None:
        life, stall = self.params["life"], self.params["stall"]
        for conn in list(self.conns.values()):
            if not conn.connected and now - conn.started > stall:
                self.end(conn, "failed", f"connect not done after {stall:g} s")
            elif conn.expect and now - conn.last > stall:
                self.end(conn, "failed", f"no echo for {stall:g} s ({len(conn.expect)} in flight)")
            elif conn.kind != "steady" and now - conn.started > life:
                self.end(conn, "failed", f"not finished after {life:g} s")

    def run(self) -> dict[str, Any]:
        job = self.job
        deadline = self.started_at + float(job["seconds"])
        grace = float(job.get("grace", 30.0))
        stdin = sys.stdin.fileno()
        os.set_blocking(stdin, False)
        self.selector.register(stdin, selectors.EVENT_READ, None)
        give_up = float("inf")
        next_sweep = self.started_at + SWEEP
        while True:
            now = time.monotonic()
            if not self.stopping and now >= deadline:
                self.begin_stop(now)
            if self.stopping:
                give_up = min(give_up, now + grace)
                if not self.conns or now >= give_up:
                    break
            else:
                self.grow(now)
            self.serve_ready(stdin, now)
            now = time.monotonic()
            self.fire_timers(now)
            if now >= next_sweep:
                next_sweep = now + SWEEP
                self.sweep(now)
        for conn in list(self.conns.values()):
            self.end(conn, "failed", "unfinished at the end")
        return self.report()

    def grow(self, now: float) -> None:
        """Open what the targets ask for; say ``ready`` the first time they are met."""
        self.top_up(now)
        if not self.ready_sent and self.is_ready():
            self.ready_sent = True
            emit({"event": "ready", "t": now, "open": len(self.conns)})

    def serve_ready(self, stdin: int, now: float) -> None:
        """Wait for readiness (at most a tick, less if a timer is due sooner) and serve it."""
        wait = TICK
        if self.timers:
            wait = max(0.0, min(wait, self.timers[0][0] - now))
        for key, events in self.selector.select(wait):
            conn: Conn | None = key.data
            if conn is None:
                self.read_stdin(stdin, now)
            elif self.conns.get(key.fd) is conn:  # else ended earlier in this batch
                self.serve(conn, key.fd, events, now)

    def serve(self, conn: Conn, fd: int, events: int, now: float) -> None:
        """One readiness event of ``conn``."""
        if not conn.connected:
            self.connected(conn, now)
            return
        if events & selectors.EVENT_WRITE:
            self.send(conn)
        if events & selectors.EVENT_READ and self.conns.get(fd) is conn:
            self.receive(conn, now)
        self.update(conn)

    def fire_timers(self, now: float) -> None:
        """Run every timer due by ``now`` whose connection is still the one it was set for."""
        while self.timers and self.timers[0][0] <= now:
            _, cid, fd = heapq.heappop(self.timers)
            due = self.conns.get(fd)
            if due is not None and due.cid == cid:
                self.timer(due, now)

    def begin_stop(self, now: float) -> None:
        self.stopping = True
        for conn in list(self.conns.values()):
            if conn.kind == "steady" and conn.connected and not conn.expect and not conn.shut:
                self.shut(conn)

    def read_stdin(self, stdin: int, now: float) -> None:
        try:
            data = os.read(stdin, 4096)
        except BlockingIOError:
            return
        if not data:
            self.selector.unregister(stdin)
            if not self.stopping:
                self.begin_stop(now)

    def report(self) -> dict[str, Any]:
        totals = dict.fromkeys(next(iter(self.counts.values()), {}), 0)
        for counts in self.counts.values():
            for name, value in counts.items():
                totals[name] += value
        return {
            "event": "done",
            "kinds": self.counts,
            "totals": totals,
            "mismatched_bytes": self.mismatched_bytes,
            "losses": self.losses,
            "latency": {
                str(k): {str(us): n for us, n in v.items()} for k, v in self.latency.items()
            },
            "problems": self.problems,
        }


class Flood:
    """A flood job: see the module docstring."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.address = (job["host"], job["port"])
        self.family = socket.AF_INET6 if ":" in job["host"] else socket.AF_INET
        self.target = int(job["conns"])
        self.attempts_max = int(job.get("attempts", 1_000_000))
        self.seconds = float(job["seconds"])
        self.sources: list[str] = list(job.get("sources", []))
        self.rng = random.Random(job.get("seed", 0))
        self.selector = selectors.DefaultSelector()
        self.pending: dict[int, tuple[socket.socket, bool, float]] = {}  # fd -> (sock, up, t)
        self.held: list[socket.socket] = []
        self.counts = dict.fromkeys(
            ("attempts", "connected", "served", "refused", "connect_failed", "mismatched"), 0
        )
        self.problems: list[str] = []

    def open(self, now: float) -> None:
        self.counts["attempts"] += 1
        sock = socket.socket(self.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            if self.sources:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.rng.choice(self.sources), 0))
            code = sock.connect_ex(self.address)
        except OSError as error:
            code = error.errno or errno.EIO
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.fail(f"connect: {os.strerror(code)}")
            return
        self.pending[sock.fileno()] = (sock, False, now)
        self.selector.register(sock, selectors.EVENT_WRITE)

    def fail(self, why: str) -> None:
        self.counts["connect_failed"] += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(why)

    def drop(self, fd: int) -> socket.socket:
        sock = self.pending.pop(fd)[0]
        self.selector.unregister(sock)
        return sock

    def event(self, fd: int, now: float) -> None:
        sock, up, _ = self.pending[fd]
        if not up:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.drop(fd).close()
                self.fail(f"connect: {os.strerror(code)}")
                return
            self.counts["connected"] += 1
            self.pending[fd] = (sock, True, now)
            try:
                sock.send(b"!")
            except OSError:
                self.drop(fd).close()
                self.counts["refused"] += 1
                return
            self.selector.modify(sock, selectors.EVENT_READ)
            return
        try:
            data = sock.recv(2)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.drop(fd)
        if data == b"!":
            self.counts["served"] += 1
            self.held.append(sock)  # keep it: it occupies the server
        elif data:
            self.counts["mismatched"] += 1
            sock.close()
        else:
            self.counts["refused"] += 1
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    def settle(self, until: float) -> None:
        """No new attempts; let those in flight be answered until ``until``."""
        while self.pending and time.monotonic() < until:
            for key, _ in self.selector.select(TICK * 5):
                if key.fd in self.pending:
                    self.event(key.fd, time.monotonic())

    def run(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.seconds
        stdin = sys.stdin.fileno()
        os.set_blocking(stdin, False)
        self.selector.register(stdin, selectors.EVENT_READ)
        ready_sent = False
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            self.fill(now)
            if not ready_sent and self.at_full_force():
                ready_sent = True
                emit({"event": "ready", "t": now, "open": len(self.held)})
            if self.serve_ready(stdin, now):
                break
        self.settle(time.monotonic() + SETTLE)
        return {"event": "done", "counts": self.final_counts(), "problems": self.problems}

    def fill(self, now: float) -> None:
        """Start attempts until the target, the in-flight limit or the attempt budget is met."""
        while (
            len(self.pending) + len(self.held) < self.target
            and len(self.pending) < FLOOD_IN_FLIGHT
            and self.counts["attempts"] < self.attempts_max
        ):
            self.open(now)

    def at_full_force(self) -> bool:
        """As many attempts in flight as allowed, or the target held or being tried."""
        in_flight = len(self.pending)
        return in_flight >= FLOOD_IN_FLIGHT or in_flight + len(self.held) >= self.target

    def serve_ready(self, stdin: int, now: float) -> bool:
        """Serve what is ready (waiting up to five ticks); True once stdin reached its end."""
        stop = False
        for key, _ in self.selector.select(TICK * 5):
            if key.fd == stdin:
                try:
                    stop = not os.read(stdin, 4096)
                except BlockingIOError:
                    pass
            elif key.fd in self.pending:
                self.event(key.fd, now)
        return stop

    def final_counts(self) -> dict[str, int]:
        """Every counter, with what is still in flight classed; every socket closed."""
        counts = dict(self.counts)
        counts["queued"] = sum(1 for _, up, _ in self.pending.values() if up)
        counts["connecting"] = sum(1 for _, up, _ in self.pending.values() if not up)
        counts["held"] = len(self.held)
        for fd in list(self.pending):
            self.drop(fd).close()
        for sock in self.held:
            sock.close()
        return counts


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> int:
    job = json.loads(sys.argv[1])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runner = Flood(job) if job["type"] == "flood" else Mixed(job)
    emit(runner.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
