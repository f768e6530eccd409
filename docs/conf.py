"""Sphinx configuration for the rawepoll documentation site (``make docs``).

The pages are the Markdown files GitHub shows (MyST reads them); the API
reference comes from the docstrings (autodoc, Google-style sections through
napoleon).  Local extensions live in ``_ext/``: ``apicheck`` fails the build
when a public name is missing from the reference, ``links`` gives the
repository-relative links of the Markdown pages a target in the site, and
``timelines`` checks at every build that the LT/ET picture still shows what a
real epoll does, and ``layers`` that the architecture picture places every module
of the package.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS / "_ext"), str(DOCS.parent)]

import rawepoll  # noqa: E402 -- found through the path set just above

project = "rawepoll"
author = "rawepoll developers"
copyright = "2026, rawepoll developers"
release = version = rawepoll.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "apicheck",
    "links",
    "timelines",
    "layers",
]
exclude_patterns = ["_build", "_ext", "results"]
nitpicky = True
nitpick_ignore_regex = [
    # Private helpers named in signatures and docstrings: details, not documented.
    (r"py:.*", r"([\w.]+\.)?_[A-Za-z]\w*"),
]

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"rawepoll {release}"
html_show_sourcelink = False


def _no_borrowed_docstring(
    _app: object, what: str, _name: str, obj: object, _options: object, lines: list[str]
) -> None:
    """A constant has no docstring of its own: show its value in hex, not int's docstring.

    (The arguments of Sphinx's ``autodoc-process-docstring`` event, which passes them by
    position; those unused here are named ``_*``.)
    """
    if what not in ("data", "attribute") or type(obj).__doc__ is None:
        return
    borrowed = type(obj).__doc__.expandtabs().strip().splitlines()
    if [line.strip() for line in lines if line.strip()] != [
        line.strip() for line in borrowed if line.strip()
    ]:
        return
    lines.clear()
    if type(obj) is int and obj >= 0:
        lines.append(f"``{obj:#x}``")


def _all_pages_when_the_index_changes(
    app: Any, env: Any, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    """Every page carries the navigation of index.md: rebuild them all when it changes.

    (Sphinx would otherwise keep the old sidebar on pages it has no other reason to
    rewrite, in an incremental ``make docs``.)
    """
    return sorted(env.found_docs) if "index" in added | changed else []


def setup(app: Any) -> None:
    """The project's own hooks."""
    app.connect("autodoc-process-docstring", _no_borrowed_docstring)
    app.connect("env-get-outdated", _all_pages_when_the_index_changes)
