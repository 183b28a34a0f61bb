"""The toy TLS handshake: a client and a server stepped against each other in memory."""

from __future__ import annotations

import contextlib
import datetime
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handshake_tls import crypto
from handshake_tls.connection import (
    NEED_DATA,
    AlertReceived,
    ClientConnection,
    CloseNotifyReceived,
    DataReceived,
    HandshakeCompleted,
    HandshakeStep,
    ServerConnection,
    ServerIdentity,
    TLSEvent,
    Truncated,
)
from handshake_tls.errors import (
    CertificateExpired,
    DecodeError,
    HandshakeFailure,
    LocalProtocolError,
    NameMismatch,
    ProtocolVersion,
    RemoteProtocolError,
    UnexpectedMessage,
    UnknownCA,
)
from handshake_tls.record import ContentType, RecordLayer
from handshake_tls.states import State
from handshake_tls.wire import (
    ClientHello,
    ClientKeyExchange,
    Finished,
    KeyExchange,
    Message,
    ServerHello,
    encode_message,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography import x509

NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)


@dataclass
class Lab:
    ca: x509.Certificate
    identities: dict[str, ServerIdentity]


def seeded(seed: int) -> Callable[[int], bytes]:
    rnd = random.Random(seed)
    return rnd.randbytes


def drain(
    conn: ClientConnection | ServerConnection, now: datetime.datetime = NOW
) -> list[TLSEvent]:
    out: list[TLSEvent] = []
    while (event := conn.next_event(now)) is not NEED_DATA:
        out.append(event)
    return out


def handshake(
    client: ClientConnection, server: ServerConnection
) -> tuple[list[TLSEvent], list[TLSEvent]]:
    """Step both until neither has anything to send; returns each side's events."""
    client_events: list[TLSEvent] = []
    server_events: list[TLSEvent] = []
    client.start_handshake()
    for _ in range(10):
        to_server, to_client = client.data_to_send(), server.data_to_send()
        if not to_server and not to_client:
            break
        if to_server:
            server.receive_data(to_server)
            server_events += drain(server)
        if to_client:
            client.receive_data(to_client)
            client_events += drain(client)
    return client_events, server_events


@pytest.mark.parametrize("kx", list(KeyExchange))
@pytest.mark.parametrize("suite", sorted(crypto.SUITES))
def test_the_handshake_completes_and_data_flows_both_ways(
    lab: Lab, kx: KeyExchange, suite: int
) -> None:
    client = ClientConnection(lab.ca, "localhost", kx, suites=(suite,))
    server = ServerConnection(lab.identities)
    client_events, server_events = handshake(client, server)
    assert client.state is State.CONNECTED
    assert server.state is State.CONNECTED
    [done_c] = [e for e in client_events if isinstance(e, HandshakeCompleted)]
    [done_s] = [e for e in server_events if isinstance(e, HandshakeCompleted)]
    assert done_c.keys == done_s.keys  # both derived the same secrets, independently
    assert done_c.suite == crypto.SUITES[suite].name
    assert done_c.key_exchange == kx.name.lower()
    steps = [e.step for e in client_events if isinstance(e, HandshakeStep)]
    expected = ["server_hello", "certificate", "client_key_exchange", "keys", "finished"]
    if kx is KeyExchange.ECDHE:
        expected.insert(2, "server_key_exchange")
    assert steps == ["client_hello", *expected, "finished"]
    # rsa needs the RSA certificate; ecdhe gets the EC one.
    assert client.certificate is not None
    assert client.certificate.key_type == ("rsa" if kx is KeyExchange.RSA else "ec")
    client.send(b"GET / HTTP/1.1\r\n\r\n")
    wire = client.data_to_send()
    assert b"GET" not in wire
    server.receive_data(wire)
    assert drain(server) == [DataReceived(b"GET / HTTP/1.1\r\n\r\n")]
    server.send(b"HTTP/1.1 200 OK\r\n\r\n")
    client.receive_data(server.data_to_send())
    assert drain(client) == [DataReceived(b"HTTP/1.1 200 OK\r\n\r\n")]
    # close_notify: a clean end, told apart from a cut connection.
    server.receive_data(client.close())
    assert drain(server) == [CloseNotifyReceived()]


def test_a_fin_without_close_notify_is_a_truncation(lab: Lab) -> None:
    client, server = ClientConnection(lab.ca, "localhost"), ServerConnection(lab.identities)
    handshake(client, server)
    server.send(b"part of an answer")
    client.receive_data(server.data_to_send()[:-3])
    client.receive_data(b"")
    with pytest.raises(Truncated):
        drain(client)
    assert client.fail(Truncated("x")) == b""


def test_a_changed_suite_list_is_caught_by_the_signature_with_ecdhe(lab: Lab) -> None:
    client = ClientConnection(lab.ca, "localhost", KeyExchange.ECDHE)
    server = ServerConnection(lab.identities)
    hello = bytearray(client.start_handshake())
    hello[hello.index(b"\x13\x03") + 1] ^= 0x01
    server.receive_data(bytes(hello))
    drain(server)
    client.receive_data(server.data_to_send())
    with pytest.raises(RemoteProtocolError) as caught:  # the server signed what it saw
        drain(client)
    assert caught.value.alert == "decrypt_error"


def test_a_changed_suite_list_is_caught_by_finished(lab: Lab) -> None:
    # rsa: nothing is signed, so the Finished messages (HMACs over the transcript) catch it.
    client = ClientConnection(lab.ca, "localhost", KeyExchange.RSA, suites=(0x1301, 0x1303))
    server = ServerConnection(lab.identities)
    hello = bytearray(client.start_handshake())
    client.data_to_send()
    at = hello.index(b"\x13\x03")
    hello[at + 1] ^= 0x01  # 0x1303 -> 0x1302: the server never sees ChaCha20 offered
    server.receive_data(bytes(hello))
    drain(server)
    client.receive_data(server.data_to_send())
    drain(client)  # the client sees nothing wrong: the server chose a suite it offered
    server.receive_data(client.data_to_send())
    with pytest.raises(RemoteProtocolError) as caught:
        drain(server)
    assert caught.value.alert == "decrypt_error"  # the client's Finished covers its hello
    alert = server.fail(caught.value)
    client.receive_data(alert)
    [event] = drain(client)
    assert event == AlertReceived("decrypt_error", 51)
    assert client.state is State.ERROR


@pytest.mark.parametrize("kx", list(KeyExchange))
def test_every_bit_flip_in_the_server_flight_is_detected(lab: Lab, kx: KeyExchange) -> None:
    """Flip each bit of the server's first flight: the handshake must never complete."""

    def fresh() -> tuple[ClientConnection, ServerConnection]:
        client = ClientConnection(lab.ca, "localhost", kx, rng=seeded(1))
        server = ServerConnection(lab.identities, rng=seeded(2))
        return client, server

    client, server = fresh()
    server.receive_data(client.start_handshake())
    drain(server)
    flight = server.data_to_send()
    caught_by_server = 0
    for bit in range(len(flight) * 8):
        flipped = bytearray(flight)
        flipped[bit // 8] ^= 1 << (bit % 8)
        client, server = fresh()
        client.start_handshake()
        client.data_to_send()
        client.receive_data(bytes(flipped))
        try:
            drain(client)
        except RemoteProtocolError:
            continue  # the client caught it
        if client.state is not State.EXPECT_FINISHED:
            assert client.state is not State.CONNECTED
            continue  # a length flip: the client is still waiting for the rest
        # Passed the client (e.g. a bit of the server random): the server must catch it.
        server.receive_data(_hello(lab, kx))
        drain(server)
        server.data_to_send()
        server.receive_data(client.data_to_send())
        with pytest.raises(RemoteProtocolError):
            drain(server)
        caught_by_server += 1
    if kx is KeyExchange.RSA:
        # The server random's 256 bits pass the client (it cannot know B); the keys then
        # differ and the server's check of the client's Finished fails.
        assert caught_by_server >= 256
    else:
        assert caught_by_server == 0  # ecdhe: the server signed B too; the client catches all


def _hello(lab: Lab, kx: KeyExchange) -> bytes:
    return ClientConnection(lab.ca, "localhost", kx, rng=seeded(1)).start_handshake()


@pytest.mark.parametrize(
    ("trusted", "name", "error"),
    [("other", "localhost", UnknownCA), ("lab", "example.org", NameMismatch)],
)
def test_certificate_failures_become_alerts(
    lab: Lab, trusted: str, name: str, error: type[RemoteProtocolError]
) -> None:
    other_key = crypto.new_private_key("ec")
    ca = lab.ca if trusted == "lab" else crypto.make_ca(other_key, "other", NOW, 30)
    client, server = ClientConnection(ca, name), ServerConnection(lab.identities)
    server.receive_data(client.start_handshake())
    drain(server)
    client.receive_data(server.data_to_send())
    with pytest.raises(error) as caught:
        drain(client)
    server.receive_data(client.fail(caught.value))
    assert drain(server) == [AlertReceived(error.alert, error.code)]


def test_no_common_suite_and_no_rsa_certificate_fail_the_handshake(lab: Lab) -> None:
    client = ClientConnection(lab.ca, "localhost", suites=(0x1303,))
    server = ServerConnection(lab.identities, suites=(0x1301,))
    server.receive_data(client.start_handshake())
    with pytest.raises(HandshakeFailure, match="suite"):
        drain(server)
    client = ClientConnection(lab.ca, "localhost", KeyExchange.RSA)
    server = ServerConnection({"ec": lab.identities["ec"]})
    server.receive_data(client.start_handshake())
    with pytest.raises(HandshakeFailure, match="certificate"):
        drain(server)


def test_messages_out_of_order_and_data_before_the_handshake(lab: Lab) -> None:
    server = ServerConnection(lab.identities)
    client = ClientConnection(lab.ca, "localhost")
    hello = client.start_handshake()
    server.receive_data(hello + hello)  # a second ClientHello
    with pytest.raises(UnexpectedMessage):
        drain(server)
    with pytest.raises(LocalProtocolError):
        client.send(b"too early")
    with pytest.raises(LocalProtocolError):
        client.start_handshake()
    with pytest.raises(LocalProtocolError):
        ServerConnection({})


# --- the edges of the state machines -----------------------------------------------------


def test_a_server_hello_for_another_hello_is_refused(lab: Lab) -> None:
    # The flight answers an ecdhe hello offering AES; a client that sent rsa, or offered
    # only ChaCha20, must refuse it (RFC 5246 §7.4.1.3's rule: only what was offered).
    for kx, suites, match in (
        (KeyExchange.RSA, (0x1301,), "key exchange"),
        (KeyExchange.ECDHE, (0x1303,), "not offered"),
    ):
        server = ServerConnection(lab.identities)
        server.receive_data(ClientConnection(lab.ca, "localhost").start_handshake())
        drain(server)
        client = ClientConnection(lab.ca, "localhost", kx, suites=suites)
        client.start_handshake()
        client.receive_data(server.data_to_send())
        with pytest.raises(HandshakeFailure, match=match):
            drain(client)


def plain_handshake_record(message: Message) -> bytes:
    return RecordLayer(client=True).seal(ContentType.HANDSHAKE, encode_message(message))


def test_other_versions_are_refused_both_ways(lab: Lab) -> None:
    server = ServerConnection(lab.identities)
    hello = ClientHello(bytes(32), (0x1301,), KeyExchange.ECDHE, "localhost", version=0x0303)
    server.receive_data(plain_handshake_record(hello))
    with pytest.raises(ProtocolVersion):
        drain(server)
    client = ClientConnection(lab.ca, "localhost")
    client.start_handshake()
    client.receive_data(
        plain_handshake_record(ServerHello(bytes(32), 0x1301, KeyExchange.ECDHE, version=0x0303))
    )
    with pytest.raises(ProtocolVersion):
        drain(client)


@pytest.mark.parametrize("premaster", [bytes(47), None], ids=["47-bytes", "garbage"])
def test_a_bad_premaster_shows_only_as_a_finished_mismatch(
    lab: Lab, premaster: bytes | None
) -> None:
    # RFC 5246 §7.4.7.1: no alert at the key exchange (that would be a decryption oracle);
    # the server goes on with a random premaster, and the Finished check fails.
    server = ServerConnection(lab.identities)
    server.receive_data(ClientConnection(lab.ca, "localhost", KeyExchange.RSA).start_handshake())
    drain(server)
    public_key = crypto.describe(crypto.load_certificate(lab.identities["rsa"].chain[0])).public_key
    data = crypto.rsa_encrypt(public_key, premaster) if premaster else bytes(256)
    server.receive_data(plain_handshake_record(ClientKeyExchange(data)))
    drain(server)
    assert server.state is State.EXPECT_FINISHED


def test_plaintext_handshake_bytes_after_the_key_change_are_refused(lab: Lab) -> None:
    client = ClientConnection(lab.ca, "localhost", KeyExchange.RSA)
    server = ServerConnection(lab.identities)
    server.receive_data(client.start_handshake())
    client.data_to_send()
    drain(server)
    client.receive_data(server.data_to_send())
    drain(client)
    # The client's key exchange, followed in the same plaintext record by a "Finished".
    first = client.data_to_send()
    exchange = first[5 : 5 + int.from_bytes(first[3:5], "big")]
    bogus = encode_message(Finished(bytes(32)))
    server.receive_data(RecordLayer(client=True).seal(ContentType.HANDSHAKE, exchange + bogus))
    with pytest.raises(UnexpectedMessage, match="plaintext after the keys changed"):
        drain(server)


def test_a_close_notify_before_the_handshake_ends_is_unexpected(lab: Lab) -> None:
    client = ClientConnection(lab.ca, "localhost")
    client.start_handshake()
    client.receive_data(RecordLayer(client=False).seal(ContentType.ALERT, b"\x01\x00"))
    with pytest.raises(UnexpectedMessage, match="close_notify"):
        drain(client)
    with pytest.raises(LocalProtocolError):
        client.send(b"never in plaintext")


def test_an_oversized_handshake_message_is_refused_at_its_header(lab: Lab) -> None:
    server = ServerConnection(lab.identities)
    header = bytes([1]) + (0xFFFFFF).to_bytes(3, "big")
    server.receive_data(RecordLayer(client=True).seal(ContentType.HANDSHAKE, header))
    with pytest.raises(DecodeError, match="announced"):
        drain(server)


def test_a_malformed_alert_and_closing_twice(lab: Lab) -> None:
    server = ServerConnection(lab.identities)
    server.receive_data(RecordLayer(client=True).seal(ContentType.ALERT, b"\x02\x28\x00"))
    with pytest.raises(DecodeError, match="2 bytes"):
        drain(server)
    assert server.close() == b""  # in ERROR: nothing more to say
    client, other = ClientConnection(lab.ca, "localhost"), ServerConnection(lab.identities)
    handshake(client, other)
    assert client.close()
    assert client.close() == b""  # close_notify once
    with pytest.raises(LocalProtocolError):
        client.send(b"after close_notify")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_into_either_side_give_only_our_errors(data: bytes, to_client: bool) -> None:
    conn: ClientConnection | ServerConnection
    if to_client:
        conn = ClientConnection(LAB_CA, "localhost")
        conn.start_handshake()
    else:
        conn = ServerConnection(LAB_IDENTITIES)
    conn.receive_data(data)
    with contextlib.suppress(RemoteProtocolError):  # (anything else fails the test)
        drain(conn)


def _module_lab() -> tuple[x509.Certificate, dict[str, ServerIdentity]]:
    ca_key = crypto.new_private_key("ec")
    ca = crypto.make_ca(ca_key, "fuzz CA", NOW, 30)
    key = crypto.new_private_key("ec")
    cert = crypto.make_server_certificate(ca, ca_key, key, ["localhost"], NOW, 10)
    return ca, {"ec": ServerIdentity((crypto.certificate_der(cert),), key)}


LAB_CA, LAB_IDENTITIES = _module_lab()


@pytest.mark.parametrize("kx", list(KeyExchange))
def test_every_bit_flip_in_the_clients_second_flight_is_detected(lab: Lab, kx: KeyExchange) -> None:
    """The ClientKeyExchange and the client's (sealed) Finished: no flip gets through."""

    def server_after_hello() -> tuple[ServerConnection, bytes]:
        client = ClientConnection(lab.ca, "localhost", kx, rng=seeded(3))
        server = ServerConnection(lab.identities, rng=seeded(4))
        server.receive_data(client.start_handshake())
        client.data_to_send()
        drain(server)
        client.receive_data(server.data_to_send())
        drain(client)
        return server, client.data_to_send()

    _server, flight = server_after_hello()
    for bit in range(len(flight) * 8):
        flipped = bytearray(flight)
        flipped[bit // 8] ^= 1 << (bit % 8)
        server, _ = server_after_hello()
        server.receive_data(bytes(flipped))
        try:
            events = drain(server)
        except RemoteProtocolError:
            continue
        assert not any(isinstance(e, HandshakeCompleted) for e in events), f"bit {bit}"
        assert server.state is not State.CONNECTED


def test_an_expired_certificate_is_its_own_alert(lab: Lab) -> None:
    client, server = ClientConnection(lab.ca, "localhost"), ServerConnection(lab.identities)
    server.receive_data(client.start_handshake())
    drain(server)
    client.receive_data(server.data_to_send())
    later = NOW + datetime.timedelta(days=11)  # the test certificates are valid 10 days
    with pytest.raises(CertificateExpired) as caught:
        drain(client, later)
    server.receive_data(client.fail(caught.value))
    assert drain(server) == [AlertReceived("certificate_expired", 45)]
