"""A private network namespace for a large run: its own loopback and sysctls.

``unshare(CLONE_NEWNET)`` (needs CAP_SYS_ADMIN, i.e. root here) moves the
calling thread into a new network namespace.  What the run relies on:

* the namespace starts with one interface, ``lo``, **down**: it is brought up
  with ``SIOCSIFFLAGS``; every address of 127.0.0.0/8 then works as a source;
* ``/proc/sys/net/...`` shows the namespace of the process that opens it, so
  the writes below change this namespace only -- never the host's:

  - ``net.ipv4.ip_local_port_range`` 1024-65535: 64,512 client ports per
    (source address, destination) instead of the default 28,232;
  - ``net.core.somaxconn`` and ``net.ipv4.tcp_max_syn_backlog`` 65535: the
    accept queue and the SYN queue of the one listening socket take bursts
    of tens of thousands of connects without dropping any;

* the namespace may get its **own table of established TCP sockets**:
  ``net.ipv4.tcp_child_ehash_entries`` (Linux 6.1), set in the parent
  namespace just before ``unshare`` and put back right after, sizes the new
  namespace's hash table.  Otherwise it shares the host's, sized at boot for
  the host's memory (262,144 buckets here) -- two million sockets on
  loopback make every lookup walk chains of ~8;
* no netfilter rule exists in a new namespace, so connection tracking never
  registers its hooks there: a million connections leave no conntrack entry;
* the namespace lives as long as a process is in it: when the run's last
  process exits it is gone, also after Ctrl-C or a crash.  ``keep`` names it
  (``ip netns attach``) so that it outlives the run, for inspection with
  ``ip netns exec NAME ss -s``; ``ip netns delete NAME`` removes it.

Children forked or spawned afterwards inherit the namespace: the server and
the load processes of ``rawepoll c1m`` all live in it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path
from typing import Final

from rawepoll import _ffi

__all__ = ["REPORTED", "SYSCTLS", "conntrack_entries", "enter", "read_sysctl", "why_not"]

CLONE_NEWNET: Final = 0x40000000
SIOCGIFFLAGS: Final = 0x8913
SIOCSIFFLAGS: Final = 0x8914
IFF_UP: Final = 0x1
_IFREQ: Final = struct.Struct("16sh22x")  # struct ifreq: name, then ifr_flags in the union

SYSCTLS: Final = {
    "net/ipv4/ip_local_port_range": "1024 65535",
    "net/core/somaxconn": "65535",
    "net/ipv4/tcp_max_syn_backlog": "65535",
}

# What a report shows of the namespace: the settings above, and the size of its
# TCP hash table (negative: it shares the host's).
REPORTED: Final = (*SYSCTLS, "net/ipv4/tcp_ehash_entries")


def why_not() -> str | None:
    """Why this process cannot make a network namespace, or None if it can."""
    if os.geteuid() != 0:
        return "a private network namespace needs root (CAP_SYS_ADMIN)"
    return None


def enter(keep: str | None = None, ehash_buckets: int = 0) -> None:
    """Move this process into a new network namespace and set it up.

    Args:
        keep: a name to attach the namespace under (``/run/netns/NAME``), so
            it outlives this process; None lets it vanish with the run.
        ehash_buckets: the size of the namespace's own established-socket hash
            table (rounded up to a power of two by the kernel, 128 .. 2**24);
            0 shares the host's.  Ignored on kernels without the setting.

    Raises:
        OSError: ``unshare`` or a setting failed (EPERM without root).
    """
    child_ehash = Path("/proc/sys/net/ipv4/tcp_child_ehash_entries")
    if ehash_buckets and child_ehash.exists():
        # Opened before unshare: the file stays the parent namespace's setting.
        with child_ehash.open("r+") as setting:
            previous = setting.read().strip()
            setting.seek(0)
            setting.write(f"{ehash_buckets}\n")
            setting.flush()
            try:
                _enter()
            finally:
                setting.seek(0)
                setting.write(previous + "\n")
                setting.flush()
    else:
        _enter()
    _loopback_up()
    for name, value in SYSCTLS.items():
        Path("/proc/sys", name).write_text(value + "\n")
    if keep is not None:
        ip = shutil.which("ip")
        if ip is None:
            raise OSError("--keep-netns needs iproute2's ip command")
        subprocess.run([ip, "netns", "attach", keep, str(os.getpid())], check=True)


def _enter() -> None:
    _ffi.unshare(CLONE_NEWNET)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        reply = fcntl.ioctl(sock, SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0))
        flags = _IFREQ.unpack(reply)[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | IFF_UP))


def read_sysctl(name: str) -> str:
    """A sysctl as this process's namespace sees it, e.g. ``net/core/somaxconn``."""
    return Path("/proc/sys", name).read_text().strip()


def conntrack_entries() -> int | None:
    """Connection-tracking entries of this namespace; None if conntrack is not loaded."""
    try:
        return int(read_sysctl("net/netfilter/nf_conntrack_count"))
    except (OSError, ValueError):
        return None
