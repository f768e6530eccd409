"""Echo servers side by side, server CPU time per message: ``rawepoll compare --sections echo``.

What it measures and how: :mod:`rawepoll.tools.compare.echo`.  Results (JSON,
markdown, PNG) go to ``bench-results/echo/`` unless ``--out`` says
otherwise; every other option is ``rawepoll compare``'s (``--quick``,
``--rounds N``, ...).
"""

from __future__ import annotations

import sys

import _common

if __name__ == "__main__":
    sys.exit(_common.run_section("echo"))
