"""``rawepoll bench`` against servers that echo wrong, on purpose: it must notice.

Each server (see :class:`conftest.BrokenServer`) reads whole 64-byte messages
and spoils message 3 of every connection -- after message 0 (the ramp's) and
two measured ones -- in one way.  The load generator must count mismatches or
errors, name the problem, and exit with status 1.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support.loadgen import SIZE, BrokenServer, Mangle, bench

pytestmark = pytest.mark.timeout(90)

SPOILED = 3  # the message index each server spoils


def _when_spoiled(spoil: Callable[[BrokenServer, int, bytes], tuple[bytes, bool]]) -> Mangle:
    """Echo every message as it came, but message ``SPOILED`` through ``spoil``."""

    def mangle(server: BrokenServer, conn: int, index: int, message: bytes) -> tuple[bytes, bool]:
        if index != SPOILED:
            return message, False
        return spoil(server, conn, message)

    return mangle


def corrupt(server: BrokenServer, conn: int, message: bytes) -> tuple[bytes, bool]:
    """One bit of one body byte flipped."""
    spoiled = bytearray(message)
    spoiled[40] ^= 0x01
    return bytes(spoiled), False


def truncate(server: BrokenServer, conn: int, message: bytes) -> tuple[bytes, bool]:
    """The last byte dropped, then the connection closed."""
    return message[:-1], True


def reorder(server: BrokenServer, conn: int, message: bytes) -> tuple[bytes, bool]:
    """Two 8-byte chunks of the body swapped."""
    return message[:16] + message[24:32] + message[16:24] + message[32:], False


def cross_talk(server: BrokenServer, conn: int, message: bytes) -> tuple[bytes, bool]:
    """Another connection's last message instead of this one's."""
    with server.lock:
        others = [sent for index, sent in server.last.items() if index != conn]
    return (others[-1] if others else message), False


def duplicate(server: BrokenServer, conn: int, message: bytes) -> tuple[bytes, bool]:
    """The message echoed twice."""
    return message * 2, False


def drop_header_byte(server: BrokenServer, conn: int, message: bytes) -> tuple[bytes, bool]:
    """One header byte lost in the middle; the stream goes on shifted."""
    return message[:5] + message[6:], False


@pytest.mark.parametrize(
    ("spoil", "expect"),
    [
        (corrupt, "mismatches"),
        (truncate, "errors"),
        (reorder, "mismatches"),
        (cross_talk, "mismatches"),
        (duplicate, "mismatches"),
        (drop_header_byte, "mismatches"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
@pytest.mark.parametrize("procs", [1, 2])
def test_spoiled_echo_is_caught(
    broken_server: Callable[[Mangle], BrokenServer],
    spoil: Callable[[BrokenServer, int, bytes], tuple[bytes, bool]],
    expect: str,
    procs: int,
) -> None:
    """Every connection gets a spoiled echo: each one is counted, the exit status is 1."""
    server = broken_server(_when_spoiled(spoil))
    conns = 8
    run = bench(
        "--port", str(server.port), "--conns", str(conns), "--procs", str(procs),
        "--size", str(SIZE), "--messages", "400", "--json",
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    result = run.json()
    assert result["established"] == conns  # message 0 was fine everywhere
    assert result[expect] == conns, result
    assert result["errors"] + result["mismatches"] == conns  # each connection closed once
    assert result["problems"], result
    assert "connection" in run.stderr


def test_cross_talk_names_the_other_connection(
    broken_server: Callable[[Mangle], BrokenServer],
) -> None:
    """A mismatch from another connection's bytes says whose header it carries."""
    server = broken_server(_when_spoiled(cross_talk))
    run = bench("--port", str(server.port), "--conns", "4", "--messages", "100", "--json")
    assert run.returncode == 1
    assert "its header says connection" in run.stderr, run.stderr


def test_pipelined_corruption_is_caught(broken_server: Callable[[Mangle], BrokenServer]) -> None:
    """With several messages in flight the stream still lines up, and a flipped bit shows."""
    server = broken_server(_when_spoiled(corrupt))
    run = bench(
        "--port", str(server.port), "--conns", "6", "--pipeline", "4",
        "--messages", "400", "--json",
    )  # fmt: skip
    assert run.returncode == 1
    assert run.json()["mismatches"] == 6


def test_honest_threaded_server_passes(broken_server: Callable[[Mangle], BrokenServer]) -> None:
    """The same test server without spoiling: clean run, exit 0 (the harness is not the cause)."""
    server = broken_server(lambda server, conn, index, message: (message, False))
    run = bench("--port", str(server.port), "--conns", "8", "--messages", "400", "--json")
    assert run.returncode == 0, run.stderr
    result = run.json()
    assert result["errors"] == result["mismatches"] == 0
    assert result["messages"] == 400


def stall(server: BrokenServer, conn: int, message: bytes) -> tuple[bytes, bool]:
    """Nothing back, and the connection left open: only the stall timeout can end it."""
    return b"", False


@pytest.mark.slow
def test_stalled_connections_time_out(broken_server: Callable[[Mangle], BrokenServer]) -> None:
    """A server that stops echoing: each connection is an error after the 10 s stall bound."""
    server = broken_server(_when_spoiled(stall))
    run = bench("--port", str(server.port), "--conns", "3", "--duration", "30", "--json")
    assert run.returncode == 1
    result = run.json()
    assert result["errors"] == 3, result
    assert "no echo for 10 s" in run.stderr
