"""The parent of a broadcast run: subscribe, publish through the control socket, merge.

``rawepoll bench --broadcast`` measures server push: ``conns`` connections
subscribe to one topic (in forked load processes,
:mod:`rawepoll.tools.loadgen.subscriber`), then this process publishes
``messages`` messages through the server's control socket
(:class:`rawepoll.server.control.ControlClient`, one connection, reopened when
it has been idle for a while: the server closes idle ones), each carrying its
number and the time it was published (:mod:`rawepoll.tools.loadgen.stamp`).

**Pacing.**  At most ``pipeline`` messages are *in flight*: published but not
yet settled on every subscriber (arrived, known lost, or the subscriber
failed), as the load processes report it (``Settled``).  With the default of
one, each message is published once the previous one has reached everybody:
its delivery times are those of one broadcast on a quiet server.  A larger
window keeps the server fanning out back to back: the deliveries per second
are then its sustained fan-out rate.  A message that makes no progress for
:data:`SETTLE_S` seconds (no delivery anywhere, nothing settled) is given up
on, so a lost delivery costs the run that long, not its end.

**Figures** (:class:`~rawepoll.tools.loadgen.result.BroadcastResult`): per
delivery the delivery time, publish to arrival (both ``CLOCK_MONOTONIC``,
one clock for every process of a machine), as percentiles over every delivery
of every subscriber; per message the time until its *last* subscriber had it;
deliveries per second from the first publish to the last delivery; and the
verification counts: lost, duplicated, reordered, mismatched.

Bounds: the wall-clock guard of the plan; Ctrl-C stops the load processes and
reports what was measured (:class:`~rawepoll.tools.loadgen.result.BroadcastInterrupted`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Final

from rawepoll.server.control import DEFAULT_TIMEOUT, READ_TIMEOUT, ControlClient, ControlError
from rawepoll.tools.loadgen import latency
from rawepoll.tools.loadgen.control import Counts, Fanout, Report
from rawepoll.tools.loadgen.display import Monitor, Snapshot
from rawepoll.tools.loadgen.plan import Plan
from rawepoll.tools.loadgen.result import BroadcastInterrupted, BroadcastResult
from rawepoll.tools.loadgen.spec import LoadSpec
from rawepoll.tools.loadgen.stamp import Deliveries
from rawepoll.tools.loadgen.workers import Holding, prepare

__all__ = ["SETTLE_S", "Publication", "execute_broadcast", "merge", "publish", "run_broadcast"]

SETTLE_S: Final = 5.0  # no delivery and nothing settled for this long: give the messages up
_TICK_S: Final = 0.05
_REUSE_S: Final = READ_TIMEOUT / 2  # a control connection idle longer than this is reopened


@dataclass
class Publication:
    """What the publisher did: the publish time of every message the server accepted."""

    stamps: list[int] = field(default_factory=list)  # time.monotonic_ns() before each publish
    done_ns: int = 0  # the last OK
    error: str | None = None  # why publishing stopped early
    given_up: int = 0  # messages given up on (no progress for SETTLE_S)


class _Publisher:
    """One control connection, reopened when it has been idle (the server closes idle ones)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.client: ControlClient | None = None
        self.used = 0.0

    def publish(self, topic: str, payload: bytes) -> None:
        if self.client is None or time.monotonic() - self.used > _REUSE_S:
            self.close()
            self.client = ControlClient(self.path, timeout=DEFAULT_TIMEOUT)
        self.client.publish(topic, payload)
        self.used = time.monotonic()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class _Watch:
    """When the subscribers last made progress (a delivery, or a message settled)."""

    def __init__(self) -> None:
        self.seen: tuple[int, int] = (-1, -1)
        self.since = time.monotonic()

    def stalled(self, held: Holding, now: float) -> bool:
        seen = (sum(child.counts.messages for child in held.children), _reached(held))
        if seen != self.seen:
            self.seen, self.since = seen, now
        return now - self.since > SETTLE_S


def _reached(held: Holding) -> int:
    """Messages settled on every subscriber of every load process still running."""
    running = [child.reached for child in held.children if not child.settled]
    done = [child.reached for child in held.children if child.done is not None]
    return min(running + done, default=0)


def publish(
    held: Holding, publication: Publication, deadline: float, monitor: Monitor | None = None
) -> None:
    """Publish the run's messages, at most ``pipeline`` in flight; wait until they settle.

    Returns when every message published has settled everywhere, been given
    up on, or ``deadline`` (monotonic) passed; what went wrong is in
    ``publication``, not raised.  ``publication`` is the caller's, so that it
    holds what was published even when Ctrl-C (``KeyboardInterrupt``) ends
    the publishing early.
    """
    spec = held.plan.spec
    total = spec.messages or 0
    messages = Deliveries(spec.topic, spec.size, spec.protocol)
    stamps = publication.stamps
    publisher = _Publisher(spec.control or "")
    watch = _Watch()
    try:
        while not all(child.settled for child in held.children):  # else: every process is done
            if time.monotonic() >= deadline:
                publication.error = "the wall-clock guard expired while publishing"
                break
            reached = max(_reached(held), publication.given_up)
            if len(stamps) < total and len(stamps) - reached < spec.pipeline:
                ns = time.monotonic_ns()
                publisher.publish(spec.topic, messages.message(len(stamps), ns))
                stamps.append(ns)
                publication.done_ns = time.monotonic_ns()
                held.poll(0.0)
                continue
            if reached >= total:
                break
            held.poll(_TICK_S)
            if monitor is not None:
                monitor.update(_snapshot(held, started=stamps[0] / 1e9 if stamps else 0.0))
            if watch.stalled(held, time.monotonic()):
                if len(stamps) >= total:
                    break  # what has not come by now is lost
                publication.given_up = len(stamps)
    except (ControlError, OSError, ValueError) as error:
        publication.error = f"publishing message {len(stamps)}: {error}"
    finally:
        publisher.close()


def _snapshot(held: Holding, started: float) -> Snapshot:
    sums = sum((child.counts for child in held.children), Counts())
    spec = held.plan.spec
    now = time.monotonic()
    return Snapshot(
        phase="run" if started else "ramp",
        now=now,
        elapsed=now - started if started else 0.0,
        conns=held.plan.conns,
        connected=sums.connected,
        established=sums.established,
        errors=sums.errors,
        mismatches=sums.mismatches,
        messages=sums.messages,
        duration=None,
        target=(spec.messages or 0) * held.plan.conns,
    )


# -- merging ------------------------------------------------------------------


def _quantile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of sorted ``values`` (0 for none)."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _to_all(fanouts: list[Fanout], stamps: list[int]) -> list[float]:
    """Per published message that arrived anywhere: publish to its last arrival, µs, sorted."""
    spans = []
    for seq, stamp in enumerate(stamps):
        latest = max((fanout.latest[seq] for fanout in fanouts), default=0)
        if latest:
            spans.append((latest - stamp) / 1e3)
    return sorted(spans)


def _problems(held: Holding, publication: Publication) -> tuple[int, list[str]]:
    """Errors of the run itself (a load process, the publisher), and every problem in words."""
    errors, problems = 0, list[str]()
    for child in held.children:
        if child.done is not None:
            problems.extend(child.done.problems)
        elif child.failure is not None:
            errors += 1
            problems.append(f"load process {child.share.index} failed: {child.failure}")
        else:
            errors += 1
            problems.append(f"load process {child.share.index} ended without a report")
    if publication.error is not None:
        errors += 1
        problems.append(publication.error)
    return errors, problems


def merge(
    held: Holding, publication: Publication, connect_s: float, *, interrupted: bool = False
) -> BroadcastResult:
    """One result from the load processes' last reports and the publication."""
    plan, spec = held.plan, held.plan.spec
    reports: list[Report] = [child.done for child in held.children if child.done is not None]
    fanouts = [report.fanout for report in reports if report.fanout is not None]
    counts = sum((child.counts for child in held.children), Counts())
    stamps = publication.stamps
    unpublished = (spec.messages or 0) - len(stamps)
    lost = sum(f.lost + f.behind - f.subscribers * unpublished for f in fanouts)
    last_ns = max((f.last_ns for f in fanouts), default=0)
    seconds = (last_ns - stamps[0]) / 1e9 if stamps and last_ns > stamps[0] else 0.0
    figures = latency.percentiles(latency.merge(report.histogram for report in reports))
    to_all = _to_all(fanouts, stamps)
    errors, problems = _problems(held, publication)
    return BroadcastResult(
        conns=plan.conns,
        subscribed=counts.established,
        published=len(stamps),
        expected=len(stamps) * counts.established,
        delivered=counts.messages,
        lost=lost,
        duplicates=sum(f.duplicates for f in fanouts),
        reordered=sum(f.reordered for f in fanouts),
        seconds=seconds,
        deliveries_per_s=counts.messages / seconds if seconds > 0 else 0.0,
        p50_us=figures["p50_us"],
        p90_us=figures["p90_us"],
        p99_us=figures["p99_us"],
        p999_us=figures["p999_us"],
        max_us=figures["max_us"],
        to_all_p50_us=_quantile(to_all, 0.5),
        to_all_p99_us=_quantile(to_all, 0.99),
        to_all_max_us=to_all[-1] if to_all else 0.0,
        publish_s=(publication.done_ns - stamps[0]) / 1e9 if stamps else 0.0,
        connect_s=connect_s,
        errors=errors + counts.errors,
        mismatches=counts.mismatches,
        procs=plan.procs,
        loadgen_cpu_s=sum(report.cpu_s for report in reports),
        size=spec.size,
        pipeline=spec.pipeline,
        protocol=spec.protocol,
        topic=spec.topic,
        interrupted=interrupted,
        problems=problems,
    )


# -- a whole run ----------------------------------------------------------------


def execute_broadcast(plan: Plan, monitor: Monitor | None = None) -> BroadcastResult:
    """Run a broadcast ``plan``: subscribe, publish, collect, merge (see the module docstring).

    Raises:
        BroadcastInterrupted: Ctrl-C; its ``result`` holds the partial figures.
    """
    started = time.monotonic()
    deadline = started + plan.guard
    publication = Publication()
    connect_s = 0.0
    interrupted = False
    try:
        with Holding(plan) as held:
            try:
                connect_s = held.open(monitor, deadline)
                publish(held, publication, deadline, monitor)
            except TimeoutError as error:
                publication.error = str(error)
            except KeyboardInterrupt:
                interrupted = True
            held.finish()
            result = merge(held, publication, connect_s, interrupted=interrupted)
    finally:
        if monitor is not None:
            monitor.close()
    if interrupted:
        raise BroadcastInterrupted(result)
    return result


def run_broadcast(**options: Any) -> BroadcastResult:
    """Subscribe ``conns`` connections, publish ``messages`` messages, verify every delivery.

    ``options`` are the fields of :class:`~rawepoll.tools.loadgen.spec.LoadSpec`
    (``broadcast=True`` is implied; ``control`` is the server's control
    socket).  Blocks until the run is over.

    Raises:
        ValueError: an argument or a limit does not allow the run.
        ImportError: hdrhistogram is missing.
        BroadcastInterrupted: Ctrl-C.
    """
    options.setdefault("duration", None)
    return execute_broadcast(prepare(LoadSpec(broadcast=True, **options)))
