"""EINTR: what each layer does when a signal interrupts ``epoll_wait``.

* The Go mirror (``rawepoll.unix.EpollWait``) hands EINTR back as Go does:
  ``InterruptedError``, after running the Python handlers.
* ``Epoll.poll`` and ``Epoll.wait`` follow PEP 475 like ``select.epoll.poll``:
  run the handlers, retry with the time left until the original deadline,
  return ``[]``/0 once it has passed.
* A handler's exception propagates out of every layer instead.

A helper thread sends SIGUSR1 to the main thread (``signal.pthread_kill``) only
while ``/proc`` shows the main thread asleep in epoll_wait, and waits for the
handler to run before the next one, so every signal is a real EINTR.  Nothing
waits on the clock except generous liveness bounds.  (SIGALRM is left to
pytest-timeout.)
"""

from __future__ import annotations

import errno
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.proc import epoll_wait_args, in_epoll_wait

import rawepoll
from rawepoll import EPOLLIN, EventArray
from rawepoll._ffi import check_signals
from rawepoll.unix import EpollEvent, EpollPwait, EpollWait

pytestmark = pytest.mark.timeout(60)

SIGNAL = signal.SIGUSR1
BOUND = 20.0  # seconds: a liveness bound for the helper, far above any expected run


class BoomError(Exception):
    """Raised by the signal handler."""


class Handler:
    """A Python signal handler that counts its calls and can raise once."""

    def __init__(self) -> None:
        self.calls = 0
        self.raise_once: BaseException | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.calls += 1
        error, self.raise_once = self.raise_once, None
        if error is not None:
            raise error


@pytest.fixture
def handler() -> Iterator[Handler]:
    """SIGUSR1 -> a counting handler, restored afterwards (pending signals run first)."""
    assert threading.current_thread() is threading.main_thread()
    installed = Handler()
    previous = signal.signal(SIGNAL, installed)
    try:
        yield installed
    finally:
        check_signals()  # a signal still pending must reach our handler, not the default
        signal.signal(SIGNAL, previous)


class Interrupter(threading.Thread):
    """Interrupt the main thread's epoll_wait ``signals`` times (None: until stopped).

    Each signal goes out only while the main thread sleeps in epoll_wait (after
    ``pause`` seconds there, so that time has visibly passed), and the next only
    after the handler has run.  Each time the thread is found in epoll_wait,
    the call's arguments are kept in ``seen``.  After the last signal, once the
    wait has resumed, ``then()`` runs (e.g. a write that ends it).  ``gave_up``
    tells whether the liveness bound was hit.
    """

    def __init__(
        self,
        handler: Handler,
        signals: int | None,
        then: Callable[[], Any] | None = None,
        pause: float = 0.0,
    ) -> None:
        super().__init__(daemon=True)
        self.handler = handler
        self.signals = signals
        self.then = then
        self.pause = pause
        self.stop = threading.Event()
        self.sent = 0
        self.seen: list[tuple[int, int, int] | None] = []
        self.gave_up = False
        self.target_tid = threading.main_thread().native_id
        self.target_ident = threading.main_thread().ident

    def _until(self, condition: Callable[[], bool], deadline: float) -> bool:
        while not condition():
            if self.stop.is_set():
                return False
            if time.monotonic() > deadline:
                self.gave_up = True
                return False
            self.stop.wait(0.001)
        return True

    def run(self) -> None:
        assert self.target_tid is not None
        assert self.target_ident is not None
        tid, ident = self.target_tid, self.target_ident
        deadline = time.monotonic() + BOUND
        while True:
            if not self._until(lambda: in_epoll_wait(tid), deadline):
                return
            self.seen.append(epoll_wait_args(tid))
            if self.signals is not None and self.sent >= self.signals:
                break
            if self.pause:
                self.stop.wait(self.pause)
            before = self.handler.calls
            signal.pthread_kill(ident, SIGNAL)
            self.sent += 1
            if not self._until(lambda before=before: self.handler.calls > before, deadline):
                return
        if self.then is not None:
            self.then()

    def __enter__(self) -> Interrupter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.join(BOUND)
        assert not self.is_alive()


# -- the Go mirror: EINTR is the caller's ------------------------------------------------


@pytest.mark.parametrize(
    "buffer", [EventArray(4), (EpollEvent * 4)()], ids=["EventArray", "ctypes"]
)
def test_epoll_wait_raises_interrupted(handler: Handler, buffer: Any) -> None:
    """``EpollWait(epfd, events, -1)`` raises InterruptedError, as Go returns EINTR."""
    with (
        rawepoll.Epoll() as ep,
        Interrupter(handler, signals=1) as helper,
        pytest.raises(InterruptedError),
    ):
        EpollWait(ep.fileno(), buffer, -1)
    assert helper.sent == 1
    assert handler.calls >= 1  # the handler ran before the exception was raised
    assert not helper.gave_up


def test_epoll_pwait_raises_interrupted(handler: Handler) -> None:
    """``EpollPwait`` with no signal mask: InterruptedError as well."""
    with (
        rawepoll.Epoll() as ep,
        Interrupter(handler, signals=1) as helper,
        pytest.raises(InterruptedError),
    ):
        EpollPwait(ep.fileno(), EventArray(2), -1, None)
    assert handler.calls >= 1
    assert not helper.gave_up


def test_epoll_wait_handler_exception_wins(handler: Handler) -> None:
    """A handler that raises: its exception comes out of ``EpollWait``, not InterruptedError."""
    handler.raise_once = BoomError()
    with (
        rawepoll.Epoll() as ep,
        Interrupter(handler, signals=1) as helper,
        pytest.raises(BoomError),
    ):
        EpollWait(ep.fileno(), EventArray(4), -1)
    assert handler.calls >= 1
    assert not helper.gave_up


# -- poll / wait: PEP 475 retries ------------------------------------------------------------


def poll_call(ep: Any, method: str, timeout: float | None) -> Callable[[], list[tuple[int, int]]]:
    """``ep.poll(timeout)``, or ``ep.wait`` into a fresh EventArray read back as a list."""
    if method == "poll":
        return lambda: ep.poll(timeout)
    events = EventArray(8)
    return lambda: list(events.ready(ep.wait(events, timeout)))


METHODS = [
    pytest.param(select.epoll, "poll", id="select.epoll.poll"),
    pytest.param(rawepoll.Epoll, "poll", id="rawepoll.Epoll.poll"),
    pytest.param(rawepoll.Epoll, "wait", id="rawepoll.Epoll.wait"),
]


@pytest.mark.parametrize(("cls", "method"), METHODS)
@pytest.mark.parametrize("timeout", [None, -1, 3600.0], ids=["None", "-1", "3600.0"])
def test_poll_retries_after_handler(
    handler: Handler,
    sockpair: tuple[socket.socket, socket.socket],
    cls: Any,
    method: str,
    timeout: float | None,
) -> None:
    """Three EINTRs later the wait is still on, and returns the data that finally arrives."""
    a, b = sockpair
    with cls() as ep:
        ep.register(a, EPOLLIN)
        call = poll_call(ep, method, timeout)
        with Interrupter(handler, signals=3, then=lambda: b.send(b"x")) as helper:
            result = call()
    assert result == [(a.fileno(), EPOLLIN)]
    assert helper.sent == 3
    assert handler.calls >= 3
    assert not helper.gave_up


@pytest.mark.parametrize(("cls", "method"), METHODS)
@pytest.mark.parametrize("case", [(None, -1), (-1, -1), (3600.0, 3_600_000)], ids=str)
def test_retry_waits_only_the_time_left(
    handler: Handler,
    sockpair: tuple[socket.socket, socket.socket],
    cls: Any,
    method: str,
    case: tuple[float | None, int],
) -> None:
    """After EINTR the wait resumes with the time left to the deadline, as the kernel sees it.

    Read from ``/proc``: the first epoll_wait asks for the whole timeout, each
    retry for less (time has passed); with no timeout every retry blocks (-1).
    """
    timeout, ms = case  # the timeout and the milliseconds it first asks the kernel for
    a, b = sockpair
    with cls() as ep:
        ep.register(a, EPOLLIN)
        call = poll_call(ep, method, timeout)
        with Interrupter(handler, signals=2, then=lambda: b.send(b"x"), pause=0.005) as helper:
            result = call()
    assert result == [(a.fileno(), EPOLLIN)]
    assert not helper.gave_up
    asked = [args[2] for args in helper.seen if args is not None]
    assert len(asked) == 3
    assert asked[0] == ms
    if ms < 0:
        assert asked == [-1, -1, -1]
    else:
        assert 0 < asked[2] < asked[1] < asked[0]


@pytest.mark.parametrize(("cls", "method"), METHODS)
def test_poll_timeout_survives_signal_storm(
    handler: Handler, sockpair: tuple[socket.socket, socket.socket], cls: Any, method: str
) -> None:
    """Signals all along a finite wait: it still ends, with nothing, at the original deadline.

    The helper interrupts every time it finds the thread back in epoll_wait; a
    retry that restarted the full timeout would never end (the helper would hit
    its bound, which fails the test).
    """
    a, _ = sockpair
    with cls() as ep:
        ep.register(a, EPOLLIN)
        call = poll_call(ep, method, 0.5)
        with Interrupter(handler, signals=None) as helper:
            result = call()
    assert result == []
    assert handler.calls >= 1
    assert not helper.gave_up


@pytest.mark.parametrize(("cls", "method"), METHODS)
def test_poll_handler_exception_propagates(handler: Handler, cls: Any, method: str) -> None:
    """A handler's exception ends ``poll``/``wait`` (PEP 475: no retry then)."""
    handler.raise_once = BoomError()
    with cls() as ep:
        call = poll_call(ep, method, None)
        with Interrupter(handler, signals=None) as helper, pytest.raises(BoomError):
            call()
    assert handler.calls >= 1
    assert not helper.gave_up


@pytest.mark.parametrize(("cls", "method"), METHODS)
def test_handler_closing_the_epoll(handler: Handler, cls: Any, method: str) -> None:
    """A handler that closes the object: the retried epoll_wait fails with EBADF (OSError).

    That is what ``select.epoll.poll`` does (it retries on the closed descriptor -1).
    """
    ep = cls()
    call = poll_call(ep, method, None)
    closing = Handler()

    def close_it(signum: int, frame: Any) -> None:
        handler(signum, frame)
        closing(signum, frame)
        ep.close()

    signal.signal(SIGNAL, close_it)
    with Interrupter(handler, signals=1) as helper, pytest.raises(OSError) as info:
        call()
    assert type(info.value) is OSError
    assert info.value.errno == errno.EBADF
    assert ep.closed
    assert closing.calls == 1
    assert not helper.gave_up
