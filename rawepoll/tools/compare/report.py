"""What a comparison writes: tables (terminal and markdown), JSON, progress lines, plots.

rich (terminal tables) and matplotlib (plots) are optional extras, imported
only when used: without rich a table is aligned plain text, without
matplotlib there are no plots and the caller says so.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from rawepoll.tools.compare.extras import optional
from rawepoll.tools.compare.stats import Spread

__all__ = [
    "Table",
    "bars",
    "fmt_ratio",
    "fmt_spread",
    "markdown",
    "progress",
    "pyplot",
    "rounds",
    "save",
    "show",
    "write_json",
]


@dataclass
class Table:
    """A titled table of strings; the first column is a label, the others are figures."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)  # printed under the table


def show(table: Table) -> None:
    """Print ``table``: a rich table on a terminal, aligned plain text otherwise."""
    if not (sys.stdout.isatty() and _show_rich(table)):
        print(table.title)
        for line in _aligned(table.headers, table.rows):
            print(line)
    for note in table.notes:
        print(note)
    print(flush=True)


def _show_rich(table: Table) -> bool:
    rich_table, rich_box = optional("rich.table"), optional("rich.box")
    rich_console = optional("rich.console")
    if rich_table is None or rich_box is None or rich_console is None:
        return False
    shown = rich_table.Table(title=table.title, title_justify="left", box=rich_box.SIMPLE_HEAD)
    for i, header in enumerate(table.headers):
        shown.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
    for row in table.rows:
        shown.add_row(*row)
    rich_console.Console().print(shown)
    return True


def _aligned(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [line(headers), "  ".join("-" * width for width in widths), *map(line, rows)]


def markdown(table: Table) -> str:
    """``table`` as a markdown section: the title in bold, a pipe table, the notes."""
    lines = [f"**{table.title}**", ""]
    lines.append("| " + " | ".join(table.headers) + " |")
    lines.append("|---|" + "---:|" * (len(table.headers) - 1))
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    if table.notes:
        lines.append("")
        lines += [note.strip() for note in table.notes]
    return "\n".join(lines) + "\n"


def progress(message: str) -> None:
    """One line on stderr, so a long run shows it is alive without touching stdout."""
    print(message, file=sys.stderr, flush=True)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` as indented JSON; dataclasses become objects."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def rounds(count: int) -> str:
    """``"1 round"``, ``"5 rounds"``."""
    return f"{count} round{'s' if count != 1 else ''}"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}"


def fmt_spread(spread: Spread, digits: int = 2) -> str:
    """``low-high`` of a spread."""
    return f"{spread.low:,.{digits}f}-{spread.high:,.{digits}f}"


def pyplot() -> ModuleType | None:
    """``matplotlib.pyplot`` on the file-only Agg backend, or None without matplotlib."""
    matplotlib = optional("matplotlib")
    if matplotlib is None:
        return None
    matplotlib.use("Agg")
    return optional("matplotlib.pyplot")


def bars(
    ax: Any, names: Sequence[str], spreads: Sequence[Spread], fmt: str, colors: Sequence[str]
) -> None:
    """Horizontal bars of the medians, labelled, with min-max error bars; the first on top."""
    err = [[s.median - s.low for s in spreads], [s.high - s.median for s in spreads]]
    drawn = ax.barh(names, [s.median for s in spreads], xerr=err, color=colors, capsize=3)
    ax.bar_label(drawn, fmt=fmt, padding=4, fontsize=8)
    ax.invert_yaxis()
    ax.grid(True, axis="x", alpha=0.3)


def save(plt: ModuleType, fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` (PNG) and free it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
