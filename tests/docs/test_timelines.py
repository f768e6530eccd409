"""The LT/ET picture: what it shows is what a real epoll does, and it is up to date."""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from .browser import DOCS


def _load() -> ModuleType:
    """docs/_ext/timelines.py, which is not on the import path."""
    name = "rawepoll_docs_timelines"
    spec = importlib.util.spec_from_file_location(name, DOCS / "_ext" / "timelines.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


timelines = _load()


@pytest.fixture
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rawepoll-timelines-") as tmp:
        yield Path(tmp)


def _program(key: str) -> object:
    return next(p for p in timelines.PROGRAMS if p.key == key)


def test_level_triggered_reports_while_bytes_remain() -> None:
    for tick in timelines.record(_program("lt")):
        assert tick.reported == (tick.queued > 0)


def test_edge_triggered_reports_only_arrivals_and_strands_what_one_read_leaves() -> None:
    ticks = timelines.record(_program("et"))
    for tick in ticks:
        assert tick.reported == (tick.arrived > 0)
    # The kernel lost nothing: what was not read is still queued.
    read = sum(sum(tick.reads) for tick in ticks)
    assert ticks[-1].left == sum(timelines.ARRIVALS) - read > 0


def test_edge_triggered_drained_until_eagain_gets_every_byte() -> None:
    ticks = timelines.record(_program("et-drain"))
    assert all(tick.reported == (tick.arrived > 0) for tick in ticks)
    assert all(tick.left == 0 for tick in ticks)
    assert sum(sum(tick.reads) for tick in ticks) == sum(timelines.ARRIVALS)


def test_committed_picture_matches_the_code() -> None:
    """Else: ``python docs/_ext/timelines.py``, and commit docs/img/lt-et.svg."""
    assert timelines.stale() is None


def test_a_stale_picture_is_told(scratch: Path) -> None:
    assert "missing" in timelines.stale(scratch / "absent.svg")
    copy = scratch / "lt-et.svg"
    pristine = timelines.SVG.read_text()
    original = timelines.read_stamp(timelines.SVG)
    stamp = json.loads(original)
    stamp["trace"]["et"][1]["reported"] = True  # as if ET reminded of unread bytes
    copy.write_text(pristine.replace(original, json.dumps(stamp, sort_keys=True)))
    assert "another epoll behaviour" in timelines.stale(copy)
    stamp = {**json.loads(original), "source": "0" * 64}
    copy.write_text(pristine.replace(original, json.dumps(stamp, sort_keys=True)))
    assert "another version" in timelines.stale(copy)


@pytest.mark.timeout(120)
def test_drawing_is_deterministic(scratch: Path) -> None:
    """The same trace gives the same bytes: regenerating changes nothing in git."""
    trace = timelines.record_all()
    timelines.draw(trace, scratch / "a.svg")
    timelines.draw(trace, scratch / "b.svg")
    assert (scratch / "a.svg").read_bytes() == (scratch / "b.svg").read_bytes()
