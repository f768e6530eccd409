"""The messages and their verification, without any socket (sans-IO)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawepoll.tools.loadgen.payload import HEADER, Payloads, first_difference

pytestmark = pytest.mark.timeout(60)


@given(size=st.integers(1, 5000), conn=st.integers(0, 2**32 - 1), seq=st.integers(0, 2**40))
def test_message_has_the_size_and_the_header(size: int, conn: int, seq: int) -> None:
    message = Payloads(size).message(conn, seq)
    assert len(message) == size
    assert message == HEADER.pack(conn, seq)[:size] + message[HEADER.size :]


def test_messages_differ_between_connections_and_sequence_numbers() -> None:
    """No two messages of a run are alike, and neither are their bodies at one position."""
    payloads = Payloads(256)
    seen = {payloads.message(conn, seq) for conn in range(40) for seq in range(40)}
    assert len(seen) == 1600
    bodies = {message[HEADER.size :] for message in seen}
    assert len(bodies) > 1500  # 4093 body offsets: a few collide, the headers still differ


def test_body_is_not_periodic() -> None:
    """Swapping two chunks of a body changes it (a reordering is visible)."""
    body = Payloads(4096).message(3, 7)[HEADER.size :]
    for width in (1, 8, 64, 512):
        swapped = body[width : 2 * width] + body[:width] + body[2 * width :]
        assert swapped != body


def test_messages_are_back_to_back() -> None:
    payloads = Payloads(20)
    assert payloads.messages(5, 10, 3) == b"".join(payloads.message(5, s) for s in (10, 11, 12))
    assert payloads.messages(5, 10, 1) == payloads.message(5, 10)


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Payloads(0)


@given(data=st.binary(max_size=300), at=st.integers(0, 299), flip=st.integers(1, 255))
def test_first_difference(data: bytes, at: int, flip: int) -> None:
    assert first_difference(data, data) == len(data)
    if at < len(data):
        spoiled = bytearray(data)
        spoiled[at] ^= flip
        assert first_difference(spoiled, data) == at
        assert first_difference(memoryview(bytes(spoiled)), data) == at
    assert first_difference(data + b"x", data) == len(data)  # extra bytes differ at the end


def test_describe_a_changed_byte() -> None:
    payloads = Payloads(64)
    want = payloads.message(7, 3)
    got = bytearray(want)
    got[40] ^= 1
    sentence = payloads.describe_mismatch(bytes(got), want, conn=7, seq=3, into=0)
    assert sentence.startswith("connection 7: message 3 differs at byte 40 of 64")


def test_describe_a_mismatch_in_a_later_message() -> None:
    """The position counts from the oldest message in flight and the bytes already verified."""
    payloads = Payloads(16)
    stream = payloads.messages(1, 4, 3)
    got = bytearray(stream[10:])  # 10 bytes of message 4 were verified before
    got[20] ^= 0xFF  # stream byte 30: message 5, byte 14
    sentence = payloads.describe_mismatch(bytes(got), stream[10:], conn=1, seq=4, into=10)
    assert "message 5 differs at byte 14 of 16" in sentence


def test_describe_cross_talk_names_the_sender() -> None:
    payloads = Payloads(64)
    sentence = payloads.describe_mismatch(
        payloads.message(9, 2), payloads.message(4, 2), conn=4, seq=2, into=0
    )
    assert "its header says connection 9, message 2" in sentence


def test_describe_extra_bytes() -> None:
    sentence = Payloads(8).describe_mismatch(b"!", b"", conn=2, seq=6, into=0)
    assert sentence == "connection 2: more bytes arrived than were sent (after message 5)"
