"""A server child process, driven through its JSON status stream: :class:`ServerProcess`.

Every tool that needs a server to measure -- ``rawepoll c1m``, ``rawepoll
compare``, ``rawepoll demo``, the hardening runs -- and the tests start it here.
The child is handed the write end of a pipe as ``--status-fd N`` and speaks
the protocol of :mod:`rawepoll.server.report`: a ``ready`` object once it
listens, ``status`` and ``restart`` objects while it runs, an ``exit`` object
last.  Nothing parses the human lines.

What the helper guarantees:

* **bounded waits** -- starting a :class:`ServerProcess` fails with
  :class:`ServerError` if no ``ready`` event comes within its bound, or the
  child exits first (with the tail of its stderr);
* **nothing left behind** -- the child runs in a session of its own, and
  :meth:`ServerProcess.stop` (SIGTERM, a bounded drain, then SIGKILL of the
  whole process group) and :meth:`ServerProcess.kill` reach every process it
  forked, also when the caller failed;
* **no blocking on output** -- stdout and stderr go to temporary files (or are
  inherited), so a chatty server never stalls on a full pipe; the status pipe
  is read whenever the caller asks for events, and the server never blocks on
  it (it drops ``status`` events a slow reader has no room for).

Peers that are not ``rawepoll serve`` (the comparison's asyncio and uvloop
servers, the tests' deliberately broken ones) announce themselves with
:func:`write_ready` and are driven the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final, TypedDict, TypeVar

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11 on

__all__ = [
    "Ready",
    "ServerError",
    "ServerOptions",
    "ServerProcess",
    "Stopped",
    "serve_argv",
    "write_ready",
]

START_BOUND: Final = 30.0  # spawn to `ready`
STOP_BOUND: Final = 30.0  # SIGTERM to exit
KILL_BOUND: Final = 5.0  # SIGKILL to reaped

Event = dict[str, Any]
_Self = TypeVar("_Self", bound="ServerProcess")  # a subclass enters as itself


class ServerError(RuntimeError):
    """The server did not start, or died when it should not have."""


@dataclass(frozen=True)
class Ready:
    """The ``ready`` event: where the server listens and which processes serve."""

    address: str
    family: str
    host: str | None
    port: int | None
    path: str | None
    pid: int
    workers: tuple[int, ...]
    mode: str | None

    @classmethod
    def from_event(cls, event: Event) -> Ready:
        return cls(
            address=str(event["address"]),
            family=str(event["family"]),
            host=event.get("host"),
            port=event.get("port"),
            path=event.get("path"),
            pid=int(event["pid"]),
            workers=tuple(int(pid) for pid in event.get("workers", [event["pid"]])),
            mode=event.get("mode"),
        )


@dataclass(frozen=True)
class Stopped:
    """How the server ended: its exit status and its ``exit`` event (None if it sent none)."""

    returncode: int | None
    exit: Event | None

    @property
    def counters(self) -> dict[str, int]:
        """The exit event's counters (empty if there was none)."""
        return dict(self.exit["counters"]) if self.exit else {}

    @property
    def clean(self) -> bool:
        """Exit status 0 and an ``exit`` event that says every worker drained."""
        return self.returncode == 0 and bool(self.exit and self.exit.get("clean"))


def serve_argv(*args: str) -> list[str]:
    """``python -m rawepoll serve ARGS`` with this interpreter."""
    return [sys.executable, "-m", "rawepoll", "serve", *args]


def write_ready(fd: int | None, sock: socket.socket, **extra: object) -> None:
    """Announce a listening ``sock`` on ``fd`` as ``rawepoll serve`` does (a ``ready`` event).

    For peer servers started by :class:`ServerProcess`; ``None`` does nothing.
    """
    if fd is None:
        return
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        where: dict[str, object] = {"address": f"unix:{name}", "family": "unix", "path": name}
    else:
        host, port = name[:2]
        six = sock.family == socket.AF_INET6
        shown = f"[{host}]:{port}" if six else f"{host}:{port}"
        family = "inet6" if six else "inet"
        where = {"address": shown, "family": family, "host": host, "port": port, "path": None}
    pid = os.getpid()
    event = {"event": "ready", **where, "pid": pid, "workers": [pid], **extra}
    os.write(fd, (json.dumps(event) + "\n").encode())


@dataclass
class _Output:
    """Where a child's stdout/stderr go: temporary files to read back, or ours."""

    capture: bool
    stdout: IO[bytes] | None = field(default=None, init=False)
    stderr: IO[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.capture:
            self.stdout = tempfile.TemporaryFile()  # noqa: SIM115 -- closed in close()
            self.stderr = tempfile.TemporaryFile()  # noqa: SIM115

    def text(self, file: IO[bytes] | None) -> str:
        if file is None or file.closed:
            return ""
        file.seek(0)
        return file.read().decode(errors="replace")

    def close(self) -> None:
        for file in (self.stdout, self.stderr):
            if file is not None:
                file.close()


class ServerOptions(TypedDict, total=False):
    """The keyword arguments of :class:`ServerProcess`, every one optional.

    ``env`` and ``cwd`` are the child's (default: ours); ``capture`` sends its
    stdout and stderr to temporary files (default True; False: ours); ``cpu``
    pins it to one CPU; ``start_bound`` bounds the wait for ``ready``
    (default ``START_BOUND``) and ``stop_bound`` is :meth:`ServerProcess.stop`'s
    default drain (default ``STOP_BOUND``); ``name`` names it in messages
    (default: the first words of the command).
    """

    env: dict[str, str] | None
    cwd: str | None
    capture: bool
    cpu: int | None
    start_bound: float
    stop_bound: float
    name: str | None


@dataclass(frozen=True)
class _Launch:
    """:class:`ServerOptions` with their defaults (an unknown keyword is a TypeError)."""

    env: dict[str, str] | None = None
    cwd: str | None = None
    capture: bool = True
    cpu: int | None = None
    start_bound: float = START_BOUND
    stop_bound: float = STOP_BOUND
    name: str | None = None


class ServerProcess:
    """A running server child that speaks ``--status-fd``; see the module docstring.

    Construct it with any command, or use :meth:`serve` (``rawepoll serve ARGS``);
    both return once the ``ready`` event arrived.  A context manager: leaving
    the block stops the server and releases its captured output.  The keyword
    arguments are :class:`ServerOptions`.
    """

    def __init__(self, argv: Sequence[str], **options: Unpack[ServerOptions]) -> None:
        launch = _Launch(**options)
        self.argv = list(argv)
        self.stop_bound = launch.stop_bound  # stop()'s default, and the context manager's
        self.name = launch.name or " ".join(self.argv[1:4])
        self.output = _Output(launch.capture)
        self.events: list[Event] = []  # every event read so far, in order
        self._buffer = b""
        self._waited: dict[str, int] = {}  # kind -> index after the last one waited for
        self._killed = False
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            self.proc = subprocess.Popen(
                [*self.argv, "--status-fd", str(write_fd)],
                stdin=subprocess.DEVNULL,
                stdout=self.output.stdout,
                stderr=self.output.stderr,
                pass_fds=(write_fd,),
                start_new_session=True,  # its own process group: killpg reaches its workers
                env=launch.env,
                cwd=launch.cwd,
            )
        except BaseException:
            os.close(read_fd)
            self.output.close()
            raise
        finally:
            os.close(write_fd)
        self._status = read_fd
        os.set_blocking(read_fd, False)
        self.pid = self.proc.pid
        try:
            if launch.cpu is not None:
                os.sched_setaffinity(self.pid, {launch.cpu})
            event = self.wait_event("ready", launch.start_bound)
            if event is None:
                raise ServerError(self._why_not("ready", launch.start_bound))
            self.ready = Ready.from_event(event)
        except BaseException:
            self.close()  # the caller gets no object to close
            raise

    @classmethod
    def serve(cls, *args: str, **options: Unpack[ServerOptions]) -> ServerProcess:
        """``rawepoll serve ARGS``, started and ready."""
        options.setdefault("name", "rawepoll serve")
        return cls(serve_argv(*args), **options)

    # -- where it listens ------------------------------------------------

    @property
    def host(self) -> str:
        assert self.ready.host is not None, "a Unix-socket server has no host"
        return self.ready.host

    @property
    def port(self) -> int:
        assert self.ready.port is not None, "a Unix-socket server has no port"
        return self.ready.port

    @property
    def address(self) -> tuple[str, int] | str:
        """What ``socket.connect`` takes: ``(host, port)``, or the Unix path."""
        if self.ready.path is not None:
            return self.ready.path
        return self.host, self.port

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The workers serving now: ``ready``'s, with every ``restart`` applied."""
        self.poll_events()
        pids = list(self.ready.workers)
        for event in self.events:
            if event["event"] == "restart" and event["pid"] in pids:
                pids[pids.index(event["pid"])] = event["new_pid"]
        return tuple(pids)

    # -- events ----------------------------------------------------------

    def poll_events(self) -> list[Event]:
        """The events that arrived since the last call (without waiting)."""
        return self._read(0.0)

    def wait_event(
        self, kind: str, bound: float, where: Callable[[Event], bool] | None = None
    ) -> Event | None:
        """The first event of ``kind`` (satisfying ``where``) not yet waited for; None after
        ``bound`` seconds or at the end of the stream."""
        deadline = time.monotonic() + bound
        seen = self._waited.get(kind, 0)
        while True:
            for index in range(seen, len(self.events)):
                event = self.events[index]
                if event["event"] == kind and (where is None or where(event)):
                    self._waited[kind] = index + 1
                    return event
            seen = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._status < 0:
                return None
            self._read(remaining)

    def _read(self, timeout: float) -> list[Event]:
        """Read what the status pipe holds (waiting up to ``timeout`` for the first bytes)."""
        if self._status < 0:
            return []
        if timeout > 0 and not select.select([self._status], [], [], timeout)[0]:
            return []
        fresh: list[Event] = []
        while True:
            try:
                chunk = os.read(self._status, 65536)
            except BlockingIOError:
                break
            if not chunk:
                os.close(self._status)
                self._status = -1  # every writer is gone: the server exited
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                fresh.append(json.loads(line))
        self.events.extend(fresh)
        return fresh

    # -- output and liveness ---------------------------------------------

    def stdout(self) -> str:
        """Everything the server printed on stdout so far (when captured)."""
        return self.output.text(self.output.stdout)

    def stderr(self) -> str:
        """Everything the server printed on stderr so far (when captured)."""
        return self.output.text(self.output.stderr)

    def tail(self, lines: int = 8) -> str:
        """The last lines of stderr, indented, for an error message."""
        text = self.stderr().strip().splitlines()[-lines:]
        return "".join(f"\n    {line}" for line in text)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise :class:`ServerError` if the server has exited."""
        if self.proc.poll() is not None:
            raise ServerError(f"{self.name} died ({self.proc.returncode}){self.tail()}")

    def _why_not(self, kind: str, bound: float) -> str:
        if self._status < 0:  # the stream ended: the server is exiting (or closed it)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(KILL_BOUND)  # its descriptors close before it can be reaped
        if self.proc.poll() is not None:
            return f"{self.name} exited ({self.proc.returncode}) before '{kind}'{self.tail()}"
        if self._status < 0:
            return f"{self.name}: its status stream ended before '{kind}'{self.tail()}"
        return f"{self.name}: no '{kind}' event within {bound:g} s{self.tail()}"

    # -- stopping ----------------------------------------------------------

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the server process (the supervisor, with workers)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    def stop(self, bound: float | None = None) -> Stopped:
        """SIGTERM, a graceful drain of at most ``bound`` s, then SIGKILL of the group.

        ``bound`` defaults to the ``stop_bound`` the server was started with.
        Returns the exit status and the ``exit`` event (None if the server was
        killed or never sent one).
        """
        bound = self.stop_bound if bound is None else bound
        self.signal(signal.SIGTERM)
        # The exit event comes before the exit: wait for it, reading the status pipe as
        # it fills (a server never blocks on it for long, but a full pipe would delay it).
        exit_event = self.wait_event("exit", bound)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(KILL_BOUND if exit_event is not None else 0.0)
        self.kill()
        return Stopped(self.proc.returncode, exit_event)

    def kill(self) -> None:
        """SIGKILL the whole process group and reap the server; idempotent."""
        if not self._killed:  # once only: later, the group id may belong to another
            self._killed = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)  # stragglers of its group (forked workers)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(KILL_BOUND)
        self._read(0.0)
        if self._status >= 0:
            os.close(self._status)
            self._status = -1

    def close(self) -> None:
        """Kill if still running, and release the captured output."""
        self.kill()
        self.output.close()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc.poll() is None:
            self.stop()
        self.close()
