"""What the soak, chaos and flood runs share: the server, the client processes, sampling.

* :class:`ServerProcess` -- ``rawepoll serve --port 0 ...`` (or any echo server
  that takes ``--status-fd N`` and announces itself there) as a child in a
  session of its own: :class:`rawepoll.tools.serverproc.ServerProcess`, found
  through its ``ready`` event, read through its ``status``, ``restart`` and
  ``exit`` events, always stopped: SIGTERM, a bounded drain, then SIGKILL of
  its whole process group.
* :class:`ClientProcess` -- one ``python -m hardening._clients`` process: it
  takes its job as JSON on the command line, prints JSON lines (``ready``,
  then ``done`` with its counters), and stops when its stdin closes or its
  own deadline passes.  Clients are separate processes so that the 20,000
  descriptors per process and the GIL bound neither side.
* :class:`Sampler` -- the server's total RSS and descriptor count over every
  process of its tree (psutil), sampled in a thread; :func:`drift` turns the
  samples into figures (value at the end of warm-up, at the end, slope).

Synchronisation is on events (a server event, a client's line, a process
exited, a condition polled with a deadline); every wait has a bound.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Final

import psutil

from rawepoll.tools import serverproc
from rawepoll.tools.serverproc import Event, Stopped

REPO_ROOT: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_BOUND: Final = 30.0  # spawn to the ready event
STOP_BOUND: Final = 30.0  # SIGTERM to exit
KILL_BOUND: Final = 5.0  # after SIGKILL


def python_env() -> dict[str, str]:
    """The environment for a child interpreter, with this repository importable."""
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=REPO_ROOT + (os.pathsep + path if path else ""))


def serve_command(*args: str) -> list[str]:
    """``python -m rawepoll serve --port 0 ARGS`` with this interpreter."""
    return serverproc.serve_argv("--port", "0", *args)


def wait_until(predicate: Callable[[], object], bound: float, pace: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds (True) or ``bound`` seconds pass (False)."""
    pacer = threading.Event()
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            return False
        pacer.wait(pace)
    return True


class LineReader:
    """Every line of one child pipe, read by a daemon thread, with a wait for a line."""

    def __init__(self, pipe: IO[bytes], name: str) -> None:
        self.pipe = pipe
        self.lines: list[str] = []
        self.eof = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for raw in iter(self.pipe.readline, b""):
                with self.cond:
                    self.lines.append(raw.decode(errors="replace").rstrip("\r\n"))
                    self.cond.notify_all()
        except (OSError, ValueError):
            pass  # the pipe was closed under us
        finally:
            with self.cond:
                self.eof = True
                self.cond.notify_all()

    def wait_for(
        self, predicate: Callable[[str], object], bound: float, since: int = 0
    ) -> str | None:
        """The first line from ``since`` on that satisfies ``predicate``; None at EOF/bound."""
        deadline = time.monotonic() + bound
        with self.cond:
            while True:
                for line in self.lines[since:]:
                    if predicate(line):
                        return line
                since = max(since, len(self.lines))
                remaining = deadline - time.monotonic()
                if self.eof or remaining <= 0:
                    return None
                self.cond.wait(remaining)

    def snapshot(self) -> list[str]:
        with self.cond:
            return list(self.lines)

    def close(self, bound: float = KILL_BOUND) -> None:
        self.thread.join(bound)
        if not self.thread.is_alive():
            self.pipe.close()


def _stop_group(proc: subprocess.Popen[bytes], bound: float) -> int | None:
    """SIGTERM, wait ``bound`` s, SIGKILL the process group; the exit status if it exited."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(bound)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of its group (forked workers)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        return proc.wait(KILL_BOUND)
    except subprocess.TimeoutExpired:
        return None


class ServerProcess(serverproc.ServerProcess):
    """An echo server child: ``rawepoll serve`` unless another ``command`` is given.

    Returned once the server sent its ``ready`` event on ``--status-fd``
    (another server announces itself with
    :func:`rawepoll.tools.serverproc.write_ready`); on the way out of a
    ``with`` block it is stopped -- SIGTERM, a bounded drain, then SIGKILL of
    its whole process group -- and its captured output released.
    """

    def __init__(self, command: Sequence[str]) -> None:
        super().__init__(
            command,
            env=python_env(),
            cwd=REPO_ROOT,
            start_bound=START_BOUND,
            stop_bound=STOP_BOUND,
            name=" ".join(command[:4]),
        )

    def statuses(self) -> list[Event]:
        """Every ``status`` event so far (counters, ``per_worker_open``), oldest first."""
        self.poll_events()
        return [event for event in self.events if event["event"] == "status"]

    def describe(self) -> str:
        out = "\n".join(self.stdout().splitlines()[-20:])
        err = "\n".join(self.stderr().splitlines()[-20:])
        return f"command: {' '.join(self.argv)}\nstdout:\n{out}\nstderr:\n{err}"


def exit_summary(stopped: Stopped) -> dict[str, int]:
    """The server's ``exit`` event: its counters and ``restarted`` (empty without one)."""
    if stopped.exit is None:
        return {}
    return {**stopped.counters, "restarted": int(stopped.exit.get("restarted", 0))}


def socket_count(pid: int) -> int:
    """Sockets process ``pid`` holds (its ``/proc/PID/fd`` links to ``socket:[...]``).

    Cheap at any load, unlike anything that reads ``/proc/net/tcp`` (psutil's
    ``net_connections``), which takes seconds with tens of thousands of sockets.
    """
    count = 0
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for name in names:
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")
        except (FileNotFoundError, ProcessLookupError):
            continue
    return count


# ---------------------------------------------------------------- client processes


class ClientProcess:
    """One ``python -m hardening._clients`` process running ``job``."""

    def __init__(self, job: dict[str, Any], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hardening._clients", json.dumps(job)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
            env=python_env(),
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = LineReader(self.proc.stdout, f"{name}-stdout")
        self.err = LineReader(self.proc.stderr, f"{name}-stderr")

    def _message(self, kind: str, bound: float) -> dict[str, Any] | None:
        line = self.out.wait_for(lambda text: text.startswith(f'{{"event": "{kind}"'), bound)
        return None if line is None else dict(json.loads(line))

    def await_ready(self, bound: float) -> dict[str, Any]:
        """The ``ready`` line: every connection of the job is up (or failed)."""
        ready = self._message("ready", bound)
        if ready is None:
            raise RuntimeError(f"{self.name}: not ready within {bound} s: {self.stderr()}")
        return ready

    def tell_stop(self) -> None:
        """Close its stdin: the process finishes its connections and reports."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def result(self, bound: float) -> dict[str, Any]:
        """The ``done`` report; the process is killed if it has none within ``bound`` s."""
        done = self._message("done", bound)
        if done is None:
            self.kill()
            raise RuntimeError(f"{self.name}: no report within {bound} s: {self.stderr()}")
        try:
            self.proc.wait(KILL_BOUND)
        except subprocess.TimeoutExpired:
            self.kill()
        return done

    def stderr(self) -> str:
        return "\n".join(self.err.snapshot()[-10:])

    def kill(self) -> None:
        self.tell_stop()
        _stop_group(self.proc, 0.0 if self.proc.poll() is None else KILL_BOUND)
        self.out.close()
        self.err.close()


class ClientGroup:
    """Client processes that are always killed and reaped on the way out."""

    def __init__(self) -> None:
        self.clients: list[ClientProcess] = []

    def start(self, job: dict[str, Any], name: str) -> ClientProcess:
        client = ClientProcess(job, name)
        self.clients.append(client)
        return client

    def __enter__(self) -> ClientGroup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for client in self.clients:
            client.kill()


def add_counts(reports: Sequence[dict[str, Any]], key: str) -> dict[str, int]:
    """Sum the integer counters of ``report[key]`` over ``reports`` (per-kind tables)."""
    total: dict[str, int] = {}
    for report in reports:
        for name, value in report.get(key, {}).items():
            total[name] = total.get(name, 0) + int(value)
    return total


# ---------------------------------------------------------------- sampling


@dataclass
class Sample:
    """One look at the server's process tree."""

    t: float  # seconds since sampling started
    rss: int  # bytes, summed over the supervisor and its workers
    fds: int  # descriptors, summed likewise
    procs: int


def sample_tree(pid: int) -> Sample | None:
    """RSS and descriptors of ``pid`` and all its descendants, via psutil."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    rss = fds = procs = 0
    for proc in tree:
        try:
            with proc.oneshot():
                rss += proc.memory_info().rss
                fds += proc.num_fds()
            procs += 1
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return Sample(0.0, rss, fds, procs)


class Sampler:
    """Samples the tree under ``pid`` every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self.take()
            if self._stop.wait(self.interval):
                return

    def take(self) -> None:
        sample = sample_tree(self.pid)
        if sample is not None:
            sample.t = time.monotonic() - self.start
            self.samples.append(sample)

    def __enter__(self) -> Sampler:
        self.start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(KILL_BOUND + self.interval)


def drift(samples: Sequence[Sample], warmup: float, attr: str) -> dict[str, float]:
    """How ``attr`` (``rss`` or ``fds``) moved after ``warmup`` seconds.

    ``start`` is the first sample at or after the warm-up, ``end`` the last
    sample; ``slope_per_min`` is the least-squares slope over the samples in
    between (units per minute); ``min``/``max`` bound them.

    One MiB a minute after a 10 s warm-up spent at zero:

    >>> rise = [Sample(float(t), max(0, t - 10) * (1 << 20) // 60, 20, 3) for t in range(71)]
    >>> rss = drift(rise, 10.0, "rss")
    >>> rss["start"], rss["end"], rss["change"]
    (0.0, 1048576.0, 1048576.0)
    >>> round(rss["slope_per_min"] / (1 << 20), 3)
    1.0
    >>> drift(rise, 10.0, "fds")["slope_per_min"]
    0.0
    """
    after = [s for s in samples if s.t >= warmup] or list(samples[-1:])
    if not after:
        return {"start": 0, "end": 0, "change": 0, "slope_per_min": 0.0, "min": 0, "max": 0}
    values = [float(getattr(s, attr)) for s in after]
    slope = 0.0
    if len(after) >= 3 and len({s.t for s in after}) > 1:
        slope = statistics.linear_regression([s.t for s in after], values).slope * 60
    return {
        "start": values[0],
        "end": values[-1],
        "change": values[-1] - values[0],
        "slope_per_min": slope,
        "min": min(values),
        "max": max(values),
    }


# ---------------------------------------------------------------- output


def print_json(report: dict[str, Any]) -> None:
    print(json.dumps(report, indent=2, sort_keys=False), flush=True)


def verdict_row(report: dict[str, Any]) -> tuple[str, str]:
    """The last row of every tool's table: ``ok`` or what failed."""
    verdict = report["verdict"]
    return "verdict", "ok" if verdict["ok"] else "FAILED: " + "; ".join(verdict["failures"])


def print_table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """A two-column table: rich on a terminal, plain aligned lines otherwise."""
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(title=title, show_header=False)
            table.add_column(justify="left")
            table.add_column(justify="right")
            for key, value in rows:
                table.add_row(key, value)
            Console().print(table)
            return
    width = max((len(key) for key, _ in rows), default=0)
    print(title)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")
    sys.stdout.flush()


def terminate_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so every server and client started is stopped."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for servers that cannot take port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
