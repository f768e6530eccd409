"""The echo servers a comparison runs, and how it runs one of them.

A *contender* is a command that starts an echo server on a free port and
prints, on stdout, one line containing ``listening on HOST:PORT``:

========================  ===================================================
``rawepoll lt``           ``python -m rawepoll serve --port 0 --mode lt``
``rawepoll et``           ``python -m rawepoll serve --port 0 --mode et``
``selectors``             ``python -m rawepoll.tools.compare.peers.selectors_echo``
``asyncio protocol``      ``python -m rawepoll.tools.compare.peers.asyncio_protocol``
``asyncio streams``       ``python -m rawepoll.tools.compare.peers.asyncio_streams``
``uvloop protocol``       ``python -m rawepoll.tools.compare.peers.uvloop_protocol``
========================  ===================================================

Every one of them is a single process (``rawepoll serve`` with its default of
one worker serves in-process).  :class:`Server` runs a contender the way the
comparison needs it: in a session of its own (so the whole process group can
be killed), pinned to one CPU right after it is spawned (before it has imported
anything), stdout and stderr in temporary files (a chatty server can never
block on a full pipe), and it reads the server's CPU time, memory and
descriptors (:mod:`rawepoll.tools.compare.machine`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import IO

from rawepoll.tools.compare import machine

__all__ = [
    "CONTENDERS",
    "Contender",
    "EchoError",
    "Server",
    "ServerError",
    "select",
]

LISTENING = re.compile(r"listening on (?:\[(?P<host6>[^\]]+)\]|(?P<host>[^\s:\[]+)):(?P<port>\d+)")
PEERS = "rawepoll.tools.compare.peers"


@dataclass(frozen=True)
class Contender:
    """How to start one echo server; ``needs`` names the module it cannot run without."""

    name: str
    argv: tuple[str, ...]  # after the interpreter, before --host and --port
    needs: str

    def missing(self) -> str | None:
        """Why this contender cannot run here, or None."""
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


class ServerError(RuntimeError):
    """A server did not start, died, or stopped echoing."""


class EchoError(ServerError):
    """A server echoed something other than what was sent, or stopped echoing: a bug."""


class Server:
    """A running contender, pinned to one CPU, in its own session."""

    def __init__(
        self,
        contender: Contender,
        *,
        host: str = "127.0.0.1",
        cpu: int | None = None,
        timeout: float = 20.0,
    ) -> None:
        self.contender = contender
        self.name = contender.name
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115 -- lives until stop()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            contender.command(host),
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            start_new_session=True,  # own process group: killpg reaches everything it starts
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.pid = self.process.pid
        try:
            if cpu is not None:
                os.sched_setaffinity(self.pid, {cpu})
            self.host, self.port = self._wait_listening(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = LISTENING.search(_read(self._stdout))
            if match:
                return match["host6"] or match["host"], int(match["port"])
            if self.process.poll() is not None:
                raise ServerError(f"{self.name} exited ({self.process.returncode}){self.tail()}")
            time.sleep(0.01)
        raise ServerError(f"{self.name}: no 'listening on' line within {timeout:g} s{self.tail()}")

    def tail(self, lines: int = 8) -> str:
        """The last lines of the server's stderr, for an error message."""
        text = _read(self._stderr).strip().splitlines()[-lines:]
        return "".join(f"\n    {line}" for line in text)

    def check_alive(self) -> None:
        """Raise ServerError if the server has exited."""
        if self.process.poll() is not None:
            raise ServerError(f"{self.name} died ({self.process.returncode}){self.tail()}")

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

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; the exit status."""
        if self._stdout.closed:  # stopped already: the group id may belong to another by now
            return self.process.returncode
        try:
            if self.process.poll() is None:
                _killpg(self.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout)
            _killpg(self.pid, signal.SIGKILL)  # stragglers in the group, if any
            if self.process.poll() is None:
                self.process.wait(5)
            return self.process.returncode
        finally:
            self._stdout.close()
            self._stderr.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")
