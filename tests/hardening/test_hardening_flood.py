"""The flood run, short: served connections keep echoing through slowloris and a flood."""

from __future__ import annotations

from typing import Any

import pytest
from support.tools import run_tool

SMALL = (
    *("--phase", "1.5", "--served", "5", "--pause", "0.02"),
    *("--slowloris", "300", "--max-conns", "400", "--beyond", "200"),
)


def check_served(report: dict[str, Any]) -> None:
    served = report["served"]
    assert served["mismatched"] == served["lost"] == served["failed"] == 0
    assert served["mismatched_bytes"] == 0
    assert served["completed"] == served["started"] == 5
    for phase, figures in report["latency_us"].items():
        assert figures["count"] > 0, phase  # round trips in every phase
    slow = report["slowloris"]
    assert slow["started"] == slow["completed"] == 300
    assert slow["bytes_verified"] == slow["bytes_sent"] >= 300


@pytest.mark.timeout(120)
def test_one_full_worker_refuses_the_flood_and_keeps_serving() -> None:
    run = run_tool("flood", *SMALL, "--workers", "1", bound=100)
    report = run.report
    assert run.returncode == 0, run.describe()
    check_served(report)
    flood = report["flood"]
    assert flood["served"] == flood["room"] == 400 - 5  # the server filled up ...
    assert flood["refused"] > 0  # ... and closed what came beyond at once
    assert flood["mismatched"] == 0
    assert int(report["server"]["summary"]["refused"]) >= flood["refused"]
    assert flood["server_max_open"] <= 400


@pytest.mark.timeout(120)
def test_full_workers_leave_the_flood_queued_and_keep_serving() -> None:
    run = run_tool("flood", *SMALL, "--workers", "2", bound=100)
    report = run.report
    assert run.returncode == 0, run.describe()
    check_served(report)
    flood = report["flood"]
    assert flood["served"] == flood["room"] == 2 * 400 - 5
    assert flood["refused"] == 0  # several workers never close a connection for being full
    assert flood["queued"] + flood["connecting"] > 0  # the rest waits in the kernel
    assert int(report["server"]["summary"]["refused"]) == 0
    assert flood["server_max_open"] <= 2 * 400
