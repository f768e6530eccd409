"""``rawepoll publish``: publish to a running server through its control socket."""

from __future__ import annotations

import argparse
import os
import sys

from rawepoll._cli import positive_seconds
from rawepoll.server import control

DESCRIPTION = (
    "Publish MESSAGE to every connection subscribed to TOPIC on a running "
    "'rawepoll serve --control PATH', in every worker (with --broadcast: to every "
    "connection). MESSAGE is taken as bytes, exactly as given; '-' reads it from "
    "standard input (binary-safe; put '--' before a MESSAGE that starts with '-'). "
    "Exit status: 0 when the server said OK, 1 when it refused (the reason is printed) "
    "or could not be reached, 2 for bad arguments (a bad topic name, a message above "
    "the server's limit). The protocol is described in rawepoll.server.control."
)

_USAGE = "%(prog)s --control PATH TOPIC MESSAGE\n       %(prog)s --control PATH --broadcast MESSAGE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rawepoll publish`` options."""
    parser.usage = _USAGE
    parser.add_argument(
        "--control",
        required=True,
        metavar="PATH",
        help="the server's control socket (its 'rawepoll serve --control PATH')",
    )
    parser.add_argument(
        "--broadcast",
        action="store_true",
        help="send MESSAGE to every connection of the server, subscribed or not (no TOPIC)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=control.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for the server to take the message and answer (default %(default)s)",
    )
    parser.add_argument("topic", nargs="?", metavar="TOPIC", help="the topic to publish to")
    parser.add_argument(
        "message", nargs="?", metavar="MESSAGE", help="what to publish; '-' reads standard input"
    )


class _UsageError(ValueError):
    """Bad arguments: exit status 2."""


def run(args: argparse.Namespace) -> int:
    """Send the one request; 0 on OK, 1 on ERR or no server, 2 for bad arguments."""
    try:
        request = _request(args)
    except (TypeError, ValueError) as error:
        print(f"rawepoll publish: error: {error}", file=sys.stderr)
        return 2
    try:
        with control.ControlClient(args.control, timeout=args.timeout) as client:
            client.request(request, b"OK")
    except control.ControlError as error:
        print(f"rawepoll publish: the server refused: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        print(f"rawepoll publish: cannot publish through {args.control}: {reason}", file=sys.stderr)
        return 1
    return 0


def _request(args: argparse.Namespace) -> bytes:
    """The encoded request the arguments ask for.

    Raises:
        ValueError, TypeError: the arguments do not make a request.
    """
    if args.broadcast:
        if args.topic is None or args.message is not None:
            raise _UsageError("--broadcast takes MESSAGE only, no TOPIC")
        payload = _payload(args.topic, control.payload_limit(None))
        return control.encode(control.Broadcast(payload))
    if args.topic is None or args.message is None:
        raise _UsageError("TOPIC and MESSAGE are required (or --broadcast MESSAGE)")
    topic = args.topic
    control.encode(control.Publish(topic, b""))  # the topic is checked before stdin is read
    payload = _payload(args.message, control.payload_limit(topic))
    return control.encode(control.Publish(topic, payload))


def _payload(message: str, limit: int) -> bytes:
    """MESSAGE's bytes (as the command line gave them), or standard input's for ``-``."""
    if message != "-":
        return os.fsencode(message)
    payload = sys.stdin.buffer.read(limit + 1)
    if len(payload) > limit:
        raise _UsageError(f"standard input holds more than the limit of {limit} bytes")
    return payload
