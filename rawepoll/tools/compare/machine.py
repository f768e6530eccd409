"""The machine a comparison runs on: its description, and another process's CPU and memory.

Everything here reads the kernel's own files and clocks, so ``rawepoll
compare`` needs no extra to measure:

* CPU time of another process comes from its per-process CPU clock
  (``clock_gettime`` on the clock id ``clock_getcpuclockid(3)`` returns):
  user + system time of all its threads, in nanoseconds -- the quantity
  ``utime + stime`` in ``/proc/PID/stat`` counts in whole 10 ms ticks.  On a
  kernel without ``CONFIG_IRQ_TIME_ACCOUNTING`` it includes the softirq work
  run inside the process's system calls (on loopback, a ``write`` also runs
  the TCP receive path of the peer's socket).
* Memory is RSS and PSS from ``/proc/PID/smaps_rollup``: PSS divides each
  shared page by the number of processes mapping it.
* The process tree is not followed: every server of the echo and memory
  sections is one process (``rawepoll serve`` with one worker serves
  in-process); the broadcast section, whose servers may fork workers, adds up
  the CPU clocks of the processes they announce (:func:`total_cpu_ns`).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from rawepoll._version import __version__

__all__ = [
    "Usage",
    "cpu_ns",
    "environment",
    "file_room",
    "memory",
    "open_fds",
    "slab_bytes",
    "total_cpu_ns",
    "usage",
]


# -- the machine --------------------------------------------------------------


def environment(pinning: str) -> dict[str, Any]:
    """What a reader needs to judge the numbers: interpreter, kernel, load, pinning, date."""
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rawepoll": __version__,
        "pinning": pinning,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


# -- another process: CPU, memory, descriptors ----------------------------------


@dataclass(frozen=True)
class Usage:
    """A process's counters at one moment; subtract two to get an interval."""

    cpu_ns: int  # process CPU clock: user + system, ns precision
    user_ns: int  # utime from /proc/PID/stat: 10 ms ticks, sampled
    system_ns: int  # stime, likewise; user + system ~= cpu_ns

    def __sub__(self, other: Usage) -> Usage:
        return Usage(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


def _cpu_clock(pid: int) -> int:
    """``clock_getcpuclockid(pid)``: Linux encodes it as ``(~pid << 3) | CPUCLOCK_SCHED``."""
    return ((~pid) << 3) | 2


def cpu_ns(pid: int) -> int:
    """User + system CPU time of process ``pid`` (all threads), in ns."""
    return time.clock_gettime_ns(_cpu_clock(pid))


def total_cpu_ns(pids: Iterable[int]) -> int:
    """User + system CPU time of every process of ``pids``, in ns."""
    return sum(cpu_ns(pid) for pid in pids)


def usage(pid: int) -> Usage:
    """The CPU clock and the user and system tick counts of process ``pid``, now."""
    cpu = cpu_ns(pid)
    tick_ns = 10**9 // os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return Usage(cpu, int(fields[11]) * tick_ns, int(fields[12]) * tick_ns)  # utime, stime


def memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of process ``pid`` in bytes, from ``/proc/PID/smaps_rollup``."""
    found = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            found[key] = int(rest.split()[0]) * 1024  # the kernel writes kB
    return found["Rss"], found["Pss"]


def open_fds(pid: int) -> int:
    """How many descriptors process ``pid`` holds now."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def file_room() -> int:
    """Descriptors the whole system can still open (``fs.file-max`` less those open)."""
    allocated, _, limit = Path("/proc/sys/fs/file-nr").read_text().split()
    return int(limit) - int(allocated)


def slab_bytes() -> int:
    """The kernel's slab memory, system-wide (``Slab:`` in ``/proc/meminfo``)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1]) * 1024
    return 0
