"""``SetLimit`` and ``nr_open``: raising RLIMIT_NOFILE as the seed does.

An unprivileged process may raise its soft limit up to the hard limit; the hard
limit needs CAP_SYS_RESOURCE and never exceeds ``fs.nr_open``.  Every call of
``SetLimit`` runs in a child interpreter that first lowers its own soft limit,
so the test process keeps its limits.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest
from support.children import run_python

from rawepoll import SetLimit, limits

NR_OPEN = Path("/proc/sys/fs/nr_open")

# argv: soft hard (the limits to start from; "-" keeps the current one).
SETLIMIT_CHILD = """
import json, os, resource, sys
import rawepoll
from rawepoll import limits
if len(sys.argv) > 3:
    limits._NR_OPEN = limits.Path(sys.argv[3])
NOFILE = resource.RLIMIT_NOFILE
soft, hard = resource.getrlimit(NOFILE)
hard = hard if sys.argv[2] == "-" else int(sys.argv[2])
soft = soft if sys.argv[1] == "-" else int(sys.argv[1])
resource.setrlimit(NOFILE, (soft, hard))
before = resource.getrlimit(NOFILE)
result = rawepoll.SetLimit()
after = resource.getrlimit(NOFILE)
# Use what was granted: open descriptors beyond the old soft limit (if it rose).
count = before[0] + 16 if after[0] >= before[0] + 64 else 0
fds = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in range(count)]
highest = max(fds, default=None)
for fd in fds:
    os.close(fd)
print(json.dumps({"before": before, "result": result, "after": after, "highest": highest}))
"""


def has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def run_setlimit(soft: int | str, hard: int | str = "-", *extra: str) -> dict[str, object]:
    result = run_python(SETLIMIT_CHILD, str(soft), str(hard), *extra)
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_nr_open_reads_proc() -> None:
    """``nr_open()`` is the kernel's ``fs.nr_open`` as an int."""
    value = limits.nr_open()
    assert type(value) is int
    assert value == int(NR_OPEN.read_text())
    assert value >= resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def test_nr_open_unreadable_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing or garbled ``/proc/sys/fs/nr_open`` gives None, not an exception."""
    monkeypatch.setattr(limits, "_NR_OPEN", tmp_path / "missing")
    assert limits.nr_open() is None
    garbled = tmp_path / "garbled"
    garbled.write_text("many\n")
    monkeypatch.setattr(limits, "_NR_OPEN", garbled)
    assert limits.nr_open() is None
    monkeypatch.setattr(limits, "_NR_OPEN", tmp_path)  # a directory: IsADirectoryError
    assert limits.nr_open() is None


@pytest.mark.timeout(60)
def test_setlimit_raises_soft_to_hard() -> None:
    """From a lowered soft limit, SetLimit returns the soft limit now in force,
    which is the hard limit; the child can then open that many descriptors."""
    report = run_setlimit(256)
    before, after = report["before"], report["after"]
    assert isinstance(before, list) and isinstance(after, list)
    assert before[0] == 256
    assert report["result"] == after[0] == after[1]
    assert after[1] >= before[1]
    assert isinstance(report["highest"], int) and report["highest"] >= 256


@pytest.mark.timeout(60)
def test_setlimit_keeps_hard_limit_without_privilege() -> None:
    """Without CAP_SYS_RESOURCE the hard limit cannot rise: SetLimit keeps it, silently.

    The child first lowers its *hard* limit (always allowed, never undone without
    the capability), so the attempt to raise it to fs.nr_open must fail quietly.
    """
    if has_cap_sys_resource():
        pytest.skip("CAP_SYS_RESOURCE is held: the hard limit would be raised")
    report = run_setlimit(100, 1000)
    assert report["before"] == [100, 1000]
    assert report["result"] == 1000
    assert report["after"] == [1000, 1000]


@pytest.mark.timeout(60)
def test_setlimit_raises_hard_limit_with_privilege() -> None:
    """With CAP_SYS_RESOURCE, SetLimit first raises the hard limit to fs.nr_open."""
    if not has_cap_sys_resource():
        pytest.skip("no CAP_SYS_RESOURCE here: the hard limit cannot be raised")
    nr_open = int(NR_OPEN.read_text())
    report = run_setlimit(100, 1000)
    assert report["result"] == nr_open
    assert report["after"] == [nr_open, nr_open]


@pytest.mark.timeout(60)
def test_setlimit_without_nr_open(tmp_path: Path) -> None:
    """If fs.nr_open cannot be read, SetLimit still raises soft to hard."""
    report = run_setlimit(128, "-", str(tmp_path / "missing"))
    after = report["after"]
    assert isinstance(after, list)
    assert report["result"] == after[0] == after[1]
    assert after[1] == resource.getrlimit(resource.RLIMIT_NOFILE)[1]


@pytest.mark.timeout(60)
def test_setlimit_is_idempotent() -> None:
    """At soft == hard, SetLimit changes nothing and returns the same limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    report = run_setlimit(hard)
    assert report["before"] == report["after"]
    assert report["result"] == hard


def test_setlimit_takes_no_arguments() -> None:
    """SetLimit() takes no arguments, as the seed's ``SetLimit()``."""
    with pytest.raises(TypeError):
        SetLimit(1)  # type: ignore[call-arg]
