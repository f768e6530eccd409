"""The ``rawepoll`` command: version, help, and the demo end to end (small)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from support.proc import alive, descendants

import rawepoll


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rawepoll", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"rawepoll {rawepoll.__version__}"


def test_help_lists_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_unknown_command_is_an_error() -> None:
    result = run("no-such-command")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_demo_help() -> None:
    result = run("demo", "--help")
    assert result.returncode == 0
    assert "--conns" in result.stdout


@pytest.mark.timeout(120)
def test_demo_binding_step_verifies_everything() -> None:
    """Step 1 compares ready sets and echoes; a small run must say all is well."""
    result = run(
        "demo", "--steps", "binding", "--binding-conns", "200", "--rounds", "3", timeout=110
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3/3 rounds identical" in result.stdout
    assert "200/200 messages verified" in result.stdout
    assert "demo: OK" in result.stdout


@pytest.mark.timeout(120)
def test_demo_server_step_verifies_every_connection() -> None:
    """Step 2 runs the server under load; every connection and byte must check out."""
    result = run("demo", "--steps", "server", "--conns", "100", "--duration", "1", timeout=110)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "100/100 connections" in result.stdout
    assert "errors 0, mismatches 0" in result.stdout
    assert "exited with status 0" in result.stdout
    assert "demo: OK" in result.stdout


def test_demo_refuses_unknown_steps() -> None:
    result = run("demo", "--steps", "binding,nonsense")
    assert result.returncode == 2
    assert "nonsense" in result.stderr


@pytest.mark.timeout(120)
def test_demo_ctrl_c_stops_everything_it_started() -> None:
    """Ctrl-C (SIGINT to the process group) mid-load: exit 130, no process left behind."""
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rawepoll",
            "demo",
            "--steps",
            "server",
            "--conns",
            "200",
            "--duration",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # CI may run us with SIGINT ignored, which a child would inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:  # wait for the load to be running, not for a clock
            if "msg/s now" in line:
                break
        # What the demo started: the server (in a session of its own, which Ctrl-C
        # does not reach), its workers, the load processes.
        started = descendants(demo.pid)
        assert started, "the demo runs no process"
        os.killpg(demo.pid, signal.SIGINT)
        out, _ = demo.communicate(timeout=60)
        assert demo.returncode == 130, out
        assert "demo: interrupted" in out
        left = {pid for pid in started if alive(pid)}
        assert not left, f"still running after the demo: {left}"
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.communicate()
