"""The few socket calls the server makes on bare descriptors, through ctypes.

The server keeps no ``socket.socket`` object per connection (an idle
connection must cost it no Python object), so it accepts and sets options on
plain ints.  ``accept4`` returns -1 and errno instead of raising, which keeps
the "drain until EAGAIN" accept loop free of exceptions.
"""

from __future__ import annotations

import ctypes
import errno
import socket
from typing import Final

from rawepoll import _libc

__all__ = ["accept4", "set_nodelay"]

_accept4 = _libc.function("accept4", blocking=False)  # non-blocking listener: never sleeps
_setsockopt = _libc.function("setsockopt", blocking=False)

_ACCEPT_FLAGS: Final = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_ONE: Final = ctypes.c_int(1)
_ONE_REF: Final = ctypes.byref(_ONE)
_INT_SIZE: Final = ctypes.sizeof(ctypes.c_int)

EAGAIN: Final = errno.EAGAIN


def accept4(listen_fd: int) -> int:
    """``accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)``: an fd, or ``-errno``."""
    fd: int = _accept4(listen_fd, None, None, _ACCEPT_FLAGS)
    return fd if fd >= 0 else -_libc.last_errno()


def set_nodelay(fd: int) -> None:
    """``TCP_NODELAY`` on a TCP socket: echo replies must not wait for Nagle."""
    _setsockopt(fd, socket.IPPROTO_TCP, socket.TCP_NODELAY, _ONE_REF, _INT_SIZE)
