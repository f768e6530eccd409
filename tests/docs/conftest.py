"""The docs site, built once per test session (once per run under pytest-xdist)."""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import browser

BUILD_TIMEOUT = 150  # seconds; the build takes ~4 s of CPU, more on a loaded machine
LOCK_BOUND = BUILD_TIMEOUT + 30  # for another worker's build to finish


def _build(where: Path) -> Path:
    """``make docs`` into ``where/html``; fail the test if it fails or warns."""
    out = where / "html"
    result = browser.build(out, where / "doctrees", BUILD_TIMEOUT)
    if result.returncode != 0 or result.stderr.strip():
        pytest.fail(f"sphinx -W -n failed ({result.returncode}):\n{result.stderr}")
    return out


def _lock(file: object, bound: float) -> None:
    """Take an exclusive lock on ``file``, polling; fail after ``bound`` s."""
    pacer = threading.Event()
    deadline = time.monotonic() + bound
    while True:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[arg-type]
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                pytest.fail(f"the docs build of another worker took more than {bound} s")
            pacer.wait(0.1)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The HTML site as ``make docs`` builds it; the build must not warn.

    Under pytest-xdist the workers of a run share one build in the run's
    temporary directory: the first to need it builds it, holding a lock; the
    others wait for the lock and find it built.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        with tempfile.TemporaryDirectory(prefix="rawepoll-docs-") as tmp:
            yield _build(Path(tmp))
        return
    shared = tmp_path_factory.getbasetemp().parent / "docs-site"
    with open(f"{shared}.lock", "w") as lock:
        _lock(lock, LOCK_BOUND)
        built = shared / "built"
        if not built.exists():
            _build(shared)
            built.touch()
    yield shared / "html"


@pytest.fixture(scope="session")
def chromium() -> None:
    """Headless Chromium is there (else skip, or fail when CI requires it).

    Session-scoped so that it is checked before the site is built for nothing.
    """
    browser.require_chromium()
