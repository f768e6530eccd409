"""Links that work both on GitHub and in the Sphinx site.

The pages in ``docs/`` are plain Markdown that GitHub renders, so they link to
files by their paths in the repository (``../bench/README.md``).  The site
gives those links a target:

* a Markdown file outside the site that has a page of its own in the site
  (``PAGES``, a page that includes it) links to that page;
* any other file of the repository becomes a download of the file itself;
* a Python name of the standard library links to docs.python.org (the build is
  offline, so there is no intersphinx inventory to ask);
* a name that rawepoll re-exports (``rawepoll.epoll.Epoll``, or ``Epoll`` in the
  docstring of ``rawepoll.epoll``) resolves to its public name
  (``rawepoll.Epoll``), where the reference documents it; a short name that
  exactly one documented object ends with (``EpollEvent``) resolves to it.

What none of these rules resolves stays a warning, and ``-W -n`` makes it an
error: a broken link is caught, not hidden -- except a name met in the
documentation of an internal module (the server's loop, the load generator's
engine, ...), which is shown as plain text: those modules are documented for
the curious, and their helpers change with every refactoring.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms import SphinxTransform

# Markdown files outside docs/ (repository paths, no suffix) -> the site's page for them.
PAGES = {"bench/README": "bench"}

# Modules of the standard library -> their page under https://docs.python.org/3/library/.
STDLIB_PAGES = {
    "asyncio": "asyncio-eventloop",
    "collections.abc": "collections.abc",
    "ctypes": "ctypes",
    "os": "os",
    "resource": "resource",
    "select": "select",
    "selectors": "selectors",
    "signal": "signal",
    "socket": "socket",
    "typing": "typing",
}
PYTHON_DOCS = "https://docs.python.org/3/library/"

# The modules whose documentation is the public API: every name they mention must resolve.
PUBLIC_MODULES = {
    "rawepoll",
    "rawepoll.unix",
    "rawepoll.events",
    "rawepoll.epoll",
    "rawepoll.selector",
    "rawepoll.limits",
    "rawepoll._asyncio",
    "rawepoll.server",
    "rawepoll.server.handler",
    "rawepoll.tools.loadgen",
}


class RepositoryLinks(SphinxTransform):
    """Point links to Markdown files the site does not build at something that exists."""

    default_priority = 100  # while reading, before the download collector sees the doctree

    def apply(self, **kwargs: Any) -> None:
        srcdir = Path(self.env.srcdir)
        repo = srcdir.parent
        here = Path(self.env.doc2path(self.env.docname)).parent
        for node in list(self.document.findall(addnodes.pending_xref)):
            if node.get("refdomain") != "doc" or node["reftarget"] in self.env.found_docs:
                continue
            source = (srcdir / node["reftarget"]).with_suffix(".md").resolve()
            if not source.is_relative_to(repo) or not source.is_file():
                continue  # left to MyST, which warns
            page = PAGES.get(source.relative_to(repo).with_suffix("").as_posix())
            if page is not None:
                node["reftarget"] = page
                continue
            download = addnodes.download_reference(
                refdomain=None,
                reftarget=os.path.relpath(source, here),
                refdoc=self.env.docname,
                reftype="myst",
                refexplicit=True,
            )
            download += node.children
            node.replace_self(download)


def _python_docs(target: str) -> str | None:
    """The docs.python.org address of a public standard-library name of a known module."""
    parts = target.split(".")
    if any(part.startswith("_") for part in parts):
        return None  # private (asyncio._UnixSelectorEventLoop): no page documents it
    for cut in range(len(parts), 0, -1):
        page = STDLIB_PAGES.get(".".join(parts[:cut]))
        if page is not None:
            anchor = "" if cut == len(parts) else f"#{target}"
            return f"{PYTHON_DOCS}{page}.html{anchor}"
    return None


def _public_names(target: str, module: str | None) -> list[str]:
    """Where a name may be documented: under each package above the module defining it."""
    full = f"{module}.{target}" if module and not target.startswith("rawepoll.") else target
    parts = full.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest prefix that is a module
        if ".".join(parts[:cut]) in sys.modules:
            break
    else:
        return []
    return [".".join([*parts[:package], *parts[cut:]]) for package in range(cut - 1, 0, -1)]


def _unique_suffix(domain: Any, target: str) -> list[str]:
    """The one documented name that ends in ``.target``, if exactly one does."""
    matches = [name for name in domain.objects if name.endswith(f".{target}")]
    return matches if len(matches) == 1 else []


def _internal_text(node: Any, contnode: Any) -> Any:
    """Plain text for a name met in an internal module's documentation; None elsewhere.

    The reference documents the internal modules for the curious, members and
    all, but their helpers change with every refactoring: a helper type they
    name and do not document is shown as text.  A name met in the public API
    (PUBLIC_MODULES) still has to resolve, or the build fails.
    """
    module = node.get("py:module") or ""
    internal = module.startswith("rawepoll.") and module not in PUBLIC_MODULES
    return contnode if internal else None


def resolve(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """``missing-reference``: a re-exported rawepoll name, or the standard library."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    domain = env.get_domain("py")
    for name in [*_public_names(target, node.get("py:module")), *_unique_suffix(domain, target)]:
        if name in domain.objects:
            found = domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
            )
            if found is not None:
                return found
    url = _python_docs(target)
    if url is None:
        return _internal_text(node, contnode)
    ref = nodes.reference("", "", internal=False, refuri=url, reftitle=f"(in Python) {target}")
    ref += contnode
    return ref


def setup(app: Any) -> dict[str, Any]:
    """Register the link rules."""
    app.add_transform(RepositoryLinks)
    app.connect("missing-reference", resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
