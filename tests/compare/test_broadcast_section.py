"""``rawepoll compare --sections broadcast``, and the subscribed rows of the memory section.

``--quick`` (3 rounds of 200 and 2,000 subscribers) runs the whole section --
the C floor compiled, the asyncio peer and ``rawepoll serve`` started,
subscribed to, published to, every delivery verified -- and writes its tables,
JSON and plot; what it measures is not checked (tests assert behaviour,
benchmarks report numbers).  A server that loses a delivery must fail the run
(``--smoke``: one round of 50).
The peers' relay between worker processes, which only N above 19,000 needs,
is run here with two workers and a few subscribers.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rawepoll.tools.compare import broadcast
from rawepoll.tools.serverproc import ServerProcess

HERE = Path(__file__).resolve().parent
HAS_PLOTS = importlib.util.find_spec("matplotlib") is not None
HAS_GCC = shutil.which("gcc") is not None
SERVERS = {"C floor", "asyncio fan-out", "rawepoll"} if HAS_GCC else {"asyncio fan-out", "rawepoll"}

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("hdrh") is None, reason="the subscribers need hdrhistogram"
)


def compare(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rawepoll", "compare", *args],
        capture_output=True,
        text=True,
        timeout=200,
        env=env,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_section_measures_every_server(tmp_path: Path, tagged_env: dict[str, str]) -> None:
    result = compare(tagged_env, "--quick", "--sections", "broadcast", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["failures"] == []
    section = payload["broadcast"]
    assert section["failures"] == {}
    assert section["plan"]["subscribers"] == [200, 2000]
    rows = {(row["server"], row["subscribers"]): row for row in section["results"]}
    assert set(rows) == {(server, n) for server in SERVERS for n in (200, 2000)}
    for (server, n), row in rows.items():
        assert row["processes"] == 1 and row["rounds"] == 3
        assert row["messages_per_run"] == 20_000 // n
        assert row["cpu_us_per_delivery"]["median"] > 0
        assert row["delivery_p50_us"]["median"] <= row["delivery_max_us"]["median"]
        assert [run["deliveries"] for run in row["per_round"]] == [n * (20_000 // n)] * 3
        if HAS_GCC:
            assert row["ratio_to_floor"]["median"] > 0
            assert server != "C floor" or row["ratio_to_floor"]["median"] == 1.0
    if not HAS_GCC:
        assert "gcc" in section["skipped"]["C floor"]
    for title in ("5. broadcast to 2,000 subscribers", "5b. delivery time of one broadcast"):
        assert title in result.stdout
        assert title in (tmp_path / "results.md").read_text()
    if HAS_PLOTS:
        assert (tmp_path / "broadcast.png").read_bytes()[:4] == b"\x89PNG"
        assert payload["plots"] == {"broadcast": "broadcast.png"}


BROKEN_RUN = """
import sys
from rawepoll.tools.compare import broadcast
broadcast.CONTENDERS = ("asyncio fan-out",)
real = broadcast.command
def command(name, host, control, workers, floor):
    return [sys.executable, sys.argv[1], *real(name, host, control, workers, floor)[3:]]
broadcast.command = command
from rawepoll.__main__ import main
sys.exit(main(["compare", *sys.argv[2:]]))
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_server_that_loses_a_delivery_fails_the_run(
    tmp_path: Path, tagged_env: dict[str, str]
) -> None:
    options = ["--smoke", "--sections", "broadcast", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-c", BROKEN_RUN, str(HERE / "broken_fanout.py"), *options],
        capture_output=True,
        text=True,
        timeout=150,
        env=tagged_env,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stderr
    failures = json.loads((tmp_path / "results.json").read_text())["broadcast"]["failures"]
    assert list(failures) == ["asyncio fan-out, 50 subscribers"]
    assert "1 lost" in failures["asyncio fan-out, 50 subscribers"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_idle_subscribed_connections_are_measured(
    tmp_path: Path, tagged_env: dict[str, str]
) -> None:
    result = compare(
        tagged_env, "--smoke", "--sections", "memory", "--servers", "rawepoll lt",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    memory = json.loads((tmp_path / "results.json").read_text())["memory"]
    assert {row["server"] for row in memory["results"]} == {"rawepoll lt"}
    subscribed = {row["server"]: row for row in memory["subscribed"]}
    assert set(subscribed) == {
        "rawepoll, TCP subscriber (LinePubSubHandler)",
        "rawepoll, WebSocket subscriber (/topic/NAME)",
    }
    for row in subscribed.values():
        (sample,) = row["samples"]
        assert sample["conns"] == 200 and sample["fds_held"] >= 200
    assert "4b. memory per idle subscribed connection" in result.stdout


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(SERVERS))
def test_each_server_relays_between_two_workers(
    name: str, short_dir: Path, tagged_env: dict[str, str]
) -> None:
    """Two processes, subscribers spread over them: every one gets every message."""
    floor = short_dir / "fanout"
    if name == "C floor":
        assert broadcast.build_floor(short_dir) == floor
    control = short_dir / "control"
    argv = broadcast.command(name, "127.0.0.1", str(control), 2, floor)
    with ServerProcess(argv, env=tagged_env, start_bound=30, stop_bound=10, name=name) as server:
        assert len(set(server.ready.workers) | {server.pid}) >= 2
        run = subprocess.run(
            [
                sys.executable, "-m", "rawepoll", "bench", "--port", str(server.port),
                "--broadcast", "--control", str(control), "--topic", broadcast.TOPIC,
                "--conns", "40", "--messages", "20", "--json", "--quiet",
            ],
            capture_output=True, text=True, timeout=90, env=tagged_env, check=False,
        )  # fmt: skip
        stopped = server.stop()
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["delivered"] == result["expected"] == 40 * 20
    assert stopped.returncode == 0, server.stderr()


def test_scale_caps_what_the_limits_do_not_allow() -> None:
    wanted = (1000, 10**9)
    scaled, notes = broadcast.scale(wanted)
    assert scaled[0] == 1000
    assert scaled[-1] < 10**9 and len(notes) == 1
    assert broadcast.processes(1) == 1
    assert broadcast.processes(broadcast.per_process()) == 1
    assert broadcast.processes(broadcast.per_process() + 1) == 2


def test_help_explains_the_section() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rawepoll", "compare", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert "--subscribers" in result.stdout
    assert "broadcast" in result.stdout
