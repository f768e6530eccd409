"""Every Python example in the docs runs, and prints what it says it prints.

A block fenced as ```` ```python ```` runs as a script of its own; one fenced as
```` ```python no-run ```` (a server that blocks until a signal, a fragment of a
larger program) is shown, not run.  When every ``print(...)`` of a block ends
with a comment, the comments are the output, line by line, and are checked.
The site itself is tested in tests/docs/.
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
PRINT_SAYS = re.compile(r"^\s*print\(.*\)\s*# (?P<output>.*)$")


def promised_output(code: str) -> list[str] | None:
    """The lines the block's ``print`` comments promise, or None if some print has none."""
    prints = [line for line in code.splitlines() if "print(" in line]
    says = [PRINT_SAYS.match(line) for line in prints]
    if not prints or not all(says):
        return None
    return [match["output"].rstrip() for match in says if match]


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
    promised = promised_output(code)
    if promised is not None:
        assert result.stdout.splitlines() == promised


def test_there_are_examples() -> None:
    """The API page keeps a runnable example per layer."""
    assert len(BLOCKS) >= 3
