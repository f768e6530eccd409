"""Fuzz: bounded-time fuzzing of the binding and of the server's handler path.

``python -m hardening.fuzz --seconds 300`` (``make fuzz``) shares the time
among five targets, each run in a child interpreter of its own, one after the
other, so that a segfault or a hang is seen from outside as an exit status or
a missed deadline:

``binding``
    every public function and method of the binding, with garbage arguments
    (the engine of ``tests/test_fuzz.py``: :mod:`hardening.fuzzlib`);
``handlers``
    the sans-IO handlers fed arbitrary bytes in arbitrary chunks
    (:class:`hardening.fuzz_server.HandlerFuzz`);
``server-lt``, ``server-et``
    live level- and edge-triggered ``Worker`` loops on 127.0.0.1 with
    hypothesis-chosen clients: chunkings, slow readers, half-closes, early
    closes and resets, every byte checked (:class:`hardening.fuzz_server.ServerFuzz`);
``websocket``
    the WebSocket protocol's sans-IO core fed handshakes and frames -- valid,
    breaking a rule, mutated, garbage -- in arbitrary chunks, every answer checked
    (:class:`hardening.fuzz_websocket.WebSocketFuzz`).

It prints what each target tried (calls, handler calls, connections) and
every finding -- a crash (the child killed by a signal), a hang, an
undocumented exception, a wrong byte, a dead or leaking server -- with the
seed that reproduces it.  Exit status: 0 without findings, 1 with any, 2 for
bad arguments.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ("binding", "handlers", "server-lt", "server-et", "websocket")
GRACE = 180.0  # seconds a child may run past its budget: shrinking, a stall, draining
REPORT_PREFIX = "FUZZ-REPORT "
TAIL = 4000  # characters of a child's stderr kept with a finding


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hardening.fuzz",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=(
            "Targets: binding (every public function of rawepoll's epoll binding, with "
            "garbage arguments), handlers (the sans-IO handlers, arbitrary bytes and "
            "chunkings), server-lt and server-et (live Worker loops on 127.0.0.1 driven by "
            "hypothesis-chosen clients: chunkings, slow readers, half-closes, resets; every "
            "byte checked), websocket (the WebSocket protocol without sockets: handshakes and "
            "frames, valid, broken, mutated, in random chunkings). "
            "Each target runs in a child interpreter for its share of "
            "--seconds. Exit status: 0 if nothing was found, 1 on any crash, hang, "
            "undocumented exception or wrong byte, 2 for bad arguments."
        ),
    )
    parser.add_argument(
        "--seconds",
        type=_positive_seconds,
        default=300.0,
        help="total fuzzing time (default 300): each target in turn gets an equal share "
        "of what is left",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="first hypothesis seed of every target (default: a random one, printed)",
    )
    parser.add_argument(
        "--targets",
        type=_targets,
        default=TARGETS,
        metavar="T[,T...]",
        help=f"which targets, comma-separated (default all: {','.join(TARGETS)})",
    )
    parser.add_argument(
        "--echo-handler",
        metavar="MODULE:CLASS",
        help="fuzz this handler, which must echo every byte, instead of rawepoll's own "
        "in the handlers and server targets",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _targets(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in TARGETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown target(s) {unknown}; choose from {TARGETS}")
    return names


# ---------------------------------------------------------------- the parent


def run_target(target: str, seconds: float, seed: int, echo_handler: str | None) -> dict[str, Any]:
    """Run one target in a child interpreter; its report, with the child's fate as findings."""
    command = [
        sys.executable,
        "-m",
        "hardening.fuzz",
        "--child",
        target,
        "--seconds",
        repr(seconds),
        "--seed",
        str(seed),
    ]
    if echo_handler:
        command += ["--echo-handler", echo_handler]
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + (os.pathsep + path if path else ""))
    started = time.monotonic()
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    ) as proc:  # in our process group: whoever stops us as a group stops it too
        try:
            stdout, stderr = proc.communicate(timeout=seconds + GRACE)
            timed_out = False
        except subprocess.TimeoutExpired:
            proc.kill()  # it has no children of its own: the servers are threads
            stdout, stderr = proc.communicate()
            timed_out = True
        except BaseException:
            proc.kill()
            raise
    report = classify(target, proc.returncode, stdout, stderr, timed_out)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["reproduce"] = (
        f"python -m hardening.fuzz --targets {target} --seed {seed} --seconds {seconds:g}"
        + (f" --echo-handler {echo_handler}" if echo_handler else "")
    )
    return report


def classify(
    target: str, returncode: int, stdout: str, stderr: str, timed_out: bool
) -> dict[str, Any]:
    r"""The child's report, plus a finding for a signal, a hang or a missing report.

    >>> classify("binding", 1, "", "Timeout", True)["findings"][0]["kind"]
    'hang'
    >>> classify("binding", -11, "", "Segmentation fault", False)["findings"][0]["detail"]
    'killed by SIGSEGV'
    >>> classify("binding", 1, "", "Traceback", False)["findings"][0]["detail"]
    'exited 1 without a report'
    >>> last = '{"examples": 3, "calls": 9, "unit": "calls", "findings": []}'
    >>> clean = classify("binding", 0, "noise\nFUZZ-REPORT " + last + "\n", "", False)
    >>> clean["findings"], clean["calls"], clean["returncode"]
    ([], 9, 0)
    """
    report: dict[str, Any] = {"examples": 0, "calls": 0, "unit": "calls", "findings": []}
    for line in reversed(stdout.splitlines()):
        if line.startswith(REPORT_PREFIX):
            report = json.loads(line[len(REPORT_PREFIX) :])
            break
    else:
        line = ""
    findings: list[dict[str, str]] = report["findings"]
    tail = stderr[-TAIL:]
    if timed_out:
        findings.append({"kind": "hang", "detail": "no exit within its budget", "stderr": tail})
    elif returncode < 0:
        name = signal.Signals(-returncode).name
        findings.append({"kind": "crash", "detail": f"killed by {name}", "stderr": tail})
    elif not line:
        findings.append(
            {"kind": "crash", "detail": f"exited {returncode} without a report", "stderr": tail}
        )
    elif returncode != 0 and not findings:
        findings.append({"kind": "error", "detail": f"exited {returncode}", "stderr": tail})
    report["target"] = target
    report["returncode"] = returncode
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # unwind, so the running child is killed
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    targets: tuple[str, ...] = args.targets
    if not args.json:
        print(
            f"fuzz: seed {seed}, {args.seconds:g} s over {len(targets)} target(s): "
            f"{', '.join(targets)}",
            flush=True,
        )
    deadline = time.monotonic() + args.seconds
    reports = []
    for i, target in enumerate(targets):
        share = max(1.0, (deadline - time.monotonic()) / (len(targets) - i))
        reports.append(run_target(target, share, seed, args.echo_handler))
        if not args.json:
            print_target(reports[-1])
    findings = [dict(finding, target=r["target"]) for r in reports for finding in r["findings"]]
    if args.json:
        print(json.dumps({"seed": seed, "seconds": args.seconds, "targets": reports}, indent=1))
    else:
        print_findings(findings, reports)
    return 1 if findings else 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def print_target(report: dict[str, Any]) -> None:
    print(
        f"  {report['target']:<10} {report.get('seconds', 0):>7.1f} s "
        f"{report['examples']:>8} examples {report['calls']:>9} {report['unit']:<14} "
        f"{len(report['findings'])} finding(s)",
        flush=True,
    )
    per_target: dict[str, int] = report.get("per_target", {})
    if per_target:
        fewest = min(per_target.values())
        items = ", ".join(f"{name} {count}" for name, count in sorted(per_target.items()))
        print(f"    {len(per_target)} kinds, fewest {fewest}: {items}")
    if "bytes_sent" in report:
        print(
            f"    {report['bytes_sent']:,} bytes sent, {report['bytes_verified']:,} echoed "
            "bytes verified"
        )
        for name, stats in sorted(report.get("servers", {}).items()):
            counters = ", ".join(f"{key} {value}" for key, value in stats.items())
            print(f"    server {name}: {counters}")


def print_findings(findings: list[dict[str, str]], reports: list[dict[str, Any]]) -> None:
    if not findings:
        print("findings: none")
        return
    print(f"findings: {len(findings)}")
    reproduce = {r["target"]: r["reproduce"] for r in reports}
    for finding in findings:
        print(f"- [{finding['target']}] {finding['kind']}: {finding['detail']}")
        for key in ("example", "stderr"):
            if finding.get(key):
                print("    " + finding[key].replace("\n", "\n    "))
        print(f"    reproduce: {reproduce[finding['target']]}")


# ---------------------------------------------------------------- the child


def child_main(args: argparse.Namespace) -> int:
    """Run one target in this process; print its report as the last line."""
    faulthandler.enable()
    # A traceback before the parent gives up on us (the binding target's own per-call
    # watchdog replaces this one: a call that hangs is caught there).
    faulthandler.dump_traceback_later(args.seconds + GRACE - 30, exit=True)
    engines: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
        "binding": _binding,
        "handlers": _handlers,
        "server-lt": lambda a: _server("lt", a),
        "server-et": lambda a: _server("et", a),
        "websocket": _websocket,
    }
    report = engines[args.child](args)
    faulthandler.cancel_dump_traceback_later()
    print(REPORT_PREFIX + json.dumps(report), flush=True)
    return 1 if report["findings"] else 0


def _exception_finding(kind: str, exc: BaseException) -> dict[str, str]:
    """A finding from an exception hypothesis re-raised (with its falsifying example)."""
    text = "".join(traceback.format_exception(exc))  # the example is in its notes
    return {"kind": kind, "detail": text[-TAIL:]}


def _handler_specs(args: argparse.Namespace) -> dict[str, Any]:
    from hardening.fuzz_server import builtin_handlers, load_echo_handler

    if args.echo_handler:
        return {"custom": load_echo_handler(args.echo_handler)}
    return builtin_handlers()


def _binding(args: argparse.Namespace) -> dict[str, Any]:
    from hardening.fuzzlib import BindingFuzz

    findings = []
    with BindingFuzz() as engine:
        try:
            engine.run_for(args.seconds, args.seed)
        except Exception as exc:
            findings.append(_exception_finding("undocumented exception", exc))
        report = engine.report()
    missing = sorted(set(report["public"]) - set(report["targets"]))
    if missing:
        findings.append({"kind": "coverage", "detail": f"public but not fuzzed: {missing}"})
    if report["leaked_fds"]:
        findings.append(
            {"kind": "leak", "detail": f"descriptors left open: {report['leaked_fds']}"}
        )
    report.update(unit="calls", findings=findings)
    return report


def _handlers(args: argparse.Namespace) -> dict[str, Any]:
    from hardening.fuzz_server import HandlerFuzz
    from hardening.fuzzlib import run_for

    engine = HandlerFuzz(_handler_specs(args))
    findings = []
    try:
        run_for(engine.batch, engine.ROUND, args.seconds, args.seed)
    except Exception as exc:
        findings.append(_exception_finding("handler", exc))
    report = engine.report()
    report["findings"] = findings
    return report


def _websocket(args: argparse.Namespace) -> dict[str, Any]:
    from hardening.fuzz_websocket import WebSocketFuzz
    from hardening.fuzzlib import run_for

    engine = WebSocketFuzz()
    findings = []
    try:
        run_for(engine.batch, engine.ROUND, args.seconds, args.seed)
    except Exception as exc:
        findings.append(_exception_finding("websocket", exc))
    report = engine.report()
    report["findings"] = findings
    return report


def _server(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    from hardening.fuzz_server import ServerFuzz
    from hardening.fuzzlib import open_fds, run_for

    before = open_fds()
    engine = ServerFuzz(mode, _handler_specs(args))
    findings = []
    try:
        run_for(engine.batch, engine.ROUND, args.seconds, args.seed, lambda: engine.stopped)
    except Exception as exc:
        findings.append(_exception_finding("client", exc))
    finally:
        engine.close()
    leaked = open_fds() - before
    if leaked and not engine.findings:
        findings.append({"kind": "leak", "detail": f"descriptors left open: {sorted(leaked)}"})
    report = engine.report()
    report["findings"] = engine.findings + findings
    return report


if __name__ == "__main__":
    sys.exit(main())
