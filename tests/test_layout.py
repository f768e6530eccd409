"""``struct epoll_event`` and the EPOLL* constants, checked against the C headers.

The kernel ABI is what the C compiler sees in ``<sys/epoll.h>``: a tiny C program
compiled at test time prints every size, offset and constant, and each must
equal what rawepoll declares in ctypes.  A second group checks the
per-architecture layout table for every Linux machine name, without needing
those machines: the table itself, and a fresh interpreter that imports rawepoll
while ``platform.machine()`` pretends to be each architecture.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.children import run_python

from rawepoll import MAX_EVENTS, unix

# Every value printed by the probe program, one "name value" line each.
# Unsigned casts: EPOLLET is 1u << 31 in glibc's enum, so a signed print
# would hide exactly the bug (a negative EPOLLET) this file guards against.
C_PROBE = r"""
#define _GNU_SOURCE
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>

#define SHOW(name, value) printf("%s %llu\n", name, (unsigned long long)(value))
#define CONST(name) SHOW(#name, (unsigned int)(name))

static void dump(const char *name, const struct epoll_event *ev) {
    const unsigned char *p = (const unsigned char *)ev;
    printf("%s ", name);
    for (size_t i = 0; i < sizeof *ev; i++) printf("%02x", p[i]);
    printf("\n");
}

int main(void) {
    struct epoll_event ev;

    SHOW("sizeof_epoll_event", sizeof(struct epoll_event));
    SHOW("alignof_epoll_event", _Alignof(struct epoll_event));
    SHOW("offsetof_events", offsetof(struct epoll_event, events));
    SHOW("offsetof_data", offsetof(struct epoll_event, data));
    SHOW("sizeof_epoll_data", sizeof(epoll_data_t));
    SHOW("offsetof_data_fd", offsetof(epoll_data_t, fd));
    SHOW("offsetof_data_u64", offsetof(epoll_data_t, u64));
    SHOW("max_events", INT_MAX / sizeof(struct epoll_event));
    SHOW("sizeof_timespec", sizeof(struct timespec));
    SHOW("offsetof_tv_sec", offsetof(struct timespec, tv_sec));
    SHOW("offsetof_tv_nsec", offsetof(struct timespec, tv_nsec));
    SHOW("sizeof_sigset", sizeof(sigset_t));
    SHOW("nsig", NSIG);
    SHOW("RLIMIT_NOFILE", RLIMIT_NOFILE);

    CONST(EPOLLIN);
    CONST(EPOLLPRI);
    CONST(EPOLLOUT);
    CONST(EPOLLERR);
    CONST(EPOLLHUP);
    CONST(EPOLLRDNORM);
    CONST(EPOLLRDBAND);
    CONST(EPOLLWRNORM);
    CONST(EPOLLWRBAND);
    CONST(EPOLLMSG);
    CONST(EPOLLRDHUP);
    CONST(EPOLLEXCLUSIVE);
    CONST(EPOLLWAKEUP);
    CONST(EPOLLONESHOT);
    CONST(EPOLLET);
    CONST(EPOLL_CTL_ADD);
    CONST(EPOLL_CTL_DEL);
    CONST(EPOLL_CTL_MOD);
    CONST(EPOLL_CLOEXEC);

    /* The exact bytes of two events, for a byte-for-byte comparison. */
    memset(&ev, 0, sizeof ev);
    ev.events = 0xAABBCCDDu;
    ev.data.u64 = 0x1122334455667788ull;
    dump("bytes_u64", &ev);
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | EPOLLET;
    ev.data.fd = -2;
    dump("bytes_fd", &ev);
    return 0;
}
"""

EPOLL_NAMES = [
    "EPOLLIN",
    "EPOLLPRI",
    "EPOLLOUT",
    "EPOLLERR",
    "EPOLLHUP",
    "EPOLLRDNORM",
    "EPOLLRDBAND",
    "EPOLLWRNORM",
    "EPOLLWRBAND",
    "EPOLLMSG",
    "EPOLLRDHUP",
    "EPOLLEXCLUSIVE",
    "EPOLLWAKEUP",
    "EPOLLONESHOT",
    "EPOLLET",
    "EPOLL_CTL_ADD",
    "EPOLL_CTL_DEL",
    "EPOLL_CTL_MOD",
    "EPOLL_CLOEXEC",
]


@pytest.fixture(scope="module")
def c_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Compile and run the probe; its output as ``{name: value-text}``."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler (cc/gcc/clang) on PATH to read <sys/epoll.h>")
    workdir: Path = tmp_path_factory.mktemp("layout")
    source = workdir / "probe.c"
    binary = workdir / "probe"
    source.write_text(C_PROBE)
    build = subprocess.run(
        [compiler, "-std=c11", "-O0", "-o", str(binary), str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert build.returncode == 0, f"probe did not compile:\n{build.stderr}"
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=30, check=True)
    values = dict(line.split(" ", 1) for line in run.stdout.splitlines())
    return values


def c_int(values: dict[str, str], name: str) -> int:
    return int(values[name])


# --------------------------------------------------------------------------
# Against the C compiler.


@pytest.mark.timeout(60)
def test_epoll_event_size_matches_c(c_values: dict[str, str]) -> None:
    """sizeof(struct epoll_event): 12 on x86-64 (packed), 16 elsewhere."""
    assert ctypes.sizeof(unix.EpollEvent) == c_int(c_values, "sizeof_epoll_event")
    assert c_int(c_values, "sizeof_epoll_event") == unix.EVENT_SIZE


@pytest.mark.timeout(60)
def test_epoll_event_array_stride_matches_c(c_values: dict[str, str]) -> None:
    """An array of events has C's stride: the kernel writes entry i at i*sizeof."""
    stride = ctypes.sizeof(unix.EpollEvent * 2) // 2
    assert stride == c_int(c_values, "sizeof_epoll_event")
    assert ctypes.alignment(unix.EpollEvent) == c_int(c_values, "alignof_epoll_event")


@pytest.mark.timeout(60)
def test_epoll_event_field_offsets_match_c(c_values: dict[str, str]) -> None:
    """``events`` at 0, the ``data`` union at 4 (packed) or 8; ``fd``/``u64`` at its start."""
    data_offset = c_int(c_values, "offsetof_data")
    assert unix.EpollEvent.Events.offset == c_int(c_values, "offsetof_events")
    assert unix.EpollEvent.Data.offset == data_offset
    assert unix.EpollEvent.Fd.offset == data_offset + c_int(c_values, "offsetof_data_fd")
    assert unix.EpollEvent.Data.offset == data_offset + c_int(c_values, "offsetof_data_u64")
    # Go's Pad is the second 32-bit word of the union.
    assert unix.EpollEvent.Pad.offset == data_offset + 4
    assert data_offset == unix.DATA_OFFSET


@pytest.mark.timeout(60)
def test_epoll_data_size_matches_c(c_values: dict[str, str]) -> None:
    """``epoll_data_t`` is one 64-bit word, and ``Data`` covers all of it."""
    assert c_int(c_values, "sizeof_epoll_data") == 8
    assert unix.EpollEvent.Data.size == c_int(c_values, "sizeof_epoll_data")
    assert ctypes.sizeof(unix._EpollData) == c_int(c_values, "sizeof_epoll_data")


@pytest.mark.timeout(60)
def test_epoll_event_bytes_match_c(c_values: dict[str, str]) -> None:
    """The very bytes C lays down for ``{events, data.u64}`` and ``{events, data.fd}``."""
    as_u64 = unix.EpollEvent(Events=0xAABBCCDD, Data=0x1122334455667788)
    assert bytes(as_u64).hex() == c_values["bytes_u64"]
    as_fd = unix.EpollEvent(Events=unix.EPOLLIN | unix.EPOLLET, Fd=-2)
    assert bytes(as_fd).hex() == c_values["bytes_fd"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", EPOLL_NAMES)
def test_constant_matches_c(c_values: dict[str, str], name: str) -> None:
    """Each EPOLL*/EPOLL_CTL_*/EPOLL_CLOEXEC equals the header's value, unsigned."""
    value = getattr(unix, name)
    assert type(value) is int
    assert value == c_int(c_values, name)


@pytest.mark.timeout(60)
def test_every_unix_constant_is_checked(c_values: dict[str, str]) -> None:
    """No EPOLL* name in ``rawepoll.unix`` escapes the comparison with C."""
    exported = {name for name in unix.__all__ if name.startswith("EPOLL")}
    assert exported == set(EPOLL_NAMES)
    assert exported <= set(c_values)


@pytest.mark.timeout(60)
def test_max_events_is_the_kernels_limit(c_values: dict[str, str]) -> None:
    """``MAX_EVENTS`` is ``INT_MAX / sizeof(struct epoll_event)`` (the kernel's EP_MAX_EVENTS)."""
    assert c_int(c_values, "max_events") == MAX_EVENTS


@pytest.mark.timeout(60)
def test_timespec_matches_c(c_values: dict[str, str]) -> None:
    """``Timespec`` is handed to epoll_pwait2 by pointer: it must be ``struct timespec``."""
    assert ctypes.sizeof(unix.Timespec) == c_int(c_values, "sizeof_timespec")
    assert unix.Timespec.Sec.offset == c_int(c_values, "offsetof_tv_sec")
    assert unix.Timespec.Nsec.offset == c_int(c_values, "offsetof_tv_nsec")


@pytest.mark.timeout(60)
def test_sigset_matches_c(c_values: dict[str, str]) -> None:
    """The sigmask buffer is a whole glibc ``sigset_t``; signals run 1..NSIG-1."""
    assert ctypes.sizeof(unix._SigsetT) == c_int(c_values, "sizeof_sigset")
    assert c_int(c_values, "nsig") == unix._NSIG


@pytest.mark.timeout(60)
def test_rlimit_nofile_matches_c(c_values: dict[str, str]) -> None:
    """``RLIMIT_NOFILE`` is the header's resource number."""
    assert c_int(c_values, "RLIMIT_NOFILE") == unix.RLIMIT_NOFILE


# --------------------------------------------------------------------------
# Pure Python: the constants themselves.


def test_epollet_is_unsigned_bit_31() -> None:
    """EPOLLET is 0x80000000, not Go's old negative ``syscall.EPOLLET``."""
    assert unix.EPOLLET == 0x80000000
    assert unix.EpollEvent(Events=unix.EPOLLET).Events == 0x80000000


@pytest.mark.parametrize("name", EPOLL_NAMES)
def test_constant_is_a_non_negative_u32(name: str) -> None:
    """Every constant fits the kernel's ``__u32`` mask without sign tricks."""
    value = getattr(unix, name)
    assert 0 <= value < 1 << 32


def test_event_bits_are_distinct_powers_of_two() -> None:
    """The event bits are single bits, none shared, so masks can be OR-ed."""
    bits = [
        getattr(unix, name) for name in EPOLL_NAMES if name.startswith("EPOLL") and "_" not in name
    ]
    assert len(bits) == 15
    for bit in bits:
        assert bit & (bit - 1) == 0 and bit
    assert len(set(bits)) == len(bits)


def test_documented_constant_values() -> None:
    """The values DESIGN.md lists, which are the same on every Linux architecture."""
    assert (unix.EPOLLIN, unix.EPOLLPRI, unix.EPOLLOUT, unix.EPOLLERR) == (0x1, 0x2, 0x4, 0x8)
    assert (unix.EPOLLHUP, unix.EPOLLRDNORM, unix.EPOLLRDBAND) == (0x10, 0x40, 0x80)
    assert (unix.EPOLLWRNORM, unix.EPOLLWRBAND, unix.EPOLLMSG) == (0x100, 0x200, 0x400)
    assert unix.EPOLLRDHUP == 0x2000
    assert unix.EPOLLEXCLUSIVE == 1 << 28
    assert unix.EPOLLWAKEUP == 1 << 29
    assert unix.EPOLLONESHOT == 1 << 30
    assert (unix.EPOLL_CTL_ADD, unix.EPOLL_CTL_DEL, unix.EPOLL_CTL_MOD) == (1, 2, 3)


# --------------------------------------------------------------------------
# Pure Python: the per-architecture table, for every Linux machine name.

# machine -> (sizeof, offsetof(data), Go's field names, EPOLL_CLOEXEC)
ALIGNED_FIELDS = ("Events", "PadFd", "Fd", "Pad")
PACKED_FIELDS = ("Events", "Fd", "Pad")
ARCHES: dict[str, tuple[int, int, tuple[str, ...], int]] = {
    "x86_64": (12, 4, PACKED_FIELDS, 0x80000),
    "i686": (12, 4, PACKED_FIELDS, 0x80000),
    "aarch64": (16, 8, ALIGNED_FIELDS, 0x80000),
    "armv7l": (16, 8, ALIGNED_FIELDS, 0x80000),
    "riscv64": (16, 8, ALIGNED_FIELDS, 0x80000),
    "ppc64le": (16, 8, ALIGNED_FIELDS, 0x80000),
    "ppc64": (16, 8, ALIGNED_FIELDS, 0x80000),
    "s390x": (16, 8, ALIGNED_FIELDS, 0x80000),
    "mips64": (16, 8, ALIGNED_FIELDS, 0x80000),
    "loongarch64": (16, 8, ALIGNED_FIELDS, 0x80000),
    "sparc64": (16, 8, ALIGNED_FIELDS, 0x400000),
}


@pytest.mark.parametrize("machine", sorted(ARCHES))
def test_layout_table_entry(machine: str) -> None:
    """``_PACKED_MACHINES`` picks the row of ``_LAYOUTS`` that the kernel uses there."""
    size, data_offset, fields, _ = ARCHES[machine]
    layout = "packed" if machine in unix._PACKED_MACHINES else "aligned"
    table_size, table_offset, pack, pre_data = unix._LAYOUTS[layout]
    assert (table_size, table_offset) == (size, data_offset)
    assert ("Events", *(name for name, _ in pre_data), "Fd", "Pad") == fields
    assert bool(pack) == (size == 12)


def test_this_machine_uses_its_table_row() -> None:
    """The running interpreter's layout is the table's row for its machine name."""
    machine = unix._MACHINE
    expected = "packed" if machine in unix._PACKED_MACHINES else "aligned"
    assert expected == unix.LAYOUT
    size, data_offset, _, _ = unix._LAYOUTS[unix.LAYOUT]
    assert ctypes.sizeof(unix.EpollEvent) == size
    assert unix.EpollEvent.Data.offset == data_offset
    if machine in ARCHES:
        assert ARCHES[machine][:2] == (size, data_offset)


# Imports rawepoll with platform.machine() faked, then reports what it built.
FAKE_MACHINE = """
import ctypes, json, platform, sys
machine = sys.argv[1]
platform.machine = lambda: machine
from rawepoll import EventArray, MAX_EVENTS, unix
E = unix.EpollEvent
fields = sorted(
    (getattr(E, name).offset, name)
    for name in ("Events", "PadFd", "Fd", "Pad", "Data")
    if hasattr(E, name)
)
arr = EventArray(3)
arr[1].Events = 0x80000001
arr[1].Fd = -5
arr[2].Data = 0xFEDCBA9876543210
print(json.dumps({
    "layout": unix.LAYOUT,
    "size": ctypes.sizeof(E),
    "event_size": unix.EVENT_SIZE,
    "data_offset": unix.DATA_OFFSET,
    "fields": [name for _, name in fields if name != "Data"],
    "offsets": {name: offset for offset, name in fields},
    "cloexec": unix.EPOLL_CLOEXEC,
    "max_events": MAX_EVENTS,
    "ready": [list(pair) for pair in arr.ready(3)],
    "data": arr.data(2),
}))
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("machine", sorted(ARCHES))
def test_import_builds_the_layout_for_machine(machine: str) -> None:
    """Under each machine name, rawepoll builds that machine's struct and EventArray views.

    The field order and offsets are Go's for that architecture; EPOLL_CLOEXEC is
    O_CLOEXEC there; and ``EventArray.ready()``/``data()`` read the right words
    with that stride.  (Only memory is touched: no system call is made.)
    """
    size, data_offset, fields, cloexec = ARCHES[machine]
    result = run_python(FAKE_MACHINE, machine)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["layout"] == ("packed" if size == 12 else "aligned")
    assert got["size"] == got["event_size"] == size
    assert got["data_offset"] == data_offset
    assert tuple(got["fields"]) == fields
    assert got["offsets"]["Fd"] == got["offsets"]["Data"] == data_offset
    assert got["offsets"]["Pad"] == data_offset + 4
    assert got["cloexec"] == cloexec
    assert got["max_events"] == (2**31 - 1) // size
    little = sys.byteorder == "little"
    assert got["ready"] == [[0, 0], [-5, 0x80000001], [0x76543210 if little else -0x1234568, 0]]
    assert got["data"] == 0xFEDCBA9876543210
