"""The frame codec against wsproto, both ways, with no socket.

* Frames wsproto writes as a client (masked) are read by
  :func:`rawepoll.server.websocket.frames.read_frame` -- fed in random chunks,
  as the protocol feeds it -- exactly as they were written, and as wsproto
  reads them as a server.
* Frames rawepoll writes as a server (:func:`~rawepoll.server.websocket.frames.encode`,
  ``close_frame``, ``push_frame``) are byte for byte what wsproto writes, and
  wsproto reads them as a client as they were meant.
* A frame that breaks a rule a frame alone can break gets the same close code
  from rawepoll's reader as from wsproto's.  (The rules of the message layer --
  continuations, UTF-8 across fragments, the message size -- need the
  protocol: ``test_messages.py``, against a real server.)
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, XorMaskerSimple

from rawepoll.server.websocket import frames
from rawepoll.server.websocket.frames import FrameError
from rawepoll.server.websocket.protocol import WebSocketProtocol

from .helpers import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    Frame,
    Reader,
    as_read,
    client_frame,
    cut,
    raw_frame,
    wsproto_server_reads,
)
from .strategies import chunkings, faults, reasons, streams

pytestmark = pytest.mark.timeout(120)
EXAMPLES = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
UNLIMITED = 1 << 62
# Faults a frame alone shows; the others are the message layer's (test_messages.py).
FRAME_FAULTS = {
    "unmasked",
    "rsv",
    "reserved opcode",
    "long control",
    "fragmented control",
    "bad utf-8 in close reason",
    "bad close code",
    "one-byte close",
    "64-bit length top bit",
    "too big",
}


def read_all(
    chunks: list[bytes], max_size: int = UNLIMITED, *, masked: bool = True
) -> list[tuple[bool, int, bytes]]:
    """rawepoll's reader as the protocol drives it: bytes kept until a frame is whole."""
    buffer = b""
    out = []
    for chunk in chunks:
        buffer += chunk
        pos = 0
        while (found := frames.read_frame(buffer, pos, max_size, masked=masked)) is not None:
            pos, fin, opcode, payload = found
            out.append((bool(fin), opcode, payload))
        buffer = buffer[pos:]
    assert buffer == b"", "bytes left over after the last frame"
    return out


def verdict(data: bytes, max_size: int) -> int | None:
    """rawepoll's frame-level verdict on ``data``: the close code of its FrameError, or None."""
    try:
        for _, opcode, payload in read_all([data], max_size):
            if opcode == CLOSE:
                frames.parse_close(payload)
    except FrameError as error:
        return error.code
    except AssertionError:
        return None  # incomplete: no verdict yet
    return None


# ---------------------------------------------------------------- client frames, read


@EXAMPLES
@given(stream=streams(), data=st.data())
def test_what_wsproto_writes_is_read_as_written(stream: list[Frame], data: st.DataObject) -> None:
    wire = b"".join(frame.wire() for frame in stream)
    chunks = cut(wire, data.draw(chunkings(wire), label="cuts"))
    assert read_all(chunks) == [(f.fin, f.opcode, f.payload) for f in stream]
    # ... as wsproto reads it as a server (which checks the messages too)
    assert wsproto_server_reads(chunks) == (as_read(stream), None)
    for frame in stream:
        if frame.opcode == CLOSE:
            code = struct.unpack(">H", frame.payload[:2])[0] if frame.payload else None
            assert frames.parse_close(frame.payload) == (code, frame.payload[2:].decode())


@EXAMPLES
@given(
    payload=st.binary(max_size=300),
    key=st.binary(min_size=4, max_size=4),
    opcode=st.sampled_from([TEXT, BINARY, PING, PONG]),
)
def test_masking_agrees_with_wsproto(payload: bytes, key: bytes, opcode: int) -> None:
    assert frames.unmask(payload, key) == bytes(XorMaskerSimple(key).process(bytearray(payload)))
    if opcode >= CLOSE and len(payload) > 125:
        payload = payload[:125]
    if opcode == TEXT:
        payload = payload.decode(errors="ignore").encode()
    wire = frames.encode_masked(opcode, payload, key)
    kind = {TEXT: "text", BINARY: "binary", PING: "ping", PONG: "pong"}[opcode]
    expected = payload.decode() if opcode == TEXT else payload
    assert wsproto_server_reads([wire]) == ([(kind, expected)], None)


# ---------------------------------------------------------------- server frames, written


def server_wire(stream: list[Frame]) -> bytes:
    """``stream`` as rawepoll's server writes it: encode, and close_frame for the close."""
    out = b""
    for frame in stream:
        if frame.opcode == CLOSE:
            code, reason = frames.parse_close(frame.payload)
            out += frames.close_frame(code, reason)
        else:
            out += frames.encode(frame.opcode, frame.payload, fin=frame.fin)
    return out


@EXAMPLES
@given(stream=streams(), data=st.data())
def test_what_rawepoll_writes_is_wsprotos_bytes_and_read_as_meant(
    stream: list[Frame], data: st.DataObject
) -> None:
    wsproto_server = FrameProtocol(client=False, extensions=[])
    for frame in stream:
        if frame.opcode != CLOSE:
            ours = frames.encode(frame.opcode, frame.payload, fin=frame.fin)
            theirs = wsproto_server._serialize_frame(Opcode(frame.opcode), frame.payload, frame.fin)
            assert ours == bytes(theirs)  # unmasked frames have one right form
    wire = server_wire(stream)
    chunks = cut(wire, data.draw(chunkings(wire), label="cuts"))
    reader = Reader()
    for chunk in chunks:
        reader.feed(chunk)
    assert reader.events == as_read(stream)
    # and rawepoll's own reader, on the client's side (unmasked), reads them back
    assert read_all(chunks, masked=False) == [(f.fin, f.opcode, f.payload) for f in stream]


@EXAMPLES
@given(
    code=st.one_of(st.none(), st.sampled_from([1000, 1001, 1011, 1012]), st.integers(3000, 4999)),
    reason=st.one_of(reasons(), st.text(min_size=40, max_size=200)),
)
def test_close_frames_with_any_reason_are_valid(code: int | None, reason: str) -> None:
    """A reason longer than a control frame allows is cut -- at a character boundary: a
    close frame with half a character is invalid UTF-8 (the client fails with 1007)."""
    reader = Reader()
    reader.feed(frames.close_frame(code, reason if code is not None else ""))
    if code is None:
        assert reader.events == [("close", 1005, "")]
        return
    [(kind, got_code, got_reason)] = reader.events
    assert (kind, got_code) == ("close", code)
    assert reason.startswith(got_reason)  # type: ignore[arg-type]
    fits = reason.encode()[:123].decode(errors="ignore")
    assert got_reason == fits


@EXAMPLES
@given(payload=st.one_of(st.binary(max_size=70_000), st.text(max_size=200).map(str.encode)))
def test_published_messages_are_text_when_utf8_else_binary(payload: bytes) -> None:
    reader = Reader()
    reader.feed(WebSocketProtocol.push_frame("news", payload))
    try:
        expected: tuple[object, ...] = ("text", payload.decode())
    except UnicodeDecodeError:
        expected = ("binary", payload)
    assert reader.events == [expected]


# ---------------------------------------------------------------- bad frames


@EXAMPLES
@given(fault=faults(max_message=4096).filter(lambda fault: fault.name in FRAME_FAULTS))
def test_a_bad_frame_gets_the_code_wsproto_gives(fault: object) -> None:
    from .strategies import Fault

    assert isinstance(fault, Fault)
    assert verdict(fault.data, 4096) == fault.code, fault.name
    if fault.wsproto is not None:
        _, code = wsproto_server_reads([fault.data])
        assert code == fault.wsproto == fault.code, fault.name


def test_the_message_limit_is_known_from_the_header() -> None:
    at_limit = client_frame(BINARY, b"a" * 1000)
    assert read_all([at_limit], 1000) == [(True, BINARY, b"a" * 1000)]
    above = raw_frame(0x80 | BINARY, b"", length=1001)  # no payload sent: the header says it
    with pytest.raises(FrameError) as caught:
        frames.read_frame(above, 0, 1000)
    assert caught.value.code == 1009
    ping = client_frame(PING, b"p" * 125)  # control frames are not messages: no limit but 125
    assert read_all([ping], 10) == [(True, PING, b"p" * 125)]


def test_where_rawepoll_and_wsproto_differ_on_purpose() -> None:
    """Two documented differences, so that a change of either side is seen.

    * A length in a longer form than needed: RFC 6455 5.2 makes the shortest
      form a MUST for the *sender*; rawepoll reads the longer forms (as browsers
      do), wsproto refuses them.
    * Close code 1014 ("bad gateway") is registered with IANA: rawepoll accepts
      it; wsproto 1.3's table stops at 1013.
    """
    for form in (16, 64):
        wire = raw_frame(0x80 | BINARY, b"xyz", form=form)
        assert read_all([wire]) == [(True, BINARY, b"xyz")]
        assert wsproto_server_reads([wire])[1] == 1002
    wire = raw_frame(0x80 | CLOSE, struct.pack(">H", 1014))
    assert frames.parse_close(read_all([wire])[0][2]) == (1014, "")
    assert wsproto_server_reads([wire])[1] == 1002


def test_a_frame_is_read_only_once_whole() -> None:
    """Every proper prefix of a frame is "incomplete" (None), never an error or a frame."""
    for size in (0, 1, 125, 126, 65535, 65536):
        wire = client_frame(BINARY, bytes(size))
        for end in {0, 1, 2, 3, 5, 8, 9, 13, 14, len(wire) - 1}:
            if end < len(wire):
                assert frames.read_frame(wire[:end], 0, UNLIMITED) is None, (size, end)
        assert frames.read_frame(wire, 0, UNLIMITED) == (len(wire), 0x80, BINARY, bytes(size))
