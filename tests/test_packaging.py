"""What ``make dist`` ships: built, checked, inspected and installed where nothing else is.

The wheel and the sdist are built with ``python -m build`` from a copy of the
working tree (so a build never writes into the tree others work in), checked
with ``twine check --strict``, opened and read, then each is installed with
``--no-deps`` into a fresh virtual environment of its own.  There, away from
the repository, an import smoke test runs: every subpackage imports, a real
epoll round trip on a socketpair, asyncio on rawepoll, and ``rawepoll
--version``.  The build tools come from the machine's configured package
index; the installs need nothing from it but the sdist's build backend.
"""

from __future__ import annotations

import email.parser
import email.policy
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest
from support.children import REPO_ROOT

import rawepoll

pytestmark = pytest.mark.timeout(900)

# What the build must not see: tool state, caches and earlier build output.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".hypothesis",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    "bench-results",
    "_build",
)
BUILD_BOUND = 600.0  # seconds for one command: a build may fetch its backend from the index


@dataclass(frozen=True)
class Dist:
    """The two built files and the folder they are in."""

    wheel: Path
    sdist: Path
    workdir: Path


def run(*command: str | os.PathLike[str], cwd: Path) -> str:
    """Run ``command``; fail the test with its output unless it exits 0.  Returns stdout."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [os.fspath(part) for part in command],
        capture_output=True,
        text=True,
        timeout=BUILD_BOUND,
        cwd=cwd,
        env=env,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited {result.returncode}\n"
        f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dist]:
    """``python -m build`` of a copy of the tree: one wheel and one sdist."""
    workdir = tmp_path_factory.mktemp("packaging")
    try:
        source = workdir / "source"
        shutil.copytree(REPO_ROOT, source, ignore=NOT_SOURCE, symlinks=True)
        out = workdir / "dist"
        run(sys.executable, "-m", "build", "--outdir", out, source, cwd=workdir)
        wheels = sorted(out.glob("*.whl"))
        sdists = sorted(out.glob("*.tar.gz"))
        assert len(wheels) == 1 and len(sdists) == 1, sorted(out.iterdir())
        yield Dist(wheels[0], sdists[0], workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def wheel_names(dist: Dist) -> set[str]:
    with zipfile.ZipFile(dist.wheel) as wheel:
        return set(wheel.namelist())


def wheel_metadata(dist: Dist) -> Message:
    with zipfile.ZipFile(dist.wheel) as wheel:
        [name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        text = wheel.read(name).decode()
    return email.parser.Parser(policy=email.policy.compat32).parsestr(text)


def source_modules(dist: Dist) -> set[str]:
    """Every module of the package in the tree that was built, as a wheel path."""
    source = dist.workdir / "source"
    return {path.relative_to(source).as_posix() for path in (source / "rawepoll").rglob("*.py")}


# ---------------------------------------------------------------- the files


def test_build_names_the_files_after_the_version(dist: Dist) -> None:
    assert dist.wheel.name == f"rawepoll-{rawepoll.__version__}-py3-none-any.whl"
    assert dist.sdist.name == f"rawepoll-{rawepoll.__version__}.tar.gz"


def test_twine_check_strict_passes(dist: Dist) -> None:
    out = run(
        sys.executable, "-m", "twine", "check", "--strict", dist.wheel, dist.sdist, cwd=dist.workdir
    )
    assert out.count("PASSED") == 2, out


def test_wheel_holds_every_module_and_py_typed_and_nothing_else(dist: Dist) -> None:
    names = wheel_names(dist)
    info = f"rawepoll-{rawepoll.__version__}.dist-info/"
    package = {name for name in names if not name.startswith(info)}
    # The peers compare builds at run time: the C echo server and fan-out floor, and the Go
    # WebSocket server.
    built = {
        "rawepoll/tools/compare/c/echo.c",
        "rawepoll/tools/compare/c/fanout.c",
        "rawepoll/tools/compare/peers/gorilla/main.go",
    }
    assert package == source_modules(dist) | {"rawepoll/py.typed"} | built
    for subpackage in ("server", "tools", "tools/loadgen", "tools/compare", "tools/compare/peers"):
        assert f"rawepoll/{subpackage}/__init__.py" in names
    assert f"{info}licenses/LICENSE" in names
    assert not {name for name in names if name.split("/")[0] in ("tests", "bench", "hardening")}


def test_wheel_metadata(dist: Dist) -> None:
    metadata = wheel_metadata(dist)
    assert metadata["Name"] == "rawepoll"
    assert metadata["Version"] == rawepoll.__version__
    assert metadata["Requires-Python"] == ">=3.10"
    assert metadata["License-Expression"] == "MIT"
    classifiers = metadata.get_all("Classifier")
    assert "Operating System :: POSIX :: Linux" in classifiers
    assert "Typing :: Typed" in classifiers
    # No runtime dependencies: every requirement belongs to an extra.
    requirements = metadata.get_all("Requires-Dist") or []
    assert all("extra ==" in requirement for requirement in requirements), requirements
    assert metadata.get_payload().lstrip().startswith("# rawepoll")  # the README, as markdown
    assert metadata["Description-Content-Type"] == "text/markdown"


def test_wheel_declares_the_command(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        [name] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
        entry_points = wheel.read(name).decode()
    assert "rawepoll = rawepoll.__main__:main" in entry_points


def test_sdist_carries_license_readme_and_py_typed(dist: Dist) -> None:
    root = f"rawepoll-{rawepoll.__version__}/"
    with tarfile.open(dist.sdist) as sdist:
        names = {name.removeprefix(root) for name in sdist.getnames()}
    for required in ("LICENSE", "README.md", "pyproject.toml", "PKG-INFO", "rawepoll/py.typed"):
        assert required in names
    packaged = {name for name in names if name.startswith("rawepoll/") and name.endswith(".py")}
    assert packaged == source_modules(dist)
    assert not {name for name in names if name.startswith(("tests/", "bench/", "hardening/"))}


# ---------------------------------------------------------------- installed

# Runs in the fresh environment, from a folder without rawepoll in it.
SMOKE = """
import asyncio, os, socket, sys

import rawepoll, rawepoll.tools.loadgen, rawepoll.server, rawepoll.unix

assert rawepoll.__file__.startswith(sys.prefix), rawepoll.__file__
assert os.path.exists(os.path.join(os.path.dirname(rawepoll.__file__), "py.typed"))

# The Go mirror and the Pythonic layer, on a socketpair.
a, b = socket.socketpair()
epfd = rawepoll.unix.EpollCreate1(rawepoll.unix.EPOLL_CLOEXEC)
event = rawepoll.unix.EpollEvent(rawepoll.unix.EPOLLIN, Fd=a.fileno())
rawepoll.unix.EpollCtl(epfd, rawepoll.unix.EPOLL_CTL_ADD, a.fileno(), event)
ep = rawepoll.Epoll()
ep.register(a, rawepoll.EPOLLIN)
events = rawepoll.EventArray(4)
b.send(b"ping")
n = ep.wait(events, 10.0)
assert list(events.ready(n)) == [(a.fileno(), rawepoll.EPOLLIN)], list(events.ready(n))
buffer = (rawepoll.unix.EpollEvent * 4)()
assert rawepoll.unix.EpollWait(epfd, buffer, 10000) == 1 and buffer[0].Fd == a.fileno()
assert a.recv(16) == b"ping"
ep.close(); os.close(epfd); a.close(); b.close()

# asyncio on the installed selector.
async def main():
    loop = asyncio.get_running_loop()
    assert isinstance(loop._selector, rawepoll.EpollSelector)
    r, w = socket.socketpair()
    r.setblocking(False); w.setblocking(False)
    await loop.sock_sendall(w, b"pong")
    data = await loop.sock_recv(r, 16)
    r.close(); w.close()
    return data

assert rawepoll.run(main()) == b"pong"
print("smoke ok", rawepoll.__version__)
"""


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installs_into_a_fresh_venv_and_works(dist: Dist, kind: str) -> None:
    """``pip install --no-deps`` of the built file, then the smoke test and the command."""
    env_dir = dist.workdir / f"venv-{kind}"
    try:
        run(sys.executable, "-m", "venv", "--without-pip", env_dir, cwd=dist.workdir)
        python = env_dir / "bin" / "python"
        built = dist.wheel if kind == "wheel" else dist.sdist
        run(
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--quiet",
            "--no-deps",
            built,
            cwd=dist.workdir,
        )
        out = run(python, "-I", "-W", "error", "-c", SMOKE, cwd=env_dir)
        assert out.strip() == f"smoke ok {rawepoll.__version__}"
        version = run(env_dir / "bin" / "rawepoll", "--version", cwd=env_dir)
        assert version.strip() == f"rawepoll {rawepoll.__version__}"
        module_version = run(python, "-I", "-m", "rawepoll", "--version", cwd=env_dir)
        assert module_version == version
    finally:
        shutil.rmtree(env_dir, ignore_errors=True)
