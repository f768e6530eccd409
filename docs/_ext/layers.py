"""The architecture diagram (docs/img/layers.svg), drawn from one table and checked at every build.

:data:`LAYERS` places every module of the ``rawepoll`` package in a layer,
lowest first.  The picture is drawn from it, so it cannot disagree with the
table; and at every build the table is checked against the package as it is
-- a module that exists but is placed nowhere, or a placed module that no
longer exists, is a warning (an error under ``-W``), as is a picture that no
longer matches the table.  ``python docs/_ext/layers.py`` redraws it.
"""

from __future__ import annotations

import pkgutil
import sys
import textwrap
from html import escape
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SVG = ROOT / "docs" / "img" / "layers.svg"

# (layer, what it is, modules), lowest first.  A module named "pkg.*" stands for a
# package and everything in it.
LAYERS: list[tuple[str, str, list[str]]] = [
    ("FFI", "every C function, declared once", ["_ffi"]),
    ("Go mirror", "golang.org/x/sys/unix, name for name", ["unix"]),
    ("Buffers", "[]EpollEvent, read without allocation", ["events"]),
    (
        "Pythonic",
        "select.epoll, selectors, asyncio, rlimits",
        ["epoll", "selector", "_asyncio", "limits"],
    ),
    (
        "Server: the loop",
        "one worker's connections",
        ["server.loop", "server.timers", "server.faults", "server.stats", "server.listen"],
    ),
    (
        "Server: push",
        "handles, topics, fan-out, across workers and hosts",
        [
            "server.push",
            "server.topics",
            "server.delivery",
            "server.relay",
            "server.control",
            "server.broker",
        ],
    ),
    (
        "Server: protocols",
        "sans-IO: bytes in, bytes out",
        ["server.handler", "server.websocket.*"],
    ),
    (
        "Server: processes",
        "workers, configuration, events, commands",
        [
            "server",
            "server.supervisor",
            "server.config",
            "server.report",
            "server.serving",
            "server.cli",
            "server.publish_cli",
        ],
    ),
    (
        "Tools",
        "what measures rather than serves",
        [
            "tools",
            "tools.serverproc",
            "tools.loadgen.*",
            "tools.compare.*",
            "tools.c1m.*",
            "tools.demo",
        ],
    ),
    ("Command", "rawepoll COMMAND", ["__main__", "_cli", "_version"]),
]

_PALETTE = ["#e8eef7", "#dce7f5", "#d2e0f3", "#c8d9f0", "#e5f2e5", "#d8ecd8", "#cbe6cb", "#bfe0bf"]
_TOOLS = "#f5ecd9"
_WIDTH = 980
_ROW = 62
_LABEL = 240
_GAP = 6


def package_modules() -> set[str]:
    """Every module of the package, relative to ``rawepoll`` (``server.loop``, ``unix``...)."""
    import rawepoll  # noqa: PLC0415 -- the docs build imports the package anyway

    found = set()
    for info in pkgutil.walk_packages(rawepoll.__path__, "rawepoll."):
        name = info.name.removeprefix("rawepoll.")
        found.add(name)
    return found


def placed(modules: set[str]) -> tuple[set[str], list[str]]:
    """``(modules the table covers, entries of the table that match nothing)``."""
    covered: set[str] = set()
    dangling = []
    for _layer, _what, entries in LAYERS:
        for entry in entries:
            if entry.endswith(".*"):  # the package and what is in it
                package = entry[:-2]
                hits = {m for m in modules if m == package or m.startswith(package + ".")}
            else:
                hits = {entry} & modules
            if not hits:
                dangling.append(entry)
            covered |= hits
    return covered, dangling


def problems() -> list[str]:
    """What is wrong between the table, the package and the committed picture."""
    modules = package_modules()
    covered, dangling = placed(modules)
    found = [
        f"rawepoll.{m} is in no layer of docs/_ext/layers.py" for m in sorted(modules - covered)
    ]
    found += [f"docs/_ext/layers.py names {entry}, which does not exist" for entry in dangling]
    if not SVG.exists() or SVG.read_text() != draw():
        found.append("docs/img/layers.svg does not match the table: run python docs/_ext/layers.py")
    return found


def _box(place: tuple[float, float, float, float], fill: str, text: str, size: int) -> str:
    """A rounded box at ``place`` (x, y, width, height) with ``text`` centred in it."""
    x, y, w, h = place
    return (
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" height="{h:.0f}" rx="5" '
        f'fill="{fill}" stroke="#5a6b82" stroke-width="1"/>'
        f'<text x="{x + w / 2:.0f}" y="{y + h / 2 + size / 3:.0f}" font-size="{size}" '
        f'text-anchor="middle">{escape(text)}</text>'
    )


def draw() -> str:
    """The SVG: one band per layer, the highest at the top, a box per module."""
    height = len(LAYERS) * (_ROW + _GAP) + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {height}" '
        f'width="{_WIDTH}" height="{height}" font-family="DejaVu Sans, sans-serif">',
        f'<rect width="{_WIDTH}" height="{height}" fill="white"/>',
    ]
    for row, (layer, what, entries) in enumerate(reversed(LAYERS)):
        index = len(LAYERS) - 1 - row
        y = 10 + row * (_ROW + _GAP)
        fill = _TOOLS if layer in ("Tools", "Command") else _PALETTE[index % len(_PALETTE)]
        parts.append(
            f'<text x="10" y="{y + 24}" font-size="14" font-weight="bold">{escape(layer)}</text>'
        )
        for k, line in enumerate(textwrap.wrap(what, 40)):
            parts.append(
                f'<text x="10" y="{y + 40 + 12 * k}" font-size="10" fill="#444">'
                f"{escape(line)}</text>"
            )
        span = (_WIDTH - _LABEL - 10) / len(entries)
        for i, entry in enumerate(entries):
            x = _LABEL + i * span
            size = 12 if span > 150 else 10
            parts.append(_box((x, y + 8, span - 6, _ROW - 16), fill, entry, size))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> int:
    """Redraw the picture from the table."""
    SVG.write_text(draw())
    print(f"wrote {SVG}")
    return 0


# -- Sphinx ----------------------------------------------------------------------------------


def _check(app: Any) -> None:
    from sphinx.util import logging  # noqa: PLC0415

    for problem in problems():
        logging.getLogger(__name__).warning("%s", problem)


def setup(app: Any) -> dict[str, Any]:
    """At every build: every module placed, every placed module real, the picture current."""
    app.connect("builder-inited", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
