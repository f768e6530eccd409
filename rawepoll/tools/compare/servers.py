"""The echo servers a comparison runs, and how it runs one of them.

A *contender* is a command that starts an echo server on a free port and
announces it as ``rawepoll serve`` does: it takes ``--status-fd N`` and writes
the JSON ``ready`` event to descriptor ``N`` once it listens (the peers use
:func:`rawepoll.tools.serverproc.write_ready`, and print ``listening on
HOST:PORT`` for people too):

========================  ===================================================
``rawepoll lt``           ``python -m rawepoll serve --port 0 --mode lt``
``rawepoll et``           ``python -m rawepoll serve --port 0 --mode et``
``selectors``             ``python -m rawepoll.tools.compare.peers.selectors_echo``
``asyncio protocol``      ``python -m rawepoll.tools.compare.peers.asyncio_protocol``
``asyncio streams``       ``python -m rawepoll.tools.compare.peers.asyncio_streams``
``uvloop protocol``       ``python -m rawepoll.tools.compare.peers.uvloop_protocol``
``C epoll``               ``python -m rawepoll.tools.compare.peers.c_echo`` (c/echo.c, gcc)
========================  ===================================================

Every one of them is a single process (``rawepoll serve`` with its default of
one worker serves in-process).  :class:`Server` runs a contender the way the
comparison needs it, through :class:`rawepoll.tools.serverproc.ServerProcess`:
in a session of its own (so the whole process group can be killed), pinned to
one CPU right after it is spawned (before it has imported anything), stdout
and stderr in temporary files (a chatty server can never block on a full
pipe); and it reads the server's CPU time, memory and descriptors
(:mod:`rawepoll.tools.compare.machine`).
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from typing import Final

from rawepoll.tools.compare import machine
from rawepoll.tools.serverproc import ServerError, ServerProcess

__all__ = [
    "CONTENDERS",
    "Contender",
    "EchoError",
    "Server",
    "ServerError",
    "select",
]

START_S: Final = 20.0  # spawn to `ready`
STOP_S: Final = 10.0  # SIGTERM to exit, then SIGKILL
PEERS = "rawepoll.tools.compare.peers"


@dataclass(frozen=True)
class Contender:
    """How to start one echo server; ``needs`` names the module it cannot run without."""

    name: str
    argv: tuple[str, ...]  # after the interpreter, before --host and --port
    needs: str

    def missing(self) -> str | None:
        """Why this contender cannot run here, or None."""
        if self.needs == "gcc":  # a C peer, built at its start
            return None if shutil.which("gcc") else "gcc is not installed (no C peer)"
        try:
            found = importlib.util.find_spec(self.needs) is not None
        except ModuleNotFoundError:
            found = False
        return None if found else f"{self.needs} is not installed (pip install 'rawepoll[bench]')"

    @property
    def is_rawepoll(self) -> bool:
        return self.needs == "rawepoll.server"

    def command(self, host: str) -> list[str]:
        return [sys.executable, *self.argv, "--host", host, "--port", "0"]


CONTENDERS: tuple[Contender, ...] = (
    Contender("rawepoll lt", ("-m", "rawepoll", "serve", "--mode", "lt"), "rawepoll.server"),
    Contender("rawepoll et", ("-m", "rawepoll", "serve", "--mode", "et"), "rawepoll.server"),
    Contender("selectors", ("-m", f"{PEERS}.selectors_echo"), "selectors"),
    Contender("asyncio protocol", ("-m", f"{PEERS}.asyncio_protocol"), "asyncio"),
    Contender("asyncio streams", ("-m", f"{PEERS}.asyncio_streams"), "asyncio"),
    Contender("uvloop protocol", ("-m", f"{PEERS}.uvloop_protocol"), "uvloop"),
    Contender("C epoll", ("-m", f"{PEERS}.c_echo"), "gcc"),
)


def select(names: str | None) -> list[Contender]:
    """The contenders named in a comma-separated list (all by default), in table order.

    Raises:
        ValueError: a name is not a contender's.
    """
    if not names:
        return list(CONTENDERS)
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = {c.name: c for c in CONTENDERS}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"unknown server(s) {unknown}; known: {', '.join(known)}")
    return [c for c in CONTENDERS if c.name in wanted]


class EchoError(ServerError):
    """A server echoed something other than what was sent, or stopped echoing: a bug.

    A :class:`ServerError` (:mod:`rawepoll.tools.serverproc`'s: a server did
    not start, or died), so one ``except`` catches every way a contender fails.
    """


class Server(ServerProcess):
    """A running contender, pinned to one CPU, in its own session; a context manager."""

    def __init__(
        self,
        contender: Contender,
        *,
        host: str = "127.0.0.1",
        cpu: int | None = None,
        timeout: float = START_S,
    ) -> None:
        self.contender = contender
        super().__init__(
            contender.command(host),
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            cpu=cpu,
            start_bound=timeout,
            stop_bound=STOP_S,
            name=contender.name,
        )

    def prime(self) -> None:
        """Open, echo 4 KiB on and close one connection; raise EchoError if it goes wrong.

        Run before anything is measured.  A server's first connection pays
        for lazy set-up.  And CPython's asyncio transports read with
        ``recv(256 KiB)``: glibc serves a block that size with mmap (the
        shrink to the bytes read with mremap, the free with munmap) until the
        first such block is freed whole -- at the first EOF -- which raises
        malloc's dynamic mmap threshold.  Before that, an asyncio server
        spends about three times the CPU per small message.  A long-running
        server is past that point, so a comparison starts there too.
        """
        message = random.Random(-1).randbytes(4096)
        try:
            with socket.create_connection((self.host, self.port), timeout=10) as sock:
                sock.sendall(message)
                sock.shutdown(socket.SHUT_WR)
                echoed = bytearray()
                while chunk := sock.recv(65536):
                    echoed += chunk
        except OSError as exc:
            raise EchoError(f"{self.name}: first connection: {exc}") from exc
        if echoed != message:
            raise EchoError(
                f"{self.name}: first connection: {len(message)} bytes sent, "
                f"{len(echoed)} echoed{'' if len(echoed) != len(message) else ', different'}"
            )
        time.sleep(0.05)

    def usage(self) -> machine.Usage:
        """The server's CPU clock and tick counts, now."""
        return machine.usage(self.pid)

    def cpu_ns(self) -> int:
        """The server's user + system CPU time, in ns."""
        return machine.cpu_ns(self.pid)

    def memory(self) -> tuple[int, int]:
        """The server's (RSS, PSS) in bytes."""
        return machine.memory(self.pid)

    def fds(self) -> int:
        """The server's open descriptors (one per connection, plus a few)."""
        return machine.open_fds(self.pid)
