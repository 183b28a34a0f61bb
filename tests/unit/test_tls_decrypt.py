"""Reading recorded toy-TLS connections afterwards (`handshake_tls.decrypt`), in memory."""

from __future__ import annotations

import pytest

from handshake_tls.connection import (
    NEED_DATA,
    ClientConnection,
    HandshakeCompleted,
    ServerConnection,
)
from handshake_tls.decrypt import (
    CannotDecrypt,
    decrypt_recording,
    keylog_line,
    parse_keylog,
)
from handshake_tls.errors import DecodeError, RemoteProtocolError
from handshake_tls.record import ContentType
from handshake_tls.wire import KeyExchange
from tests.unit.test_tls_handshake import NOW, Lab

Chunks = list[tuple[str, bytes]]


def recorded(lab: Lab, kx: KeyExchange) -> tuple[Chunks, str]:
    """A whole connection (handshake, a request, an answer) and its key-log line."""
    client, server = ClientConnection(lab.ca, "localhost", kx), ServerConnection(lab.identities)
    chunks: Chunks = []
    keys = None
    client.start_handshake()
    sent = False
    for _ in range(6):
        for sender, source, sink in (("client", client, server), ("server", server, client)):
            if data := source.data_to_send():
                chunks.append((sender, data))
                sink.receive_data(data)
                while (event := sink.next_event(NOW)) is not NEED_DATA:
                    if isinstance(event, HandshakeCompleted) and sink is client:
                        keys = event.keys
        if client.state.value == "connected" and not sent:
            client.send(b"GET /secret")
            server.send(b"200 the secret")
            sent = True
    assert keys is not None
    return chunks, keylog_line(client.client_random, keys)


@pytest.mark.parametrize("kx", list(KeyExchange))
def test_the_key_log_opens_either_exchange(lab: Lab, kx: KeyExchange) -> None:
    chunks, line = recorded(lab, kx)
    records = decrypt_recording(chunks, keylog=parse_keylog(f"# a comment\n{line}\n"))
    data = [r.data for r in records if r.content_type is ContentType.APPLICATION_DATA]
    assert data == [b"GET /secret", b"200 the secret"]


def test_the_server_key_opens_rsa_only(lab: Lab) -> None:
    rsa_chunks, _ = recorded(lab, KeyExchange.RSA)
    records = decrypt_recording(rsa_chunks, server_key=lab.identities["rsa"].key)
    assert any(r.data == b"GET /secret" for r in records)
    ecdhe_chunks, _ = recorded(lab, KeyExchange.ECDHE)
    with pytest.raises(CannotDecrypt, match="forward secrecy"):
        decrypt_recording(ecdhe_chunks, server_key=lab.identities["rsa"].key)
    with pytest.raises(CannotDecrypt, match="no key"):
        decrypt_recording(ecdhe_chunks, keylog={})


def test_bad_key_logs_and_recordings(lab: Lab) -> None:
    chunks, line = recorded(lab, KeyExchange.ECDHE)
    parts = line.split()
    assert parse_keylog(" ".join([*parts[:3], "00", *parts[4:]])) == {}  # a key too short
    assert parse_keylog(" ".join([parts[0], parts[1], "9999", *parts[3:]])) == {}  # suite
    _other, other_line = recorded(lab, KeyExchange.ECDHE)
    wrong = parse_keylog(other_line)
    wrong = {bytes.fromhex(parts[1]): next(iter(wrong.values()))}  # right name, wrong keys
    with pytest.raises(RemoteProtocolError, match="do not open"):
        decrypt_recording(chunks, keylog=wrong)
    with pytest.raises(DecodeError):
        decrypt_recording([c for c in chunks if c[0] == "client"], keylog=parse_keylog(line))
