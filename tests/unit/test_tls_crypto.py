"""The toy TLS's cryptographic building blocks and the lab's certificates."""

from __future__ import annotations

import datetime
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from handshake_tls import crypto
from handshake_tls.certs import (
    DEFAULT_NAMES,
    KEY_TYPES,
    ensure_lab_certificates,
    make_lab_certificates,
)
from handshake_tls.errors import (
    BadCertificate,
    BadRecordMac,
    CertificateExpired,
    DecryptError,
    HandshakeFailure,
    NameMismatch,
    UnknownCA,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from cryptography import x509

NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)


@dataclass
class Lab:
    ca: x509.Certificate
    ca_key: crypto.PrivateKey
    keys: dict[str, crypto.PrivateKey]
    ders: dict[str, bytes]


@pytest.fixture(scope="module")
def lab() -> Lab:
    """A CA and an RSA and an EC server certificate for localhost and 127.0.0.1."""
    ca_key = crypto.new_private_key("ec")
    ca = crypto.make_ca(ca_key, "test CA", NOW, 30)
    result = Lab(ca, ca_key, {}, {})
    for key_type in KEY_TYPES:
        key = crypto.new_private_key(key_type)
        cert = crypto.make_server_certificate(ca, ca_key, key, ["localhost", "127.0.0.1"], NOW, 10)
        result.keys[key_type] = key
        result.ders[key_type] = crypto.certificate_der(cert)
    return result


@pytest.mark.parametrize("code", sorted(crypto.SUITES))
def test_aead_round_trip_and_any_change_is_bad_record_mac(code: int) -> None:
    suite = crypto.SUITES[code]
    aead = crypto.Aead(suite, bytes(range(suite.key_bytes)))
    nonce, aad = bytes(12), b"header"
    sealed = aead.seal(nonce, b"hello", aad)
    assert len(sealed) == len(b"hello") + suite.tag_bytes
    assert aead.open(nonce, sealed, aad) == b"hello"
    flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
    bads: list[Callable[[], bytes]] = [
        lambda: aead.open(nonce, flipped, aad),  # altered ciphertext
        lambda: aead.open(bytes(11) + b"\x01", sealed, aad),  # another sequence number
        lambda: aead.open(nonce, sealed, b"headeR"),  # another header
        lambda: aead.open(nonce, sealed[:-1], aad),  # truncated
    ]
    for bad in bads:
        with pytest.raises(BadRecordMac):
            bad()


def test_hkdf_matches_rfc_5869_test_case_1() -> None:
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    prk = crypto.hkdf_extract(salt, ikm)
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = crypto.hkdf_expand(prk, info, 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_x25519_both_sides_agree_and_a_bad_share_fails() -> None:
    client, server = crypto.X25519Share(os.urandom), crypto.X25519Share(os.urandom)
    assert client.shared_secret(server.public) == server.shared_secret(client.public)
    with pytest.raises(HandshakeFailure):
        client.shared_secret(bytes(32))  # the all-zero point: an all-zero secret (RFC 7748 §6.1)
    with pytest.raises(HandshakeFailure):
        client.shared_secret(b"short")


def test_x25519_is_deterministic_from_the_rng() -> None:
    def fixed(n: int) -> bytes:
        return bytes(range(n))

    assert crypto.X25519Share(fixed).public == crypto.X25519Share(fixed).public


def test_rsa_oaep_premaster(lab: Lab) -> None:
    key, der = lab.keys["rsa"], lab.ders["rsa"]
    info = crypto.verify_chain([der], lab.ca, "localhost", NOW)
    premaster = os.urandom(48)
    encrypted = crypto.rsa_encrypt(info.public_key, premaster)
    assert len(encrypted) == 256  # RSA-2048
    assert crypto.rsa_decrypt(key, encrypted) == premaster
    with pytest.raises(DecryptError):
        crypto.rsa_decrypt(key, bytes([encrypted[0] ^ 1]) + encrypted[1:])
    ec_key, ec_der = lab.keys["ec"], lab.ders["ec"]
    ec_info = crypto.verify_chain([ec_der], lab.ca, "localhost", NOW)
    with pytest.raises(HandshakeFailure, match="RSA"):
        crypto.rsa_encrypt(ec_info.public_key, premaster)
    with pytest.raises(HandshakeFailure, match="RSA"):
        crypto.rsa_decrypt(ec_key, encrypted)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_signatures_verify_only_for_the_signed_bytes(lab: Lab, key_type: str) -> None:
    key, der = lab.keys[key_type], lab.ders[key_type]
    info = crypto.verify_chain([der], lab.ca, "127.0.0.1", NOW)
    assert info.key_type == key_type
    signature = crypto.sign(key, b"transcript")
    crypto.verify_signature(info.public_key, signature, b"transcript")
    with pytest.raises(DecryptError):
        crypto.verify_signature(info.public_key, signature, b"transcripT")


def test_a_good_chain_tells_what_the_lesson_shows(lab: Lab) -> None:
    _key, der = lab.keys["ec"], lab.ders["ec"]
    info = crypto.verify_chain([der], lab.ca, "LOCALHOST.", NOW)
    assert info.subject == "CN=localhost"
    assert info.issuer == "CN=test CA"
    assert info.names == ("localhost", "127.0.0.1")
    assert info.not_before < NOW < info.not_after
    assert len(info.fingerprint_sha256) == 64


def test_each_certificate_failure_is_its_own_alert(lab: Lab) -> None:
    _key, der = lab.keys["ec"], lab.ders["ec"]
    ca = lab.ca
    other_key = crypto.new_private_key("ec")
    other_ca = crypto.make_ca(other_key, "another CA", NOW, 30)
    cases: list[tuple[type[Exception], list[bytes], x509.Certificate, str, datetime.datetime]] = [
        (UnknownCA, [der], other_ca, "localhost", NOW),  # signed by someone else
        (NameMismatch, [der], ca, "example.org", NOW),  # not the name we asked for
        (NameMismatch, [der], ca, "::1", NOW),  # not the address either
        (CertificateExpired, [der], ca, "localhost", NOW + datetime.timedelta(days=11)),
        (CertificateExpired, [der], ca, "localhost", NOW - datetime.timedelta(days=1)),
        (BadCertificate, [], ca, "localhost", NOW),  # nothing sent
        (BadCertificate, [b"\x30\x03junk"], ca, "localhost", NOW),  # not X.509
    ]
    for error, chain, trusted, name, when in cases:
        with pytest.raises(error):
            crypto.verify_chain(chain, trusted, name, when)


def test_only_a_ca_may_sign_and_the_path_length_holds(lab: Lab) -> None:
    ca, ca_key = lab.ca, lab.ca_key
    # A server certificate (CA:FALSE) signing another: refused, whatever the name says.
    server_key = lab.keys["rsa"]
    server_cert = crypto.load_certificate(lab.ders["rsa"])
    forged_key = crypto.new_private_key("ec")
    forged = crypto.make_server_certificate(
        server_cert, server_key, forged_key, ["bank.example"], NOW, 10
    )
    chain = [crypto.certificate_der(forged), lab.ders["rsa"]]
    with pytest.raises(BadCertificate, match="not a CA"):
        crypto.verify_chain(chain, ca, "bank.example", NOW)
    # A real intermediate CA, signed by the lab CA: its path length (0) forbids it.
    mid_key = crypto.new_private_key("ec")
    mid = crypto.make_ca(mid_key, "intermediate", NOW, 10, issuer=(ca, ca_key))
    leaf = crypto.make_server_certificate(mid, mid_key, forged_key, ["leaf"], NOW, 10)
    chain = [crypto.certificate_der(leaf), crypto.certificate_der(mid)]
    with pytest.raises(BadCertificate, match="allows 0"):
        crypto.verify_chain(chain, ca, "leaf", NOW)
    # A CA certificate presented as the server's: refused.
    with pytest.raises(BadCertificate, match="is a CA"):
        crypto.verify_chain([crypto.certificate_der(mid)], ca, "intermediate", NOW)


def test_lab_certificates_are_made_once_and_verify(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    files, made = ensure_lab_certificates(directory)
    assert made
    assert files.complete()
    assert stat.S_IMODE(files.ca_key.stat().st_mode) == 0o600
    ca = crypto.load_certificate_pem(files.ca.read_bytes())
    for key_type in KEY_TYPES:
        cert = crypto.load_certificate_pem(files.certificate(key_type).read_bytes())
        key = crypto.load_private_key_pem(files.key(key_type).read_bytes())
        now = datetime.datetime.now(datetime.UTC)
        for name in DEFAULT_NAMES:
            info = crypto.verify_chain([crypto.certificate_der(cert)], ca, name, now)
            assert info.key_type == key_type
        crypto.verify_signature(info.public_key, crypto.sign(key, b"x"), b"x")
    before = files.ca.read_bytes()
    _files, made_again = ensure_lab_certificates(directory)
    assert not made_again
    assert files.ca.read_bytes() == before  # kept, not remade
    with pytest.raises(ValueError, match="at least one name"):
        make_lab_certificates(directory, [])
