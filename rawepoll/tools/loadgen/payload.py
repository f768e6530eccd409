"""Messages that carry their own proof: what ``rawepoll bench`` sends and expects back.

Message ``seq`` of connection ``conn`` is ``size`` bytes::

    offset  0   u32  conn   (little-endian; the connection's number in the whole run)
    offset  4   u64  seq    (0 for the first message of a connection, then 1, 2, ...)
    offset 12   body        bytes [o, o + size - 12) of one fixed pseudo-random block,
                            o = (conn * 7919 + seq * 104729) mod 4093

so no two messages of a run are alike (the header), and a body is neither
constant nor periodic.  Comparing every echoed byte with the bytes sent then
catches:

* a changed byte -- at its position;
* a lost byte -- every later byte moves up one place, and the random body makes
  the shifted bytes differ at once; lost bytes at the very end leave a message
  incomplete: the connection stalls or sees EOF;
* bytes out of order -- two chunks of a random body are equal with probability
  ``256**-len``;
* another connection's bytes (cross-talk) -- its header names the other
  connection and its body sits at another offset;
* extra or repeated bytes -- they arrive when nothing, or something else, was
  expected.

Messages shorter than the 12-byte header carry its first ``size`` bytes only,
which weakens the last three checks; use ``--size 12`` or more to have them all.

Nothing here does I/O: the engine sends ``message(conn, seq)`` and compares
what comes back with what it sent, and :meth:`Payloads.describe_mismatch` turns a
difference into a sentence.
"""

from __future__ import annotations

import random
import struct
from typing import Final

__all__ = ["HEADER", "Payloads", "first_difference"]

HEADER: Final = struct.Struct("<IQ")  # connection number, sequence number
SPAN: Final = 4093  # distinct body offsets (a prime)
_CONN_STEP: Final = 7919
_SEQ_STEP: Final = 104729
_SEED: Final = 0x5EED_EC40
_PLAUSIBLE_SEQ: Final = 1 << 40


class Payloads:
    """The messages of one run, all ``size`` bytes long.

    Args:
        size: bytes per message, at least 1.
    """

    __slots__ = ("_block", "_body", "_pack", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"message size must be at least 1 byte, got {size}")
        self.size = size
        self._body = max(0, size - HEADER.size)
        block = random.Random(_SEED).randbytes(self._body + SPAN)
        self._block = memoryview(block)
        self._pack = HEADER.pack

    def offset(self, conn: int, seq: int) -> int:
        """Where the body of message ``seq`` of ``conn`` starts in the block."""
        return (conn * _CONN_STEP + seq * _SEQ_STEP) % SPAN

    def message(self, conn: int, seq: int) -> bytes:
        """Message ``seq`` of connection ``conn``: ``size`` bytes."""
        body = self._body
        if body:
            start = (conn * _CONN_STEP + seq * _SEQ_STEP) % SPAN
            return self._pack(conn & 0xFFFFFFFF, seq) + self._block[start : start + body]
        return self._pack(conn & 0xFFFFFFFF, seq)[: self.size]

    def messages(self, conn: int, first: int, count: int) -> bytes:
        """Messages ``first`` .. ``first + count - 1`` of ``conn``, back to back."""
        message = self.message
        return b"".join([message(conn, seq) for seq in range(first, first + count)])

    def describe_mismatch(
        self,
        got: bytes | bytearray | memoryview,
        want: bytes | bytearray,
        *,
        conn: int,
        seq: int,
        into: int,
    ) -> str:
        """One sentence saying where an echo went wrong.

        Args:
            got: the bytes just received.
            want: the bytes expected from the same point of the stream on.
            conn: the connection's number.
            seq: the message the first byte of ``got`` belongs to.
            into: how many bytes of that message had arrived before ``got``.
        """
        size = self.size
        at = first_difference(got, want)
        position = into + at
        message, byte = seq + position // size, position % size
        if at >= len(want):
            return (
                f"connection {conn}: more bytes arrived than were sent"
                f" (after message {message - (byte == 0)})"
            )
        seen = bytes(got[at : at + 8]).hex()
        sent = bytes(want[at : at + 8]).hex()
        sentence = (
            f"connection {conn}: message {message} differs at byte {byte} of {size}:"
            f" got {seen}, sent {sent}"
        )
        start = at - byte
        if byte < HEADER.size <= size and start >= 0 and start + HEADER.size <= len(got):
            other_conn, other_seq = HEADER.unpack_from(bytes(got[start : start + HEADER.size]))
            if other_seq < _PLAUSIBLE_SEQ:  # else not a header at all: the stream has shifted
                sentence += f" (its header says connection {other_conn}, message {other_seq})"
        return sentence


def first_difference(got: bytes | bytearray | memoryview, want: bytes | bytearray) -> int:
    """The index of the first byte where ``got`` differs from ``want``.

    A ``got`` longer than ``want`` differs at ``len(want)``: bytes arrived that
    were never sent.
    """
    common = min(len(got), len(want))
    low, high = 0, common
    while low < high:  # bisect on equal prefixes: each test is one memcmp
        middle = (low + high) // 2
        if got[low : middle + 1] == want[low : middle + 1]:
            low = middle + 1
        else:
            high = middle
    return low
