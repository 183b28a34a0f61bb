"""The routes, as pure functions."""

from __future__ import annotations

import pytest

from server.app import App, Request, Response
from server.config import ServerConfig

APP = App(ServerConfig(max_delay_ms=1000, max_bytes=1000))


def call(
    method: str, target: str, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> Response:
    response = APP.handle(Request(method, target, "1.1", headers or [(b"host", b"lab:1")], body))
    assert isinstance(response, Response)
    return response


def test_index_tells_what_to_try_with_the_request_host() -> None:
    response = call("GET", "/")
    assert response.status == 200
    assert b"curl --http1.0 http://lab:1/" in response.body


def test_echo_returns_body_and_content_type() -> None:
    response = call("POST", "/echo", b"hi", [(b"content-type", b"text/x-test")])
    assert (response.status, response.body) == (200, b"hi")
    assert response.headers is not None
    assert (b"content-type", b"text/x-test") in response.headers


def test_delay_is_returned_not_slept() -> None:
    response = call("GET", "/delay?ms=250")
    assert response.status == 200
    assert response.delay_s == pytest.approx(0.25)


def test_bytes_gives_exactly_n() -> None:
    assert len(call("GET", "/bytes?n=777").body) == 777
    assert call("GET", "/bytes?n=0").body == b""


@pytest.mark.parametrize(
    "target",
    ["/delay", "/delay?ms=abc", "/delay?ms=-1", "/delay?ms=1001", "/bytes?n=1001", "/bytes?n=1e3"],
)
def test_numbers_are_bounded(target: str) -> None:
    response = call("GET", target)
    assert response.status == 400
    assert response.delay_s == 0


def test_unknown_path_is_404_and_wrong_method_is_405_with_allow() -> None:
    assert call("GET", "/nope").status == 404
    response = call("GET", "/echo")
    assert response.status == 405
    assert response.headers is not None
    assert dict(response.headers)[b"allow"] == b"POST, PUT"


def test_no_route_serves_files_from_the_request_path() -> None:
    assert call("GET", "/../../etc/passwd").status == 404
    assert call("GET", "/%2e%2e/etc/passwd").status == 404
