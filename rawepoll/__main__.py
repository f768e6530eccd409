"""The ``rawepoll`` command: ``rawepoll COMMAND [options]`` or ``python -m rawepoll ...``."""

from __future__ import annotations

import argparse
import sys

from rawepoll import _demo
from rawepoll._version import __version__
from rawepoll.server import cli as server_cli


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; each command has its own ``--help``."""
    parser = argparse.ArgumentParser(
        prog="rawepoll",
        description="Linux epoll from pure ctypes: tools built on the rawepoll binding.",
    )
    parser.add_argument("--version", action="version", version=f"rawepoll {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="show the binding next to select.epoll on loopback TCP; print what it measured",
        description=_demo.DESCRIPTION,
    )
    _demo.add_arguments(demo)
    demo.set_defaults(run=_demo.run)
    serve = commands.add_parser(
        "serve",
        help="run the echo server (level- or edge-triggered, workers, graceful shutdown)",
        description=server_cli.DESCRIPTION,
    )
    server_cli.add_arguments(serve)
    serve.set_defaults(run=server_cli.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; its exit status is returned."""
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
