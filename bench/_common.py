"""What the bench/ scripts share: each runs one section of ``rawepoll compare``.

The measuring code lives in the package (:mod:`rawepoll.tools.compare`), so that the
installed ``rawepoll compare`` command and these scripts measure alike; a
script adds its section and a default output folder, and passes every other
option through (``--quick``, ``--rounds N``, ``--out DIR``, ``--no-pin``, ...;
see ``rawepoll compare --help``).
"""

from __future__ import annotations

import sys

from rawepoll.__main__ import main


def run_section(section: str) -> int:
    """``rawepoll compare --sections SECTION --out bench-results/SECTION`` + our options."""
    return main(
        ["compare", "--sections", section, "--out", f"bench-results/{section}", *sys.argv[1:]]
    )
