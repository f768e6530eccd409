"""Broadcast messages that carry their number and publish time, and what a subscriber must get.

Message ``seq`` of a broadcast run, published at ``ns`` (:func:`time.monotonic_ns`:
``CLOCK_MONOTONIC``, one clock for every process of the machine), is ``size``
bytes of ASCII::

    offset  0   seq   10 decimal digits, zero-padded
    offset 10   " "
    offset 11   ns    19 decimal digits, zero-padded
    offset 30   " "
    offset 31   pad   size - 31 letters of a fixed cycle, from an offset
                      that depends on seq and ns

ASCII without a newline, so the line protocol carries it in one line and a
WebSocket server sends it as a text frame.  What a subscriber receives for it
(:class:`Deliveries`):

* from :class:`~rawepoll.server.handler.LinePubSubHandler` (TCP):
  ``MSG <topic> <message>\\n``;
* from rawepoll's WebSocket application (a client of ``/topic/<topic>``): a
  text frame, unmasked -- ``0x81``, the length, the message.

Every delivery of a run has the same length, :attr:`Deliveries.unit`.  A
subscriber cuts its stream into units, reads ``seq`` and ``ns`` from their
fixed places, builds the delivery those two say and compares the whole unit
with it, byte for byte: a changed byte anywhere -- in the frame header or the
line's prefix, the digits, the padding -- fails the comparison.  (A changed
digit still makes a number, but it moves the padding's offset by a step the
letter cycle never divides: hence :data:`MIN_SIZE`, one letter at least.)
Whether ``seq`` is the one due next is the subscriber's business
(:mod:`rawepoll.tools.loadgen.subscriber`).

Nothing here does I/O.
"""

from __future__ import annotations

import string
from typing import Final

from rawepoll.server.websocket import frames

__all__ = ["MIN_SIZE", "STAMP_SIZE", "Deliveries"]

STAMP_SIZE: Final = 31  # bytes of seq, ns and their spaces
MIN_SIZE: Final = STAMP_SIZE + 1  # a letter of padding at least: it vouches for the digits
_SEQ_DIGITS: Final = 10
_NS_DIGITS: Final = 19
_LETTERS: Final = string.ascii_letters.encode()
_PAD_STEP: Final = 7919  # moves the padding's offset from one message to the next


def _padding(size: int) -> bytes:
    """Enough of the letter cycle for any offset and ``size - STAMP_SIZE`` letters."""
    return _LETTERS * ((size - STAMP_SIZE) // len(_LETTERS) + 2)


class Deliveries:
    """The messages of one broadcast run and what a subscriber of ``topic`` receives for each.

    Args:
        topic: the topic the subscribers subscribed to.
        size: bytes per message, at least :data:`MIN_SIZE`.
        protocol: ``"tcp"`` (the line protocol) or ``"websocket"``.
    """

    __slots__ = ("_ns_at", "_pad", "_pad_len", "_seq_at", "prefix", "size", "suffix", "unit")

    def __init__(self, topic: str, size: int, protocol: str) -> None:
        if size < MIN_SIZE:
            raise ValueError(f"a broadcast message is at least {MIN_SIZE} bytes, got {size}")
        self.size = size
        if protocol == "websocket":
            self.prefix = frames.encode(frames.TEXT, b"\0" * size)[:-size]
            self.suffix = b""
        else:
            self.prefix = b"MSG %s " % topic.encode()
            self.suffix = b"\n"
        self.unit = len(self.prefix) + size + len(self.suffix)
        self._seq_at = len(self.prefix)
        self._ns_at = self._seq_at + _SEQ_DIGITS + 1
        self._pad_len = size - STAMP_SIZE
        self._pad = _padding(size)

    def message(self, seq: int, ns: int) -> bytes:
        """What the publisher publishes: message ``seq``, published at ``ns``."""
        start = (seq * _PAD_STEP + ns) % len(_LETTERS)
        return b"%010d %019d " % (seq, ns) + self._pad[start : start + self._pad_len]

    def delivery(self, seq: int, ns: int) -> bytes:
        """What a subscriber must receive for message ``seq`` published at ``ns``."""
        return self.prefix + self.message(seq, ns) + self.suffix

    def read(self, unit: bytes | bytearray | memoryview) -> tuple[int, int] | None:
        """``(seq, ns)`` of one received unit, or None if it is not exactly a delivery."""
        seq_at, ns_at = self._seq_at, self._ns_at
        try:
            seq = int(unit[seq_at : seq_at + _SEQ_DIGITS])
            ns = int(unit[ns_at : ns_at + _NS_DIGITS])
        except ValueError:
            return None
        if seq < 0 or ns < 0 or unit != self.delivery(seq, ns):
            return None
        return seq, ns

    def describe(self, unit: bytes | bytearray | memoryview) -> str:
        """What is wrong with a unit :meth:`read` refused, in a few words."""
        data = bytes(unit)
        if not data.startswith(self.prefix):
            where = "the frame header" if not self.suffix else "the line's prefix"
            return f"{where} differs: got {data[: len(self.prefix)]!r}, want {self.prefix!r}"
        seq_text = data[self._seq_at : self._seq_at + _SEQ_DIGITS]
        ns_text = data[self._ns_at : self._ns_at + _NS_DIGITS]
        if not (seq_text.isdigit() and ns_text.isdigit()):
            return f"no message number and time where they belong: {data[:60]!r}"
        want = self.delivery(int(seq_text), int(ns_text))
        at = next(k for k, (a, b) in enumerate(zip(data, want, strict=True)) if a != b)
        return (
            f"message {int(seq_text)} differs at byte {at} of {self.unit}: "
            f"got {data[at : at + 8]!r}, sent {want[at : at + 8]!r}"
        )
