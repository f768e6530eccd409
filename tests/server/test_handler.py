"""The sans-IO handlers, with no socket at all: bytes in, bytes out.

The event loop owns the sockets; a handler only sees ``memoryview`` chunks that
are valid during the call, and returns what to send.  ``bytes(...)`` is taken of
every result at once, as the loop must do.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawepoll.server import EchoHandler, Handler, ServerConfig, UpperLineHandler

pytestmark = pytest.mark.timeout(60)


def feed(handler: Handler, data: bytes) -> bytes:
    """Pass ``data`` as the loop would: in a buffer reused (and scribbled on) afterwards."""
    buffer = bytearray(data)
    with memoryview(buffer) as view:
        result = handler.data_received(view)
        out = b"" if result is None else bytes(result)
    buffer[:] = b"\xee" * len(buffer)  # the view was only valid during the call
    return out


def finish(handler: Handler) -> bytes:
    result = handler.eof_received()
    return b"" if result is None else bytes(result)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(min(c, len(data)) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# ---------------------------------------------------------------- EchoHandler


def test_echo_handler_is_shared() -> None:
    assert EchoHandler.shared is True


def test_echo_handler_returns_the_bytes() -> None:
    handler = EchoHandler()
    assert feed(handler, b"hello") == b"hello"
    assert feed(handler, b"\x00\xff\n") == b"\x00\xff\n"


def test_echo_handler_eof_adds_nothing() -> None:
    assert finish(EchoHandler()) == b""


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(0, 5000), max_size=20))
def test_echo_handler_any_chunking(data: bytes, cuts: list[int]) -> None:
    """One shared instance, any split: the output is the input."""
    handler = EchoHandler()
    out = b"".join(feed(handler, chunk) for chunk in split(data, cuts)) + finish(handler)
    assert out == data


# ---------------------------------------------------------------- UpperLineHandler


def test_upper_line_handler_is_per_connection() -> None:
    assert UpperLineHandler.shared is False


def test_upper_line_handler_waits_for_the_newline() -> None:
    handler = UpperLineHandler()
    assert feed(handler, b"hel") == b""
    assert feed(handler, b"lo\nwor") == b"HELLO\n"
    assert feed(handler, b"ld\n\n") == b"WORLD\n\n"
    assert finish(handler) == b""


def test_upper_line_handler_flushes_the_rest_at_eof() -> None:
    handler = UpperLineHandler()
    assert feed(handler, b"one\ntwo") == b"ONE\n"
    assert finish(handler) == b"TWO"


def test_upper_line_handler_instances_do_not_share_state() -> None:
    a, b = UpperLineHandler(), UpperLineHandler()
    assert feed(a, b"aaa") == b""
    assert feed(b, b"bbb\n") == b"BBB\n"
    assert feed(a, b"\n") == b"AAA\n"


def test_upper_line_handler_copies_what_it_keeps() -> None:
    """The view is only valid during the call: a partial line must be copied."""
    handler = UpperLineHandler()
    buffer = bytearray(b"abc")
    with memoryview(buffer) as view:
        assert handler.data_received(view) in (None, b"")
    buffer[:] = b"xyz"
    assert feed(handler, b"\n") == b"ABC\n"


lines_text = st.lists(st.text(alphabet="abcXYZ 09-\n", max_size=40), max_size=20).map(
    lambda parts: "".join(parts).encode()
)


@settings(max_examples=100, deadline=None)
@given(data=lines_text, cuts=st.lists(st.integers(0, 1000), max_size=30))
def test_upper_line_handler_any_chunking(data: bytes, cuts: list[int]) -> None:
    """After each chunk the output so far is every complete line, upper-cased."""
    handler = UpperLineHandler()
    out = b""
    fed = b""
    for chunk in split(data, cuts):
        fed += chunk
        out += feed(handler, chunk)
        complete = fed[: fed.rfind(b"\n") + 1]
        assert out == complete.upper()
    out += finish(handler)
    assert out == data.upper()


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=20))
def test_upper_line_handler_any_bytes(data: bytes, cuts: list[int]) -> None:
    """Clients send bytes, not text: no byte sequence breaks the handler."""
    handler = UpperLineHandler()
    out = b"".join(feed(handler, chunk) for chunk in split(data, cuts)) + finish(handler)
    assert out == data.upper()


# ---------------------------------------------------------------- ServerConfig


def test_server_config_defaults_match_the_spec() -> None:
    config = ServerConfig()
    expected = {
        "host": "127.0.0.1",
        "port": 8080,
        "unix": None,
        "mode": "lt",
        "workers": 1,
        "max_conns": None,
        "idle_timeout": 0.0,
        "drain_timeout": 10.0,
        "backlog": 4096,
        "stats_interval": 0.0,
        "handler": EchoHandler,
        "high_water": 262144,
        "low_water": 65536,
        "quiet": False,
    }
    actual = {name: getattr(config, name) for name in expected}
    assert actual == expected


def test_server_config_takes_keywords() -> None:
    config = ServerConfig(port=0, mode="et", handler=UpperLineHandler, idle_timeout=1.5)
    assert (config.port, config.mode, config.handler, config.idle_timeout) == (
        0,
        "et",
        UpperLineHandler,
        1.5,
    )
