"""The toy TLS's errors: one class per alert, as aioquic's tls.py does.

A `RemoteProtocolError` is the peer's fault and names the alert to send back; a
`LocalProtocolError` is ours (a misuse of the API). Every alert has a one-byte code on the
wire (`Alert.code`), close to TLS's own numbers where the meaning is the same.
"""

from __future__ import annotations

from typing import ClassVar


class TLSError(Exception):
    """Base of everything the toy TLS raises."""


class LocalProtocolError(TLSError):
    """We asked the connection for something its state does not allow."""


class RemoteProtocolError(TLSError):
    """The peer's bytes broke the protocol; `alert` is what we tell it before closing."""

    alert: ClassVar[str] = "internal_error"
    code: ClassVar[int] = 80


class DecodeError(RemoteProtocolError):
    """A message or record that does not parse: wrong length, unknown type, trailing bytes."""

    alert = "decode_error"
    code = 50


class UnexpectedMessage(RemoteProtocolError):
    """A message the handshake does not expect now (out of order, or after the end)."""

    alert = "unexpected_message"
    code = 10


class HandshakeFailure(RemoteProtocolError):
    """No suite or key exchange in common, or a key exchange that does not work out."""

    alert = "handshake_failure"
    code = 40


class BadRecordMac(RemoteProtocolError):
    """A record that does not decrypt: altered, replayed, reordered or truncated."""

    alert = "bad_record_mac"
    code = 20


class DecryptError(RemoteProtocolError):
    """A Finished or a signature that does not verify: the handshake was tampered with."""

    alert = "decrypt_error"
    code = 51


class BadCertificate(RemoteProtocolError):
    """A certificate that does not parse, or whose signature does not verify."""

    alert = "bad_certificate"
    code = 42


class UnknownCA(RemoteProtocolError):
    """A certificate chain that does not lead to the CA we trust."""

    alert = "unknown_ca"
    code = 48


class CertificateExpired(RemoteProtocolError):
    """A certificate outside its validity period (expired, or not yet valid)."""

    alert = "certificate_expired"
    code = 45


class NameMismatch(RemoteProtocolError):
    """A certificate whose subjectAltName does not name the server we asked for."""

    alert = "bad_certificate_name"  # TLS has no such alert: its clients send bad_certificate
    code = 112


class ProtocolVersion(RemoteProtocolError):
    """A peer speaking another version of the toy protocol."""

    alert = "protocol_version"
    code = 70


ALERTS: dict[int, type[RemoteProtocolError]] = {
    cls.code: cls
    for cls in (
        RemoteProtocolError,
        DecodeError,
        UnexpectedMessage,
        HandshakeFailure,
        BadRecordMac,
        DecryptError,
        BadCertificate,
        UnknownCA,
        CertificateExpired,
        NameMismatch,
        ProtocolVersion,
    )
}
