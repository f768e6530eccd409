"""Without Chromium the site tests skip, unless CI demands Chromium: then they fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import browser


def test_skips_without_chromium(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv(browser.REQUIRE_CHROMIUM, raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        browser.require_chromium()


def test_fails_without_chromium_when_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv(browser.REQUIRE_CHROMIUM, "1")
    with pytest.raises(pytest.fail.Exception, match="requires it"):
        browser.require_chromium()
