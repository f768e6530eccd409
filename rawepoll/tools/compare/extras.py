"""The optional extras ``rawepoll compare`` uses when installed (``pip install 'rawepoll[bench]'``).

``import rawepoll`` never imports them; a comparison imports each only when it
needs it and does without when it is missing: rich (terminal tables), matplotlib
(plots), uvloop (a peer).  Imported by
name, so the type checker does not need them installed either.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["optional"]


def optional(name: str) -> ModuleType | None:
    """The module ``name`` of an optional extra, imported now, or None if it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
