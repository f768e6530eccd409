"""``rawepoll compare --sections websocket``: WebSocket echo servers side by side.

``--quick``, cut down to 2 rounds (so the order reverses once), 0.2 s runs
and 500 idle connections, runs the whole section with every contender whose
dependency is installed -- rawepoll LT and
ET, ``websockets`` and ``picows`` on asyncio and uvloop, Go's gorilla built
with ``go`` -- and writes its tables, JSON and plot; a contender whose
dependency is missing is skipped with a note, not a failure.  What it measures
is not checked (tests assert behaviour, benchmarks report numbers).  A server
that corrupts an echo must fail the run (``--smoke``), and every peer on its
own must start, echo and stop cleanly.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rawepoll.tools.compare import machine, report, websocket, wsservers
from rawepoll.tools.compare.echo import Run, Series
from rawepoll.tools.serverproc import ServerProcess

HERE = Path(__file__).resolve().parent
HAS_PLOTS = importlib.util.find_spec("matplotlib") is not None
HAS_LOAD = importlib.util.find_spec("hdrh") is not None
HAS_GO = (
    shutil.which("go") is not None and (Path(wsservers.GOPATH) / "src" / wsservers.GORILLA).is_dir()
)
SIZES = (64, 4096)
PYTHON_PEERS = [c for c in wsservers.CONTENDERS if not c.go and not c.is_rawepoll]

needs_load = pytest.mark.skipif(not HAS_LOAD, reason="the load generator needs hdrhistogram")
needs_go = pytest.mark.skipif(not HAS_GO, reason="go or gorilla/websocket is not installed")


def available() -> set[str]:
    """The contenders that can run here."""
    names = {c.name for c in wsservers.CONTENDERS if not c.go and c.missing() is None}
    return names | ({"Go gorilla"} if HAS_GO else set())


def compare(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rawepoll", "compare", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@needs_load
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_section_measures_every_available_server(
    tmp_path: Path, tagged_env: dict[str, str]
) -> None:
    options = ["--rounds", "2", "--seconds", "0.2", "--memory-conns", "500"]
    result = compare(
        tagged_env, "--quick", *options, "--sections", "websocket", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["failures"] == []
    section = payload["websocket"]
    assert section["failures"] == {}
    assert section["plan"]["rounds"] == 2 and section["plan"]["memory_conns"] == 500
    names = available()
    assert set(section["skipped"]) == {c.name for c in wsservers.CONTENDERS} - names
    assert all(why for why in section["skipped"].values())  # a reason each
    rows = {(row["server"], row["size"]): row for row in section["results"]}
    assert set(rows) == {(name, size) for name in names for size in SIZES}
    for row in rows.values():
        assert row["rounds"] == 2 and len(row["per_round"]) == 2
        assert row["cpu_us_per_msg"]["median"] > 0
        if section["reference"] is not None:
            assert row["ratio_to_reference"]["median"] > 0
    idle = {row["server"]: row for row in section["idle"]}
    assert set(idle) == names
    for row in idle.values():
        assert [sample["conns"] for sample in row["samples"]] == [500] * 2
        assert all(sample["fds_held"] >= 500 for sample in row["samples"])
    markdown = (tmp_path / "results.md").read_text()
    for title in ("6. WebSocket echo servers, 4,096 B", "6b. memory per idle WebSocket"):
        assert title in result.stdout
        assert title in markdown
    if HAS_PLOTS:
        assert (tmp_path / "websocket.png").read_bytes()[:4] == b"\x89PNG"
        assert payload["plots"] == {"websocket": "websocket.png"}


BROKEN_RUN = """
import sys
from rawepoll.tools.compare import wsservers
wsservers.CONTENDERS = (wsservers.Contender("broken", (sys.argv[1],)),)
from rawepoll.__main__ import main
sys.exit(main(["compare", *sys.argv[2:]]))
"""


@needs_load
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_websocket_server_that_corrupts_fails_the_run(
    tmp_path: Path, tagged_env: dict[str, str]
) -> None:
    options = ["--smoke", "--sections", "websocket", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-c", BROKEN_RUN, str(HERE / "broken_websocket.py"), *options],
        capture_output=True,
        text=True,
        timeout=90,
        env=tagged_env,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stderr
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["failures"]
    failure = payload["websocket"]["failures"]["broken"]
    assert "first connection" not in failure  # caught in the measured traffic, not priming
    assert "mismatch" in failure and "differs at payload byte" in failure


@needs_load
@pytest.mark.timeout(120)
def test_a_server_that_cannot_run_is_skipped_with_a_note(
    tmp_path: Path, tagged_env: dict[str, str]
) -> None:
    """No ``go`` on the PATH: the Go row is skipped, the others run, the run succeeds."""
    env = dict(tagged_env, PATH=str(tmp_path / "nothing-here"))
    servers = "rawepoll lt,Go gorilla"
    result = compare(env, "--smoke", "--sections", "websocket", "--ws-servers", servers,
                     "--out", str(tmp_path), timeout=90)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    section = json.loads((tmp_path / "results.json").read_text())["websocket"]
    assert section["skipped"]["Go gorilla"].startswith("go is not installed")
    assert "skipped Go gorilla: go is not installed" in result.stdout
    ran = {row["server"] for row in section["results"]}
    assert ran == ({"rawepoll lt"} if "rawepoll lt" in available() else set())


def test_a_missing_module_is_a_reason_not_an_error() -> None:
    absent = wsservers.Contender("absent", ("-m", "nowhere"), ("no_such_module_here",))
    assert absent.missing() == (
        "no_such_module_here is not installed (pip install 'rawepoll[wspeers]')"
    )
    assert wsservers.Contender("go", (), go=True).missing() is None  # build_go decides
    with pytest.raises(ValueError, match="unknown WebSocket server"):
        wsservers.select("rawepoll lt,nginx")
    assert [c.name for c in wsservers.select("Go gorilla,rawepoll et")] == [
        "rawepoll et",
        "Go gorilla",
    ]


def test_bad_ws_servers_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rawepoll", "compare", "--ws-servers", "nginx",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown WebSocket server" in result.stderr
    assert not (tmp_path / "results.json").exists()


# -- the peers on their own -----------------------------------------------------------


def serve(argv: list[str], env: dict[str, str], name: str) -> ServerProcess:
    return ServerProcess(argv, env=env, start_bound=30, stop_bound=20, name=name)


def check_peer(server: ServerProcess) -> None:
    """Announced as every peer is; two connections upgraded, a 4 KiB message echoed on each;
    exit 0 on SIGTERM with nothing on stderr."""
    assert server.ready.family == "inet" and server.ready.pid == server.pid
    assert f"listening on {server.host}:{server.port}" in server.stdout()
    websocket.prime(server)
    websocket.prime(server)  # and it still serves
    stopped = server.stop()
    assert stopped.returncode == 0, server.stderr()
    assert server.stderr() == ""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("contender", PYTHON_PEERS, ids=lambda c: c.name)
def test_python_peer_echoes_and_stops_cleanly(
    contender: wsservers.Contender, tagged_env: dict[str, str]
) -> None:
    if why := contender.missing():
        pytest.skip(why)
    with serve(contender.command("127.0.0.1", None), tagged_env, contender.name) as server:
        check_peer(server)


@needs_go
@pytest.mark.timeout(360)
def test_the_go_peer_builds_and_echoes(tmp_path: Path, tagged_env: dict[str, str]) -> None:
    binary = wsservers.build_go(tmp_path)
    assert binary == tmp_path / "gorilla", binary
    (go,) = [c for c in wsservers.CONTENDERS if c.go]
    env = dict(go.environment(), **tagged_env)
    with serve(go.command("127.0.0.1", binary), env, go.name) as server:
        check_peer(server)


# -- the figures ------------------------------------------------------------------------


def run(cpu_us: float) -> Run:
    usage = machine.Usage(cpu_ns=int(cpu_us * 1000 * 100), user_ns=0, system_ns=0)
    return Run(messages=100, msgs_per_s=1.0, p50_us=1.0, p99_us=1.0, server=usage,
               loadgen_cpu_s=0.0)  # fmt: skip


def held(server: str, per_conn: int) -> websocket.HeldSeries:
    sample = websocket.Held(10, 0, 0, per_conn * 10, per_conn * 10, 10, 1.0, 1000)
    return websocket.HeldSeries(server, [sample])


def test_ratios_and_goals_are_taken_to_picows(tmp_path: Path) -> None:
    plan = websocket.Plan(2, 1.0, 1, 1, (64,), 10, 0.0, "127.0.0.1", None, None)
    series = [
        Series("rawepoll lt", 64, [run(9.0), run(12.0)]),
        Series("picows asyncio", 64, [run(10.0), run(10.0)]),
        Series("picows uvloop", 64, [run(10.0)]),  # a round short: not the reference
    ]
    idle = [held("rawepoll lt", 30), held("websockets asyncio", 14_000), held("Go gorilla", 20_000)]
    result = websocket.Result(plan, series, idle, {}, {})
    assert result.reference == "picows asyncio"
    ratio = result.ratio(series[0])
    assert ratio is not None and (ratio.median, ratio.low, ratio.high) == (1.05, 0.9, 1.2)
    assert result.ratio(series[2]) is None
    assert result.memory_goal() == 700
    notes = result.tables()[-1].notes
    assert (
        "goal CPU/msg <= 1x picows asyncio: rawepoll lt, 64 B: 1.05 (0.90-1.20) -- missed" in notes
    )
    assert "goal B/idle conn <= best peer / 20 = 700: rawepoll lt: 30 -- met" in notes
    report.write_json(tmp_path / "results.json", result.to_json())  # serialisable
    assert json.loads((tmp_path / "results.json").read_text())["goals"]["memory_bytes"] == 700
