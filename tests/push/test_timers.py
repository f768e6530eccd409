"""Timers: ``call_later`` fires once, ``call_every`` periodically, ``cancel`` stops both.

Over a real server, :class:`~.push_handlers.TimerCommands` lets a client start and cancel the
worker's timers, which send to the client.  "Nothing after the cancel" is decided by what the
client receives, not by waiting long enough: after a cancel the client schedules a *marker*
(a ``call_later`` due several periods later) and reads until it fires.  Timers of one worker fire
in the order they are due, and a periodic timer is due again well before the marker, so a tick
that should not come would come first.

Below, without sockets: :class:`~rawepoll.server.timers.TimerWheel` against a model, over
random ``call_later``/``call_every``/``cancel`` and clock advances: a timer fires at the first
advance that reaches its time -- never early, never twice in one advance -- as many times as it
should; a cancelled one never again; and the wheel's next deadline never sleeps past a due timer.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.children import REPO_ROOT, python_env
from support.clients import read_until_closed
from support.counters import stop_quietly
from support.servers import Server

from rawepoll.server.timers import Timer, TimerWheel
from rawepoll.tools.serverproc import serve_argv

pytestmark = pytest.mark.timeout(120)

TESTS_DIR = str(Path(REPO_ROOT) / "tests")
HANDLER = "push.push_handlers:TimerCommands"
PERIOD = 0.03
BOUND = 10.0  # any one client read


@pytest.fixture(scope="module", params=["lt", "et"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    argv = serve_argv("--port", "0", "--handler", HANDLER, "--mode", request.param)
    started = Server([*argv, "--drain-timeout", "2"], env=python_env(TESTS_DIR))
    yield started
    stop_quietly(started)


class Client:
    def __init__(self, server: Server) -> None:
        self.sock = server.connect(bound=BOUND)
        self.buffer = b""

    def line(self) -> str:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, f"closed after {self.buffer!r}"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def send(self, commands: str) -> None:
        """One write: lines sent together are handled in one call, in order."""
        self.sock.sendall(commands.encode() + b"\n")

    def until(self, last: str, limit: int = 1000) -> list[str]:
        """Every line up to and including ``last`` (at most ``limit``)."""
        lines = []
        for _ in range(limit):
            lines.append(self.line())
            if lines[-1] == last:
                return lines
        raise AssertionError(f"no {last!r} in {limit} lines")

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)
        rest, how = read_until_closed(self.sock, BOUND)
        assert (self.buffer + rest, how) == (b"", "eof"), rest
        self.sock.close()


def test_call_later_fires_once(server: Server) -> None:
    client = Client(server)
    client.send(f"LATER once {PERIOD}\nLATER marker {PERIOD * 8}")  # one read: both at once
    assert client.until("fired marker") == ["OK once", "OK marker", "fired once", "fired marker"]
    client.close()


def test_call_every_ticks_until_cancelled(server: Server) -> None:
    """Ticks 1, 2, 3... in order; after CANCELLED, a marker due several periods later comes
    with no tick before it."""
    client = Client(server)
    client.send(f"EVERY t {PERIOD}")
    assert client.until("tick t 3") == ["OK t", "tick t 1", "tick t 2", "tick t 3"]
    client.send("CANCEL t")
    before = client.until("CANCELLED t")
    assert before[:-1] == [f"tick t {k}" for k in range(4, 4 + len(before) - 1)]
    client.send(f"LATER marker {PERIOD * 5}")
    assert client.until("fired marker") == ["OK marker", "fired marker"]
    client.close()


def test_cancel_stops_a_call_later(server: Server) -> None:
    client = Client(server)
    client.send(f"LATER doomed {PERIOD * 3}\nCANCEL doomed\nLATER marker {PERIOD * 8}")
    assert client.until("fired marker") == [
        "OK doomed",
        "CANCELLED doomed",
        "OK marker",
        "fired marker",
    ]
    client.close()


def test_timers_of_several_connections_run_side_by_side(server: Server) -> None:
    """Two clients, a periodic timer each; one cancels, the other goes on ticking."""
    one, two = Client(server), Client(server)
    one.send(f"EVERY a {PERIOD}")
    two.send(f"EVERY b {PERIOD}")
    assert one.until("tick a 2")[0] == "OK a"
    assert two.until("tick b 2")[0] == "OK b"
    one.send("CANCEL a")
    one.until("CANCELLED a")
    one.send(f"LATER marker {PERIOD * 5}")
    assert one.until("fired marker") == ["OK marker", "fired marker"]
    assert two.until("tick b 6")[-1] == "tick b 6"
    two.send("CANCEL b")
    two.until("CANCELLED b")
    one.close()
    two.close()


# ---------------------------------------------------------------- TimerWheel, no sockets

# Exact binary fractions: a tick of 1/16 s, delays in quarters of a tick, the clock advanced
# by whole ticks -- no rounding anywhere, so the model can say exactly when a timer is due.
TICK = 1 / 16
QUARTER = TICK / 4


@dataclass
class Expected:
    """What the model knows of one timer."""

    timer: Timer
    when: float  # its next time
    after: float  # it cannot fire at a clock reading at or before this (already processed)
    interval: float | None
    fired: int = 0
    cancelled: bool = False

    def due(self, now: float) -> bool:
        return not self.cancelled and now >= self.when and now > self.after

    @property
    def tick(self) -> int:
        """The tick it fires in: its time's, or the one after the last processed."""
        return max(math.ceil(self.when / TICK), round(self.after / TICK) + 1)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("later"), st.integers(0, 200)),  # delay in quarters of a tick
        st.tuples(st.just("every"), st.integers(1, 120)),  # interval in quarters of a tick
        st.tuples(st.just("cancel"), st.integers(0, 99)),
        st.tuples(st.just("advance"), st.integers(0, 40)),  # whole ticks, 0 included
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(slots=st.sampled_from([1, 2, 3, 8, 4096]), origin=st.sampled_from([0.0, 1000.0]), plan=steps)
def test_the_timer_wheel_fires_each_timer_when_due(
    slots: int, origin: float, plan: list[tuple[str, int]]
) -> None:
    wheel = TimerWheel(origin, tick=TICK, slots=slots)
    now = last = origin
    timers: list[Expected] = []
    for kind, value in [*plan, ("advance", 300)]:
        if kind == "later":
            timer = wheel.call_later(now, value * QUARTER, lambda: None)
            timers.append(Expected(timer, now + value * QUARTER, last, None))
        elif kind == "every":
            timer = wheel.call_every(now, value * QUARTER, lambda: None)
            timers.append(Expected(timer, now + value * QUARTER, last, value * QUARTER))
        elif kind == "cancel" and timers:
            expected = timers[value % len(timers)]
            expected.timer.cancel()
            expected.cancelled = True
        elif kind == "advance":
            now += value * TICK
            fired = wheel.due(now)
            check_advance(timers, fired, now)
            last = now
        check_deadline(wheel, timers, last)
    for expected in timers:
        if expected.interval is None and not expected.cancelled:
            assert expected.fired == 1  # the last advance is past every one-shot's time


def check_advance(timers: list[Expected], fired: list[Timer], now: float) -> None:
    """Exactly the timers the model says are due fire, once each, tick by tick (within one
    tick, a wheel keeps no finer order)."""
    by_timer = {id(e.timer): e for e in timers}
    due = [e for e in timers if e.due(now)]
    assert sorted(map(id, fired)) == sorted(id(e.timer) for e in due)
    ticks = [by_timer[id(timer)].tick for timer in fired]
    assert ticks == sorted(ticks)
    for expected in due:
        expected.fired += 1
        expected.after = now
        if expected.interval is None:
            expected.cancelled = True  # done: never again
        else:
            expected.when += expected.interval  # from its time, not from now: no drift


def check_deadline(wheel: TimerWheel, timers: list[Expected], last: float) -> None:
    """Sleeping until ``next_deadline`` never passes a timer's time (nor the tick after the
    last one processed, where an overdue timer fires)."""
    live = [e for e in timers if not e.cancelled]
    deadline = wheel.next_deadline()
    if not live:
        return
    assert deadline is not None and deadline > last
    earliest = min(max(e.when, e.after + TICK) for e in live)
    assert deadline <= math.ceil(earliest / TICK) * TICK
