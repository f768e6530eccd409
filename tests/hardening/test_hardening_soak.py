"""The soak run, short: every byte verified, its counters add up, and it can fail."""

from __future__ import annotations

import pytest
from support.tools import corrupting_command, run_tool

ENDINGS = ("completed", "reset", "lost", "failed", "mismatched")
SHORT = (
    "--seconds",
    "2",
    "--clients",
    "1",
    "--steady",
    "10",
    "--large-mib",
    "1",
    "--slow-mib",
    "1",
)


@pytest.mark.timeout(120)
def test_soak_verifies_every_byte_and_counts_add_up() -> None:
    run = run_tool("soak", *SHORT, "--workers", "2", bound=90)
    report = run.report
    assert run.returncode == 0, run.describe()
    assert report["verdict"] == {**report["verdict"], "ok": True, "failures": []}
    clients = report["clients"]
    totals = clients["totals"]
    assert clients["mismatched_bytes"] == 0
    assert totals["mismatched"] == totals["lost"] == totals["failed"] == 0
    for kind, counts in clients["kinds"].items():
        assert counts["started"] > 0, kind  # every behaviour ran
        assert counts["started"] == sum(counts[how] for how in ENDINGS), (kind, counts)
        if kind == "reset":
            assert counts["reset"] == counts["started"]
            assert counts["bytes_verified"] <= counts["bytes_sent"]
        else:  # ended cleanly: everything sent came back
            assert counts["completed"] == counts["started"], (kind, counts)
            assert counts["bytes_verified"] == counts["bytes_sent"] > 0, (kind, counts)
    for name in ("started", *ENDINGS, "bytes_sent", "bytes_verified"):
        assert totals[name] == sum(c[name] for c in clients["kinds"].values()), name
    summary = report["server"]["summary"]
    assert report["server"]["exit_status"] == 0
    # A connection reset while still in the accept queue may never be accepted.
    assert totals["started"] - totals["reset"] <= int(summary["accepted"]) <= totals["started"]
    assert totals["bytes_verified"] <= int(summary["bytes_out"]) <= int(summary["bytes_in"])
    assert int(summary["bytes_in"]) <= totals["bytes_sent"]
    assert report["samples"] > 0
    assert report["fds"]["idle_after"] <= report["fds"]["idle_before"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["flip", "close"])
def test_soak_fails_against_a_broken_server(how: str) -> None:
    run = run_tool("soak", *SHORT, "--server-command", corrupting_command(how), bound=90)
    report = run.report
    assert run.returncode == 1, run.describe()
    assert not report["verdict"]["ok"]
    totals = report["clients"]["totals"]
    if how == "flip":
        assert totals["mismatched"] > 0
        assert report["clients"]["mismatched_bytes"] > 0
        assert any("bytes wrong" in f for f in report["verdict"]["failures"])
    else:
        assert totals["lost"] > 0
        assert totals["mismatched"] == 0
        assert any("lost" in f for f in report["verdict"]["failures"])
