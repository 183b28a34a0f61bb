"""The toy TLS's client and server, sans-I/O: bytes in, events and bytes out.

Theory of operation
-------------------
Like h11: the adapter feeds what it read with `receive_data()`, takes events with
`next_event()` until `NEED_DATA`, and writes `data_to_send()`; time (`now`, for the
certificate's validity) and randomness (`rng`) are passed in. A handshake step that
produces a reply (the server's flight after a ClientHello, the client's key exchange and
Finished) puts it in `data_to_send()` as a side effect of `next_event()`.

Every byte of the peer's is judged by the state table (`states.TRANSITIONS`): a message
the state does not expect is `UnexpectedMessage`. Any `RemoteProtocolError` leaves the
connection in ERROR; `fail(error)` gives the alert record to send before closing. The
Finished messages, HMACs over every handshake message, make a changed ClientHello (a
downgraded suite list, say) fail on both sides. After the handshake, `send()` seals
application data; `close()` sends close_notify, so the peer can tell a clean end from a
truncation (a FIN without close_notify is `Truncated`).

This is a toy: see handshake_tls/README.md for what real TLS does that this does not.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from handshake_tls import crypto
from handshake_tls.errors import (
    ALERTS,
    DecodeError,
    DecryptError,
    HandshakeFailure,
    LocalProtocolError,
    ProtocolVersion,
    RemoteProtocolError,
    UnexpectedMessage,
)
from handshake_tls.record import ContentType, Keys, RecordLayer, derive_keys
from handshake_tls.states import TRANSITIONS, State
from handshake_tls.wire import (
    RANDOM_BYTES,
    VERSION,
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

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from cryptography import x509

PREMASTER_BYTES: Final = 48  # as TLS 1.2's RSA premaster secret
MAX_HANDSHAKE_MESSAGE: Final = 64 * 1024
SUITE_PREFERENCE: Final = (0x1301, 0x1303)
CLOSE_NOTIFY: Final = 0
FATAL: Final = 2


# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeStep:
    """One step of the handshake, for the lesson and the telemetry (never a key)."""

    step: str  # client_hello, server_hello, certificate, key_exchange, keys, finished
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    suite: str
    key_exchange: str
    keys: Keys  # for a key log, when the user asks for one


@dataclass(frozen=True, slots=True)
class DataReceived:
    data: bytes


@dataclass(frozen=True, slots=True)
class AlertReceived:
    alert: str
    code: int


@dataclass(frozen=True, slots=True)
class CloseNotifyReceived:
    pass


@dataclass(frozen=True, slots=True)
class NeedData:
    pass


NEED_DATA: Final = NeedData()
TLSEvent = (
    HandshakeStep
    | HandshakeCompleted
    | DataReceived
    | AlertReceived
    | CloseNotifyReceived
    | NeedData
)


class Truncated(RemoteProtocolError):
    """The connection ended without close_notify: the data may have been cut short."""

    alert = "unexpected_eof"
    code = 80


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """A certificate chain (DER, the server's first) and its private key."""

    chain: tuple[bytes, ...]
    key: crypto.PrivateKey

    @property
    def key_type(self) -> str:
        return crypto.describe(crypto.load_certificate(self.chain[0])).key_type


# --- the shared part -----------------------------------------------------------------------


class _Connection:
    def __init__(self, *, client: bool, rng: Callable[[int], bytes]) -> None:
        self.client = client
        self.rng = rng
        self.state = State.START
        self.records = RecordLayer(client=client)
        self.key_exchange: KeyExchange | None = None
        self.suite: crypto.Suite | None = None
        self.keys: Keys | None = None
        self._transcript = bytearray()  # every handshake message, in order
        self._handshake = bytearray()  # handshake bytes not yet a whole message
        self._events: list[TLSEvent] = []
        self._out = bytearray()
        self._peer_eof = False
        self._next_state = State.ERROR  # set by _expect() for each message
        self.closed_sent = False  # our close_notify went out (state CLOSED: theirs came)

    # --- for the adapter ---

    def receive_data(self, data: bytes) -> None:
        """What was read; b"" means the peer sent FIN."""
        if data:
            self.records.receive_data(data)
        else:
            self._peer_eof = True

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self, now: datetime.datetime | None = None) -> TLSEvent:
        """The next event, or NEED_DATA.

        Raises:
            RemoteProtocolError: the peer broke the protocol (its `alert` is the answer:
                `fail()` builds it); the connection is then in ERROR.
        """
        if self._events:
            return self._events.pop(0)
        if self.state in (State.ERROR, State.CLOSED):
            return NEED_DATA
        try:
            while not self._events:
                record = self.records.next_record()
                if record is None:
                    if self._peer_eof:
                        raise Truncated("the peer closed TCP without close_notify")
                    return NEED_DATA
                self._on_record(*record, now or datetime.datetime.now(datetime.UTC))
        except RemoteProtocolError:
            self.state = State.ERROR
            raise
        return self._events.pop(0)

    def send(self, data: bytes) -> None:
        """Application data, sealed (after the handshake, before our close_notify)."""
        if (
            self.closed_sent
            or self.keys is None
            or self.state
            not in (
                State.CONNECTED,
                State.CLOSED,
            )
        ):
            raise LocalProtocolError(f"no application data in state {self.state.value}")
        self._out += self.records.seal(ContentType.APPLICATION_DATA, data)

    def close(self) -> bytes:
        """close_notify: a clean end the peer can tell from a cut connection. We may go on
        reading (a half-close, like TCP's FIN) until the peer's close_notify."""
        if self.state is State.ERROR or self.closed_sent:
            return b""
        self.closed_sent = True
        return self.records.seal(ContentType.ALERT, bytes([1, CLOSE_NOTIFY]))

    def fail(self, error: RemoteProtocolError) -> bytes:
        """The fatal alert for `error` (sealed if our keys are in use); state ERROR."""
        self.state = State.ERROR
        if isinstance(error, Truncated):
            return b""  # nobody is there to hear it
        return self.records.seal(ContentType.ALERT, bytes([FATAL, error.code]))

    # --- records and messages ---

    def _on_record(self, content_type: ContentType, data: bytes, now: datetime.datetime) -> None:
        if content_type is ContentType.ALERT:
            self._on_alert(data)
        elif content_type is ContentType.APPLICATION_DATA:
            if self.state is not State.CONNECTED:
                raise UnexpectedMessage("application data outside the connected state")
            self._events.append(DataReceived(data))
        else:
            if not data:
                raise DecodeError("an empty handshake record")
            self._handshake += data
            if len(self._handshake) >= 4:
                declared = int.from_bytes(self._handshake[1:4], "big")
                if declared > MAX_HANDSHAKE_MESSAGE:  # (a certificate chain fits well)
                    raise DecodeError(f"a handshake message of {declared} bytes announced")
            while (split := split_message(self._handshake)) is not None:
                msg_type, body, used = split
                raw = bytes(self._handshake[:used])
                del self._handshake[:used]
                message = decode_message(msg_type, body)
                self._expect(message)
                self._on_message(message, raw, now)

    def _on_alert(self, data: bytes) -> None:
        if len(data) != 2:
            raise DecodeError("an alert is 2 bytes")
        _level, code = data
        if code == CLOSE_NOTIFY:
            if self.state is not State.CONNECTED:
                # (It may even come in plaintext: it ends nothing that had not begun.)
                raise UnexpectedMessage("close_notify before the handshake finished")
            self.state = State.CLOSED
            self._events.append(CloseNotifyReceived())
            return
        self.state = State.ERROR
        cls = ALERTS.get(code)
        # RFC 8446 §6: an unknown alert is an error all the same. One name for all of them,
        # its number in `code`: the name becomes a metric label, and a peer choosing among
        # 256 codes must not choose our label values (the live fuzz in
        # tests/integration/test_bad_input_tls.py made 90 of them).
        self._events.append(AlertReceived(cls.alert if cls else "unknown_alert", code))

    def _expect(self, message: Message) -> None:
        """The state table's one lookup: which state this message moves us to."""
        table = TRANSITIONS[self.key_exchange or KeyExchange.RSA]
        after = table.get((self.state, type(message)))
        if after is None:
            raise UnexpectedMessage(
                f"{type(message).__name__} is not expected in state {self.state.value}"
            )
        self._next_state = after

    def _on_message(self, message: Message, raw: bytes, now: datetime.datetime) -> None:
        raise NotImplementedError  # pragma: no cover (client and server each have theirs)

    def _transition(self) -> None:
        self.state = self._next_state

    def _send_message(self, message: Message) -> bytes:
        raw = encode_message(message)
        self._transcript += raw
        self._out += self.records.seal(ContentType.HANDSHAKE, raw)
        return raw

    def _nothing_left_in_plaintext(self) -> None:
        """From the key change on, handshake bytes come sealed: a message sent on in the
        plaintext record would be a Finished nobody sealed."""
        if self._handshake:
            raise UnexpectedMessage("handshake bytes in plaintext after the keys changed")

    def _transcript_hash(self) -> bytes:
        return crypto.sha256(bytes(self._transcript))

    def _step(self, step: str, **fields: Any) -> None:
        self._events.append(HandshakeStep(step, fields))

    def _check_finished(self, message: Finished, *, from_client: bool) -> None:
        assert self.keys is not None
        expected = self.keys.finished(from_client, self._transcript_hash())
        if not crypto.same(expected, message.verify_data):
            raise FinishedMismatch(
                "the peer's Finished does not match our transcript: the handshake was changed"
            )

    def _completed(self) -> None:
        assert self.keys is not None
        assert self.suite is not None
        assert self.key_exchange is not None
        self._events.append(
            HandshakeCompleted(self.suite.name, self.key_exchange.name.lower(), self.keys)
        )


class FinishedMismatch(RemoteProtocolError):
    alert = "decrypt_error"
    code = 51


# --- the client ----------------------------------------------------------------------------


class ClientConnection(_Connection):
    """The client's side.

    Args:
        trusted: the CA certificate the server's chain must lead to.
        server_name: the name the certificate must carry (and that the ClientHello sends).
        key_exchange: rsa (the seeds' handshake) or ecdhe (forward secrecy).
        suites: the suites offered, in order of preference.
    """

    def __init__(
        self,
        trusted: x509.Certificate,
        server_name: str,
        key_exchange: KeyExchange = KeyExchange.ECDHE,
        *,
        suites: Sequence[int] = SUITE_PREFERENCE,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        super().__init__(client=True, rng=rng)
        self.trusted = trusted
        self.server_name = server_name
        self.key_exchange = key_exchange
        self.offered = tuple(suites)
        self.certificate: crypto.CertificateInfo | None = None
        self.client_random = b""
        self._server_random = b""
        self._server_share = b""

    def start_handshake(self) -> bytes:
        """The ClientHello, ready to send (also in `data_to_send()`)."""
        if self.state is not State.START:
            raise LocalProtocolError("the handshake has started already")
        assert self.key_exchange is not None
        self.client_random = self.rng(RANDOM_BYTES)
        hello = ClientHello(self.client_random, self.offered, self.key_exchange, self.server_name)
        self._send_message(hello)
        self.state = State.EXPECT_SERVER_HELLO
        self._step(
            "client_hello",
            client_random=self.client_random.hex(),
            suites=[crypto.SUITES[s].name if s in crypto.SUITES else hex(s) for s in self.offered],
            key_exchange=self.key_exchange.name.lower(),
            server_name=self.server_name,
        )
        return bytes(self._out)

    def _on_message(self, message: Message, raw: bytes, now: datetime.datetime) -> None:
        match message:
            case ServerHello():
                if message.version != VERSION:
                    raise ProtocolVersion(f"server speaks version {message.version:#06x}")
                if message.suite not in self.offered or message.suite not in crypto.SUITES:
                    raise HandshakeFailure(
                        f"the server chose suite {message.suite:#06x}, not offered"
                    )
                if message.key_exchange is not self.key_exchange:
                    raise HandshakeFailure("the server chose another key exchange")
                self._server_random = message.random
                self.suite = crypto.SUITES[message.suite]
                self._transcript += raw
                self._step(
                    "server_hello", server_random=message.random.hex(), suite=self.suite.name
                )
            case Certificate():
                info = crypto.verify_chain(message.chain, self.trusted, self.server_name, now)
                self.certificate = info
                self._transcript += raw
                self._step(
                    "certificate",
                    subject=info.subject,
                    issuer=info.issuer,
                    not_before=info.not_before.isoformat(),
                    not_after=info.not_after.isoformat(),
                    names=list(info.names),
                    fingerprint_sha256=info.fingerprint_sha256,
                    key_type=info.key_type,
                    verified=True,
                )
            case ServerKeyExchange():
                assert self.certificate is not None
                signed = self._transcript_hash() + message.share
                crypto.verify_signature(self.certificate.public_key, message.signature, signed)
                self._server_share = message.share
                self._transcript += raw
                self._step("server_key_exchange", share=message.share.hex(), signature="verified")
            case ServerHelloDone():
                self._transcript += raw
                self._transition()
                self._send_key_exchange()
                return
            case Finished():
                self._check_finished(message, from_client=False)
                self._transcript += raw
                self._transition()
                self._step("finished", side="server", verified=True)
                self._completed()
                return
            case _:  # pragma: no cover (the state table lets no other message through)
                raise UnexpectedMessage(type(message).__name__)
        self._transition()

    def _send_key_exchange(self) -> None:
        assert self.certificate is not None
        assert self.suite is not None
        if self.key_exchange is KeyExchange.RSA:
            premaster = self.rng(PREMASTER_BYTES)
            exchange = crypto.rsa_encrypt(self.certificate.public_key, premaster)
            secret = premaster
            self._step(
                "client_key_exchange",
                premaster_bytes=len(premaster),
                encrypted_bytes=len(exchange),
                encrypted_with="the certificate's RSA key, OAEP-SHA256",
            )
        else:
            share = crypto.X25519Share(self.rng)
            secret = share.shared_secret(self._server_share)
            exchange = share.public
            self._step("client_key_exchange", share=share.public.hex())
        self._send_message(ClientKeyExchange(exchange))
        self.keys = derive_keys(self.suite, secret, self.client_random, self._server_random)
        self._step("keys", **self.keys.fingerprints())
        self.records.start_writing_sealed(self.keys)
        self.records.start_reading_sealed(self.keys)
        self._nothing_left_in_plaintext()
        verify = self.keys.finished(True, self._transcript_hash())
        self._send_message(Finished(verify))
        self._step("finished", side="client", sent=True)


# --- the server ----------------------------------------------------------------------------


class ServerConnection(_Connection):
    """The server's side, with one identity per key type ("rsa" and/or "ec")."""

    def __init__(
        self,
        identities: dict[str, ServerIdentity],
        *,
        suites: Sequence[int] = SUITE_PREFERENCE,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        super().__init__(client=False, rng=rng)
        if not identities:
            raise LocalProtocolError("a server needs a certificate")
        self.identities = identities
        self.preference = tuple(suites)
        self.state = State.EXPECT_CLIENT_HELLO
        self.server_name = ""
        self._identity: ServerIdentity | None = None
        self.client_random = b""
        self._server_random = b""
        self._share: crypto.X25519Share | None = None

    def _on_message(self, message: Message, raw: bytes, now: datetime.datetime) -> None:
        match message:
            case ClientHello():
                self._transcript += raw
                self._on_client_hello(message)
            case ClientKeyExchange():
                self._transcript += raw
                self._on_key_exchange(message)
            case Finished():
                self._check_finished(message, from_client=True)
                self._transcript += raw
                self._step("finished", side="client", verified=True)
                assert self.keys is not None
                self._send_message(Finished(self.keys.finished(False, self._transcript_hash())))
                self._step("finished", side="server", sent=True)
                self._transition()
                self._completed()
                return
            case _:  # pragma: no cover (the state table lets no other message through)
                raise UnexpectedMessage(type(message).__name__)
        self._transition()

    def _on_client_hello(self, hello: ClientHello) -> None:
        if hello.version != VERSION:
            raise ProtocolVersion(f"client speaks version {hello.version:#06x}")
        chosen = next((s for s in self.preference if s in hello.suites), None)
        if chosen is None:
            raise HandshakeFailure("no cipher suite in common")
        kx = hello.key_exchange
        wanted = ("rsa",) if kx is KeyExchange.RSA else ("ec", "rsa")
        identity = next((self.identities[k] for k in wanted if k in self.identities), None)
        if identity is None:
            raise HandshakeFailure(f"no certificate for the {kx.name.lower()} key exchange")
        self.key_exchange, self.suite, self._identity = kx, crypto.SUITES[chosen], identity
        self.server_name = hello.server_name
        self.client_random = hello.random
        self._step(
            "client_hello",
            client_random=hello.random.hex(),
            suites=[crypto.SUITES[s].name if s in crypto.SUITES else hex(s) for s in hello.suites],
            key_exchange=kx.name.lower(),
            server_name=hello.server_name,
        )
        self._server_random = self.rng(RANDOM_BYTES)
        self._send_message(ServerHello(self._server_random, chosen, kx))
        self._step("server_hello", server_random=self._server_random.hex(), suite=self.suite.name)
        self._send_message(Certificate(identity.chain))
        self._step(
            "certificate", chain_certificates=len(identity.chain), key_type=identity.key_type
        )
        if kx is KeyExchange.ECDHE:
            self._share = crypto.X25519Share(self.rng)
            signed = self._transcript_hash() + self._share.public
            signature = crypto.sign(identity.key, signed)
            self._send_message(ServerKeyExchange(self._share.public, signature))
            self._step("server_key_exchange", share=self._share.public.hex(), signed=True)
        self._send_message(ServerHelloDone())

    def _on_key_exchange(self, message: ClientKeyExchange) -> None:
        assert self._identity is not None
        assert self.suite is not None
        if self.key_exchange is KeyExchange.RSA:
            try:
                secret = crypto.rsa_decrypt(self._identity.key, message.exchange_data)
            except DecryptError:
                secret = b""
            if len(secret) != PREMASTER_BYTES:
                # RFC 5246 §7.4.7.1: go on with a random premaster, so the failure shows
                # only at the Finished, which then does not open: bad_record_mac, as for any
                # wrong key (no decryption oracle).
                secret = self.rng(PREMASTER_BYTES)
            self._step("client_key_exchange", encrypted_bytes=len(message.exchange_data))
        else:
            assert self._share is not None
            secret = self._share.shared_secret(message.exchange_data)
            self._step("client_key_exchange", share=message.exchange_data.hex())
        self.keys = derive_keys(self.suite, secret, self.client_random, self._server_random)
        self._step("keys", **self.keys.fingerprints())
        # Sealed both ways from here: the client's Finished comes sealed, and so must
        # anything we send, an alert included (the client now reads only sealed records).
        self.records.start_reading_sealed(self.keys)
        self.records.start_writing_sealed(self.keys)
        self._nothing_left_in_plaintext()
