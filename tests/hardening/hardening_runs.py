"""Running the hardening tools (``python -m hardening.X --json``) as children, bounded.

A tool starts servers and client processes of its own, each in a session of
its own; on SIGTERM it unwinds and stops every one of them.  So a run that
overstays its bound gets SIGTERM first, then SIGKILL.

This folder has neither ``__init__.py`` nor ``conftest.py`` on purpose.  As a
package it would be imported under the name ``hardening`` (``tests/`` is not a
package) and hide the real ``hardening`` package from the tests that import
it; a ``conftest.py`` here would be imported as ``conftest`` and hide
``tests/conftest.py``.  So the test modules import this one by its own name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
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
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + (os.pathsep + path if path else ""))
    with subprocess.Popen(
        [sys.executable, "-m", f"hardening.{module}", *args, "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=env,
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
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON report (exit {proc.returncode}):\n{out}\n{err}") from None
    return ToolRun(proc.returncode, report, err)


def corrupting_command(how: str) -> str:
    """The command line of the broken echo server (``flip`` or ``close``)."""
    return f"{sys.executable} {os.path.join(HERE, 'corrupting_echo.py')} {how}"
