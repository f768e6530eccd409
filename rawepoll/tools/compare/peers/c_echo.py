"""Echo server: ``c/echo.c``, an epoll echo loop in C -- the floor under the Python servers.

This wrapper compiles it with gcc (into a cache folder, once per source), binds
the listening socket, announces it like every peer (``--status-fd``), and
replaces itself with the C program, which takes the socket as descriptor 3:
the measured process is the C program alone.  Without gcc it exits 2 and says so.

Usage: ``python -m rawepoll.tools.compare.peers.c_echo [--host HOST] [--port PORT]``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from rawepoll.tools.compare.peers import announce, parse_args

LISTENER = 3  # the descriptor c/echo.c serves


def build() -> Path | str:
    """The compiled program (cached by the source's hash), or why it could not be built."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return "gcc is not installed: no C echo server"
    source = importlib.resources.files("rawepoll.tools.compare").joinpath("c/echo.c").read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"rawepoll-c-echo-{os.getuid()}"
    cache.mkdir(mode=0o700, exist_ok=True)
    binary = cache / f"echo-{digest}"
    if binary.exists():
        return binary
    src = cache / f"echo-{digest}.c"
    src.write_bytes(source)
    partial = cache / f"echo-{digest}.{os.getpid()}"
    done = subprocess.run(
        [gcc, "-O2", "-o", str(partial), str(src)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return f"gcc could not build the C echo server: {done.stderr.strip()[-300:]}"
    partial.replace(binary)  # atomic: two wrappers building at once both end with one binary
    return binary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, argv)
    binary = build()
    if isinstance(binary, str):
        print(binary, file=sys.stderr)
        return 2
    listener = socket.create_server((args.host, args.port), backlog=4096)
    listener.setblocking(False)
    announce(listener, args.status_fd)
    # The status descriptor stays open across the exec (the C program never writes it;
    # its reader sees its end when the program exits) -- moved if it is where the
    # listener must go.
    if args.status_fd == LISTENER:
        os.set_inheritable(os.dup(LISTENER), True)
    if listener.fileno() != LISTENER:
        os.dup2(listener.fileno(), LISTENER, inheritable=True)
    os.set_inheritable(LISTENER, True)  # dup2 onto itself leaves close-on-exec set
    os.execv(binary, [str(binary)])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
