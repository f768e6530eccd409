"""The binding cost next to select.epoll: ``rawepoll compare --sections binding``.

What it measures and how: :mod:`rawepoll.tools.compare.binding`.  Results (JSON,
markdown, PNG) go to ``bench-results/binding/`` unless ``--out`` says
otherwise; every other option is ``rawepoll compare``'s (``--quick``,
``--rounds N``, ...).
"""

from __future__ import annotations

import sys

import _common

if __name__ == "__main__":
    sys.exit(_common.run_section("binding"))
