"""Bad input at the toy-TLS port (issue 8): a table of cases, each against a real server on
127.0.0.1 over real sockets.

Each row sends what a broken or hostile client would, or puts a man in the middle between
our client and the server, and checks: the right alert on the wire (parsed from the bytes
received; opened when it is sealed and we hold the keys), the connection closed with a FIN
(not a reset, not left waiting), no request served, the server serving a real toy-TLS
request afterwards, and the books balanced: the metrics agree with the events, and every
connection opened was closed.

The alert codes are the toy's own (handshake_tls/errors.py); each row cites the rule of real
TLS it mirrors (RFC 8446, TLS 1.3; RFC 5246, TLS 1.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import os
import random
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import pytest

from client.client import HTTPClient, RequestError
from handshake_tls import crypto
from handshake_tls.certs import make_lab_certificates
from handshake_tls.connection import (
    NEED_DATA,
    ClientConnection,
    HandshakeCompleted,
    HandshakeStep,
    TLSEvent,
)
from handshake_tls.errors import ALERTS, BadRecordMac
from handshake_tls.record import MAX_PLAINTEXT, MAX_SEALED, ContentType, RecordLayer, derive_keys
from handshake_tls.recording import Recorder, read_recording
from handshake_tls.states import State
from handshake_tls.wire import (
    VERSION,
    Certificate,
    ClientHello,
    ClientKeyExchange,
    Finished,
    KeyExchange,
    Message,
    ServerHello,
    ServerHelloDone,
    decode_message,
    encode_message,
    split_message,
)
from server.lifecycle import Server
from telemetry.events import Name, Role
from tests.conftest import make_config
from tests.helpers import wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from cryptography import x509
    from prometheus_client import CollectorRegistry

    from handshake_tls.certs import LabFiles
    from tests.conftest import Observed

pytestmark = pytest.mark.integration

ALERT: Final = ContentType.ALERT
HANDSHAKE: Final = ContentType.HANDSHAKE
APPLICATION_DATA: Final = ContentType.APPLICATION_DATA
FATAL: Final = 2
TAG_BYTES: Final = 16  # both suites' AEAD tag: a sealed alert is 2 + 16 bytes
READ_TIMEOUT_S: Final = 5.0
ECDHE, RSA = KeyExchange.ECDHE, KeyExchange.RSA
CODES: Final = {"close_notify": 0} | {cls.alert: code for code, cls in ALERTS.items()}


# --- the lab: the server's certificates, and the ones a man in the middle brings -------------


@dataclass(frozen=True)
class Lab:
    files: LabFiles
    ca: x509.Certificate
    other_ca_der: dict[str, bytes]  # a server certificate from another CA, by key type
    wrong_name_der: bytes  # signed by the lab CA, for example.org only
    expired_der: bytes  # signed by the lab CA, for the right names, expired a month ago
    other_key_der: dict[str, bytes]  # signed by the lab CA, right names, the MITM's own key


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    files = make_lab_certificates(tmp_path_factory.mktemp("certs"))
    other = make_lab_certificates(tmp_path_factory.mktemp("other-certs"))
    ca = crypto.load_certificate_pem(files.ca.read_bytes())
    ca_key = crypto.load_private_key_pem(files.ca_key.read_bytes())
    now = datetime.datetime.now(datetime.UTC)
    names = ["localhost", "127.0.0.1"]

    def signed(names: list[str], key: crypto.PrivateKey, when: datetime.datetime) -> bytes:
        return crypto.certificate_der(
            crypto.make_server_certificate(ca, ca_key, key, names, when, 10)
        )

    mitm_keys = {kind: crypto.new_private_key(kind) for kind in ("rsa", "ec")}
    return Lab(
        files,
        ca,
        {
            kind: crypto.certificate_der(
                crypto.load_certificate_pem(other.certificate(kind).read_bytes())
            )
            for kind in ("rsa", "ec")
        },
        signed(["example.org"], mitm_keys["ec"], now),
        signed(names, mitm_keys["ec"], now - datetime.timedelta(days=30)),
        {kind: signed(names, key, now) for kind, key in mitm_keys.items()},
    )


@pytest.fixture
async def server(observed: Observed, lab: Lab) -> AsyncIterator[Server]:
    """The toy-TLS listener on 127.0.0.1:0 with the module's certificates. A short handshake
    timeout: a case the server would wait on fails as a timeout, not a hang."""
    config = make_config(toy_tls_port=0, certs_dir=lab.files.directory, header_timeout_s=3.0)
    async with Server(config, observed.bus) as running:
        yield running


# --- bytes --------------------------------------------------------------------------------


def record(content_type: int, fragment: bytes, *, length: int | None = None) -> bytes:
    """A plaintext record as the wire has it; `length` may lie."""
    size = len(fragment) if length is None else length
    return bytes([content_type]) + VERSION.to_bytes(2, "big") + size.to_bytes(2, "big") + fragment


def handshake_record(*messages: Message) -> bytes:
    return record(HANDSHAKE, b"".join(encode_message(m) for m in messages))


def alert_record(code: int, level: int = FATAL) -> bytes:
    return record(ALERT, bytes([level, code]))


def hello(
    suites: tuple[int, ...] = (0x1301, 0x1303),
    kx: KeyExchange = ECDHE,
    version: int = VERSION,
    client_random: bytes | None = None,
) -> ClientHello:
    return ClientHello(client_random or os.urandom(32), suites, kx, "localhost", version)


HELLO: Final = handshake_record(hello())


def split_records(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole records at the front of `data` (type, fragment), and what is left."""
    out = []
    while len(data) >= 5 and len(data) >= 5 + (length := int.from_bytes(data[3:5], "big")):
        out.append((data[0], data[5 : 5 + length]))
        data = data[5 + length :]
    return out, data


# --- a raw client: our own core for the parts that must be real, raw bytes for the rest ------


class RawPeer:
    """A client on a plain socket. `core` makes real handshake bytes when a case needs them
    (and holds the keys to open a sealed alert); everything else is sent raw.

    Reads use the socket directly: the kernel hands over what arrived before a reset, so a
    reset is seen as a reset and never hides the alert before it."""

    def __init__(self, sock: socket.socket, core: ClientConnection) -> None:
        self.sock = sock
        self.core = core
        self.buffer = b""  # received, not yet taken as the server's flight
        self.flight_bytes = b""
        self.reset = False
        self.finished_record = b""  # the core's sealed Finished, when a case held it back
        self.background: asyncio.Task[None] | None = None  # a send still going on

    @classmethod
    async def connect(cls, port: int, core: ClientConnection) -> RawPeer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return cls(sock, core)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    def fin(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    async def _receive(self) -> bytes:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                return await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        except ConnectionResetError:
            self.reset = True
            return b""

    async def hello(self) -> None:
        await self.send(self.core.start_handshake())
        self.core.data_to_send()

    async def flight(self) -> None:
        """Read the server's first flight (through ServerHelloDone) and feed it to the core,
        which then has its ClientKeyExchange and Finished ready."""
        while True:
            records, _rest = split_records(self.buffer)
            at = 0
            for content_type, fragment in records:
                at += 5 + len(fragment)
                if content_type == HANDSHAKE and fragment[:1] == b"\x0e":  # ServerHelloDone
                    self.flight_bytes, self.buffer = self.buffer[:at], self.buffer[at:]
                    self.core.receive_data(self.flight_bytes)
                    drain(self.core)
                    assert self.core.state is State.EXPECT_FINISHED
                    return
            data = await self._receive()
            assert data, f"the server closed before its flight ended: {self.buffer!r}"
            self.buffer += data

    def key_exchange(self) -> bytes:
        """The core's ClientKeyExchange record (plaintext); its sealed Finished is kept."""
        out = self.core.data_to_send()
        first = 5 + int.from_bytes(out[3:5], "big")
        self.finished_record = out[first:]
        return out[:first]

    async def complete(self) -> None:
        """The rest of a real handshake: key exchange, Finished, the server's Finished."""
        await self.send(self.key_exchange() + self.finished_record)
        while self.core.state is not State.CONNECTED:
            data = self.buffer or await self._receive()
            self.buffer = b""
            assert data, "the server closed instead of finishing the handshake"
            self.core.receive_data(data)
            assert not [e for e in drain(self.core) if not _is_step(e)]

    def seal_as_first(self, content_type: ContentType, data: bytes) -> bytes:
        """Sealed with the client's keys at sequence 0: in place of the client's Finished."""
        assert self.core.keys is not None
        layer = RecordLayer(client=True)
        layer.start_writing_sealed(self.core.keys)
        return layer.seal(content_type, data)

    async def answer(self) -> bytes:
        """Everything the server sends until it closes."""
        while data := await self._receive():
            self.buffer += data
        if self.background is not None:
            with contextlib.suppress(OSError):  # (the server stopped reading: a reset)
                await self.background
        return self.buffer

    def close(self) -> None:
        self.sock.close()


def drain(core: ClientConnection) -> list[TLSEvent]:
    events = []
    while (event := core.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def _is_step(event: TLSEvent) -> bool:
    return isinstance(event, HandshakeStep | HandshakeCompleted)


Script = Callable[[RawPeer], Awaitable[None]]


def sends(*chunks: bytes, fin: bool = False) -> Script:
    """Send each chunk as its own write (then FIN, if asked)."""

    async def script(peer: RawPeer) -> None:
        for chunk in chunks:
            await peer.send(chunk)
        if fin:
            peer.fin()

    return script


def still_sending(bad: Callable[[RawPeer], bytes], flood_bytes: int = 1 << 20) -> Script:
    """`bad(peer)` after a real hello and flight (or at once, without `hello`), then a
    client that keeps sending: more than the server will read before it gives up, so its
    close finds our bytes unread (the kernel's RST case). Our sends may fail: the server
    stopped reading, as it should; the answer must still be the alert, then FIN."""

    async def script(peer: RawPeer) -> None:
        await peer.send(bad(peer))
        flood = asyncio.create_task(peer.send(bytes(flood_bytes)))
        peer.background = flood

    return script


def after_flight(then: Callable[[RawPeer], bytes], *, fin: bool = False) -> Script:
    """A real ClientHello, the server's real flight, then `then(peer)`."""

    async def script(peer: RawPeer) -> None:
        await peer.hello()
        await peer.flight()
        await peer.send(then(peer))
        if fin:
            peer.fin()

    return script


def after_handshake(then: Callable[[RawPeer], bytes], *, fin: bool = False) -> Script:
    """A whole real handshake, then `then(peer)` (sealed records continue the sequence)."""

    async def script(peer: RawPeer) -> None:
        await peer.hello()
        await peer.flight()
        await peer.complete()
        await peer.send(then(peer))
        if fin:
            peer.fin()

    return script


def sealed_after(content_type: ContentType, data: bytes) -> Callable[[RawPeer], bytes]:
    return lambda peer: peer.core.records.seal(content_type, data)


def cut(data: bytes, keep: int) -> bytes:
    return data[:keep]


# --- what each case must produce ------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What the server does with a case.

    kind: its failure kind (tcp.connection.failed, and tls.handshake.failed when
        `in_handshake`); None: no failure at all.
    sent: the alert it answers with (None: it sends none).
    sealed: the alert goes out sealed (the server had switched keys).
    opens: we hold the keys the server seals with (False: we cannot open it, by design).
    received: the alert it heard from the client, if any.
    in_handshake: the failure came before the handshake completed.
    level: the alert's level (1 for the close_notify of a clean end).
    """

    kind: str | None
    sent: str | None
    sealed: bool = False
    opens: bool = True
    received: str | None = None
    in_handshake: bool = True
    level: int = FATAL


def sent(alert: str, *, sealed: bool = False, opens: bool = True) -> Expect:
    return Expect(f"tls_{alert}", alert, sealed=sealed, opens=opens)


def heard(alert: str, *, in_handshake: bool = True) -> Expect:
    """The server received a fatal alert: it closes and answers nothing (RFC 8446 §6.2)."""
    return Expect(f"tls_{alert}", None, received=alert, in_handshake=in_handshake)


EOF: Final = Expect("tls_unexpected_eof", None)  # FIN without close_notify: no alert, no one
# hears it (handshake_tls.connection.Truncated; RFC 8446 §6.1 asks for none either)

CASES = [
    # --- truncated ------------------------------------------------------------------------
    # A record header promising more than arrives, then FIN (RFC 8446 §5.1: the record is
    # incomplete; the toy treats FIN without close_notify as a truncation).
    pytest.param(ECDHE, sends(cut(HELLO, 20), fin=True), EOF, id="record-cut-short-then-fin"),
    pytest.param(ECDHE, sends(cut(HELLO, 3), fin=True), EOF, id="header-cut-short-then-fin"),
    # A handshake message cut short inside its record: the message header promises more
    # than the record holds, the record ends, then FIN (RFC 8446 §5.1: messages may span
    # records, so the toy waits for the rest; it never comes).
    pytest.param(
        ECDHE,
        sends(record(HANDSHAKE, HELLO[5:30]), fin=True),
        EOF,
        id="message-cut-short-in-its-record-then-fin",
    ),
    # The message's own fields cut short, its lengths consistent (RFC 8446 §4: decode_error).
    pytest.param(
        ECDHE,
        sends(record(HANDSHAKE, b"\x01\x00\x00\x22" + HELLO[9:43])),
        sent("decode_error"),
        id="message-body-ends-inside-a-field",
    ),
    # The client's key exchange cut short after the server's flight, then FIN.
    pytest.param(
        RSA,
        after_flight(lambda p: cut(p.key_exchange(), 100), fin=True),
        EOF,
        id="key-exchange-cut-short-then-fin",
    ),
    # After the handshake: a sealed record cut short, then FIN: never delivered (a truncation
    # attack on the data, RFC 8446 §6.1).
    pytest.param(
        ECDHE,
        after_handshake(
            lambda p: cut(p.core.records.seal(APPLICATION_DATA, b"GET /"), 20), fin=True
        ),
        dataclasses.replace(EOF, in_handshake=False),
        id="sealed-record-cut-short-after-handshake-then-fin",
    ),
    # A client still sending when the server gives up (a pipelining client): the alert and
    # a FIN must reach it before the RST its unread bytes cause (RFC 8446 §6.2: close after
    # a fatal alert; RFC 9293 §3.6: data unread at close is a reset).
    pytest.param(
        ECDHE,
        still_sending(lambda _p: record(99, b"x")),
        sent("decode_error"),
        id="bad-record-with-1-mib-behind-it",
    ),
    # --- oversized ---------------------------------------------------------------------------
    # Records over 2^14 bytes (RFC 8446 §5.1, record_overflow there; decode_error here),
    # refused at the header: the body is never waited for.
    pytest.param(
        ECDHE,
        sends(record(HANDSHAKE, b"", length=MAX_PLAINTEXT + 1)),
        sent("decode_error"),
        id="plaintext-record-of-16385-bytes",
    ),
    pytest.param(
        ECDHE,
        sends(record(APPLICATION_DATA, b"", length=0xFFFF)),
        sent("decode_error"),
        id="record-of-65535-bytes",
    ),
    pytest.param(
        ECDHE,
        after_flight(lambda p: p.key_exchange() + record(HANDSHAKE, b"", length=MAX_SEALED + 1)),
        sent("decode_error", sealed=True),
        id="sealed-record-over-the-limit",
    ),
    # A handshake message announcing more than 64 KiB, refused at its 4-byte header.
    pytest.param(
        ECDHE,
        sends(record(HANDSHAKE, b"\x01\x01\x00\x01")),
        sent("decode_error"),
        id="handshake-message-of-65537-bytes",
    ),
    pytest.param(
        ECDHE,
        sends(record(HANDSHAKE, b"\x10\xff\xff\xff" + bytes(100))),
        sent("decode_error"),
        id="handshake-message-of-16-mib",
    ),
    # --- in the wrong order (RFC 8446 §4: unexpected_message) ---------------------------------
    pytest.param(
        ECDHE,
        sends(handshake_record(Finished(bytes(32)))),
        sent("unexpected_message"),
        id="finished-first",
    ),
    pytest.param(
        ECDHE,
        sends(handshake_record(ClientKeyExchange(bytes(32)))),
        sent("unexpected_message"),
        id="key-exchange-before-client-hello",
    ),
    pytest.param(
        ECDHE,
        sends(handshake_record(hello(), hello())),
        sent("unexpected_message"),
        id="two-client-hellos-in-one-record",
    ),
    pytest.param(
        ECDHE,
        after_flight(lambda _p: HELLO),
        sent("unexpected_message"),
        id="second-client-hello-after-the-flight",
    ),
    pytest.param(
        ECDHE,
        sends(handshake_record(ServerHello(bytes(32), 0x1301, ECDHE))),
        sent("unexpected_message"),
        id="server-hello-to-the-server",
    ),
    pytest.param(
        RSA,
        after_flight(lambda _p: handshake_record(Finished(bytes(32)))),
        sent("unexpected_message"),
        id="finished-instead-of-key-exchange",
    ),
    pytest.param(
        ECDHE,
        sends(record(APPLICATION_DATA, b"GET / HTTP/1.1\r\n\r\n")),
        sent("unexpected_message"),
        id="application-data-before-the-handshake",
    ),
    # The Finished not sealed: after the key exchange only sealed records open (bad_record_mac).
    pytest.param(
        ECDHE,
        after_flight(lambda p: p.key_exchange() + handshake_record(Finished(bytes(32)))),
        sent("bad_record_mac", sealed=True),
        id="finished-in-plaintext",
    ),
    pytest.param(
        ECDHE,
        after_flight(
            lambda p: (
                p.key_exchange()
                + p.seal_as_first(HANDSHAKE, encode_message(ClientKeyExchange(bytes(32))))
            )
        ),
        sent("unexpected_message", sealed=True),
        id="second-key-exchange-sealed",
    ),
    # After the handshake, a new ClientHello (renegotiation, which the toy does not have).
    pytest.param(
        ECDHE,
        after_handshake(sealed_after(HANDSHAKE, encode_message(hello()))),
        dataclasses.replace(sent("unexpected_message", sealed=True), in_handshake=False),
        id="client-hello-after-the-handshake",
    ),
    # --- unknown types and versions --------------------------------------------------------
    pytest.param(ECDHE, sends(record(99, b"x")), sent("decode_error"), id="unknown-record-type"),
    pytest.param(
        ECDHE,
        sends(record(HANDSHAKE, b"\x63\x00\x00\x01x")),
        sent("decode_error"),
        id="unknown-handshake-message-type",
    ),
    pytest.param(
        ECDHE,
        sends(HELLO[:48] + b"\x09" + HELLO[49:]),  # (the kx byte: 5 + 4 + 2 + 32 + 1 + 4)
        sent("decode_error"),
        id="unknown-key-exchange",
    ),
    # Only suites we do not know (RFC 8446 §4.1.1: handshake_failure).
    pytest.param(
        ECDHE,
        sends(handshake_record(hello(suites=(0x1302, 0xC02F)))),
        sent("handshake_failure"),
        id="only-unknown-suites",
    ),
    # Another version (RFC 8446 §4.2.1: protocol_version): a real TLS ClientHello's record,
    # and a toy hello that says TLS 1.2 inside.
    pytest.param(
        ECDHE,
        sends(b"\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03" + bytes(42)),
        sent("protocol_version"),
        id="real-tls-client-hello",
    ),
    pytest.param(
        ECDHE,
        sends(handshake_record(hello(version=0x0303))),
        sent("protocol_version"),
        id="client-hello-version-0x0303",
    ),
    pytest.param(
        ECDHE,
        after_handshake(lambda p: record(99, bytes(18))),
        dataclasses.replace(sent("decode_error", sealed=True), in_handshake=False),
        id="unknown-record-type-after-the-handshake",
    ),
    pytest.param(
        ECDHE,
        sends(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        sent("decode_error"),
        id="http-on-the-toy-tls-port",
    ),
    # --- alerts at odd times ---------------------------------------------------------------
    pytest.param(
        ECDHE, sends(alert_record(40)), heard("handshake_failure"), id="alert-before-client-hello"
    ),
    # An unknown alert is an error all the same (RFC 8446 §6), named unknown_alert whatever
    # its code (a metric label: the peer must not choose its values).
    pytest.param(ECDHE, sends(alert_record(200)), heard("unknown_alert"), id="unknown-alert-code"),
    # close_notify before anything began (RFC 8446 §6.1 lets it end a connection at any time;
    # the toy treats it as a message out of order, its documented choice).
    pytest.param(
        ECDHE,
        sends(alert_record(0, level=1)),
        sent("unexpected_message"),
        id="close-notify-before-client-hello",
    ),
    pytest.param(
        ECDHE, sends(record(ALERT, b"\x02\x28\x00")), sent("decode_error"), id="alert-of-3-bytes"
    ),
    pytest.param(ECDHE, sends(record(ALERT, b"")), sent("decode_error"), id="empty-alert-record"),
    pytest.param(
        ECDHE,
        after_flight(lambda _p: alert_record(51)),
        heard("decrypt_error"),
        id="alert-after-the-server-flight",
    ),
    # Mid-handshake, after the key exchange: a plaintext alert no longer opens.
    pytest.param(
        ECDHE,
        after_flight(lambda p: p.key_exchange() + alert_record(40)),
        sent("bad_record_mac", sealed=True),
        id="plaintext-alert-after-the-key-exchange",
    ),
    pytest.param(
        RSA,
        after_flight(lambda p: p.key_exchange() + p.seal_as_first(ALERT, b"\x02\x28")),
        heard("handshake_failure"),
        id="sealed-alert-instead-of-finished",
    ),
    pytest.param(
        ECDHE,
        after_handshake(sealed_after(ALERT, b"\x02\x33")),
        heard("decrypt_error", in_handshake=False),
        id="fatal-alert-after-finished",
    ),
    pytest.param(
        ECDHE,
        after_handshake(sealed_after(ALERT, b"\x01\xc8")),
        heard("unknown_alert", in_handshake=False),
        id="unknown-warning-alert-after-finished",
    ),
    # close_notify right after Finished, no request: a clean end, answered with close_notify.
    pytest.param(
        ECDHE,
        after_handshake(sealed_after(ALERT, b"\x01\x00")),
        Expect(None, "close_notify", sealed=True, in_handshake=False, level=1),
        id="close-notify-after-finished",
    ),
]


@pytest.mark.parametrize(("kx", "script", "expect"), CASES)
async def test_bad_input_is_answered_with_its_alert_and_the_server_serves_on(
    server: Server, observed: Observed, lab: Lab, kx: KeyExchange, script: Script, expect: Expect
) -> None:
    assert server.toy_tls_port is not None
    peer = await RawPeer.connect(server.toy_tls_port, ClientConnection(lab.ca, "localhost", kx))
    try:
        await script(peer)
        answer = await peer.answer()
    finally:
        peer.close()
    assert not peer.reset, "the server reset the connection instead of closing it"
    assert_alert_on_the_wire(answer, expect, peer)
    await wait_until(lambda: server.open_connections == 0, "the server closed the connection")
    events = observed.timeline
    server_failed = [e.attrs["kind"] for e in events.named(Name.CONNECTION_FAILED, Role.SERVER)]
    assert server_failed == ([expect.kind] if expect.kind else [])
    handshake_failed = [e.attrs["kind"] for e in events.named(Name.TLS_HANDSHAKE_FAILED)]
    assert handshake_failed == ([expect.kind] if expect.in_handshake and expect.kind else [])
    alerts_sent = [e.attrs["alert"] for e in events.named(Name.TLS_ALERT_SENT, Role.SERVER)]
    assert alerts_sent == ([expect.sent] if expect.sent and expect.level == FATAL else [])
    received = [e.attrs["alert"] for e in events.named(Name.TLS_ALERT_RECEIVED, Role.SERVER)]
    assert received == ([expect.received] if expect.received else [])
    assert events.count(Name.REQUEST_RECEIVED, Role.SERVER) == 0  # nothing served
    await serves_on(server, observed, lab)
    completed = events.count(Name.TLS_HANDSHAKE_COMPLETED, Role.SERVER)
    assert completed == (1 if expect.in_handshake else 2)
    assert_books_balance(observed)


def assert_alert_on_the_wire(answer: bytes, expect: Expect, peer: RawPeer) -> None:
    records, rest = split_records(answer)
    assert rest == b"", f"a partial record at the end: {answer!r}"
    if expect.sent is None:
        assert records == [], "the server answered a fatal alert or a truncation"
        return
    [(content_type, fragment)] = records
    assert content_type == ALERT
    code = CODES[expect.sent]
    if not expect.sealed:
        assert fragment == bytes([expect.level, code])
        return
    assert len(fragment) == 2 + TAG_BYTES
    peer.core.records.receive_data(answer)
    if not expect.opens:
        with pytest.raises(BadRecordMac):
            peer.core.records.next_record()
        return
    assert peer.core.records.next_record() == (ALERT, bytes([expect.level, code]))


async def serves_on(server: Server, observed: Observed, lab: Lab) -> None:
    """A real toy-TLS request with our client: 200."""
    url = f"toytls://127.0.0.1:{server.toy_tls_port}/health"
    async with HTTPClient(observed.bus, cafile=lab.files.ca) as client:
        response = await client.get(url)
    assert response.status == 200
    await wait_until(lambda: server.open_connections == 0, "the good request's connection closed")


def assert_books_balance(observed: Observed) -> None:
    """Nothing lost: every metric here agrees with the events it counts, label by label,
    and every connection opened (either role) was closed."""
    events = observed.timeline.events
    registry = observed.metrics.registry

    def by(name: Name, *keys: str) -> Counter[tuple[str, ...]]:
        return Counter(
            (str(e.role), *(str(e.attrs[k]) for k in keys)) for e in events if e.name is name
        )

    alerts = by(Name.TLS_ALERT_SENT, "alert")
    alerts_metric = samples(registry, "handshake_lab_tls_alerts_total", "role", "alert")
    sent_metric = {k[:1] + k[2:]: v for k, v in alerts_metric.items() if k[1] == "sent"}
    assert sent_metric == alerts
    received = by(Name.TLS_ALERT_RECEIVED, "alert")
    assert {k[:1] + k[2:]: v for k, v in alerts_metric.items() if k[1] == "received"} == received
    results = by(Name.TLS_HANDSHAKE_FAILED, "kind") + Counter(
        (role, "completed") for (role,) in by(Name.TLS_HANDSHAKE_COMPLETED).elements()
    )
    assert samples(registry, "handshake_lab_tls_handshakes_total", "role", "result") == results
    opened = samples(registry, "handshake_lab_connections_opened_total", "role")
    closed = samples(registry, "handshake_lab_connections_closed_total", "role")
    assert opened == closed
    assert opened == by(Name.CONNECTION_ACCEPTED) + by(Name.CONNECT_COMPLETED)
    assert closed == by(Name.CONNECTION_CLOSED)


def samples(registry: CollectorRegistry, name: str, *labels: str) -> Counter[tuple[str, ...]]:
    """A counter's non-zero values keyed by `labels` ("direction" included for alerts)."""
    keys = (*labels[:1], "direction", *labels[1:]) if "alerts" in name else labels
    out: Counter[tuple[str, ...]] = Counter()
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == name and s.value:
                out[tuple(s.labels[k] for k in keys)] += int(s.value)
    return out


# --- a man in the middle: our client -> MITM -> the server ----------------------------------

Rewrite = Callable[[bytes], bytes]


class Mitm:
    """A relay on 127.0.0.1 that passes whole records between a client and the server and
    lets a case rewrite them; `records` keeps what each side's bytes became."""

    def __init__(
        self, upstream: int, *, to_server: Rewrite | None = None, to_client: Rewrite | None = None
    ) -> None:
        self.upstream = upstream
        self.rewrites = {"client": to_server, "server": to_client}
        self.records: dict[str, list[bytes]] = {"client": [], "server": []}
        self.port = 0
        self.active = 0
        self._listener: asyncio.Server | None = None

    async def __aenter__(self) -> Mitm:
        self._listener = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._listener.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await wait_until(lambda: self.active == 0, "the MITM's relays ended")
        assert self._listener is not None
        self._listener.close()
        await self._listener.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.active += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            await asyncio.gather(
                self._pump(reader, up_writer, "client"), self._pump(up_reader, writer, "server")
            )
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()
        finally:
            self.active -= 1

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sender: str
    ) -> None:
        rewrite = self.rewrites[sender]
        buffer = b""
        try:
            while data := await reader.read(65536):
                records, buffer = split_records(buffer + data)
                for content_type, fragment in records:
                    out = record(content_type, fragment)
                    out = rewrite(out) if rewrite else out
                    self.records[sender].append(out)
                    writer.write(out)
                await writer.drain()
            writer.write(buffer)  # a partial record at the end, as it came
            writer.write_eof()
        except OSError:
            writer.transport.abort()  # the other side reset: pass it on


def on_message(msg_type: int, change: Callable[[Message], Message | None]) -> Rewrite:
    """Rewrite the first handshake record carrying a message of `msg_type` (the plaintext
    flights come first); `change` returning None drops the record."""
    done = False

    def rewrite(raw: bytes) -> bytes:
        nonlocal done
        if done or raw[0] != HANDSHAKE or raw[5] != msg_type:
            return raw
        done = True
        split = split_message(raw[5:])
        assert split is not None
        changed = change(decode_message(split[0], split[1]))
        return b"" if changed is None else handshake_record(changed)

    return rewrite


def swap_certificate(der: Callable[[Lab], bytes]) -> Callable[[Lab], Rewrite]:
    return lambda lab: on_message(11, lambda _m: Certificate((der(lab),)))


def other_ca(key_type: str) -> Callable[[Lab], bytes]:
    return lambda lab: lab.other_ca_der[key_type]


def drop(msg_type: int) -> Callable[[Lab], Rewrite]:
    return lambda _lab: on_message(msg_type, lambda _m: None)


def without_aes(message: Message) -> Message:
    assert isinstance(message, ClientHello)
    return dataclasses.replace(message, suites=tuple(s for s in message.suites if s != 0x1301))


def chacha_chosen(message: Message) -> Message:
    assert isinstance(message, ServerHello)
    return dataclasses.replace(message, suite=0x1303)


def rsa_asked(message: Message) -> Message:
    assert isinstance(message, ClientHello)
    return dataclasses.replace(message, key_exchange=RSA)


@dataclass(frozen=True)
class MitmExpect:
    """client: the client's failure kind; *_sent: the alert each side sends (None: none);
    server_kind: the server's tls.handshake.failed kind; server_heard: what reaches it."""

    client: str
    client_sent: str | None
    server_kind: str
    server_sent: str | None
    server_heard: str | None


def client_refuses(alert: str) -> MitmExpect:
    """The client catches it, tells the server with its alert, and gives up."""
    return MitmExpect(f"tls_{alert}", alert, f"tls_{alert}", None, alert)


def server_refuses(alert: str, *, client_opens: bool) -> MitmExpect:
    """The server catches it. The client opens the server's sealed alert when both derived
    the same keys; else the alert does not open (bad_record_mac), and the client's own
    alert reaches a server that has already closed."""
    if client_opens:
        return MitmExpect(f"tls_{alert}", None, f"tls_{alert}", alert, None)
    return MitmExpect("tls_bad_record_mac", "bad_record_mac", f"tls_{alert}", alert, None)


MITM_CASES = [
    # The certificate swapped (RFC 5280 §6 path validation; RFC 8446 §6.2 alerts).
    pytest.param(
        kx,
        "to_client",
        swap_certificate(other_ca(key)),
        client_refuses("unknown_ca"),
        id=f"{kx.name.lower()}-certificate-from-another-ca",
    )
    for kx, key in ((ECDHE, "ec"), (RSA, "rsa"))
] + [
    pytest.param(
        ECDHE,
        "to_client",
        swap_certificate(lambda lab: lab.wrong_name_der),
        client_refuses("bad_certificate_name"),
        id="certificate-for-another-name",  # RFC 6125 §6: the name asked for
    ),
    pytest.param(
        ECDHE,
        "to_client",
        swap_certificate(lambda lab: lab.expired_der),
        client_refuses("certificate_expired"),
        id="expired-certificate",
    ),
    # A certificate the lab CA did sign, with the MITM's own key (a CA tricked into it):
    # ecdhe: the server's signature over the handshake does not verify with that key.
    pytest.param(
        ECDHE,
        "to_client",
        swap_certificate(lambda lab: lab.other_key_der["ec"]),
        client_refuses("decrypt_error"),
        id="ecdhe-lab-signed-certificate-with-another-key",
    ),
    # rsa: the client encrypts its premaster to the MITM's key; the server cannot decrypt it,
    # goes on with a random one (RFC 5246 §7.4.7.1) and the client's Finished does not open.
    pytest.param(
        RSA,
        "to_client",
        swap_certificate(lambda lab: lab.other_key_der["rsa"]),
        server_refuses("bad_record_mac", client_opens=False),
        id="rsa-key-exchange-encrypted-to-another-key",
    ),
    # Downgrade: the MITM strips AES from the ClientHello, so the server picks ChaCha20.
    # rsa: the Finished (an HMAC over the transcript, RFC 8446 §4.4.4) catches it at the
    # server; ecdhe: the server's signature over the transcript catches it at the client.
    pytest.param(
        RSA,
        "to_server",
        lambda _lab: on_message(1, without_aes),
        server_refuses("decrypt_error", client_opens=True),
        id="rsa-suite-list-downgraded",
    ),
    pytest.param(
        ECDHE,
        "to_server",
        lambda _lab: on_message(1, without_aes),
        client_refuses("decrypt_error"),
        id="ecdhe-suite-list-downgraded",
    ),
    # The server's choice changed: rsa, the two ends derive keys for different suites, so
    # the client's Finished does not open; ecdhe, the signature covers the ServerHello.
    pytest.param(
        RSA,
        "to_client",
        lambda _lab: on_message(2, chacha_chosen),
        server_refuses("bad_record_mac", client_opens=False),
        id="rsa-server-choice-changed",
    ),
    pytest.param(
        ECDHE,
        "to_client",
        lambda _lab: on_message(2, chacha_chosen),
        client_refuses("decrypt_error"),
        id="ecdhe-server-choice-changed",
    ),
    # The key exchange downgraded to rsa (no forward secrecy) in the ClientHello: the
    # client refuses a ServerHello for a key exchange it did not ask for.
    pytest.param(
        ECDHE,
        "to_server",
        lambda _lab: on_message(1, rsa_asked),
        client_refuses("handshake_failure"),
        id="key-exchange-downgraded-to-rsa",
    ),
    # Messages the MITM drops: out of order at the client (RFC 8446 §4: unexpected_message).
    pytest.param(
        ECDHE,
        "to_client",
        drop(12),
        client_refuses("unexpected_message"),
        id="server-key-exchange-dropped",
    ),
    pytest.param(
        RSA, "to_client", drop(11), client_refuses("unexpected_message"), id="certificate-dropped"
    ),
]


@pytest.mark.parametrize(("kx", "direction", "make_rewrite", "expect"), MITM_CASES)
async def test_a_man_in_the_middle_is_caught_with_the_right_alert(
    server: Server,
    observed: Observed,
    lab: Lab,
    kx: KeyExchange,
    direction: str,
    make_rewrite: Callable[[Lab], Rewrite],
    expect: MitmExpect,
) -> None:
    assert server.toy_tls_port is not None
    async with Mitm(server.toy_tls_port, **{direction: make_rewrite(lab)}) as mitm:
        url = f"toytls://127.0.0.1:{mitm.port}/health"
        async with HTTPClient(observed.bus, cafile=lab.files.ca, key_exchange=kx) as client:
            with pytest.raises(RequestError) as caught:
                await client.get(url)
    assert caught.value.kind == expect.client
    await wait_until(lambda: server.open_connections == 0, "the server closed the connection")
    # On the wire, as the MITM saw it: the last record each alerting side sent is its alert.
    for side, alert in (("client", expect.client_sent), ("server", expect.server_sent)):
        last = mitm.records[side][-1]
        if alert is None:
            assert last[0] != ALERT, f"the {side} sent an alert"
        elif len(last) == 7:  # plaintext: we can read it
            assert last == alert_record(CODES[alert])
        else:  # sealed: which alert it is, the sender's event says (checked below)
            assert (last[0], len(last)) == (ALERT, 5 + 2 + TAG_BYTES)
    events = observed.timeline

    def alerts(name: Name, role: Role) -> list[str]:
        return [e.attrs["alert"] for e in events.named(name, role)]

    assert alerts(Name.TLS_ALERT_SENT, Role.CLIENT) == _list(expect.client_sent)
    assert alerts(Name.TLS_ALERT_SENT, Role.SERVER) == _list(expect.server_sent)
    assert alerts(Name.TLS_ALERT_RECEIVED, Role.SERVER) == _list(expect.server_heard)
    failed = [e.attrs["kind"] for e in events.named(Name.TLS_HANDSHAKE_FAILED, Role.SERVER)]
    assert failed == [expect.server_kind]
    assert events.count(Name.TLS_HANDSHAKE_COMPLETED) == 0
    assert events.count(Name.REQUEST_RECEIVED, Role.SERVER) == 0  # nothing served
    await serves_on(server, observed, lab)
    assert_books_balance(observed)


def _list(alert: str | None) -> list[str]:
    return [alert] if alert else []


# --- replay of a whole recorded session ------------------------------------------------------


@pytest.mark.parametrize("at_once", [False, True], ids=["flight-by-flight", "all-at-once"])
@pytest.mark.parametrize("kx", list(KeyExchange), ids=lambda kx: kx.name.lower())
async def test_a_replayed_session_fails_on_the_fresh_server_random(
    server: Server, observed: Observed, lab: Lab, tmp_path: Path, kx: KeyExchange, at_once: bool
) -> None:
    """Record a real session with the client's --record facility, then send the client's
    bytes again: the server's new random B changes every key, so the replayed Finished does
    not even open (bad_record_mac, RFC 8446 §8's replay defence) and nothing is served."""
    port = server.toy_tls_port
    assert port is not None
    recording = tmp_path / "session.jsonl"
    recorder = Recorder(recording)
    try:
        async with HTTPClient(
            observed.bus, cafile=lab.files.ca, key_exchange=kx, tls_record=recorder.for_connection
        ) as client:
            response = await client.request("POST", f"toytls://127.0.0.1:{port}/echo", body=b"pay")
    finally:
        recorder.close()
    assert (response.status, response.body) == (200, b"pay")
    [chunks] = read_recording(recording.read_text()).values()
    client_chunks = [data for sender, data in chunks if sender == "client"]
    server_first = next(data for sender, data in chunks if sender == "server")
    assert len(client_chunks) >= 3  # hello; key exchange and Finished; the request (...)
    await wait_until(lambda: server.open_connections == 0, "the recorded session ended")
    served = observed.timeline.count(Name.REQUEST_RECEIVED, Role.SERVER)
    assert served == 1

    peer = await RawPeer.connect(port, ClientConnection(lab.ca, "localhost", kx))
    try:
        if at_once:
            await peer.send(b"".join(client_chunks))
        else:  # as the client did: its hello, the server's flight, then its next flight
            await peer.send(client_chunks[0])
            await _read_until_hello_done(peer)
            await peer.send(client_chunks[1])
        answer = await peer.answer()
    finally:
        peer.close()
    assert not peer.reset
    records, rest = split_records(answer)
    assert rest == b""
    new_random = records[0][1][6:38]  # ServerHello: type(1) length(3) version(2) random(32)
    old_random = split_records(server_first)[0][0][1][6:38]
    assert new_random != old_random
    *flight, (content_type, sealed_alert) = records
    assert [f[1][0] for f in flight][-1] == 14  # the flight ended with ServerHelloDone
    assert (content_type, len(sealed_alert)) == (ALERT, 2 + TAG_BYTES)
    if kx is RSA:
        # With the server's private key (and only with it) the alert opens: C from the
        # recorded key exchange, A from the recorded hello, B fresh.
        assert_rsa_alert(lab, client_chunks, records, answer, code=CODES["bad_record_mac"])
    await wait_until(lambda: server.open_connections == 0, "the replay's connection closed")
    events = observed.timeline
    assert [e.attrs["kind"] for e in events.named(Name.TLS_HANDSHAKE_FAILED, Role.SERVER)] == [
        "tls_bad_record_mac"
    ]
    assert [e.attrs["alert"] for e in events.named(Name.TLS_ALERT_SENT, Role.SERVER)] == [
        "bad_record_mac"
    ]
    assert events.count(Name.REQUEST_RECEIVED, Role.SERVER) == served  # nothing served
    await serves_on(server, observed, lab)
    assert_books_balance(observed)


async def _read_until_hello_done(peer: RawPeer) -> None:
    while not any(t == HANDSHAKE and f[:1] == b"\x0e" for t, f in split_records(peer.buffer)[0]):
        data = await peer._receive()
        assert data
        peer.buffer += data


def assert_rsa_alert(
    lab: Lab,
    client_chunks: list[bytes],
    records: list[tuple[int, bytes]],
    answer: bytes,
    code: int,
) -> None:
    key = crypto.load_private_key_pem(lab.files.key("rsa").read_bytes())
    client_random = client_chunks[0][5 + 4 + 2 : 5 + 4 + 2 + 32]
    exchange = split_records(client_chunks[1])[0][0][1]  # the ClientKeyExchange message
    premaster = crypto.rsa_decrypt(key, exchange[4 + 2 :])
    server_hello = records[0][1]
    suite = crypto.SUITES[int.from_bytes(server_hello[38:40], "big")]
    keys = derive_keys(suite, premaster, client_random, server_hello[6:38])
    layer = RecordLayer(client=True)
    layer.start_reading_sealed(keys)
    alert_at = len(answer) - (5 + 2 + TAG_BYTES)
    layer.receive_data(answer[alert_at:])
    assert layer.next_record() == (ALERT, bytes([FATAL, code]))


# --- a short live fuzz ---------------------------------------------------------------------

LIVE_INPUTS: Final = int(os.environ.get("TLS_FUZZ_LIVE_INPUTS", "300"))


def fuzz_inputs(count: int, seed: int) -> list[bytes]:
    """Random and mutated byte strings: mutations of real first flights (a ClientHello per
    key exchange, one with a key exchange after it), of alerts, and plain random bytes."""
    rnd = random.Random(seed)  # (every byte from it: a seed gives the same inputs each run)

    def seeded_hello(kx: KeyExchange = ECDHE) -> bytes:
        return handshake_record(hello(kx=kx, client_random=rnd.randbytes(32)))

    corpus = [seeded_hello(kx) for kx in KeyExchange] + [
        seeded_hello(RSA) + handshake_record(ClientKeyExchange(rnd.randbytes(256))),
        seeded_hello() + handshake_record(ClientKeyExchange(rnd.randbytes(32))),
        seeded_hello() + record(HANDSHAKE, rnd.randbytes(40)),
        alert_record(40),
        handshake_record(Finished(bytes(32)), ServerHelloDone()),
    ]

    def mutate(data: bytes) -> bytes:
        b = bytearray(data)
        for _ in range(rnd.randint(1, 4)):
            op = rnd.randrange(6)
            at = rnd.randrange(len(b) + 1)
            if op == 0 and b:  # flip a bit
                i = rnd.randrange(len(b))
                b[i] ^= 1 << rnd.randrange(8)
            elif op == 1:  # cut short
                del b[at:]
            elif op == 2:  # insert random bytes
                b[at:at] = rnd.randbytes(rnd.randint(1, 8))
            elif op == 3:  # delete a slice
                del b[at : at + rnd.randint(1, 8)]
            elif op == 4 and b:  # an interesting byte
                b[rnd.randrange(len(b))] = rnd.choice((0, 1, 0x7E, 0xFF, 21, 22, 23))
            else:  # splice in a piece of another input
                other = rnd.choice(corpus)
                start = rnd.randrange(len(other))
                b[at:at] = other[start : start + rnd.randint(1, 40)]
        return bytes(b)

    out = []
    for i in range(count):
        if i % 5 == 0:
            out.append(rnd.randbytes(rnd.randint(0, 300)))
        else:
            out.append(mutate(rnd.choice(corpus)))
    return out


async def test_live_fuzz_the_server_stays_up_and_its_books_balance(
    server: Server, observed: Observed, lab: Lab
) -> None:
    """A few hundred random and mutated inputs at the toy-TLS port, each followed by FIN (so
    none waits on the handshake timeout), 16 at a time. Every answer must be whole records
    of handshake and alert types, an alert only last; the server's alert events must match
    the alerts on the wire one for one; no connection may end in an internal error."""
    port = server.toy_tls_port
    assert port is not None
    seed = int(os.environ.get("TLS_FUZZ_SEED", "8"))
    inputs = fuzz_inputs(LIVE_INPUTS, seed)
    gate = asyncio.Semaphore(16)

    async def one(data: bytes) -> tuple[bytes, bool]:
        async with gate:
            peer = await RawPeer.connect(port, ClientConnection(lab.ca, "localhost"))
            try:
                if data:
                    await peer.send(data)
                peer.fin()
                return await peer.answer(), peer.reset
            finally:
                peer.close()

    answers = await asyncio.gather(*(one(data) for data in inputs))
    await wait_until(lambda: server.open_connections == 0, "every fuzz connection closed")
    alerts_on_the_wire = 0
    for (answer, reset), data in zip(answers, inputs, strict=True):
        assert not reset, f"reset after {data.hex()}"
        records, rest = split_records(answer)
        assert rest == b"", f"a partial record answering {data.hex()}"
        types = [t for t, _ in records]
        assert set(types) <= {HANDSHAKE, ALERT}
        assert ALERT not in types[:-1], "an alert that was not the last record"
        alerts_on_the_wire += types[-1:] == [ALERT]
    events = observed.timeline
    assert events.count(Name.TLS_ALERT_SENT, Role.SERVER) == alerts_on_the_wire
    assert events.count(Name.CONNECTION_CLOSED, Role.SERVER) == len(inputs)
    kinds = Counter(e.attrs["kind"] for e in events.named(Name.CONNECTION_FAILED, Role.SERVER))
    assert "internal_error" not in kinds
    known = {f"tls_{cls.alert}" for cls in ALERTS.values()}
    assert set(kinds) <= known | {"tls_unexpected_eof", "tls_unknown_alert"}  # (bounded labels)
    assert sum(kinds.values()) == len(inputs)  # every one refused: none could complete
    await serves_on(server, observed, lab)
    assert_books_balance(observed)


async def test_a_refused_handshake_counts_once_in_errors_total(
    server: Server, observed: Observed, lab: Lab
) -> None:
    assert server.toy_tls_port is not None
    peer = await RawPeer.connect(server.toy_tls_port, ClientConnection(lab.ca, "localhost"))
    try:
        await peer.send(record(99, b"x"))
        await peer.answer()
    finally:
        peer.close()
    await wait_until(lambda: server.open_connections == 0, "the server closed the connection")
    failures = observed.timeline.count(Name.CONNECTION_FAILED, Role.SERVER)
    assert failures == 1
    errors = samples(observed.metrics.registry, "handshake_lab_errors_total", "role", "kind")
    assert errors == Counter({("server", "tls_decode_error"): failures})


async def test_after_its_alert_the_server_reads_until_the_peers_fin_no_reset(
    server: Server, observed: Observed, lab: Lab
) -> None:
    # A client still sending behind its bad record, closing only once it has the alert: the
    # server, having sent its alert and FIN, reads (and drops) what comes until that FIN,
    # so its close is no RST, and it is recorded as the side that closed first.
    assert server.toy_tls_port is not None
    peer = await RawPeer.connect(server.toy_tls_port, ClientConnection(lab.ca, "localhost"))
    try:
        await peer.send(record(99, b"x") + b"\x00" * 100_000)
        answer = await peer.answer()  # until the server's FIN
        await asyncio.sleep(0.1)
        await peer.send(b"\x00" * 10_000)  # more, after that FIN
        peer.fin()
        await wait_until(lambda: server.open_connections == 0, "the server closed")
        assert await peer._receive() == b""  # no reset after all that
    finally:
        peer.close()
    assert answer.endswith(bytes([21, 0x7E, 0x01, 0, 2, 2, 50]))  # fatal decode_error
    assert not peer.reset
    server_events = [e for e in observed.timeline.events if e.role is Role.SERVER]
    names = [e.name for e in server_events]
    assert names.index(Name.FIN_SENT) < names.index(Name.EOF_RECEIVED)
    (closed,) = [e for e in server_events if e.name is Name.CONNECTION_CLOSED]
    assert closed.attrs["closed_by"] == "server"
