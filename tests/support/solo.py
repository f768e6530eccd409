"""Tests that must run alone while pytest-xdist runs the others: a run-wide readers-writer lock.

A whole-machine measurement (the kernel's slab memory per connection, say)
is spoilt by whatever the other workers run meanwhile.  Such a test takes
the run's lock exclusively; every other test takes it shared, so the solo
test starts once the tests running elsewhere have finished and nothing
starts beside it.  A turnstile keeps the shared takers from starving it: a
test that waits for the exclusive lock holds the turnstile, which every
shared taker passes through first.

The lock files are named after the run (``PYTEST_XDIST_TESTRUNUID``, which
every worker of one run shares); without xdist there is nothing to lock.
flock(2) locks belong to the open file description: they die with the worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def run_lock(exclusive: bool) -> Iterator[None]:
    """Hold this run's lock (exclusively for a solo test) for the duration of the block."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        yield
        return
    base = os.path.join(tempfile.gettempdir(), f"rawepoll-tests-{run}")
    with open(base + ".turnstile", "a") as turnstile, open(base + ".lock", "a") as lock:
        # Blocking waits, bounded by the other side's test and its pytest-timeout.
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if not exclusive:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if exclusive:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
