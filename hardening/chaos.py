"""Chaos: SIGKILL random workers of ``rawepoll serve --workers 4`` under verified load.

``python -m hardening.chaos`` (``make chaos``) starts the server on a free port
of 127.0.0.1 and client processes holding many long-lived echoing
connections (plus a few short and large ones); every byte that comes back is
compared with what was sent.  Then, every few seconds, it SIGKILLs a random
worker.  The supervisor replaces it; the clients must see only end-of-file or
a reset on the killed worker's connections -- never other bytes -- and
reconnect at once.

Per kill it reports: the worker's open connections just before (counted in
``/proc/PID/fd``, and as the server's last ``status`` event had it), the
connections the clients lost (each loss is attributed to the last kill before
it), how they ended (EOF or reset), the time until a replacement process
existed (the supervisor's ``restart`` event, sent once it is forked), until it held a
connection it had accepted, until it had written echo bytes (``wchar`` in
``/proc/PID/io``; a worker writes nothing else, and the clients verify every
byte), and until every lost connection was re-established and echoing again.

Exit status 1 when a byte differed, a loss came with no kill to explain it, a
kill was not followed by a replacement that served, or a connection failed to
connect; 0 otherwise; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import threading
import time
from typing import Any

from hardening._clients import ENDINGS
from hardening._common import (
    ClientGroup,
    ServerProcess,
    add_counts,
    exit_summary,
    print_json,
    print_table,
    serve_command,
    socket_count,
    terminate_as_interrupt,
    verdict_row,
    wait_until,
)

PROBE_BOUND = 30.0  # seconds for a replacement to appear, accept, serve


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hardening.chaos",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=(
            "Kills start once every long-lived connection echoed once; a kill comes every "
            "--every seconds (+-25%%) for --seconds, then the clients finish and the server "
            "is stopped with SIGTERM. Exit status 0 if every check passed, 1 otherwise."
        ),
    )
    parser.add_argument("--seconds", type=float, default=75.0, help="kill phase length (75)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between kills (5)")
    parser.add_argument("--workers", type=int, default=4, help="server workers (4)")
    parser.add_argument("--mode", choices=("lt", "et"), default="lt", help="server loop (lt)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (2)")
    parser.add_argument(
        "--conns", type=int, default=200, help="long-lived connections per client process (200)"
    )
    parser.add_argument(
        "--pause", type=float, default=0.05, help="seconds between a connection's messages (0.05)"
    )
    parser.add_argument(
        "--life",
        type=float,
        default=5.0,
        help="mean life of a long-lived connection, seconds (5): connections end cleanly "
        "and are replaced, so a replacement worker gets its share",
    )
    parser.add_argument(
        "--victim",
        choices=("random", "busiest"),
        default="random",
        help="which worker to kill: a random one, or the one holding most connections",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers must be at least 2 (one worker is served in-process)")
    if args.seconds <= 0 or args.every <= 0 or args.clients < 1 or args.conns < 1:
        parser.error("--seconds, --every, --clients and --conns must be positive")
    return args


def written(pid: int) -> int:
    """Bytes ``pid`` has written with write-like calls (``wchar`` of /proc/PID/io).

    A worker writes nothing but echoes (the supervisor prints and sends the status),
    so a replacement that wrote anything has served a connection.
    """
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def kill_one(server: ServerProcess, rng: random.Random, busiest: bool) -> dict[str, Any]:
    """SIGKILL a worker (a random one, or the one with most sockets); wait for its replacement."""
    victims = list(server.worker_pids)  # the ready event's, with every restart applied
    victim = max(victims, key=socket_count) if busiest else rng.choice(victims)
    last_status = (server.statuses() or [None])[-1]
    open_before = socket_count(victim) - 1  # its connections: all but the listener
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    record: dict[str, Any] = {"pid": victim, "t": killed_at, "open_before": open_before}
    record["replaced_s"] = record["accepting_s"] = record["served_s"] = None
    # The supervisor sends `restart` once the replacement is forked.
    restart = server.wait_event("restart", PROBE_BOUND, lambda event: event["pid"] == victim)
    if restart is not None:
        record["replaced_s"] = time.monotonic() - killed_at
        new_pid = int(restart["new_pid"])
        record["new_pid"] = new_pid
        slot = int(restart["slot"])
        record["slot"] = slot
        per_worker = last_status.get("per_worker_open", []) if last_status else []
        if slot < len(per_worker):
            record["status_open_before"] = int(per_worker[slot])
        if wait_until(lambda: socket_count(new_pid) > 1, PROBE_BOUND, pace=0.002):
            record["accepting_s"] = time.monotonic() - killed_at
        if wait_until(lambda: written(new_pid) > 0, PROBE_BOUND, pace=0.002):
            record["served_s"] = time.monotonic() - killed_at
    return record


def attribute(kills: list[dict[str, Any]], losses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each loss to the last kill before it; return the losses before any kill.

    Each kill gets ``lost``, ``lost_reset``, ``lost_eof``, ``recovered`` and
    ``reconnected_s`` (kill to the last of its losses back, if all came back):

    >>> kills = [{"t": 10.0}, {"t": 20.0}]
    >>> losses = [
    ...     {"t": 5.0, "how": "EOF with 0 bytes in flight"},  # before any kill
    ...     {"t": 10.1, "how": "recv: Connection reset by peer", "recovered": 10.2},
    ...     {"t": 10.1, "how": "EOF with 12 bytes in flight", "recovered": 10.4},
    ...     {"t": 20.5, "how": "EOF with 0 bytes in flight"},  # never reconnected
    ... ]
    >>> attribute(kills, losses) == [losses[0]]
    True
    >>> first, second = kills
    >>> first["lost"], first["lost_reset"], first["lost_eof"], round(first["reconnected_s"], 3)
    (2, 1, 1, 0.4)
    >>> second["lost"], second["lost_eof"], second["recovered"], second["reconnected_s"]
    (1, 1, 0, None)
    """
    unexplained = []
    for kill in kills:
        kill.update(lost=0, lost_eof=0, lost_reset=0, recovered=0, last_recovered=kill["t"])
    times = [kill["t"] for kill in kills]
    for loss in losses:
        index = max((i for i, t in enumerate(times) if t <= loss["t"]), default=None)
        if index is None:
            unexplained.append(loss)
            continue
        kill = kills[index]
        kill["lost"] += 1
        kill["lost_reset" if "reset" in loss["how"] else "lost_eof"] += 1
        if "recovered" in loss:
            kill["recovered"] += 1
            kill["last_recovered"] = max(kill["last_recovered"], loss["recovered"])
    for kill in kills:
        if kill["lost"] and kill["recovered"] == kill["lost"]:
            kill["reconnected_s"] = kill["last_recovered"] - kill["t"]
        else:
            kill["reconnected_s"] = None
        del kill["last_recovered"]
    return unexplained


def chaos(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    command = serve_command(
        "--workers", str(args.workers), "--mode", args.mode, "--stats-interval", "0.25"
    )
    kills: list[dict[str, Any]] = []
    with ServerProcess(command) as server:  # its workers are forked once it is ready
        with ClientGroup() as group:
            clients = [
                group.start(
                    {
                        "type": "mixed",
                        "host": server.host,
                        "port": server.port,
                        "seconds": args.seconds + 600.0,  # stopped by closing stdin
                        "grace": 30.0,
                        "seed": args.seed * 1000 + i,
                        "base": i << 24,
                        "kinds": {"steady": args.conns, "large": 1},
                        "params": {
                            "steady_pause": args.pause,
                            "steady_life": [args.life / 2, args.life * 1.5],
                            "large_bytes": [1 << 20, 4 << 20],
                        },
                        "reconnect": True,
                    },
                    f"client-{i}",
                )
                for i in range(args.clients)
            ]
            for client in clients:
                client.await_ready(60.0 + args.conns * 0.05)
            say(args, "chaos: every long-lived connection echoed; killing workers")
            pacer = threading.Event()
            end = time.monotonic() + args.seconds
            while True:
                pacer.wait(args.every * rng.uniform(0.75, 1.25) / 2)
                if time.monotonic() + args.every / 2 > end:
                    break
                kills.append(kill_one(server, rng, args.victim == "busiest"))
                k = kills[-1]
                say(
                    args,
                    f"chaos: killed pid {k['pid']} ({k['open_before']} open); "
                    f"replaced in {_ms(k['replaced_s'])}, accepted in {_ms(k['accepting_s'])}, "
                    f"served in {_ms(k['served_s'])}",
                )
                pacer.wait(max(0.0, args.every / 2 - (time.monotonic() - kills[-1]["t"])))
            pacer.wait(2.0)  # the last kill's reconnections
            say(args, "chaos: stopping the clients")
            for client in clients:
                client.tell_stop()
            results = [client.result(60.0) for client in clients]
        say(args, "chaos: stopping the server")
        stopped = server.stop()
    losses = [loss for r in results for loss in r["losses"]]
    unexplained = attribute(kills, losses)
    report: dict[str, Any] = {
        "seconds": args.seconds,
        "workers": args.workers,
        "connections": args.conns * args.clients,
        "kills": kills,
        "unexplained_losses": unexplained[:10],
        "unexplained_count": len(unexplained),
        "clients": {
            "kinds": {
                kind: add_counts([{"k": r["kinds"].get(kind, {})} for r in results], "k")
                for kind in ("steady", "large")
            },
            "totals": add_counts(results, "totals"),
            "mismatched_bytes": sum(int(r["mismatched_bytes"]) for r in results),
            "problems": [p for r in results for p in r["problems"]][:10],
        },
        "server": {"exit_status": stopped.returncode, "summary": exit_summary(stopped)},
    }
    report["figures"] = figures(kills)
    report["verdict"] = judge(report)
    for kill in kills:
        kill["t"] = round(kill["t"], 3)
    return report


def figures(kills: list[dict[str, Any]]) -> dict[str, Any]:
    def spread(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        return {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }

    return {
        "kills": len(kills),
        "lost_per_kill": spread([float(k["lost"]) for k in kills]),
        "open_before_per_kill": spread([float(k["open_before"]) for k in kills]),
        "replaced_s": spread([k["replaced_s"] for k in kills if k["replaced_s"] is not None]),
        "accepting_s": spread([k["accepting_s"] for k in kills if k["accepting_s"] is not None]),
        "served_s": spread([k["served_s"] for k in kills if k["served_s"] is not None]),
        "reconnected_s": spread(
            [k["reconnected_s"] for k in kills if k["reconnected_s"] is not None]
        ),
        "lost_total": sum(k["lost"] for k in kills),
        "open_before_total": sum(k["open_before"] for k in kills),
        "lost_reset": sum(k["lost_reset"] for k in kills),
        "lost_eof": sum(k["lost_eof"] for k in kills),
    }


def judge(report: dict[str, Any]) -> dict[str, Any]:
    failures: list[str] = []
    clients = report["clients"]
    totals = clients["totals"]
    if totals.get("mismatched", 0) or clients["mismatched_bytes"]:
        failures.append(
            f"{totals.get('mismatched', 0)} connection(s) got other bytes back "
            f"({clients['mismatched_bytes']} bytes wrong)"
        )
    if totals.get("failed", 0):
        failures.append(f"{totals['failed']} connection(s) failed")
    if report["unexplained_count"]:
        failures.append(f"{report['unexplained_count']} loss(es) with no kill to explain them")
    kills = report["kills"]
    if not kills:
        failures.append("no worker was killed (run longer)")
    for kill in kills:
        if kill.get("served_s") is None:
            failures.append(f"the replacement of pid {kill['pid']} never served")
    for kind, counts in clients["kinds"].items():
        ended = sum(counts.get(how, 0) for how in ENDINGS)
        if counts.get("started", 0) != ended:
            failures.append(f"{kind}: {counts.get('started', 0)} started but {ended} ended")
    restarted = int(report["server"]["summary"].get("restarted", -1))
    if restarted != len(kills):
        failures.append(f"{len(kills)} kills but the server restarted {restarted} workers")
    return {"ok": not failures, "failures": failures}


def say(args: argparse.Namespace, text: str) -> None:
    """Progress on stderr (not with --json)."""
    if not args.json:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    f = report["figures"]
    out = [("kills", str(f["kills"]))]

    def spread_ms(key: str) -> str:
        s = f[key]
        return "-" if s is None else f"{_ms(s['median'])} ({_ms(s['min'])}-{_ms(s['max'])})"

    lost, before = f["lost_per_kill"], f["open_before_per_kill"]
    if lost and before:
        out.append(
            (
                "open before / lost per kill",
                f"median {before['median']:g} / {lost['median']:g} "
                f"(total {f['open_before_total']} / {f['lost_total']}; "
                f"{f['lost_reset']} reset, {f['lost_eof']} EOF)",
            )
        )
    out.append(("kill -> replacement exists", spread_ms("replaced_s")))
    out.append(("kill -> replacement accepted", spread_ms("accepting_s")))
    out.append(("kill -> replacement served", spread_ms("served_s")))
    out.append(("kill -> all lost reconnected", spread_ms("reconnected_s")))
    t = report["clients"]["totals"]
    ended = ", ".join(f"{how} {t.get(how, 0):,}" for how in ENDINGS if t.get(how, 0))
    out.append(("connections", f"{t.get('started', 0):,} started ({ended})"))
    out.append(("bytes verified", f"{t.get('bytes_verified', 0):,}"))
    out.append(("mismatched bytes", f"{report['clients']['mismatched_bytes']:,}"))
    out.append(("unexplained losses", str(report["unexplained_count"])))
    out.append(verdict_row(report))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    terminate_as_interrupt()
    report = chaos(args)
    if args.json:
        print_json(report)
    else:
        print_table(
            f"chaos: {args.workers} workers, {report['connections']} long-lived connections, "
            f"{args.seconds:g} s",
            rows(report),
        )
        for kill in report["kills"]:
            print(
                f"  pid {kill['pid']} slot {kill.get('slot', '?')}: open {kill['open_before']} "
                f"(status event {kill.get('status_open_before', '?')}), lost {kill['lost']} "
                f"({kill['lost_reset']} reset, {kill['lost_eof']} EOF), "
                f"replaced {_ms(kill['replaced_s'])}, accepted {_ms(kill['accepting_s'])}, "
                f"served {_ms(kill['served_s'])}, "
                f"reconnected {_ms(kill['reconnected_s'])}"
            )
        for problem in report["clients"]["problems"]:
            print(f"  problem: {problem}")
    return 0 if report["verdict"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
