"""Every Python example in the docs runs, and prints what it says it prints.

A block fenced as ```` ```python ```` runs as a script of its own; one fenced as
```` ```python no-run ```` (a server that blocks until a signal, a fragment of a
larger program) is shown, not run.  The site itself is tested in tests/docs/.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
BLOCKS = [
    pytest.param(block, id=f"{path.name}#{index}")
    for path in DOCS
    for index, block in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), re.S))
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("code", BLOCKS)
def test_example_runs(code: str) -> None:
    """A doc example that raises, hangs or leaks a warning is a broken doc."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_there_are_examples() -> None:
    """The API page keeps a runnable example per layer."""
    assert len(BLOCKS) >= 3
