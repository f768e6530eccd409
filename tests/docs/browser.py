"""Build the docs site, look at it in headless Chromium, and say what is wrong with it.

The checkers take what the browser produced (a screenshot, a DOM) and return a
list of problems, empty when the page is right, so that a test can both assert
that the real site passes and that a site broken on purpose does not.
"""

from __future__ import annotations

import contextlib
import html.parser
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_CHROMIUM = "RAWEPOLL_REQUIRE_CHROMIUM"

# The modules whose __all__ is the public API, as docs/_ext/apicheck.py has it.
PUBLIC = ("rawepoll", "rawepoll.unix", "rawepoll.server", "rawepoll.tools.loadgen")

# furo's sidebar background, light and dark palettes (--color-background-secondary).
SIDEBAR = ((0xF8, 0xF9, 0xFB), (0x1A, 0x1C, 0x1E))
# Colours of the figures: the LT/ET timelines' stranded bytes, matplotlib's first colour.
STRANDED_RED = (0xE5, 0x39, 0x35)
PLOT_BLUE = (0x1F, 0x77, 0xB4)
# What autodoc shows for a constant that has no docstring of its own, unless told not to.
BORROWED_DOCSTRING = "Convert a number or string to an integer"


def build(outdir: Path, doctrees: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """``make docs``'s command, into ``outdir``: warnings are errors, references nitpicked."""
    command = [sys.executable, "-m", "sphinx", "-W", "-n", "--keep-going", "-q", "-b", "html"]
    command += ["-d", str(doctrees), str(DOCS), str(outdir)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )


def require_chromium() -> None:
    """Skip without Chromium, unless the environment demands it (CI): then fail."""
    if CHROMIUM.exists():
        return
    if os.environ.get(REQUIRE_CHROMIUM) == "1":
        pytest.fail(f"{CHROMIUM} is missing and {REQUIRE_CHROMIUM}=1 requires it")
    pytest.skip(
        f"{CHROMIUM} is not installed (apt-get install chromium); "
        f"set {REQUIRE_CHROMIUM}=1 to make this a failure"
    )


def _chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    """Run headless Chromium once, in a profile of its own, and leave nothing behind.

    Chromium runs in a new session: whatever it forks (zygote, renderers, crash
    handler) is in its process group, which is killed on the way out, whether
    the run ended, timed out or failed.
    """
    with tempfile.TemporaryDirectory(
        prefix="rawepoll-chromium-", ignore_cleanup_errors=True
    ) as profile:
        command = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            out, err = process.communicate(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 1000) -> Path:
    """A PNG of ``page`` as a browser window of ``width`` x ``height`` shows it."""
    result = _chromium(
        [f"--window-size={width},{height}", f"--screenshot={out}", page.as_uri()], 90
    )
    if result.returncode != 0 or not out.exists():
        tail = result.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"chromium made no screenshot of {page} ({result.returncode}): {tail}")
    return out


def dump_dom(page: Path) -> str:
    """The DOM of ``page`` after it loaded, as the browser serialises it."""
    result = _chromium(["--dump-dom", page.as_uri()], 90)
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"chromium could not load {page} ({result.returncode}): {tail}")
    return result.stdout.decode()


# -- what a screenshot shows --------------------------------------------------------------


def _share(png: Path, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> float:
    """The share of the pixels in ``box`` (left, top, right, bottom) that are ``colour``, ±2."""
    with Image.open(png) as image:
        region = image.convert("RGB").crop(box)
    total = region.width * region.height
    colours = region.getcolors(total) or []
    near = sum(
        count
        for count, rgb in colours
        if all(abs(a - b) <= 2 for a, b in zip(rgb, colour, strict=True))
    )
    return near / total


def _size(png: Path) -> tuple[int, int]:
    with Image.open(png) as image:
        return image.size


def styling_problems(png: Path) -> list[str]:
    """What says the page was not styled by furo: no sidebar colour down its left side."""
    width, height = _size(png)
    left = (0, 0, width // 4, height)
    share = max(_share(png, left, colour) for colour in SIDEBAR)
    if share < 0.5:
        return [f"only {share:.0%} of the left quarter has furo's sidebar colour: no stylesheet?"]
    return []


def figure_problems(png: Path, colour: tuple[int, int, int], what: str) -> list[str]:
    """What says a figure did not render: none of its colour on the page."""
    width, height = _size(png)
    share = _share(png, (0, 0, width, height), colour)
    if share < 0.001:
        return [f"{what}: its colour #{bytes(colour).hex()} is not on the page"]
    return []


# -- what the API page lists --------------------------------------------------------------


class _Ids(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(value for name, value in attrs if name == "id" and value)


def expected_ids() -> list[str]:
    """The anchor of every public name on the API page (Sphinx's ids: the full names)."""
    ids = [f"module-{name}" for name in PUBLIC if name != "rawepoll"]
    for module_name in PUBLIC:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, types.ModuleType):
                ids.append(f"module-{value.__name__}")
            else:
                ids.append(f"{module_name}.{name}")
    return ids


def api_problems(dom: str) -> list[str]:
    """Which public names the rendered API page does not list, and what it shows wrongly."""
    parser = _Ids()
    parser.feed(dom)
    missing = [anchor for anchor in expected_ids() if anchor not in parser.ids]
    problems = [f"the API page does not list {anchor}" for anchor in missing]
    if BORROWED_DOCSTRING in dom:
        problems.append("a constant shows int's docstring instead of its own entry")
    return problems


@contextlib.contextmanager
def copy_of(site: Path) -> Iterator[Path]:
    """A throw-away copy of the built site, to break on purpose."""
    with tempfile.TemporaryDirectory(prefix="rawepoll-site-") as tmp:
        copy = Path(tmp) / "html"
        shutil.copytree(site, copy)
        yield copy
