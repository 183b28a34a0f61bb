"""The server's HTTP core without sockets: transcripts, bad input, timers, keep-alive policy."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handshake_lab.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from handshake_lab.http_events import BodyReceived, NeedData, PeerClosed
from server.config import HTTPLimits
from server.http_conn import (
    Phase,
    RequestCompleted,
    RequestReceived,
    ServerEvent,
    ServerHTTPConnection,
)

LIMITS = HTTPLimits(
    max_header_bytes=1024,
    max_header_count=10,
    max_body_bytes=100,
    header_timeout_s=10.0,
    body_timeout_s=5.0,
    keep_alive_timeout_s=2.0,
    max_requests_per_connection=3,
)


def feed(
    conn: ServerHTTPConnection, data: bytes, *, bytewise: bool, now: float = 0.0
) -> list[ServerEvent]:
    """Feed `data` whole or a byte at a time; return every event up to the next NeedData."""
    events: list[ServerEvent] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        conn.receive_data(chunk, now)
        while True:
            event = conn.next_event(now)
            if isinstance(event, NeedData):
                break
            events.append(event)
            if isinstance(event, RequestCompleted | PeerClosed):
                return events
    return events


def body_of(events: list[ServerEvent]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, BodyReceived))


def parse_response(raw: bytes, method: bytes = b"GET") -> tuple[h11.Response, bytes]:
    """Parse our output with h11 acting as a client: our bytes must be valid HTTP."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    response = client.next_event()
    assert isinstance(response, h11.Response)
    body = b""
    while True:
        event = client.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        else:
            assert isinstance(event, h11.EndOfMessage)
            return response, body


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def bytewise(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


# --- valid transcripts, each fed whole and byte by byte ---------------------------------


def test_get_request_is_received(bytewise: bool) -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    events = feed(conn, b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n", bytewise=bytewise)
    assert isinstance(events[0], RequestReceived)
    assert (events[0].method, events[0].target, events[0].http_version) == ("GET", "/a?b=1", "1.1")
    assert events[0].index == 1
    assert isinstance(events[-1], RequestCompleted)
    assert conn.phase is Phase.RESPONDING


def test_content_length_body(bytewise: bool) -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    events = feed(conn, raw, bytewise=bytewise)
    assert body_of(events) == b"hello"
    assert isinstance(events[-1], RequestCompleted)


def test_chunked_body(bytewise: bool) -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    raw = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
    )
    events = feed(conn, raw, bytewise=bytewise)
    assert body_of(events) == b"hello"
    assert isinstance(events[-1], RequestCompleted)


def test_pipelined_requests_come_out_one_cycle_at_a_time() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    raw = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
    first = feed(conn, raw, bytewise=False)  # both requests in one read
    assert isinstance(first[0], RequestReceived)
    assert first[0].target == "/1"
    out = conn.send_response(1.0, 200, [], b"one")
    assert parse_response(out)[1] == b"one"
    # The second request is already buffered: it comes out without new data.
    assert conn.phase is Phase.EXPECT_HEAD
    second = conn.next_event(1.0)
    assert isinstance(second, RequestReceived)
    assert (second.target, second.index) == ("/2", 2)


# --- bad input: the status to answer and the kind to count ------------------------------

GET = b"GET / HTTP/1.1\r\nHost: x\r\n"  # a valid head up to its last fields

BAD_REQUESTS = [
    # RFC 9112 §3: request-line = method SP request-target SP HTTP-version
    pytest.param(b"GARBAGE\r\n\r\n", 400, "bad_request", id="malformed-request-line"),
    pytest.param(b"GET /\r\n\r\n", 400, "bad_request", id="http-0.9-style-line"),
    # RFC 9112 §5: field-line = field-name ":" OWS field-value OWS; no space before ':'
    pytest.param(
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, "bad_request", id="space-before-colon"
    ),
    pytest.param(GET + b"NoColon\r\n\r\n", 400, "bad_request", id="no-colon"),
    # RFC 9110 §5.5: NUL and bare CR are invalid in field values
    pytest.param(GET + b"X: a\x00b\r\n\r\n", 400, "bad_request", id="nul"),
    pytest.param(GET + b"X: a\rb\r\n\r\n", 400, "bad_request", id="bare-cr"),
    # RFC 9112 §3.2: a 1.1 request without Host gets 400
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, "bad_request", id="missing-host"),
    # RFC 9110 §8.6: differing Content-Length values
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400, "bad_request", id="conflicting-content-length",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "bad_request",
        id="negative-content-length",
    ),
    # RFC 9112 §6.3 ¶3: Transfer-Encoding with Content-Length is a smuggling shape
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        400, "conflicting_framing", id="te-and-cl",
    ),
    # RFC 9112 §6.1: HTTP/1.0 has no chunked framing
    pytest.param(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
        "conflicting_framing", id="te-on-http-1.0",
    ),
    # RFC 9112 §7: only codings we implement
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
        "unsupported_transfer_coding", id="te-gzip",
    ),
    # RFC 9112 §7.1: chunk-size = 1*HEXDIG
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
        "bad_request", id="bad-chunk-size",
    ),
    # RFC 9110 §15.6.6: 505 for a major version we do not speak
    pytest.param(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "version_not_supported", id="2.0"),
    pytest.param(b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505, "version_not_supported", id="0.9"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "version_not_supported", id="h2"),
    pytest.param(
        bytes.fromhex("16030100f4010000f00303") + bytes(40), 400, "bad_request", id="tls-hello"
    ),
    # RFC 6585 §5: 431 for header fields too large, whatever way they arrive
    pytest.param(
        GET + b"".join(b"X-%d: 1\r\n" % i for i in range(11)) + b"\r\n",
        431, "header_too_large", id="too-many-headers",
    ),
    pytest.param(
        GET + b"X: " + b"a" * 1100 + b"\r\n\r\n", 431, "header_too_large",
        id="header-too-large",
    ),
    # RFC 9110 §15.5.14: 413 for a body over the limit, declared or chunked
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n", 413, "body_too_large",
        id="content-length-over-limit",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n" + b"a" * 101,
        413, "body_too_large", id="chunked-over-limit",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "status", "kind"), BAD_REQUESTS)
def test_bad_request_is_refused(raw: bytes, status: int, kind: str, bytewise: bool) -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    with pytest.raises(RemoteProtocolError) as caught:
        feed(conn, raw, bytewise=bytewise)
    assert (caught.value.status_hint, caught.value.kind) == (status, kind)
    answer = conn.error_response(caught.value)
    response, body = parse_response(answer)
    assert response.status_code == status
    assert (b"connection", b"close") in list(response.headers)
    assert str(status).encode() in body
    assert conn.phase is Phase.CLOSED
    assert conn.close_reason == kind


def test_head_size_limit_counts_a_head_that_arrives_whole() -> None:
    # h11 checks its limit only while the head is incomplete; ours covers a head in one read.
    limits = HTTPLimits(max_header_bytes=200)
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: " + b"a" * 150 + b"\r\nX-B: " + b"b" * 60
    conn = ServerHTTPConnection(limits, 0.0)
    with pytest.raises(RemoteProtocolError) as caught:
        feed(conn, head + b"\r\n\r\n", bytewise=False)
    assert caught.value.status_hint == 431


def test_peer_leaving_mid_request_is_an_incomplete_request() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    conn.receive_data(b"GET / HTTP/1.1\r\nHo", 0.0)
    assert isinstance(conn.next_event(0.0), NeedData)
    conn.receive_data(b"", 0.0)
    with pytest.raises(RemoteProtocolError) as caught:
        conn.next_event(0.0)
    assert caught.value.kind == "incomplete_request"


def test_peer_closing_between_requests_is_peer_closed() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    conn.receive_data(b"", 0.0)
    assert isinstance(conn.next_event(0.0), PeerClosed)
    assert conn.close_reason == "peer_closed"


# --- keep-alive policy ------------------------------------------------------------------


def respond(conn: ServerHTTPConnection, raw: bytes, now: float = 0.0, body: bytes = b"ok") -> bytes:
    events = feed(conn, raw, bytewise=False, now=now)
    assert isinstance(events[-1], RequestCompleted)
    return conn.send_response(now, 200, [(b"content-type", b"text/plain")], body)


def test_http11_keeps_the_connection_and_says_so() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    response, body = parse_response(respond(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    headers = dict(response.headers)
    assert body == b"ok"
    assert b"connection" not in headers
    assert headers[b"keep-alive"] == b"timeout=2, max=2"
    assert conn.phase is Phase.EXPECT_REQUEST


def test_http10_closes_after_the_response() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    response, _ = parse_response(respond(conn, b"GET / HTTP/1.0\r\n\r\n"))
    assert dict(response.headers)[b"connection"] == b"close"
    assert conn.phase is Phase.CLOSED
    assert conn.close_reason == "http_1.0"


def test_http10_keep_alive_when_asked() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    raw = b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    response, _ = parse_response(respond(conn, raw))
    assert dict(response.headers)[b"connection"] == b"keep-alive"
    assert conn.phase is Phase.EXPECT_REQUEST
    # A second 1.0 request on the same connection is parsed by a fresh h11 connection.
    events = feed(conn, b"GET /2 HTTP/1.0\r\n\r\n", bytewise=False)
    assert isinstance(events[0], RequestReceived)
    assert (events[0].target, events[0].index) == ("/2", 2)
    conn.send_response(0.0, 200, [], b"")
    assert conn.close_reason == "http_1.0"


def test_client_connection_close_is_honoured() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    response, _ = parse_response(
        respond(conn, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    )
    assert dict(response.headers)[b"connection"] == b"close"
    assert conn.close_reason == "client_asked_close"


def test_request_cap_makes_the_server_the_active_closer() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    for index in range(1, LIMITS.max_requests_per_connection + 1):
        response, _ = parse_response(respond(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        closes = dict(response.headers).get(b"connection") == b"close"
        assert closes is (index == LIMITS.max_requests_per_connection)
    assert conn.phase is Phase.CLOSED
    assert conn.close_reason == "max_requests"


def test_head_response_has_length_but_no_body() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    out = respond(conn, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", body=b"12345")
    response, body = parse_response(out, method=b"HEAD")
    assert dict(response.headers)[b"content-length"] == b"5"
    assert body == b""
    assert out.endswith(b"\r\n\r\n")


def test_expect_100_continue_is_sent_only_when_the_body_is_wanted() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    conn.receive_data(head, 0.0)
    assert isinstance(conn.next_event(0.0), RequestReceived)
    assert isinstance(conn.next_event(0.0), NeedData)
    assert conn.data_to_send() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.data_to_send() == b""
    conn.receive_data(b"hi", 0.0)
    assert body_of([conn.next_event(0.0)]) == b"hi"


def test_expect_100_continue_with_a_too_large_body_gets_413_and_no_100() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
    conn.receive_data(head, 0.0)
    with pytest.raises(RemoteProtocolError) as caught:
        conn.next_event(0.0)
    assert caught.value.status_hint == 413
    assert conn.data_to_send() == b""


def test_send_response_without_a_request_is_a_local_error() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    with pytest.raises(LocalProtocolError):
        conn.send_response(0.0, 200, [], b"")


# --- timers -----------------------------------------------------------------------------


def test_silent_connection_closes_quietly_at_the_header_deadline() -> None:
    conn = ServerHTTPConnection(LIMITS, now=100.0)
    deadline = conn.get_timer()
    assert deadline == 100.0 + LIMITS.header_timeout_s
    with pytest.raises(LocalProtocolError):
        conn.handle_timeout(deadline - 0.1)
    assert conn.handle_timeout(deadline) == "idle_timeout"
    assert conn.get_timer() is None


def test_dribbled_head_gets_408_by_the_deadline_counted_from_accept() -> None:
    conn = ServerHTTPConnection(LIMITS, now=0.0)
    for second in range(9):  # one byte a second never moves the deadline
        conn.receive_data(b"G", float(second))
        assert isinstance(conn.next_event(float(second)), NeedData)
    deadline = conn.get_timer()
    assert deadline == LIMITS.header_timeout_s
    with pytest.raises(RemoteProtocolError) as caught:
        conn.handle_timeout(deadline)
    assert (caught.value.status_hint, caught.value.kind) == (408, "timeout")


def test_dribbled_body_gets_408() -> None:
    conn = ServerHTTPConnection(LIMITS, now=0.0)
    feed(
        conn, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab", bytewise=False, now=1.0
    )
    deadline = conn.get_timer()
    assert deadline == 1.0 + LIMITS.body_timeout_s
    with pytest.raises(RemoteProtocolError) as caught:
        conn.handle_timeout(deadline)
    assert caught.value.status_hint == 408


def test_keep_alive_timeout_after_a_response() -> None:
    conn = ServerHTTPConnection(LIMITS, now=0.0)
    respond(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", now=3.0)
    deadline = conn.get_timer()
    assert deadline == 3.0 + LIMITS.keep_alive_timeout_s
    assert conn.handle_timeout(deadline) == "keep_alive_timeout"


def test_next_request_head_deadline_starts_at_its_first_byte() -> None:
    conn = ServerHTTPConnection(LIMITS, now=0.0)
    respond(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", now=1.0)
    conn.receive_data(b"GET", 2.5)
    deadline = conn.get_timer()
    assert deadline == 2.5 + LIMITS.header_timeout_s


def test_no_timer_while_the_application_answers() -> None:
    conn = ServerHTTPConnection(LIMITS, now=0.0)
    feed(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytewise=False)
    assert conn.get_timer() is None


def test_drain_closes_an_idle_connection_and_finishes_a_busy_one() -> None:
    idle = ServerHTTPConnection(LIMITS, now=0.0)
    idle.begin_drain(5.0)
    deadline = idle.get_timer()
    assert deadline is not None
    assert idle.handle_timeout(deadline) == "shutdown"

    busy = ServerHTTPConnection(LIMITS, now=0.0)
    feed(busy, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytewise=False)
    busy.begin_drain(5.0)
    response, _ = parse_response(busy.send_response(5.0, 200, [], b"done"))
    assert dict(response.headers)[b"connection"] == b"close"
    assert busy.close_reason == "shutdown"


# --- fuzz: any bytes give events or our ProtocolError -----------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=200), max_size=8))
def test_random_bytes_raise_only_protocol_errors(chunks: list[bytes]) -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk, 0.0)
            while True:
                event = conn.next_event(0.0)
                if isinstance(event, NeedData | PeerClosed):
                    break
                if isinstance(event, RequestCompleted):
                    conn.send_response(0.0, 200, [], b"x")
                    if conn.phase is Phase.CLOSED:
                        return
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["GET", "POST", "HEAD", "PUT"]),
    st.lists(
        st.tuples(
            st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,15}\Z"),
            st.from_regex(r"\A[ -~]{0,30}\Z"),
        ),
        max_size=5,
    ),
    st.binary(max_size=50),
)
def test_requests_h11_writes_are_read_back_intact(
    method: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    clean = [
        (name, value.strip())
        for name, value in headers
        if name.lower()
        not in ("host", "content-length", "transfer-encoding", "connection", "expect")
    ]
    client = h11.Connection(h11.CLIENT)
    all_headers = [("Host", "x"), ("Content-Length", str(len(body))), *clean]
    raw = client.send(h11.Request(method=method, target="/p", headers=all_headers))
    raw += client.send(h11.Data(data=body)) + client.send(h11.EndOfMessage())
    conn = ServerHTTPConnection(HTTPLimits(), 0.0)
    events = feed(conn, raw, bytewise=False)
    request = events[0]
    assert isinstance(request, RequestReceived)
    assert request.method == method
    assert body_of(events) == body


def test_http10_keep_alive_then_fin_is_peer_closed() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    conn.receive_data(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0.0)
    conn.receive_data(b"", 0.0)  # the client sent FIN right after its request
    assert isinstance(conn.next_event(0.0), RequestReceived)
    assert isinstance(conn.next_event(0.0), RequestCompleted)
    conn.send_response(0.0, 200, [], b"")
    assert isinstance(conn.next_event(0.0), PeerClosed)


def test_misuse_is_a_local_error() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    conn.receive_data(b"", 0.0)
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"GET", 0.0)
    responding = ServerHTTPConnection(LIMITS, 0.0)
    feed(responding, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n", bytewise=False)
    with pytest.raises(LocalProtocolError):  # asked for the next request before answering
        responding.next_event(0.0)


@pytest.mark.parametrize(
    "field",
    [(b"bad name", b"x"), (b"x-ok", b"a\r\nSet-Cookie: injected"), (b"x-ok", b"nul\x00")],
)
def test_response_header_injection_is_refused(field: tuple[bytes, bytes]) -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    feed(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytewise=False)
    for _ in range(2):  # a bad field is never remembered as checked
        with pytest.raises(LocalProtocolError):
            conn.send_response(0.0, 200, [field], b"")


@pytest.mark.parametrize("status", [101, 204, 304])
def test_statuses_this_writer_does_not_frame_are_refused(status: int) -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    feed(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytewise=False)
    with pytest.raises(LocalProtocolError):
        conn.send_response(0.0, status, [], b"")


def test_a_head_refused_by_our_own_checks_gets_no_body() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    raw = b"HEAD / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(11))
    with pytest.raises(RemoteProtocolError) as caught:
        feed(conn, raw + b"\r\n", bytewise=False)
    answer = conn.error_response(caught.value)
    response, _ = parse_response(answer, method=b"HEAD")
    assert response.status_code == 431
    assert answer.endswith(b"\r\n\r\n")


def test_current_request_is_the_one_being_answered() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    assert conn.current_request is None
    feed(conn, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n", bytewise=False)
    assert conn.current_request is not None
    assert conn.current_request.target == "/x"
    conn.send_response(0.0, 200, [], b"")
    assert conn.current_request is None


def test_many_distinct_header_values_stay_valid_and_bounded() -> None:
    limits = HTTPLimits(max_requests_per_connection=10_000)
    conn = ServerHTTPConnection(limits, 0.0)
    for n in range(1100):  # more distinct fields than the remembered set holds
        feed(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytewise=False)
        response, _ = parse_response(conn.send_response(0.0, 200, [(b"x-n", b"%d" % n)], b""))
        assert dict(response.headers)[b"x-n"] == b"%d" % n


# --- switching protocols (the WebSocket upgrade) --------------------------------------------

UPGRADE = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def test_switch_protocols_writes_a_101_and_hands_over_the_bytes_after_the_request() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    frames = b"\x81\x85abcd" + b"early"  # a client may send frames before it reads the 101
    events = feed(conn, UPGRADE + frames, bytewise=False)
    assert isinstance(events[-1], RequestCompleted)
    head = conn.switch_protocols([(b"upgrade", b"websocket"), (b"connection", b"Upgrade")])
    assert conn.trailing_data == frames
    assert conn.phase is Phase.SWITCHED
    assert conn.get_timer() is None  # HTTP's deadlines end here
    # A client that proposed the upgrade reads our 101 as the switch (h11 as the judge).
    client = h11.Connection(h11.CLIENT)
    client.send(
        h11.Request(
            method="GET",
            target="/ws",
            headers=[("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade")],
        )
    )
    client.send(h11.EndOfMessage())
    client.receive_data(head + b"frames")
    switched = client.next_event()
    assert isinstance(switched, h11.InformationalResponse)
    assert switched.status_code == 101
    assert b"content-length" not in dict(switched.headers)
    assert client.their_state is h11.SWITCHED_PROTOCOL
    assert client.trailing_data[0] == b"frames"


def test_switch_protocols_needs_a_complete_request() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    with pytest.raises(LocalProtocolError, match="no request"):
        conn.switch_protocols([])


def test_a_response_can_close_the_connection_whatever_the_policy() -> None:
    conn = ServerHTTPConnection(LIMITS, 0.0)
    feed(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytewise=False)
    out = conn.send_response(0.0, 400, [], b"no\n", close_reason="ws_bad_key")
    response, _ = parse_response(out)
    assert dict(response.headers)[b"connection"] == b"close"
    assert (conn.phase, conn.close_reason) == (Phase.CLOSED, "ws_bad_key")
