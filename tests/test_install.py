"""``rawepoll.install()``, ``rawepoll.run()``, ``new_event_loop()`` and ``EventLoopPolicy``.

Real asyncio TCP servers and clients on 127.0.0.1 (port 0), written as any
asyncio program is, with nothing rawepoll-specific in them: each asserts from
inside that the running loop's selector *is* a ``rawepoll.EpollSelector``
(``selectors.EpollSelector`` would pass the same echo tests), then echoes
bytes and checks every one.  The policy is restored after each test, and a
fresh interpreter shows that ``install()`` changes what an unchanged
``asyncio.run()`` runs on.

Completion is signalled by EOF and awaited handlers, never by the clock;
``pytest-timeout`` bounds each test.  Everything opened is closed before the
loop is (``filterwarnings = error`` turns a leaked transport into a failure).
"""

from __future__ import annotations

import asyncio
import random
import selectors
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.children import run_python
from support.fds import open_fds

import rawepoll
from rawepoll import _asyncio

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(autouse=True)
def restore_policy() -> Iterator[None]:
    """Whatever a test does to asyncio's policy is undone afterwards."""
    saved = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(saved)


def running_selector() -> selectors.BaseSelector:
    """The selector under the running loop (``SelectorEventLoop`` keeps it in ``_selector``)."""
    selector: selectors.BaseSelector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    return selector


async def echo_session(payloads: list[bytes]) -> list[bytes]:
    """A streams echo server and one client on loopback; what came back, chunk by chunk.

    The client sends each payload and reads it back in full before the next,
    then half-closes; the server echoes until EOF and closes.  Every stream is
    closed and every handler finished before this returns.
    """
    assert type(running_selector()) is rawepoll.EpollSelector
    handlers: list[asyncio.Task[None]] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.ensure_future(echo(reader, writer)))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            echoed = []
            for payload in payloads:
                writer.write(payload)
                await writer.drain()
                echoed.append(await reader.readexactly(len(payload)))
            writer.write_eof()
            assert await reader.read() == b""  # the server closes after our EOF
        finally:
            writer.close()
            await writer.wait_closed()
        await asyncio.gather(*handlers)
    finally:
        server.close()
        await server.wait_closed()
    return echoed


def asyncio_run_after_install(main: Coroutine[Any, Any, T]) -> T:
    rawepoll.install()
    return asyncio.run(main)


RUNNERS: dict[str, Runner] = {
    "rawepoll.run": rawepoll.run,
    "install+asyncio.run": asyncio_run_after_install,
    "3.10-fallback": lambda main: _asyncio._run_without_runner(main, None),
}


def large_payloads() -> st.SearchStrategy[bytes]:
    """Random bytes beyond the socket buffers (drawn as size and seed: hypothesis limits data)."""
    return st.builds(
        lambda size, seed: random.Random(seed).randbytes(size),
        st.integers(60_000, 400_000),
        st.integers(0, 2**32 - 1),
    )


@pytest.fixture(params=list(RUNNERS))
def runner(request: pytest.FixtureRequest) -> Runner:
    """Each way to run a coroutine on rawepoll in turn."""
    return RUNNERS[request.param]


# ---------------------------------------------------------------- the loop and the policy


def test_new_event_loop_is_a_selector_loop_on_rawepoll() -> None:
    loop = rawepoll.new_event_loop()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert type(loop._selector) is rawepoll.EpollSelector  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_loop_close_closes_the_epoll_descriptor() -> None:
    before = open_fds()
    loop = rawepoll.new_event_loop()
    assert open_fds() > before
    loop.close()
    assert open_fds() == before


def test_install_sets_the_policy_and_its_loops_run_on_rawepoll() -> None:
    rawepoll.install()
    policy = asyncio.get_event_loop_policy()
    assert isinstance(policy, rawepoll.EventLoopPolicy)
    loop = asyncio.new_event_loop()
    try:
        assert type(loop._selector) is rawepoll.EpollSelector  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_the_policy_is_the_default_one_but_for_the_selector() -> None:
    policy = rawepoll.EventLoopPolicy()
    assert isinstance(policy, asyncio.DefaultEventLoopPolicy)
    loop = policy.new_event_loop()
    try:
        policy.set_event_loop(loop)
        assert policy.get_event_loop() is loop
    finally:
        policy.set_event_loop(None)
        loop.close()


def test_run_leaves_the_policy_alone() -> None:
    before = asyncio.get_event_loop_policy()

    async def main() -> bool:
        return type(running_selector()) is rawepoll.EpollSelector

    assert rawepoll.run(main()) is True
    assert asyncio.get_event_loop_policy() is before
    assert not isinstance(before, rawepoll.EventLoopPolicy)


def test_names_are_public() -> None:
    for name in ("EventLoopPolicy", "install", "new_event_loop", "run"):
        assert name in rawepoll.__all__
        assert getattr(rawepoll, name) is getattr(_asyncio, name)


# ---------------------------------------------------------------- echo over TCP


def test_tcp_echo(runner: Runner) -> None:
    payloads = [b"hello", b"\x00" * 100_000, b"\xff", b"end"]
    assert runner(echo_session(payloads)) == payloads


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payloads=st.lists(st.binary(min_size=1, max_size=2048) | large_payloads(), max_size=6))
def test_tcp_echo_any_payloads(runner: Runner, payloads: list[bytes]) -> None:
    assert runner(echo_session(payloads)) == payloads


def test_many_clients_at_once(runner: Runner) -> None:
    async def main() -> None:
        results = await asyncio.gather(
            *(echo_session([bytes([i]) * (i * 997 + 1)]) for i in range(20))
        )
        assert results == [[bytes([i]) * (i * 997 + 1)] for i in range(20)]

    runner(main())


def test_subprocess_pipes(runner: Runner) -> None:
    """Child processes need the child watcher the default Unix policy brings (3.10-3.13)."""

    async def main() -> bytes:
        assert type(running_selector()) is rawepoll.EpollSelector
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; sys.stdout.write(sys.stdin.read().upper())",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(b"through a pipe")
        assert proc.returncode == 0
        return out

    assert runner(main()) == b"THROUGH A PIPE"


# ---------------------------------------------------------------- run()


def test_run_returns_and_raises_what_main_does(runner: Runner) -> None:
    async def answer() -> int:
        return 42

    async def fail() -> None:
        raise LookupError("from main")

    assert runner(answer()) == 42
    with pytest.raises(LookupError, match="from main"):
        runner(fail())


def test_run_cancels_leftover_tasks_and_closes_everything(runner: Runner) -> None:
    before = open_fds()
    seen: dict[str, Any] = {}

    async def main() -> None:
        seen["loop"] = asyncio.get_running_loop()
        seen["task"] = asyncio.ensure_future(asyncio.Event().wait())  # never set
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        try:
            await seen["loop"].sock_sendall(a, b"x")
            assert await seen["loop"].sock_recv(b, 1) == b"x"
        finally:
            a.close()
            b.close()

    runner(main())
    assert seen["task"].cancelled()
    assert seen["loop"].is_closed()
    assert open_fds() == before


def test_run_debug() -> None:
    async def debug() -> bool:
        return asyncio.get_running_loop().get_debug()

    assert rawepoll.run(debug(), debug=True) is True
    assert _asyncio._run_without_runner(debug(), True) is True


@pytest.mark.parametrize(
    "run", [rawepoll.run, lambda main: _asyncio._run_without_runner(main, None)]
)
def test_run_refuses_a_running_loop_and_a_non_coroutine(run: Runner) -> None:
    async def inner() -> None:
        pass

    async def outer() -> None:
        coroutine = inner()
        try:
            with pytest.raises(RuntimeError):
                run(coroutine)
        finally:
            coroutine.close()

    rawepoll.run(outer())
    with pytest.raises(ValueError):
        run(42)  # type: ignore[arg-type]


# ---------------------------------------------------------------- a fresh interpreter

WHICH_SELECTOR = """
import asyncio, socket, sys, warnings
warnings.simplefilter("error")
import rawepoll
if sys.argv[1] == "install":
    rawepoll.install()

async def main():
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        await loop.sock_sendall(a, b"x")
        assert await loop.sock_recv(b, 1) == b"x"
    selector = loop._selector
    return f"{type(selector).__module__}.{type(selector).__qualname__}"

print(asyncio.run(main()))
"""


@pytest.mark.parametrize(
    ("argument", "expected"),
    [("install", "rawepoll.selector.EpollSelector"), ("no", "selectors.EpollSelector")],
)
def test_install_makes_plain_asyncio_run_use_rawepoll(argument: str, expected: str) -> None:
    result = run_python(WHICH_SELECTOR, argument, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
