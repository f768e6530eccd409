"""The built site, looked at in headless Chromium: styled, figures drawn, API listed.

Each check is also run against a copy of the site broken on purpose, to show
that it would catch the breakage.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import browser

pytestmark = [pytest.mark.usefixtures("chromium"), pytest.mark.timeout(240)]

# page, window height, the colour of the figure it must show (None: no figure checked)
PAGES = [
    ("index", 1000, None),
    ("epoll", 3000, (browser.STRANDED_RED, "the LT/ET timelines")),
    ("reference", 1000, None),
    ("benchmarks", 3000, (browser.PLOT_BLUE, "the benchmark plots")),
]


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory for screenshots, removed whatever happens."""
    with tempfile.TemporaryDirectory(prefix="rawepoll-shots-") as tmp:
        yield Path(tmp)


@pytest.mark.parametrize(("page", "height", "figure"), PAGES, ids=[p[0] for p in PAGES])
def test_page_is_styled_and_shows_its_figure(
    site: Path,
    scratch: Path,
    page: str,
    height: int,
    figure: tuple[tuple[int, int, int], str] | None,
) -> None:
    """furo's stylesheet applies, and the page's figure is drawn."""
    png = browser.screenshot(site / f"{page}.html", scratch / f"{page}.png", height=height)
    problems = browser.styling_problems(png)
    if figure is not None:
        problems += browser.figure_problems(png, *figure)
    assert problems == []


def test_api_page_lists_every_public_name(site: Path) -> None:
    """Every name of the public ``__all__`` lists has its entry in the rendered page."""
    dom = browser.dump_dom(site / "reference.html")
    assert browser.api_problems(dom) == []
    assert len(browser.expected_ids()) > 50


def test_checker_sees_a_site_without_css(site: Path, scratch: Path) -> None:
    """With the stylesheets gone, the page is plain, and the checker says so."""
    with browser.copy_of(site) as broken:
        for css in broken.rglob("*.css"):
            css.unlink()
        png = browser.screenshot(broken / "index.html", scratch / "plain.png")
    problems = browser.styling_problems(png)
    assert problems and "sidebar" in problems[0]


def test_checker_sees_an_empty_api_page(site: Path) -> None:
    """With the API page emptied, every public name is reported missing."""
    with browser.copy_of(site) as broken:
        (broken / "reference.html").write_text("<!doctype html><title>API</title><body></body>")
        dom = browser.dump_dom(broken / "reference.html")
    problems = browser.api_problems(dom)
    assert len(problems) == len(browser.expected_ids())
    assert "the API page does not list rawepoll.Epoll" in problems


def test_checker_sees_a_missing_figure(site: Path, scratch: Path) -> None:
    """With the LT/ET picture gone, the page still renders, and the checker says so."""
    with browser.copy_of(site) as broken:
        (broken / "_images" / "lt-et.svg").unlink()
        png = browser.screenshot(broken / "epoll.html", scratch / "epoll.png", height=3000)
    assert browser.styling_problems(png) == []
    assert browser.figure_problems(png, browser.STRANDED_RED, "the LT/ET timelines")
