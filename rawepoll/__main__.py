"""The ``rawepoll`` command: ``rawepoll COMMAND [options]`` or ``python -m rawepoll ...``.

Each command lives in its own module with ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args) -> int``; this file only lists them.  Only the module of the
command being run is imported: ``rawepoll serve`` forks its workers from this
process, and every module it did not need would be memory each worker carries
(measured: ~0.2 MiB of private memory per worker for the other commands' imports).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rawepoll._version import __version__

# name -> (one-line help, module)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "show the binding next to select.epoll on loopback TCP; print what it measured",
        "rawepoll.tools.demo",
    ),
    "serve": (
        "run the echo server (level- or edge-triggered, workers, graceful shutdown)",
        "rawepoll.server.cli",
    ),
    "publish": (
        "publish a message to a running server's subscribers through its --control socket",
        "rawepoll.server.publish_cli",
    ),
    "bench": (
        "closed-loop echo load generator: every byte verified, latency percentiles",
        "rawepoll.tools.loadgen.cli",
    ),
    "compare": (
        "rawepoll against select/poll/epoll, selectors, asyncio and uvloop, side by side",
        "rawepoll.tools.compare.cli",
    ),
    "c1m": (
        "a million concurrent connections in a private network namespace (root), measured",
        "rawepoll.tools.c1m.cli",
    ),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser; each command has its own ``--help``.

    Only the command named in ``argv`` (the first word that is not an option)
    gets its module imported and its options added; None adds every command.
    """
    chosen = next((word for word in argv if not word.startswith("-")), None) if argv else None
    parser = argparse.ArgumentParser(
        prog="rawepoll",
        description="Linux epoll from pure ctypes: tools built on the rawepoll binding.",
    )
    parser.add_argument("--version", action="version", version=f"rawepoll {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, module_name) in COMMANDS.items():
        if argv is not None and name != chosen:
            commands.add_parser(name, help=summary)  # listed in --help, not loaded
            continue
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=summary, description=module.DESCRIPTION)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; its exit status is returned."""
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(words).parse_args(words)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
