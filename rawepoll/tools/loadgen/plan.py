"""What a run will do, checked before anything is forked or connected.

A :class:`Plan` is the whole run; a :class:`Share` is one load process's part
of it.  Every limit is checked here, with a sentence saying what to change:

* ``RLIMIT_NOFILE`` caps the connections one process can hold (each is a
  descriptor; a few more are kept for the epoll instance, the control socket
  and stdio), so ``conns / procs`` must fit;
* a (source address, destination) pair has as many client ports as
  ``net.ipv4.ip_local_port_range`` holds (28,232 by default), so more
  connections to one server port need more source addresses -- every address
  of 127.0.0.0/8 is a usable source on loopback;
* the bytes in flight (``conns x pipeline x size`` per process) are bounded.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
from dataclasses import dataclass
from typing import Any, Final

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
MAX_SIZE: Final = 64 << 20  # bytes per message
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
    """A whole run, validated."""

    family: int
    address: Any  # what connect() takes: (host, port), (host, port, flow, scope) or a path
    target: str  # the server, as people write it
    conns: int
    size: int
    pipeline: int
    duration: float | None
    messages: int | None
    sources: tuple[str, ...]
    shares: tuple[Share, ...]
    guard: float  # total wall-clock bound of the run, seconds

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


def make_plan(
    *,
    host: str,
    port: int,
    unix: str | None,
    conns: int,
    size: int,
    duration: float | None,
    messages: int | None,
    pipeline: int,
    procs: int,
    source_addrs: list[str] | None,
    cpus: list[int] | None,
    timeout: float | None,
    fd_limit: int,
    ports: int,
) -> Plan:
    """Check every argument and limit; split the connections over processes.

    Args:
        fd_limit: the descriptors one load process may hold (``RLIMIT_NOFILE``).
        ports: client ports per (source, destination) pair.

    Raises:
        ValueError: with a sentence saying what is wrong and what to do.
    """
    if conns < 1:
        raise ValueError(f"--conns must be at least 1, got {conns}")
    if not 1 <= size <= MAX_SIZE:
        raise ValueError(f"--size must be in 1..{MAX_SIZE}, got {size}")
    if pipeline < 1:
        raise ValueError(f"--pipeline must be at least 1, got {pipeline}")
    if procs < 1:
        raise ValueError(f"--procs must be at least 1, got {procs}")
    if procs > conns:
        raise ValueError(f"--procs {procs} is more than --conns {conns}: a process needs work")
    if duration is None and messages is None:
        raise ValueError("give a duration or a message count: the run must end")
    if duration is not None and not (0 < duration < math.inf):
        raise ValueError(f"--duration must be a positive number of seconds, got {duration}")
    if messages is not None and messages < 1:
        raise ValueError(f"--messages must be at least 1, got {messages}")
    if timeout is not None and not (0 < timeout < math.inf):
        raise ValueError(f"--timeout must be a positive number of seconds, got {timeout}")
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {port}")

    family: int
    if unix is not None:
        if source_addrs:
            raise ValueError("--source-addrs is for TCP; a Unix socket has no source address")
        family, address, target = socket.AF_UNIX, unix, f"unix:{unix}"
    else:
        family, address = _resolve(host, port)
        target = f"[{address[0]}]:{port}" if family == socket.AF_INET6 else f"{address[0]}:{port}"
    sources = tuple(source_addrs or ())
    for source in sources:
        version = ipaddress.ip_address(source).version
        if (version == 6) != (family == socket.AF_INET6):
            raise ValueError(f"source address {source} is not of the server's family ({target})")

    per_proc = math.ceil(conns / procs)
    room = fd_limit - FD_RESERVE
    if per_proc > room:
        need = math.ceil(conns / max(1, room))
        raise ValueError(
            f"{conns} connections over {procs} process(es) is {per_proc} per process, but "
            f"RLIMIT_NOFILE ({fd_limit}) lets a process hold {max(0, room)} "
            f"({FD_RESERVE} descriptors kept back): use --procs {need} or more"
        )
    if family != socket.AF_UNIX:
        per_source = math.ceil(conns / max(1, len(sources)))
        if per_source > ports:
            need = math.ceil(conns / ports)
            raise ValueError(
                f"{per_source} connections per source address, but a source address has "
                f"{ports} client ports (net.ipv4.ip_local_port_range): give --source-addrs "
                f"with {need} addresses or more, e.g. 127.0.0.2-127.0.0.{need + 1}"
            )
    if per_proc * pipeline * size > MAX_IN_FLIGHT:
        raise ValueError(
            f"{per_proc} connections x pipeline {pipeline} x {size} bytes is more than "
            f"{MAX_IN_FLIGHT >> 30} GiB in flight per process: use more --procs or less of those"
        )

    if cpus is not None:
        allowed = os.sched_getaffinity(0)
        wrong = sorted(set(cpus) - allowed)
        if not cpus or wrong:
            raise ValueError(f"--cpus {cpus}: not among the allowed CPUs {sorted(allowed)}")

    counts = _split(conns, procs)
    budgets: list[int | None] = [None] * procs
    if messages is not None:
        parts = [messages * count // conns for count in counts]  # in proportion
        for k in range(messages - sum(parts)):
            parts[k % procs] += 1
        budgets = list(parts)
    firsts = [sum(counts[:k]) for k in range(procs)]
    shares = tuple(
        Share(
            index=k,
            first=firsts[k],
            conns=counts[k],
            messages=budgets[k],
            cpu=cpus[k % len(cpus)] if cpus else None,
        )
        for k in range(procs)
    )
    if timeout is None:
        ramp = 30.0 + per_proc / 500  # a slow ramp still connects 500 per second
        timeout = ramp + (duration + 2 * STALL_S if duration is not None else DEFAULT_GUARD_S)
    return Plan(
        family=family,
        address=address,
        target=target,
        conns=conns,
        size=size,
        pipeline=pipeline,
        duration=duration,
        messages=messages,
        sources=sources,
        shares=shares,
        guard=timeout,
    )
