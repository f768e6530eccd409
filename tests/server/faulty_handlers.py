"""Handlers that fail on purpose: loaded by ``rawepoll serve --handler server.faulty_handlers:X``
(with ``tests/`` on ``PYTHONPATH``) for the tests of "user code cannot take the server down".

They echo, and they decide to fail from the bytes they are given: a chunk that starts with one
of the commands below does what the command says instead of being echoed.  The tests send each
command as a chunk of its own and wait for its answer first, so a command is never glued to the
bytes before it.

====================  =======================================================================
``!raise``            ``data_received`` raises ``ValueError``
``!int`` ``!str``     ``data_received`` returns a wrong type: ``42``, ``"text"``, ``[1, 2]``,
``!list`` ``!zero``   ``0``
``!eof-raise``...     (per connection, or with a handle) echoed; ``eof_received`` will then
                      raise (``!eof-raise``) or return the wrong type (``!eof-int``...)
``!sleep``            blocks the worker for :data:`SLEEP_S` seconds, then echoes
``!fatal``            raises :class:`Fatal`, a ``BaseException`` (neither
                      ``KeyboardInterrupt`` nor ``SystemExit``): a fault like any other
====================  =======================================================================

A per-connection handler's constructor fails when it is *armed*: the test creates the file
named by ``$FAULTY_ARM`` just before the one connection whose handler must fail to build sends
its first bytes, and the next construction in any worker consumes it (``unlink`` succeeds for
one process only).  A constructor is never told which connection it builds for, so the bytes
cannot decide.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from rawepoll.server.handler import Output
from rawepoll.server.push import Connection, Hub

ARM_ENV = "FAULTY_ARM"
SLEEP_S = 0.4

# What each command makes data_received (or eof_received) return instead of bytes.
WRONG: dict[bytes, object] = {b"!int": 42, b"!str": "text", b"!list": [1, 2], b"!zero": 0}
DATA_FAULTS = (b"!raise", *WRONG)
EOF_FAULTS = tuple(b"!eof-" + command[1:] for command in DATA_FAULTS)


class Fatal(BaseException):
    """Not an ``Exception`` (nor is ``asyncio.CancelledError``): a fault of its connection."""


def command_of(data: memoryview | bytes) -> bytes:
    """The command a chunk starts with (``b"!raise"``...), or ``b""`` for plain bytes."""
    if data[:1] != b"!":
        return b""
    return bytes(data[:16]).split(b" ", 1)[0]


def fault(command: bytes) -> Output:
    """Do what a fault command says: raise, or return the wrong type (never bytes)."""
    kind = b"!" + command.removeprefix(b"!eof-").removeprefix(b"!")
    if kind == b"!raise":
        raise ValueError(f"asked to fail by {command.decode()}")
    return WRONG[kind]  # type: ignore[return-value]


def answer(data: memoryview) -> Output:
    """Echo ``data`` unless it is a command for ``data_received``."""
    command = command_of(data)
    if command in DATA_FAULTS:
        return fault(command)
    if command == b"!sleep":
        time.sleep(SLEEP_S)
    elif command == b"!fatal":
        raise Fatal("asked to die by !fatal")
    return data


class FaultyEcho:
    """Shared, ``data_received(data)``: the loop's inlined path (``_common_case``)."""

    shared: ClassVar[bool] = True

    def data_received(self, data: memoryview) -> Output:
        return answer(data)

    def eof_received(self) -> Output:
        return None


class FaultyEchoWithHandle:
    """The same as :class:`FaultyEcho`, but ``data_received(data, conn)``: the loop builds a
    handle for every message and calls the general ``_receive``."""

    shared: ClassVar[bool] = True

    def data_received(self, data: memoryview, conn: Connection) -> Output:
        return answer(data)

    def eof_received(self, conn: Connection) -> Output:
        return None


class FaultyPerConnection:
    """One instance per connection: faults in ``data_received``, ``eof_received`` (armed by an
    ``!eof-...`` chunk) and the constructor (armed by the file ``$FAULTY_ARM``)."""

    shared: ClassVar[bool] = False

    def __init__(self) -> None:
        path = os.environ.get(ARM_ENV)
        if path:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            else:
                raise RuntimeError("this constructor was armed to fail")
        self.at_eof = b""

    def data_received(self, data: memoryview) -> Output:
        command = command_of(data)
        if command in EOF_FAULTS:
            self.at_eof = command
            return data
        return answer(data)

    def eof_received(self) -> Output:
        if self.at_eof:
            return fault(self.at_eof)
        return None


class TimerFaults:
    """Shared; ``worker_started`` starts two timers every :data:`TICK_S` seconds: ``bad``
    raises on its third call, ``good`` never does.  ``?`` answers with what they did so far
    (``bad 1,bad 2,good 1,...``, in the order of the calls); anything else is echoed."""

    shared: ClassVar[bool] = True
    TICK_S: ClassVar[float] = 0.02
    calls: ClassVar[list[str]] = []

    @classmethod
    def worker_started(cls, hub: Hub) -> None:
        counts = {"bad": 0, "good": 0}

        def tick(name: str) -> None:
            counts[name] += 1
            if name == "bad" and counts[name] == 3:
                raise RuntimeError("the third call of the bad timer fails")
            cls.calls.append(f"{name} {counts[name]}")

        hub.call_every(cls.TICK_S, tick, "bad")  # first: due no later than `good` each time
        hub.call_every(cls.TICK_S, tick, "good")

    def data_received(self, data: memoryview) -> Output:
        if bytes(data) == b"?\n":
            return (",".join(self.calls) + "\n").encode()
        return data

    def eof_received(self) -> Output:
        return None


# -- not handlers: refused at the door (check_handler) --------------------------------


def not_a_class(data: memoryview) -> Output:
    """A function, not a class."""
    return data


class NoShared:
    """No ``shared`` attribute."""

    def data_received(self, data: memoryview) -> Output:
        return data

    def eof_received(self) -> Output:
        return None


class SharedNotBool:
    """``shared`` is not a bool."""

    shared: ClassVar[Any] = 1

    def data_received(self, data: memoryview) -> Output:
        return data

    def eof_received(self) -> Output:
        return None


class DataNotCallable:
    """``data_received`` is not callable."""

    shared: ClassVar[bool] = True
    data_received: ClassVar[Any] = b"echo"

    def eof_received(self) -> Output:
        return None


class NoEof:
    """No ``eof_received``."""

    shared: ClassVar[bool] = False

    def data_received(self, data: memoryview) -> Output:
        return data


class BrokenSharedConstructor:
    """A shared handler whose constructor raises: refused before anything listens."""

    shared: ClassVar[bool] = True

    def __init__(self) -> None:
        raise OSError("cannot open the configuration")

    def data_received(self, data: memoryview) -> Output:
        return data

    def eof_received(self) -> Output:
        return None
