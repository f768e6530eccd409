"""The control protocol without I/O: :class:`rawepoll.server.control.ControlParser`.

Properties (hypothesis): any split of valid requests into chunks parses to the
same commands; any bytes at all, split any way, give the same commands and the
same error as when fed at once, and never raise anything but ``ProtocolError``.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawepoll.server import control, relay
from rawepoll.server.control import (
    MAX_LINE,
    Broadcast,
    Command,
    ControlParser,
    Ping,
    ProtocolError,
    Publish,
)
from rawepoll.server.topics import MAX_TOPIC_BYTES, check_topic

pytestmark = pytest.mark.timeout(120)


def _is_topic(text: str) -> bool:
    try:
        check_topic(text)
    except ValueError:
        return False
    return True


topics = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).filter(_is_topic)
payloads = st.binary(max_size=300) | st.sampled_from([b"", b"\n", b"PING\n", b"a\x00\r\nb"])
commands: st.SearchStrategy[Command] = st.one_of(
    st.just(Ping()),
    st.builds(Publish, topics, payloads),
    st.builds(Broadcast, payloads),
)


def parse(chunks: list[bytes], parser: ControlParser | None = None) -> tuple[list[Command], str]:
    """Feed ``chunks`` one by one, then end: the commands, and the error's reason ('' if none)."""
    parser = parser or ControlParser()
    got: list[Command] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (command := parser.next_command()) is not None:
                got.append(command)
        parser.end()
    except ProtocolError as error:
        return got, str(error)
    return got, ""


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, in order)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=12), st.lists(st.integers(min_value=0), max_size=20))
def test_any_chunking_of_valid_requests_gives_the_same_commands(
    sent: list[Command], cuts: list[int]
) -> None:
    data = b"".join(control.encode(command) for command in sent)
    assert parse([data]) == (sent, "")
    assert parse(split(data, cuts)) == (sent, "")
    assert parse([bytes([byte]) for byte in data]) == (sent, "")


# Garbage that looks like requests often enough to reach every branch of the parser.
pieces = st.sampled_from(
    [b"PING", b"PUBLISH", b"BROADCAST", b" ", b"\n", b"t", b"\xff", b"0", b"3", b"1" * 10, b"x"]
)
garbage = st.binary(max_size=2000) | st.lists(pieces | st.binary(max_size=4)).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(garbage, st.lists(st.integers(min_value=0), max_size=30))
def test_garbage_gives_a_clean_error_whatever_the_chunking(data: bytes, cuts: list[int]) -> None:
    whole = parse([data])
    assert parse(split(data, cuts)) == whole
    _, reason = whole
    assert "\n" not in reason


@settings(max_examples=300, deadline=None)
@given(
    st.lists(commands, max_size=5),
    garbage,
    st.lists(st.integers(min_value=0), max_size=20),
)
def test_valid_requests_before_garbage_are_all_parsed(
    sent: list[Command], garbage: bytes, cuts: list[int]
) -> None:
    """Requests before a bad one are carried out, each once, whatever the chunking."""
    data = b"".join(control.encode(command) for command in sent) + garbage
    got, reason = parse(split(data, cuts))
    assert (got, reason) == parse([data])
    assert got[: len(sent)] == sent
    assert reason or got[len(sent) :] == parse([garbage])[0]


@settings(max_examples=200, deadline=None)
@given(st.lists(commands, min_size=1, max_size=5), st.data())
def test_a_parser_that_failed_stays_failed(sent: list[Command], data: st.DataObject) -> None:
    parser = ControlParser()
    parser.feed(b"NOPE\n")
    with pytest.raises(ProtocolError) as first:
        parser.next_command()
    parser.feed(b"".join(control.encode(command) for command in sent))
    with pytest.raises(ProtocolError) as again:
        parser.next_command()
    assert str(again.value) == str(first.value)
    with pytest.raises(ProtocolError):
        parser.end()


BAD = [
    pytest.param(b"HELLO\n", "unknown request", id="unknown"),
    pytest.param(b"\n", "unknown request", id="empty-line"),
    pytest.param(b"ping\n", "unknown request", id="lower-case"),
    pytest.param(b"PING\r\n", "unknown request", id="crlf"),
    pytest.param(b"PING x\n", "usage: PING", id="ping-argument"),
    pytest.param(b"PUBLISH t\n", "usage: PUBLISH", id="publish-no-length"),
    pytest.param(b"PUBLISH  t 1\nx", "usage: PUBLISH", id="two-spaces"),
    pytest.param(b"BROADCAST\n", "usage: BROADCAST", id="broadcast-no-length"),
    pytest.param(b"PUBLISH t -1\n", "decimal digits", id="negative"),
    pytest.param(b"PUBLISH t +1\nx", "decimal digits", id="plus"),
    pytest.param(b"PUBLISH t 1_0\n", "decimal digits", id="underscore"),
    pytest.param(b"PUBLISH t \xd9\xa3\n", "decimal digits", id="arabic-digit"),
    pytest.param(b"PUBLISH t 9999999999\n", "decimal digits", id="too-many-digits"),
    pytest.param(b"PUBLISH t 999999\n", "above the limit", id="oversize"),
    pytest.param(b"BROADCAST %d\n" % relay.MAX_MESSAGE, "above the limit", id="oversize-b"),
    pytest.param(b"PUBLISH a\x01b 1\nx", "control characters", id="control-char-topic"),
    pytest.param(b"PUBLISH \xff\xfe 1\nx", "UTF-8", id="not-utf8-topic"),
    pytest.param(b"PUBLISH %s 1\nx" % (b"t" * 256), "at most 255", id="long-topic"),
    pytest.param(b"A" * MAX_LINE, "at most 512 bytes", id="long-line"),
    pytest.param(b"PUBLISH t 10\nabc", "3 bytes into a payload of 10", id="truncated"),
    pytest.param(b"PUBLISH t 3", "inside a request line", id="truncated-line"),
]


@pytest.mark.parametrize(("data", "reason"), BAD)
def test_bad_input_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    got, error = parse([data])
    assert got == []
    assert reason in error


def test_a_line_of_exactly_the_limit_is_read() -> None:
    topic = "t" * MAX_TOPIC_BYTES
    line = b"PUBLISH %s 1\n" % topic.encode()
    parser = ControlParser(max_line=len(line))
    parser.feed(line + b"x")
    assert parser.next_command() == Publish(topic, b"x")
    parser = ControlParser(max_line=len(line) - 1)
    parser.feed(line + b"x")
    with pytest.raises(ProtocolError, match="at most"):
        parser.next_command()


@pytest.mark.parametrize("topic", [None, "t", "é" * 100])
def test_the_payload_limit_is_the_relays(topic: str | None) -> None:
    """A payload at the limit fits one relay message; one byte more is refused."""
    limit = control.payload_limit(topic)
    kind = relay.BROADCAST if topic is None else relay.PUBLISH
    assert len(relay.encode(kind, topic or "", bytes(limit))) == relay.MAX_MESSAGE
    command = Broadcast(bytes(limit)) if topic is None else Publish(topic, bytes(limit))
    assert parse([control.encode(command)]) == ([command], "")
    header = b"BROADCAST" if topic is None else b"PUBLISH " + topic.encode()
    assert "above the limit" in parse([header + b" %d\n" % (limit + 1)])[1]
    with pytest.raises(ValueError, match="above the limit"):
        control.encode(
            Broadcast(bytes(limit + 1)) if topic is None else Publish(topic, bytes(limit + 1))
        )


def test_an_oversize_length_is_refused_before_its_payload() -> None:
    parser = ControlParser()
    parser.feed(b"PUBLISH t %d\n" % relay.MAX_MESSAGE)
    with pytest.raises(ProtocolError, match="above the limit"):
        parser.next_command()


@pytest.mark.parametrize(
    ("command", "wire"),
    [
        (Ping(), b"PING\n"),
        (Publish("news", b"a b\n"), b"PUBLISH news 4\na b\n"),
        (Publish("é", b""), b"PUBLISH \xc3\xa9 0\n"),
        (Broadcast(b"\x00"), b"BROADCAST 1\n\x00"),
    ],
)
def test_encode_writes_the_documented_wire_format(command: Command, wire: bytes) -> None:
    assert control.encode(command) == wire


@pytest.mark.parametrize("topic", ["", "a b", "a\nb", "x" * 256])
def test_encode_refuses_a_bad_topic(topic: str) -> None:
    with pytest.raises(ValueError):
        control.encode(Publish(topic, b"x"))
