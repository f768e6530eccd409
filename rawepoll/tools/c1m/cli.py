"""``rawepoll c1m``: the command line of the million-connection run."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import dataclass
from typing import Final, TextIO

from rawepoll._cli import non_negative_float, non_negative_int, positive_int, positive_seconds
from rawepoll.tools.c1m.run import C1MConfig, C1MResult, run_c1m
from rawepoll.tools.loadgen.display import Monitor, RichMonitor, Snapshot
from rawepoll.tools.serverproc import ServerError

DESCRIPTION = (
    "Open --conns TCP connections to a rawepoll echo server in a private network namespace "
    "(root), verify every one with an echo round-trip, hold them for --hold seconds while "
    "--active of them keep echoing, and report what it cost: seconds to establish, server "
    "PSS/RSS, kernel slab per connection, the active set's latency with everything open "
    "against a baseline with only the active set open. The namespace has its own loopback "
    "and sysctls (port range, backlogs) and vanishes with the run, also on Ctrl-C. "
    "With --protocol websocket the connections are WebSocket subscribers of one topic, each "
    "handshaken and verified by an echo, and after the hold one message is published to all "
    "of them through the server's control socket: every one must receive it exactly once, "
    "and the delivery times (publish to arrival) are reported. "
    "Exit status: 0 all verified and no errors, 1 a connection failed or a byte was wrong "
    "(or a broadcast was lost or came twice), 2 bad arguments or the machine cannot do it "
    "(with what to change), 130 interrupted."
)

# The issues' targets for a million on 2 cores / 24 GiB (shown next to the figures).
TARGET_SECONDS: Final = 60.0
TARGET_PSS_BYTES: Final = 128 * 2**20
TARGET_P99_RATIO: Final = 1.5


@dataclass(frozen=True)
class Targets:
    """A protocol's targets for a million: seconds to establish, server PSS, broadcast."""

    seconds: float
    pss_mb: float  # MB of 2**20 bytes, as the issues write them
    broadcast_s: float | None = None  # publish to the last subscriber


TARGETS: Final = {
    "tcp": Targets(TARGET_SECONDS, TARGET_PSS_BYTES / 2**20),
    "websocket": Targets(seconds=100.0, pss_mb=160.0, broadcast_s=5.0),
}
DEFAULT_ACTIVE: Final = {"tcp": 1000, "websocket": 0}

MANUAL_STEPS: Final = """\
Without root, do by hand what rawepoll c1m does (as root, once):
  ip netns add c1m
  ip netns exec c1m ip link set lo up
  ip netns exec c1m sysctl -w net.ipv4.ip_local_port_range="1024 65535" \\
      net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535
then run the server and the load inside it, e.g. for 1,000,000 connections with
RLIMIT_NOFILE 20000:
  ip netns exec c1m rawepoll serve --port 9000 --workers 51 --backlog 65535 &
  ip netns exec c1m rawepoll bench --port 9000 --conns 1000000 --procs 51 \\
      --source-addrs 127.1.0.1-127.1.0.62 --duration 30
and remove it with: ip netns delete c1m"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rawepoll c1m`` options."""
    parser.add_argument(
        "--conns",
        type=positive_int,
        default=1_000_000,
        metavar="N",
        help="connections in all, the active ones included (default 1,000,000); needs "
        "~10 KB of kernel memory and two file structures per connection",
    )
    parser.add_argument(
        "--hold",
        type=positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long every connection is held open once established, while the active "
        "set echoes and its latency is measured (default 30)",
    )
    parser.add_argument(
        "--active",
        type=non_negative_int,
        metavar="N",
        help="connections that keep echoing (closed loop, 64 B messages) during the hold; "
        "their latency is compared with a baseline run where only they are open "
        "(default 1000 over TCP, 0 over WebSocket, where every connection is a subscriber "
        "that receives the broadcast; 0 holds everything idle and measures no latency)",
    )
    parser.add_argument(
        "--active-rate",
        type=non_negative_float,
        default=10.0,
        metavar="MSGS",
        help="messages a second each active connection sends, paced: an echo is followed by "
        "the next message 1/MSGS s later (default 10, i.e. 10,000 msg/s for 1,000 "
        "connections, well below what 2 cores saturate at); 0 sends at once (closed loop: "
        "the latency is then queueing under saturation)",
    )
    parser.add_argument(
        "--baseline",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="length of the baseline run with only the active set open (default 10)",
    )
    parser.add_argument(
        "--mode",
        choices=("lt", "et"),
        default="lt",
        help="the server's mode: level- or edge-triggered (default lt)",
    )
    parser.add_argument(
        "--balance",
        choices=("fill", "rotate"),
        default="fill",
        help="the server's --balance: fill (default) lets one worker accept until it is "
        "full, in batches; rotate spreads connections over the workers as they come",
    )
    parser.add_argument(
        "--ehash",
        type=non_negative_int,
        metavar="BUCKETS",
        help="size of the namespace's own table of established TCP sockets "
        "(net.ipv4.tcp_child_ehash_entries, set on the host only for the instant the "
        "namespace is made); default: the power of two at or above two per connection; "
        "0 shares the host's table, sized at boot",
    )
    parser.add_argument(
        "--protocol",
        choices=("tcp", "websocket"),
        default="tcp",
        help="tcp (default): raw TCP echo; websocket: the server runs --protocol websocket "
        "with no heartbeat and a control socket, every held connection is upgraded to "
        "/topic/c1m and verified by an echo, and after the hold one message published "
        "to the topic must reach every one of them exactly once (its delivery times reported)",
    )
    parser.add_argument(
        "--handler",
        metavar="MODULE:CLASS",
        help="the server's --handler (default: its echo handler, or over WebSocket its default "
        "application); it must echo, and over WebSocket subscribe /topic/NAME to NAME as "
        "the default does",
    )
    parser.add_argument(
        "--keep-netns",
        metavar="NAME",
        nargs="?",
        const="rawepoll-c1m",
        help="attach the namespace as NAME (default name rawepoll-c1m) so it outlives the "
        "run, for a look with 'ip netns exec NAME ss -s'; remove it with 'ip netns delete NAME'",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object with every figure on stdout; narration goes to stderr",
    )


class _Lines:
    """Progress as plain lines, one a second at most."""

    def __init__(self, write: object) -> None:
        self.write = write
        self.shown = -1.0
        self.last: tuple[float, int] | None = None

    def update(self, s: Snapshot) -> None:
        if s.now - self.shown < 1.0:
            return
        rate = 0.0
        if self.last is not None and s.now > self.last[0]:
            rate = (s.established - self.last[1]) / (s.now - self.last[0])
        self.shown, self.last = s.now, (s.now, s.established)
        assert callable(self.write)
        self.write(
            f"open: {s.established:,}/{s.conns:,} established ({rate:,.0f}/s), "
            f"{s.errors} errors, {s.mismatches} mismatches"
        )

    def close(self) -> None:
        pass


def run(args: argparse.Namespace) -> int:
    """Run and report; see DESCRIPTION for the exit status."""
    narration = _Narration(sys.stderr if args.json else sys.stdout)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_c1m(_config(args), say=narration.say, monitor=narration.monitor)
    except PermissionError as error:
        print(f"rawepoll c1m: error: {error}\n{MANUAL_STEPS}", file=sys.stderr)
        return 2
    except (ValueError, ImportError) as error:
        print(f"rawepoll c1m: error: {error}", file=sys.stderr)
        return 2
    except (TimeoutError, ServerError) as error:
        print(f"rawepoll c1m: failed: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # the namespace or a setting could not be made
        print(f"rawepoll c1m: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rawepoll c1m: interrupted; every process stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        report(result)
    for problem in result.problems[:10]:
        print(f"rawepoll c1m: {problem}", file=sys.stderr)
    return 0 if result.ok else 1


def _config(args: argparse.Namespace) -> C1MConfig:
    return C1MConfig(
        conns=args.conns,
        hold=args.hold,
        active=DEFAULT_ACTIVE[args.protocol] if args.active is None else args.active,
        rate=args.active_rate,
        baseline=args.baseline,
        mode=args.mode,
        balance=args.balance,
        ehash=args.ehash,
        keep_netns=args.keep_netns,
        protocol=args.protocol,
        handler=args.handler,
    )


@dataclass(frozen=True)
class _Narration:
    """Where the run tells what it does: stdout, or stderr when stdout carries the JSON."""

    out: TextIO

    def say(self, line: str) -> None:
        print(f"rawepoll c1m: {line}", file=self.out, flush=True)

    def monitor(self, conns: int) -> Monitor:
        """The progress display while ``conns`` connections open."""
        if self.out.isatty():
            return RichMonitor()
        return _Lines(self.say)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def report(r: C1MResult) -> None:
    """The figures, one per line, with the targets for a million next to them."""
    targets = TARGETS[r.protocol]
    rows = [
        *_held_rows(r, targets),
        *_latency_rows(r),
        *_broadcast_rows(r, targets),
        (
            "errors",
            f"{r.errors} errors, {r.mismatches} mismatches, {r.refused} refused, "
            f"{r.server_restarts} worker restarts",
        ),
        (
            "layout",
            f"{r.workers} server workers, {r.load_procs} load processes, "
            f"{r.source_addrs} source addresses; conntrack entries: "
            f"{'not loaded' if r.conntrack_entries is None else r.conntrack_entries}",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


Rows = list[tuple[str, str]]


def _held_rows(r: C1MResult, targets: Targets) -> Rows:
    """How many, how fast, and what they cost."""
    mib = 2**20
    held = "held idle" if r.broadcast is None else "WebSocket subscribers held"
    verified = "verified" if r.broadcast is None else "handshaken and echo-verified"
    fast = r.seconds_to_establish <= targets.seconds
    small = r.server_pss_bytes <= targets.pss_mb * mib
    return [
        ("connections", f"{r.held:,} {held} + {r.active:,} active"),
        (
            "established",
            f"{r.established:,} {verified} in {r.seconds_to_establish:.1f} s "
            f"({r.connect_rate:,.0f}/s){_target(fast, targets.seconds)}",
        ),
        (
            "server memory",
            f"PSS {r.server_pss_bytes / mib:,.1f} MiB ({r.bytes_per_conn:,.1f} B/conn, "
            f"interpreters included), RSS {r.server_rss_bytes / mib:,.1f} MiB, over "
            f"{r.server_processes} processes{_target(small, targets.pss_mb)}",
        ),
        (
            "per connection",
            f"server PSS {r.pss_growth_per_conn:+,.1f} B; kernel slab "
            f"{r.kernel_slab_bytes_per_conn:,.0f} B (both ends)",
        ),
    ]


def _latency_rows(r: C1MResult) -> Rows:
    """The active set's latency, with everything open and alone."""
    if not r.active:
        return [("active latency", "none measured (--active 0)")]
    ratio = r.p99_ratio
    return [
        (
            "active latency",
            f"p50 {r.active_p50_us:,.0f} us, p99 {r.active_p99_us:,.0f} us with everything "
            f"open; baseline p50 {r.baseline_p50_us:,.0f} us, p99 {r.baseline_p99_us:,.0f} us "
            f"(p99 ratio {ratio:.2f}){_target(ratio <= TARGET_P99_RATIO, 1.5)}; "
            f"after closing them p99 {r.baseline_after_p99_us:,.0f} us; "
            f"{_rate(r.active_rate)}",
        ),
    ]


def _broadcast_rows(r: C1MResult, targets: Targets) -> Rows:
    """A WebSocket run's broadcast: who got it, how soon, and the CPU it took."""
    b = r.broadcast
    if b is None or targets.broadcast_s is None:
        return []
    fast = b.ok and b.max_us <= targets.broadcast_s * 1e6
    return [
        (
            "broadcast",
            f"1 message to {b.subscribers:,} subscribers: {b.delivered:,} delivered exactly "
            f"once and verified, {b.lost:,} lost, {b.duplicates:,} duplicates",
        ),
        (
            "delivery time",
            f"p50 {b.p50_us / 1e6:.2f} s, p99 {b.p99_us / 1e6:.2f} s, to the last "
            f"{b.max_us / 1e6:.2f} s{_target(fast, targets.broadcast_s)}; first after "
            f"{b.first_us / 1e3:,.1f} ms; {b.deliveries_per_s:,.0f} deliveries/s",
        ),
        (
            "broadcast CPU",
            f"server {b.server_us_per_delivery:.1f} us + load {b.load_us_per_delivery:.1f} us "
            f"per delivery (user + system, both on the same cores)",
        ),
    ]


def _rate(rate: float) -> str:
    return f"{rate:g} msg/s per connection, paced" if rate else "closed loop"


def _target(met: bool, figure: float) -> str:
    return f"  [target for 1M: {figure:g}: {'met' if met else 'missed'}]"
