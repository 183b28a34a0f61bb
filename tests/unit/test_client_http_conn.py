"""The client's HTTP core without sockets: request bytes, response parsing, reuse."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.http_conn import (
    ClientEvent,
    ClientHTTPConnection,
    ResponseCompleted,
    ResponseReceived,
)
from handshake_lab.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from handshake_lab.http_events import BodyReceived, NeedData, PeerClosed

HOST = [(b"host", b"x")]


def read_all(conn: ClientHTTPConnection, data: bytes, *, bytewise: bool) -> list[ClientEvent]:
    events: list[ClientEvent] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in [*chunks]:
        conn.receive_data(chunk)
        while not isinstance(event := conn.next_event(), NeedData):
            events.append(event)
            if isinstance(event, ResponseCompleted | PeerClosed):
                return events
    return events


def server_reads(raw: bytes) -> tuple[h11.Request, bytes]:
    """Parse what the client wrote with h11 as the server: it must be valid HTTP."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(raw)
    request = server.next_event()
    assert isinstance(request, h11.Request)
    body = b""
    while isinstance(event := server.next_event(), h11.Data):
        body += event.data
    assert isinstance(event, h11.EndOfMessage)
    return request, body


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def bytewise(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_http11_request_bytes_parse_back() -> None:
    conn = ClientHTTPConnection("1.1")
    raw = conn.send_request("POST", "/echo", HOST, b"hello")
    request, body = server_reads(raw)
    assert (request.method, request.target, request.http_version) == (b"POST", b"/echo", b"1.1")
    assert dict(request.headers)[b"content-length"] == b"5"
    assert body == b"hello"


def test_http10_request_line_says_1_0() -> None:
    conn = ClientHTTPConnection("1.0")
    raw = conn.send_request("GET", "/", HOST)
    assert raw.startswith(b"GET / HTTP/1.0\r\n")
    request, _ = server_reads(raw)
    assert request.http_version == b"1.0"


def test_keep_alive_response_makes_the_connection_reusable(bytewise: bool) -> None:
    conn = ClientHTTPConnection("1.1")
    conn.send_request("GET", "/", HOST)
    events = read_all(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", bytewise=bytewise)
    head = events[0]
    assert isinstance(head, ResponseReceived)
    assert (head.status, head.reason, head.http_version) == (200, "OK", "1.1")
    assert b"".join(e.data for e in events if isinstance(e, BodyReceived)) == b"ok"
    assert conn.reusable
    assert not conn.server_will_close
    conn.start_next_cycle()
    assert conn.send_request("GET", "/2", HOST).startswith(b"GET /2 ")
    assert conn.requests == 2


def test_connection_close_response_is_not_reusable(bytewise: bool) -> None:
    conn = ClientHTTPConnection("1.1")
    conn.send_request("GET", "/", HOST)
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    read_all(conn, raw, bytewise=bytewise)
    assert not conn.reusable
    assert conn.server_will_close


def test_http10_mode_is_never_reusable_even_if_the_server_keeps_alive() -> None:
    conn = ClientHTTPConnection("1.0")
    conn.send_request("GET", "/", HOST)
    read_all(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", bytewise=False)
    assert not conn.reusable


def test_close_delimited_body_from_an_http10_server() -> None:
    conn = ClientHTTPConnection("1.1")
    conn.send_request("GET", "/", HOST)
    events = read_all(conn, b"HTTP/1.0 200 OK\r\n\r\nuntil the end", bytewise=False)
    assert b"".join(e.data for e in events if isinstance(e, BodyReceived)) == b"until the end"
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ResponseCompleted)
    assert conn.server_will_close


def test_100_continue_is_not_the_answer() -> None:
    conn = ClientHTTPConnection("1.1")
    conn.send_request("POST", "/", HOST, b"x")
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    events = read_all(conn, raw, bytewise=False)
    assert isinstance(events[0], ResponseReceived)
    assert events[0].status == 201


def test_server_closing_before_answering_is_peer_closed() -> None:
    conn = ClientHTTPConnection("1.1")
    conn.send_request("GET", "/", HOST)
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), PeerClosed)
    assert not conn.response_started


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"NOT HTTP\r\n\r\n", id="garbage-status-line"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", id="bad-content-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", id="truncated-body"),
    ],
)
def test_bad_responses_raise_remote_errors(raw: bytes) -> None:
    conn = ClientHTTPConnection("1.1")
    conn.send_request("GET", "/", HOST)

    def read_to_the_end() -> None:
        read_all(conn, raw, bytewise=False)
        conn.receive_data(b"")
        conn.next_event()

    with pytest.raises(RemoteProtocolError) as caught:
        read_to_the_end()
    assert caught.value.kind == "bad_response"


def test_a_second_request_before_the_response_is_a_local_error() -> None:
    conn = ClientHTTPConnection("1.1")
    conn.send_request("GET", "/", HOST)
    with pytest.raises(LocalProtocolError):
        conn.send_request("GET", "/", HOST)


def test_unknown_version_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        ClientHTTPConnection("2")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=200), max_size=8))
def test_random_responses_raise_only_protocol_errors(chunks: list[bytes]) -> None:
    conn = ClientHTTPConnection("1.1")
    conn.send_request("GET", "/", HOST)
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            while not isinstance(event := conn.next_event(), NeedData):
                if isinstance(event, ResponseCompleted | PeerClosed):
                    return
    except ProtocolError:
        pass


def test_data_after_the_servers_fin_is_a_local_error() -> None:
    conn = ClientHTTPConnection("1.1")
    conn.send_request("GET", "/", HOST)
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"HTTP/1.1 200 OK\r\n")


def test_an_invalid_request_header_is_a_local_error() -> None:
    conn = ClientHTTPConnection("1.1")
    with pytest.raises(LocalProtocolError):
        conn.send_request("GET", "/", [*HOST, (b"bad name", b"x")])


def test_next_cycle_before_the_response_is_a_local_error() -> None:
    conn = ClientHTTPConnection("1.1")
    conn.send_request("GET", "/", HOST)
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()


def test_fin_after_a_closing_response_is_peer_closed() -> None:
    conn = ClientHTTPConnection("1.1")
    conn.send_request("GET", "/", HOST)
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert isinstance(read_all(conn, raw, bytewise=False)[-1], ResponseCompleted)
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), PeerClosed)


def test_a_101_to_an_upgrade_request_switches_and_keeps_the_bytes_after_it() -> None:
    conn = ClientHTTPConnection()
    headers = [*HOST, (b"upgrade", b"websocket"), (b"connection", b"Upgrade")]
    conn.send_request("GET", "/ws", headers)
    conn.receive_data(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi")
    event = conn.next_event()
    assert isinstance(event, ResponseReceived)
    assert (event.status, event.reason) == (101, "Switching Protocols")
    assert conn.switched
    assert conn.trailing_data == b"\x81\x02hi"
    assert not conn.reusable
