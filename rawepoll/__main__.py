"""The ``rawepoll`` command: ``rawepoll COMMAND [options]`` or ``python -m rawepoll ...``.

Each command lives in its own module with ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args) -> int``; this file only lists them.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from rawepoll import _demo
from rawepoll._version import __version__
from rawepoll.compare import cli as compare_cli
from rawepoll.loadgen import cli as loadgen_cli
from rawepoll.server import cli as server_cli

# name -> (one-line help, module)
COMMANDS: dict[str, tuple[str, ModuleType]] = {
    "demo": (
        "show the binding next to select.epoll on loopback TCP; print what it measured",
        _demo,
    ),
    "serve": (
        "run the echo server (level- or edge-triggered, workers, graceful shutdown)",
        server_cli,
    ),
    "bench": (
        "closed-loop echo load generator: every byte verified, latency percentiles",
        loadgen_cli,
    ),
    "compare": (
        "rawepoll against select/poll/epoll, selectors, asyncio and uvloop, side by side",
        compare_cli,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; each command has its own ``--help``."""
    parser = argparse.ArgumentParser(
        prog="rawepoll",
        description="Linux epoll from pure ctypes: tools built on the rawepoll binding.",
    )
    parser.add_argument("--version", action="version", version=f"rawepoll {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, module) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=module.DESCRIPTION)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; its exit status is returned."""
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
