"""The chaos run, short: kills are replaced and lost connections end cleanly, never corrupted."""

from __future__ import annotations

import pytest
from support.tools import run_tool


@pytest.mark.timeout(120)
def test_killed_workers_are_replaced_and_their_connections_reset_not_corrupted() -> None:
    run = run_tool(
        "chaos",
        *("--seconds", "6", "--every", "2", "--workers", "3", "--clients", "1"),
        *("--conns", "30", "--pause", "0.05", "--victim", "busiest"),
        bound=100,
    )
    report = run.report
    assert run.returncode == 0, run.describe()
    assert report["verdict"]["ok"], run.describe()
    kills = report["kills"]
    assert kills, run.describe()
    clients = report["clients"]
    assert clients["mismatched_bytes"] == 0
    assert clients["totals"]["mismatched"] == 0
    assert clients["totals"]["failed"] == 0
    assert clients["totals"]["bytes_verified"] > 0
    assert report["unexplained_count"] == 0
    assert int(report["server"]["summary"]["restarted"]) == len(kills)
    for kill in kills:
        assert kill["new_pid"] != kill["pid"]
        assert kill["replaced_s"] is not None
        assert kill["served_s"] is not None  # the replacement wrote echoes
        assert kill["lost"] == kill["lost_reset"] + kill["lost_eof"]
    # The busiest worker held connections when it was killed; its clients saw
    # an end (EOF or reset), and got every byte before it right.
    first = kills[0]
    assert first["open_before"] > 0
    assert first["lost"] > 0
    assert clients["totals"]["lost"] == sum(kill["lost"] for kill in kills)
