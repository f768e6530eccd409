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


def _page(ids: list[str], text: str = "") -> str:
    anchors = "".join(f'<dt id="{anchor}">{anchor}</dt>' for anchor in ids)
    return f"<html><body><dl>{anchors}</dl><p>{text}</p></body></html>"


def test_api_checker_passes_a_complete_page() -> None:
    assert browser.api_problems(_page(browser.expected_ids())) == []


def test_api_checker_names_what_is_missing() -> None:
    ids = [
        anchor for anchor in browser.expected_ids() if anchor != "rawepoll.tools.loadgen.run_load"
    ]
    assert browser.api_problems(_page(ids)) == [
        "the API page does not list rawepoll.tools.loadgen.run_load"
    ]


def test_api_checker_sees_int_docstrings() -> None:
    dom = _page(browser.expected_ids(), browser.BORROWED_DOCSTRING + ", or return 0")
    assert browser.api_problems(dom) == [
        "a constant shows int's docstring instead of its own entry"
    ]
