"""The toy TLS's messages as bytes: one `encode_message`, one `decode_message`, all lengths
checked (a length that does not match, a value out of range, a trailing byte: DecodeError).

Layouts (big-endian; `<n>` is an n-byte length prefix):

    handshake message   type(1) length(3) body
    ClientHello         version(2) random(32) <1>suites(2 each) kx(1) <1>server_name
    ServerHello         version(2) random(32) suite(2) kx(1)
    Certificate         count(1) { <3>DER }
    ServerKeyExchange   share(32) <2>signature          (ecdhe only)
    ServerHelloDone     (empty)
    ClientKeyExchange   <2>exchange_data                 (rsa: encrypted premaster; ecdhe: share)
    Finished            verify_data(32)
    alert               level(1) code(1)

The names and numbers follow TLS 1.2 (RFC 5246 §7.4), the layouts are simpler: this is
not TLS, and a TLS peer will not parse it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, assert_never

from handshake_tls.errors import DecodeError

VERSION: Final = 0x7E01  # "toy 1": not a TLS version number on purpose
RANDOM_BYTES: Final = 32
SHARE_BYTES: Final = 32  # X25519
VERIFY_BYTES: Final = 32  # HMAC-SHA256


class KeyExchange(enum.IntEnum):
    RSA = 1  # the seeds' handshake: the client encrypts a premaster to the certificate's key
    ECDHE = 2  # ephemeral X25519, signed by the server: forward secrecy


class HandshakeType(enum.IntEnum):
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    CERTIFICATE = 11
    SERVER_KEY_EXCHANGE = 12
    SERVER_HELLO_DONE = 14
    CLIENT_KEY_EXCHANGE = 16
    FINISHED = 20


@dataclass(frozen=True, slots=True)
class ClientHello:
    random: bytes
    suites: tuple[int, ...]
    key_exchange: KeyExchange
    server_name: str
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class ServerHello:
    random: bytes
    suite: int
    key_exchange: KeyExchange
    version: int = VERSION


@dataclass(frozen=True, slots=True)
class Certificate:
    chain: tuple[bytes, ...]  # DER, the server's own first


@dataclass(frozen=True, slots=True)
class ServerKeyExchange:
    share: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class ServerHelloDone:
    pass


@dataclass(frozen=True, slots=True)
class ClientKeyExchange:
    exchange_data: bytes


@dataclass(frozen=True, slots=True)
class Finished:
    verify_data: bytes


Message = (
    ClientHello
    | ServerHello
    | Certificate
    | ServerKeyExchange
    | ServerHelloDone
    | ClientKeyExchange
    | Finished
)

TYPES: Final[dict[type, HandshakeType]] = {
    ClientHello: HandshakeType.CLIENT_HELLO,
    ServerHello: HandshakeType.SERVER_HELLO,
    Certificate: HandshakeType.CERTIFICATE,
    ServerKeyExchange: HandshakeType.SERVER_KEY_EXCHANGE,
    ServerHelloDone: HandshakeType.SERVER_HELLO_DONE,
    ClientKeyExchange: HandshakeType.CLIENT_KEY_EXCHANGE,
    Finished: HandshakeType.FINISHED,
}


# --- encoding --------------------------------------------------------------------------------


def _prefixed(data: bytes, size: int) -> bytes:
    if len(data) >= 1 << (8 * size):
        raise ValueError(f"{len(data)} bytes do not fit a {size}-byte length")
    return len(data).to_bytes(size, "big") + data


def encode_message(message: Message) -> bytes:
    """A handshake message with its 4-byte header."""
    match message:
        case ClientHello():
            body = (
                message.version.to_bytes(2, "big")
                + _fixed(message.random, RANDOM_BYTES)
                + _prefixed(b"".join(s.to_bytes(2, "big") for s in message.suites), 1)
                + bytes([message.key_exchange])
                + _prefixed(message.server_name.encode("ascii"), 1)
            )
        case ServerHello():
            body = (
                message.version.to_bytes(2, "big")
                + _fixed(message.random, RANDOM_BYTES)
                + message.suite.to_bytes(2, "big")
                + bytes([message.key_exchange])
            )
        case Certificate():
            if len(message.chain) > 255:
                raise ValueError("at most 255 certificates")
            body = bytes([len(message.chain)]) + b"".join(_prefixed(d, 3) for d in message.chain)
        case ServerKeyExchange():
            body = _fixed(message.share, SHARE_BYTES) + _prefixed(message.signature, 2)
        case ServerHelloDone():
            body = b""
        case ClientKeyExchange():
            body = _prefixed(message.exchange_data, 2)
        case Finished():
            body = _fixed(message.verify_data, VERIFY_BYTES)
        case _:  # pragma: no cover (the union is exhausted above)
            assert_never(message)
    return bytes([TYPES[type(message)]]) + _prefixed(body, 3)


def _fixed(data: bytes, size: int) -> bytes:
    if len(data) != size:
        raise ValueError(f"expected {size} bytes, got {len(data)}")
    return data


# --- decoding --------------------------------------------------------------------------------


class _Reader:
    """Takes bytes off the front of a body; every shortfall is a DecodeError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.at = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise DecodeError(f"{self.what} ends early ({len(self.data)} bytes)")
        piece = self.data[self.at : self.at + n]
        self.at += n
        return piece

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def prefixed(self, size: int) -> bytes:
        return self.take(self.number(size))

    def end(self) -> None:
        if self.at != len(self.data):
            raise DecodeError(f"{self.what} has {len(self.data) - self.at} trailing bytes")


def split_message(buffer: bytes | bytearray) -> tuple[int, bytes, int] | None:
    """(type, body, bytes used) of the first whole handshake message, or None."""
    if len(buffer) < 4:
        return None
    length = int.from_bytes(buffer[1:4], "big")
    if len(buffer) < 4 + length:
        return None
    return buffer[0], bytes(buffer[4 : 4 + length]), 4 + length


def decode_message(msg_type: int, body: bytes) -> Message:
    """Raises DecodeError for anything but exactly one valid message of `msg_type`."""
    try:
        kind = HandshakeType(msg_type)
    except ValueError:
        raise DecodeError(f"unknown handshake message type {msg_type}") from None
    r = _Reader(body, kind.name)
    message: Message
    match kind:
        case HandshakeType.CLIENT_HELLO:
            version, random = r.number(2), r.take(RANDOM_BYTES)
            suite_bytes = r.prefixed(1)
            if not suite_bytes or len(suite_bytes) % 2:
                raise DecodeError("the suite list must hold whole 2-byte codes")
            suites = tuple(
                int.from_bytes(suite_bytes[i : i + 2], "big") for i in range(0, len(suite_bytes), 2)
            )
            kx = _key_exchange(r.number(1))
            name = r.prefixed(1)
            if not name.isascii():
                raise DecodeError("the server name must be ASCII")
            message = ClientHello(random, suites, kx, name.decode("ascii"), version)
        case HandshakeType.SERVER_HELLO:
            version, random = r.number(2), r.take(RANDOM_BYTES)
            message = ServerHello(random, r.number(2), _key_exchange(r.number(1)), version)
        case HandshakeType.CERTIFICATE:
            message = Certificate(tuple(r.prefixed(3) for _ in range(r.number(1))))
        case HandshakeType.SERVER_KEY_EXCHANGE:
            message = ServerKeyExchange(r.take(SHARE_BYTES), r.prefixed(2))
        case HandshakeType.SERVER_HELLO_DONE:
            message = ServerHelloDone()
        case HandshakeType.CLIENT_KEY_EXCHANGE:
            message = ClientKeyExchange(r.prefixed(2))
        case HandshakeType.FINISHED:
            message = Finished(r.take(VERIFY_BYTES))
        case _:  # pragma: no cover (every HandshakeType is above)
            assert_never(kind)
    r.end()
    return message


def _key_exchange(value: int) -> KeyExchange:
    try:
        return KeyExchange(value)
    except ValueError:
        raise DecodeError(f"unknown key exchange {value}") from None
