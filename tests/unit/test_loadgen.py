"""The load generator's response framing (bench.loadgen.ResponseParser): no sockets."""

from __future__ import annotations

import pytest

from bench.loadgen import MAX_HEAD_BYTES, FramingError, LoadConfig, Response, ResponseParser

BODY = b"x" * 792
KEEP = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 792\r\n\r\n" + BODY
CLOSE = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc"


def feed_all(parser: ResponseParser, data: bytes, *, byte_by_byte: bool) -> list[Response]:
    if not byte_by_byte:
        return parser.feed(data)
    out: list[Response] = []
    for i in range(len(data)):
        out += parser.feed(data[i : i + 1])
    return out


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "byte_by_byte"])
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(KEEP, [Response(200, True, 792)], id="http11_keepalive"),
        # RFC 9112 §9.6: Connection: close ends the connection after this response.
        pytest.param(CLOSE, [Response(200, False, 3)], id="http11_close"),
        pytest.param(KEEP + CLOSE, [Response(200, True, 792), Response(200, False, 3)], id="two"),
        # RFC 9112 §9.3: HTTP/1.0 persists only with Connection: keep-alive.
        pytest.param(
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", [Response(200, False, 2)], id="h10"
        ),
        pytest.param(
            b"HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 2\r\n\r\nok",
            [Response(200, True, 2)],
            id="h10_keepalive",
        ),
        # RFC 9112 §6.3 rule 1: 204 has no body, with or without Content-Length.
        pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", [Response(204, True, 0)], id="204"),
        pytest.param(
            b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n", [Response(503, True, 0)], id="503"
        ),
    ],
)
def test_frames_by_content_length(raw: bytes, expected: list[Response], byte_by_byte: bool) -> None:
    parser = ResponseParser()
    assert feed_all(parser, raw, byte_by_byte=byte_by_byte) == expected
    assert parser.feed_eof() is None  # nothing left over


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "byte_by_byte"])
def test_body_without_length_runs_to_the_end(byte_by_byte: bool) -> None:
    # RFC 9112 §6.3 rule 8: no Content-Length, no Transfer-Encoding: read until close.
    parser = ResponseParser()
    assert feed_all(parser, b"HTTP/1.0 200 OK\r\n\r\nhello", byte_by_byte=byte_by_byte) == []
    assert parser.feed_eof() == Response(200, False, 5)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        pytest.param(b"HTTX/1.1 200 OK\r\n\r\n", "bad_status_line", id="not_http"),
        pytest.param(b"HTTP/1.1 2x0 OK\r\n\r\n", "bad_status_line", id="bad_code"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "bad_content_length", id="x"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad_content_length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "chunked"),
        pytest.param(b"HTTP/1.1 200 OK\r\n" + b"a" * MAX_HEAD_BYTES, "head_too_large"),
    ],
)
def test_bad_heads_are_framing_errors(raw: bytes, kind: str) -> None:
    with pytest.raises(FramingError) as caught:
        ResponseParser().feed(raw)
    assert caught.value.kind == kind


@pytest.mark.parametrize("raw", [KEEP[:-1], KEEP[:20]], ids=["inside_body", "inside_head"])
def test_end_inside_a_response_is_truncation(raw: bytes) -> None:
    parser = ResponseParser()
    assert parser.feed(raw) == []
    with pytest.raises(FramingError) as caught:
        parser.feed_eof()
    assert caught.value.kind == "truncated"


def test_requests_are_encoded_once_per_mode() -> None:
    assert LoadConfig(port=8080).request() == b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
    assert LoadConfig(port=8080, mode="http10", path="/x").request() == (
        b"GET /x HTTP/1.0\r\nHost: 127.0.0.1:8080\r\n\r\n"
    )
