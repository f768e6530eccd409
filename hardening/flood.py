"""Slowloris and a connect flood: does ``rawepoll serve`` keep serving its connections?

``python -m hardening.flood`` (``make flood``) starts ``rawepoll serve
--max-conns M`` on a free port of 127.0.0.1 and a set of *served*
connections, each echoing a small message at a steady pace, whose every
round trip is timed (HdrHistogram) and verified.  Then, one after another,
each phase lasting ``--phase`` seconds:

1. **baseline** -- the served connections alone;
2. **slowloris** -- thousands more connections, each trickling one byte a
   second (and getting it back, verified);
3. **flood** -- connections opened as fast as the client can, more than
   ``--max-conns`` allows: the server fills up, and what comes beyond is
   refused (one worker closes it at once, counted as ``refused``) or queued
   in the kernel's accept queue (several full workers stop accepting);
4. **after** -- the served connections alone again.

It reports the served connections' round-trip percentiles in each phase, how
the slowloris connections fared, and the flood's attempts: served (echoed,
then held), refused, queued, or not connected.  Exit status 1 when a served
connection was lost, failed or got other bytes back, when a phase had no
round trip, when the flood never went beyond the limit, or when the server
held more than ``--max-conns`` per worker; 0 otherwise; 2 for bad arguments.
Latencies are reported, never judged: they depend on the machine.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from typing import Any

from hardening._common import (
    ClientGroup,
    ClientProcess,
    ServerProcess,
    exit_summary,
    print_json,
    print_table,
    serve_command,
    terminate_as_interrupt,
    verdict_row,
    wait_until,
)
from rawepoll.tools.loadgen import latency

PHASES = ("baseline", "slowloris", "flood", "after")
PER_PROCESS = 8000  # connections per client process, well below RLIMIT_NOFILE


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hardening.flood",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=(
            "Phases: baseline, slowloris, flood, after, each --phase seconds once under way. "
            "Exit status 0 if the served connections kept echoing every byte right and the "
            "flood went beyond --max-conns as documented, 1 otherwise."
        ),
    )
    parser.add_argument("--phase", type=float, default=20.0, help="seconds per phase (20)")
    parser.add_argument("--workers", type=int, default=1, help="server workers (1)")
    parser.add_argument("--mode", choices=("lt", "et"), default="lt", help="server loop (lt)")
    parser.add_argument(
        "--max-conns", type=int, default=6000, help="the server's --max-conns, per worker (6000)"
    )
    parser.add_argument("--served", type=int, default=20, help="served, timed connections (20)")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.01,
        help="seconds between a served connection's messages (0.01)",
    )
    parser.add_argument("--size", type=int, default=64, help="served message size (64)")
    parser.add_argument("--slowloris", type=int, default=4000, help="trickling connections (4000)")
    parser.add_argument(
        "--beyond",
        type=int,
        default=2000,
        help="flood attempts kept going beyond what the server has room for (2000)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    if min(args.phase, args.workers, args.max_conns, args.served, args.pause, args.size) <= 0:
        parser.error("every number must be positive")
    if args.served + args.slowloris > args.max_conns * args.workers:
        parser.error("--served + --slowloris must fit in --max-conns x --workers")
    return args


def say(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def mixed_job(
    server: ServerProcess, steady: int, size: int, pause: float, base: int, **more: Any
) -> dict[str, Any]:
    return {
        "type": "mixed",
        "host": server.host,
        "port": server.port,
        "seconds": 3600.0,  # stopped by closing stdin
        "grace": 20.0,
        "base": base,
        "kinds": {"steady": steady},
        "params": {"steady_size": size, "steady_pause": pause},
        **more,
    }


def server_open(server: ServerProcess) -> int | None:
    """Open connections in the server's latest status event."""
    statuses = server.statuses()
    return int(statuses[-1]["counters"]["open"]) if statuses else None


def phase_histograms(
    windows: dict[str, tuple[float, float]], buckets: dict[str, dict[str, int]]
) -> dict[str, dict[str, float]]:
    """Percentiles of the round trips in each window (whole tenths of seconds inside it)."""
    new = latency.require()
    out = {}
    for name, (start, end) in windows.items():
        histogram = new(1, latency.HIGHEST_US, 3)
        for tenth, counts in buckets.items():
            if math.ceil(start * 10) <= int(tenth) and int(tenth) + 1 <= end * 10:
                for us, count in counts.items():
                    histogram.record_value(min(max(int(us), 1), latency.HIGHEST_US), count)
        figures = latency.percentiles(histogram)
        figures["count"] = float(histogram.get_total_count())
        out[name] = figures
    return out


def flood(args: argparse.Namespace) -> dict[str, Any]:
    command = serve_command(
        "--workers",
        str(args.workers),
        "--mode",
        args.mode,
        "--max-conns",
        str(args.max_conns),
        "--stats-interval",
        "0.5",
    )
    pacer = threading.Event()
    windows: dict[str, tuple[float, float]] = {}
    report: dict[str, Any] = {
        "phase_s": args.phase,
        "workers": args.workers,
        "max_conns": args.max_conns,
        "served_conns": args.served,
        "served_rate_per_s": round(args.served / args.pause),
    }
    with ServerProcess(command) as server, ClientGroup() as group:  # workers forked when ready
        served = group.start(
            mixed_job(server, args.served, args.size, args.pause, 0, latency=True), "served"
        )
        served.await_ready(60.0)
        say(args, f"flood: {args.served} served connections echoing; baseline")
        windows["baseline"] = measure(args, pacer)

        trickle, ramp_s = start_slowloris(args, server, group)
        report["slowloris_ramp_s"] = ramp_s
        say(args, f"flood: {args.slowloris} slowloris connections up; measuring")
        windows["slowloris"] = measure(args, pacer)
        for client in trickle:
            client.tell_stop()
        slow_results = [client.result(60.0) for client in trickle]
        wait_for_served_alone(args, server)

        room = args.max_conns * args.workers - args.served
        flooder = group.start(flood_job(args, server, room), "flood")
        say(args, f"flood: flooding ({room} places, {args.beyond} attempts beyond)")
        flooder.await_ready(60.0)
        windows["flood"] = measure(args, pacer)
        max_open = max((int(e["counters"]["open"]) for e in server.statuses()), default=0)
        flooder.tell_stop()
        flood_result = flooder.result(60.0)
        wait_for_served_alone(args, server)

        say(args, "flood: served connections alone again")
        windows["after"] = measure(args, pacer)
        served.tell_stop()
        served_result = served.result(60.0)
        stopped = server.stop()
    report["latency_us"] = phase_histograms(windows, served_result["latency"])
    report["served"] = {
        **served_result["totals"],
        "mismatched_bytes": served_result["mismatched_bytes"],
        "problems": served_result["problems"],
    }
    report["slowloris"] = slowloris_report(args, slow_results, len(trickle))
    report["flood"] = {
        "room": room,
        **flood_result["counts"],
        "server_max_open": max_open,
        "problems": flood_result["problems"][:5],
    }
    report["server"] = {"exit_status": stopped.returncode, "summary": exit_summary(stopped)}
    report["verdict"] = judge(report, args)
    return report


def measure(args: argparse.Namespace, pacer: threading.Event) -> tuple[float, float]:
    """One phase: ``--phase`` seconds of whatever runs now; its window in monotonic time."""
    start = time.monotonic()
    pacer.wait(args.phase)
    return start, time.monotonic()


def start_slowloris(
    args: argparse.Namespace, server: ServerProcess, group: ClientGroup
) -> tuple[list[ClientProcess], float]:
    """Start the trickling connections over client processes; once all are up, return them
    and the seconds that took."""
    procs = max(1, math.ceil(args.slowloris / PER_PROCESS))
    trickle: list[ClientProcess] = []
    for i in range(procs):
        share = args.slowloris // procs + (i < args.slowloris % procs)
        trickle.append(
            group.start(mixed_job(server, share, 1, 1.0, (i + 1) << 24), f"slowloris-{i}")
        )
    ramp = time.monotonic()
    for client in trickle:
        client.await_ready(120.0)
    return trickle, round(time.monotonic() - ramp, 2)


def wait_for_served_alone(args: argparse.Namespace, server: ServerProcess) -> None:
    """Until the server holds no more than the served connections (bounded)."""
    wait_until(lambda: (server_open(server) or 0) <= args.served, 30.0, pace=0.1)


def flood_job(args: argparse.Namespace, server: ServerProcess, room: int) -> dict[str, Any]:
    """The flood client's job: ``--beyond`` attempts more than the server has ``room`` for."""
    return {
        "type": "flood",
        "host": server.host,
        "port": server.port,
        "seconds": args.phase + 60.0,
        "conns": room + args.beyond,
        "attempts": 2_000_000,
        "seed": args.seed,
        "sources": [f"127.0.30.{k}" for k in range(1, 17)],
    }


def slowloris_report(
    args: argparse.Namespace, results: list[dict[str, Any]], procs: int
) -> dict[str, Any]:
    """The slowloris processes' counters, summed."""
    totals: dict[str, int] = {}
    for result in results:
        for name, value in result["totals"].items():
            totals[name] = totals.get(name, 0) + int(value)
    return {
        "conns": args.slowloris,
        "processes": procs,
        **totals,
        "mismatched_bytes": sum(int(r["mismatched_bytes"]) for r in results),
        "problems": [p for r in results for p in r["problems"]][:5],
    }


def judge(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    failures = [
        *served_failures(report),
        *slowloris_failures(report["slowloris"]),
        *flood_failures(report["flood"], args),
    ]
    return {"ok": not failures, "failures": failures}


def served_failures(report: dict[str, Any]) -> list[str]:
    """The served connections: every byte right, none lost, a round trip in every phase."""
    failures: list[str] = []
    served = report["served"]
    for how in ("mismatched", "lost", "failed"):
        if served.get(how, 0):
            failures.append(f"{served[how]} served connection(s) {how}")
    if served["mismatched_bytes"]:
        failures.append(f"served connections got {served['mismatched_bytes']} wrong bytes")
    for phase in PHASES:
        if not report["latency_us"][phase]["count"]:
            failures.append(f"no round trip of the served connections during {phase}")
    return failures


def slowloris_failures(slow: dict[str, Any]) -> list[str]:
    """The trickling connections got their own bytes back."""
    if slow.get("mismatched", 0) or slow["mismatched_bytes"]:
        return [f"{slow.get('mismatched', 0)} slowloris connection(s) got other bytes"]
    return []


def flood_failures(f: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The flood went beyond the limit, and the server kept to it."""
    failures: list[str] = []
    if f.get("mismatched", 0):
        failures.append(f"{f['mismatched']} flood connection(s) got other bytes")
    if f["served"] > f["room"]:
        failures.append(f"{f['served']} flood connections served, only {f['room']} places")
    if not f["refused"] and not f["queued"] and not f["connecting"]:
        failures.append("the flood never went beyond --max-conns (nothing refused or queued)")
    if f["server_max_open"] > args.max_conns * args.workers:
        failures.append(f"the server held {f['server_max_open']} connections")
    return failures


def rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for phase, lat in report["latency_us"].items():
        out.append(
            (
                f"served p50 / p99 / max, {phase}",
                f"{lat['p50_us']:,.0f} / {lat['p99_us']:,.0f} / {lat['max_us']:,.0f} µs "
                f"({lat['count']:,.0f} round trips)",
            )
        )
    s = report["served"]
    out.append(
        (
            "served connections",
            f"{s.get('started', 0)} started, {s.get('completed', 0)} completed, "
            f"{s.get('lost', 0)} lost, {s.get('failed', 0)} failed, "
            f"{s.get('bytes_verified', 0):,} bytes verified",
        )
    )
    sl = report["slowloris"]
    out.append(
        (
            "slowloris",
            f"{sl.get('started', 0):,} started, {sl.get('completed', 0):,} completed, "
            f"{sl.get('lost', 0)} lost, {sl.get('failed', 0)} failed, "
            f"{sl.get('bytes_verified', 0):,} bytes verified; ramp {report['slowloris_ramp_s']} s",
        )
    )
    f = report["flood"]
    out.append(
        (
            "flood attempts",
            f"{f['attempts']:,}: served {f['served']:,} (room {f['room']:,}), "
            f"refused {f['refused']:,}, queued {f['queued']:,}, connecting {f['connecting']:,}, "
            f"connect failed {f['connect_failed']:,}",
        )
    )
    summary = report["server"]["summary"]
    if summary:
        out.append(
            (
                "server",
                f"accepted {int(summary['accepted']):,}, refused {int(summary['refused']):,}, "
                f"max open seen {f['server_max_open']:,}, exit {report['server']['exit_status']}",
            )
        )
    out.append(verdict_row(report))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    terminate_as_interrupt()
    report = flood(args)
    if args.json:
        print_json(report)
    else:
        print_table(
            f"flood: {args.workers} worker(s), --max-conns {args.max_conns}, "
            f"{args.served} served connections at {report['served_rate_per_s']} msg/s",
            rows(report),
        )
        for name in ("served", "slowloris", "flood"):
            for problem in report[name]["problems"]:
                print(f"  {name} problem: {problem}")
    return 0 if report["verdict"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
