"""Servers in a child process for the tests, driven through their JSON status stream.

:class:`Server` is :class:`rawepoll.tools.serverproc.ServerProcess` (started
once its ``ready`` event came; its whole process group killed on the way out)
with what a test needs besides: client sockets closed at teardown, the
``status``, ``restart`` and ``exit`` events waited for with a bound, and a
description of the child for assertion messages.  Any server that takes
``--status-fd N`` and announces itself there works, not only ``rawepoll
serve``: a broken test server calls :func:`~rawepoll.tools.serverproc.write_ready`.

Nothing here parses the human lines.  :data:`LISTEN_RE`, :data:`SUMMARY_PREFIX`,
:data:`STATUS_PREFIX` and :func:`fields` are for the tests of those lines.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Callable, Sequence

from rawepoll.tools.serverproc import Event, ServerProcess, serve_argv
from support.children import REPO_ROOT, python_env, run_group
from support.clients import IO_BOUND

MODES = ["lt", "et"]
START_BOUND = 30.0  # from spawn to the ready event
STOP_BOUND = 30.0  # from a signal to the exit of the process
EVENT_BOUND = 20.0  # for a status or restart event to come
CLEANUP_BOUND = 5.0  # SIGTERM grace in teardown before SIGKILL of the group

# The human lines, for the tests whose subject they are.
LISTEN_RE = re.compile(
    r"listening on (?:unix:(?P<path>\S+)|\[?(?P<host>[^\]\s]+?)\]?:(?P<port>\d+)) "
    r"\(mode (?P<mode>lt|et), (?P<workers>\d+) workers?, pid (?P<pid>\d+)\)"
)
SUMMARY_PREFIX = "rawepoll serve: exit"
STATUS_PREFIX = "rawepoll serve: status"
_FIELD_RE = re.compile(r"(\w+)=(\S+)")


def fields(line: str) -> dict[str, str]:
    """The ``key=value`` fields of a human summary or status line."""
    return dict(_FIELD_RE.findall(line))


class Server(ServerProcess):
    """One server child (the supervisor if there are workers), ready to be connected to."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self._sockets: list[socket.socket] = []
        super().__init__(
            argv,
            env=env if env is not None else python_env(),
            cwd=REPO_ROOT,
            start_bound=START_BOUND,
            stop_bound=STOP_BOUND,
        )

    # -- what the ready event said

    @property
    def path(self) -> str | None:
        return self.ready.path

    @property
    def mode(self) -> str | None:
        return self.ready.mode

    @property
    def family(self) -> socket.AddressFamily:
        return {"unix": socket.AF_UNIX, "inet6": socket.AF_INET6}.get(
            self.ready.family, socket.AF_INET
        )

    # -- clients

    def connect(
        self, *, bound: float = IO_BOUND, rcvbuf: int | None = None, sndbuf: int | None = None
    ) -> socket.socket:
        """A new blocking client socket (with a timeout), closed at teardown at the latest."""
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        self._sockets.append(sock)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.settimeout(bound)
        try:
            sock.connect(self.address)
        except BaseException:
            sock.close()
            raise
        return sock

    def try_connect(self, bound: float = IO_BOUND) -> socket.socket | None:
        """A connected client, or None if the connection is refused."""
        try:
            return self.connect(bound=bound)
        except ConnectionRefusedError:
            return None

    def close_clients(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    # -- events

    def status(self, where: Callable[[Event], bool], bound: float = EVENT_BOUND) -> Event:
        """The next ``status`` event that satisfies ``where``; fail after ``bound`` s."""
        event = self.wait_event("status", bound, where)
        if event is None:
            raise AssertionError(f"no such status event within {bound} s\n{self.describe()}")
        return event

    def restart_of(self, pid: int, bound: float = EVENT_BOUND) -> Event:
        """The ``restart`` event that replaced worker ``pid``; fail after ``bound`` s."""
        event = self.wait_event("restart", bound, lambda e: e["pid"] == pid)
        if event is None:
            raise AssertionError(f"worker {pid} not replaced within {bound} s\n{self.describe()}")
        return event

    def wait_exit(self, bound: float = STOP_BOUND) -> int:
        """The exit status, once the server exited by itself (after a signal, say)."""
        try:
            return self.proc.wait(bound)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"server did not exit within {bound} s\n{self.describe()}"
            ) from None

    def exit_event(self, bound: float = CLEANUP_BOUND) -> Event:
        """The ``exit`` event (the server has exited or is exiting); fail if none comes."""
        for event in self.events:
            if event["event"] == "exit":
                return event
        event = self.wait_event("exit", bound)
        if event is None:
            raise AssertionError(f"no exit event\n{self.describe()}")
        return event

    def exit_counters(self) -> dict[str, int]:
        """The counters of the ``exit`` event."""
        return dict(self.exit_event()["counters"])

    # -- output and teardown

    @property
    def stdout_lines(self) -> list[str]:
        return self.stdout().splitlines()

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr().splitlines()

    def describe(self) -> str:
        """Command, exit status, events and output so far: for assertion messages."""
        self.poll_events()
        out = "\n".join(self.stdout_lines[-30:])
        err = "\n".join(self.stderr_lines[-30:])
        events = "\n".join(str(event) for event in self.events[-10:])
        return (
            f"command: {' '.join(self.argv)}\nreturncode: {self.proc.poll()}\n"
            f"events:\n{events}\nstdout:\n{out}\nstderr:\n{err}"
        )

    def cleanup(self) -> None:
        """Close clients, then SIGTERM, a bounded drain, SIGKILL of the group; release."""
        self.close_clients()
        if self.alive():
            self.stop(CLEANUP_BOUND)
        self.close()


class ServerRunner:
    """Starts servers and stops every one of them when closed."""

    def __init__(self) -> None:
        self.servers: list[Server] = []

    def start(
        self, *args: str, command: Sequence[str] | None = None, env: dict[str, str] | None = None
    ) -> Server:
        """``rawepoll serve --port 0 ARGS`` (or ``command``), returned once it is ready."""
        if command is None:
            if "--port" not in args and "--unix" not in args:
                args = ("--port", "0", *args)
            command = serve_argv(*args)
        server = Server(command, env=env)
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.cleanup()

    def __enter__(self) -> ServerRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def run_serve(*args: str, bound: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``rawepoll serve ARGS`` expecting it to exit on its own (help, bad arguments)."""
    return run_group(serve_argv(*args), bound, what=f"rawepoll serve {args}")
