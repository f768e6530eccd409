"""Child interpreters and commands: this repository importable, every run bounded.

A child that may outlive its bound runs in a session of its own, so that its
whole process group can be killed; :func:`wait_group_gone` then proves that
nothing of it is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = str(Path(__file__).resolve().parent.parent.parent)
GROUP_BOUND = 10.0  # for a killed process group to be gone


def python_env(*extra_paths: str) -> dict[str, str]:
    """The environment for a child interpreter: rawepoll (and ``extra_paths``) importable."""
    paths = [*extra_paths, REPO_ROOT]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def run_python(source: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in a fresh interpreter (this one) with rawepoll importable.

    For tests that must change process-wide state (rlimits, signal masks) or
    may crash: the test process is left untouched.  Output is captured as text.
    """
    return subprocess.run(
        [sys.executable, "-c", source, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=python_env(),
        cwd=REPO_ROOT,
        check=False,
    )


def run_group(
    argv: list[str],
    bound: float,
    *,
    env: dict[str, str] | None = None,
    what: str | None = None,
    leave_nothing: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to its end in a session of its own; after ``bound`` s, SIGKILL the group.

    Overstaying the bound fails the test (an :class:`AssertionError`), with
    nothing of the child left running.  With ``leave_nothing``, so does a child
    that ended but left processes of its group behind (they are killed).
    """
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=env if env is not None else python_env(),
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=bound)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            name = what or " ".join(argv[1:4])
            raise AssertionError(f"{name} still running after {bound} s\n{err}") from None
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)  # interrupted: nothing of it may be left
            proc.communicate()
            raise
    if leave_nothing and not wait_group_gone(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{what or ' '.join(argv[1:4])} left processes behind")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is left (zombies included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_group_gone(pgid: int, bound: float = GROUP_BOUND) -> bool:
    """Wait until process group ``pgid`` is empty; False if it is not within ``bound``."""
    pacer = threading.Event()
    deadline = time.monotonic() + bound
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        pacer.wait(0.02)
    return True
