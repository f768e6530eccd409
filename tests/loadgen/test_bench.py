"""``rawepoll bench`` against ``rawepoll serve``: every byte verified, the figures add up.

Runs are small (tens of connections, a few thousand messages or one second)
and every one is bounded; no assertion is about time or speed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rawepoll.tools.loadgen import LoadInterrupted, LoadResult, run_load

from .conftest import (
    BENCH_BOUND,
    REPO_ROOT,
    BenchRun,
    EchoServer,
    bench,
    python_env,
    start_server,
    stop_server,
    wait_group_gone,
)

pytestmark = pytest.mark.timeout(90)

CONTRACT_KEYS = {
    "conns",
    "established",
    "messages",
    "bytes",
    "seconds",
    "msgs_per_s",
    "mb_per_s",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "max_us",
    "connect_s",
    "errors",
    "mismatches",
    "procs",
    "loadgen_cpu_s",
}


def check_clean(result: dict[str, Any], conns: int, size: int) -> None:
    """Every connection up, nothing wrong, and the counts consistent with each other."""
    assert result.keys() >= CONTRACT_KEYS
    assert result["errors"] == 0, result["problems"]
    assert result["mismatches"] == 0, result["problems"]
    assert result["conns"] == conns
    assert result["established"] == conns
    assert result["messages"] > 0
    assert result["bytes"] == result["messages"] * size
    assert result["seconds"] > 0
    assert result["msgs_per_s"] == pytest.approx(result["messages"] / result["seconds"])
    assert result["mb_per_s"] == pytest.approx(result["bytes"] / result["seconds"] / 1e6)
    assert 0 < result["p50_us"] <= result["p90_us"] <= result["p99_us"]
    assert result["p99_us"] <= result["p999_us"] <= result["max_us"]
    assert result["connect_s"] >= 0
    assert result["loadgen_cpu_s"] >= 0
    assert result["interrupted"] is False


@pytest.mark.parametrize("procs", [1, 2])
@pytest.mark.parametrize("pipeline", [1, 4])
def test_message_count_verified(live_server: EchoServer, procs: int, pipeline: int) -> None:
    """``--messages N``: exactly N echoes, all verified, over every connection."""
    run = bench(
        *live_server.target(),
        "--conns", "50", "--messages", "3000", "--pipeline", str(pipeline),
        "--procs", str(procs), "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = run.json()
    check_clean(result, conns=50, size=64)
    assert result["messages"] == 3000
    assert result["procs"] == procs
    assert result["pipeline"] == pipeline


def test_duration_run(live_server: EchoServer) -> None:
    """``--duration``: a timed run with odd-sized messages, two processes, pinned."""
    cpu = str(min(os.sched_getaffinity(0)))
    run = bench(
        *live_server.target(),
        "--conns", "20", "--duration", "1", "--size", "1000", "--procs", "2",
        "--pipeline", "2", "--cpus", cpu, "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    check_clean(run.json(), conns=20, size=1000)


def test_large_messages_partial_writes(live_server: EchoServer) -> None:
    """Messages larger than the socket buffers go out in pieces and still verify."""
    run = bench(
        *live_server.target(),
        "--conns", "4", "--messages", "40", "--size", str(3 << 20), "--pipeline", "2", "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = run.json()
    check_clean(result, conns=4, size=3 << 20)
    assert result["messages"] == 40


def test_tiny_messages(live_server: EchoServer) -> None:
    """Messages shorter than the header still verify."""
    run = bench(*live_server.target(), "--conns", "5", "--messages", "500", "--size", "5", "--json")
    assert run.returncode == 0, run.stderr
    check_clean(run.json(), conns=5, size=5)


def test_source_addresses(live_server: EchoServer) -> None:
    """``--source-addrs``: connections bound to several loopback addresses, spread over them."""
    run = bench(
        *live_server.target(),
        "--conns", "30", "--messages", "600", "--source-addrs", "127.0.0.2-127.0.0.4,127.0.0.9",
        "--procs", "2", "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    check_clean(run.json(), conns=30, size=64)


def test_unix_socket(tmp_path: Path) -> None:
    """A run over a Unix stream socket."""
    path = tmp_path / "echo.sock"
    server = start_server(tmp_path, "--unix", str(path))
    try:
        run = bench(
            *server.target(), "--conns", "40", "--messages", "2000", "--procs", "2", "--json"
        )
    finally:
        stop_server(server.proc)
    assert run.returncode == 0, run.stderr
    check_clean(run.json(), conns=40, size=64)


def test_plain_report_and_progress(live_server: EchoServer) -> None:
    """Without ``--json`` and not on a terminal: a plain report, progress lines on stderr."""
    run = bench(*live_server.target(), "--conns", "10", "--duration", "1.5")
    assert run.returncode == 0, run.stderr
    assert re.search(r"^mismatches +0$", run.stdout, re.M), run.stdout
    assert re.search(r"^errors +0$", run.stdout, re.M), run.stdout
    assert "10/10 established" in run.stdout
    progress = [line for line in run.stderr.splitlines() if line.startswith("rawepoll bench:")]
    assert progress, run.stderr
    assert len(progress) <= 6  # at most about one a second


def unused_port() -> int:
    """A port nobody listens on: bound for a moment, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_refused_connections_fail() -> None:
    """Nobody listening: every connection is an error, exit status 1."""
    run = bench("--port", str(unused_port()), "--conns", "5", "--messages", "10", "--json")
    assert run.returncode == 1
    result = run.json()
    assert result["errors"] == 5
    assert result["established"] == 0
    assert "Connection refused" in run.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--conns", "30000"], "RLIMIT_NOFILE"),
        (["--conns", "3", "--procs", "4"], "more than --conns"),
        (["--conns", "3", "--source-addrs", "127.0.0.2", "--unix", "/tmp/x"], "Unix socket"),
        (["--conns", "3", "--source-addrs", "::1"], "family"),
        (["--conns", "0"], "at least 1"),
        (["--duration", "1", "--messages", "5"], "not allowed with"),
        (["--source-addrs", "127.0.0.9-127.0.0.2"], "upwards"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    """Arguments or limits that cannot work are refused before anything connects."""
    run = bench("--port", "9", *args)
    assert run.returncode == 2
    assert message in run.stderr


def test_too_many_per_source_address() -> None:
    """More connections than one source address has client ports: refused, with the fix."""
    run = bench("--port", "9", "--conns", "39000", "--procs", "2")
    assert run.returncode == 2
    assert "--source-addrs" in run.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_reports_partial_and_reaps(live_server: EchoServer, signum: int) -> None:
    """Ctrl-C (SIGINT to the whole group) or SIGTERM to the parent: partial figures, exit 130."""
    with subprocess.Popen(
        [
            sys.executable, "-m", "rawepoll", "bench", *live_server.target(),
            "--conns", "20", "--duration", "60", "--procs", "2", "--json",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=python_env(),
        start_new_session=True,
        # SIGINT's default action even when the tests run where it is ignored (a background job)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    ) as proc:  # fmt: skip
        try:
            assert proc.stderr is not None
            # The first progress line of the measured run: traffic is flowing.
            for line in proc.stderr:
                if " messages, " in line:
                    break
            if signum == signal.SIGINT:
                os.killpg(proc.pid, signum)  # what a terminal's Ctrl-C does
            else:
                proc.send_signal(signum)
            out, _ = proc.communicate(timeout=BENCH_BOUND)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    assert wait_group_gone(proc.pid), "load processes left behind"
    assert proc.returncode == 130
    result = BenchRun(proc.returncode, out, "").json()
    assert result["interrupted"] is True
    assert result["errors"] == 0
    assert result["mismatches"] == 0
    assert result["messages"] > 0


# ---------------------------------------------------------------- the library API


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_run_load_in_process(live_server: EchoServer) -> None:
    """``run_load`` returns a ``LoadResult``; it leaves no process and no descriptor behind."""
    assert live_server.port is not None
    before, kids = open_fds(), _children_of_self()
    lines: list[str] = []
    result = run_load(
        host="127.0.0.1",
        port=live_server.port,
        conns=30,
        messages=2000,
        duration=None,
        procs=2,
        pipeline=2,
        progress=lines.append,
    )
    assert isinstance(result, LoadResult)
    check_clean(result.as_dict(), conns=30, size=64)
    assert result.messages == 2000
    assert result.ok
    assert lines and lines[0].startswith("rawepoll bench: ")
    assert open_fds() == before
    assert _children_of_self() == kids


def test_run_load_interrupted_in_process(live_server: EchoServer) -> None:
    """Ctrl-C in the caller: ``LoadInterrupted`` (a ``KeyboardInterrupt``) with the figures."""
    assert live_server.port is not None
    before, kids = open_fds(), _children_of_self()
    # A process, not a thread, sends the signal: the test process must be free to fork.
    # Python's own SIGINT handler, even where the tests run with SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with subprocess.Popen(["sh", "-c", f"sleep 1; kill -INT {os.getpid()}"]) as killer:
        try:
            with pytest.raises(LoadInterrupted) as caught:
                run_load(port=live_server.port, conns=10, duration=60, procs=2)
        finally:
            killer.kill()
            signal.signal(signal.SIGINT, previous)
    result = caught.value.result
    assert isinstance(caught.value, KeyboardInterrupt)
    assert result.interrupted
    assert result.errors == 0 and result.mismatches == 0
    assert open_fds() == before
    assert _children_of_self() == kids


def _children_of_self() -> set[int]:
    found: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            found.update(int(word) for word in f.read().split())
    return found


def test_import_rawepoll_loads_no_extra() -> None:
    """``import rawepoll`` (and the command's modules) import neither rich nor hdrhistogram."""
    code = (
        "import sys, rawepoll, rawepoll.tools.loadgen, rawepoll.__main__;"
        "bad = [m for m in ('rich', 'hdrh') if m in sys.modules];"
        "assert not bad, bad"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=BENCH_BOUND,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_help_lists_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rawepoll", "bench", "--help"],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=BENCH_BOUND,
        check=False,
    )
    assert done.returncode == 0
    for option in ("--conns", "--pipeline", "--procs", "--source-addrs", "--json", "--unix"):
        assert option in done.stdout


def test_missing_extra_says_how_to_install(live_server: EchoServer, tmp_path: Path) -> None:
    """Without hdrhistogram: a one-line error with the pip command, exit 1."""
    blocker = tmp_path / "hdrh"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    env = python_env()
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    done = subprocess.run(
        [sys.executable, "-m", "rawepoll", "bench", *live_server.target(), "--messages", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=BENCH_BOUND,
        check=False,
    )
    assert done.returncode == 1
    assert "pip install 'rawepoll[bench]'" in done.stderr
