"""Echo clients built on the standard library (``socket``, ``selectors``), never on rawepoll.

The code under test is never its own oracle.  Single-socket helpers read
exactly, round-trip, read to the end, reset; :class:`EchoClients` drives many
non-blocking clients through one selector, paced by bytes received, never by
the clock.  Every loop is bounded by a count or a deadline.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

IO_BOUND = 20.0  # any one client operation


class Connects(Protocol):
    """What the clients need of a server: a new blocking client socket."""

    def connect(
        self, *, bound: float = ..., rcvbuf: int | None = ..., sndbuf: int | None = ...
    ) -> socket.socket: ...


def recv_exactly(sock: socket.socket, n: int, bound: float = IO_BOUND) -> bytes:
    """Read until ``n`` bytes came (or EOF came first: fewer are returned)."""
    got = bytearray()
    deadline = time.monotonic() + bound
    while len(got) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"received {len(got)} of {n} bytes within {bound} s")
        sock.settimeout(remaining)
        try:
            data = sock.recv(min(n - len(got), 1 << 20))
        except TimeoutError:
            continue
        if not data:
            break
        got += data
    return bytes(got)


def roundtrip(sock: socket.socket, data: bytes, bound: float = IO_BOUND) -> None:
    """Send ``data`` (small enough to fit the buffers) and expect it back exactly."""
    sock.settimeout(bound)
    sock.sendall(data)
    echoed = recv_exactly(sock, len(data), bound)
    assert echoed == data, f"sent {len(data)} bytes, got {len(echoed)} back (or other bytes)"


def read_until_closed(sock: socket.socket, bound: float = IO_BOUND) -> tuple[bytes, str]:
    """Read to the end: ``(bytes, "eof")`` or ``(bytes, "reset")``; fail after ``bound`` s."""
    got = bytearray()
    deadline = time.monotonic() + bound
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no EOF within {bound} s ({len(got)} bytes read)")
        sock.settimeout(remaining)
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return bytes(got), "reset"
        if not data:
            return bytes(got), "eof"
        got += data


def send_until_blocked(sock: socket.socket, size: int, attempts: int) -> int:
    """Send up to ``size`` random bytes without blocking; stop at EAGAIN (bounded)."""
    view = memoryview(os.urandom(size))
    sent = 0
    for _ in range(attempts):
        try:
            sent += sock.send(view[sent:])
        except BlockingIOError:
            break
        if sent == len(view):
            break
    return sent


def rst_close(sock: socket.socket) -> None:
    """Close with SO_LINGER (on, 0 s): the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def first_difference(a: bytes | bytearray, b: bytes | bytearray) -> int:
    """The first offset where ``a`` and ``b`` differ (``min(len)`` if one is a prefix)."""
    block = 65536
    n = min(len(a), len(b))
    start = 0
    while start < n and a[start : start + block] == b[start : start + block]:
        start += block
    for i in range(start, min(start + block, n)):
        if a[i] != b[i]:
            return i
    return n


# ---------------------------------------------------------------- many clients at once


@dataclass(eq=False)
class _Peer:
    sock: socket.socket
    message: bytes
    cuts: list[int]  # where each chunk ends, ascending; the last is len(message)
    half_close: bool
    window: int | None  # at most this many bytes sent and not yet echoed
    view: memoryview = field(init=False)
    released: int = 0  # the client may send message[:released]
    sent: int = 0
    next_cut: int = 0
    shut: bool = False
    eof: bool = False
    error: str | None = None
    closed: bool = False
    mask: int = 0
    received: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.view = memoryview(self.message)

    @property
    def send_limit(self) -> int:
        if self.window is None:
            return self.released
        return min(self.released, len(self.received) + self.window)

    @property
    def done(self) -> bool:
        if self.eof:
            return True
        return not self.half_close and len(self.received) >= len(self.message)


@dataclass(frozen=True)
class Traffic:
    """How :class:`EchoClients` send, every field optional.

    ``cuts[i]`` lists where client ``i``'s chunks end (default: one chunk);
    ``order`` lists client indices, one per chunk, in the order the chunks may
    go (default: round robin).  ``half_close`` (for all, or per client):
    shut down writing after the last chunk.  ``window``: at most that many
    bytes sent but not yet echoed.  ``rcvbuf``/``sndbuf``: the sockets' buffers.
    """

    cuts: Sequence[Sequence[int]] | None = None
    order: Sequence[int] | None = None
    half_close: bool | Sequence[bool] = True
    window: int | None = None
    rcvbuf: int | None = None
    sndbuf: int | None = None


class EchoClients:
    """Non-blocking echo clients driven by one standard-library selector.

    Client ``i`` sends ``messages[i]`` in chunks ending at ``traffic.cuts[i]``;
    ``traffic.order`` lists client indices and says which client may send its
    next chunk next (a client's next chunk is released once its previous one is
    in the kernel).  All clients read all the time.  A client with
    ``half_close`` shuts down writing after its last chunk and is done at EOF;
    the others are done once their message is back.  With a ``window``, a
    client keeps at most that many bytes sent but not yet echoed (pacing by
    bytes received, not by the clock).  ``verify`` compares every byte.
    """

    def __init__(
        self, server: Connects, messages: Sequence[bytes], traffic: Traffic | None = None
    ) -> None:
        traffic = traffic or Traffic()
        cuts, half_close = traffic.cuts, traffic.half_close
        self.selector = selectors.DefaultSelector()
        self.peers: list[_Peer] = []
        flags = [half_close] * len(messages) if isinstance(half_close, bool) else half_close
        try:
            for i, message in enumerate(messages):
                peer_cuts = list(cuts[i]) if cuts is not None else [len(message)]
                assert peer_cuts == sorted(peer_cuts) and peer_cuts[-1] == len(message)
                sock = server.connect(rcvbuf=traffic.rcvbuf, sndbuf=traffic.sndbuf)
                sock.setblocking(False)
                peer = _Peer(sock, message, peer_cuts, flags[i], traffic.window)
                self.peers.append(peer)
                self._set_mask(peer, selectors.EVENT_READ)
        except BaseException:
            self.close()
            raise
        order = traffic.order
        if order is None:
            longest = max((len(p.cuts) for p in self.peers), default=0)
            order = [i for k in range(longest) for i, p in enumerate(self.peers) if k < len(p.cuts)]
        self.order = list(order)
        assert sorted(self.order) == sorted(i for i, p in enumerate(self.peers) for _ in p.cuts), (
            "order must name each client once per chunk"
        )
        self.pos = 0

    # -- one client

    def _set_mask(self, peer: _Peer, mask: int) -> None:
        if mask == peer.mask:
            return
        if peer.mask == 0:
            self.selector.register(peer.sock, mask, peer)
        elif mask == 0:
            self.selector.unregister(peer.sock)
        else:
            self.selector.modify(peer.sock, mask, peer)
        peer.mask = mask

    def _send(self, peer: _Peer) -> None:
        for _ in range(64):
            if peer.sent >= peer.send_limit or peer.error is not None:
                break
            try:
                peer.sent += peer.sock.send(peer.view[peer.sent : peer.send_limit])
            except BlockingIOError:
                break
            except OSError as exc:  # ECONNRESET, EPIPE: the verdict comes in verify()
                peer.error = f"send: {exc!r}"
                break
        if (
            peer.half_close
            and not peer.shut
            and peer.error is None
            and peer.next_cut == len(peer.cuts)
            and peer.sent == len(peer.message)
        ):
            try:
                peer.sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                peer.error = f"shutdown: {exc!r}"
            peer.shut = True

    def _recv(self, peer: _Peer) -> None:
        for _ in range(16):
            try:
                data = peer.sock.recv(1 << 18)
            except BlockingIOError:
                return
            except OSError as exc:
                peer.error = f"recv: {exc!r}"
                peer.eof = True
                return
            if not data:
                peer.eof = True
                return
            peer.received += data

    def _update(self, peer: _Peer) -> None:
        if peer.closed:
            return
        if peer.done:
            self._set_mask(peer, 0)
            peer.sock.close()
            peer.closed = True
            return
        mask = selectors.EVENT_READ
        if peer.sent < peer.send_limit and peer.error is None:
            mask |= selectors.EVENT_WRITE
        self._set_mask(peer, mask)

    def _advance(self) -> set[_Peer]:
        """Release chunks in ``order`` while each named client has sent its last one."""
        touched = set()
        while self.pos < len(self.order):
            peer = self.peers[self.order[self.pos]]
            if peer.sent < peer.released and peer.error is None and not peer.closed:
                break
            peer.released = peer.cuts[peer.next_cut]
            peer.next_cut += 1
            self.pos += 1
            if not peer.closed:
                self._send(peer)
                touched.add(peer)
        return touched

    # -- all clients

    def pump(self, timeout: float) -> None:
        """One round: release what may go, wait up to ``timeout`` for readiness, serve it."""
        for peer in self._advance():
            self._update(peer)
        if not self.selector.get_map():
            threading.Event().wait(timeout)  # nothing left to wait on: pace the caller's loop
            return
        for key, events in self.selector.select(timeout):
            peer = key.data
            if events & selectors.EVENT_WRITE:
                self._send(peer)
            if events & selectors.EVENT_READ:
                self._recv(peer)
            self._update(peer)

    def all_done(self) -> bool:
        return self.pos == len(self.order) and all(p.closed for p in self.peers)

    def run(self, until: Callable[[], bool] | None = None, bound: float = 60.0) -> None:
        """Pump until ``until()`` (default: every client done); fail after ``bound`` s."""
        condition = until or self.all_done
        for peer in self.peers:
            self._update(peer)
        deadline = time.monotonic() + bound
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"echo clients unfinished after {bound} s: {self.progress()}")
            self.pump(0.1)

    def progress(self) -> str:
        done = sum(p.done for p in self.peers)
        sent = sum(p.sent for p in self.peers)
        received = sum(len(p.received) for p in self.peers)
        total = sum(len(p.message) for p in self.peers)
        errors = [p.error for p in self.peers if p.error]
        return (
            f"{done}/{len(self.peers)} done, {sent}/{total} bytes sent, {received} received,"
            f" chunk {self.pos}/{len(self.order)}, errors {errors[:3]}"
        )

    def verify(self) -> None:
        """Every client got exactly its own bytes back (then EOF, if it half-closed)."""
        problems = []
        for i, peer in enumerate(self.peers):
            if peer.received != peer.message:
                problems.append(
                    f"client {i}: sent {peer.sent}/{len(peer.message)}, received"
                    f" {len(peer.received)}, first difference at"
                    f" {first_difference(peer.received, peer.message)}, error {peer.error}"
                )
            elif peer.half_close and (not peer.eof or peer.error is not None):
                problems.append(f"client {i}: all bytes back but no clean EOF ({peer.error})")
        assert not problems, "\n".join(problems[:10]) + f"\n({len(problems)} clients wrong)"

    def close(self) -> None:
        for peer in self.peers:
            peer.sock.close()
        self.selector.close()

    def __enter__(self) -> EchoClients:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def echo_all(
    server: Connects, messages: Sequence[bytes], bound: float = 60.0, **traffic: Any
) -> None:
    """Echo ``messages`` through ``server`` concurrently and verify every byte (``traffic``:
    the fields of :class:`Traffic`)."""
    with EchoClients(server, messages, Traffic(**traffic)) as clients:
        clients.run(bound=bound)
        clients.verify()
