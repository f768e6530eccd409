"""Progress displays and the final report, fed by hand (no run, no socket)."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest

from rawepoll.tools.loadgen.cli import report
from rawepoll.tools.loadgen.display import RichMonitor, Snapshot, TextMonitor
from rawepoll.tools.loadgen.result import LoadResult

pytestmark = pytest.mark.timeout(60)

RAMP = Snapshot(
    phase="ramp",
    now=100.0,
    elapsed=0.0,
    conns=1000,
    connected=600,
    established=500,
    errors=1,
    mismatches=0,
    messages=0,
    duration=10.0,
    target=None,
)


def test_text_monitor_at_most_one_line_per_interval() -> None:
    lines: list[str] = []
    monitor = TextMonitor(lines.append, interval=1.0)
    monitor.update(RAMP)
    monitor.update(replace(RAMP, now=100.5, established=900))  # too soon: not shown
    monitor.update(replace(RAMP, phase="run", now=101.0, elapsed=1.0, messages=50_000))
    monitor.update(replace(RAMP, phase="run", now=102.0, elapsed=2.0, messages=150_000))
    monitor.close()
    assert lines == [
        "rawepoll bench: connecting 500/1000 established (600 connected, 1 errors)",
        "rawepoll bench: 1.0 s 50000 messages, 50,000 msg/s now, 1 errors, 0 mismatches",
        "rawepoll bench: 2.0 s 150000 messages, 100,000 msg/s now, 1 errors, 0 mismatches",
    ]


def test_rich_monitor_shows_both_bars() -> None:
    from rich.console import Console

    out = io.StringIO()
    monitor = RichMonitor(Console(file=out, force_terminal=True, width=120))
    try:
        monitor.update(RAMP)
        monitor.update(replace(RAMP, phase="run", now=101.0, elapsed=1.0, messages=5000))
        monitor.update(replace(RAMP, phase="run", now=102.0, elapsed=2.0, messages=15000))
    finally:
        monitor.close()
    text = out.getvalue()
    assert "connect" in text
    assert "run" in text
    assert "15,000 msgs" in text


def result(**changes: object) -> LoadResult:
    base = LoadResult(
        conns=10,
        established=10,
        messages=1000,
        bytes=64000,
        seconds=1.0,
        msgs_per_s=1000.0,
        mb_per_s=0.064,
        p50_us=100.0,
        p90_us=200.0,
        p99_us=300.0,
        p999_us=400.0,
        max_us=500.0,
        connect_s=0.01,
        errors=0,
        mismatches=0,
        procs=1,
        loadgen_cpu_s=0.008,
        size=64,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_result_ok_and_cost() -> None:
    assert result().ok
    assert result().loadgen_us_per_msg == pytest.approx(8.0)
    assert not result(errors=1).ok
    assert not result(mismatches=1).ok
    assert not result(established=9).ok
    assert not result(interrupted=True).ok
    assert result(messages=0).loadgen_us_per_msg == 0.0
    assert set(result().as_dict()) >= {"conns", "msgs_per_s", "p999_us", "loadgen_cpu_s"}


def test_plain_report(capsys: pytest.CaptureFixture[str]) -> None:
    report(result(interrupted=True), "127.0.0.1:9000")
    out = capsys.readouterr().out
    assert "127.0.0.1:9000" in out
    assert "10/10 established" in out
    assert "p99.9 400" in out
    assert "8.0 µs/msg" in out
    assert "interrupted" in out
