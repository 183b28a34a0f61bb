"""The toy TLS's message codecs and record layer, without sockets."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handshake_tls import crypto
from handshake_tls.errors import BadRecordMac, DecodeError, LocalProtocolError, ProtocolVersion
from handshake_tls.record import ContentType, RecordLayer, derive_keys
from handshake_tls.wire import (
    Certificate,
    ClientHello,
    ClientKeyExchange,
    Finished,
    KeyExchange,
    Message,
    ServerHello,
    ServerHelloDone,
    ServerKeyExchange,
    decode_message,
    encode_message,
    split_message,
)

randoms = st.binary(min_size=32, max_size=32)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        ClientHello,
        randoms,
        st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=20).map(tuple),
        st.sampled_from(KeyExchange),
        st.text("abcdefghijklmnopqrstuvwxyz0123456789.-", max_size=60),
    ),
    st.builds(ServerHello, randoms, st.integers(0, 0xFFFF), st.sampled_from(KeyExchange)),
    st.builds(Certificate, st.lists(st.binary(max_size=300), max_size=4).map(tuple)),
    st.builds(ServerKeyExchange, randoms, st.binary(max_size=300)),
    st.just(ServerHelloDone()),
    st.builds(ClientKeyExchange, st.binary(max_size=300)),
    st.builds(Finished, randoms),
)


def decode_whole(data: bytes) -> Message:
    split = split_message(data)
    assert split is not None
    msg_type, body, used = split
    assert used == len(data)
    return decode_message(msg_type, body)


@given(messages)
def test_every_message_round_trips(message: Message) -> None:
    assert decode_whole(encode_message(message)) == message


@settings(max_examples=300)
@given(messages, st.data())
def test_a_cut_or_grown_body_is_a_decode_error(message: Message, data: st.DataObject) -> None:
    encoded = encode_message(message)
    msg_type, body = encoded[0], encoded[4:]
    if body:
        cut = data.draw(st.integers(0, len(body) - 1))
        # Shorter bodies either fail, or (a shorter prefixed field) decode to something else.
        with contextlib.suppress(DecodeError):
            assert decode_message(msg_type, body[:cut]) != message
    with pytest.raises(DecodeError):
        decode_message(msg_type, body + b"\x00")  # §: one message, no trailing byte


@settings(max_examples=500)
@given(st.integers(0, 255), st.binary(max_size=100))
def test_random_bodies_decode_or_raise_only_decode_error(msg_type: int, body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(msg_type, body)


def test_specific_malformations() -> None:
    hello = encode_message(ClientHello(bytes(32), (0x1301,), KeyExchange.RSA, "lab"))
    body = bytearray(hello[4:])
    with pytest.raises(DecodeError, match="unknown handshake message type"):
        decode_message(99, bytes(body))
    odd = bytes(body[:34]) + b"\x03\x13\x01\x13" + bytes(body[37:])  # 3 bytes of suites
    with pytest.raises(DecodeError, match="whole 2-byte"):
        decode_message(1, odd)
    bad_kx = bytes(body[:37]) + b"\x09" + bytes(body[38:])
    with pytest.raises(DecodeError, match="unknown key exchange"):
        decode_message(1, bad_kx)
    with pytest.raises(DecodeError, match="ASCII"):
        decode_message(1, bytes(body[:38]) + b"\x02\xc3\xa9")
    assert split_message(hello[:3]) is None
    assert split_message(hello[:-1]) is None
    with pytest.raises(ValueError, match="32 bytes"):
        encode_message(Finished(b"short"))
    with pytest.raises(ValueError, match="255"):
        encode_message(Certificate((b"",) * 256))
    with pytest.raises(ValueError, match="do not fit"):
        encode_message(ClientKeyExchange(bytes(70_000)))


# --- records -------------------------------------------------------------------------------


@pytest.fixture(params=sorted(crypto.SUITES))
def pair(request: pytest.FixtureRequest) -> tuple[RecordLayer, RecordLayer]:
    keys = derive_keys(crypto.SUITES[request.param], os.urandom(48), os.urandom(32), os.urandom(32))
    client, server = RecordLayer(client=True), RecordLayer(client=False)
    for side in (client, server):
        side.start_writing_sealed(keys)
        side.start_reading_sealed(keys)
    return client, server


def read_all(layer: RecordLayer) -> list[tuple[ContentType, bytes]]:
    out = []
    while (record := layer.next_record()) is not None:
        out.append(record)
    return out


def test_plain_records_before_the_keys() -> None:
    client, server = RecordLayer(client=True), RecordLayer(client=False)
    wire = client.seal(ContentType.HANDSHAKE, b"hello")
    assert wire == b"\x16\x7e\x01\x00\x05hello"
    for byte in wire:  # one byte at a time
        server.receive_data(bytes([byte]))
    assert read_all(server) == [(ContentType.HANDSHAKE, b"hello")]
    assert server.protected == (False, False)


def test_sealed_records_both_ways_and_split_at_16_kib(
    pair: tuple[RecordLayer, RecordLayer],
) -> None:
    client, server = pair
    big = os.urandom(40_000)
    wire = client.seal(ContentType.APPLICATION_DATA, big)
    assert b"\x00" * 0 + big[:100] not in wire  # encrypted
    server.receive_data(wire)
    records = read_all(server)
    assert [len(data) for _, data in records] == [16384, 16384, 40_000 - 32768]
    assert b"".join(data for _, data in records) == big
    server_wire = server.seal(ContentType.APPLICATION_DATA, b"back")
    client.receive_data(server_wire)
    assert read_all(client) == [(ContentType.APPLICATION_DATA, b"back")]


@pytest.mark.parametrize("suite", sorted(crypto.SUITES))
def test_every_single_bit_flip_in_a_sealed_record_is_caught(suite: int) -> None:
    keys = derive_keys(crypto.SUITES[suite], os.urandom(48), os.urandom(32), os.urandom(32))
    client = RecordLayer(client=True)
    client.start_writing_sealed(keys)
    wire = client.seal(ContentType.APPLICATION_DATA, b"GET / HTTP/1.1\r\n\r\n")
    for bit in range(len(wire) * 8):
        flipped = bytearray(wire)
        flipped[bit // 8] ^= 1 << (bit % 8)
        server = RecordLayer(client=False)
        server.start_reading_sealed(keys)
        server.receive_data(bytes(flipped))
        try:
            record = server.next_record()
        except (BadRecordMac, DecodeError, ProtocolVersion):
            continue
        # A flip in the length may leave the record incomplete: never delivered either.
        assert record is None, f"bit {bit} flipped and the record still opened"


def test_replayed_reordered_and_retyped_records_are_rejected(
    pair: tuple[RecordLayer, RecordLayer],
) -> None:
    client, server = pair
    first = client.seal(ContentType.APPLICATION_DATA, b"one")
    second = client.seal(ContentType.APPLICATION_DATA, b"two")
    server.receive_data(first)
    assert read_all(server) == [(ContentType.APPLICATION_DATA, b"one")]
    server.receive_data(first)  # replayed: sequence 1 expected, 0 used
    with pytest.raises(BadRecordMac):
        server.next_record()
    client2, server2 = _fresh_pair()
    a = client2.seal(ContentType.APPLICATION_DATA, b"a")
    b = client2.seal(ContentType.APPLICATION_DATA, b"b")
    server2.receive_data(b + a)  # reordered
    with pytest.raises(BadRecordMac):
        server2.next_record()
    client3, server3 = _fresh_pair()
    record = bytearray(client3.seal(ContentType.APPLICATION_DATA, b"data"))
    record[0] = ContentType.ALERT  # the type is bound in the AAD
    server3.receive_data(bytes(record))
    with pytest.raises(BadRecordMac):
        server3.next_record()
    assert second  # (sealed, never delivered)


def _fresh_pair() -> tuple[RecordLayer, RecordLayer]:
    keys = derive_keys(crypto.SUITES[0x1301], os.urandom(48), os.urandom(32), os.urandom(32))
    client, server = RecordLayer(client=True), RecordLayer(client=False)
    client.start_writing_sealed(keys)
    server.start_reading_sealed(keys)
    return client, server


def test_a_truncated_record_is_never_delivered() -> None:
    client, server = _fresh_pair()
    wire = client.seal(ContentType.APPLICATION_DATA, b"the whole answer")
    server.receive_data(wire[:-1])
    assert server.next_record() is None
    assert server.buffered == len(wire) - 1  # what the connection reports at EOF


def test_an_empty_handshake_record_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        RecordLayer(client=True).seal(ContentType.HANDSHAKE, b"")


def test_record_header_errors() -> None:
    layer = RecordLayer(client=False)
    layer.receive_data(b"\x63\x7e\x01\x00\x01x")
    with pytest.raises(DecodeError, match="unknown record type"):
        layer.next_record()
    layer = RecordLayer(client=False)
    layer.receive_data(b"\x16\x03\x03\x00\x01x")  # a real TLS 1.2 record
    with pytest.raises(ProtocolVersion):
        layer.next_record()
    layer = RecordLayer(client=False)
    layer.receive_data(b"\x17\x7e\x01\xff\xff")
    with pytest.raises(DecodeError, match="over the limit"):
        layer.next_record()


def test_keys_differ_by_direction_and_finished_by_side() -> None:
    suite = crypto.SUITES[0x1303]
    keys = derive_keys(suite, bytes(48), bytes(32), bytes(range(32)))
    assert len(keys.client_write_key) == len(keys.server_write_key) == 32
    assert keys.client_write_key != keys.server_write_key
    assert keys.client_write_iv != keys.server_write_iv
    transcript = crypto.sha256(b"messages")
    assert keys.finished(True, transcript) != keys.finished(False, transcript)
    other = derive_keys(suite, bytes(48), bytes(32), bytes(32))  # another server random
    assert other.master != keys.master
    assert set(keys.fingerprints()) == {
        "master_fingerprint",
        "client_write_key_fingerprint",
        "server_write_key_fingerprint",
    }
