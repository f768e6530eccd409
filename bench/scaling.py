"""Wait cost against the number of watched descriptors: ``rawepoll compare --sections scaling``.

What it measures and how: :mod:`rawepoll.tools.compare.scaling`.  Results (JSON,
markdown, PNG) go to ``bench-results/scaling/`` unless ``--out`` says
otherwise; every other option is ``rawepoll compare``'s (``--quick``,
``--rounds N``, ...).
"""

from __future__ import annotations

import sys

import _common

if __name__ == "__main__":
    sys.exit(_common.run_section("scaling"))
