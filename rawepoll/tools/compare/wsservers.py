"""The WebSocket echo servers of ``rawepoll compare --sections websocket``, and how each is run.

Every contender echoes every message at any path, serves in one process (one
worker, one event loop; Go with ``GOMAXPROCS=1``), takes ``--host``, ``--port``
and ``--status-fd N`` and announces itself with the JSON ``ready`` event of
``rawepoll serve`` (the Python peers through
:func:`rawepoll.tools.serverproc.write_ready`, the Go one by writing the same
object):

=====================  ==================================================================
``rawepoll lt``        ``python -m rawepoll serve --protocol websocket --mode lt``
``rawepoll et``        ``python -m rawepoll serve --protocol websocket --mode et``
``websockets asyncio`` ``python -m rawepoll.tools.compare.peers.websockets_echo``
``websockets uvloop``  the same with ``--loop uvloop``
``picows asyncio``     ``python -m rawepoll.tools.compare.peers.picows_echo``
``picows uvloop``      the same with ``--loop uvloop``
``Go gorilla``         ``peers/gorilla/main.go``, built by :func:`build_go` when the
                       section starts
=====================  ==================================================================

A contender whose module (or, for Go, the ``go`` command or gorilla's source)
is missing is skipped with a note saying why; nothing else changes.

**The Go build** uses Debian's packages and never the network: ``go build``
with ``GO111MODULE=off`` and ``GOPATH=/usr/share/gocode`` (where
``golang-github-gorilla-websocket-dev`` puts ``github.com/gorilla/websocket``;
``GOPROXY=off``, ``GOFLAGS`` empty, and a
fresh ``GOCACHE`` in the section's temporary directory, which receives the
binary too.  Go's standard library comes precompiled with golang-go 1.19, so
the build takes a second or two.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["CONTENDERS", "GOPATH", "GORILLA", "GO_PROGRAM", "Contender", "build_go", "select"]

PEERS: Final = "rawepoll.tools.compare.peers"
GO_PROGRAM: Final = "peers/gorilla/main.go"  # package data of rawepoll.tools.compare
GOPATH: Final = "/usr/share/gocode"  # Debian's golang-*-dev packages
GORILLA: Final = "github.com/gorilla/websocket"
BUILD_S: Final = 300.0  # a cold build of the standard library takes a minute on a slow machine
_WS: Final = ("--protocol", "websocket", "--quiet")
_EXTRAS: Final = {"httptools": "websocket", "uvloop": "bench"}  # else wspeers


@dataclass(frozen=True)
class Contender:
    """How to start one WebSocket echo server.

    ``argv`` follows the interpreter (a Python contender) or the built binary
    (``go``: a Go program of :func:`build_go`); ``--host`` and ``--port 0``
    follow it.  ``needs`` names the Python modules it cannot run without.
    """

    name: str
    argv: tuple[str, ...]
    needs: tuple[str, ...] = ()
    go: bool = False

    def missing(self) -> str | None:
        """Why this contender cannot run here, or None (the Go build is checked by build_go)."""
        for module in self.needs:
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                extra = _EXTRAS.get(module, "wspeers")
                return f"{module} is not installed (pip install 'rawepoll[{extra}]')"
        return None

    @property
    def is_rawepoll(self) -> bool:
        return self.name.startswith("rawepoll")

    def command(self, host: str, go_binary: Path | None) -> list[str]:
        """The command line (``--status-fd`` is added by the caller)."""
        program = [str(go_binary)] if self.go else [sys.executable]
        return [*program, *self.argv, "--host", host, "--port", "0"]

    def environment(self) -> dict[str, str]:
        """The environment it runs in: ours, unbuffered, and one OS thread running Go code."""
        return dict(os.environ, PYTHONUNBUFFERED="1", GOMAXPROCS="1")


CONTENDERS: tuple[Contender, ...] = (
    Contender("rawepoll lt", ("-m", "rawepoll", "serve", *_WS, "--mode", "lt"), ("httptools",)),
    Contender("rawepoll et", ("-m", "rawepoll", "serve", *_WS, "--mode", "et"), ("httptools",)),
    Contender("websockets asyncio", ("-m", f"{PEERS}.websockets_echo"), ("websockets",)),
    Contender(
        "websockets uvloop",
        ("-m", f"{PEERS}.websockets_echo", "--loop", "uvloop"),
        ("websockets", "uvloop"),
    ),
    Contender("picows asyncio", ("-m", f"{PEERS}.picows_echo"), ("picows",)),
    Contender(
        "picows uvloop", ("-m", f"{PEERS}.picows_echo", "--loop", "uvloop"), ("picows", "uvloop")
    ),
    Contender("Go gorilla", (), go=True),
)


def select(names: str | None) -> list[Contender]:
    """The contenders named in a comma-separated list (all by default), in table order.

    Raises:
        ValueError: a name is not a contender's.
    """
    if not names:
        return list(CONTENDERS)
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = {c.name for c in CONTENDERS}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"unknown WebSocket server(s) {unknown}; known: {', '.join(known)}")
    return [c for c in CONTENDERS if c.name in wanted]


def build_go(workdir: Path) -> Path | str:
    """Build ``peers/gorilla/main.go`` into ``workdir``, offline: the binary, or why not."""
    go = shutil.which("go")
    if go is None:
        return "go is not installed (Debian: apt-get install golang-go)"
    if not (Path(GOPATH) / "src" / GORILLA).is_dir():
        return (
            f"{GORILLA} is not in {GOPATH}/src "
            "(Debian: apt-get install golang-github-gorilla-websocket-dev)"
        )
    binary = workdir / "gorilla"
    source = importlib.resources.files("rawepoll.tools.compare").joinpath(GO_PROGRAM)
    with importlib.resources.as_file(source) as path:
        done = _run([go, "build", "-o", str(binary), str(path)], _go_environment(workdir))
    if isinstance(done, str):
        return done
    if done.returncode != 0:
        return f"go build failed: {done.stderr.strip()[-300:]}"
    return binary


def _go_environment(workdir: Path) -> dict[str, str]:
    """Debian's GOPATH layout, no modules, no proxy, a cache of the run's own."""
    return dict(
        os.environ,
        GO111MODULE="off",
        GOPATH=GOPATH,
        GOPROXY="off",
        GOFLAGS="",
        GOCACHE=str(workdir / "go-cache"),
    )


def _run(argv: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str] | str:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=BUILD_S, check=False
        )
    except subprocess.TimeoutExpired:
        return f"go build took more than {BUILD_S:g} s"
