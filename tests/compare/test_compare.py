"""``rawepoll compare`` end to end on a reduced setting, and against a server that corrupts.

The reduced setting (``--smoke``: one round, tiny runs) exercises every
section, every output file and the clean-up of every process; what it measures
is not checked -- tests assert behaviour, benchmarks report numbers.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rawepoll.tools.compare import memory
from rawepoll.tools.compare.servers import Contender, Server, ServerError

HERE = Path(__file__).resolve().parent
SECTIONS = ("scaling", "binding", "echo", "memory")
HAS_PLOTS = importlib.util.find_spec("matplotlib") is not None
HAS_LOAD = importlib.util.find_spec("hdrh") is not None  # rawepoll bench's latency histograms
SMOKE = ["--smoke", "--servers", "rawepoll lt,selectors", "--sizes", "64", "--n", "10,2000"]


def compare(
    env: dict[str, str], *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rawepoll", "compare", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_smoke_run_writes_every_file(tmp_path: Path, tagged_env: dict[str, str]) -> None:
    result = compare(tagged_env, *SMOKE, "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr

    payload = json.loads((tmp_path / "results.json").read_text())
    assert set(SECTIONS) <= payload.keys()
    assert payload["failures"] == []
    assert payload["environment"]["rawepoll"]

    scaling = payload["scaling"]["results"]
    assert {r["n_idle"] for r in scaling} == {10, 2000}
    methods_at_2000 = {r["method"] for r in scaling if r["n_idle"] == 2000}
    assert "select.select" not in methods_at_2000  # fds beyond FD_SETSIZE
    assert {"select.poll", "select.epoll", "Epoll.wait", "unix.EpollWait"} <= methods_at_2000
    for row in scaling:
        assert (
            row["us_per_wait"]["low"] <= row["us_per_wait"]["median"] <= row["us_per_wait"]["high"]
        )

    binding = {r["name"]: r for r in payload["binding"]["results"]}
    assert {"empty wait", "register+unregister", "floor: ctypes, empty"} <= binding.keys()
    assert all(r["ratio"]["median"] > 0 for r in binding.values())

    if HAS_LOAD:
        echo = payload["echo"]["results"]
        assert {(r["server"], r["size"]) for r in echo} == {("rawepoll lt", 64), ("selectors", 64)}
        assert all(r["cpu_us_per_msg"]["median"] > 0 for r in echo)
        assert all(r["msgs_per_s"]["median"] > 0 for r in echo)
        assert payload["echo"]["reference"] == "selectors"
    else:
        assert "hdrhistogram" in payload["echo"]["skipped"]

    held = payload["memory"]["results"]
    assert {r["server"] for r in held} == {"rawepoll lt", "selectors"}
    for row in held:
        (sample,) = row["samples"]
        assert sample["conns"] == 200
        assert sample["fds_held"] >= 200
        assert row["accepts_per_s"]["median"] > 0

    markdown = (tmp_path / "results.md").read_text()
    for title in ("1. wait scaling", "2. binding cost", "4. memory per idle connection"):
        assert title in markdown
        assert title in result.stdout  # the tables are printed too
    if HAS_PLOTS:
        for section in SECTIONS if HAS_LOAD else ("scaling", "binding", "memory"):
            png = tmp_path / f"{section}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"]({section}.png)" in markdown
        assert set(payload["plots"]) == set(
            SECTIONS if HAS_LOAD else ("scaling", "binding", "memory")
        )
    else:
        assert "no plots: matplotlib is not installed" in result.stdout
        assert payload["plots"] == {}


BROKEN_RUN = """
import sys
from rawepoll.tools.compare import servers
servers.CONTENDERS = (servers.Contender("broken", (sys.argv[1],), "selectors"),)
from rawepoll.__main__ import main
sys.exit(main(["compare", *sys.argv[2:]]))
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "section",
    ["memory", pytest.param("echo", marks=pytest.mark.skipif(not HAS_LOAD, reason="no hdrh"))],
)
def test_a_server_that_corrupts_fails_the_run(
    section: str, tmp_path: Path, tagged_env: dict[str, str]
) -> None:
    options = ["--smoke", "--sections", section, "--sizes", "64", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-c", BROKEN_RUN, str(HERE / "broken_echo.py"), *options],
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
    failure = payload[section]["failures"]["broken"]
    assert "first connection" not in failure  # caught in the measured traffic, not priming
    assert ("mismatch" if section == "echo" else "echoed") in failure


@pytest.mark.timeout(60)
def test_a_contender_that_never_announces_does_not_start() -> None:
    """No ``ready`` event: a ServerError naming it, with its last words, and nothing left."""
    mute = Contender("mute", ("-c", "import sys; sys.exit('bound nothing')"), "selectors")
    with pytest.raises(ServerError, match=r"(?s)mute exited \(1\) before 'ready'.*bound nothing"):
        Server(mute, timeout=30)


def test_help_names_every_section() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rawepoll", "compare", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    for option in ("--quick", "--out", "--servers", "--memory-conns", "--sections"):
        assert option in result.stdout
    assert "--smoke" not in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--servers", "no such server"],
        ["--sections", "scaling,nothing"],
        ["--rounds", "0"],
        ["--sizes", "64,x"],
        ["--seconds", "-1"],
    ],
)
def test_bad_arguments_exit_2(args: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rawepoll", "compare", *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "error" in result.stderr
    assert not (tmp_path / "results.json").exists()


def test_sources_spread_loopback_connections() -> None:
    assert memory.sources_for("::1", 50_000) == []
    assert memory.sources_for("192.0.2.1", 50_000) == []
    assert memory.sources_for("127.0.0.1", 1) == ["127.0.0.2"]
    spread = memory.sources_for("127.0.0.1", 3 * memory.PER_SOURCE + 1)
    assert spread == ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
