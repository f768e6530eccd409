"""Fuzzing the server's handler path: the sans-IO handlers alone, then a live Worker.

Two engines, each run in a child interpreter by ``python -m hardening.fuzz``:

:class:`HandlerFuzz`
    Feeds handlers (``EchoHandler``, ``UpperLineHandler``, or one named on the
    command line) arbitrary bytes in arbitrary chunks, one to three streams
    interleaved -- through one instance if the handler is ``shared``, one per
    stream if not, as the loop does -- in a buffer that is scribbled on after
    every call, as the loop's read buffer is.  Checks: only the documented
    output types, everything handed back at EOF equals the handler's model
    (echo: the input; upper: ``input.upper()``), and a line handler's
    retained bytes stay bounded.  Failures are shrunk by hypothesis.

:class:`ServerFuzz`
    Runs real :class:`rawepoll.server.loop.Worker` loops on 127.0.0.1 port 0,
    each in a thread of this process (so a segfault anywhere in the loop is
    this process's exit status), one echo and one upper-case server in the
    given mode, the echo one with small high/low water marks so that
    backpressure is reached at once.  Each example opens one to five
    concurrent connections, chosen by hypothesis: a message (a few bytes, or
    up to 700 KB of random bytes, text lines or one endless line), cut into
    chunks each sent on its own, a small receive buffer or not, a client that
    reads all along or only once its sends block, and an ending -- half-close
    and read to EOF, read everything back then close, close early, or reset
    (``SO_LINGER`` 0) at any byte.  Checks: every byte that comes back is a
    prefix of what the model says, complete where the ending lets it be; no
    verifying client is reset or cut short; the worker threads stay alive;
    once every client is gone the server holds no connection; a probe after
    every example is answered.  A finding stops the run (the server's state
    is then suspect) and is reported with the example that led to it; no
    shrinking, since the server carries state from example to example.

Clients use the standard library only (``socket``, ``selectors``): the code
under test is never its own oracle.  Every wait has a bound; none is a timing
assertion.
"""

from __future__ import annotations

import importlib
import itertools
import os
import random
import selectors
import socket
import struct
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from rawepoll.server.handler import EchoHandler, Handler, UpperLineHandler
from rawepoll.server.listen import open_listener
from rawepoll.server.loop import READ_SIZE, Worker, WorkerConfig, WorkerHooks

IO_BOUND = 30.0  # seconds an example's clients may go without moving a byte (liveness)
SETTLE_BOUND = 30.0  # seconds for the server to close its side once clients left
STOP_BOUND = 30.0  # seconds for a worker thread to drain and return
OUTPUT_TYPES = (bytes, bytearray, memoryview, type(None))
LARGE = 700_000  # bytes: the largest message drawn


class ContractError(Exception):
    """The server or a handler did what it must never do: a finding."""


@dataclass(frozen=True)
class HandlerSpec:
    """A handler class and its model: what all its output together must be."""

    cls: type[Handler]
    model: Callable[[bytes], bytes]


def builtin_handlers() -> dict[str, HandlerSpec]:
    return {
        "echo": HandlerSpec(EchoHandler, bytes),
        "upper": HandlerSpec(UpperLineHandler, bytes.upper),
    }


def load_echo_handler(spec: str) -> HandlerSpec:
    """``MODULE:CLASS`` of a handler that must echo every byte."""
    module_name, _, attribute = spec.partition(":")
    cls: type[Handler] = getattr(importlib.import_module(module_name), attribute)
    return HandlerSpec(cls, bytes)


# ---------------------------------------------------------------- messages


def _random_message(size: int, seed: int, kind: str) -> bytes:
    """Random bytes; ``lines``: about one byte in eight a newline; ``one_line``: none."""
    data = random.Random(seed).randbytes(size)
    if kind == "lines":
        return data.translate(_TO_NEWLINES)
    if kind == "one_line":
        return data.replace(b"\n", b"x")
    return data


_TO_NEWLINES = bytes(10 if byte < 32 else byte for byte in range(256))


def messages() -> st.SearchStrategy[bytes]:
    """Mostly short messages; some large ones (drawn as size and seed, not byte by byte)."""
    large = st.builds(
        _random_message,
        st.integers(1, LARGE),
        st.integers(0, 2**32 - 1),
        st.sampled_from(["any", "lines", "one_line"]),
    )
    return st.one_of(st.binary(max_size=600), st.binary(max_size=600), large)


def chunk_ends(draw: st.DataObject, size: int, label: str) -> list[int]:
    """Ascending ends of the chunks ``size`` bytes are cut into; the last is ``size``."""
    cuts = draw.draw(st.lists(st.integers(0, size), max_size=10), label=label)
    return sorted({*cuts, size} - {0}) or [0]


# ---------------------------------------------------------------- handlers, no I/O


class HandlerFuzz:
    """Sans-IO handler fuzzing; ``calls`` counts ``data_received`` and ``eof_received``."""

    ROUND = 100

    def __init__(self, handlers: dict[str, HandlerSpec]) -> None:
        self.handlers = handlers
        self.calls: Counter[str] = Counter()
        self.examples = 0
        # The loop's buffer is READ_SIZE; a handler called by other code may get more.
        self.buffer = bytearray(2 * READ_SIZE + 1)
        self.view = memoryview(self.buffer)

    def feed(self, handler: Handler, chunk: bytes) -> bytes:
        """``data_received`` as the loop calls it: a view of a buffer reused afterwards."""
        self.buffer[: len(chunk)] = chunk
        out = handler.data_received(self.view[: len(chunk)])
        if not isinstance(out, OUTPUT_TYPES):
            raise ContractError(f"data_received returned a {type(out).__name__}")
        result = b"" if out is None else bytes(out)
        self.buffer[: len(chunk)] = b"\xee" * len(chunk)  # the view was valid during the call
        return result

    def batch(self, examples: int, seed: int) -> None:
        @hypothesis_seed(seed)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            self.examples += 1
            name = data.draw(st.sampled_from(sorted(self.handlers)), label="handler")
            self.one_example(data, name, self.handlers[name])

        run()

    def one_example(self, data: st.DataObject, name: str, spec: HandlerSpec) -> None:
        streams = data.draw(st.lists(messages(), min_size=1, max_size=3), label="streams")
        chunks = []
        for i, message in enumerate(streams):
            ends = chunk_ends(data, len(message), f"cuts{i}")
            # Chunks beyond the loop's READ_SIZE happen only to handlers used elsewhere.
            ends = _split_long(ends, len(self.buffer))
            pairs = itertools.pairwise([0, *ends])
            chunks.append([message[a:b] for a, b in pairs if b > a])  # EOF is not a chunk
        order = data.draw(st.permutations([i for i, c in enumerate(chunks) for _ in c]))
        eof = data.draw(st.lists(st.booleans(), min_size=len(streams), max_size=len(streams)))
        shared = spec.cls() if spec.cls.shared else None
        handlers = [shared if shared is not None else spec.cls() for _ in streams]
        fed = [0] * len(streams)
        out = [bytearray() for _ in streams]
        next_chunk = [0] * len(streams)
        max_line = getattr(spec.cls, "max_line", None)
        for i in order:
            chunk = chunks[i][next_chunk[i]]
            next_chunk[i] += 1
            self.calls[name] += 1
            out[i] += self.feed(handlers[i], chunk)
            fed[i] += len(chunk)
            expected = spec.model(streams[i][: fed[i]])
            if not expected.startswith(out[i]):
                raise ContractError(f"{name}: stream {i} output is not a prefix of the model")
            # A line handler's memory: what it holds back stays under max_line, or under
            # the last chunk when that alone was longer (its tail after a newline is kept).
            kept = len(expected) - len(out[i])
            if max_line is not None and kept >= max(max_line, len(chunk)):
                raise ContractError(f"{name}: {kept} bytes kept back (max_line {max_line})")
        for i, handler in enumerate(handlers):
            if not eof[i]:
                continue
            self.calls[name] += 1
            last = handler.eof_received()
            if not isinstance(last, OUTPUT_TYPES):
                raise ContractError(f"{name}: eof_received returned a {type(last).__name__}")
            out[i] += b"" if last is None else bytes(last)
            if bytes(out[i]) != spec.model(streams[i]):
                raise ContractError(f"{name}: stream {i} output at EOF differs from the model")

    def report(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "calls": sum(self.calls.values()),
            "unit": "handler calls",
            "per_target": dict(self.calls),
        }


def _split_long(ends: list[int], most: int) -> list[int]:
    """``ends`` with extra cuts so that no chunk is longer than ``most``."""
    out: list[int] = []
    start = 0
    for end in ends:
        while end - start > most:
            start += most
            out.append(start)
        out.append(end)
        start = end
    return out


# ---------------------------------------------------------------- a live server


class LiveServer:
    """One :class:`Worker` on 127.0.0.1 port 0, run in a thread of this process."""

    def __init__(self, name: str, mode: str, spec: HandlerSpec, high_water: int) -> None:
        self.name = name
        self.spec = spec
        self.listener, is_tcp = open_listener("127.0.0.1", 0, None, 1024)
        config = WorkerConfig(
            handler=spec.cls,
            max_conns=4096,
            high_water=high_water,
            low_water=max(1, high_water // 4),
            idle_timeout=0.0,
            drain_timeout=5.0,
            stats_interval=0.0,
            is_tcp=is_tcp,
            exclusive=False,
            refuse_when_full=True,
        )
        self.logs: list[str] = []
        self.worker = Worker(self.listener, config, hooks=WorkerHooks(log=self.logs.append))
        self.address: tuple[str, int] = self.listener.getsockname()
        self.error: str | None = None
        run = self.worker.run_et if mode == "et" else self.worker.run_lt
        self.thread = threading.Thread(target=self._run, args=(run,), name=name, daemon=True)
        self.thread.start()

    def _run(self, run: Callable[[], int]) -> None:
        try:
            run()
        except BaseException:
            self.error = traceback.format_exc()

    def check_alive(self) -> None:
        if self.error is not None:
            raise ContractError(f"server {self.name}: the worker raised\n{self.error}")
        if not self.thread.is_alive():
            raise ContractError(f"server {self.name}: the worker returned while serving")
        if self.worker.stats.handler_errors:  # the worker survives its handler's faults
            errors = self.worker.stats.handler_errors
            first = next((line for line in self.logs if "handler error" in line), "")
            raise ContractError(
                f"server {self.name}: the handler raised ({errors} handler errors, "
                f"each closed its connection; the worker went on)\n{first}"
            )

    def settle(self) -> None:
        """Wait (bounded) until the server has closed every connection's socket."""
        if not _wait_until(lambda: self.worker.stats.open == 0, SETTLE_BOUND):
            raise ContractError(
                f"server {self.name}: {self.worker.stats.open} connections still open "
                f"{SETTLE_BOUND} s after every client left"
            )

    def stop(self) -> dict[str, int]:
        """A graceful stop, as SIGTERM would; the worker's counters."""
        self.worker.stopping = True
        try:
            os.write(self.worker.wake_w, b"\0")  # wake the wait
        except OSError:
            pass
        self.thread.join(STOP_BOUND)
        if self.thread.is_alive():
            raise ContractError(f"server {self.name}: no exit within {STOP_BOUND} s of a stop")
        self.worker.finish()
        self.listener.close()
        return self.worker.stats.as_dict()


def _wait_until(predicate: Callable[[], bool], bound: float) -> bool:
    pacer = threading.Event()
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            return False
        pacer.wait(0.005)
    return True


ENDINGS = ("half_close", "read_all", "close", "reset")


@dataclass
class Plan:
    """What one client does."""

    server: int
    message: bytes
    ends: list[int]
    ending: str
    stop_at: int  # close/reset: bytes sent first
    lazy: bool  # read only while a send is blocked, or once all is sent
    rcvbuf: int | None

    def describe(self) -> str:
        shown = repr(self.message) if len(self.message) <= 64 else f"<{len(self.message)} bytes>"
        return (
            f"server {self.server}, message {shown}, chunk ends {self.ends}, "
            f"ending {self.ending} at {self.stop_at}, lazy {self.lazy}, rcvbuf {self.rcvbuf}"
        )


@dataclass(eq=False)
class Client:
    """One connection following its :class:`Plan`, driven by the example's selector."""

    plan: Plan
    expected: bytes
    sock: socket.socket
    sent: int = 0
    chunk: int = 0
    blocked: bool = False
    shut: bool = False
    done: bool = False
    error: str | None = None
    mask: int = 0
    received: bytearray = field(default_factory=bytearray)

    @property
    def limit(self) -> int:
        return self.plan.stop_at

    @property
    def verifies(self) -> bool:
        return self.plan.ending in ("half_close", "read_all")

    def on_writable(self) -> None:
        view = memoryview(self.plan.message)
        while self.sent < self.limit:
            end = min(self.plan.ends[self.chunk], self.limit)
            try:
                self.sent += self.sock.send(view[self.sent : end])
            except BlockingIOError:
                self.blocked = True
                return
            except OSError as exc:
                self.fail(f"send: {exc!r}")
                return
            self.blocked = False
            if self.sent >= self.plan.ends[self.chunk]:
                self.chunk += 1
        self.after_sending()

    def after_sending(self) -> None:
        ending = self.plan.ending
        if ending == "half_close" and not self.shut:
            self.shut = True
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self.fail(f"shutdown: {exc!r}")
        elif ending == "close" or (
            ending == "read_all" and len(self.received) >= len(self.expected)
        ):
            self.finish()
        elif ending == "reset":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.finish()

    def on_readable(self) -> None:
        for _ in range(16):
            try:
                data = self.sock.recv(1 << 18)
            except BlockingIOError:
                return
            except OSError as exc:
                self.fail(f"recv: {exc!r}")
                return
            if not data:
                if self.plan.ending == "half_close":
                    self.finish()
                else:
                    self.fail(f"EOF after {len(self.received)} of {len(self.expected)} bytes")
                return
            self.received += data
            if (
                self.plan.ending == "read_all"
                and self.sent == self.limit
                and len(self.received) >= len(self.expected)
            ):
                self.finish()
                return

    def fail(self, error: str) -> None:
        self.error = error
        self.finish()

    def finish(self) -> None:
        self.done = True

    def wanted_mask(self) -> int:
        if self.done:
            return 0
        mask = 0
        if self.sent < self.limit:
            mask |= selectors.EVENT_WRITE
        if not self.plan.lazy or self.blocked or self.sent >= self.limit:
            mask |= selectors.EVENT_READ
        return mask

    def verdict(self) -> str | None:
        """What is wrong with this connection's outcome, if anything."""
        got = bytes(self.received)
        if not self.expected.startswith(got):
            return f"received {len(got)} bytes that are not a prefix of the expected output"
        if not self.verifies:
            return None
        if self.error is not None:
            return self.error
        if got != self.expected:
            return f"received {len(got)} of {len(self.expected)} bytes"
        return None


class ServerFuzz:
    """Hypothesis-chosen clients against live servers; ``calls`` counts connections."""

    ROUND = 20

    def __init__(self, mode: str, handlers: dict[str, HandlerSpec]) -> None:
        self.mode = mode
        # Small water marks on the first server: backpressure within a few reads.
        self.servers = [
            LiveServer(f"{mode}-{name}", mode, spec, high_water=4096 if i == 0 else 262144)
            for i, (name, spec) in enumerate(sorted(handlers.items()))
        ]
        self.examples = 0
        self.connections: Counter[str] = Counter()
        self.bytes_sent = 0
        self.bytes_verified = 0
        self.findings: list[dict[str, str]] = []
        self.stats: dict[str, dict[str, int]] = {}

    @property
    def stopped(self) -> bool:
        return bool(self.findings)

    def batch(self, examples: int, seed: int) -> None:
        @hypothesis_seed(seed)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],  # no shrinking: the server carries state across examples
        )
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            plans = [self.draw_plan(data, i) for i in range(data.draw(st.integers(1, 5)))]
            if self.stopped:
                return  # after drawing: hypothesis wants the same draws from the same data
            self.examples += 1
            try:
                self.one_example(plans)
            except ContractError as finding:
                self.findings.append(
                    {
                        "kind": "server",
                        "detail": str(finding),
                        "example": f"seed {seed}, example {self.examples}: "
                        + "; ".join(plan.describe() for plan in plans),
                    }
                )

        run()

    def draw_plan(self, data: st.DataObject, i: int) -> Plan:
        server = data.draw(st.integers(0, len(self.servers) - 1), label=f"server{i}")
        message = data.draw(messages(), label=f"message{i}")
        ends = chunk_ends(data, len(message), f"cuts{i}")
        ending = data.draw(st.sampled_from(ENDINGS), label=f"ending{i}")
        if ending == "read_all" and self.servers[server].spec.model is not bytes:
            ending = "half_close"  # a line handler may hold the tail until EOF
        stop_at = len(message)
        if ending in ("close", "reset"):
            stop_at = data.draw(st.integers(0, len(message)), label=f"stop_at{i}")
        lazy = data.draw(st.booleans(), label=f"lazy{i}")
        rcvbuf = data.draw(st.sampled_from([None, None, 4096]), label=f"rcvbuf{i}")
        return Plan(server, message, ends, ending, stop_at, lazy, rcvbuf)

    def connect(self, plan: Plan) -> Client:
        server = self.servers[plan.server]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if plan.rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, plan.rcvbuf)
            sock.settimeout(IO_BOUND)
            sock.connect(server.address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return Client(plan, server.spec.model(plan.message), sock)

    def one_example(self, plans: list[Plan]) -> None:
        clients: list[Client] = []
        try:
            for plan in plans:
                clients.append(self.connect(plan))
            self.drive(clients)
        except (OSError, ContractError) as exc:
            # A reset or a stall the clients saw may be a handler's fault, which
            # the worker counts before it closes the connection: report the cause.
            for server in self.servers:
                server.check_alive()
            if isinstance(exc, OSError):
                raise ContractError(f"client socket: {exc!r}") from exc
            raise
        finally:
            for client in clients:
                client.sock.close()
        # The servers first, for the same reason: whichever side noticed first
        # during the drive, a fault behind a client's short answer is named.
        for server in self.servers:
            server.check_alive()
        self.judge(clients)
        for server in self.servers:
            server.settle()
            self.probe(server)

    def judge(self, clients: list[Client]) -> None:
        """Count what the clients sent and got; the first wrong outcome is a finding."""
        for client in clients:
            self.connections[client.plan.ending] += 1
            self.bytes_sent += client.sent
            problem = client.verdict()
            if problem is not None:
                raise ContractError(f"client ({client.plan.describe()}): {problem}")
            if client.verifies:
                self.bytes_verified += len(client.received)

    def drive(self, clients: list[Client]) -> None:
        selector = selectors.DefaultSelector()
        try:
            for client in clients:
                if client.sent >= client.limit:
                    client.after_sending()  # nothing to send: end as planned at once
                self._update(selector, client)
            progress, last_progress = -1, time.monotonic()
            while not all(client.done for client in clients):
                moved = sum(c.sent + len(c.received) + c.done for c in clients)
                if moved != progress:
                    progress, last_progress = moved, time.monotonic()
                elif time.monotonic() - last_progress > IO_BOUND:
                    stuck = [
                        f"{c.plan.describe()}: sent {c.sent}, received {len(c.received)}"
                        for c in clients
                        if not c.done
                    ]
                    raise ContractError(f"no byte moved for {IO_BOUND} s: {stuck}")
                for server in self.servers:
                    server.check_alive()
                for key, events in selector.select(0.5):
                    client = key.data
                    if events & selectors.EVENT_WRITE:
                        client.on_writable()
                    if events & selectors.EVENT_READ and not client.done:
                        client.on_readable()
                    self._update(selector, client)
        finally:
            selector.close()

    @staticmethod
    def _update(selector: selectors.BaseSelector, client: Client) -> None:
        """Watch for what the client wants next; close it at once when it is done."""
        mask = client.wanted_mask()
        if client.done:
            if client.mask:
                selector.unregister(client.sock)
                client.mask = 0
            client.sock.close()  # now, not after the example: a reset lands mid-stream
            return
        if mask == client.mask:
            return
        if client.mask == 0:
            selector.register(client.sock, mask, client)
        elif mask == 0:
            selector.unregister(client.sock)
        else:
            selector.modify(client.sock, mask, client)
        client.mask = mask

    def probe(self, server: LiveServer) -> None:
        """A fresh connection is still served: a line and EOF come back."""
        line = b"probe\n"
        got = bytearray()
        try:
            with socket.create_connection(server.address, timeout=IO_BOUND) as sock:
                sock.sendall(line)
                sock.shutdown(socket.SHUT_WR)
                while data := sock.recv(4096):
                    got += data
        except OSError as exc:
            raise ContractError(f"server {server.name}: probe failed: {exc!r}") from exc
        if bytes(got) != server.spec.model(line):
            raise ContractError(f"server {server.name}: probe got {bytes(got)!r}")

    def close(self) -> None:
        """Stop every server; record its counters (and a finding if one misbehaves)."""
        for server in self.servers:
            try:
                stats = server.stop()
            except ContractError as finding:
                self.findings.append({"kind": "server", "detail": str(finding), "example": ""})
                continue
            self.stats[server.name] = stats
            if stats["open"] or stats["accepted"] != stats["closed"] + stats["refused"]:
                self.findings.append(
                    {"kind": "server", "detail": f"server {server.name}: {stats}", "example": ""}
                )
            if stats["overflow"]:
                self.findings.append(
                    {
                        "kind": "server",
                        "detail": f"server {server.name}: {stats['overflow']} connections "
                        "closed for exceeding the pending-output cap",
                        "example": "",
                    }
                )
            if server.error is not None:
                self.findings.append(
                    {"kind": "server", "detail": f"worker raised\n{server.error}", "example": ""}
                )

    def report(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "calls": sum(self.connections.values()),
            "unit": "connections",
            "per_target": dict(self.connections),
            "bytes_sent": self.bytes_sent,
            "bytes_verified": self.bytes_verified,
            "servers": self.stats,
        }
