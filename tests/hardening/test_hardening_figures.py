"""The arithmetic behind the reports: drift, loss attribution, the fuzz driver's verdicts.

It is in doctests next to the code (``hardening/_common.py``'s ``drift``,
``hardening/chaos.py``'s ``attribute``, ``hardening/fuzz.py``'s ``classify``),
run here as a command like every other hardening tool, without a server.
"""

from __future__ import annotations

import re
import sys

import pytest
from support.children import run_group

MODULES = {
    "hardening/_common.py": "_common.drift",
    "hardening/chaos.py": "chaos.attribute",
    "hardening/fuzz.py": "fuzz.classify",
}


@pytest.mark.timeout(120)
def test_the_doctests_of_the_report_arithmetic_pass() -> None:
    result = run_group([sys.executable, "-m", "doctest", "-v", *MODULES], bound=100)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    for name in MODULES.values():  # each docstring's examples ran
        assert re.search(rf"^\s+\d+ tests in {re.escape(name)}$", result.stdout, re.M), name
    assert " 0 failed." in result.stdout
