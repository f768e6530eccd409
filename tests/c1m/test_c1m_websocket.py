"""``rawepoll c1m --protocol websocket`` scaled down, and the engine that holds its subscribers.

With root: 20,000 WebSocket connections -- one more than a 20,000-descriptor
process holds, so two server workers and two load processes -- in a private
network namespace, end to end: every connection upgraded to ``/topic/c1m``
and verified by an echo, then one message published through the server's
control socket, which every one must receive exactly once.  Then the same
with a server that leaves some subscribers out on purpose
(:mod:`lossy_app`, which writes down each one it leaves out): the run must
report exactly those as lost, and fail.

Without root: :class:`~rawepoll.tools.loadgen.wsholding.EchoedSubscribers`
held by :class:`~rawepoll.tools.loadgen.workers.Holding` against a
``rawepoll serve --protocol websocket --control`` on the host's loopback --
a delivery left out, sent twice, or changed in one byte is counted as what
it is, the shortcut for known deliveries included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rawepoll.__main__ import main
from rawepoll.server import control
from rawepoll.tools.c1m import netns, websocket
from rawepoll.tools.c1m.cli import report
from rawepoll.tools.c1m.run import C1MResult
from rawepoll.tools.loadgen.spec import LoadSpec
from rawepoll.tools.loadgen.stamp import Deliveries
from rawepoll.tools.loadgen.workers import Holding, prepare
from rawepoll.tools.loadgen.wsholding import EchoedSubscribers
from rawepoll.tools.serverproc import ServerProcess

from .lossy_app import EVERY, RECORD
from .test_c1m import REPO_ROOT, _can_unshare, _pid_gone, _server_pid

HERE = Path(__file__).resolve().parent
RUN_BOUND = 180.0  # seconds for a scaled-down run, start to exit (two may run side by side)
CONNS = 20000
LOSSY = "lossy_app:SkipSome"
BROADCAST_KEYS = {
    "topic",
    "subscribers",
    "published",
    "delivered",
    "lost",
    "duplicates",
    "first_us",
    "p50_us",
    "p99_us",
    "max_us",
    "publish_us",
    "deliveries_per_s",
    "server_cpu_s",
    "load_cpu_s",
    "server_us_per_delivery",
    "load_us_per_delivery",
    "publish_error",
}

needs_netns = pytest.mark.skipif(
    not _can_unshare(), reason="needs root to create a network namespace"
)


def _env(**extra: str) -> dict[str, str]:
    """rawepoll and the test application importable; ``extra`` variables set."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(HERE)]), **extra)


@dataclass(frozen=True)
class Run:
    """A finished ``rawepoll c1m`` run, and what was seen of it while it ran."""

    status: int
    report: dict[str, Any]
    narration: str
    netns: str  # the namespace's identity (the readlink of /proc/PID/ns/net)
    pgid: int


def _c1m(*args: str, env: dict[str, str], bound: float = RUN_BOUND) -> Run:
    """Run ``rawepoll c1m --json ARGS`` in a session of its own; note its namespace on the way."""
    with subprocess.Popen(
        [sys.executable, "-m", "rawepoll", "c1m", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            assert proc.stderr is not None and proc.stdout is not None
            seen, namespace = [], ""
            for line in proc.stderr:  # bounded by the test's timeout; ends at EOF
                seen.append(line)
                if "server: pid" in line and not namespace:
                    namespace = os.readlink(f"/proc/{_server_pid(line)}/ns/net")
            out = proc.stdout.read()
            status = proc.wait(timeout=bound)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    narration = "".join(seen)
    assert out, narration
    return Run(status, json.loads(out), narration, namespace, proc.pid)


def _processes_in(namespace: str) -> list[int]:
    """Every process whose network namespace is ``namespace``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "net") == namespace:
                    found.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile, or a kernel thread
    return found


def _control_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("rawepoll-c1m-*")}


@pytest.fixture(scope="module")
def scaled_run() -> Iterator[Run]:
    if not _can_unshare():
        pytest.skip("needs root to create a network namespace")
    host_range = netns.read_sysctl("net/ipv4/ip_local_port_range")
    child_ehash = Path("/proc/sys/net/ipv4/tcp_child_ehash_entries")
    child_ehash_before = child_ehash.read_text() if child_ehash.exists() else None
    dirs_before = _control_dirs()
    run = _c1m("--protocol", "websocket", "--conns", str(CONNS), "--hold", "1", env=_env())
    assert run.status == 0, run.narration
    # Nothing of the run outside its namespace changed, nothing of it is left.
    assert netns.read_sysctl("net/ipv4/ip_local_port_range") == host_range
    if child_ehash_before is not None:  # set for the instant of unshare, then put back
        assert child_ehash.read_text() == child_ehash_before
    assert _control_dirs() == dirs_before  # the control socket's directory is gone
    yield run


@needs_netns
@pytest.mark.timeout(RUN_BOUND + 30)
def test_every_connection_verified_by_echo_and_broadcast(scaled_run: Run) -> None:
    r = scaled_run.report
    assert r["protocol"] == "websocket"
    assert r["established"] == r["verified"] == r["conns"] == CONNS
    assert r["active"] == 0  # over WebSocket every connection is a subscriber by default
    assert r["errors"] == r["mismatches"] == r["refused"] == r["server_restarts"] == 0
    assert r["server_clean_exit"] is True
    b = r["broadcast"]
    assert b.keys() == BROADCAST_KEYS
    assert b["topic"] == websocket.TOPIC
    assert b["published"] == 1 and b["publish_error"] is None
    assert b["subscribers"] == b["delivered"] == CONNS
    assert b["lost"] == b["duplicates"] == 0
    assert r["problems"] == []


@needs_netns
@pytest.mark.timeout(RUN_BOUND + 30)
def test_the_figures_agree_with_each_other(scaled_run: Run) -> None:
    r, b = scaled_run.report, scaled_run.report["broadcast"]
    assert (r["workers"], r["server_processes"], r["load_procs"]) == (2, 3, 2)
    assert r["bytes_per_conn"] == pytest.approx(r["server_pss_bytes"] / CONNS)
    growth = (r["server_pss_bytes"] - r["server_pss_idle_bytes"]) / CONNS
    assert r["pss_growth_per_conn"] == pytest.approx(growth)
    assert r["kernel_slab_bytes_per_conn"] > 1000  # two sockets' worth at least
    assert r["connect_rate"] == pytest.approx(CONNS / r["seconds_to_establish"])
    # Delivery times: the first arrival, the median, the 99th percentile (HdrHistogram,
    # 3 significant digits) and the exact arrival at the last subscriber, in order.
    assert 0 < b["first_us"] <= b["p50_us"] <= b["p99_us"] <= b["max_us"] * 1.001 + 1
    assert b["deliveries_per_s"] == pytest.approx(b["delivered"] / (b["max_us"] / 1e6))
    per = 1e6 / b["delivered"]
    assert b["server_us_per_delivery"] == pytest.approx(sum(b["server_cpu_s"]) * per)
    assert b["load_us_per_delivery"] == pytest.approx(sum(b["load_cpu_s"]) * per)
    assert b["publish_us"] > 0


@needs_netns
@pytest.mark.timeout(RUN_BOUND + 30)
def test_nothing_of_the_run_is_left(scaled_run: Run) -> None:
    assert scaled_run.netns.startswith("net:[")
    assert _processes_in(scaled_run.netns) == []  # so the namespace is gone with them
    assert _pid_gone(_server_pid(scaled_run.narration))
    with pytest.raises(ProcessLookupError):
        os.killpg(scaled_run.pgid, 0)


@needs_netns
@pytest.mark.timeout(RUN_BOUND + 30)
def test_a_missed_broadcast_is_reported(tmp_path: Path) -> None:
    """A server that leaves every 1000th subscriber out: exactly those are lost, and the run
    fails -- checked against the server's own record of whom it left out."""
    record = tmp_path / "skipped"
    record.touch()
    run = _c1m(
        "--protocol", "websocket", "--conns", "3000", "--hold", "0.5", "--handler", LOSSY,
        env=_env(**{RECORD: str(record)}),
    )  # fmt: skip
    skipped = record.read_text().splitlines()
    assert len(skipped) == 3  # connections 1000, 2000 and 3000 of the one worker
    assert run.status == 1, run.narration
    r, b = run.report, run.report["broadcast"]
    assert r["established"] == b["subscribers"] == 3000  # each still verified by its echo
    assert b["lost"] == len(skipped)
    assert b["delivered"] == 3000 - len(skipped)
    assert b["duplicates"] == r["errors"] == r["mismatches"] == 0
    assert f"broadcast: {len(skipped)} subscriber(s) never received the message" in r["problems"]
    assert _processes_in(run.netns) == []


@needs_netns
@pytest.mark.timeout(RUN_BOUND + 30)
def test_an_active_set_echoes_over_websocket_unsubscribed() -> None:
    run = _c1m(
        "--protocol", "websocket", "--conns", "1000", "--active", "100",
        "--baseline", "0.5", "--hold", "0.5", env=_env(),
    )  # fmt: skip
    assert run.status == 0, run.narration
    r, b = run.report, run.report["broadcast"]
    assert r["established"] == 1000
    assert r["active_messages"] > 0 and r["baseline_messages"] > 0
    assert b["subscribers"] == b["delivered"] == 900  # the held ones, not the active set


# -- without a namespace: the engine against a server on the host's loopback ----------


@dataclass
class Server:
    process: ServerProcess
    control: str


@pytest.fixture
def ws_server(tmp_path: Path) -> Iterator[Server]:
    yield from _serve(tmp_path, _env())


@pytest.fixture
def lossy_server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """A server that leaves every 7th subscriber out, and the file where it says which."""
    record = tmp_path / "skipped"
    record.touch()
    env = _env(**{RECORD: str(record), EVERY: "7"})
    for server in _serve(tmp_path, env, "--handler", LOSSY):
        yield server, record


def _serve(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[Server]:
    path = str(tmp_path / "control")
    with ServerProcess.serve(
        "--port", "0", *websocket.server_args(path), *args,
        env=env, start_bound=30, stop_bound=30,
    ) as server:  # fmt: skip
        yield Server(server, path)


def _holding(server: Server, conns: int) -> Holding:
    spec = LoadSpec(
        port=server.process.port,
        conns=conns,
        duration=None,
        **websocket.spec_fields(server.control),
    )
    return Holding(prepare(spec), EchoedSubscribers)


def _opened(holding: Holding) -> None:
    holding.open(None, time.monotonic() + 30)
    assert holding.counts["established"] == holding.plan.conns


def test_every_subscriber_gets_it_exactly_once(ws_server: Server) -> None:
    with _holding(ws_server, 60) as holding:
        _opened(holding)
        sent = websocket.send_one(holding, ws_server.process.pid)
        released = holding.release()
        figures = websocket.figures(holding, sent, 0.0)
    assert figures.ok, figures
    assert figures.delivered == figures.subscribers == 60
    assert released.errors == released.mismatches == 0


def test_a_delivery_left_out_is_lost(lossy_server: tuple[Server, Path]) -> None:
    server, record = lossy_server
    with _holding(server, 60) as holding:
        _opened(holding)
        sent = websocket.send_one(holding, server.process.pid)
        holding.release()
        figures = websocket.figures(holding, sent, 0.0)
    skipped = len(record.read_text().splitlines())
    assert skipped == 60 // 7
    assert (figures.lost, figures.delivered) == (skipped, 60 - skipped)
    assert not figures.ok
    said = f"broadcast: {skipped} subscriber(s) never received the message"
    assert figures.shortfalls() == [said]


def test_a_delivery_sent_twice_is_a_duplicate(ws_server: Server) -> None:
    """The same bytes again after every subscriber had them, while they are held: each is
    counted a duplicate, none as a second delivery."""
    with _holding(ws_server, 60) as holding:
        _opened(holding)
        sent = websocket.send_one(holding, ws_server.process.pid)
        again = Deliveries(websocket.TOPIC, 64, "websocket").message(0, sent.publication.stamps[0])
        control.publish(ws_server.control, websocket.TOPIC, again)  # OK: in their sockets now
        holding.release()
        figures = websocket.figures(holding, sent, 0.0)
    assert (figures.delivered, figures.duplicates) == (60, 60)
    assert not figures.ok


def test_a_changed_byte_is_a_mismatch(ws_server: Server) -> None:
    """A delivery one byte off the one verified before is verified in full, not waved
    through as the known bytes."""
    with _holding(ws_server, 60) as holding:
        _opened(holding)
        sent = websocket.send_one(holding, ws_server.process.pid)
        right = Deliveries(websocket.TOPIC, 64, "websocket").message(0, sent.publication.stamps[0])
        wrong = right[:-1] + (b"A" if right[-1:] != b"A" else b"B")
        control.publish(ws_server.control, websocket.TOPIC, wrong)
        released = holding.release()
        figures = websocket.figures(holding, sent, 0.0)
    assert figures.delivered == 60 and figures.duplicates == 0
    assert released.mismatches == 60
    assert all("differs" in problem for problem in released.problems)


# -- the command line and the report, no run needed ----------------------------------------


def test_an_unknown_protocol_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["c1m", "--protocol", "http"])
    assert exited.value.code == 2
    assert "--protocol" in capsys.readouterr().err


def test_the_report_shows_the_broadcast_against_its_targets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures = websocket.BroadcastFigures(
        topic="c1m", subscribers=1000, published=1, delivered=1000, lost=0, duplicates=0,
        first_us=900.0, p50_us=2.1e6, p99_us=4.0e6, max_us=6.2e6, publish_us=500.0,
        deliveries_per_s=161_290.0, server_cpu_s=(0.5, 6.5), load_cpu_s=(1.5, 2.5),
        server_us_per_delivery=7.0, load_us_per_delivery=4.0, publish_error=None,
    )  # fmt: skip
    result = C1MResult(
        conns=1000, active=0, established=1000, verified=1000, seconds_to_establish=90.0,
        connect_rate=11.1, open_server_cpu_s=(1.0, 1.0), open_load_cpu_s=(1.0, 1.0),
        server_rss_bytes=900 << 20, server_pss_bytes=170 << 20, server_pss_idle_bytes=100 << 20,
        bytes_per_conn=178.0, pss_growth_per_conn=73.0, kernel_slab_bytes_per_conn=9800.0,
        active_p50_us=0.0, active_p99_us=0.0, baseline_p50_us=0.0, baseline_p99_us=0.0,
        baseline_after_p50_us=0.0, baseline_after_p99_us=0.0, active_rate=10.0,
        active_messages=0, baseline_messages=0, errors=0, mismatches=0, refused=0,
        server_restarts=0, server_clean_exit=True, workers=51, server_processes=52,
        load_procs=51, source_addrs=62, hold_s=30.0, conntrack_entries=None, sysctls={},
        protocol="websocket", broadcast=figures,
    )  # fmt: skip
    report(result)
    lines = {line.split("  ")[0].strip(): line for line in capsys.readouterr().out.splitlines()}
    assert "handshaken and echo-verified in 90.0 s" in lines["established"]
    assert "[target for 1M: 100: met]" in lines["established"]
    assert "[target for 1M: 160: missed]" in lines["server memory"]
    assert "none measured (--active 0)" in lines["active latency"]
    assert "1,000 delivered exactly once" in lines["broadcast"]
    assert "p50 2.10 s, p99 4.00 s, to the last 6.20 s" in lines["delivery time"]
    assert "[target for 1M: 5: missed]" in lines["delivery time"]
    assert "server 7.0 us + load 4.0 us per delivery" in lines["broadcast CPU"]
    assert result.ok
