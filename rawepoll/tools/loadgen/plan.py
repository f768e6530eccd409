"""What a run will do, checked before anything is forked or connected.

A :class:`Plan` is the whole run, made from a
:class:`~rawepoll.tools.loadgen.spec.LoadSpec` by :func:`make_plan`; a
:class:`Share` is one load process's part of it.  The spec has checked its
settings against each other; the plan checks them against the machine, with a
sentence saying what to change:

* ``RLIMIT_NOFILE`` caps the connections one process can hold (each is a
  descriptor; a few more are kept for the epoll instance, the control socket
  and stdio), so ``conns / procs`` must fit;
* a (source address, destination) pair has as many client ports as
  ``net.ipv4.ip_local_port_range`` holds (28,232 by default), so more
  connections to one server port need more source addresses -- every address
  of 127.0.0.0/8 is a usable source on loopback;
* the bytes in flight (``conns x pipeline x size`` per process) are bounded;
* the CPUs to pin to must be among those this process may use.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from rawepoll.tools.loadgen.spec import LoadSpec

__all__ = [
    "FD_RESERVE",
    "STALL_S",
    "Plan",
    "Share",
    "make_plan",
    "parse_cpus",
    "parse_sources",
    "port_range",
]

FD_RESERVE: Final = 32  # descriptors a load process keeps for other things than connections
STALL_S: Final = 10.0  # a connection without progress for this long is an error
MAX_SOURCES: Final = 65536  # addresses in --source-addrs
MAX_IN_FLIGHT: Final = 2 << 30  # bytes in flight per process
DEFAULT_GUARD_S: Final = 600.0  # wall-clock bound of a --messages run, unless given
_PORT_RANGE: Final = "/proc/sys/net/ipv4/ip_local_port_range"


@dataclass(frozen=True)
class Share:
    """One load process's part of a run: connections ``first .. first + conns - 1``."""

    index: int
    first: int
    conns: int
    messages: int | None  # this process's part of the message count
    cpu: int | None


@dataclass(frozen=True)
class Plan:
    """A whole run: its spec, checked against this machine, and how it is shared out."""

    spec: LoadSpec
    family: int
    address: Any  # what connect() takes: (host, port), (host, port, flow, scope) or a path
    target: str  # the server, as people write it
    shares: tuple[Share, ...]
    guard: float  # total wall-clock bound of the run, seconds

    @property
    def conns(self) -> int:
        """Every connection of the run (the shares' sum)."""
        return sum(share.conns for share in self.shares)

    @property
    def procs(self) -> int:
        return len(self.shares)

    @property
    def is_tcp(self) -> bool:
        return self.family != socket.AF_UNIX


def parse_sources(text: str) -> list[str]:
    """``127.0.0.2-127.0.0.40`` or ``127.0.0.2,127.0.0.3`` (or both mixed) as a list.

    Raises:
        ValueError: not addresses, mixed families, a range backwards, too many.
    """
    found: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        first_text, dash, last_text = item.partition("-")
        try:
            first = ipaddress.ip_address(first_text.strip())
            last = ipaddress.ip_address(last_text.strip()) if dash else first
        except ValueError as error:
            raise ValueError(f"source address {item!r}: {error}") from None
        if first.version != last.version or int(last) < int(first):
            raise ValueError(f"source range {item!r} must go upwards within one family")
        if len(found) + int(last) - int(first) + 1 > MAX_SOURCES:
            raise ValueError(f"at most {MAX_SOURCES} source addresses")
        kind = type(first)
        found.extend(str(kind(value)) for value in range(int(first), int(last) + 1))
    if not found:
        raise ValueError("no source address given")
    versions = {ipaddress.ip_address(address).version for address in found}
    if len(versions) > 1:
        raise ValueError("source addresses mix IPv4 and IPv6")
    return found


def parse_cpus(text: str) -> list[int]:
    """``1`` or ``0,1`` or ``2-5``: CPU numbers."""
    cpus: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        first, dash, last = item.partition("-")
        low, high = int(first), int(last) if dash else int(first)
        if low < 0 or high < low:
            raise ValueError(f"CPU range {item!r} must go upwards from 0")
        cpus.extend(range(low, high + 1))
    return cpus


def port_range() -> int:
    """Client ports per (source, destination) pair: ``ip_local_port_range`` (28,232 by default)."""
    try:
        with open(_PORT_RANGE) as f:
            low, high = (int(word) for word in f.read().split())
    except (OSError, ValueError):
        return 28232
    return high - low + 1


def _resolve(host: str, port: int) -> tuple[int, Any]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(f"cannot resolve {host!r}: {error}") from None
    family, _, _, _, address = infos[0]
    return family, address


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (k < total % parts) for k in range(parts)]


def make_plan(spec: LoadSpec, *, fd_limit: int, ports: int) -> Plan:
    """Check ``spec`` against this machine's limits; split the connections over processes.

    Args:
        fd_limit: the descriptors one load process may hold (``RLIMIT_NOFILE``).
        ports: client ports per (source, destination) pair.

    Raises:
        ValueError: with a sentence saying what is wrong and what to do.
    """
    family, address, target = _destination(spec)
    sources = spec.source_addrs or ()
    _check_source_family(sources, family, target)
    per_proc = math.ceil(spec.conns / spec.procs)
    _check_descriptors(spec, per_proc, fd_limit)
    if family != socket.AF_UNIX:
        _check_ports(spec.conns, len(sources), ports)
    _check_in_flight(spec, per_proc)
    if spec.cpus is not None:
        _check_cpus(spec.cpus)
    return Plan(
        spec=spec,
        family=family,
        address=address,
        target=target,
        shares=_shares(spec),
        guard=_guard(spec, per_proc),
    )


def _destination(spec: LoadSpec) -> tuple[int, Any, str]:
    """(family, what connect() takes, the server as people write it)."""
    if spec.unix is not None:
        return socket.AF_UNIX, spec.unix, f"unix:{spec.unix}"
    family, address = _resolve(spec.host, spec.port)
    if family == socket.AF_INET6:
        return family, address, f"[{address[0]}]:{spec.port}"
    return family, address, f"{address[0]}:{spec.port}"


def _check_source_family(sources: Sequence[str], family: int, target: str) -> None:
    for source in sources:
        version = ipaddress.ip_address(source).version
        if (version == 6) != (family == socket.AF_INET6):
            raise ValueError(f"source address {source} is not of the server's family ({target})")


def _check_descriptors(spec: LoadSpec, per_proc: int, fd_limit: int) -> None:
    room = fd_limit - FD_RESERVE
    if per_proc > room:
        need = math.ceil(spec.conns / max(1, room))
        raise ValueError(
            f"{spec.conns} connections over {spec.procs} process(es) is {per_proc} per process, "
            f"but RLIMIT_NOFILE ({fd_limit}) lets a process hold {max(0, room)} "
            f"({FD_RESERVE} descriptors kept back): use --procs {need} or more"
        )


def _check_ports(conns: int, sources: int, ports: int) -> None:
    per_source = math.ceil(conns / max(1, sources))
    if per_source > ports:
        need = math.ceil(conns / ports)
        raise ValueError(
            f"{per_source} connections per source address, but a source address has "
            f"{ports} client ports (net.ipv4.ip_local_port_range): give --source-addrs "
            f"with {need} addresses or more, e.g. 127.0.0.2-127.0.0.{need + 1}"
        )


def _check_in_flight(spec: LoadSpec, per_proc: int) -> None:
    if per_proc * spec.pipeline * spec.size > MAX_IN_FLIGHT:
        raise ValueError(
            f"{per_proc} connections x pipeline {spec.pipeline} x {spec.size} bytes is more "
            f"than {MAX_IN_FLIGHT >> 30} GiB in flight per process: use more --procs or less "
            f"of those"
        )


def _check_cpus(cpus: Sequence[int]) -> None:
    allowed = os.sched_getaffinity(0)
    wrong = sorted(set(cpus) - allowed)
    if not cpus or wrong:
        raise ValueError(f"--cpus {list(cpus)}: not among the allowed CPUs {sorted(allowed)}")


def _shares(spec: LoadSpec) -> tuple[Share, ...]:
    """Connections split as evenly as they go; messages in proportion; CPUs in turn."""
    procs, cpus = spec.procs, spec.cpus
    counts = _split(spec.conns, procs)
    budgets = _budgets(spec.messages, counts)
    firsts = [sum(counts[:k]) for k in range(procs)]
    return tuple(
        Share(
            index=k,
            first=firsts[k],
            conns=counts[k],
            messages=budgets[k],
            cpu=cpus[k % len(cpus)] if cpus else None,
        )
        for k in range(procs)
    )


def _budgets(messages: int | None, counts: list[int]) -> list[int | None]:
    """Each process's part of ``messages``, in proportion to its connections."""
    if messages is None:
        return [None] * len(counts)
    conns = sum(counts)
    parts = [messages * count // conns for count in counts]
    for k in range(messages - sum(parts)):
        parts[k % len(counts)] += 1
    return list(parts)


def _guard(spec: LoadSpec, per_proc: int) -> float:
    """The run's wall-clock bound: ``--timeout``, or enough for the ramp and the traffic."""
    if spec.timeout is not None:
        return spec.timeout
    ramp = 30.0 + per_proc / 500  # a slow ramp still connects 500 per second
    if spec.duration is not None:
        return ramp + spec.duration + 2 * STALL_S
    return ramp + DEFAULT_GUARD_S
