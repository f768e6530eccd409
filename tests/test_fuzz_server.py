"""``python -m hardening.fuzz`` (``make fuzz``): a short run finds nothing; broken code is found.

The driver runs each target in a child interpreter: the binding's fuzzer, the
sans-IO handlers, and live level- and edge-triggered ``Worker`` loops driven by
hypothesis-chosen clients.  A few seconds per target from a fixed seed is the
suite's share (``make fuzz`` runs minutes).  To show that the checks bite, the
same driver is pointed at handlers that break the echo contract (defined
below; the child imports this module), and its verdict on a child that
segfaults is checked.

Every run is a process group of its own, killed as a group if a bound passes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any, ClassVar

import pytest
from support.children import REPO_ROOT

SEED = 20261129
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
RUN_BOUND = 400.0  # seconds for one driver run: its budget plus generous slack


def run_fuzz(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m hardening.fuzz ARGS`` with this folder importable (for the handlers below)."""
    path = os.pathsep.join(filter(None, [TESTS_DIR, REPO_ROOT, os.environ.get("PYTHONPATH")]))
    with subprocess.Popen(
        [sys.executable, "-m", "hardening.fuzz", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=path),
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=RUN_BOUND)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the target it runs
            proc.communicate()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def targets_of(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    report = json.loads(result.stdout)
    return {target["target"]: target for target in report["targets"]}


# ---------------------------------------------------------------- handlers that break the contract


class CorruptsBytes:
    """Echoes, but every ``a`` comes back as ``b``."""

    shared: ClassVar[bool] = True

    def data_received(self, data: memoryview) -> bytes:
        return bytes(data).replace(b"a", b"b")

    def eof_received(self) -> None:
        return None


class Segfaults:
    """Crashes the interpreter (SIGSEGV) on the first bytes it is given."""

    shared: ClassVar[bool] = True

    def data_received(self, data: memoryview) -> bytes:
        import ctypes

        ctypes.string_at(0)
        return bytes(data)

    def eof_received(self) -> None:
        return None


class RaisesOnZero:
    """Echoes, but raises on a zero byte (an exception escapes into the loop)."""

    shared: ClassVar[bool] = True

    def data_received(self, data: memoryview) -> memoryview:
        if 0 in data:
            raise ValueError("a zero byte")
        return data

    def eof_received(self) -> None:
        return None


# ---------------------------------------------------------------- the tests


@pytest.mark.timeout(600)
def test_a_short_run_of_every_target_finds_nothing() -> None:
    # Two seconds a target: each is exercised; the server loops and the handlers have
    # tests/server/ besides, the binding tests/test_fuzz.py, and `make fuzz` runs minutes.
    result = run_fuzz("--seconds", "10", "--seed", str(SEED), "--json")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    targets = targets_of(result)
    assert set(targets) == {"binding", "handlers", "server-lt", "server-et", "websocket"}
    for name, target in targets.items():
        assert target["findings"] == [], name
        assert target["calls"] > 0, name
        assert target["returncode"] == 0, name
    # Whether every public callable is in the binding's table is a finding of its own;
    # that a run calls each one is tests/test_fuzz.py's (a few seconds may not).
    assert set(targets["binding"]["public"]) <= set(targets["binding"]["targets"])
    assert set(targets["handlers"]["per_target"]) == {"echo", "upper"}
    for name in ("server-lt", "server-et"):
        assert targets[name]["bytes_verified"] > 0
        for stats in targets[name]["servers"].values():
            assert stats["open"] == 0 and stats["accepted"] == stats["closed"]


@pytest.mark.timeout(600)
def test_a_handler_that_corrupts_bytes_is_found() -> None:
    handler = f"{__name__}:CorruptsBytes"
    targets = "handlers,server-lt"
    result = run_fuzz(
        "--seconds",
        "30",
        "--seed",
        str(SEED),
        "--targets",
        targets,
        "--echo-handler",
        handler,
        "--json",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    found = targets_of(result)
    assert any(
        "differs from the model" in f["detail"] or "not a prefix" in f["detail"]
        for f in found["handlers"]["findings"]
    )
    server_finding = found["server-lt"]["findings"][0]  # the first one ends the run
    assert server_finding["kind"] == "server"
    assert "not a prefix" in server_finding["detail"] or "received" in server_finding["detail"]
    assert "seed" in server_finding["example"]


@pytest.mark.timeout(600)
def test_a_handler_that_raises_in_the_worker_is_found() -> None:
    """The worker survives the fault (its connection closes); the fuzzer still reports it."""
    handler = f"{__name__}:RaisesOnZero"
    result = run_fuzz(
        "--seconds",
        "30",
        "--seed",
        str(SEED),
        "--targets",
        "server-et",
        "--echo-handler",
        handler,
        "--json",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    findings = targets_of(result)["server-et"]["findings"]
    assert any(
        "the handler raised" in f["detail"] and "a zero byte" in f["detail"] for f in findings
    )


@pytest.mark.timeout(120)
def test_a_child_that_segfaults_becomes_a_finding() -> None:
    """The driver's verdict on a child killed by a signal: a crash, with its traceback kept."""
    result = run_fuzz(
        *("--seconds", "2", "--seed", str(SEED), "--targets", "handlers"),
        *("--echo-handler", f"{__name__}:Segfaults", "--json"),
    )
    assert result.returncode == 1, result.stderr[-3000:]
    target = targets_of(result)["handlers"]
    assert target["returncode"] == -signal.SIGSEGV
    [finding] = target["findings"]
    assert finding["kind"] == "crash" and "SIGSEGV" in finding["detail"]
    assert "Segmentation fault" in finding["stderr"]  # faulthandler's traceback, kept
    # A hang, a child without a report and a clean child: classify()'s doctests
    # (tests/hardening/test_hardening_figures.py runs them).


@pytest.mark.timeout(120)
def test_help_and_bad_arguments() -> None:
    help_text = run_fuzz("--help")
    assert help_text.returncode == 0
    for words in ("--seconds", "--seed", "--json", "binding", "server-et", "Exit status"):
        assert words in help_text.stdout
    assert run_fuzz("--targets", "nothing").returncode == 2
    assert run_fuzz("--seconds", "0").returncode == 2
