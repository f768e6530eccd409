"""The binding's fuzzer: no argument, however wrong, may crash the interpreter.

rawepoll hands pointers and integers to C with ``argtypes`` unset, so a wrong
argument that slipped through would not be a TypeError but a segfault, a write
past a buffer or a hang.  This engine draws calls of every public function and
method -- ``rawepoll.unix``, ``EventArray``, ``Epoll``, ``EpollSelector``,
``SetLimit`` -- with hypothesis.  Run it in a child interpreter (as
``tests/test_fuzz.py`` and ``python -m hardening.fuzz`` do), so that a crash
is seen as the child's exit status (-11 for SIGSEGV) rather than taking the
caller down.

Each call gets fresh real descriptors (epoll, eventfd, pipe, socketpair, a
regular file, a directory, a closed number) and mostly valid arguments with
some replaced by garbage: None, NaN, infinities, huge and negative integers,
strings, bytes, lists, ctypes objects of the wrong type, objects whose
``fileno()``/``__index__``/``__iter__`` return garbage or raise, closed objects.
Every call must return or raise one of the documented exception types (or the
exception a user object itself raised).  Every epoll instance the child owns
has an always-readable eventfd registered, so no wait can block.

``python -m hardening.fuzzlib EXAMPLES SEED`` runs one fixed batch and prints
a JSON report: the way to reproduce a run of the test suite.
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
import inspect
import itertools
import json
import math
import operator
import os
import resource
import selectors
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

import rawepoll
from rawepoll import EventArray, unix

DOCUMENTED = (TypeError, ValueError, OverflowError, OSError, KeyError, IndexError, RuntimeError)
STDIO = frozenset({0, 1, 2})
CALL_WATCHDOG = 10.0  # seconds: a call that takes longer is reported as a hang


class UserError(Exception):
    """Raised by the fuzzer's own objects: propagating it unchanged is correct."""


class Ref:
    """A placeholder for a resource of the per-call pool (drawn before it exists)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


class FilenoReturns:
    """An object whose ``fileno()`` returns anything at all."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def fileno(self) -> Any:
        return self.value

    def __repr__(self) -> str:
        return f"FilenoReturns({self.value!r})"


class FilenoRaises:
    """An object whose ``fileno()`` raises."""

    def fileno(self) -> int:
        raise UserError("fileno")

    def __repr__(self) -> str:
        return "FilenoRaises()"


class IndexReturns:
    """An int-like object whose ``__index__`` returns anything at all."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __index__(self) -> Any:
        return self.value

    def __repr__(self) -> str:
        return f"IndexReturns({self.value!r})"


class IndexRaises:
    """An int-like object whose ``__index__`` raises."""

    def __index__(self) -> int:
        raise UserError("__index__")

    def __repr__(self) -> str:
        return "IndexRaises()"


class IterRaises:
    """An iterable (a would-be signal mask) that raises while iterated."""

    def __iter__(self) -> Any:
        yield 10
        raise UserError("__iter__")

    def __repr__(self) -> str:
        return "IterRaises()"


class ArrayAttr:
    """Something carrying an ``_array`` attribute, as ``EventArray`` does."""

    def __init__(self, array: Any) -> None:
        self._array = array

    def __repr__(self) -> str:
        return f"ArrayAttr({type(self._array).__name__})"


class ArrayRaises:
    """Something whose ``_array`` attribute raises on access."""

    @property
    def _array(self) -> Any:
        raise UserError("_array")

    def __repr__(self) -> str:
        return "ArrayRaises()"


class Pool:
    """Fresh real descriptors and objects for one call; ``close()`` releases them all."""

    def __init__(self, workdir: Path) -> None:
        self.fds: list[int] = []
        self.objects: dict[str, Any] = {}
        eventfd_flags = os.EFD_CLOEXEC | os.EFD_NONBLOCK
        guard = self._fd(os.eventfd(1, eventfd_flags))  # readable: no wait blocks
        self.values: dict[str, Any] = {"guard": guard}
        epfd = self._fd(unix.EpollCreate1(unix.EPOLL_CLOEXEC))
        unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, guard, unix.EpollEvent(unix.EPOLLIN, Fd=guard))
        self.values["epfd"] = epfd
        self.values["evfd"] = self._fd(os.eventfd(0, eventfd_flags))
        pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.values["pipe_r"], self.values["pipe_w"] = self._fd(pipe_r), self._fd(pipe_w)
        path = workdir / "regular"
        self.values["file_fd"] = self._fd(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC))
        self.values["dir_fd"] = self._fd(os.open(workdir, os.O_RDONLY | os.O_CLOEXEC))
        sock_a, sock_b = socket.socketpair()
        closed_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        closed_sock.close()
        self.objects.update(sock_a_obj=sock_a, sock_b_obj=sock_b)
        self.values.update(sock_a_obj=sock_a, sock_b_obj=sock_b, closed_sock=closed_sock)
        self.values["sock_a"] = sock_a.fileno()

        live = rawepoll.Epoll()
        live.register(guard, unix.EPOLLIN)
        closed = rawepoll.Epoll()
        closed.close()
        selector = rawepoll.EpollSelector()
        selector.register(guard, selectors.EVENT_READ)
        closed_selector = rawepoll.EpollSelector()
        closed_selector.close()
        self.objects.update(epoll=live, selector=selector)
        self.values.update(
            epoll=live, closed_epoll=closed, selector=selector, closed_selector=closed_selector
        )
        self.values["epoll_fd"] = live.fileno()
        self.values["selector_fd"] = selector.fileno()
        self.values["events1"] = rawepoll.EventArray(1)
        self.values["events4"] = rawepoll.EventArray(4)
        number = os.eventfd(0, os.EFD_CLOEXEC)
        os.close(number)
        self.values["closed_fd"] = number  # nothing is open under it

    def _fd(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def resolve(self, value: Any) -> Any:
        """``value`` with every Ref replaced by the pool's resource."""
        if isinstance(value, Ref):
            return self.values[value.name]
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.resolve(item) for item in value)
        if isinstance(value, FilenoReturns) and isinstance(value.value, Ref):
            return FilenoReturns(self.values[value.value.name])
        return value

    def close(self) -> None:
        for obj in self.objects.values():
            obj.close()
        for fd in self.fds:
            os.close(fd)


class Target(NamedTuple):
    """How to reach one public callable, and a strategy of valid values per argument.

    For a method, the first "argument" is the receiver (a live or closed object
    of the right class); it is never replaced by garbage.
    """

    func: Callable[..., Any]
    valid: list[Any]
    is_method: bool


def build_targets() -> dict[str, Target]:
    """Every public callable, with a strategy of *valid* values per argument."""

    def ref(*names: str) -> Any:
        return st.sampled_from([Ref(name) for name in names])

    fd = ref("evfd", "pipe_r", "pipe_w", "sock_a", "file_fd", "dir_fd", "closed_fd", "epfd")
    epfd = ref("epfd", "epfd", "epoll_fd", "evfd", "closed_fd", "file_fd")
    fileobj = fd | ref("sock_a_obj", "sock_b_obj", "closed_sock")
    mask = st.sampled_from(
        [
            unix.EPOLLIN,
            unix.EPOLLOUT,
            unix.EPOLLIN | unix.EPOLLOUT,
            unix.EPOLLIN | unix.EPOLLET,
            unix.EPOLLIN | unix.EPOLLONESHOT,
            unix.EPOLLIN | unix.EPOLLEXCLUSIVE,
            unix.EPOLLRDHUP | unix.EPOLLWAKEUP,
            0,
            0xFFFFFFFF,
        ]
    ) | st.integers(0, 2**32 - 1)
    event = st.builds(
        lambda events, data: unix.EpollEvent(Events=events, Data=data),
        mask,
        st.integers(0, 2**64 - 1),
    ) | st.sampled_from([None, Ref("events1")])
    op = st.sampled_from([unix.EPOLL_CTL_ADD, unix.EPOLL_CTL_DEL, unix.EPOLL_CTL_MOD])
    msec = st.sampled_from([0, 1, -1])
    buffer = ref("events1", "events4") | st.builds(
        lambda n: (unix.EpollEvent * n)(), st.integers(1, 8)
    )
    sigmask = st.none() | st.lists(st.integers(1, 64), max_size=4)
    timespec = st.builds(
        lambda s, n: unix.Timespec(Sec=s, Nsec=n),
        st.integers(0, 2),
        st.integers(0, 999_999_999),
    )
    timeout_ns = st.none() | st.integers(0, 2_000_000) | timespec
    seconds = st.none() | st.sampled_from([0, 0.0, 0.001, -1, -0.5]) | st.floats(0, 0.002)
    maxevents = st.sampled_from([-1, 1, 4, 1023])
    resource_ = st.sampled_from([unix.RLIMIT_NOFILE, resource.RLIMIT_CORE])
    rlimit = st.builds(
        lambda cur, max_: unix.Rlimit(Cur=cur, Max=max_),
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**64 - 1),
    ) | st.just(unix.Rlimit(Cur=unix.RLIM_INFINITY, Max=unix.RLIM_INFINITY))
    sel_events = st.sampled_from([selectors.EVENT_READ, selectors.EVENT_WRITE, 3])
    index = st.integers(-5, 5)
    epoll = ref("epoll", "closed_epoll")
    selector = ref("selector", "closed_selector")
    arr = ref("events1", "events4")

    functions: dict[str, tuple[Callable[..., Any], list[Any]]] = {
        "unix.EpollCreate": (unix.EpollCreate, [st.integers(-2, 2)]),
        "unix.EpollCreate1": (unix.EpollCreate1, [st.sampled_from([0, unix.EPOLL_CLOEXEC, 1])]),
        "unix.EpollCtl": (unix.EpollCtl, [epfd, op, fd, event]),
        "unix.EpollWait": (unix.EpollWait, [epfd, buffer, msec]),
        "unix.EpollPwait": (unix.EpollPwait, [epfd, buffer, msec, sigmask]),
        "unix.EpollPwait2": (unix.EpollPwait2, [epfd, buffer, timeout_ns, sigmask]),
        "unix.Getrlimit": (unix.Getrlimit, [resource_, rlimit]),
        "unix.Setrlimit": (unix.Setrlimit, [resource_, rlimit]),
        "unix.NsecToTimespec": (unix.NsecToTimespec, [st.integers()]),
        "unix.EpollEvent": (unix.EpollEvent, [mask]),
        "unix.Rlimit": (unix.Rlimit, [st.integers(0, 9), st.integers(0, 9)]),
        "unix.Timespec": (unix.Timespec, [st.integers(0, 9), st.integers(0, 9)]),
        "EventArray": (EventArray, [st.integers(1, 64)]),
        "Epoll": (rawepoll.Epoll, [st.sampled_from([-1, 1, 64]), st.just(0)]),
        "Epoll.fromfd": (rawepoll.Epoll.fromfd, [ref("epfd", "closed_fd") | st.just(-1)]),
        "EpollSelector": (rawepoll.EpollSelector, []),
        "SetLimit": (rawepoll.SetLimit, []),
    }
    methods: dict[str, tuple[Any, list[Any]]] = {
        "Epoll.register": (epoll, [fileobj, mask]),
        "Epoll.modify": (epoll, [fileobj, mask]),
        "Epoll.unregister": (epoll, [fileobj]),
        "Epoll.poll": (epoll, [seconds, maxevents]),
        "Epoll.wait": (epoll, [arr, seconds]),
        "Epoll.close": (epoll, []),
        "Epoll.fileno": (epoll, []),
        "Epoll.__enter__": (epoll, []),
        "Epoll.__exit__": (epoll, [st.none(), st.none(), st.none()]),
        "Epoll.__repr__": (epoll, []),
        "Epoll.closed": (epoll, None),
        "EpollSelector.register": (selector, [fileobj, sel_events, st.none()]),
        "EpollSelector.modify": (selector, [fileobj, sel_events, st.none()]),
        "EpollSelector.unregister": (selector, [fileobj]),
        "EpollSelector.select": (selector, [seconds]),
        "EpollSelector.get_key": (selector, [fileobj]),
        "EpollSelector.get_map": (selector, []),
        "EpollSelector.fileno": (selector, []),
        "EpollSelector.close": (selector, []),
        "EpollSelector.__enter__": (selector, []),
        "EpollSelector.__exit__": (selector, [st.none(), st.none(), st.none()]),
        "EventArray.__len__": (arr, []),
        "EventArray.__getitem__": (arr, [index]),
        "EventArray.__iter__": (arr, []),
        "EventArray.__repr__": (arr, []),
        "EventArray.ready": (arr, [st.integers(0, 4)]),
        "EventArray.data": (arr, [index]),
        "EventArray.array": (arr, None),
    }
    table = {name: Target(func, valid, False) for name, (func, valid) in functions.items()}
    for name, (receivers, args) in methods.items():
        attribute = name.split(".", 1)[1]
        if args is None:  # a property: read it
            table[name] = Target(_accessor(attribute, call=False), [receivers], True)
        else:
            table[name] = Target(_accessor(attribute, call=True), [receivers, *args], True)
    return table


def _accessor(attribute: str, *, call: bool) -> Callable[..., Any]:
    """``f(receiver, *args)`` calling ``receiver.attribute(*args)`` (or reading a property)."""

    def invoke(receiver: Any, *args: Any) -> Any:
        if call:
            return getattr(receiver, attribute)(*args)
        if args:
            raise TypeError(f"{attribute} is a property: it takes no arguments")
        return getattr(receiver, attribute)

    return invoke


def garbage() -> Any:
    """Values that are wrong nearly everywhere (and Refs to real, wrong resources)."""
    special_ints = [
        -1,
        -2,
        3,
        64,
        65,
        1023,
        1024,
        2**31 - 1,
        2**31,
        -(2**31),
        -(2**31) - 1,
        2**32 - 1,
        2**32,
        2**63 - 1,
        2**63,
        -(2**63),
        -(2**63) - 1,
        2**64 - 1,
        2**64,
        10**30,
        -(10**30),
        rawepoll.MAX_EVENTS + 1,
    ]
    # 0..2 are stdio; 2**16..MAX_EVENTS are valid sizes that would allocate gigabytes.
    ints = st.one_of(
        st.sampled_from(special_ints),
        st.integers(-(2**16), 2**16).filter(lambda i: i not in STDIO),
        st.integers(min_value=2**31),
        st.integers(max_value=-(2**31)),
    )
    floats = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e300, 0.5])
    refs = st.sampled_from(
        [
            Ref(name)
            for name in (
                "closed_fd",
                "file_fd",
                "dir_fd",
                "pipe_w",
                "epfd",
                "evfd",
                "closed_epoll",
                "epoll",
                "closed_selector",
                "selector",
                "closed_sock",
                "sock_a_obj",
                "events1",
                "events4",
            )
        ]
    )
    primitive = st.one_of(
        st.none(), st.booleans(), ints, floats, st.text(max_size=4), st.binary(max_size=16)
    )
    scalar = st.one_of(
        primitive,
        st.just(object()),
        st.just(Ellipsis),
        st.sampled_from(list(signal.Signals)),
        st.complex_numbers(max_magnitude=10),
    )
    weird = st.one_of(
        st.builds(FilenoReturns, scalar | refs),
        st.builds(FilenoRaises),
        st.builds(IndexReturns, scalar),
        st.builds(IndexRaises),
        st.builds(IterRaises),
        st.builds(ArrayRaises),
        st.builds(
            ArrayAttr,
            st.sampled_from(
                [
                    (unix.EpollEvent * 2)(),
                    (ctypes.c_int * 2)(),
                    (unix.EpollEvent * 0)(),
                    None,
                ]
            ),
        ),
    )
    ctypes_values = st.sampled_from(
        [
            "c_int",
            "c_double",
            "c_char_p",
            "int_array",
            "timespec_array",
            "empty_event_array",
            "event",
            "event_pointer",
            "bad_timespec",
            "overflow_timespec",
            "rlimit",
            "bytes_buffer",
            "event_array_2d",
            "event_array_1",
        ]
    ).map(make_ctypes)
    exotic = st.one_of(
        scalar,
        refs,
        weird,
        ctypes_values,
        st.lists(scalar | refs, max_size=3),
        st.tuples(scalar, scalar),
        st.dictionaries(st.integers(-2, 2), scalar, max_size=2),
        st.frozensets(st.integers(-2, 70), max_size=3),
    )
    # The everyday mistakes (None, a float, a huge int, a str) most of the time.
    return st.one_of(primitive, primitive, primitive, exotic)


def make_ctypes(kind: str) -> Any:
    """A fresh ctypes object of a kind the API does not (or only sometimes) take."""
    makers: dict[str, Callable[[], Any]] = {
        "c_int": lambda: ctypes.c_int(5),
        "c_double": lambda: ctypes.c_double(1.5),
        "c_char_p": lambda: ctypes.c_char_p(b"epoll"),
        "int_array": ctypes.c_int * 3,
        "timespec_array": unix.Timespec * 2,
        "empty_event_array": unix.EpollEvent * 0,
        "event": lambda: unix.EpollEvent(Events=unix.EPOLLIN, Data=2**64 - 1),
        "event_pointer": lambda: ctypes.pointer(unix.EpollEvent()),
        "bad_timespec": lambda: unix.Timespec(Sec=-1, Nsec=-1),
        "overflow_timespec": lambda: unix.Timespec(Sec=0, Nsec=10**9),
        "rlimit": lambda: unix.Rlimit(Cur=0, Max=0),
        "bytes_buffer": lambda: ctypes.create_string_buffer(64),
        "event_array_2d": (unix.EpollEvent * 2) * 2,
        "event_array_1": lambda: rawepoll.EventArray(1),
    }
    return makers[kind]()


def lowers_a_limit(args: list[Any]) -> bool:
    """Whether Setrlimit(*args) could lower a real limit of this process (skip it)."""
    if len(args) != 2 or not isinstance(args[1], unix.Rlimit):
        return False
    try:
        number = operator.index(args[0])
    except Exception:
        return False
    if args[1].Cur > args[1].Max:
        return False  # EINVAL, refused before anything changes
    rlim = unix.Rlimit()
    try:
        unix.Getrlimit(number, rlim)
    except (ValueError, OverflowError, OSError):
        return False  # not a resource: refused before anything changes
    return args[1].Cur < rlim.Cur or args[1].Max < rlim.Max


def open_fds() -> set[int]:
    """The descriptors open now (not counting the one that lists them)."""
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    still_open = set()
    for fd in listed:
        try:
            os.fstat(fd)
        except OSError:
            continue  # the directory fd of the listing itself, closed by now
        still_open.add(fd)
    return still_open


class Fuzzer:
    """Runs calls, each on a fresh Pool, and checks what comes out."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.calls: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.skipped = 0

    def run(self, name: str, func: Callable[..., Any], raw: list[Any]) -> None:
        pool = Pool(self.workdir)
        try:
            args = [pool.resolve(arg) for arg in raw]
            if name == "unix.Setrlimit" and lowers_a_limit(args):
                self.skipped += 1
                return
            before = open_fds()
            self.calls[name] += 1
            faulthandler.dump_traceback_later(CALL_WATCHDOG, exit=True)
            try:
                result = func(*args)
                if isinstance(result, Iterator):
                    result = list(itertools.islice(result, 100))  # ready(), __iter__: read it
            except (*DOCUMENTED, UserError) as exc:
                self.outcomes[type(exc).__name__] += 1
            except BaseException as exc:
                raise AssertionError(
                    f"{name}{tuple(raw)!r} raised {type(exc).__name__}: {exc}"
                ) from exc
            else:
                self.outcomes["returned"] += 1
                self.release(name, result, before, pool)
            finally:
                faulthandler.cancel_dump_traceback_later()
            for fd in STDIO:
                os.fstat(fd)  # stdio must survive every call
        finally:
            pool.close()

    def release(self, name: str, result: Any, before: set[int], pool: Pool) -> None:
        """Close what the call created, and never what it was merely handed."""
        if name in ("unix.EpollCreate", "unix.EpollCreate1") and isinstance(result, int):
            os.close(result)
        elif isinstance(result, rawepoll.Epoll) and result not in pool.values.values():
            if not result.closed and result.fileno() in before:
                result._epfd = -1  # wraps a descriptor it does not own: let go of it
            result.close()
        elif isinstance(result, rawepoll.EpollSelector) and result not in pool.values.values():
            result.close()


class BindingFuzz:
    """The fuzzer with its table of targets: batches of examples, one report.

    Use it as a context manager (it owns a scratch directory); :meth:`batch`
    runs a fixed number of hypothesis examples, :meth:`run_for` batches until
    a wall-clock budget is spent.  An undocumented exception propagates out of
    either, after hypothesis has shrunk it to a small failing example; the
    counters up to then stay readable through :meth:`report`.
    """

    ROUND = 200  # examples per batch of run_for (about a second each)

    def __init__(self, calls_per_example: int = 8) -> None:
        self.table = build_targets()
        self.junk = garbage()
        self.names = sorted(self.table)
        self.calls_per_example = calls_per_example
        self._tmp = tempfile.TemporaryDirectory()
        self.fuzzer = Fuzzer(Path(self._tmp.name))
        self.examples = 0
        self.open_before = open_fds()

    def __enter__(self) -> BindingFuzz:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._tmp.cleanup()

    def batch(self, examples: int, seed: int) -> None:
        """``examples`` hypothesis examples (up to 8 calls each), drawn from ``seed``."""
        table, junk, names, fuzzer = self.table, self.junk, self.names, self.fuzzer

        @hypothesis_seed(seed)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            self.examples += 1
            for _ in range(data.draw(st.integers(1, self.calls_per_example), label="calls")):
                name = data.draw(st.sampled_from(names), label="target")
                target = table[name]
                # Mostly one wrong argument among valid ones, so that every check is
                # reached; sometimes none (the happy path), sometimes several.
                first = int(target.is_method)  # a receiver is never garbage
                positions = range(first, len(target.valid))
                mode = data.draw(st.sampled_from(["one"] * 4 + ["none", "many"]), label="mode")
                if mode == "one" and positions:
                    wrong = {data.draw(st.sampled_from(positions), label="wrong")}
                elif mode == "many":
                    wrong = {i for i in positions if data.draw(st.booleans(), label="wrong")}
                else:
                    wrong = set()
                args = [
                    data.draw(junk if position in wrong else strategy)
                    for position, strategy in enumerate(target.valid)
                ]
                arity = data.draw(st.sampled_from(["exact"] * 8 + ["fewer", "more"]))
                if arity == "fewer" and len(args) > int(target.is_method):
                    args.pop()
                elif arity == "more":
                    args.append(data.draw(junk))
                fuzzer.run(name, target.func, args)

        run()

    def run_for(self, seconds: float, seed: int) -> None:
        """Batches of :attr:`ROUND` examples for ``seconds`` (see :func:`run_for`)."""
        run_for(self.batch, self.ROUND, seconds, seed)

    def report(self) -> dict[str, Any]:
        """Calls per target and their outcomes; descriptors the calls left open."""
        gc.collect()
        leaked = open_fds() - self.open_before
        fuzzer = self.fuzzer
        return {
            "examples": self.examples,
            "calls": sum(fuzzer.calls.values()),
            "per_target": dict(fuzzer.calls),
            "outcomes": dict(fuzzer.outcomes),
            "skipped": fuzzer.skipped,
            "targets": self.names,
            "public": public_callables(),
            "leaked_fds": {fd: _describe_fd(fd) for fd in sorted(leaked)},
        }


def run_for(
    batch: Callable[[int, int], None],
    examples: int,
    seconds: float,
    seed: int,
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """Call ``batch(examples, seed + i)`` for i = 0, 1, ... until ``seconds`` pass or ``stopped()``.

    A hypothesis run has a number of examples, not a duration: a budget is
    spent in batches, each drawn from its own seed, so a run is reproducible
    from its first seed (a longer run draws the same batches and then more).
    """
    deadline = time.monotonic() + seconds
    for offset in itertools.count():
        if time.monotonic() >= deadline or stopped():
            break
        batch(examples, seed + offset)


def _describe_fd(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def fuzz(examples: int, seed: int) -> dict[str, Any]:
    """One batch of ``examples`` from ``seed``; the report (raises on a finding)."""
    with BindingFuzz() as engine:
        engine.batch(examples, seed)
        return engine.report()


def public_callables() -> list[str]:
    """Every public callable the fuzzer must cover, named as in its table."""
    names = [f"unix.{name}" for name in unix.__all__ if callable(getattr(unix, name))]
    names += ["EventArray", "Epoll", "EpollSelector", "SetLimit", "Epoll.fromfd"]
    for cls_name in ("EventArray", "Epoll", "EpollSelector"):
        cls = getattr(rawepoll, cls_name)
        for attr, value in inspect.getmembers(cls):
            public = not attr.startswith("_") or attr in (
                "__enter__",
                "__exit__",
                "__len__",
                "__getitem__",
                "__iter__",
            )
            if public and attr != "fromfd" and (callable(value) or isinstance(value, property)):
                names.append(f"{cls_name}.{attr}")
    return sorted(set(names))


def main() -> None:
    faulthandler.enable()
    examples, seed = int(sys.argv[1]), int(sys.argv[2])
    print(json.dumps(fuzz(examples, seed)))


if __name__ == "__main__":
    main()
