"""Node's ``ws`` package as the client (``node_client.js``).

``ws`` is installed with npm, at test time, into ``tests/websocket/.node`` (git-ignored),
once: the folder is a cache.  Without node or npm, or when npm cannot install it
(offline), the test is skipped -- unless ``RAWEPOLL_REQUIRE_NODE_WS=1`` (``.ci/run``
installs ``ws`` there and sets it): then it fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rawepoll.tools.serverproc import ServerProcess

from .conftest import stop_cleanly
from .helpers import APP, BOUND, serve

pytestmark = pytest.mark.timeout(400)
HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / ".node"
REQUIRE = "RAWEPOLL_REQUIRE_NODE_WS"
WS_VERSION = "ws@8"
INSTALL_BOUND = 300.0  # seconds for npm


def unavailable(why: str) -> None:
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{why}, and {REQUIRE}=1 requires Node's ws")
    pytest.skip(f"{why}; set {REQUIRE}=1 to make this a failure")


def run_group(
    command: list[str], bound: float, **options: object
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a session of its own; on the way out its whole group is killed."""
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **options,  # type: ignore[call-overload]
    ) as process:
        try:
            out, err = process.communicate(timeout=bound)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """``ws`` installed in :data:`NODE_DIR` (once; concurrent test processes take turns)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node or npm is not installed")
    modules = NODE_DIR / "node_modules"
    NODE_DIR.mkdir(exist_ok=True)
    with open(NODE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (modules / "ws" / "package.json").exists():
            command = [str(npm), "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"]
            command += ["--prefer-offline", "--fetch-retries=1", WS_VERSION]
            try:
                result = run_group(command, INSTALL_BOUND)
            except subprocess.TimeoutExpired:
                unavailable(f"npm install {WS_VERSION} took more than {INSTALL_BOUND:g} s")
            if result.returncode != 0 or not (modules / "ws").exists():
                unavailable(f"npm could not install {WS_VERSION}: {result.stderr[-1500:]}")
    return modules


@pytest.fixture(params=["default", "app"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """The default application (1 worker, LT); the test application (2 workers, ET)."""
    app = request.param == "app"
    with serve(workers=2, mode="et", app=APP) if app else serve() as running:
        yield running
        stop_cleanly(running)


def test_nodes_ws_client(node_modules: Path, server: ServerProcess) -> None:
    publish = "--handler" in server.argv
    command = ["node", str(HERE / "node_client.js"), str(server.port)]
    command += ["publish"] if publish else []
    env = dict(os.environ, NODE_PATH=str(node_modules))
    result = run_group(command, BOUND + 10, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout)
    assert seen["text"] == {"data": "héllo from node 😀", "binary": False}
    assert seen["bytes"] == {"data": [0, 1, 2, 255], "binary": True}
    assert seen["empty"] == {"data": "", "binary": False}
    assert seen["fragmented"] == {"data": "fragmented", "binary": False}
    assert seen["large"] == {"same": True, "binary": True}
    assert seen["pong"] == "are you there"
    assert seen["close"] == 4000
    if publish:
        assert seen["published"] == {"data": "published from node", "binary": False}
