"""What a run costs: the server's memory, the kernel's slab, everyone's CPU time.

* **User space**: RSS counts every page a process maps, shared or not, so the
  RSS of 50 forked workers adds the interpreter's shared pages 50 times.  PSS
  (proportional set size, from ``/proc/PID/smaps_rollup``) divides each page
  by the number of processes that map it: the sum of PSS over the server's
  processes is the memory the server really holds.  Read through psutil.
* **Kernel**: a TCP connection's sockets, file structures, dentries, inodes
  and epoll items live in slab caches, not in any process.  ``Slab`` in
  ``/proc/meminfo`` is machine-wide: its growth over a run is the cost of the
  connections *on both ends* (server and client sockets on loopback), plus
  whatever else the machine did meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ProcessMemory",
    "file_handles",
    "meminfo",
    "process_tree_cpu",
    "process_tree_memory",
    "slab_bytes",
    "tcp_sockstat",
]

EXTRA_HINT = "install the bench extra: pip install 'rawepoll[bench]'"


@dataclass(frozen=True)
class ProcessMemory:
    """RSS and PSS summed over a process and its descendants."""

    processes: int
    rss_bytes: int
    pss_bytes: int
    private_bytes: int  # USS: pages no other process maps


def _psutil() -> Any:
    try:
        import psutil  # type: ignore[import-untyped]  # noqa: PLC0415 -- optional extra
    except ImportError:
        raise ImportError(f"measuring process memory needs psutil: {EXTRA_HINT}") from None
    return psutil


def process_tree_memory(pid: int) -> ProcessMemory:
    """Memory of ``pid`` and all its descendants (a process that exits meanwhile is skipped)."""
    psutil = _psutil()
    root = psutil.Process(pid)
    rss = pss = uss = count = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        rss += info.rss
        pss += info.pss
        uss += info.uss
        count += 1
    return ProcessMemory(processes=count, rss_bytes=rss, pss_bytes=pss, private_bytes=uss)


def process_tree_cpu(pids: list[int]) -> tuple[float, float]:
    """``(user, system)`` CPU seconds of ``pids`` and all their descendants, still running."""
    psutil = _psutil()
    seen: set[int] = set()
    user = system = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in tree:
            if process.pid in seen:
                continue
            seen.add(process.pid)
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            user += times.user
            system += times.system
    return user, system


def meminfo() -> dict[str, int]:
    """``/proc/meminfo`` in bytes."""
    values: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def slab_bytes() -> int:
    """Kernel slab memory of the whole machine, bytes."""
    return meminfo()["Slab"]


def file_handles() -> tuple[int, int]:
    """``(allocated, fs.file-max)``: open file structures machine-wide, and the cap."""
    allocated, _, maximum = Path("/proc/sys/fs/file-nr").read_text().split()
    return int(allocated), int(maximum)


def tcp_sockstat() -> dict[str, int]:
    """The ``TCP:`` line of ``/proc/net/sockstat``: ``inuse``, ``orphan``, ``tw``, ``alloc``,
    ``mem`` (pages of socket buffers) -- of the reading process's network namespace.
    """
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            words = line.split()[1:]
            return {words[k]: int(words[k + 1]) for k in range(0, len(words) - 1, 2)}
    return {}
