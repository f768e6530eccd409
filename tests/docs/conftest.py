"""The docs site, built once per test session into a temporary directory."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import browser

BUILD_TIMEOUT = 150  # seconds; the build takes ~4 s of CPU, more on a loaded machine


@pytest.fixture(scope="session")
def site() -> Iterator[Path]:
    """The HTML site as ``make docs`` builds it; the build must not warn."""
    with tempfile.TemporaryDirectory(prefix="rawepoll-docs-") as tmp:
        out = Path(tmp) / "html"
        result = browser.build(out, Path(tmp) / "doctrees", BUILD_TIMEOUT)
        if result.returncode != 0 or result.stderr.strip():
            pytest.fail(f"sphinx -W -n failed ({result.returncode}):\n{result.stderr}")
        yield out


@pytest.fixture(scope="session")
def chromium() -> None:
    """Headless Chromium is there (else skip, or fail when CI requires it).

    Session-scoped so that it is checked before the site is built for nothing.
    """
    browser.require_chromium()
