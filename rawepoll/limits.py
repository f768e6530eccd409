"""``SetLimit``: the seed's raise-``RLIMIT_NOFILE`` step, and a bit more.

Each socket is a descriptor, so a process that holds many connections first
needs a high ``RLIMIT_NOFILE``.  An unprivileged process may raise its soft
limit up to the hard limit; raising the hard limit needs ``CAP_SYS_RESOURCE``
and can never go above ``fs.nr_open`` (``/proc/sys/fs/nr_open``, 1,048,576 by
default).  :func:`SetLimit` does the first always and the second where allowed.
"""

from __future__ import annotations

import resource
from pathlib import Path

__all__ = ["SetLimit", "nr_open"]

_NR_OPEN = Path("/proc/sys/fs/nr_open")


def nr_open() -> int | None:
    """The kernel's per-process ceiling for descriptors, or None if unreadable."""
    try:
        return int(_NR_OPEN.read_text().strip())
    except (OSError, ValueError):
        return None


def SetLimit() -> int:
    """Raise ``RLIMIT_NOFILE`` as far as this process may; return the soft limit now.

    Like the seed's ``SetLimit``, sets the soft limit to the hard limit.  Where
    the process is allowed to (``CAP_SYS_RESOURCE``), it first raises the hard
    limit to ``fs.nr_open``; where it is not, that step is skipped silently --
    the result tells the caller what it got.

    Returns:
        The soft ``RLIMIT_NOFILE`` in force afterwards (``resource.RLIM_INFINITY``
        is returned as is, though Linux never grants it for this resource).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = nr_open()
    if ceiling is not None and hard != resource.RLIM_INFINITY and hard < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, ceiling))
        except (OSError, ValueError):
            pass  # not privileged: keep the hard limit we have
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
