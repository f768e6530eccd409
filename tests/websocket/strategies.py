"""Hypothesis strategies: what a client may send (valid streams) and what it must not (faults).

A *stream* is a list of :class:`~websocket.helpers.Frame`: messages (text or
binary, empty to larger than 64 KiB, cut into fragments anywhere -- inside a
UTF-8 character too), with pings and pongs between them and between their
fragments, and optionally a close frame (code and reason) at the end.

A *fault* is what follows a valid prefix and breaks the protocol, with the
close code RFC 6455 prescribes and wsproto's verdict as a server (None where
wsproto has no opinion: it has no message size limit).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import strategies as st

from .helpers import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    VALID_CODES,
    Frame,
    bytes_of,
    close_payload,
    raw_frame,
    text_of,
)

LARGE_SIZES = (125, 126, 127, 65535, 65536, 70_000)
# Invalid UTF-8: a lone continuation byte, bytes never used, an overlong form, a surrogate,
# beyond U+10FFFF, and sequences cut short (invalid only at the end of the message).
BAD_UTF8 = (
    b"\x80",
    b"\xff",
    b"\xfe",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc3\x28",
)
TRUNCATED_UTF8 = (b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98")
BAD_CODES = (0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535)


# Strategies are built once: hypothesis validates every new strategy object, which costs
# more than drawing from it.


@functools.cache
def sizes(most: int) -> st.SearchStrategy[int]:
    """Message sizes: mostly small, sometimes at a header-length boundary or large."""
    large = [n for n in LARGE_SIZES if n <= most] + [most]
    return st.one_of(st.integers(0, min(most, 130)), st.sampled_from(large), st.integers(0, most))


@functools.cache
def controls() -> st.SearchStrategy[list[Frame]]:
    """Zero to two pings or pongs, as may come between messages or fragments."""
    one = st.builds(Frame, st.sampled_from([PING, PONG]), st.binary(max_size=125))
    return st.lists(one, max_size=2)


@functools.cache
def message(most: int = 80_000) -> st.SearchStrategy[list[Frame]]:
    return _message(most)


@st.composite
def _message(draw: st.DrawFn, most: int) -> list[Frame]:
    """One message, fragmented or not, with control frames between its fragments."""
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    seed = draw(st.integers(0, 2**32 - 1))
    size = draw(sizes(most))
    payload = text_of(seed, size) if opcode == TEXT else bytes_of(seed, size)
    points = scaled(draw(_FRAGMENT_CUTS), len(payload))
    pieces = [payload[a:b] for a, b in zip([0, *points], [*points, len(payload)], strict=True)]
    frames: list[Frame] = []
    for i, piece in enumerate(pieces):
        if i:
            frames += draw(controls())
        last = i == len(pieces) - 1
        frames.append(Frame(opcode if i == 0 else CONTINUATION, piece, last))
    return frames


@functools.cache
def reasons() -> st.SearchStrategy[str]:
    return st.text(max_size=30).filter(lambda text: len(text.encode()) <= 123)


@functools.cache
def close_frames() -> st.SearchStrategy[Frame]:
    """A valid client close: no payload, or a valid code and a UTF-8 reason."""
    codes = st.one_of(st.sampled_from(VALID_CODES), st.integers(3000, 4999))
    with_code = st.builds(lambda c, r: Frame(CLOSE, close_payload(c, r)), codes, reasons())
    return st.one_of(st.just(Frame(CLOSE)), with_code)


@st.composite
def streams(draw: st.DrawFn, most: int = 80_000, close: bool | None = None) -> list[Frame]:
    """Messages and control frames; a close at the end if ``close`` (None: maybe)."""
    frames: list[Frame] = []
    for item in draw(_items(most)):
        frames += item
    if close or (close is None and draw(st.booleans())):
        frames.append(draw(close_frames()))
    return frames


@functools.cache
def _items(most: int) -> st.SearchStrategy[list[list[Frame]]]:
    return st.lists(st.one_of(message(most), controls()), max_size=5)


_SCALE = 1 << 20
_FRAGMENT_CUTS = st.lists(st.integers(0, _SCALE), max_size=4)
_CHUNK_CUTS = st.lists(st.integers(0, _SCALE), max_size=12)


def scaled(fractions: list[int], size: int) -> list[int]:
    """Positions in ``size`` bytes from fractions of :data:`_SCALE`, in order."""
    return sorted(f * size // _SCALE for f in fractions)


def chunkings(data: bytes) -> st.SearchStrategy[list[int]]:
    """Where to cut ``data`` into the chunks a client sends one by one."""
    return _CHUNK_CUTS.map(lambda fractions: scaled(fractions, len(data)))


# ---------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    """Bytes that break the protocol after a valid prefix, and the verdicts on them."""

    name: str
    data: bytes
    code: int  # the close code the server must send
    wsproto: int | None  # wsproto's ParseFailed code as a server (None: it has no opinion)


# Each fault's bytes, drawn (``limit``: the server's message limit, which only the size
# faults need).

_SMALL = st.binary(max_size=40)


def _unmasked(draw: st.DrawFn, limit: int) -> bytes:
    first = draw(st.sampled_from([0x81, 0x82, 0x89, 0x8A, 0x01, 0x02]))
    payload = b"ascii" if first & 0x0F == TEXT else draw(_SMALL)
    return raw_frame(first, payload, mask=False)


def _rsv(draw: st.DrawFn, limit: int) -> bytes:
    opcode = draw(st.sampled_from([TEXT, BINARY, PING, PONG]))
    rsv = draw(st.integers(1, 7)) << 4
    return raw_frame(0x80 | rsv | opcode, b"x")


def _reserved_opcode(draw: st.DrawFn, limit: int) -> bytes:
    opcode = draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]))
    fin = draw(st.sampled_from([0, 0x80]))
    return raw_frame(fin | opcode, draw(_SMALL))


def _long_control(draw: st.DrawFn, limit: int) -> bytes:
    opcode = draw(st.sampled_from([PING, PONG, CLOSE]))
    size = draw(st.integers(126, 300))
    payload = struct.pack(">H", 1000) + b"r" * (size - 2) if opcode == CLOSE else b"p" * size
    return raw_frame(0x80 | opcode, payload)


def _fragmented_control(draw: st.DrawFn, limit: int) -> bytes:
    opcode = draw(st.sampled_from([PING, PONG, CLOSE]))
    payload = struct.pack(">H", 1000) if opcode == CLOSE else draw(_SMALL)
    return raw_frame(opcode, payload)


def _orphan_continuation(draw: st.DrawFn, limit: int) -> bytes:
    fin = draw(st.sampled_from([0, 0x80]))
    return raw_frame(fin | CONTINUATION, draw(_SMALL))


def _message_inside_a_message(draw: st.DrawFn, limit: int) -> bytes:
    start = draw(st.sampled_from([TEXT, BINARY]))
    data = raw_frame(start, b"start")
    data += b"".join(raw_frame(CONTINUATION, b"more") for _ in range(draw(st.integers(0, 2))))
    second = draw(st.sampled_from([TEXT, BINARY])) | draw(st.sampled_from([0, 0x80]))
    return data + raw_frame(second, b"new")


def _bad_utf8(draw: st.DrawFn, limit: int) -> bytes:
    good = text_of(draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 60)))
    bad = draw(st.sampled_from(BAD_UTF8))
    at = draw(st.integers(0, len(good)))
    good_before = good[:at].decode(errors="ignore").encode()
    return raw_frame(0x80 | TEXT, good_before + bad + good)


def _bad_utf8_across_fragments(draw: st.DrawFn, limit: int) -> bytes:
    good = text_of(draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 60)))
    truncated = draw(st.booleans())
    if truncated:  # valid until the message ends inside a character
        payload = good + draw(st.sampled_from(TRUNCATED_UTF8))
    else:
        payload = good + draw(st.sampled_from(BAD_UTF8)) + good
    points = scaled(draw(_FRAGMENT_CUTS.filter(bool)), len(payload))
    pieces = [payload[a:b] for a, b in zip([0, *points], [*points, len(payload)], strict=True)]
    data = b""
    for i, piece in enumerate(pieces):
        fin = 0x80 if i == len(pieces) - 1 else 0
        data += raw_frame(fin | (TEXT if i == 0 else CONTINUATION), piece)
    return data


def _bad_utf8_in_close_reason(draw: st.DrawFn, limit: int) -> bytes:
    code = draw(st.sampled_from(VALID_CODES))
    bad = draw(st.sampled_from(BAD_UTF8 + TRUNCATED_UTF8))
    return raw_frame(0x80 | CLOSE, struct.pack(">H", code) + b"ok" + bad)


def _bad_close_code(draw: st.DrawFn, limit: int) -> bytes:
    code = draw(
        st.one_of(st.sampled_from(BAD_CODES), st.integers(1016, 2999), st.integers(5000, 65535))
    )
    return raw_frame(0x80 | CLOSE, struct.pack(">H", code))


def _one_byte_close(draw: st.DrawFn, limit: int) -> bytes:
    return raw_frame(0x80 | CLOSE, draw(st.binary(min_size=1, max_size=1)))


def _length_top_bit(draw: st.DrawFn, limit: int) -> bytes:
    length = (1 << 63) | draw(st.integers(0, 2**32))
    return raw_frame(0x80 | BINARY, b"", length=length, form=64)


def _too_big(draw: st.DrawFn, limit: int) -> bytes:
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    size = draw(st.one_of(st.just(limit + 1), st.integers(limit + 1, 2**40)))
    sent = b"a" * min(size, draw(st.integers(0, 2 * limit)))  # the header says it all
    return raw_frame(0x80 | opcode, sent, length=size)


def _too_big_in_fragments(draw: st.DrawFn, limit: int) -> bytes:
    """Each fragment within the limit, the message above it."""
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    count = draw(st.integers(2, 4))
    each = limit // count + 1
    data = b""
    for i in range(count):
        fin = 0x80 if i == count - 1 else 0
        data += raw_frame(fin | (opcode if i == 0 else CONTINUATION), b"a" * each)
    return data


# kind: (its bytes, the close code the server must send, wsproto's code as a server)
_FAULTS: dict[str, tuple[Callable[[st.DrawFn, int], bytes], int, int | None]] = {
    "unmasked": (_unmasked, 1002, 1002),
    "rsv": (_rsv, 1002, 1002),
    "reserved opcode": (_reserved_opcode, 1002, 1002),
    "long control": (_long_control, 1002, 1002),
    "fragmented control": (_fragmented_control, 1002, 1002),
    "orphan continuation": (_orphan_continuation, 1002, 1002),
    "message inside a message": (_message_inside_a_message, 1002, 1002),
    "bad utf-8": (_bad_utf8, 1007, 1007),
    "bad utf-8 across fragments": (_bad_utf8_across_fragments, 1007, 1007),
    "bad utf-8 in close reason": (_bad_utf8_in_close_reason, 1007, 1007),
    "bad close code": (_bad_close_code, 1002, 1002),
    "one-byte close": (_one_byte_close, 1002, 1002),
    "64-bit length top bit": (_length_top_bit, 1002, 1002),
    "too big": (_too_big, 1009, None),
    "too big in fragments": (_too_big_in_fragments, 1009, None),
}
_FAULT_KINDS = st.sampled_from(list(_FAULTS))


@st.composite
def faults(draw: st.DrawFn, max_message: int) -> Fault:
    """One violation of RFC 6455 by a client (``max_message``: the server's limit)."""
    kind = draw(_FAULT_KINDS)
    build, code, wsproto = _FAULTS[kind]
    return Fault(kind, build(draw, max_message), code, wsproto)


@st.composite
def bad_streams(draw: st.DrawFn, max_message: int) -> tuple[list[Frame], Fault]:
    """A valid prefix (no close; messages within ``max_message``), then a fault."""
    prefix = draw(streams(most=max_message, close=False))
    return prefix, draw(faults(max_message))
