"""Soak: minutes of mixed load against ``rawepoll serve --workers 2``; drift and mismatches.

``python -m hardening.soak --seconds 600`` (``make soak``) starts the server on
a free port of 127.0.0.1 and client processes that keep, each of them, a mix
of connections open (see ``hardening/_clients.py``): short connections that
echo a few messages and disconnect, connections reset mid-stream (SO_LINGER 0),
slow readers that make the server's output back up, messages of megabytes,
and a set of long-lived connections echoing all along.  Every byte that comes
back is compared with what was sent.

Meanwhile the server's whole process tree (supervisor and workers) is sampled
with psutil: total RSS and descriptors.  The report gives both at the end of
the warm-up and at the end of the load, the least-squares slope in between,
and the idle server before and after the load.

It fails (exit status 1) when any byte differs, when a connection failed or
was lost, when the clients' counters do not add up, when the idle server
holds more descriptors after the load than before it, or when RSS grew by more
than ``--max-rss-growth`` MiB from the end of the warm-up to the end of the
load (as the fitted slope predicts over that window).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
import time
from typing import Any

from hardening._clients import ENDINGS
from hardening._common import (
    ClientGroup,
    Sample,
    Sampler,
    ServerProcess,
    add_counts,
    drift,
    exit_summary,
    print_json,
    print_table,
    sample_tree,
    serve_command,
    terminate_as_interrupt,
    verdict_row,
    wait_until,
)

MIB = 1 << 20
KINDS = ("short", "reset", "slow", "large", "steady")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hardening.soak",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=(
            "Each client process keeps --short, --reset, --slow, --large and --steady "
            "connections open at once, starting a new one whenever one ends, for --seconds; "
            "then the server is sampled idle and stopped with SIGTERM. Exit status: 0 if "
            "every byte was verified, nothing failed and nothing drifted beyond the "
            "thresholds; 1 otherwise; 2 for bad arguments."
        ),
    )
    parser.add_argument("--seconds", type=float, default=600.0, help="load duration (600)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of load before the drift is measured (default: a tenth, 5..60 s)",
    )
    parser.add_argument("--workers", type=int, default=2, help="server workers (2)")
    parser.add_argument("--mode", choices=("lt", "et"), default="lt", help="server loop (lt)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (2)")
    parser.add_argument("--short", type=int, default=4, help="short connections per client (4)")
    parser.add_argument("--reset", type=int, default=2, help="resetting connections (2)")
    parser.add_argument("--slow", type=int, default=2, help="slow readers (2)")
    parser.add_argument("--large", type=int, default=1, help="large-message connections (1)")
    parser.add_argument("--steady", type=int, default=50, help="long-lived connections (50)")
    parser.add_argument(
        "--large-mib", type=float, default=16.0, help="largest message, MiB (16; 1 at least)"
    )
    parser.add_argument(
        "--slow-mib", type=float, default=8.0, help="most a slow reader sends, MiB (8)"
    )
    parser.add_argument(
        "--interval", type=float, default=None, help="sampling period (default: seconds / 120)"
    )
    parser.add_argument(
        "--max-rss-growth",
        type=float,
        default=16.0,
        metavar="MIB",
        help="fail if RSS grows more than this after the warm-up (16 MiB)",
    )
    parser.add_argument(
        "--server-command",
        default=None,
        metavar="CMD",
        help="run this echo server instead of rawepoll serve (it must take --status-fd N "
        "and announce itself there, as rawepoll.tools.serverproc.write_ready does); for "
        "proving that the checks catch a broken server",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.clients < 1 or args.workers < 1:
        parser.error("--seconds, --clients and --workers must be positive")
    if args.warmup is None:
        args.warmup = min(60.0, max(5.0, args.seconds / 10))
    args.warmup = min(args.warmup, args.seconds / 2)
    if args.interval is None:
        args.interval = min(5.0, max(0.2, args.seconds / 120))
    return args


def client_job(args: argparse.Namespace, port: int, host: str, index: int) -> dict[str, Any]:
    large = max(1 << 20, int(args.large_mib * MIB))
    slow = max(1 << 18, int(args.slow_mib * MIB))
    return {
        "type": "mixed",
        "host": host,
        "port": port,
        "seconds": args.seconds,
        "grace": 60.0,
        "seed": args.seed * 1000 + index,
        "base": index << 24,
        "kinds": {kind: getattr(args, kind) for kind in KINDS},
        "params": {
            "large_bytes": [min(1 << 20, large), large],
            "slow_bytes": [min(2 << 20, slow), slow],
        },
        "sources": [f"127.0.{10 + index}.{k}" for k in range(1, 9)] if host == "127.0.0.1" else [],
    }


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; the report (see ``verdict`` in it)."""
    command = shlex.split(args.server_command) if args.server_command else None
    if command is None:
        command = serve_command("--workers", str(args.workers), "--mode", args.mode)
    report: dict[str, Any] = {"seconds": args.seconds, "warmup_s": args.warmup}
    with ServerProcess(command) as server:  # its workers are forked once it is ready
        before = settled_sample(server.pid)
        started = time.monotonic()
        with Sampler(server.pid, args.interval) as sampler, ClientGroup() as group:
            clients = [
                group.start(client_job(args, server.port, server.host, i), f"client-{i}")
                for i in range(args.clients)
            ]
            if not args.json:
                print(
                    f"soak: {args.seconds:g} s of mixed load on {server.host}:{server.port} "
                    f"({args.clients} client processes)",
                    file=sys.stderr,
                    flush=True,
                )
            results = [c.result(args.seconds + 120.0) for c in clients]
        load_end = min(args.seconds, time.monotonic() - started)
        # Idle again: every connection closed, descriptors back (bounded wait).
        if before is not None:
            wait_until(
                lambda: (s := sample_tree(server.pid)) is not None and s.fds <= before.fds, 10.0
            )
        after = sample_tree(server.pid)
        stopped = server.stop()
        report["server"] = {
            "command": " ".join(command),
            "exit_status": stopped.returncode,
            "summary": exit_summary(stopped),
            "stderr": server.stderr().splitlines()[-5:],
        }
    samples = [s for s in sampler.samples if s.t <= load_end]
    report["clients"] = {
        "processes": args.clients,
        "kinds": {
            kind: add_counts([{"k": r["kinds"].get(kind, {})} for r in results], "k")
            for kind in KINDS
        },
        "totals": add_counts(results, "totals"),
        "mismatched_bytes": sum(int(r["mismatched_bytes"]) for r in results),
        "problems": [p for r in results for p in r["problems"]][:10],
    }
    report["rss"] = {
        **drift(samples, args.warmup, "rss"),
        "idle_before": before.rss if before else None,
        "idle_after": after.rss if after else None,
    }
    report["fds"] = {
        **drift(samples, args.warmup, "fds"),
        "idle_before": before.fds if before else None,
        "idle_after": after.fds if after else None,
    }
    report["samples"] = len(samples)
    report["load_s"] = round(load_end, 1)
    report["verdict"] = judge(report, args)
    return report


def settled_sample(pid: int) -> Sample | None:
    """A sample of the idle tree once its descriptor count holds still (workers set up)."""
    pacer = threading.Event()
    last = sample_tree(pid)
    for _ in range(40):
        pacer.wait(0.25)
        now = sample_tree(pid)
        if now is None or last is None or now.fds == last.fds:
            return now
        last = now
    return last


def judge(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Every check, and whether all passed."""
    growth = rss_growth(report, args)
    failures = [
        *client_failures(report["clients"]),
        *byte_chain_failures(report["clients"]["totals"], report["server"]["summary"]),
        *leak_failures(report["fds"]),
    ]
    if growth > args.max_rss_growth * MIB:
        failures.append(
            f"RSS grew {growth / MIB:.1f} MiB after the warm-up (fitted), "
            f"above {args.max_rss_growth:g} MiB"
        )
    return {
        "ok": not failures,
        "failures": failures,
        "rss_growth_fitted_mib": round(growth / MIB, 2),
        "max_rss_growth_mib": args.max_rss_growth,
    }


def client_failures(clients: dict[str, Any]) -> list[str]:
    """Every byte right, no connection lost or failed, each kind's endings adding up."""
    failures: list[str] = []
    totals = clients["totals"]
    if totals.get("mismatched", 0) or clients["mismatched_bytes"]:
        failures.append(
            f"{totals.get('mismatched', 0)} connection(s) got other bytes back "
            f"({clients['mismatched_bytes']} bytes wrong)"
        )
    for how in ("lost", "failed"):
        if totals.get(how, 0):
            failures.append(f"{totals[how]} connection(s) {how}")
    for kind, counts in clients["kinds"].items():
        ended = sum(counts.get(how, 0) for how in ENDINGS)
        if counts.get("started", 0) != ended:
            failures.append(f"{kind}: {counts.get('started', 0)} started but {ended} ended")
        if counts.get("bytes_verified", 0) > counts.get("bytes_sent", 0):
            failures.append(f"{kind}: more bytes verified than sent")
    return failures


def byte_chain_failures(totals: dict[str, int], summary: dict[str, int]) -> list[str]:
    """Verified <= echoed by the server <= received by it <= sent (when it reported)."""
    if not summary:
        return []
    received, echoed = int(summary["bytes_in"]), int(summary["bytes_out"])
    verified, sent = totals.get("bytes_verified", 0), totals.get("bytes_sent", 0)
    if verified <= echoed <= received <= sent:
        return []
    return [
        f"byte counts do not chain: verified {verified} <= server out {echoed} "
        f"<= server in {received} <= sent {sent}"
    ]


def leak_failures(fds: dict[str, Any]) -> list[str]:
    """The idle server holds no more descriptors after the run than before it."""
    if fds["idle_before"] is not None and (fds["idle_after"] or 0) > fds["idle_before"]:
        return [f"descriptors leaked: {fds['idle_before']} idle before, {fds['idle_after']} after"]
    return []


def rss_growth(report: dict[str, Any], args: argparse.Namespace) -> float:
    """Bytes the RSS grew after the warm-up, by the fitted slope (0 if it shrank)."""
    window = max(0.0, report["load_s"] - args.warmup) / 60
    return max(report["rss"]["slope_per_min"] * window, 0.0)


def rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    clients = report["clients"]
    out: list[tuple[str, str]] = []
    for kind, c in clients["kinds"].items():
        ended = ", ".join(f"{how} {c.get(how, 0):,}" for how in ENDINGS if c.get(how, 0))
        out.append(
            (
                f"{kind} connections",
                f"{c.get('started', 0):,} started ({ended}); "
                f"{c.get('bytes_verified', 0) / MIB:,.1f} MiB verified",
            )
        )
    t = clients["totals"]
    out.append(
        ("bytes sent / verified", f"{t.get('bytes_sent', 0):,} / {t.get('bytes_verified', 0):,}")
    )
    out.append(("mismatched bytes", f"{clients['mismatched_bytes']:,}"))
    for name, unit, scale in (("rss", "MiB", MIB), ("fds", "", 1)):
        d = report[name]
        out.append(
            (
                f"{name} warm-up end -> end",
                f"{d['start'] / scale:,.1f} -> {d['end'] / scale:,.1f} {unit} "
                f"(min {d['min'] / scale:,.1f}, max {d['max'] / scale:,.1f}, "
                f"slope {d['slope_per_min'] / scale:+.3f} {unit}/min)",
            )
        )
        if d["idle_before"] is not None:
            out.append(
                (
                    f"{name} idle before -> after",
                    f"{d['idle_before'] / scale:,.1f} -> "
                    f"{(d['idle_after'] or 0) / scale:,.1f} {unit}",
                )
            )
    summary = report["server"]["summary"]
    if summary:
        out.append(
            (
                "server",
                f"accepted {int(summary['accepted']):,}, bytes in {int(summary['bytes_in']):,}, "
                f"out {int(summary['bytes_out']):,}, exit status {report['server']['exit_status']}",
            )
        )
    out.append(verdict_row(report))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    terminate_as_interrupt()
    report = soak(args)
    if args.json:
        print_json(report)
    else:
        print_table(f"soak: {args.seconds:g} s, {report['samples']} samples", rows(report))
        for problem in report["clients"]["problems"]:
            print(f"  problem: {problem}")
    return 0 if report["verdict"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
