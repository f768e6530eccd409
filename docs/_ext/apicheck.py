"""Every public name has its entry in the API reference, or the build fails.

A name added to a module's ``__all__`` and forgotten in ``docs/reference.md``
is reported as a warning once the whole site has been read (an error under
``-W``), so the reference cannot silently fall behind the code.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

from sphinx.util import logging

# The modules whose ``__all__`` is the public API.
PUBLIC = (
    "rawepoll",
    "rawepoll.unix",
    "rawepoll.server",
    "rawepoll.tools.loadgen",
    "rawepoll.tools.c1m",
)


def missing(env: Any) -> list[str]:
    """The public names that no page documents."""
    domain = env.get_domain("py")
    documented = set(domain.objects)
    absent = []
    for module_name in PUBLIC:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            full = f"{module_name}.{name}"
            if isinstance(getattr(module, name), types.ModuleType):
                full = getattr(module, name).__name__
            if full not in documented:
                absent.append(full)
    return absent


def check(app: Any, env: Any) -> None:
    """``env-check-consistency``: warn for each undocumented public name."""
    for name in missing(env):
        logging.getLogger(__name__).warning(
            "%s is public (in __all__) but the API reference does not document it", name
        )


def setup(app: Any) -> dict[str, Any]:
    """Register the check."""
    app.connect("env-check-consistency", check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
