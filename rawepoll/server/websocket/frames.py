"""WebSocket frames (RFC 6455, section 5), sans-IO: bytes in, frames out; frames in, bytes out.

What the wire looks like::

    byte 0   FIN(1) RSV1-3(3) opcode(4)
    byte 1   MASK(1) length(7)         126: a u16 length follows; 127: a u64 length follows
    [4 bytes of masking key, if MASK]
    payload, XORed with the key repeated, if MASK

What a server must check of a client's frame, each a close with a status code:

* every client frame is masked (1002 otherwise); server frames never are;
* RSV bits are 0 unless an extension says otherwise (1002; none is negotiated here);
* opcodes 3-7 and 11-15 are reserved (1002);
* control frames (close 8, ping 9, pong 10) carry at most 125 bytes and are
  never fragmented (1002); they may come between the fragments of a message;
* the 64-bit length has its top bit clear, and lengths use the shortest form
  is *not* required of a sender (RFC 6455 5.2 says "the minimal number of
  bytes MUST be used" -- a MUST on the sender that receivers commonly do not
  enforce; this reader accepts longer forms, as browsers and wsproto do);
* a message larger than the configured maximum is refused (1009) as soon as
  its header says so, before its payload is read;
* a close frame's payload is empty or a 2-byte status code (a valid one:
  1000-1003, 1007-1014, 3000-4999) plus a UTF-8 reason (1002 / 1007).

Text messages must be valid UTF-8 (1007), checked across fragment
boundaries by the message layer (:mod:`rawepoll.server.websocket.protocol`).

Unmasking XORs the payload with the key as one big integer: CPython does
that in C, a byte at a time never runs in Python.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "MAX_CONTROL",
    "PING",
    "PONG",
    "TEXT",
    "FrameError",
    "close_frame",
    "encode",
    "encode_masked",
    "parse_close",
    "read_frame",
    "unmask",
    "valid_close_code",
]

CONTINUATION: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA
_KNOWN: Final = frozenset({CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG})
MAX_CONTROL: Final = 125

FIN: Final = 0x80
_RSV: Final = 0x70
_MASKED: Final = 0x80
_U16: Final = struct.Struct(">H")
_U64: Final = struct.Struct(">Q")
_CLOSE_CODE: Final = struct.Struct(">H")


class FrameError(Exception):
    """A frame (or message) the peer must not have sent: close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


def valid_close_code(code: int) -> bool:
    """Whether a close frame may carry ``code`` (RFC 6455 7.4, and the IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


# Two ways to XOR a payload with its repeated 4-byte key, measured with callgrind
# (instructions per call; CPython 3.11):
#
#   bytes     as one big integer       four strided translates
#   64        5,000                    16,400
#   4,096     150,000                  108,000
#
# The integer way converts bytes to an int and back (about 25 instructions a
# byte, the XOR itself is cheap); the strided way copies each quarter out and
# back (payload[i::4], translated by a table XORing with key byte i).  Below
# _STRIDED_FROM bytes the integer wins.
_STRIDED_FROM: Final = 1024
_XOR_TABLES: Final = [bytes(i ^ k for i in range(256)) for k in range(256)]
_REPEATS: dict[int, int] = {}  # n -> the int with a 1 at every 4th byte, n bytes long


def _repeat(n: int) -> int:
    repeat = _REPEATS.get(n)
    if repeat is None:
        if len(_REPEATS) >= 1024:  # messages of many sizes: keep the table bounded
            _REPEATS.clear()
        repeat = _REPEATS[n] = int.from_bytes(b"\x01\0\0\0" * ((n + 3) // 4), "little")
    return repeat


def unmask(payload: bytes | bytearray | memoryview, key: bytes | bytearray | memoryview) -> bytes:
    """``payload`` XOR the 4-byte ``key`` repeated (masking and unmasking are the same)."""
    n = len(payload)
    if n == 0:
        return b""
    if n < _STRIDED_FROM:
        value = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little") * _repeat(n)
        return (value & ((1 << (8 * n)) - 1)).to_bytes(n, "little")
    source = bytes(payload)
    out = bytearray(source)
    for i in range(4):
        out[i::4] = source[i::4].translate(_XOR_TABLES[key[i]])
    return bytes(out)


def _header(first: int, n: int, mask_bit: int) -> bytes:
    if n < 126:
        return bytes((first, mask_bit | n))
    if n < 65536:
        return bytes((first, mask_bit | 126)) + _U16.pack(n)
    return bytes((first, mask_bit | 127)) + _U64.pack(n)


def encode(opcode: int, payload: bytes | bytearray | memoryview, fin: bool = True) -> bytes:
    """A server frame: unmasked, FIN set unless ``fin`` is False."""
    return _header((FIN if fin else 0) | opcode, len(payload), 0) + bytes(payload)


def encode_masked(
    opcode: int, payload: bytes | bytearray | memoryview, key: bytes, fin: bool = True
) -> bytes:
    """A client frame, masked with the 4-byte ``key`` (for clients and tests)."""
    return _header((FIN if fin else 0) | opcode, len(payload), _MASKED) + key + unmask(payload, key)


def close_frame(code: int | None = None, reason: str = "") -> bytes:
    """A server close frame; ``None`` sends no status code (and then no reason)."""
    if code is None:
        return encode(CLOSE, b"")
    # Cut to fit a control frame -- between characters: half of one is invalid UTF-8 (1007).
    text = reason.encode()[: MAX_CONTROL - 2].decode("utf-8", "ignore").encode()
    return encode(CLOSE, _CLOSE_CODE.pack(code) + text)


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """``(code, reason)`` of a close frame's payload; ``FrameError`` if it is malformed."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise FrameError(1002, "a close frame's payload cannot be one byte")
    code = _CLOSE_CODE.unpack_from(payload)[0]
    if not valid_close_code(code):
        raise FrameError(1002, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(1007, "the close reason is not valid UTF-8") from None
    return code, reason


def _check(first: int, second: int, masked: bool) -> None:
    """The rules a frame's first two bytes can break (see the module docstring)."""
    opcode = first & 0x0F
    if first & _RSV:
        raise FrameError(1002, "reserved bits set without an extension")
    if opcode not in _KNOWN:
        raise FrameError(1002, f"reserved opcode {opcode}")
    if bool(second & _MASKED) != masked:
        raise FrameError(1002, "a client frame must be masked" if masked else "a masked frame")
    if opcode >= CLOSE:
        if second & 0x7F > MAX_CONTROL:
            raise FrameError(1002, "a control frame carries at most 125 bytes")
        if not first & FIN:
            raise FrameError(1002, "a control frame cannot be fragmented")


def _length(data: bytes | bytearray | memoryview, head: int, code: int) -> tuple[int, int] | None:
    """``(payload length, offset after the length)`` from the 7-bit ``code``; None if cut."""
    if code < 126:
        return code, head
    if code == 126:
        if len(data) - head < 2:
            return None
        return _U16.unpack_from(data, head)[0], head + 2
    if len(data) - head < 8:
        return None
    length: int = _U64.unpack_from(data, head)[0]
    if length >> 63:
        raise FrameError(1002, "a 64-bit length with its top bit set")
    return length, head + 8


def read_frame(
    data: bytes | bytearray | memoryview, pos: int, max_size: int, *, masked: bool = True
) -> tuple[int, int, int, bytes] | None:
    """One frame of ``data`` from ``pos``: ``(end, fin, opcode, payload)``, or None if incomplete.

    ``payload`` is unmasked.  ``masked=True`` reads a client's frames (the
    server's side), ``False`` a server's (the client's side).

    Raises:
        FrameError: the frame breaks the protocol (1002) or is larger than
            ``max_size`` (1009) -- known from its header alone.
    """
    if len(data) - pos < 2:
        return None
    first = data[pos]
    second = data[pos + 1]
    _check(first, second, masked)
    found = _length(data, pos + 2, second & 0x7F)
    if found is None:
        return None
    length, head = found
    if length > max_size and first & 0x0F < CLOSE:  # a message's; control frames are <= 125
        raise FrameError(1009, f"a frame of {length} bytes, above the limit of {max_size}")
    key = b""
    if masked:
        key = bytes(data[head : head + 4])
        head += 4
    end = head + length
    if end > len(data):
        return None
    payload = unmask(data[head:end], key) if masked else bytes(data[head:end])
    return end, first & FIN, first & 0x0F, payload
