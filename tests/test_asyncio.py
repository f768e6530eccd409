"""Real asyncio programs on ``asyncio.SelectorEventLoop(rawepoll.EpollSelector())``.

Streams and protocols over TCP (IPv4 and IPv6), Unix sockets and UDP, the
``loop.sock_*`` calls, subprocess pipes, timers, raw readers and writers, signal
handlers and thread wake-ups -- every one driven through rawepoll's selector --
and, at the end, the loop's shutdown closing the epoll descriptor.

No test waits on the wall clock to coordinate: completion is signalled by
futures, EOF or the process exit, and ``pytest-timeout`` bounds each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import selectors
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fds import open_fds
from support.proc import wait_until_in_epoll_wait

import rawepoll

pytestmark = pytest.mark.timeout(90)

T = TypeVar("T")
Pair = tuple[socket.socket, socket.socket]


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """What ``asyncio.run`` does before closing: cancel leftovers, let them finish."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


@contextlib.contextmanager
def epoll_loop(
    selector: rawepoll.EpollSelector | None = None,
) -> Iterator[asyncio.AbstractEventLoop]:
    """A ``SelectorEventLoop`` on rawepoll's selector, shut down as ``asyncio.run`` does.

    An exception that reaches the loop's exception handler (a failing
    callback, a task's exception never retrieved) fails the test.
    """
    loop = asyncio.SelectorEventLoop(selector or rawepoll.EpollSelector())
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        yield loop
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
    assert errors == []


@pytest.fixture
def selector() -> rawepoll.EpollSelector:
    """The selector the ``loop`` fixture runs on (the loop closes it)."""
    return rawepoll.EpollSelector()


@pytest.fixture
def loop(selector: rawepoll.EpollSelector) -> Iterator[asyncio.AbstractEventLoop]:
    """A loop on ``selector``; afterwards every descriptor the test made is closed."""
    before = open_fds() - 1  # the selector's epoll fd is already open
    with epoll_loop(selector) as loop:
        yield loop
    assert selector.get_map() is None  # loop.close() closed the selector
    assert open_fds() == before


def run(loop: asyncio.AbstractEventLoop, coro: Awaitable[T]) -> T:
    return loop.run_until_complete(coro)


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# -- stream echo server ---------------------------------------------------


class EchoServer:
    """An ``asyncio.start_server`` handler that echoes until EOF; tracks its tasks."""

    def __init__(self) -> None:
        self.handlers: list[asyncio.Task[Any]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    async def finished(self) -> None:
        """Wait for every connection handler (they end when their client does)."""
        await asyncio.gather(*self.handlers)


async def echo_through(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, chunk: int
) -> bytes:
    """Send ``data`` in ``chunk``-sized writes, half-close, read the echo to EOF."""

    async def send() -> None:
        for start in range(0, len(data), chunk):
            writer.write(data[start : start + chunk])
            await writer.drain()
        writer.write_eof()

    try:
        _, received = await asyncio.gather(send(), reader.read())
    finally:
        writer.close()
        await writer.wait_closed()
    return received


async def tcp_echo_clients(host: str, payloads: list[bytes], chunk: int) -> list[bytes]:
    echo = EchoServer()
    server = await asyncio.start_server(echo.handle, host, 0)
    async with server:
        port = server.sockets[0].getsockname()[1]

        async def client(data: bytes) -> bytes:
            reader, writer = await asyncio.open_connection(host, port)
            # At most ~64 writes per client, however small the chunk.
            return await echo_through(reader, writer, data, max(chunk, len(data) // 64 + 1))

        echoed = await asyncio.gather(*(client(data) for data in payloads))
        await echo.finished()
    return list(echoed)


@settings(max_examples=5, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 100_000), min_size=50, max_size=50),
    chunk=st.integers(1, 65536),
    seed=st.integers(0, 2**32 - 1),
)
def test_tcp_echo_server_many_clients(sizes: list[int], chunk: int, seed: int) -> None:
    payloads = [payload(size, seed + i) for i, size in enumerate(sizes)]
    before = open_fds()
    with epoll_loop() as loop:
        echoed = run(loop, tcp_echo_clients("127.0.0.1", payloads, chunk))
    assert open_fds() == before
    assert len(echoed) == len(payloads)
    for got, sent in zip(echoed, payloads, strict=True):
        assert got == sent


def test_tcp_echo_large_payload(loop: asyncio.AbstractEventLoop) -> None:
    # Bigger than every socket buffer: both sides must wait for writability.
    data = payload(8 * 1024 * 1024, seed=1)
    assert run(loop, tcp_echo_clients("127.0.0.1", [data], 65536)) == [data]


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1)")
def test_tcp_echo_over_ipv6(loop: asyncio.AbstractEventLoop) -> None:
    payloads = [payload(size, seed=size) for size in (0, 1, 1000, 300_000)]
    assert run(loop, tcp_echo_clients("::1", payloads, 4096)) == payloads


def test_unix_socket_server(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    payloads = [payload(size, seed=size) for size in (0, 5, 70_000, 1_000_000)]

    async def main() -> list[bytes]:
        echo = EchoServer()
        server = await asyncio.start_unix_server(echo.handle, path)
        async with server:

            async def client(data: bytes) -> bytes:
                reader, writer = await asyncio.open_unix_connection(path)
                return await echo_through(reader, writer, data, 8192)

            echoed = await asyncio.gather(*(client(data) for data in payloads))
            await echo.finished()
        return list(echoed)

    assert run(loop, main()) == payloads


# -- protocols ----------------------------------------------------------


class EchoProtocol(asyncio.Protocol):
    """Echo every byte; close after the peer's EOF (returning None closes)."""

    def __init__(self, lost: list[asyncio.Future[None]]) -> None:
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lost.append(self.lost)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(None)


class Collector(asyncio.Protocol):
    """Collect everything received; resolve ``done`` with it when the connection ends."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def eof_received(self) -> None:
        self.eof = True

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self.done.set_result(b"".join(self.chunks))
        else:
            self.done.set_exception(exc)


def test_protocol_server(loop: asyncio.AbstractEventLoop) -> None:
    payloads = [payload(size, seed=size) for size in (1, 100, 65536, 65537, 2_000_000)] * 4

    async def main() -> tuple[list[bytes], list[bool], int]:
        lost: list[asyncio.Future[None]] = []
        server = await asyncio.get_running_loop().create_server(
            lambda: EchoProtocol(lost), "127.0.0.1", 0
        )
        async with server:
            port = server.sockets[0].getsockname()[1]

            async def client(data: bytes) -> tuple[bytes, bool]:
                transport, collector = await asyncio.get_running_loop().create_connection(
                    Collector, "127.0.0.1", port
                )
                transport.write(data)
                transport.write_eof()
                echoed = await collector.done
                return echoed, collector.eof

            results = await asyncio.gather(*(client(data) for data in payloads))
            await asyncio.gather(*lost)
        return [echoed for echoed, _ in results], [eof for _, eof in results], len(lost)

    echoed, eofs, connections = run(loop, main())
    assert echoed == payloads
    assert all(eofs)
    assert connections == len(payloads)


# -- loop.sock_* ----------------------------------------------------------


def test_sock_methods(loop: asyncio.AbstractEventLoop) -> None:
    data = payload(4 * 1024 * 1024, seed=2)

    async def main() -> tuple[bytes, bytes]:
        ev = asyncio.get_running_loop()
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener,
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client,
        ):
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            listener.setblocking(False)
            client.setblocking(False)
            accepting = asyncio.ensure_future(ev.sock_accept(listener))
            await ev.sock_connect(client, listener.getsockname())
            conn, address = await accepting
            with conn:
                assert address == client.getsockname()
                sending = asyncio.ensure_future(ev.sock_sendall(client, data))
                received = bytearray()
                while len(received) < len(data):
                    chunk = await ev.sock_recv(conn, 65536)
                    assert chunk
                    received += chunk
                await sending
                await ev.sock_sendall(conn, b"pong")
                conn.shutdown(socket.SHUT_WR)
                buffer = bytearray(16)
                reply = bytearray()
                while n := await ev.sock_recv_into(client, buffer):
                    reply += buffer[:n]
        return bytes(received), bytes(reply)

    received, reply = run(loop, main())
    assert received == data
    assert reply == b"pong"


# -- UDP ----------------------------------------------------------------


class DatagramEcho(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.transport.sendto(data, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


class DatagramClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes | Exception] = asyncio.Queue()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.received.put_nowait(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


def test_udp_round_trip(loop: asyncio.AbstractEventLoop) -> None:
    # No empty datagram: asyncio before 3.12 silently drops it in sendto().
    datagrams = [payload(size, seed=size) for size in (1, 512, 1472, 8192, 60_000)]

    async def main() -> tuple[list[bytes | Exception], tuple[str, int]]:
        ev = asyncio.get_running_loop()
        server_transport, server = await ev.create_datagram_endpoint(
            DatagramEcho, local_addr=("127.0.0.1", 0)
        )
        address = server_transport.get_extra_info("sockname")
        client_transport, client = await ev.create_datagram_endpoint(
            DatagramClient, remote_addr=address
        )
        replies = []
        try:
            for datagram in datagrams:  # one at a time: loopback does not drop these
                client_transport.sendto(datagram)
                replies.append(await client.received.get())
        finally:
            client_transport.close()
            server_transport.close()
            await asyncio.gather(client.closed, server.closed)
        return replies, address

    replies, address = run(loop, main())
    assert replies == datagrams
    assert address[0] == "127.0.0.1"


# -- subprocesses ---------------------------------------------------------


@pytest.mark.skipif(shutil.which("cat") is None, reason="needs cat")
def test_subprocess_cat_round_trip(loop: asyncio.AbstractEventLoop) -> None:
    data = payload(3 * 1024 * 1024, seed=3)  # more than a pipe holds, both ways

    async def main() -> tuple[bytes, int | None]:
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate(data)
        return out, proc.returncode

    out, returncode = run(loop, main())
    assert returncode == 0
    assert out == data


def test_subprocess_return_code_and_stderr(loop: asyncio.AbstractEventLoop) -> None:
    code = "import sys; sys.stdout.write('out'); sys.stderr.write('err'); sys.exit(3)"

    async def main() -> tuple[bytes, bytes, int]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        return out, err, await proc.wait()

    assert run(loop, main()) == (b"out", b"err", 3)


def test_subprocess_line_dialogue(loop: asyncio.AbstractEventLoop) -> None:
    code = "import sys\nfor line in sys.stdin:\n    print(line.upper(), end='', flush=True)"
    lines = [f"line {i}\n".encode() for i in range(20)]

    async def main() -> tuple[list[bytes], bytes, int]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        replies = []
        for line in lines:  # each reply awaited before the next line is sent
            proc.stdin.write(line)
            await proc.stdin.drain()
            replies.append(await proc.stdout.readline())
        proc.stdin.close()
        rest = await proc.stdout.read()
        return replies, rest, await proc.wait()

    replies, rest, returncode = run(loop, main())
    assert replies == [line.upper() for line in lines]
    assert rest == b""
    assert returncode == 0


@pytest.mark.skipif(shutil.which("cat") is None, reason="needs cat")
def test_subprocess_kill(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> int:
        proc = await asyncio.create_subprocess_exec("cat", stdin=asyncio.subprocess.PIPE)
        proc.kill()
        return await proc.wait()

    assert run(loop, main()) == -signal.SIGKILL


# -- timers -------------------------------------------------------------


def test_wait_for_times_out(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> asyncio.Future[None]:
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(never, 0.01)
        return never

    assert run(loop, main()).cancelled()


def test_timers_fire_in_deadline_order(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> list[object]:
        ev = asyncio.get_running_loop()
        order: list[object] = []
        done: asyncio.Future[None] = ev.create_future()
        ev.call_later(0.03, order.append, 3)
        ev.call_at(ev.time() + 0.02, order.append, 2)
        ev.call_later(0.01, order.append, 1)
        ev.call_later(-1, order.append, 0)
        ev.call_later(0.005, order.append, "cancelled").cancel()
        ev.call_later(0.04, done.set_result, None)
        await done
        return order

    assert run(loop, main()) == [0, 1, 2, 3]


def test_sleep_with_nothing_else_to_do(loop: asyncio.AbstractEventLoop) -> None:
    # The loop's only work is a timer: select() gets a positive timeout and
    # must come back from it (an empty list) rather than block forever.
    async def main() -> str:
        await asyncio.sleep(0.02)
        return "woke"

    assert run(loop, main()) == "woke"


# -- raw readers, writers, signals, threads ---------------------------------


def test_add_reader_and_remove_reader(
    loop: asyncio.AbstractEventLoop, selector: rawepoll.EpollSelector, sockpair: Pair
) -> None:
    a, b = sockpair
    other_a, other_b = socket.socketpair()

    async def main() -> tuple[list[bytes], bool, bool]:
        ev = asyncio.get_running_loop()
        received: list[bytes] = []
        first: asyncio.Future[None] = ev.create_future()

        def on_readable() -> None:
            received.append(a.recv(100))
            if not first.done():
                first.set_result(None)

        ev.add_reader(a, on_readable)
        assert selector.get_key(a).events == selectors.EVENT_READ
        b.send(b"hello")
        await first
        removed = ev.remove_reader(a)
        assert a.fileno() not in selector.get_map()
        removed_again = ev.remove_reader(a)
        # Data for a, which nobody watches now, and for another socket that
        # is watched: a select() that returns the second would return the first.
        b.send(b"unwatched")
        other_ready: asyncio.Future[bytes] = ev.create_future()
        ev.add_reader(other_a, lambda: other_ready.set_result(other_a.recv(100)))
        other_b.send(b"other")
        assert await other_ready == b"other"
        ev.remove_reader(other_a)
        return received, removed, removed_again

    with other_a, other_b:
        other_a.setblocking(False)
        received, removed, removed_again = run(loop, main())
    assert received == [b"hello"]
    assert removed is True
    assert removed_again is False
    assert a.recv(100) == b"unwatched"


def test_reader_and_writer_on_one_fd(
    loop: asyncio.AbstractEventLoop, selector: rawepoll.EpollSelector, sockpair: Pair
) -> None:
    a, b = sockpair
    read, write = selectors.EVENT_READ, selectors.EVENT_WRITE

    async def main() -> list[str]:
        ev = asyncio.get_running_loop()
        calls: list[str] = []
        writable: asyncio.Future[None] = ev.create_future()
        readable: asyncio.Future[None] = ev.create_future()

        def on_writable() -> None:
            calls.append("write")
            ev.remove_writer(a)  # modify(): READ | WRITE -> READ
            assert selector.get_key(a).events == read
            writable.set_result(None)

        def on_readable() -> None:
            calls.append("read")
            a.recv(100)
            readable.set_result(None)
            ev.remove_reader(a)

        ev.add_reader(a, on_readable)
        ev.add_writer(a, on_writable)
        assert selector.get_key(a).events == read | write
        await writable
        b.send(b"x")
        await readable
        assert a.fileno() not in selector.get_map()
        return calls

    assert run(loop, main()) == ["write", "read"]


def test_call_soon_threadsafe_wakes_a_blocked_loop(loop: asyncio.AbstractEventLoop) -> None:
    tid = threading.get_native_id()

    def wake(future: asyncio.Future[int]) -> None:
        wait_until_in_epoll_wait(tid)  # the loop sleeps in select(None)
        loop.call_soon_threadsafe(future.set_result, 42)

    async def main() -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        thread = threading.Thread(target=wake, args=(future,))
        thread.start()
        try:
            return await future
        finally:
            thread.join()

    assert run(loop, main()) == 42


def test_run_in_executor(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> list[int]:
        ev = asyncio.get_running_loop()
        return list(await asyncio.gather(*(ev.run_in_executor(None, pow, i, 2) for i in range(8))))

    assert run(loop, main()) == [i * i for i in range(8)]


def test_signal_handler(loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> int:
        ev = asyncio.get_running_loop()
        got: asyncio.Future[int] = ev.create_future()
        ev.add_signal_handler(signal.SIGUSR1, got.set_result, signal.SIGUSR1)
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            return await got
        finally:
            assert ev.remove_signal_handler(signal.SIGUSR1)

    assert run(loop, main()) == signal.SIGUSR1


# -- shutdown -------------------------------------------------------------


def test_loop_close_closes_the_selector() -> None:
    before = open_fds()
    selector = rawepoll.EpollSelector()
    epfd = selector.fileno()
    assert os.readlink(f"/proc/self/fd/{epfd}") == "anon_inode:[eventpoll]"
    loop = asyncio.SelectorEventLoop(selector)
    try:
        echoed = run(loop, tcp_echo_clients("127.0.0.1", [b"bye"] * 3, 1))
        # The loop's self-pipe is registered with our selector.
        assert len(selector.get_map()) >= 1
        assert open_fds() > before
    finally:
        loop.close()
    assert echoed == [b"bye"] * 3
    assert loop.is_closed()
    assert selector.get_map() is None
    with pytest.raises(ValueError):
        selector.fileno()
    assert open_fds() == before


def test_many_loops_in_turn_leak_nothing() -> None:
    before = open_fds()
    for _ in range(20):
        with epoll_loop() as loop:
            assert run(loop, tcp_echo_clients("127.0.0.1", [b"x" * 100], 7)) == [b"x" * 100]
    assert open_fds() == before
