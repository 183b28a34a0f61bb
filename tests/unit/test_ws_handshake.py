"""The opening handshake's rules (RFC 6455 §4, RFC 7692 §5), both ends, without sockets."""

from __future__ import annotations

import base64

import pytest
from wsproto.extensions import PerMessageDeflate

from handshake_lab.errors import RemoteProtocolError
from handshake_lab.ws_handshake import (
    accept_headers,
    accept_token,
    check_upgrade_request,
    check_upgrade_response,
    client_request_headers,
    encode_key,
    header_tokens,
    is_upgrade_request,
    negotiate_deflate,
)

Headers = list[tuple[bytes, bytes]]
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example key ...
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # ... and the accept value the RFC derives from it


def request_headers(**replace: bytes | None) -> Headers:
    """A valid upgrade request's fields; keywords replace (or, with None, drop) one."""
    fields = {
        "host": b"lab:8080",
        "upgrade": b"websocket",
        "connection": b"keep-alive, Upgrade",
        "sec-websocket-key": KEY,
        "sec-websocket-version": b"13",
    }
    for name, value in replace.items():
        fields[name.replace("_", "-")] = value  # type: ignore[assignment]
    return [(name.encode(), value) for name, value in fields.items() if value is not None]


def test_accept_token_is_the_rfc_example() -> None:
    assert accept_token(KEY) == ACCEPT


def test_encode_key_takes_exactly_16_bytes() -> None:
    key = encode_key(bytes(range(16)))
    assert base64.b64decode(key) == bytes(range(16))
    with pytest.raises(ValueError, match="16 random bytes"):
        encode_key(b"short")


def test_header_tokens_split_lower_and_strip_across_fields() -> None:
    headers = [(b"Connection", b"keep-alive, Upgrade"), (b"connection", b" ,close")]
    assert header_tokens(headers, b"connection") == [b"keep-alive", b"upgrade", b"close"]
    assert is_upgrade_request([(b"Upgrade", b"WebSocket")])
    assert not is_upgrade_request([(b"upgrade", b"h2c")])


def test_a_valid_request_gives_its_key_offers_and_origin() -> None:
    headers = [
        *request_headers(),
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits, x-y"),
        (b"origin", b"http://lab"),
    ]
    offer = check_upgrade_request("GET", "1.1", headers)
    assert offer.key == KEY
    assert offer.extension_offers == ["permessage-deflate; client_max_window_bits", "x-y"]
    assert offer.origin == "http://lab"
    assert check_upgrade_request("GET", "1.1", request_headers()).origin is None


@pytest.mark.parametrize(
    ("method", "version", "headers", "status", "kind"),
    [
        # §4.1 step 2: the method of the request MUST be GET.
        pytest.param("POST", "1.1", request_headers(), 400, "ws_bad_method", id="post"),
        # §4.1 step 2: the HTTP version MUST be at least 1.1.
        pytest.param("GET", "1.0", request_headers(), 400, "ws_bad_version", id="http-1.0"),
        # §4.2.1 step 3: Upgrade containing "websocket".
        pytest.param(
            "GET", "1.1", request_headers(upgrade=None), 400, "ws_not_upgrade", id="no-upgrade"
        ),
        # §4.2.1 step 4: Connection containing "Upgrade".
        pytest.param(
            "GET",
            "1.1",
            request_headers(connection=b"keep-alive"),
            400,
            "ws_not_upgrade",
            id="no-connection-upgrade",
        ),
        # §4.2.1 step 6: Sec-WebSocket-Version is required ...
        pytest.param(
            "GET",
            "1.1",
            request_headers(sec_websocket_version=None),
            400,
            "ws_bad_version",
            id="no-version",
        ),
        # ... and §4.4: another version gets 426 with the versions we speak.
        pytest.param(
            "GET",
            "1.1",
            request_headers(sec_websocket_version=b"8"),
            426,
            "ws_unsupported_version",
            id="version-8",
        ),
        pytest.param(
            "GET",
            "1.1",
            [*request_headers(), (b"sec-websocket-version", b"8")],
            426,
            "ws_unsupported_version",
            id="two-versions",
        ),
        # §4.2.1 step 5: a Sec-WebSocket-Key that decodes to 16 bytes.
        pytest.param(
            "GET", "1.1", request_headers(sec_websocket_key=None), 400, "ws_bad_key", id="no-key"
        ),
        pytest.param(
            "GET",
            "1.1",
            [*request_headers(), (b"sec-websocket-key", KEY)],
            400,
            "ws_bad_key",
            id="two-keys",
        ),
        pytest.param(
            "GET",
            "1.1",
            request_headers(sec_websocket_key=b"not base64!"),
            400,
            "ws_bad_key",
            id="key-not-base64",
        ),
        pytest.param(
            "GET",
            "1.1",
            request_headers(sec_websocket_key=base64.b64encode(b"x" * 15)),
            400,
            "ws_bad_key",
            id="key-15-bytes",
        ),
        pytest.param(
            "GET",
            "1.1",
            request_headers(sec_websocket_key=base64.b64encode(b"x" * 17)),
            400,
            "ws_bad_key",
            id="key-17-bytes",
        ),
    ],
)
def test_bad_upgrade_requests_are_refused(
    method: str, version: str, headers: Headers, status: int, kind: str
) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        check_upgrade_request(method, version, headers)
    assert (caught.value.status_hint, caught.value.kind) == (status, kind)


@pytest.mark.parametrize(
    ("offers", "answer"),
    [
        pytest.param(["permessage-deflate"], "permessage-deflate", id="plain"),
        pytest.param(
            ["permessage-deflate; client_max_window_bits"],
            "permessage-deflate; client_max_window_bits=15",
            id="client-window-bits",
        ),
        # RFC 7692 §5: an offer we cannot honour is declined; the next one is tried.
        pytest.param(
            ["permessage-deflate; server_max_window_bits=8", "permessage-deflate"],
            "permessage-deflate",
            id="window-8-declined",
        ),
        pytest.param(["permessage-deflate; client_max_window_bits=abc"], None, id="garbage"),
        # RFC 7692 §5 / §7.1: unknown, repeated or malformed parameters are declined.
        pytest.param(["permessage-deflate; foo=bar"], None, id="unknown-parameter"),
        pytest.param(
            ["permessage-deflate; client_max_window_bits; client_max_window_bits"],
            None,
            id="repeated-parameter",
        ),
        pytest.param(["permessage-deflate; server_max_window_bits"], None, id="bits-no-value"),
        pytest.param(
            ["permessage-deflate; server_no_context_takeover=1"], None, id="takeover-with-value"
        ),
        pytest.param(
            ['permessage-deflate; server_max_window_bits="10"'],
            "permessage-deflate; server_max_window_bits=10",
            id="quoted-value",
        ),
        pytest.param(["x-webkit-deflate-frame"], None, id="unknown-extension"),
        pytest.param([], None, id="none"),
    ],
)
def test_deflate_negotiation(offers: list[str], answer: str | None) -> None:
    negotiated = negotiate_deflate(offers, PerMessageDeflate)
    assert (negotiated[1] if negotiated else None) == answer
    if negotiated:
        assert negotiated[0].enabled()


def test_accept_headers_carry_the_accept_value_and_extensions() -> None:
    offer = check_upgrade_request("GET", "1.1", request_headers())
    plain = dict(accept_headers(offer, None))
    assert plain[b"sec-websocket-accept"] == ACCEPT
    assert b"sec-websocket-extensions" not in plain
    deflate = dict(accept_headers(offer, "permessage-deflate"))
    assert deflate[b"sec-websocket-extensions"] == b"permessage-deflate"


def test_client_request_is_accepted_by_the_server_rules() -> None:
    for offer_deflate in (True, False):
        headers = client_request_headers("lab:1", KEY, offer_deflate=offer_deflate)
        offer = check_upgrade_request("GET", "1.1", headers)
        assert offer.key == KEY
        assert bool(negotiate_deflate(offer.extension_offers, PerMessageDeflate)) is offer_deflate


def response_headers(**replace: bytes | None) -> Headers:
    fields = {"upgrade": b"websocket", "connection": b"Upgrade", "sec-websocket-accept": ACCEPT}
    for name, value in replace.items():
        fields[name.replace("_", "-")] = value  # type: ignore[assignment]
    return [(name.encode(), value) for name, value in fields.items() if value is not None]


def test_a_valid_101_is_accepted_with_its_extensions() -> None:
    assert check_upgrade_response(101, response_headers(), KEY, []) == []
    deflate = PerMessageDeflate()
    headers = response_headers(
        sec_websocket_extensions=b"permessage-deflate; server_max_window_bits=10"
    )
    assert check_upgrade_response(101, headers, KEY, [deflate]) == [deflate]
    assert deflate.enabled()
    assert deflate.server_max_window_bits == 10


@pytest.mark.parametrize(
    ("status", "headers", "kind"),
    [
        pytest.param(400, response_headers(), "ws_upgrade_refused", id="refused"),
        pytest.param(101, response_headers(upgrade=None), "ws_bad_handshake", id="no-upgrade"),
        pytest.param(
            101, response_headers(connection=b"close"), "ws_bad_handshake", id="no-connection"
        ),
        # §4.1: the accept value must be the one derived from our key.
        pytest.param(
            101, response_headers(sec_websocket_accept=KEY), "ws_bad_accept", id="wrong-accept"
        ),
        pytest.param(
            101, response_headers(sec_websocket_accept=None), "ws_bad_accept", id="no-accept"
        ),
        # §9.1: only an offered extension may be accepted, and only once.
        pytest.param(
            101,
            response_headers(sec_websocket_extensions=b"x-unoffered"),
            "ws_bad_handshake",
            id="unoffered-extension",
        ),
        pytest.param(
            101,
            response_headers(sec_websocket_extensions=b"permessage-deflate, permessage-deflate"),
            "ws_bad_handshake",
            id="extension-twice",
        ),
        pytest.param(
            101,
            response_headers(
                sec_websocket_extensions=b"permessage-deflate; server_max_window_bits=20"
            ),
            "ws_bad_handshake",
            id="bad-window-bits",
        ),
    ],
)
def test_bad_101s_are_refused(status: int, headers: Headers, kind: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        check_upgrade_response(status, headers, KEY, [PerMessageDeflate()])
    assert caught.value.kind == kind
    if kind == "ws_upgrade_refused":
        assert caught.value.status_hint == status
