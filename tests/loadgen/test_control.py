"""The control messages: each kind survives its trip through a line, and a bad line is refused."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawepoll.tools.loadgen.channel import Channel
from rawepoll.tools.loadgen.control import (
    Counts,
    Done,
    Failed,
    Go,
    Message,
    Progress,
    Ready,
    Report,
    Round,
    Stop,
    decode,
    encode,
)

pytestmark = pytest.mark.timeout(60)

seconds = st.floats(min_value=0, max_value=1e9, allow_nan=False)
counts = st.builds(Counts, *[st.integers(0, 2**40)] * 5)
reports = st.builds(
    Report,
    counts=counts,
    seconds=seconds,
    cpu_s=seconds,
    problems=st.lists(st.text()).map(tuple),
    histogram=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="),
)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Go, seconds=st.none() | seconds, more=st.booleans(), interval=seconds),
    st.just(Stop()),
    st.builds(Progress, counts=counts),
    st.builds(Ready, counts=counts, ramp_s=seconds),
    st.builds(Round, report=reports),
    st.builds(Done, report=reports),
    st.builds(Failed, error=st.text()),
)


@given(message=messages)
def test_every_kind_comes_back_as_it_went(message: Message) -> None:
    line = encode(message)
    assert b"\n" not in line  # one message, one line, whatever its text holds
    assert decode(line) == message
    assert type(decode(line)) is type(message)


@given(sent=st.lists(messages, max_size=8))
def test_a_channel_delivers_messages_in_order(sent: list[Message]) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        sender, receiver = Channel(ours), Channel(theirs)
        for message in sent:
            sender.send(message)
        ours.shutdown(socket.SHUT_WR)
        got: list[Message] = []
        while not receiver.eof:
            got += receiver.receive()
    assert got == sent


def test_the_wire_format_is_one_json_object_per_line() -> None:
    assert encode(Go(seconds=1.5, more=True)) == (
        b'{"kind":"go","seconds":1.5,"more":true,"interval":0.0}'
    )
    assert encode(Stop()) == b'{"kind":"stop"}'


@pytest.mark.parametrize(
    "line",
    [
        b'{"kind":"hello"}',  # no such kind
        b'{"seconds":1}',  # no kind
        b'{"kind":"progress"}',  # a field missing
        b'{"kind":"failed","error":"x","extra":1}',  # a field too many
        b'{"kind":"ready","counts":3,"ramp_s":1.0}',  # a field of the wrong shape
        b"[1,2]",
        b"not json",
    ],
)
def test_a_line_that_is_not_a_message_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError, match=r"control channel|Expecting value"):
        decode(line)


def test_counts_add_up() -> None:
    total = Counts(1, 2, 3, 4, 5) + Counts(10, 20, 30, 40, 50)
    assert total == Counts(11, 22, 33, 44, 55)
    assert sum([Counts(messages=1)] * 3, Counts()) == Counts(messages=3)
