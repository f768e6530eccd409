"""``rawepoll c1m`` scaled down: a real run in a private network namespace.

The full million is ``make c1m`` (minutes, ~10 GB of kernel memory); here
20,000 connections -- one more than a 20,000-descriptor process can hold, so
the server needs two workers -- go through every step: namespace, server,
baseline, open and verify, hold with the active set echoing, release, report.
Root is needed for the namespace; without it the tests of the run are skipped
(the refusal itself is tested without root).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawepoll.__main__ import main
from rawepoll.limits import SetLimit
from rawepoll.server import FD_RESERVE as SERVER_RESERVE
from rawepoll.tools.c1m import netns
from rawepoll.tools.c1m.run import ehash_buckets, plan_processes
from rawepoll.tools.loadgen.plan import FD_RESERVE as LOAD_RESERVE

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
RUN_BOUND = 150.0  # seconds for a scaled-down run, start to exit
REQUIRED_KEYS = {
    "established",
    "verified",
    "seconds_to_establish",
    "connect_rate",
    "server_rss_bytes",
    "server_pss_bytes",
    "bytes_per_conn",
    "kernel_slab_bytes_per_conn",
    "active_p50_us",
    "active_p99_us",
    "baseline_p99_us",
    "errors",
}


def _can_unshare() -> bool:
    if netns.why_not() is not None:
        return False
    probe = subprocess.run(
        [sys.executable, "-c", "from rawepoll.tools.c1m import netns; netns.enter()"],
        capture_output=True,
        timeout=30,
        check=False,
        env=_env(),
    )
    return probe.returncode == 0


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT))


needs_netns = pytest.mark.skipif(
    not _can_unshare(), reason="needs root to create a network namespace"
)


def _c1m(*args: str, bound: float = RUN_BOUND) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rawepoll", "c1m", *args],
        capture_output=True,
        text=True,
        timeout=bound,
        check=False,
        env=_env(),
        start_new_session=True,
    )


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"


def _server_pid(narration: str) -> int:
    match = re.search(r"server: pid (\d+),", narration)
    assert match, narration
    return int(match.group(1))


@pytest.fixture(scope="module")
def scaled_run() -> tuple[dict[str, Any], str]:
    if not _can_unshare():
        pytest.skip("needs root to create a network namespace")
    host_range = netns.read_sysctl("net/ipv4/ip_local_port_range")
    host_child_ehash = Path("/proc/sys/net/ipv4/tcp_child_ehash_entries")
    child_ehash_before = host_child_ehash.read_text() if host_child_ehash.exists() else None
    run = _c1m("--conns", "20000", "--hold", "2", "--active", "100", "--baseline", "1", "--json")
    assert run.returncode == 0, run.stderr
    # The namespace's settings never reach the host.
    assert netns.read_sysctl("net/ipv4/ip_local_port_range") == host_range
    if child_ehash_before is not None:  # set for the instant of unshare, then put back
        assert host_child_ehash.read_text() == child_ehash_before
    return json.loads(run.stdout), run.stderr


@needs_netns
@pytest.mark.timeout(RUN_BOUND + 30)
def test_scaled_run_verifies_every_connection(scaled_run: tuple[dict[str, Any], str]) -> None:
    report, _ = scaled_run
    assert report.keys() >= REQUIRED_KEYS
    assert report["established"] == report["verified"] == report["conns"] == 20000
    assert report["errors"] == report["mismatches"] == report["refused"] == 0
    assert report["server_clean_exit"] is True
    assert report["server_restarts"] == 0


@needs_netns
@pytest.mark.timeout(RUN_BOUND + 30)
def test_scaled_run_spreads_over_processes(scaled_run: tuple[dict[str, Any], str]) -> None:
    report, _ = scaled_run
    limit = SetLimit()
    assert report["workers"] == math.ceil(20000 / (limit - SERVER_RESERVE))
    assert report["server_processes"] == report["workers"] + (report["workers"] > 1)
    assert report["load_procs"] == math.ceil((20000 - 100) / (limit - LOAD_RESERVE))


@needs_netns
@pytest.mark.timeout(RUN_BOUND + 30)
def test_scaled_run_measures(scaled_run: tuple[dict[str, Any], str]) -> None:
    report, _ = scaled_run
    assert report["server_pss_bytes"] > 0
    assert report["server_rss_bytes"] >= report["server_pss_bytes"]
    assert report["bytes_per_conn"] == pytest.approx(report["server_pss_bytes"] / 20000)
    # Two sockets' worth of kernel objects per connection: at least the two
    # struct socks, however the slab caches are sized.
    assert report["kernel_slab_bytes_per_conn"] > 1000
    assert report["active_messages"] > 0 and report["baseline_messages"] > 0
    assert 0 < report["active_p50_us"] <= report["active_p99_us"]
    assert 0 < report["baseline_p50_us"] <= report["baseline_p99_us"]
    assert report["connect_rate"] == pytest.approx((20000 - 100) / report["seconds_to_establish"])


@needs_netns
@pytest.mark.timeout(RUN_BOUND + 30)
def test_scaled_run_uses_its_own_namespace(scaled_run: tuple[dict[str, Any], str]) -> None:
    report, narration = scaled_run
    assert report["sysctls"]["net/ipv4/ip_local_port_range"].split() == ["1024", "65535"]
    assert report["sysctls"]["net/core/somaxconn"] == "65535"
    assert report["conntrack_entries"] in (0, None)
    if Path("/proc/sys/net/ipv4/tcp_child_ehash_entries").exists():  # Linux 6.1+
        # its own table of established sockets, a bucket per socket or more
        assert int(report["sysctls"]["net/ipv4/tcp_ehash_entries"]) == ehash_buckets(20000)
    assert _pid_gone(_server_pid(narration))


@needs_netns
@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip command")
@pytest.mark.timeout(120)
def test_keep_netns_leaves_a_named_namespace() -> None:
    name = f"rawepoll-c1m-test-{os.getpid()}"
    try:
        run = _c1m(
            "--conns", "300", "--active", "10", "--hold", "0.5", "--baseline", "0.5",
            "--keep-netns", name, "--json",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        listed = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=30
        )
        assert name in listed.stdout.split()
        inside = subprocess.run(
            ["ip", "netns", "exec", name, "cat", "/proc/sys/net/ipv4/ip_local_port_range"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        assert inside.stdout.split() == ["1024", "65535"]
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


@needs_netns
@pytest.mark.timeout(RUN_BOUND + 30)
def test_interrupt_stops_every_process() -> None:
    """SIGINT while connections are held: exit 130, nothing of the run left."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rawepoll", "c1m", "--conns", "20000", "--hold", "120",
         "--active", "50", "--baseline", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,
        # SIGINT's default action, even when this test runs under a shell that ignores it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # bounded by the test timeout; ends at EOF
            seen.append(line)
            if "kernel slab" in line:  # every connection is open and held now
                break
        narration = "".join(seen)
        server = _server_pid(narration)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr
        assert _pid_gone(server)
        try:
            os.killpg(proc.pid, 0)
            left = True
        except ProcessLookupError:
            left = False
        assert not left, "a load process outlived the run"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_without_root_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["c1m", "--conns", "100", "--active", "10"]) == 2
    err = capsys.readouterr().err
    assert "needs root" in err
    assert "ip netns add" in err and "rawepoll serve" in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--conns", "100", "--active", "100"], "--active"),
        (["--conns", "0"], "at least 1"),
        (["--hold", "0"], "positive"),
        (["--active", "-1"], "0 or more"),
    ],
)
def test_bad_arguments_exit_2(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = main(["c1m", *args])
    except SystemExit as exit_:  # argparse's own refusals
        status = int(exit_.code or 0)
    assert status == 2
    assert words in capsys.readouterr().err


@given(
    conns=st.integers(1, 3_000_000),
    active_share=st.floats(0, 0.5),
    fd_limit=st.integers(100, 1 << 20),
    ports=st.integers(1000, 64512),
)
def test_plan_fits_every_limit(conns: int, active_share: float, fd_limit: int, ports: int) -> None:
    """Enough processes and addresses for the limits, and no more than needed."""
    active = min(conns - 1, int(conns * active_share))
    plan = plan_processes(conns, active, fd_limit, ports)
    held = conns - active
    assert plan.workers * (fd_limit - SERVER_RESERVE) >= conns
    assert (plan.workers - 1) * (fd_limit - SERVER_RESERVE) < conns
    assert plan.load_procs * (fd_limit - LOAD_RESERVE) >= held
    assert (plan.load_procs - 1) * (fd_limit - LOAD_RESERVE) < held
    assert len(plan.sources) * (ports // 4) >= held
    assert len(set(plan.sources)) == len(plan.sources)
    assert all(source.startswith("127.") and source != "127.0.0.1" for source in plan.sources)


@given(st.integers(1, 10_000_000))
def test_ehash_buckets_cover_both_ends(conns: int) -> None:
    buckets = ehash_buckets(conns)
    assert buckets & (buckets - 1) == 0  # a power of two, as the kernel rounds it
    assert 1 << 10 <= buckets <= 1 << 24
    assert buckets >= 2 * conns or buckets == 1 << 24
    assert buckets < 4 * conns or buckets == 1 << 10
