"""Every use of the `cryptography` library by the toy TLS, and nothing else.

The rest of `handshake_tls` sees bytes and small objects from here: an AEAD that raises
`BadRecordMac`, a key schedule's primitives (HKDF, HMAC, SHA-256), X25519, RSA-OAEP, the
certificate key's signatures, and a certificate check that raises one error per reason.
Randomness is passed in (`rng`) wherever the protocol draws it, so tests can fix it.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.x509.oid import NameOID

from handshake_tls.errors import (
    BadCertificate,
    BadRecordMac,
    CertificateExpired,
    DecryptError,
    HandshakeFailure,
    NameMismatch,
    RemoteProtocolError,
    UnknownCA,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


# --- cipher suites ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Suite:
    code: int
    name: str
    key_bytes: int
    aead: type[AESGCM] | type[ChaCha20Poly1305]

    iv_bytes: int = 12  # both AEADs take 96-bit nonces
    tag_bytes: int = 16


# The same code points and names as TLS 1.3's suites (RFC 8446 §B.4): same algorithms.
SUITES: Final = {
    suite.code: suite
    for suite in (
        Suite(0x1301, "AES_128_GCM_SHA256", 16, AESGCM),
        Suite(0x1303, "CHACHA20_POLY1305_SHA256", 32, ChaCha20Poly1305),
    )
}


class Aead:
    """One direction's record protection: `seal` and `open` with a 12-byte nonce."""

    def __init__(self, suite: Suite, key: bytes) -> None:
        self._aead = suite.aead(key)

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Raises `BadRecordMac` when anything was changed (or the nonce or AAD differ)."""
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise BadRecordMac("record authentication failed") from None


# --- the key schedule's primitives ---------------------------------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 §2.2: PRK = HMAC-Hash(salt, IKM)."""
    return hmac_sha256(salt, ikm)


def hkdf_expand(prk: bytes, label: bytes, length: int) -> bytes:
    """RFC 5869 §2.3, with the label as `info`."""
    return HKDFExpand(hashes.SHA256(), length, label).derive(prk)


def same(a: bytes, b: bytes) -> bool:
    """Constant-time comparison, for MACs."""
    return hmac.compare_digest(a, b)


# --- key exchanges ----------------------------------------------------------------------


class X25519Share:
    """An ephemeral X25519 key pair (RFC 7748) for one handshake."""

    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self._private = X25519PrivateKey.from_private_bytes(rng(32))
        self.public = self._private.public_key().public_bytes_raw()

    def shared_secret(self, peer_public: bytes) -> bytes:
        """Raises `HandshakeFailure` for a malformed or degenerate peer share."""
        try:
            return self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:  # wrong length, or the all-zero result of a small-order point
            raise HandshakeFailure("the peer's X25519 share is not usable") from None


_OAEP: Final = padding.OAEP(
    mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def rsa_encrypt(public_key: PublicKey, plaintext: bytes) -> bytes:
    """RSA-OAEP with SHA-256: only the holder of the certificate's private key can read it."""
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise HandshakeFailure("the rsa key exchange needs a certificate with an RSA key")
    return public_key.encrypt(plaintext, _OAEP)


def rsa_decrypt(private_key: PrivateKey, ciphertext: bytes) -> bytes:
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise HandshakeFailure("the rsa key exchange needs an RSA certificate key")
    try:
        return private_key.decrypt(ciphertext, _OAEP)
    except ValueError:
        raise DecryptError("the encrypted premaster secret does not decrypt") from None


def sign(private_key: PrivateKey, data: bytes) -> bytes:
    """The certificate key's signature: RSA-PSS or ECDSA, both over SHA-256."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, _PSS, hashes.SHA256())
    return private_key.sign(data, ec.ECDSA(hashes.SHA256()))


_PSS: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def verify_signature(public_key: PublicKey, signature: bytes, data: bytes) -> None:
    """Raises `DecryptError` when the signature is not the certificate key's over `data`."""
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, _PSS, hashes.SHA256())
        else:
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise DecryptError("the server's signature over the handshake does not verify") from None


# --- certificates --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What the client learned about the server's certificate, for the lesson."""

    subject: str
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    names: tuple[str, ...]  # subjectAltName: DNS names and IP addresses
    fingerprint_sha256: str
    key_type: str  # "rsa" or "ec"
    public_key: PublicKey


def load_certificate(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except Exception:  # (ValueError, InvalidVersion, ...: whatever the parser meets)
        raise BadCertificate("a certificate that is not DER X.509") from None


def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def verify_chain(
    chain: Sequence[bytes], trusted: x509.Certificate, server_name: str, now: datetime.datetime
) -> CertificateInfo:
    """Check the server's chain (leaf first, DER) as the lesson describes it.

    Each certificate must be signed by the next, the last by the trusted CA; every one must
    be valid at `now`; the leaf must name `server_name` in its subjectAltName.

    Raises:
        BadCertificate: empty chain, unparsable certificate, or a broken signature link.
        UnknownCA: the chain does not end at the trusted CA.
        CertificateExpired: a certificate outside its validity period.
        NameMismatch: the leaf does not name `server_name`.
    """
    if not chain:
        raise BadCertificate("the server sent no certificate")
    certs = [load_certificate(der) for der in chain]
    try:
        return _verify_chain(certs, trusted, server_name, now)
    except RemoteProtocolError:
        raise
    except Exception as exc:  # the parser reads lazily: a field it cannot read, read late
        raise BadCertificate(f"a certificate that does not parse: {exc}") from None


def _verify_chain(
    certs: list[x509.Certificate],
    trusted: x509.Certificate,
    server_name: str,
    now: datetime.datetime,
) -> CertificateInfo:
    # Signatures first: nothing else in a certificate means anything until they hold.
    for cert, issuer in zip(certs, [*certs[1:], trusted], strict=True):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            if issuer is trusted:
                raise UnknownCA(
                    f"the server's chain is not signed by the lab CA "
                    f"({trusted.subject.rfc4514_string()})"
                ) from None
            raise BadCertificate("a certificate in the chain is not signed by the next") from None
    # Only a CA may sign: every issuer in the chain must say so (basicConstraints), and the
    # lab CA's path length bounds how many may stand between it and the server.
    for issuer in certs[1:]:
        if not _is_ca(issuer):
            raise BadCertificate(f"{issuer.subject.rfc4514_string()} is not a CA, yet it signed")
    limit = _path_length(trusted)
    if limit is not None and len(certs) - 1 > limit:
        raise BadCertificate(f"{len(certs) - 1} intermediate CAs; the lab CA allows {limit}")
    if _is_ca(certs[0]):
        raise BadCertificate("the server's certificate is a CA certificate")
    for cert in [*certs, trusted]:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise CertificateExpired(
                f"{cert.subject.rfc4514_string()} is valid from "
                f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}, "
                f"not on {now:%Y-%m-%d}"
            )
    info = describe(certs[0])
    if not _names_match(info.names, server_name):
        raise NameMismatch(
            f"the certificate names {', '.join(info.names) or 'nothing'}, not {server_name}"
        )
    return info


def describe(cert: x509.Certificate) -> CertificateInfo:
    """What a certificate says (nothing here is checked)."""
    public_key = cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise BadCertificate("the lab's certificates have RSA or EC keys")
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        names=tuple(_alt_names(cert)),
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        key_type="rsa" if isinstance(public_key, rsa.RSAPublicKey) else "ec",
        public_key=public_key,
    )


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    constraints = _basic_constraints(cert)
    return constraints is not None and constraints.ca


def _path_length(cert: x509.Certificate) -> int | None:
    constraints = _basic_constraints(cert)
    return constraints.path_length if constraints is not None else None


def _alt_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        *san.get_values_for_type(x509.DNSName),
        *map(str, san.get_values_for_type(x509.IPAddress)),
    ]


def _names_match(names: Sequence[str], server_name: str) -> bool:
    try:
        wanted_ip = ipaddress.ip_address(server_name.strip("[]"))
    except ValueError:
        return server_name.lower().rstrip(".") in {name.lower() for name in names}
    return any(name == str(wanted_ip) for name in names)


# --- making the lab's certificates -------------------------------------------------------------


def new_private_key(key_type: str) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key_type!r} (rsa or ec)")


def make_ca(
    key: PrivateKey,
    name: str,
    now: datetime.datetime,
    days: int,
    *,
    issuer: tuple[x509.Certificate, PrivateKey] | None = None,
) -> x509.Certificate:
    """A CA certificate that may sign server certificates only: self-signed, or (for
    tests of chain rules) an intermediate signed by `issuer`."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer = issuer[1] if issuer else key
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(signer, hashes.SHA256())
    )


def make_server_certificate(
    ca: x509.Certificate,
    ca_key: PrivateKey,
    key: PrivateKey,
    names: Sequence[str],
    now: datetime.datetime,
    days: int,
) -> x509.Certificate:
    """A server certificate for `names` (DNS names or IP addresses), signed by the CA."""
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_private_key_pem(data: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("the lab uses RSA or EC (P-256) keys")
    return key


def load_certificate_pem(data: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data)
