"""Records and the key schedule of the toy TLS: sans-I/O, time-free.

Record layout: type(1) version(2) length(2) fragment. Before the keys exist a fragment
is plaintext; after, it is AEAD-sealed with

    nonce = write_iv XOR sequence number (8 bytes, left-padded to 12)
    AAD   = type || version || length of the sealed fragment || sequence number

so a record altered, replayed, reordered, moved to another type or cut short does not
open (`BadRecordMac`), and is never handed to the application. Each direction counts its
own sequence numbers from 0.

Key schedule (HKDF-SHA256, RFC 5869):

    master     = HKDF-Extract(salt = client_random || server_random, IKM = premaster or
                              X25519 shared secret)
    key block  = HKDF-Expand(master, "toy tls key expansion", 2 * key + 2 * iv)
                 -> client_write_key, server_write_key, client_write_iv, server_write_iv
    finished   = HMAC(HKDF-Expand(master, "toy tls <client|server> finished", 32),
                      SHA-256(every handshake message so far))
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from handshake_tls import crypto
from handshake_tls.errors import DecodeError, LocalProtocolError, ProtocolVersion
from handshake_tls.wire import VERSION

HEADER_BYTES: Final = 5
MAX_PLAINTEXT: Final = 1 << 14  # as TLS: 16 KiB per record
MAX_SEALED: Final = MAX_PLAINTEXT + 256
KEY_EXPANSION: Final = b"toy tls key expansion"
FINISHED_LABELS: Final = {True: b"toy tls client finished", False: b"toy tls server finished"}


class ContentType(enum.IntEnum):
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23


@dataclass(frozen=True, slots=True)
class Keys:
    """What the key schedule derives; `fingerprints()` is what the lesson may show."""

    suite: crypto.Suite
    master: bytes
    client_write_key: bytes
    server_write_key: bytes
    client_write_iv: bytes
    server_write_iv: bytes

    def finished(self, client: bool, transcript_hash: bytes) -> bytes:
        key = crypto.hkdf_expand(self.master, FINISHED_LABELS[client], 32)
        return crypto.hmac_sha256(key, transcript_hash)

    def fingerprints(self) -> dict[str, str]:
        """The first 8 bytes of SHA-256 of each secret: enough to compare, not to use."""
        return {
            f"{name}_fingerprint": crypto.sha256(getattr(self, name))[:8].hex()
            for name in ("master", "client_write_key", "server_write_key")
        }


def derive_keys(
    suite: crypto.Suite, secret: bytes, client_random: bytes, server_random: bytes
) -> Keys:
    master = crypto.hkdf_extract(client_random + server_random, secret)
    k, iv = suite.key_bytes, suite.iv_bytes
    block = crypto.hkdf_expand(master, KEY_EXPANSION, 2 * k + 2 * iv)
    return Keys(
        suite,
        master,
        block[:k],
        block[k : 2 * k],
        block[2 * k : 2 * k + iv],
        block[2 * k + iv :],
    )


class _Direction:
    """One direction's protection: an AEAD, its IV and its sequence number."""

    def __init__(self, suite: crypto.Suite, key: bytes, iv: bytes) -> None:
        self.aead = crypto.Aead(suite, key)
        self.tag_bytes = suite.tag_bytes
        self.iv = iv
        self.sequence = 0

    def nonce_and_aad(self, content_type: int, length: int) -> tuple[bytes, bytes]:
        seq = self.sequence.to_bytes(8, "big")
        nonce = bytes(a ^ b for a, b in zip(self.iv, bytes(4) + seq, strict=True))
        aad = bytes([content_type]) + VERSION.to_bytes(2, "big") + length.to_bytes(2, "big") + seq
        return nonce, aad


class RecordLayer:
    """Frames and protects records for one side of a connection.

    Args:
        client: which side we are (it picks which derived key writes and which reads).
    """

    def __init__(self, *, client: bool) -> None:
        self.client = client
        self._buffer = bytearray()
        self._write: _Direction | None = None
        self._read: _Direction | None = None
        self.records_sealed = 0
        self.records_opened = 0

    @property
    def protected(self) -> tuple[bool, bool]:
        """(writing sealed, reading sealed)."""
        return self._write is not None, self._read is not None

    def start_writing_sealed(self, keys: Keys) -> None:
        key, iv = (
            (keys.client_write_key, keys.client_write_iv)
            if self.client
            else (keys.server_write_key, keys.server_write_iv)
        )
        self._write = _Direction(keys.suite, key, iv)

    def start_reading_sealed(self, keys: Keys) -> None:
        key, iv = (
            (keys.server_write_key, keys.server_write_iv)
            if self.client
            else (keys.client_write_key, keys.client_write_iv)
        )
        self._read = _Direction(keys.suite, key, iv)

    def seal(self, content_type: ContentType, data: bytes) -> bytes:
        """`data` as one or more records (16 KiB each at most), sealed when keys are set."""
        if not data and content_type is not ContentType.APPLICATION_DATA:
            raise LocalProtocolError("an empty record of this type means nothing")
        out = bytearray()
        for start in range(0, max(len(data), 1), MAX_PLAINTEXT):
            out += self._one(content_type, data[start : start + MAX_PLAINTEXT])
        return bytes(out)

    def _one(self, content_type: int, fragment: bytes) -> bytes:
        direction = self._write
        if direction is not None:
            length = len(fragment) + direction.tag_bytes
            nonce, aad = direction.nonce_and_aad(content_type, length)
            fragment = direction.aead.seal(nonce, fragment, aad)
            direction.sequence += 1
            self.records_sealed += 1
        header = bytes([content_type]) + VERSION.to_bytes(2, "big")
        return header + len(fragment).to_bytes(2, "big") + fragment

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_record(self) -> tuple[ContentType, bytes] | None:
        """The next whole record, opened; None until one has arrived.

        Raises:
            DecodeError: an unknown type or an oversized record.
            ProtocolVersion: another version.
            BadRecordMac: a sealed record that does not open.
        """
        buffer = self._buffer
        if len(buffer) < HEADER_BYTES:
            return None
        try:
            content_type = ContentType(buffer[0])
        except ValueError:
            raise DecodeError(f"unknown record type {buffer[0]}") from None
        version = int.from_bytes(buffer[1:3], "big")
        if version != VERSION:
            raise ProtocolVersion(f"record version {version:#06x}, expected {VERSION:#06x}")
        length = int.from_bytes(buffer[3:5], "big")
        if length > (MAX_SEALED if self._read else MAX_PLAINTEXT):
            raise DecodeError(f"a record of {length} bytes is over the limit")
        if len(buffer) < HEADER_BYTES + length:
            return None
        fragment = bytes(buffer[HEADER_BYTES : HEADER_BYTES + length])
        del buffer[: HEADER_BYTES + length]
        direction = self._read
        if direction is not None:
            nonce, aad = direction.nonce_and_aad(content_type, length)
            fragment = direction.aead.open(nonce, fragment, aad)
            direction.sequence += 1
            self.records_opened += 1
        return content_type, fragment

    @property
    def buffered(self) -> int:
        """Bytes received and not yet a whole record (at the end: a truncation)."""
        return len(self._buffer)
