"""``rawepoll.unix``: Go's ``x/sys/unix`` epoll API against the real kernel.

Each test pins one thing the kernel does (or refuses) through the Go mirror:
errno mapped to the stdlib's ``OSError`` subclasses, close-on-exec on the new
descriptor, the number of entries asked for coming from the buffer itself,
the signal mask of ``epoll_pwait`` in force only during the wait, the
nanosecond timeout of ``epoll_pwait2``, and rlimits read and written as Go does.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import gc
import itertools
import json
import os
import resource
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.children import run_python
from support.fds import epoll_interest
from support.proc import wait_until_in_epoll_wait

from rawepoll import EventArray, _ffi, unix

INT_MAX = 2**31 - 1
INT_MIN = -(2**31)


@pytest.fixture
def epfd() -> Iterator[int]:
    """A fresh epoll descriptor (close-on-exec), closed afterwards."""
    fd = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


@pytest.fixture
def evfd() -> Iterator[int]:
    """A readable eventfd (counter 1), closed afterwards."""
    fd = os.eventfd(1, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        yield fd
    finally:
        os.close(fd)


@pytest.fixture
def closed_fd() -> int:
    """A descriptor number that was just closed (nothing open under it)."""
    fd = os.eventfd(0, os.EFD_CLOEXEC)
    os.close(fd)
    return fd


@contextlib.contextmanager
def readable_eventfds(count: int) -> Iterator[list[int]]:
    """``count`` readable eventfds, closed afterwards."""
    fds: list[int] = []
    try:
        for _ in range(count):
            fds.append(os.eventfd(1, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def add(epfd: int, fd: int, events: int = unix.EPOLLIN) -> None:
    """Register ``fd`` with ``Fd`` as its data word."""
    unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, unix.EpollEvent(Events=events, Fd=fd))


def cloexec(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)


def is_epoll(fd: int) -> bool:
    return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventpoll]"


# --------------------------------------------------------------------------
# EpollCreate, EpollCreate1


@pytest.mark.parametrize("size", [0, -1, INT_MIN])
def test_epoll_create_non_positive_size_is_einval(size: int) -> None:
    """``epoll_create(size <= 0)`` fails with EINVAL, as the kernel and Go do."""
    with pytest.raises(OSError) as info:
        unix.EpollCreate(size)
    assert info.value.errno == errno.EINVAL
    assert type(info.value) is OSError


@pytest.mark.parametrize("size", [1, 1024, INT_MAX])
def test_epoll_create_gives_epoll_without_cloexec(size: int) -> None:
    """``epoll_create(size > 0)`` makes an epoll fd that is *not* close-on-exec."""
    fd = unix.EpollCreate(size)
    try:
        assert is_epoll(fd)
        assert not cloexec(fd)
    finally:
        os.close(fd)


def test_epoll_create1_zero_is_not_cloexec() -> None:
    """``epoll_create1(0)``: an epoll fd inherited across exec."""
    fd = unix.EpollCreate1(0)
    try:
        assert is_epoll(fd)
        assert not cloexec(fd)
    finally:
        os.close(fd)


def test_epoll_create1_cloexec() -> None:
    """``epoll_create1(EPOLL_CLOEXEC)`` sets FD_CLOEXEC atomically."""
    fd = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
    try:
        assert is_epoll(fd)
        assert cloexec(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("flag", [1, unix.EPOLL_CLOEXEC | 1, -1, 1 << 30, os.O_NONBLOCK])
def test_epoll_create1_bad_flag_is_einval(flag: int) -> None:
    """Any flag but EPOLL_CLOEXEC is refused by the kernel with EINVAL."""
    with pytest.raises(OSError) as info:
        unix.EpollCreate1(flag)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("func", [unix.EpollCreate, unix.EpollCreate1])
def test_epoll_create_argument_types(func: Callable[[int], int]) -> None:
    """Non-integers are TypeError; integers beyond a C int are OverflowError."""
    for bad in (1.0, "1", None, b"1"):
        with pytest.raises(TypeError):
            func(bad)  # type: ignore[arg-type]
    for huge in (INT_MAX + 1, INT_MIN - 1, 2**64):
        with pytest.raises(OverflowError):
            func(huge)


# --------------------------------------------------------------------------
# EpollCtl


def test_ctl_add_stores_mask_and_data(epfd: int, evfd: int) -> None:
    """ADD stores the mask (plus ERR|HUP, always reported) and the 64-bit data word."""
    token = 0xFEEDFACE12345678
    event = unix.EpollEvent(Events=unix.EPOLLIN | unix.EPOLLET, Data=token)
    unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, event)
    mask = unix.EPOLLIN | unix.EPOLLET | unix.EPOLLERR | unix.EPOLLHUP
    assert epoll_interest(epfd) == [(evfd, mask, token)]


def test_ctl_add_mod_del(epfd: int, sockpair: tuple[socket.socket, socket.socket]) -> None:
    """ADD watches, MOD changes what is watched, DEL (with a NULL event) stops it."""
    a, _ = sockpair
    arr = EventArray(4)
    add(epfd, a.fileno(), unix.EPOLLIN)
    assert unix.EpollWait(epfd, arr, 0) == 0  # nothing to read
    unix.EpollCtl(epfd, unix.EPOLL_CTL_MOD, a.fileno(), unix.EpollEvent(unix.EPOLLOUT, Fd=77))
    assert unix.EpollWait(epfd, arr, 0) == 1
    assert list(arr.ready(1)) == [(77, unix.EPOLLOUT)]
    unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, a.fileno(), None)
    assert unix.EpollWait(epfd, arr, 0) == 0
    assert epoll_interest(epfd) == []


def test_ctl_del_ignores_an_event(epfd: int, evfd: int) -> None:
    """DEL with an event given works too: the kernel ignores it."""
    add(epfd, evfd)
    unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, evfd, unix.EpollEvent(unix.EPOLLOUT))
    assert epoll_interest(epfd) == []


def test_ctl_add_twice_is_file_exists(epfd: int, evfd: int) -> None:
    """A second ADD of the same fd is EEXIST -> FileExistsError."""
    add(epfd, evfd)
    with pytest.raises(FileExistsError) as info:
        add(epfd, evfd)
    assert info.value.errno == errno.EEXIST


def test_ctl_mod_and_del_unknown_are_file_not_found(epfd: int, evfd: int) -> None:
    """MOD or DEL of an fd that is not registered is ENOENT -> FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        unix.EpollCtl(epfd, unix.EPOLL_CTL_MOD, evfd, unix.EpollEvent(unix.EPOLLIN))
    with pytest.raises(FileNotFoundError) as info:
        unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, evfd, None)
    assert info.value.errno == errno.ENOENT


def test_ctl_regular_file_is_permission_error(epfd: int, tmp_path: Path) -> None:
    """Regular files and directories do not support poll: EPERM -> PermissionError."""
    path = tmp_path / "plain"
    path.write_bytes(b"data")
    for target, flags in ((path, os.O_RDONLY), (tmp_path, os.O_RDONLY | os.O_DIRECTORY)):
        fd = os.open(target, flags | os.O_CLOEXEC)
        try:
            with pytest.raises(PermissionError) as info:
                add(epfd, fd)
            assert info.value.errno == errno.EPERM
        finally:
            os.close(fd)


def test_ctl_closed_fd_is_ebadf(epfd: int, evfd: int, closed_fd: int) -> None:
    """A closed target fd, or a closed epoll fd, is EBADF."""
    with pytest.raises(OSError) as info:
        add(epfd, closed_fd)
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError) as info:
        add(closed_fd, evfd)
    assert info.value.errno == errno.EBADF


def test_ctl_on_non_epoll_fd_is_einval(evfd: int) -> None:
    """``epfd`` must be an epoll descriptor: anything else is EINVAL."""
    other = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        with pytest.raises(OSError) as info:
            add(evfd, other)
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(other)


def test_ctl_epoll_into_itself_is_einval(epfd: int) -> None:
    """An epoll fd cannot watch itself (fd == epfd): EINVAL."""
    with pytest.raises(OSError) as info:
        add(epfd, epfd)
    assert info.value.errno == errno.EINVAL


def test_ctl_exclusive_only_with_add(epfd: int, evfd: int) -> None:
    """EPOLLEXCLUSIVE is accepted at ADD and refused at MOD with EINVAL."""
    add(epfd, evfd, unix.EPOLLIN | unix.EPOLLEXCLUSIVE)
    with pytest.raises(OSError) as info:
        unix.EpollCtl(
            epfd, unix.EPOLL_CTL_MOD, evfd, unix.EpollEvent(unix.EPOLLIN | unix.EPOLLEXCLUSIVE)
        )
    assert info.value.errno == errno.EINVAL


def test_ctl_add_with_null_event_is_efault(epfd: int, evfd: int) -> None:
    """ADD/MOD need an event: ``None`` is passed as NULL and the kernel says EFAULT."""
    for op in (unix.EPOLL_CTL_ADD, unix.EPOLL_CTL_MOD):
        with pytest.raises(OSError) as info:
            unix.EpollCtl(epfd, op, evfd, None)
        assert info.value.errno == errno.EFAULT
    assert epoll_interest(epfd) == []


def test_ctl_bad_op_is_einval(epfd: int, evfd: int) -> None:
    """An unknown op is EINVAL."""
    for op in (0, 4, -1, INT_MAX):
        with pytest.raises(OSError) as info:
            unix.EpollCtl(epfd, op, evfd, unix.EpollEvent(unix.EPOLLIN))
        assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize(
    "event",
    [
        unix.EPOLLIN,
        b"\x01" + bytes(11),
        "event",
        unix.Timespec(),
        ctypes.c_uint64(1),
        (unix.EpollEvent * 1)(),
        EventArray(1),
    ],
    ids=["int", "bytes", "str", "Timespec", "c_uint64", "ctypes-array", "EventArray"],
)
def test_ctl_wrong_event_type(epfd: int, evfd: int, event: object) -> None:
    """Only an EpollEvent (or None) is handed to the kernel as ``struct epoll_event *``."""
    with pytest.raises(TypeError):
        unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, event)  # type: ignore[arg-type]
    assert epoll_interest(epfd) == []


def test_ctl_accepts_an_array_entry(epfd: int, evfd: int) -> None:
    """An entry of an EventArray is an EpollEvent: it can be passed to EpollCtl."""
    arr = EventArray(2)
    arr[1].Events = unix.EPOLLIN
    arr[1].Data = 99
    unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, arr[1])
    assert epoll_interest(epfd)[0][2] == 99


@pytest.mark.parametrize("position", ["epfd", "op", "fd"])
def test_ctl_integer_arguments(epfd: int, evfd: int, position: str) -> None:
    """Each int argument: TypeError if not an integer, OverflowError beyond a C int."""
    good = {"epfd": epfd, "op": unix.EPOLL_CTL_ADD, "fd": evfd}
    event = unix.EpollEvent(unix.EPOLLIN)
    for bad in (1.0, "3", None):
        with pytest.raises(TypeError):
            unix.EpollCtl(**{**good, position: bad}, event=event)
    for huge in (INT_MAX + 1, INT_MIN - 1, 2**64):
        with pytest.raises(OverflowError):
            unix.EpollCtl(**{**good, position: huge}, event=event)
    assert epoll_interest(epfd) == []


# --------------------------------------------------------------------------
# EpollWait


@pytest.mark.timeout(30)
def test_wait_fills_event_array(epfd: int) -> None:
    """epoll_wait into an EventArray: the count, then the entries via ready()."""
    with readable_eventfds(3) as fds:
        for fd in fds:
            add(epfd, fd)
        arr = EventArray(8)
        n = unix.EpollWait(epfd, arr, 0)
        assert n == 3
        assert sorted(arr.ready(n)) == [(fd, unix.EPOLLIN) for fd in sorted(fds)]


@pytest.mark.timeout(30)
def test_wait_fills_ctypes_array(epfd: int) -> None:
    """A plain ``(EpollEvent * n)()`` works as Go's ``[]EpollEvent``."""
    with readable_eventfds(3) as fds:
        for fd in fds:
            add(epfd, fd)
        arr = (unix.EpollEvent * 4)()
        n = unix.EpollWait(epfd, arr, 0)
        assert n == 3
        assert sorted((arr[i].Fd, arr[i].Events) for i in range(n)) == sorted(
            (fd, unix.EPOLLIN) for fd in fds
        )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("length", [1, 3, 7])
def test_wait_asks_for_at_most_the_buffer_length(epfd: int, length: int) -> None:
    """With more ready fds than entries, n == len(buffer) and nothing past it is written.

    The buffer is a view on the start of a larger array filled with a sentinel;
    the kernel must leave the rest of that array alone.
    """
    with readable_eventfds(12) as fds:
        for fd in fds:
            add(epfd, fd)
        backing = (unix.EpollEvent * 16)()
        for entry in backing:
            entry.Events, entry.Data = 0xA5A5A5A5, 0x5A5A5A5A5A5A5A5A
        view = (unix.EpollEvent * length).from_buffer(backing)
        assert unix.EpollWait(epfd, view, 0) == length
        assert all(view[i].Fd in fds for i in range(length))
        assert all((e.Events, e.Data) == (0xA5A5A5A5, 0x5A5A5A5A5A5A5A5A) for e in backing[length:])
        del view
        assert unix.EpollWait(epfd, EventArray(length), 0) == length


@pytest.mark.timeout(30)
def test_wait_rotates_level_triggered_entries(epfd: int) -> None:
    """A level-triggered fd that was reported goes to the back of the ready list:
    a buffer smaller than the ready set starves no one (epoll(7), "starvation")."""
    with readable_eventfds(8) as fds:
        for fd in fds:
            add(epfd, fd)
        arr = EventArray(3)
        seen: list[int] = []
        for _ in range(3):
            n = unix.EpollWait(epfd, arr, 0)
            assert n == 3
            seen += [fd for fd, _ in arr.ready(n)]
        assert set(seen) == set(fds)
        assert len(set(seen[:8])) == 8


def test_wait_nothing_ready_returns_zero(epfd: int) -> None:
    """Timeout 0 (poll) and a short timeout both return 0 when nothing is ready."""
    arr = EventArray(2)
    assert unix.EpollWait(epfd, arr, 0) == 0
    assert unix.EpollWait(epfd, arr, 1) == 0


@pytest.mark.timeout(30)
def test_wait_releases_the_gil_while_blocked(epfd: int, evfd: int) -> None:
    """A thread blocked in EpollWait(-1) lets another thread run and wake it."""
    other = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        add(epfd, other)
        tid = threading.get_native_id()

        def wake() -> None:
            wait_until_in_epoll_wait(tid)
            os.eventfd_write(other, 1)

        thread = threading.Thread(target=wake)
        thread.start()
        arr = EventArray(2)
        try:
            n = unix.EpollWait(epfd, arr, 20_000)
        finally:
            thread.join()
        assert list(arr.ready(n)) == [(other, unix.EPOLLIN)]
    finally:
        os.close(other)


def test_wait_empty_ctypes_array_is_einval(epfd: int) -> None:
    """maxevents must be positive: a zero-length buffer is EINVAL from the kernel."""
    with pytest.raises(OSError) as info:
        unix.EpollWait(epfd, (unix.EpollEvent * 0)(), 0)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize(
    "buffer",
    [
        [unix.EpollEvent()],
        bytearray(48),
        None,
        unix.EpollEvent(),
        (ctypes.c_int * 12)(),
        (unix.Timespec * 4)(),
        ((unix.EpollEvent * 2) * 2)(),
        memoryview(bytearray(48)),
    ],
    ids=["list", "bytearray", "None", "EpollEvent", "c_int-array", "Timespec-array", "2d", "mv"],
)
def test_wait_wrong_buffer_type(epfd: int, buffer: object) -> None:
    """Only an EventArray or a ctypes array of EpollEvent may be written by the kernel."""
    for wait in (unix.EpollWait, lambda e, b, t: unix.EpollPwait(e, b, t, None)):
        with pytest.raises(TypeError):
            wait(epfd, buffer, 0)  # type: ignore[arg-type]


def test_wait_non_epoll_and_closed_fd(evfd: int, closed_fd: int) -> None:
    """Waiting on something that is not an epoll fd is EINVAL; on a closed fd, EBADF."""
    arr = EventArray(1)
    with pytest.raises(OSError) as info:
        unix.EpollWait(evfd, arr, 0)
    assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError) as info:
        unix.EpollWait(closed_fd, arr, 0)
    assert info.value.errno == errno.EBADF


@pytest.mark.parametrize("position", ["epfd", "msec"])
def test_wait_integer_arguments(epfd: int, position: str) -> None:
    """epfd and msec: TypeError if not integers, OverflowError beyond a C int."""
    arr = EventArray(1)
    good = {"epfd": epfd, "msec": 0}
    for bad in (0.5, "0", None, [0]):
        with pytest.raises(TypeError):
            unix.EpollWait(events=arr, **{**good, position: bad})
        with pytest.raises(TypeError):
            unix.EpollPwait(events=arr, sigmask=None, **{**good, position: bad})
    for huge in (INT_MAX + 1, INT_MIN - 1, 2**63):
        with pytest.raises(OverflowError):
            unix.EpollWait(events=arr, **{**good, position: huge})
        with pytest.raises(OverflowError):
            unix.EpollPwait(events=arr, sigmask=None, **{**good, position: huge})


def test_failed_wait_does_not_keep_its_buffer_alive(closed_fd: int) -> None:
    """An error leaves no reference cycle behind: the buffer is freed at once, not at
    the next garbage collection (which matters for large or mmap-backed buffers)."""
    gc.disable()
    try:
        arr = EventArray(4)
        ref = weakref.ref(arr)
        with pytest.raises(OSError):
            unix.EpollWait(closed_fd, arr, 0)
        del arr
        assert ref() is None
    finally:
        gc.enable()


# --------------------------------------------------------------------------
# EpollPwait: the signal mask.


def proc_status_mask(tid: int, field: str) -> int:
    """A signal-set field (``SigBlk``, ``SigPnd``) of thread ``tid``, from /proc."""
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no {field} in /proc/self/task/{tid}/status")


def sigbit(signum: int) -> int:
    return 1 << (signum - 1)


def wait_for(condition: Callable[[], bool], bound: float = 20.0) -> bool:
    """Poll ``condition`` until true (or ``bound`` seconds: a liveness bound only)."""
    pause = threading.Event()
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.001)
    return True


@pytest.fixture
def sigusr1_log() -> Iterator[list[int]]:
    """A Python handler for SIGUSR1 that records deliveries; restored afterwards."""
    log: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: log.append(signum))
    try:
        yield log
    finally:
        signal.signal(signal.SIGUSR1, old)


@pytest.mark.timeout(60)
def test_pwait_blocks_masked_signal_during_wait(epfd: int, sigusr1_log: list[int]) -> None:
    """A signal in ``sigmask`` stays pending while epoll_pwait sleeps, and is delivered
    once the call returns and the thread's own mask is back.

    A helper thread watches the waiting thread in /proc: once SIGUSR1 shows in its
    blocked set (so it is inside epoll_pwait), it sends SIGUSR1 to that thread,
    sees it pending, then wakes the wait by making an eventfd readable.
    """
    waker = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    tid, ident = threading.get_native_id(), threading.get_ident()
    seen: dict[str, bool] = {}
    bit = sigbit(signal.SIGUSR1)

    def helper() -> None:
        try:
            seen["masked"] = wait_for(lambda: bool(proc_status_mask(tid, "SigBlk") & bit))
            signal.pthread_kill(ident, signal.SIGUSR1)
            seen["pending"] = wait_for(lambda: bool(proc_status_mask(tid, "SigPnd") & bit))
            seen["handled_early"] = bool(sigusr1_log)
        finally:
            os.eventfd_write(waker, 1)

    try:
        add(epfd, waker)
        assert not signal.pthread_sigmask(signal.SIG_BLOCK, []) & {signal.SIGUSR1}
        thread = threading.Thread(target=helper)
        thread.start()
        arr = EventArray(2)
        try:
            n = unix.EpollPwait(epfd, arr, 30_000, [signal.SIGUSR1])
        finally:
            thread.join()
        # The wait ended because the eventfd became readable, not by EINTR.
        assert list(arr.ready(n)) == [(waker, unix.EPOLLIN)]
        assert seen == {"masked": True, "pending": True, "handled_early": False}
        # pthread_sigmask runs pending handlers; the mask is the old one again.
        assert signal.SIGUSR1 not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        assert sigusr1_log == [signal.SIGUSR1]
    finally:
        os.close(waker)


@pytest.mark.timeout(60)
def test_pwait_unmasked_signal_interrupts(epfd: int, sigusr1_log: list[int]) -> None:
    """The control: with SIGUSR2 (not SIGUSR1) in ``sigmask``, SIGUSR1 interrupts the
    wait: InterruptedError, after the Python handler has run (Go hands EINTR back)."""
    tid, ident = threading.get_native_id(), threading.get_ident()
    seen: dict[str, bool] = {}

    def helper() -> None:
        blocked = sigbit(signal.SIGUSR2)
        seen["masked"] = wait_for(lambda: bool(proc_status_mask(tid, "SigBlk") & blocked))
        signal.pthread_kill(ident, signal.SIGUSR1)

    thread = threading.Thread(target=helper)
    thread.start()
    try:
        with pytest.raises(InterruptedError):
            unix.EpollPwait(epfd, EventArray(1), 30_000, [signal.SIGUSR2])
        assert sigusr1_log == [signal.SIGUSR1]
    finally:
        thread.join()
    assert seen == {"masked": True}
    assert signal.SIGUSR2 not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


@pytest.mark.parametrize(
    "sigmask",
    [
        None,
        [],
        [signal.SIGUSR1],
        {signal.SIGUSR1, signal.SIGUSR2},
        (int(signal.SIGTERM),),
        range(1, 65),
        (s for s in [signal.SIGINT]),
    ],
    ids=["None", "empty", "list", "set", "tuple", "all-64", "generator"],
)
def test_pwait_accepts_signal_iterables(epfd: int, evfd: int, sigmask: object) -> None:
    """Any iterable of signal numbers 1..64 (Signals members included) is a mask."""
    add(epfd, evfd)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    arr = EventArray(2)
    assert unix.EpollPwait(epfd, arr, 0, sigmask) == 1  # type: ignore[arg-type]
    assert list(arr.ready(1)) == [(evfd, unix.EPOLLIN)]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


@pytest.mark.parametrize("signum", [0, -1, 65, 1000, INT_MAX])
def test_pwait_bad_signal_number(epfd: int, signum: int) -> None:
    """Signal numbers outside 1..64 are ValueError before any system call."""
    for sigmask in ([signum], [signal.SIGUSR1, signum]):
        with pytest.raises(ValueError):
            unix.EpollPwait(epfd, EventArray(1), 0, sigmask)
        with pytest.raises(ValueError):
            unix.EpollPwait2(epfd, EventArray(1), 0, sigmask)


@pytest.mark.parametrize(
    ("sigmask", "error"),
    [
        ([2**31], OverflowError),
        ([-(2**40)], OverflowError),
        (["SIGUSR1"], TypeError),
        ([1.0], TypeError),
        ([None], TypeError),
        ("abc", TypeError),
        (b"\x01", TypeError),
        (10, TypeError),
        (1.5, TypeError),
    ],
)
def test_pwait_bad_sigmask_type(epfd: int, sigmask: object, error: type[Exception]) -> None:
    """A mask that is not an iterable of C ints is refused with TypeError/OverflowError."""
    with pytest.raises(error):
        unix.EpollPwait(epfd, EventArray(1), 0, sigmask)  # type: ignore[arg-type]
    with pytest.raises(error):
        unix.EpollPwait2(epfd, EventArray(1), 0, sigmask)  # type: ignore[arg-type]


def test_pwait_refuses_masks_that_never_end(epfd: int) -> None:
    """A ctypes pointer (whose iteration runs through memory it does not own) and an
    endless iterator are refused, not read forever (found by the fuzzer: a hang)."""
    with pytest.raises(TypeError):
        unix.EpollPwait(epfd, EventArray(1), 0, ctypes.pointer(unix.EpollEvent()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="more than"):
        unix.EpollPwait2(epfd, EventArray(1), 0, itertools.count(1))


def test_pwait_restores_mask_after_failure(closed_fd: int) -> None:
    """A failing epoll_pwait (EBADF) leaves the thread's signal mask as it was."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    with pytest.raises(OSError) as info:
        unix.EpollPwait(closed_fd, EventArray(1), 0, [signal.SIGUSR1, signal.SIGTERM])
    assert info.value.errno == errno.EBADF
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


# --------------------------------------------------------------------------
# EpollPwait2: the nanosecond timeout.


@pytest.fixture
def pwait2() -> None:
    """Skip where libc has no epoll_pwait2 (ENOSYS is tested separately)."""
    if _ffi.epoll_pwait2 is None:
        pytest.skip("this libc has no epoll_pwait2 (glibc < 2.35)")


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("pwait2")
def test_pwait2_none_timeout_blocks_until_ready(epfd: int, evfd: int) -> None:
    """``timeout=None`` is a NULL timespec: wait until something is ready."""
    add(epfd, evfd)
    arr = EventArray(2)
    assert unix.EpollPwait2(epfd, arr, None, None) == 1
    assert list(arr.ready(1)) == [(evfd, unix.EPOLLIN)]


@pytest.mark.usefixtures("pwait2")
@pytest.mark.parametrize(
    "timeout",
    [0, 1, 1_000_000, unix.Timespec(0, 0), unix.Timespec(Sec=0, Nsec=500), "nsec"],
    ids=["0ns", "1ns", "1ms", "Timespec0", "Timespec500ns", "NsecToTimespec"],
)
def test_pwait2_timeouts_on_empty_set(epfd: int, timeout: object) -> None:
    """Zero and short timeouts, as int ns or Timespec, return 0 when nothing is ready."""
    if timeout == "nsec":
        timeout = unix.NsecToTimespec(1500)
    assert unix.EpollPwait2(epfd, EventArray(1), timeout, None) == 0  # type: ignore[arg-type]
    assert unix.EpollPwait2(epfd, EventArray(1), timeout, [signal.SIGUSR1]) == 0  # type: ignore[arg-type]


@pytest.mark.usefixtures("pwait2")
def test_pwait2_ready_with_timeout(epfd: int, evfd: int) -> None:
    """With something ready, any valid timeout returns it at once, even a huge one."""
    add(epfd, evfd)
    for timeout in (0, 10**9, unix.Timespec(1, 0), (2**63 - 1) * 10**9 + 999_999_999):
        arr = EventArray(1)
        assert unix.EpollPwait2(epfd, arr, timeout, None) == 1
        assert list(arr.ready(1)) == [(evfd, unix.EPOLLIN)]


@pytest.mark.usefixtures("pwait2")
@pytest.mark.parametrize(
    "timeout",
    [-1, -(10**18), unix.Timespec(-1, 0), unix.Timespec(0, -1), unix.Timespec(0, 10**9)],
    ids=["-1ns", "-1e18ns", "negative-sec", "negative-nsec", "nsec-1e9"],
)
def test_pwait2_invalid_timeout_is_einval(epfd: int, timeout: object) -> None:
    """A negative or malformed timeout is EINVAL (the kernel's timespec64_valid)."""
    with pytest.raises(OSError) as info:
        unix.EpollPwait2(epfd, EventArray(1), timeout, None)  # type: ignore[arg-type]
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("timeout", [0.5, 1.0, "1", b"1", [0], unix.Rlimit(), float("nan")])
def test_pwait2_timeout_wrong_type(epfd: int, timeout: object) -> None:
    """Only a Timespec, an int of nanoseconds or None is a timeout."""
    with pytest.raises(TypeError):
        unix.EpollPwait2(epfd, EventArray(1), timeout, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [2**63 * 10**9, 2**64 * 10**9, 2**200])
def test_pwait2_timeout_too_large(epfd: int, timeout: int) -> None:
    """Nanoseconds that do not fit a ``struct timespec`` are OverflowError, not truncated."""
    with pytest.raises(OverflowError):
        unix.EpollPwait2(epfd, EventArray(1), timeout, None)


def test_pwait2_without_libc_support_is_enosys(epfd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where libc lacks epoll_pwait2 the call is ENOSYS, as a missing syscall would be."""
    monkeypatch.setattr(_ffi, "epoll_pwait2", None)
    with pytest.raises(OSError) as info:
        unix.EpollPwait2(epfd, EventArray(1), 0, None)
    assert info.value.errno == errno.ENOSYS


def test_pwait2_wrong_buffer_and_epfd(epfd: int, closed_fd: int) -> None:
    """EpollPwait2 checks its buffer and epfd like EpollWait does."""
    with pytest.raises(TypeError):
        unix.EpollPwait2(epfd, [unix.EpollEvent()], 0, None)  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        unix.EpollPwait2(2**31, EventArray(1), 0, None)
    with pytest.raises(TypeError):
        unix.EpollPwait2(float(epfd), EventArray(1), 0, None)  # type: ignore[arg-type]
    with pytest.raises(OSError) as info:
        unix.EpollPwait2(epfd, (unix.EpollEvent * 0)(), 0, None)
    assert info.value.errno == errno.EINVAL
    if _ffi.epoll_pwait2 is not None:
        with pytest.raises(OSError) as info:
            unix.EpollPwait2(closed_fd, EventArray(1), 0, None)
        assert info.value.errno == errno.EBADF


@pytest.mark.parametrize(
    ("nsec", "sec", "ns"),
    [
        (0, 0, 0),
        (1, 0, 1),
        (999_999_999, 0, 999_999_999),
        (1_500_000_000, 1, 500_000_000),
        (-1, -1, 999_999_999),
        (-1_500_000_000, -2, 500_000_000),
    ],
)
def test_nsec_to_timespec(nsec: int, sec: int, ns: int) -> None:
    """Go's NsecToTimespec: Nsec always in 0..999999999, Sec rounded down."""
    spec = unix.NsecToTimespec(nsec)
    assert (spec.Sec, spec.Nsec) == (sec, ns)


@pytest.mark.parametrize("nsec", [1.5, "1", None])
def test_nsec_to_timespec_wrong_type(nsec: object) -> None:
    """NsecToTimespec takes integers only."""
    with pytest.raises(TypeError):
        unix.NsecToTimespec(nsec)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Getrlimit / Setrlimit


def test_getrlimit_matches_resource_module() -> None:
    """Getrlimit fills an Rlimit with what getrlimit(2) says, RLIM_INFINITY as 2**64-1."""
    for res in (resource.RLIMIT_NOFILE, resource.RLIMIT_CPU, resource.RLIMIT_STACK):
        rlim = unix.Rlimit()
        unix.Getrlimit(res, rlim)
        soft, hard = resource.getrlimit(res)
        infinity = resource.RLIM_INFINITY
        assert rlim.Cur == (unix.RLIM_INFINITY if soft == infinity else soft)
        assert rlim.Max == (unix.RLIM_INFINITY if hard == infinity else hard)
    assert unix.RLIM_INFINITY == 2**64 - 1


def test_setrlimit_current_value_is_a_no_op() -> None:
    """Setting RLIMIT_NOFILE to what it is succeeds and changes nothing."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    rlim = unix.Rlimit()
    unix.Getrlimit(unix.RLIMIT_NOFILE, rlim)
    unix.Setrlimit(unix.RLIMIT_NOFILE, rlim)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before


@pytest.mark.parametrize("func", [unix.Getrlimit, unix.Setrlimit])
def test_rlimit_argument_types(func: Callable[[int, unix.Rlimit], None]) -> None:
    """The second argument must be an Rlimit; the resource an integer in range."""
    for bad in (None, (1, 2), [1, 2], unix.Timespec(), 5):
        with pytest.raises(TypeError):
            func(unix.RLIMIT_NOFILE, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        func("nofile", unix.Rlimit())  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        func(2**40, unix.Rlimit())
    with pytest.raises(ValueError):
        func(1000, unix.Rlimit(1, 1))


# Runs in a child: lowering RLIMIT_NOFILE must not touch the test process.
RLIMIT_CHILD = """
import json, os, sys
from rawepoll import unix
nr_open = int(sys.argv[1])
NOFILE = unix.RLIMIT_NOFILE

def get():
    rlim = unix.Rlimit()
    unix.Getrlimit(NOFILE, rlim)
    return [rlim.Cur, rlim.Max]

def outcome(cur, max_):
    try:
        unix.Setrlimit(NOFILE, unix.Rlimit(Cur=cur, Max=max_))
    except Exception as exc:
        return type(exc).__name__
    return "ok"

report = {"start": get()}
cur, hard = report["start"]
unix.Setrlimit(NOFILE, unix.Rlimit(Cur=64, Max=hard))
report["lowered"] = get()
fds = []
try:
    for _ in range(200):
        fds.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
except OSError as exc:
    report["errno"] = exc.errno
report["highest"] = max(fds)
for fd in fds:
    os.close(fd)
unix.Setrlimit(NOFILE, unix.Rlimit(Cur=cur, Max=hard))
report["restored"] = get()
fds = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in range(80)]
report["highest_after"] = max(fds)
for fd in fds:
    os.close(fd)
report["soft_above_hard"] = outcome(hard + 1, hard)
report["above_nr_open"] = outcome(nr_open + 1, nr_open + 1)
report["end"] = get()
print(json.dumps(report))
"""


@pytest.mark.timeout(60)
def test_setrlimit_lower_then_restore_in_child() -> None:
    """Lowering the soft RLIMIT_NOFILE takes effect at once (EMFILE at the limit);
    restoring it works; soft above hard is ValueError (EINVAL); a hard limit above
    fs.nr_open is EPERM -> PermissionError, as Go's unix.Setrlimit returns EPERM."""
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    result = run_python(RLIMIT_CHILD, str(nr_open))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    start = report["start"]
    assert report["lowered"] == [64, start[1]]
    assert report["errno"] == errno.EMFILE
    assert report["highest"] == 63
    assert report["restored"] == start
    assert report["highest_after"] >= 64
    assert report["soft_above_hard"] == "ValueError"
    assert report["above_nr_open"] == "PermissionError"
    assert report["end"] == start


def has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 24))
    return False


RAISE_HARD_CHILD = """
from rawepoll import unix
rlim = unix.Rlimit()
unix.Getrlimit(unix.RLIMIT_NOFILE, rlim)
try:
    unix.Setrlimit(unix.RLIMIT_NOFILE, unix.Rlimit(Cur=rlim.Max, Max=rlim.Max + 1))
except Exception as exc:
    print(type(exc).__name__, getattr(exc, "errno", None))
else:
    print("ok", None)
"""


@pytest.mark.timeout(60)
def test_setrlimit_raising_hard_limit_needs_cap_sys_resource() -> None:
    """Raising the hard limit is EPERM -> PermissionError without CAP_SYS_RESOURCE
    (this machine's case, verified from /proc), and allowed with it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    if hard >= nr_open:
        pytest.skip("the hard limit is already fs.nr_open")
    result = run_python(RAISE_HARD_CHILD)
    assert result.returncode == 0, result.stderr
    if has_cap_sys_resource():
        assert result.stdout.split() == ["ok", "None"]
    else:
        assert result.stdout.split() == ["PermissionError", str(errno.EPERM)]
