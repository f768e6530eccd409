"""The listening socket: TCP over IPv4 or IPv6, or a Unix stream socket."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

__all__ = ["address_of", "describe", "open_listener", "remove_unix_path"]


def open_listener(
    host: str, port: int, unix_path: str | None, backlog: int
) -> tuple[socket.socket, bool]:
    """A bound, listening, non-blocking socket and whether it is TCP.

    Raises:
        OSError: the address is in use, not local, or not allowed.
    """
    if unix_path is not None:
        return _unix_listener(unix_path, backlog), False
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _canon, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock, True


def _unix_listener(path: str, backlog: int) -> socket.socket:
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale_socket(path: str) -> None:
    """Unlink ``path`` if it is a socket nobody listens on; refuse anything else."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # a leftover of a dead server
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path}: a server is listening there")


def describe(sock: socket.socket) -> str:
    """``127.0.0.1:8080``, ``[::1]:8080`` or ``unix:/path`` for the listening line."""
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def address_of(sock: socket.socket) -> tuple[str, str, str | None, int | None, str | None]:
    """``(address, family, host, port, path)`` of a listening socket, for the ``ready`` event.

    ``address`` is :func:`describe`'s text; ``family`` is ``inet``, ``inet6`` or ``unix``.
    """
    address = describe(sock)
    if sock.family == socket.AF_UNIX:
        return address, "unix", None, None, sock.getsockname()
    host, port = sock.getsockname()[:2]
    return address, "inet6" if sock.family == socket.AF_INET6 else "inet", host, port, None


def remove_unix_path(path: str | None) -> None:
    """Remove a Unix listener's socket file (``None``: TCP, nothing to do).

    Takes the path, not the socket: by shutdown time a worker has closed the
    listener, and a closed socket no longer knows its name.
    """
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
