"""Fixtures of the compare tests: a tag in the environment that finds every process a test left.

Every server and load process a test starts inherits the test's environment,
so a unique variable in it marks them; after the test, no live process may
carry the mark.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LEAK_BOUND = 15.0  # processes told to stop have this long to be gone


def tagged_pids(tag: str) -> list[int]:
    """Live processes whose environment holds ``RAWEPOLL_TEST_TAG=tag``."""
    marker = f"RAWEPOLL_TEST_TAG={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def tagged_env() -> Iterator[dict[str, str]]:
    """An environment for child processes (rawepoll importable, tagged); checks for leaks after."""
    tag = uuid.uuid4().hex
    path = os.environ.get("PYTHONPATH")
    env = dict(
        os.environ,
        RAWEPOLL_TEST_TAG=tag,
        PYTHONPATH=str(REPO_ROOT) + (os.pathsep + path if path else ""),
    )
    yield env
    deadline = time.monotonic() + LEAK_BOUND
    while (left := tagged_pids(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes left running: {left}"
