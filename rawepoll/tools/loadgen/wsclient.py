"""A WebSocket client's side of the wire, without I/O: what ``rawepoll bench --protocol websocket``
sends and what it must get back.

* **The opening handshake** (RFC 6455, 4.1): ``GET <path>`` with a fresh
  ``Sec-WebSocket-Key`` (16 bytes of :func:`os.urandom`, base64) --
  :func:`upgrade_request`; the answer must be ``101`` with ``Upgrade:
  websocket``, ``Connection: Upgrade`` and ``Sec-WebSocket-Accept`` =
  base64(SHA-1(key + GUID)) (:func:`rawepoll.server.websocket.handshake.accept_key`)
  -- :func:`check_answer`.
* **Masked frames** (5.3): every frame a client sends is masked with a fresh
  32-bit key, "derived from a strong source of entropy" -- :class:`MaskKeys`
  draws them from :func:`os.urandom`, 16,384 at a time.  :class:`Framing`
  masks a payload with one big-integer XOR and says what its echo must be:
  the same payload in an unmasked frame of the same opcode, so the engine
  verifies the echo's header and payload byte for byte, as the raw TCP mode
  verifies its bytes.
* **Control frames** between the echoes (a heartbeat ``ping``; a ``close``
  when the server leaves) are not echo: :func:`control_length` says how long
  one is, and the engine answers a ping with a masked ``pong``.

**A fresh key per frame**, not one per connection (whose repetition over the
payload could be computed once): measured against that, end to end (the
engine's closed loop against ``rawepoll serve --protocol websocket``, 50
connections, 6 rounds alternating), it costs the load generator 1.05x per
message at 64 bytes (spread 0.91-1.29) and 1.13x at 4 KiB (1.01-1.22) --
a multiply and a mask per frame.  Kept: it is what RFC 6455 asks, and it
verifies more -- a server that unmasked every frame of a connection with its
first key would pass a client that never changes it (``docs/loadgen.md``).
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Sequence
from typing import Final

from rawepoll.server.websocket import frames
from rawepoll.server.websocket.handshake import accept_key
from rawepoll.tools.loadgen.payload import first_difference

__all__ = [
    "MAX_ANSWER",
    "Framing",
    "MaskKeys",
    "check_answer",
    "control_length",
    "new_key",
    "upgrade_request",
]

MAX_ANSWER: Final = 8192  # bytes of the server's answer to the upgrade request
KEYS_PER_DRAW: Final = 16384  # masking keys drawn from os.urandom at once
_KEYS: Final = struct.Struct(f"<{KEYS_PER_DRAW}I")


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes, base64."""
    return base64.b64encode(os.urandom(16)).decode()


def upgrade_request(host: str, path: str, key: str) -> bytes:
    """The opening handshake's request for ``path`` on ``host`` (the ``Host`` header)."""
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "\r\n"
    ).encode()


def check_answer(head: bytes, key: str) -> str | None:
    """What is wrong with the server's answer to an upgrade with ``key`` (None: nothing).

    ``head`` is the status line and the headers, up to and with the blank line.
    """
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1.") or status[1] != "101":
        return f"the upgrade was refused: {lines[0][:80]!r}"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket":
        return "the 101 answer lacks Upgrade: websocket"
    tokens = [token.strip().lower() for token in headers.get("connection", "").split(",")]
    if "upgrade" not in tokens:
        return "the 101 answer lacks Connection: Upgrade"
    if headers.get("sec-websocket-accept") != accept_key(key):
        return (
            f"Sec-WebSocket-Accept is {headers.get('sec-websocket-accept')!r}, "
            f"not {accept_key(key)!r} (base64(SHA-1(key + GUID)))"
        )
    return None


def control_length(data: bytes | bytearray, pos: int) -> int | None:
    """The length of the server's control frame at ``data[pos]`` (None: its header is cut).

    Raises:
        frames.FrameError: the bytes there are not a valid unmasked control frame.
    """
    if len(data) - pos < 2:
        return None
    first, second = data[pos], data[pos + 1]
    if first & 0x0F < frames.CLOSE or first & 0x0F not in (frames.CLOSE, frames.PING, frames.PONG):
        raise frames.FrameError(1002, f"not a control frame (first byte {first:#04x})")
    frames.read_frame(bytes(data[pos : pos + 2]), 0, frames.MAX_CONTROL, masked=False)  # checks
    return 2 + second


class MaskKeys:
    """Masking keys, as 32-bit integers, from a pool drawn from :func:`os.urandom`.

    ``pool.pop()`` while ``pool`` is not empty, else :meth:`take`: the
    engine's loop does it in place.
    """

    __slots__ = ("pool",)

    def __init__(self) -> None:
        self.pool: list[int] = []

    def take(self) -> int:
        """One fresh key (drawing a new batch when the pool is empty)."""
        if not self.pool:
            self.pool.extend(_KEYS.unpack(os.urandom(_KEYS.size)))
        return self.pool.pop()


class Framing:
    """Frames of ``size``-byte payloads: the client's masked ones and their unmasked echoes.

    ``head`` is the client frame's header up to its masking key (FIN, the
    opcode, MASK and the length); ``echo_head`` the echo's header; ``unit`` is
    the length of one echo frame.  ``repeat`` and ``low`` turn a key into its
    repetition over ``size`` bytes: ``key * repeat & low``.
    """

    __slots__ = ("echo_head", "head", "low", "repeat", "size", "unit")

    def __init__(self, size: int, opcode: int = frames.BINARY) -> None:
        self.size = size
        empty = b"\0" * size
        self.echo_head = frames.encode(opcode, empty)[:-size]
        self.head = frames.encode_masked(opcode, empty, b"\0\0\0\0")[: -size - 4]
        self.unit = len(self.echo_head) + size
        self.repeat = int.from_bytes(b"\x01\0\0\0" * ((size + 3) // 4), "little")
        self.low = (1 << (8 * size)) - 1

    def frame(self, payload: bytes, key: int) -> bytes:
        """``payload`` (``size`` bytes) in a client frame masked with ``key``."""
        masked = (int.from_bytes(payload, "little") ^ key * self.repeat) & self.low
        return self.head + key.to_bytes(4, "little") + masked.to_bytes(self.size, "little")

    def frames(self, payloads: Sequence[bytes], keys: MaskKeys) -> tuple[bytes, bytes]:
        """``(the client frames, their echoes)`` of ``payloads``, each frame with a fresh key."""
        take, echo_head = keys.take, self.echo_head
        sent = b"".join([self.frame(payload, take()) for payload in payloads])
        echoes = b"".join([echo_head + payload for payload in payloads])
        return sent, echoes

    def describe(
        self, got: bytes, want: bytes | bytearray, *, conn: int, seq: int, into: int
    ) -> str:
        """One sentence saying where an echo frame went wrong (as ``Payloads.describe_mismatch``).

        Args:
            got: the bytes just received.
            want: the bytes expected from the same point of the stream on.
            conn: the connection's number.
            seq: the message whose echo frame the first byte of ``got`` belongs to.
            into: how many bytes of that frame had arrived before ``got``.
        """
        at = first_difference(got, want)
        position = into + at
        message, byte = seq + position // self.unit, position % self.unit
        if at >= len(want):
            return (
                f"connection {conn}: more bytes arrived than were sent"
                f" (after the echo of message {message - (byte == 0)})"
            )
        head = len(self.echo_head)
        where = f"header byte {byte}" if byte < head else f"payload byte {byte - head}"
        seen, sent = got[at : at + 8].hex(), bytes(want[at : at + 8]).hex()
        return (
            f"connection {conn}: the echo frame of message {message} differs at {where} "
            f"(of {head} + {self.size}): got {seen}, sent {sent}"
        )
