"""The WebSocket opening handshake (RFC 6455 §4), both ends: pure functions, no I/O.

Theory of operation
-------------------
A WebSocket starts life as an HTTP/1.1 GET that asks to switch protocols. The client
sends a random 16-byte key (base64); the server proves it speaks WebSocket (and is not
an HTTP cache replaying an old answer) by returning base64(SHA-1(key + GUID)) with
`101 Switching Protocols`. From the byte after the 101's empty line, both sides speak
WebSocket frames on the same TCP connection.

The HTTP request itself is parsed by h11 (through our HTTP cores); this module checks
what RFC 6455 adds on top of it, which wsproto's own handshake would do only in part
(it does not check the key's length, nor the method, nor the HTTP version), and
negotiates permessage-deflate (RFC 7692) with wsproto's extension objects. Server and
client both import it: the handshake rules live here once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

from wsproto.extensions import PerMessageDeflate

from handshake_lab.errors import RemoteProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable

    from wsproto.extensions import Extension

Headers = list[tuple[bytes, bytes]]

D = TypeVar("D", bound=PerMessageDeflate)
GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
VERSION: Final = b"13"  # RFC 6455 §4.1 step 9: the only version
KEY_BYTES: Final = 16  # RFC 6455 §4.1 step 7: a 16-byte nonce, base64-encoded
DEFLATE: Final = "permessage-deflate"  # RFC 7692 §7


def accept_token(key: bytes) -> bytes:
    """RFC 6455 §4.2.2 step 5.4: base64 of SHA-1 of the key (as sent) and the GUID."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def encode_key(nonce: bytes) -> bytes:
    """The Sec-WebSocket-Key for 16 random bytes (the caller draws them: no I/O here)."""
    if len(nonce) != KEY_BYTES:
        raise ValueError(f"a WebSocket key is {KEY_BYTES} random bytes, not {len(nonce)}")
    return base64.b64encode(nonce)


def header_tokens(headers: Headers, name: bytes) -> list[bytes]:
    """The comma-separated tokens of every `name` field, lowercased (`name` lowercase)."""
    return [
        token.strip().lower()
        for key, value in headers
        if key.lower() == name
        for token in value.split(b",")
        if token.strip()
    ]


def _values(headers: Headers, name: bytes) -> list[bytes]:
    return [value for key, value in headers if key.lower() == name]


def is_upgrade_request(headers: Headers) -> bool:
    """Does the request ask for WebSocket (`Upgrade: websocket`)?"""
    return b"websocket" in header_tokens(headers, b"upgrade")


@dataclass(frozen=True, slots=True)
class UpgradeOffer:
    """What a valid upgrade request asked for."""

    key: bytes
    extension_offers: list[str]  # Sec-WebSocket-Extensions, one entry per offer
    origin: str | None  # browsers send it; non-browser clients usually do not


def _refuse(message: str, kind: str, status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(message, status_hint=status, kind=kind)


def check_upgrade_request(method: str, http_version: str, headers: Headers) -> UpgradeOffer:
    """Check a request that asked for WebSocket against RFC 6455 §4.2.1.

    Args:
        headers: the request's fields (names in any case).

    Raises:
        RemoteProtocolError: `status_hint` 400 for a malformed handshake, or 426 for a
            version other than 13 (send `Sec-WebSocket-Version: 13` with it, §4.4).
    """
    # §4.1 step 2 / §4.2.1 step 1: an HTTP/1.1 (or higher) GET.
    if method != "GET":
        raise _refuse(f"a WebSocket upgrade must be a GET, not {method}", "ws_bad_method")
    if http_version == "1.0":
        raise _refuse("a WebSocket upgrade needs HTTP/1.1 (this is HTTP/1.0)", "ws_bad_version")
    # §4.2.1 steps 3-4: `Upgrade: websocket` and `Connection: Upgrade`.
    if not is_upgrade_request(headers):
        raise _refuse("Upgrade: websocket is missing", "ws_not_upgrade")
    if b"upgrade" not in header_tokens(headers, b"connection"):
        raise _refuse("Connection: Upgrade is missing", "ws_not_upgrade")
    # §4.2.1 step 6: exactly one version, and it must be 13.
    versions = _values(headers, b"sec-websocket-version")
    if not versions:
        raise _refuse("Sec-WebSocket-Version is missing", "ws_bad_version")
    if len(versions) > 1 or versions[0].strip() != VERSION:
        shown = b", ".join(versions).decode("ascii", "replace")
        raise _refuse(
            f"Sec-WebSocket-Version {shown} is not supported (only 13)",
            "ws_unsupported_version",
            426,
        )
    # §4.2.1 step 5: one key, base64 of exactly 16 bytes.
    keys = _values(headers, b"sec-websocket-key")
    if len(keys) != 1:
        raise _refuse(f"{len(keys)} Sec-WebSocket-Key fields (need exactly 1)", "ws_bad_key")
    key = keys[0].strip()
    try:
        decoded = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise _refuse("Sec-WebSocket-Key is not base64", "ws_bad_key") from None
    if len(decoded) != KEY_BYTES:
        raise _refuse(
            f"Sec-WebSocket-Key decodes to {len(decoded)} bytes, not {KEY_BYTES}", "ws_bad_key"
        )
    origins = _values(headers, b"origin")
    return UpgradeOffer(
        key=key,
        extension_offers=[
            offer.decode("ascii", "replace").strip()
            for value in _values(headers, b"sec-websocket-extensions")
            for offer in value.split(b",")
            if offer.strip()
        ],
        origin=origins[0].decode("ascii", "replace") if origins else None,
    )


def negotiate_deflate(
    offers: list[str],
    new_extension: Callable[[], D] = PerMessageDeflate,  # type: ignore[assignment]
) -> tuple[D, str] | None:
    """Server side of RFC 7692: accept the first permessage-deflate offer we can honour.

    Args:
        offers: the client's Sec-WebSocket-Extensions entries.
        new_extension: makes the extension object that will run on the connection.

    Returns:
        The extension object for the connection and the Sec-WebSocket-Extensions value
        to answer with, or None (then the connection runs uncompressed).
    """
    for offer in offers:
        if offer.split(";", 1)[0].strip() != DEFLATE or not _valid_deflate_offer(offer):
            continue
        extension = new_extension()
        # wsproto applies the (checked) parameters, unquoted; it answers None for a window
        # of 8, which zlib cannot do for raw deflate: that offer is declined too.
        accepted = extension.accept(offer.replace('"', ""))
        if isinstance(accepted, str):
            return extension, f"{DEFLATE}; {accepted}" if accepted else DEFLATE
    return None


# RFC 7692 §7.1: the parameters an offer may carry, and whether each takes a value.
_DEFLATE_PARAMS: Final = {
    "server_no_context_takeover": "none",
    "client_no_context_takeover": "none",
    "server_max_window_bits": "required",
    "client_max_window_bits": "optional",
}


def _valid_deflate_offer(offer: str) -> bool:
    """RFC 7692 §5: an offer with an unknown or repeated parameter, or a value where none
    belongs (or none where one must be), is declined."""
    seen: set[str] = set()
    for param in offer.split(";")[1:]:
        name, has_value, value = (part.strip() for part in param.partition("="))
        kind = _DEFLATE_PARAMS.get(name)
        if kind is None or name in seen:
            return False
        seen.add(name)
        if (kind == "none" and has_value) or (kind == "required" and not has_value):
            return False
        # §7.1.2.1: a decimal window size from 8 to 15. Fix (found by
        # tests/unit/test_fuzz_ws.py): isdigit() alone is also true of "¹", which int()
        # refuses with ValueError; the digits are ASCII ones (RFC 7692 §7.1.2.1's ABNF).
        bits = value.strip('"')
        if has_value and not (bits.isascii() and bits.isdigit() and 8 <= int(bits) <= 15):
            return False
    return True


def accept_headers(offer: UpgradeOffer, extensions_answer: str | None) -> Headers:
    """The fields of the server's `101 Switching Protocols` (RFC 6455 §4.2.2 step 5)."""
    headers: Headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", accept_token(offer.key)),
    ]
    if extensions_answer:
        headers.append((b"sec-websocket-extensions", extensions_answer.encode("ascii")))
    return headers


# --- the client's side -------------------------------------------------------------------


def client_request_headers(host: str, key: bytes, *, offer_deflate: bool) -> Headers:
    """The fields of the client's upgrade GET (RFC 6455 §4.1)."""
    headers: Headers = [
        (b"host", host.encode("idna")),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", key),
        (b"sec-websocket-version", VERSION),
    ]
    if offer_deflate:
        headers.append((b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"))
    return headers


def check_upgrade_response(
    status: int, headers: Headers, key: bytes, offered: list[Extension]
) -> list[Extension]:
    """Check the server's answer to our upgrade (RFC 6455 §4.1, the client's steps 1-6).

    Returns:
        The extensions the server accepted, finalized for the connection.

    Raises:
        RemoteProtocolError: the server refused (kind "ws_upgrade_refused") or answered
            something that is not a valid WebSocket handshake.
    """
    if status != 101:
        raise RemoteProtocolError(
            f"the server answered {status}, not 101 Switching Protocols",
            kind="ws_upgrade_refused",
            status_hint=status,
        )
    if b"websocket" not in header_tokens(headers, b"upgrade"):
        raise RemoteProtocolError("101 without Upgrade: websocket", kind="ws_bad_handshake")
    if b"upgrade" not in header_tokens(headers, b"connection"):
        raise RemoteProtocolError("101 without Connection: Upgrade", kind="ws_bad_handshake")
    accepts = _values(headers, b"sec-websocket-accept")
    expected = accept_token(key)
    if len(accepts) != 1 or accepts[0].strip() != expected:
        got = b", ".join(accepts).decode("ascii", "replace") or "nothing"
        raise RemoteProtocolError(
            f"Sec-WebSocket-Accept is {got}, expected {expected.decode()}",
            kind="ws_bad_accept",
        )
    accepted: list[Extension] = []
    for value in _values(headers, b"sec-websocket-extensions"):
        for answer in value.decode("ascii", "replace").split(","):
            name = answer.split(";", 1)[0].strip()
            extension = next((ext for ext in offered if ext.name == name), None)
            if extension is None or extension in accepted:
                # RFC 6455 §9.1: the server may only accept what the client offered.
                raise RemoteProtocolError(
                    f"the server accepted extension {name!r}, which was not offered",
                    kind="ws_bad_handshake",
                )
            try:
                extension.finalize(answer)
            except ValueError:
                raise RemoteProtocolError(
                    f"bad parameters for {name}: {answer.strip()!r}", kind="ws_bad_handshake"
                ) from None
            accepted.append(extension)
    return accepted
