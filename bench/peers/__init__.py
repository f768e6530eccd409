"""The echo servers the server benchmarks compare, and how to run one of them.

A *contender* is a command that starts an echo server on a free port and
prints, on stdout, one line containing ``listening on HOST:PORT``:

========================  ===================================================
``rawepoll lt``           ``python -m rawepoll serve --port 0 --mode lt``
``rawepoll et``           ``python -m rawepoll serve --port 0 --mode et``
``selectors``             ``bench/peers/selectors_echo.py``: DefaultSelector,
                          non-blocking, buffered writes
``asyncio protocol``      ``bench/peers/asyncio_protocol.py``
``asyncio streams``       ``bench/peers/asyncio_streams.py``
``uvloop protocol``       ``bench/peers/uvloop_protocol.py``
========================  ===================================================

The peers are stand-alone scripts (``--host``, ``--port``; they run until
SIGTERM) so that anyone can start one by hand.  :class:`Server` runs a
contender the way the benchmarks need it: in a session of its own (so the
whole process group can be killed), pinned to one CPU as soon as it exists
(before it has imported anything, let alone forked a worker), stdout and
stderr in temporary files, and it reads the server's CPU time and memory, summed
over the server and any children it forks.

CPU time comes from the kernel's per-process CPU clock (``clock_gettime`` on
the clock id ``clock_getcpuclockid(3)`` returns): user + system time of all
threads, in nanoseconds -- the same quantity as ``utime + stime`` in
``/proc/PID/stat``, which counts only whole 10 ms ticks.
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
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent

LISTENING = re.compile(r"listening on (?:\[(?P<host6>[^\]]+)\]|(?P<host>[^\s:\[]+)):(?P<port>\d+)")


@dataclass(frozen=True)
class Contender:
    """How to start one echo server; ``needs`` names the module it cannot run without."""

    name: str
    argv: tuple[str, ...]  # after the interpreter, before --host, --port and extras
    needs: str

    def missing(self) -> str | None:
        """Why this contender cannot run here, or None."""
        try:
            found = importlib.util.find_spec(self.needs) is not None
        except ModuleNotFoundError:
            found = False
        return None if found else f"module {self.needs} not importable"

    @property
    def is_rawepoll(self) -> bool:
        return self.needs == "rawepoll.server"

    def command(self, host: str, extra: tuple[str, ...] = ()) -> list[str]:
        return [sys.executable, *self.argv, "--host", host, "--port", "0", *extra]


def _peer(name: str, script: str, needs: str) -> Contender:
    return Contender(name, (str(HERE / script),), needs)


CONTENDERS: tuple[Contender, ...] = (
    Contender("rawepoll lt", ("-m", "rawepoll", "serve", "--mode", "lt"), "rawepoll.server"),
    Contender("rawepoll et", ("-m", "rawepoll", "serve", "--mode", "et"), "rawepoll.server"),
    _peer("selectors", "selectors_echo.py", "selectors"),
    _peer("asyncio protocol", "asyncio_protocol.py", "asyncio"),
    _peer("asyncio streams", "asyncio_streams.py", "asyncio"),
    _peer("uvloop protocol", "uvloop_protocol.py", "uvloop"),
)
REFERENCE = "uvloop protocol"  # what the ratios are taken against


def select(names: str | None) -> list[Contender]:
    """The contenders named in a comma-separated list (all by default), in table order."""
    if not names:
        return list(CONTENDERS)
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = {c.name: c for c in CONTENDERS}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(f"unknown server(s) {unknown}; known: {', '.join(known)}")
    return [c for c in CONTENDERS if c.name in wanted]


@dataclass(frozen=True)
class Usage:
    """Counters of a process (or a sum of processes); subtract two to get an interval."""

    cpu_ns: int  # process CPU clock: user + system, ns precision
    user_ns: int  # utime from /proc/PID/stat: 10 ms ticks, sampled
    system_ns: int  # stime, likewise; user + system ~= cpu_ns
    wakeups: int  # voluntary context switches: times it blocked (in epoll_wait)

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


def _usage(pid: int) -> Usage:
    cpu = time.clock_gettime_ns(_cpu_clock(pid))
    tick_ns = 10**9 // os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user, system = int(fields[11]) * tick_ns, int(fields[12]) * tick_ns  # utime, stime
    wakeups = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    wakeups += int(line.split()[1])
    return Usage(cpu, user, system, wakeups)


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
        extra: tuple[str, ...] = (),  # more command-line options
        timeout: float = 20.0,
    ) -> None:
        self.contender = contender
        self.name = contender.name
        # Files, not pipes: a chatty server can never block on a full pipe.
        # They live as long as the server; stop() closes them.
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            contender.command(host, extra),
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            start_new_session=True,  # own process group: killpg reaches every worker
            env=env,
        )
        self.pid = self.process.pid
        try:
            if cpu is not None:  # before it forks any worker: they inherit the mask
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

    def stdout(self) -> str:
        return _read(self._stdout)

    def check_alive(self) -> None:
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
        server is past that point, so a benchmark starts there too.
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

    def pids(self) -> list[int]:
        """The server and every process it has forked (workers)."""
        import psutil

        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [self.pid, *(child.pid for child in children)]

    def cpu_ns(self) -> int:
        """User + system CPU time of the server and its children, in ns."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):  # a worker that has just exited
                total += time.clock_gettime_ns(_cpu_clock(pid))
        return total

    def usage(self) -> Usage:
        """CPU clock, tick counts and wake-ups of the server and its children, now."""
        usage = Usage(0, 0, 0, 0)
        for pid in self.pids():
            with contextlib.suppress(OSError):
                usage += _usage(pid)
        return usage

    def memory(self) -> tuple[int, int]:
        """(RSS, PSS) in bytes, summed over the server and its children."""
        import psutil

        rss = pss = 0
        for pid in self.pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                info = psutil.Process(pid).memory_full_info()
                rss += info.rss
                pss += info.pss
        return rss, pss

    def fds(self) -> int:
        """Open descriptors of the server and its children (one per connection, plus a few)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                total += len(os.listdir(f"/proc/{pid}/fd"))
        return total

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; the exit status."""
        try:
            if self.process.poll() is None:
                _killpg(self.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
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


def _cpu_clock(pid: int) -> int:
    """``clock_getcpuclockid(pid)``: Linux encodes it as ``(~pid << 3) | CPUCLOCK_SCHED``."""
    return ((~pid) << 3) | 2


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")
