"""The opening handshake, strict and bounded, on a real server; h11 and wsproto as the oracles.

Every refusal is a proper HTTP response -- read here by h11, which refuses any
malformed one -- followed by the server closing the connection: never a hang,
never a 101.  What is a well-formed request is h11's opinion: requests h11
accepts are upgraded, in any chunking; requests h11 refuses get a 400.

Where the two parsers differ (llhttp, behind rawepoll, against h11), on purpose:

* llhttp is *stricter* on obsolete or dangerous forms h11 still reads: a
  folded header line (obs-fold), bare LF line ends, control characters in a
  value, Content-Length with Transfer-Encoding -- rawepoll answers 400
  (:func:`test_forms_h11_still_reads_are_refused`);
* llhttp is *laxer* on extra spaces in the request line (``GET  /x HTTP/1.1``):
  rawepoll upgrades what h11 refuses.  The callbacks cannot tell (the URL
  comes without the spaces), and nothing is ambiguous, so the tests leave it.
"""

from __future__ import annotations

import base64
import socket
import string
from collections.abc import Callable, Iterator
from typing import NamedTuple

import h11
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage
from wsproto.utilities import generate_accept_token

from rawepoll.server.websocket.handshake import MAX_REQUEST, accept_key
from rawepoll.tools.serverproc import ServerProcess

from .conftest import stop_cleanly
from .helpers import (
    APP,
    BINARY,
    HOST,
    RFC_ACCEPT,
    RFC_KEY,
    TEXT,
    RawClient,
    accept_of,
    client_frame,
    cut,
    read_response,
    read_to_end,
    serve,
    upgrade_request,
    with_request_line,
    ws_connect,
)
from .strategies import chunkings

pytestmark = pytest.mark.timeout(120)
EXAMPLES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ORIGINS = ("https://good.example", "http://also.example:8000")
SUBPROTOCOLS = ("chat", "superchat")  # the server's order of preference
HANDSHAKE_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def plain() -> Iterator[ServerProcess]:
    with serve() as server:
        yield server
        stop_cleanly(server)


@pytest.fixture(scope="module")
def custom() -> Iterator[ServerProcess]:
    """The test application (route() refuses /forbidden), a short handshake timeout."""
    with serve("--handshake-timeout", str(HANDSHAKE_TIMEOUT), app=APP) as server:
        yield server
        stop_cleanly(server)


@pytest.fixture(scope="module")
def chatty() -> Iterator[ServerProcess]:
    """A server that speaks :data:`SUBPROTOCOLS`."""
    with serve(*[f"--subprotocol={name}" for name in SUBPROTOCOLS]) as server:
        yield server
        stop_cleanly(server)


@pytest.fixture(scope="module")
def guarded() -> Iterator[ServerProcess]:
    with serve(*[f"--origin={origin}" for origin in ORIGINS]) as server:
        yield server
        stop_cleanly(server)


def answer(server: ServerProcess, *chunks: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``chunks``; the server's HTTP answer (status, headers, body), read by h11."""
    with socket.create_connection((HOST, server.port), timeout=30) as sock:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # refused early, before the request was all sent: the answer is there
        response = read_response(sock)
    if response.status == 101:
        return 101, response.headers, b""
    assert response.ended in ("eof", "reset"), "an error answer is followed by the close"
    return response.status, response.headers, response.body


def refused(server: ServerProcess, request: bytes, status: int) -> dict[str, str]:
    got, headers, body = answer(server, request)
    assert got == status, (got, body)
    assert headers["connection"] == "close"
    assert body.startswith(str(status).encode())
    return headers


# ---------------------------------------------------------------- Sec-WebSocket-Accept


def test_the_rfc_example(plain: ServerProcess) -> None:
    assert accept_key(RFC_KEY) == accept_of(RFC_KEY) == RFC_ACCEPT
    status, headers, _ = answer(plain, upgrade_request("/chat"))
    assert status == 101
    assert headers["sec-websocket-accept"] == RFC_ACCEPT
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert "sec-websocket-protocol" not in headers  # none offered, none chosen


@EXAMPLES
@given(nonce=st.binary(min_size=16, max_size=16))
def test_the_accept_for_any_key_is_wsprotos(plain: ServerProcess, nonce: bytes) -> None:
    key = base64.b64encode(nonce).decode()
    status, headers, _ = answer(plain, upgrade_request("/", key))
    assert status == 101
    assert headers["sec-websocket-accept"] == generate_accept_token(key.encode()).decode()
    assert accept_key(key) == headers["sec-websocket-accept"]


def test_wsproto_as_a_client_completes_the_handshake(plain: ServerProcess) -> None:
    """wsproto checks the answer its own way (its key, its accept check, its h11)."""
    client = WSConnection(ConnectionType.CLIENT)
    events: list[object] = []

    def until(kind: type) -> None:
        while not any(isinstance(e, kind) for e in events):
            data = sock.recv(65536)
            assert data, f"the server closed early: {events}"
            client.receive_data(data)
            events.extend(client.events())

    with socket.create_connection((HOST, plain.port), timeout=30) as sock:
        sock.sendall(client.send(Request(host="localhost", target="/wsproto")))
        until(AcceptConnection)
        sock.sendall(client.send(TextMessage("héllo")) + client.send(BytesMessage(b"\x00\xff")))
        sock.sendall(client.send(CloseConnection(code=4001, reason="done")))
        until(CloseConnection)
    kinds = [type(e) for e in events]
    assert kinds == [AcceptConnection, TextMessage, BytesMessage, CloseConnection]
    assert events[1].data == "héllo"  # type: ignore[attr-defined]
    assert events[2].data == b"\x00\xff"  # type: ignore[attr-defined]
    assert events[3].code == 4001  # type: ignore[attr-defined]


# ---------------------------------------------------------------- refusals


def test_headers_above_8_kib_get_400(plain: ServerProcess) -> None:
    base = upgrade_request("/")
    pad = MAX_REQUEST - len(base) - len("X-Pad: \r\n")
    at_limit = base[:-2] + b"X-Pad: " + b"p" * pad + b"\r\n\r\n"
    assert len(at_limit) == MAX_REQUEST
    assert answer(plain, at_limit)[0] == 101
    one_more = base[:-2] + b"X-Pad: " + b"p" * (pad + 1) + b"\r\n\r\n"
    refused(plain, one_more, 400)
    many = base[:-2] + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(100)) + b"\r\n"
    refused(plain, many, 400)
    # headers that never end: refused as soon as they pass the limit, not at the end
    endless = base[:-2] + b"X-Endless: " + b"e" * (2 * MAX_REQUEST)
    refused(plain, endless, 400)


@pytest.mark.parametrize(
    "request_bytes",
    [
        upgrade_request(drop=["Sec-WebSocket-Key"]),
        upgrade_request(key=""),
        upgrade_request(key="not base64 at all!!"),
        upgrade_request(key=base64.b64encode(b"fifteen bytes..").decode()),
        upgrade_request(key=base64.b64encode(b"seventeen bytes!!").decode()),
        upgrade_request(key="dGhlIHNhbXBsZSBub25jZQ"),  # padding missing
    ],
    ids=["missing", "empty", "not base64", "15 bytes", "17 bytes", "no padding"],
)
def test_a_bad_key_gets_400(plain: ServerProcess, request_bytes: bytes) -> None:
    refused(plain, request_bytes, 400)


@pytest.mark.parametrize(
    "request_bytes",
    [
        upgrade_request(drop=["Upgrade"]),
        upgrade_request(extra=[("Upgrade", "h2c")]),
        upgrade_request(drop=["Connection"]),
        upgrade_request(extra=[("Connection", "keep-alive")]),
        upgrade_request(drop=["Sec-WebSocket-Version"]),
        upgrade_request(extra=[("Sec-WebSocket-Version", "8")]),
        upgrade_request(extra=[("Sec-WebSocket-Version", "14")]),
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",  # a plain HTTP request
    ],
    ids=["no upgrade", "h2c", "no connection", "keep-alive", "no version", "v8", "v14", "http"],
)
def test_no_upgrade_or_another_version_gets_426(plain: ServerProcess, request_bytes: bytes) -> None:
    headers = refused(plain, request_bytes, 426)
    assert headers["sec-websocket-version"] == "13"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_a_method_other_than_get_gets_400(plain: ServerProcess, method: str) -> None:
    refused(plain, with_request_line(upgrade_request(), method=method), 400)


@pytest.mark.parametrize(
    "request_bytes",
    [
        with_request_line(upgrade_request(), version="HTTP/1.0"),
        upgrade_request(drop=["Host"]),
        upgrade_request(extra=[("Host", "a.example"), ("Host", "b.example")]),
        b"hello\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    ],
    ids=["HTTP/1.0", "no host", "two hosts", "garbage", "bad header name"],
)
def test_a_malformed_request_gets_400(plain: ServerProcess, request_bytes: bytes) -> None:
    refused(plain, request_bytes, 400)


def test_an_origin_not_allowed_gets_403(guarded: ServerProcess) -> None:
    for origin in ORIGINS:
        assert answer(guarded, upgrade_request(extra=[("Origin", origin)]))[0] == 101
    refused(guarded, upgrade_request(extra=[("Origin", "https://evil.example")]), 403)
    refused(guarded, upgrade_request(extra=[("Origin", "https://good.example.evil")]), 403)
    refused(guarded, upgrade_request(), 403)  # no Origin at all, when some are required


def test_a_path_the_application_refuses_gets_404(custom: ServerProcess) -> None:
    refused(custom, upgrade_request("/forbidden"), 404)
    assert answer(custom, upgrade_request("/allowed"))[0] == 101


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"])
def test_a_handshake_that_never_completes_is_closed(custom: ServerProcess, sent: bytes) -> None:
    """After --handshake-timeout the server closes: no answer, no 101, and no hang."""
    with socket.create_connection((HOST, custom.port), timeout=30) as sock:
        sock.sendall(sent)
        assert read_to_end(sock) in ("eof", "reset")


# ---------------------------------------------------------------- subprotocols


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ("superchat, chat", "chat"),  # the server's preference wins
        ("superchat", "superchat"),
        ("other, superchat", "superchat"),
        ("other", None),
        (None, None),
    ],
)
def test_a_subprotocol_is_chosen_from_those_offered(
    chatty: ServerProcess, offered: str | None, chosen: str | None
) -> None:
    extra = [("Sec-WebSocket-Protocol", offered)] if offered is not None else []
    status, headers, _ = answer(chatty, upgrade_request(extra=extra))
    assert status == 101
    assert headers.get("sec-websocket-protocol") == chosen


def test_the_websockets_client_gets_its_subprotocol(chatty: ServerProcess) -> None:
    with ws_connect(chatty, subprotocols=["superchat", "chat"]) as ws:
        assert ws.subprotocol == "chat"
        ws.send("sub")
        assert ws.recv(timeout=30) == "sub"


# ---------------------------------------------------------------- h11 as the oracle

TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
VALUE = "".join(chr(c) for c in range(0x21, 0x7F))
_names = st.text(TOKEN, min_size=1, max_size=12)
_values = st.text(VALUE + " \t", max_size=40).map(str.strip)
_ows = st.sampled_from(["", " ", "  ", "\t", " \t"])


def _case(draw: st.DrawFn, name: str) -> str:
    return draw(st.sampled_from([name, name.lower(), name.upper()]))


@st.composite
def upgrade_requests(draw: st.DrawFn) -> tuple[bytes, str]:
    """A well-formed upgrade request, varied where HTTP allows it; and its key."""
    key = base64.b64encode(draw(st.binary(min_size=16, max_size=16))).decode()
    segments = draw(
        st.lists(st.text(string.ascii_letters + string.digits + "-._~", max_size=8), max_size=3)
    )
    path = "/" + "/".join(segments)
    if draw(st.booleans()):
        path += "?" + draw(st.text(string.ascii_letters + "=&%20", max_size=20))
    connection = draw(
        st.sampled_from(["Upgrade", "upgrade", "keep-alive, Upgrade", "Upgrade,keep-alive"])
    )
    headers = [
        (
            "Host",
            draw(st.sampled_from(["127.0.0.1", "example.com:8080", "[::1]:80", "a-b.example"])),
        ),
        ("Upgrade", draw(st.sampled_from(["websocket", "WebSocket", "WEBSOCKET"]))),
        ("Connection", connection),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    optional = [
        ("Origin", "https://app.example"),
        ("User-Agent", "hypothesis/1.0 (test)"),
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
        ("Cookie", "a=b; c=d"),
        ("Cache-Control", "no-cache"),
    ]
    headers += draw(st.lists(st.sampled_from(optional), unique=True, max_size=4))
    headers += [
        ("X-" + name, value)
        for name, value in draw(st.lists(st.tuples(_names, _values), max_size=5))
    ]
    order = draw(st.permutations(range(len(headers))))
    lines = [f"GET {path} HTTP/1.1"]
    for i in order:
        name, value = headers[i]
        lines.append(f"{_case(draw, name)}:{draw(_ows)}{value}{draw(_ows)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def h11_reads(request: bytes) -> bool:
    """Whether h11, as a server, reads ``request`` as a well-formed request."""
    server = h11.Connection(our_role=h11.SERVER)
    server.receive_data(request)
    try:
        return isinstance(server.next_event(), h11.Request)
    except h11.RemoteProtocolError:
        return False


@EXAMPLES
@given(case=upgrade_requests(), data=st.data())
def test_a_request_h11_reads_is_upgraded_in_any_chunking(
    plain: ServerProcess, case: tuple[bytes, str], data: st.DataObject
) -> None:
    request, key = case
    assume(len(request) <= MAX_REQUEST)
    assert h11_reads(request), request
    count = data.draw(st.integers(0, 2), label="frames after the request")
    frames = [client_frame(TEXT, b"first"), client_frame(BINARY, b"second")][:count]
    wire = request + b"".join(frames)
    chunks = cut(wire, data.draw(chunkings(wire), label="cuts"))
    with RawClient(plain.port) as client:
        for chunk in chunks:
            client.send(chunk)
        response = read_response(client.sock, until_closed=False)
        assert response.status == 101
        assert response.headers["sec-websocket-accept"] == accept_of(key)
        client.reader.feed(response.rest)
        client.wait_for(count)
        assert client.events == [("text", "first"), ("binary", b"second")][:count]


class Head(NamedTuple):
    """A request's head, cut up for mutating."""

    method: bytes
    target: bytes
    version: bytes
    lines: tuple[bytes, ...]  # the header lines


def _adding(line: bytes) -> Callable[[Head], Head]:
    return lambda head: head._replace(lines=(*head.lines, line))


def _without_host(head: Head) -> Head:
    lines = tuple(line for line in head.lines if not line.lower().startswith(b"host:"))
    return head._replace(lines=lines)


MUTANTS: dict[str, Callable[[Head], Head]] = {
    "space before colon": _adding(b"X-Mutant : v"),
    "no colon": _adding(b"X-Mutant v"),
    "space in name": _adding(b"X Mutant: v"),
    "separator in name": _adding(b"X(Mutant): v"),
    "empty name": _adding(b": v"),
    "NUL in value": _adding(b"X-Mutant: a\x00b"),
    "CR in value": _adding(b"X-Mutant: a\rb"),
    "bad version": lambda head: head._replace(version=b"HTTP/1.x"),
    "space in target": lambda head: head._replace(target=head.target + b" x"),
    "control in target": lambda head: head._replace(target=head.target + b"\x01"),
    "leading space": lambda head: head._replace(lines=(b" " + head.lines[0], *head.lines[1:])),
    "two hosts": _adding(b"Host: second.example"),
    "no host": _without_host,
}
MUTATIONS = tuple(MUTANTS)


def mutate(request: bytes, how: str) -> bytes:
    head, _, _ = request.partition(b"\r\n\r\n")
    first, *lines = head.split(b"\r\n")
    method, target, version = first.split(b" ")
    mutant = MUTANTS[how](Head(method, target, version, tuple(lines)))
    request_line = b" ".join([mutant.method, mutant.target, mutant.version])
    return b"\r\n".join([request_line, *mutant.lines]) + b"\r\n\r\n"


@EXAMPLES
@given(case=upgrade_requests(), how=st.sampled_from(MUTATIONS), data=st.data())
def test_a_request_h11_refuses_gets_400(
    plain: ServerProcess, case: tuple[bytes, str], how: str, data: st.DataObject
) -> None:
    request = mutate(case[0], how)
    assume(len(request) <= MAX_REQUEST)
    assert not h11_reads(request), (how, request)
    chunks = cut(request, data.draw(chunkings(request), label="cuts"))
    status, _, _ = answer(plain, *chunks)
    assert status == 400, (how, request)


@pytest.mark.parametrize(
    "request_bytes",
    [
        upgrade_request().replace(b"Upgrade: websocket\r\n", b"Upgrade:\r\n websocket\r\n"),
        upgrade_request().replace(b"\r\n", b"\n"),
        upgrade_request(extra=[("X-Ctl", "a\x01b")]),
        upgrade_request(extra=[("Content-Length", "0"), ("Transfer-Encoding", "chunked")]),
    ],
    ids=["obs-fold", "bare LF", "control in value", "CL and TE"],
)
def test_forms_h11_still_reads_are_refused(plain: ServerProcess, request_bytes: bytes) -> None:
    assert h11_reads(request_bytes)
    refused(plain, request_bytes, 400)


def test_the_server_still_answers_after_all_that(plain: ServerProcess) -> None:
    with ws_connect(plain) as ws:
        ws.send("still here")
        assert ws.recv(timeout=30) == "still here"
