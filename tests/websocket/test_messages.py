"""The message layer on a real server: what wsproto writes, in random chunks, echoed exactly;
what breaks the protocol answered with the right close code, as wsproto would answer it.

The client is a plain socket that sends the chunks one by one (TCP_NODELAY) while it
reads; the server's frames are read by wsproto.  Hypothesis draws the streams
(:mod:`websocket.strategies`): messages of 0 to 80,000 bytes cut into fragments anywhere
(inside a UTF-8 character too), pings and pongs between messages and between fragments,
a close with a code and a reason or none.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawepoll.tools.serverproc import ServerProcess

from .conftest import MAX_MESSAGE, stop_cleanly
from .helpers import (
    BINARY,
    CLOSE,
    CONTINUATION,
    TEXT,
    Frame,
    RawClient,
    as_read,
    cut,
    model_replies,
    raw_frame,
    serve,
    wsproto_server_reads,
)
from .strategies import Fault, bad_streams, chunkings, streams

pytestmark = pytest.mark.timeout(180)
EXAMPLES = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@EXAMPLES
@given(stream=streams(), data=st.data())
def test_every_stream_is_echoed_exactly(
    echo_server: ServerProcess, stream: list[Frame], data: st.DataObject
) -> None:
    wire = b"".join(frame.wire() for frame in stream)
    chunks = cut(wire, data.draw(chunkings(wire), label="cuts"))
    expected = model_replies(stream)
    closing = bool(stream) and stream[-1].opcode == CLOSE
    with RawClient(echo_server.port) as client:
        client.upgrade()
        # A close is answered, then the server closes: read to the end. Else: the replies.
        client.exchange(chunks, lambda events: not closing and len(events) >= len(expected))
        assert client.events == expected
        if closing:
            assert client.ended == "eof"


@EXAMPLES
@given(case=bad_streams(MAX_MESSAGE), data=st.data())
def test_a_protocol_error_gets_its_close_code_and_the_connection_ends(
    limited_server: ServerProcess, case: tuple[list[Frame], Fault], data: st.DataObject
) -> None:
    """The replies to the valid prefix, then a close frame with the fault's code, then the
    server closes the connection -- without waiting for our close: RFC 6455 7.1.7, a
    failed connection reads nothing more (not even a close frame)."""
    prefix, fault = case
    wire = b"".join(frame.wire() for frame in prefix) + fault.data
    chunks = cut(wire, data.draw(chunkings(wire), label="cuts"))
    if fault.wsproto is not None:
        assert wsproto_server_reads(chunks) == (as_read(prefix), fault.wsproto), fault.name
    expected = model_replies(prefix)
    with RawClient(limited_server.port) as client:
        client.upgrade()
        client.exchange(chunks)  # until the server ends the connection; we never answer
        assert client.events[: len(expected)] == expected, fault.name
        assert [event[:2] for event in client.events[len(expected) :]] == [("close", fault.code)]
        assert client.ended in ("eof", "reset")


@pytest.mark.parametrize("fragments", [1, 3])
def test_a_message_at_the_limit_passes_and_one_byte_more_is_1009(
    limited_server: ServerProcess, fragments: int
) -> None:
    for size, opcode in ((MAX_MESSAGE, BINARY), (MAX_MESSAGE + 1, TEXT)):
        payload = b"m" * size
        points = [size * i // fragments for i in range(1, fragments)]
        pieces = cut(payload, points)
        wire = b"".join(
            raw_frame(
                (0x80 if i == len(pieces) - 1 else 0) | (opcode if i == 0 else CONTINUATION), piece
            )
            for i, piece in enumerate(pieces)
        )
        with RawClient(limited_server.port) as client:
            client.upgrade()
            client.exchange([wire], lambda events: len(events) >= 1)
            if size <= MAX_MESSAGE:
                assert client.events == [("binary", payload)]
            else:
                assert client.events[0][:2] == ("close", 1009)
                assert client.wait_end() in ("eof", "reset")


@pytest.mark.parametrize("limit", [1, 16, 124, 125, 126])
def test_a_small_limit_holds_for_small_messages_too(limit: int) -> None:
    """Whole small frames take the inline path: the limit must hold there as well.  A ping
    is not a message: up to 125 bytes, whatever the limit, it is answered."""
    with serve("--max-message", str(limit)) as server:
        for opcode, kind in ((TEXT, "text"), (BINARY, "binary")):
            with RawClient(server.port) as client:
                client.upgrade()
                ping = raw_frame(0x80 | 0x9, b"p" * 125)
                message = raw_frame(0x80 | opcode, b"k" * limit)
                client.exchange([ping, message], lambda events: len(events) >= 2)
                echo = "k" * limit if opcode == TEXT else b"k" * limit
                assert client.events == [("pong", b"p" * 125), (kind, echo)]
                client.exchange([raw_frame(0x80 | opcode, b"k" * (limit + 1))])
                assert client.events[2][:2] == ("close", 1009)
                assert client.ended in ("eof", "reset")
        stop_cleanly(server)


def test_a_ping_between_fragments_is_answered_before_the_message(
    echo_server: ServerProcess,
) -> None:
    frames = [
        Frame(TEXT, b"frag", fin=False),
        Frame(0x9, b"in between"),
        Frame(CONTINUATION, "ment é".encode()[:-1], fin=False),
        Frame(CONTINUATION, "ment é".encode()[-1:]),
    ]
    with RawClient(echo_server.port) as client:
        client.upgrade()
        client.exchange([f.wire() for f in frames], lambda events: len(events) >= 2)
        assert client.events == [("pong", b"in between"), ("text", "fragment é")]
