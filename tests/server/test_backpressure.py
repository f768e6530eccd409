"""Backpressure: a client that does not read cannot make the server buffer without bound.

The server stops reading a connection while its pending output is above
``--high-water``; then the kernel's buffers fill and the client's send blocks.
The client here sends without blocking and stops when it can no longer make
progress (no writability for a while: a bounded wait on an event that never
comes, which can only end the sending early, never fail the test by itself).
"""

from __future__ import annotations

import os
import selectors
import socket
import time
from collections.abc import Callable

import pytest
from support.clients import echo_all, first_difference, read_until_closed
from support.proc import status_bytes
from support.servers import MODES, Server

MB = 1 << 20
STALL_WAIT = 1.0  # no writability for this long = the client can no longer make progress
SMALL_BUFFER = 65536  # the client's own socket buffers, so that the server's side fills


def send_until_stalled(sock: socket.socket, view: memoryview, sent: int = 0) -> int:
    """Send ``view[sent:]`` without blocking until done or stalled; return the new offset."""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        for _ in range(1_000_000):
            if sent == len(view):
                return sent
            try:
                sent += sock.send(view[sent : sent + MB])
                continue
            except BlockingIOError:
                pass
            if not selector.select(STALL_WAIT):
                return sent
    raise AssertionError("send loop did not end")


def read_back(sock: socket.socket, view: memoryview, sent: int, bound: float = 90.0) -> None:
    """Read every byte back (sending the rest of ``view`` meanwhile), comparing as it comes."""
    received = 0
    deadline = time.monotonic() + bound
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while received < len(view):
            if time.monotonic() > deadline:
                raise AssertionError(f"{received} of {len(view)} bytes back within {bound} s")
            for _, events in selector.select(1.0):
                if events & selectors.EVENT_WRITE:
                    sent = send_more(sock, view, sent)
                    if sent == len(view):
                        selector.modify(sock, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    received = receive_more(sock, view, received)


def send_more(sock: socket.socket, view: memoryview, sent: int) -> int:
    """Send what the kernel takes of the next MB of ``view[sent:]``; return the new offset."""
    try:
        sent += sock.send(view[sent : sent + MB])
    except BlockingIOError:
        pass
    return sent


def receive_more(sock: socket.socket, view: memoryview, received: int) -> int:
    """Read what came, check it is ``view`` from ``received`` on; return the new offset."""
    try:
        data = sock.recv(MB)
    except BlockingIOError:
        return received
    if not data:
        raise AssertionError(f"EOF after {received} of {len(view)} bytes")
    if data != view[received : received + len(data)]:
        raise AssertionError(f"wrong bytes at [{received}, +{len(data)})")
    return received + len(data)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.timeout(120)
def test_unread_64mb_keeps_server_memory_bounded(server: Callable[..., Server], mode: str) -> None:
    srv = server("--mode", mode)
    echo_all(srv, [os.urandom(MB) for _ in range(2)])  # warm the loop's buffers up
    rss_before = status_bytes(srv.pid, "VmRSS")
    hwm_before = status_bytes(srv.pid, "VmHWM")

    view = memoryview(os.urandom(64 * MB))
    sock = srv.connect(rcvbuf=SMALL_BUFFER, sndbuf=SMALL_BUFFER)
    sock.setblocking(False)
    sent = send_until_stalled(sock, view)

    rss_grew = status_bytes(srv.pid, "VmRSS") - rss_before
    hwm_grew = status_bytes(srv.pid, "VmHWM") - hwm_before
    assert rss_grew < 32 * MB, f"server RSS grew {rss_grew / MB:.1f} MB ({sent / MB:.1f} MB in)"
    assert hwm_grew < 32 * MB, f"server peak RSS grew {hwm_grew / MB:.1f} MB"
    assert sent < len(view), "the server took all 64 MB though nobody read: no backpressure"

    # One stalled connection does not stall the others.
    echo_all(srv, [os.urandom(MB), os.urandom(1000)], bound=60)

    read_back(sock, view, sent)
    sock.setblocking(True)
    sock.shutdown(socket.SHUT_WR)
    assert read_until_closed(sock) == (b"", "eof")
    sock.close()
    assert status_bytes(srv.pid, "VmHWM") - hwm_before < 32 * MB
    assert srv.stop().clean, srv.describe()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.timeout(90)
def test_half_close_while_reading_is_paused(server: Callable[..., Server], mode: str) -> None:
    """Send until stalled, SHUT_WR, only then read: everything sent comes back, then EOF.

    The server sees the EOF only after it resumes reading, which it does only
    once the client drains the pending output below ``--low-water``.
    """
    srv = server("--mode", mode, "--high-water", "65536", "--low-water", "16384")
    view = memoryview(os.urandom(48 * MB))
    sock = srv.connect(rcvbuf=SMALL_BUFFER, sndbuf=SMALL_BUFFER)
    sock.setblocking(False)
    sent = send_until_stalled(sock, view)
    sock.shutdown(socket.SHUT_WR)
    sock.setblocking(True)
    data, how = read_until_closed(sock, bound=60)
    sock.close()
    assert how == "eof"
    if data != view[:sent]:
        at = first_difference(data, bytes(view[:sent]))
        raise AssertionError(f"sent {sent} bytes, got {len(data)} back, first difference at {at}")
    assert srv.stop().clean, srv.describe()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.timeout(90)
def test_tiny_water_marks_still_echo_everything(server: Callable[..., Server], mode: str) -> None:
    """With a 4 KB high-water mark reading pauses and resumes all the time: no byte is lost."""
    srv = server("--mode", mode, "--high-water", "4096", "--low-water", "1024")
    messages = [os.urandom(size) for size in (0, 1, 4095, 4096, 4097, 300_000, 2 * MB)]
    cuts = [sorted({len(m) // 3, len(m)}) for m in messages]
    echo_all(srv, messages, cuts=cuts, half_close=True, bound=80)
    assert srv.stop().clean, srv.describe()
