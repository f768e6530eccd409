"""The docs site builds as ``make docs`` builds it: no warning, no broken reference."""

from __future__ import annotations

from pathlib import Path

import pytest

PAGES = [
    "index",
    "quickstart",
    "epoll",
    "go",
    "api",
    "reference",
    "server",
    "loadgen",
    "benchmarks",
    "bench",
    "c1m",
    "kernel-facts",
    "changelog",
]


@pytest.mark.timeout(180)
def test_site_builds_without_warnings(site: Path) -> None:
    """The ``site`` fixture fails on any warning (``-W -n``); here, every page is there."""
    missing = [page for page in PAGES if not (site / f"{page}.html").is_file()]
    assert not missing, f"pages not built: {missing}"


@pytest.mark.timeout(180)
def test_every_image_is_copied(site: Path) -> None:
    """The benchmark plots and the LT/ET timelines reach the site."""
    images = {path.name for path in (site / "_images").iterdir()}
    assert {"lt-et.svg", "binding.png", "scaling.png", "echo.png", "memory.png"} <= images
