"""Reading a recorded toy-TLS connection afterwards: with a key log, or with the server's
private key alone (which works for `rsa` and not for `ecdhe`: forward secrecy).

A recording is the bytes each side sent, in order: (`"client"` or `"server"`, bytes). A
key log has a line per connection:

    TOYTLS_KEYS <client random> <suite> <client key> <server key> <client iv> <server iv>

(hex; the client random names the connection, as in NSS's SSLKEYLOGFILE format).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from handshake_tls import crypto
from handshake_tls.errors import DecodeError, RemoteProtocolError
from handshake_tls.record import ContentType, Keys, RecordLayer, derive_keys
from handshake_tls.wire import (
    ClientHello,
    ClientKeyExchange,
    KeyExchange,
    ServerHello,
    ServerHelloDone,
    decode_message,
    split_message,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

KEYLOG_LABEL: Final = "TOYTLS_KEYS"


def keylog_line(client_random: bytes, keys: Keys) -> str:
    return " ".join(
        [
            KEYLOG_LABEL,
            client_random.hex(),
            f"{keys.suite.code:04x}",
            keys.client_write_key.hex(),
            keys.server_write_key.hex(),
            keys.client_write_iv.hex(),
            keys.server_write_iv.hex(),
        ]
    )


def parse_keylog(text: str) -> dict[bytes, Keys]:
    """Client random -> keys, from a key log (other lines are ignored, as NSS does)."""
    found: dict[bytes, Keys] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 7 or parts[0] != KEYLOG_LABEL:
            continue
        try:
            suite = crypto.SUITES[int(parts[2], 16)]
            values = [bytes.fromhex(p) for p in parts[3:]]
        except (KeyError, ValueError):
            continue
        sizes = [len(v) for v in values]
        if sizes != [suite.key_bytes, suite.key_bytes, suite.iv_bytes, suite.iv_bytes]:
            continue  # not keys for this suite
        found[bytes.fromhex(parts[1])] = Keys(suite, b"", *values)
    return found


@dataclass(frozen=True, slots=True)
class Plaintext:
    sender: str  # "client" or "server"
    content_type: ContentType
    data: bytes


class CannotDecrypt(Exception):
    """What is missing, said for the lesson (e.g. why ecdhe resists the server's key)."""


def decrypt_recording(
    chunks: Iterable[tuple[str, bytes]],
    *,
    keylog: dict[bytes, Keys] | None = None,
    server_key: crypto.PrivateKey | None = None,
) -> list[Plaintext]:
    """Every record of a recorded connection, in plaintext: the handshake in the order it
    went, then the client's sealed records, then the server's.

    Raises:
        CannotDecrypt: no key for this connection (with why, for ecdhe and the server key).
        RemoteProtocolError: the recording is not a toy-TLS connection, or the keys are wrong.
    """
    by_sender: dict[str, bytearray] = {"client": bytearray(), "server": bytearray()}
    for sender, data in chunks:
        by_sender[sender] += data
    readers = {"client": RecordLayer(client=False), "server": RecordLayer(client=True)}
    for sender, layer in readers.items():
        layer.receive_data(bytes(by_sender[sender]))
    out: list[Plaintext] = []
    hello: ClientHello | None = None
    server_hello: ServerHello | None = None
    keys: Keys | None = None
    # The plaintext part: the client's hello and key exchange, the server's first flight.
    for sender, last in (("client", ClientHello), ("server", ServerHelloDone)):
        layer, buffer = readers[sender], b""
        while True:
            record = layer.next_record()
            if record is None:
                raise DecodeError(f"the recording ends inside the {sender}'s handshake")
            out.append(Plaintext(sender, *record))
            buffer += record[1]
            messages = []
            while (split := split_message(buffer)) is not None:
                msg_type, body, used = split
                buffer = buffer[used:]
                messages.append(decode_message(msg_type, body))
            hello = next((m for m in messages if isinstance(m, ClientHello)), hello)
            server_hello = next((m for m in messages if isinstance(m, ServerHello)), server_hello)
            if any(isinstance(m, last) for m in messages):
                break
    if hello is None or server_hello is None:
        raise DecodeError("no ClientHello or no ServerHello in the recording")
    if server_hello.suite not in crypto.SUITES:
        raise DecodeError(f"the ServerHello names an unknown suite {server_hello.suite:#06x}")
    # The client's key exchange is its next record, in plaintext too.
    exchange_record = readers["client"].next_record()
    if exchange_record is None:
        raise DecodeError("the recording ends before the client's key exchange")
    out.append(Plaintext("client", *exchange_record))
    split = split_message(exchange_record[1])
    if split is None:
        raise DecodeError("the client's key exchange is cut")
    exchange = decode_message(split[0], split[1])
    if not isinstance(exchange, ClientKeyExchange):
        raise DecodeError("no ClientKeyExchange where it belongs")
    suite = crypto.SUITES[server_hello.suite]
    if keylog is not None and hello.random in keylog:
        keys = keylog[hello.random]
    elif server_key is not None:
        if hello.key_exchange is KeyExchange.ECDHE:
            raise CannotDecrypt(
                "ecdhe: the secret came from two ephemeral X25519 keys that were never "
                "written down; the server's certificate key only signed. Without a key log, "
                "nobody can decrypt this connection any more (forward secrecy)."
            )
        premaster = crypto.rsa_decrypt(server_key, exchange.exchange_data)
        keys = derive_keys(suite, premaster, hello.random, server_hello.random)
    else:
        raise CannotDecrypt(
            f"no key for the connection with client random {hello.random.hex()[:16]}..."
        )
    readers["client"].start_reading_sealed(keys)
    readers["server"].start_reading_sealed(keys)
    for sender in ("client", "server"):
        while True:
            try:
                record = readers[sender].next_record()
            except RemoteProtocolError as error:
                raise RemoteProtocolError(f"{sender}'s records do not open: {error}") from None
            if record is None:
                break
            out.append(Plaintext(sender, *record))
    return out
