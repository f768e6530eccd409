"""The hardening tools as commands (``python -m hardening.X ... --json``), bounded.

A tool starts servers and client processes of its own, each in a session of
its own; on SIGTERM it unwinds and stops every one of them.  So a run that
overstays its bound gets SIGTERM first, then SIGKILL of its group.  The tests
read the tool's JSON report and exit status, never its internals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from support.children import REPO_ROOT, python_env

BROKEN_ECHO = os.path.join(REPO_ROOT, "tests", "hardening", "corrupting_echo.py")
UNWIND_BOUND = 30.0  # after SIGTERM, for the tool to stop what it started


@dataclass
class ToolRun:
    returncode: int
    report: dict[str, Any]
    stderr: str

    def describe(self) -> str:
        return f"exit {self.returncode}\nreport: {json.dumps(self.report)[:3000]}\n{self.stderr}"


def run_tool(module: str, *args: str, bound: float = 60.0) -> ToolRun:
    """``python -m hardening.MODULE ARGS --json``: exit status, the JSON report, stderr."""
    with subprocess.Popen(
        [sys.executable, "-m", f"hardening.{module}", *args, "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=python_env(),
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=bound)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=UNWIND_BOUND)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
            raise AssertionError(
                f"hardening.{module} still running after {bound} s\n{err}"
            ) from None
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON report (exit {proc.returncode}):\n{out}\n{err}") from None
    return ToolRun(proc.returncode, report, err)


def corrupting_command(how: str) -> str:
    """The command line of the broken echo server (``flip`` or ``close``)."""
    return f"{sys.executable} {BROKEN_ECHO} {how}"
