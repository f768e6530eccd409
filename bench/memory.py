"""Memory per idle connection and accept rate: ``rawepoll compare --sections memory``.

What it measures and how: :mod:`rawepoll.tools.compare.memory`.  Results (JSON,
markdown, PNG) go to ``bench-results/memory/`` unless ``--out`` says
otherwise; every other option is ``rawepoll compare``'s (``--quick``,
``--rounds N``, ...).
"""

from __future__ import annotations

import sys

import _common

if __name__ == "__main__":
    sys.exit(_common.run_section("memory"))
