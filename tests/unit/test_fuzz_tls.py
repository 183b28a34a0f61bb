"""Fuzzing the toy TLS's sans-I/O cores (issue 8): no sockets, no loop.

A real client and a real server talk through an in-memory link that Hypothesis controls:
it cuts every flight into random pieces (as TCP may), and in the mutation tests changes
flights on the way (bit flips, cut, inserted and deleted bytes, records dropped,
duplicated, swapped, retyped, replayed from earlier in the conversation, replaced by
random well-formed messages). Whatever happens, each core must:

- raise nothing but its documented `RemoteProtocolError` (anything else fails the test);
- never hang: every `next_event()` loop reaches NEED_DATA within a bound, and the
  conversation ends within a bound of rounds;
- always end in an alert or a success: after the peer's FIN, a core that is neither
  closed cleanly nor failed must raise (a truncation);
- never complete a handshake over a tampered transcript, nor deliver altered data: a core
  that completes saw exactly the handshake messages its peer sent, and data arrives as sent.

The number of examples per test is TLS_FUZZ_EXAMPLES (default 100: a few seconds in the
suite). A longer run, as documented in docs/reliability.md:

    TLS_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/unit/test_fuzz_tls.py \
        -p no:cacheprovider -o faulthandler_timeout=0 --hypothesis-show-statistics

(140,000 examples in 8.5 minutes here; faulthandler_timeout=0 because each test then runs
longer than the suite's 60 s stack-dump timer, which would dump without failing.)
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from handshake_tls import crypto
from handshake_tls.connection import (
    NEED_DATA,
    AlertReceived,
    ClientConnection,
    CloseNotifyReceived,
    DataReceived,
    HandshakeCompleted,
    ServerConnection,
    TLSEvent,
    Truncated,
)
from handshake_tls.errors import DecodeError, RemoteProtocolError
from handshake_tls.record import ContentType
from handshake_tls.states import State
from handshake_tls.wire import (
    VERSION,
    KeyExchange,
    Message,
    decode_message,
    encode_message,
    split_message,
)
from tests.unit.test_tls_handshake import NOW
from tests.unit.test_tls_wire_record import messages

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.unit.test_tls_handshake import Lab

EXAMPLES: Final = int(os.environ.get("TLS_FUZZ_EXAMPLES", "100"))
MAX_EVENTS: Final = 64  # a flight makes about 10 events: more means a loop that never ends
MAX_ROUNDS: Final = 8  # a handshake is 4 flights: 8 rounds is twice what any run needs
REQUEST: Final = b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n"
RESPONSE: Final = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
FUZZ: Final = settings(
    max_examples=EXAMPLES,
    deadline=datetime.timedelta(seconds=2),  # "never hangs", with room for a slow machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Core = ClientConnection | ServerConnection


@pytest.fixture(scope="module", autouse=True)
def repeatable_crypto() -> Iterator[None]:
    """ECDSA and RSA-PSS signatures and RSA-OAEP ciphertexts are randomized (an ECDSA
    signature is 70 to 72 bytes), so a rerun of one example would see other bytes and
    Hypothesis could not replay or shrink it. Memoized here: the same input, the same
    output, for this module only. (Module-scoped: Hypothesis forbids function-scoped
    fixtures in @given tests.)"""
    signatures: dict[tuple[int, bytes], bytes] = {}
    ciphertexts: dict[tuple[int, bytes], bytes] = {}  # by the RSA modulus
    sign, rsa_encrypt = crypto.sign, crypto.rsa_encrypt

    def same_sign(key: crypto.PrivateKey, data: bytes) -> bytes:
        # (The lab's keys live as long as the session: their id() is theirs throughout.)
        if (id(key), data) not in signatures:
            signatures[id(key), data] = sign(key, data)
        return signatures[id(key), data]

    def same_rsa_encrypt(key: crypto.PublicKey, plaintext: bytes) -> bytes:
        if not isinstance(key, rsa.RSAPublicKey):
            return rsa_encrypt(key, plaintext)  # (it refuses: nothing to remember)
        memo = (key.public_numbers().n, plaintext)
        if memo not in ciphertexts:
            ciphertexts[memo] = rsa_encrypt(key, plaintext)
        return ciphertexts[memo]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(crypto, "sign", same_sign)
        patch.setattr(crypto, "rsa_encrypt", same_rsa_encrypt)
        yield


def drain(conn: Core) -> list[TLSEvent]:
    """Events until NEED_DATA; only RemoteProtocolError may escape, and never a runaway."""
    events: list[TLSEvent] = []
    for _ in range(MAX_EVENTS):
        got = conn.next_event(NOW)
        if got is NEED_DATA:
            return events
        events.append(got)
    raise AssertionError(f"next_event gave {MAX_EVENTS} events without needing data")


@dataclass
class Side:
    name: str
    conn: Core
    events: list[TLSEvent] = field(default_factory=list)
    error: RemoteProtocolError | None = None

    @property
    def completed(self) -> bool:
        return any(isinstance(e, HandshakeCompleted) for e in self.events)

    @property
    def ended(self) -> bool:
        return self.conn.state in (State.ERROR, State.CLOSED)

    def data(self) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, DataReceived))

    def transcript(self) -> bytes:
        # (Private, read here on purpose: the invariant is about what each core hashed.)
        return bytes(self.conn._transcript)


# --- the link ------------------------------------------------------------------------------


def split_records(data: bytes) -> tuple[list[bytes], bytes]:
    out = []
    while len(data) >= 5 and len(data) >= 5 + (n := int.from_bytes(data[3:5], "big")):
        out.append(data[: 5 + n])
        data = data[5 + n :]
    return out, data


def random_record(data: st.DataObject) -> bytes:
    message = data.draw(messages, label="random message")
    fragment = encode_message(message)
    return (
        bytes([ContentType.HANDSHAKE])
        + VERSION.to_bytes(2, "big")
        + len(fragment).to_bytes(2, "big")
        + fragment
    )


MUTATIONS: Final = (
    "flip",
    "set_byte",
    "cut",
    "insert",
    "delete",
    "drop_record",
    "duplicate_record",
    "swap_records",
    "retype_record",
    "relength_record",
    "replay_earlier_record",
    "random_message",
    "edit_message",
    "edit_message",  # (twice: the MITM's own move, and the only one the Finished alone catches)
)


def edit_message(data: st.DataObject, raw_record: bytes) -> bytes:
    """A man in the middle's edit: one field of a plaintext handshake message changed, the
    message still well-formed (lengths right). A sealed record is left as it is."""
    split = split_message(raw_record[5:])
    if raw_record[0] != ContentType.HANDSHAKE or split is None or split[2] != len(raw_record) - 5:
        return raw_record
    try:
        message = decode_message(split[0], split[1])
    except DecodeError:
        return raw_record  # (sealed: its bytes are not a message)
    names = [f.name for f in dataclasses.fields(message)]
    if not names:
        return raw_record  # (ServerHelloDone: nothing to edit)
    name = data.draw(st.sampled_from(names), label="field")
    value = getattr(message, name)
    new: object
    if isinstance(value, KeyExchange):
        new = KeyExchange.RSA if value is KeyExchange.ECDHE else KeyExchange.ECDHE
    elif isinstance(value, bytes):
        at = data.draw(st.integers(0, max(0, len(value) - 1)))
        new = value[:at] + bytes([value[at] ^ 1]) + value[at + 1 :] if value else b"\x00"
    elif isinstance(value, int):
        new = data.draw(st.sampled_from([0x1301, 0x1302, 0x1303, 0x7E01, 0x0303, 0]))
    elif isinstance(value, str):
        new = data.draw(st.sampled_from(["localhost.", "example.org", "LOCALHOST", ""]))
    elif name == "suites":
        new = tuple(data.draw(st.lists(st.sampled_from([0x1301, 0x1302, 0x1303]), min_size=1)))
    else:  # the certificate chain
        new = value[:-1] if data.draw(st.booleans()) else (*value, value[0])
    try:
        # (cast: mypy cannot check a field named at run time against the union's members)
        fragment = encode_message(dataclasses.replace(cast("Any", message), **{name: new}))
    except ValueError:
        return raw_record
    event(f"edited {type(message).__name__}.{name}")
    return raw_record[:3] + len(fragment).to_bytes(2, "big") + fragment


def mutate(data: st.DataObject, flight: bytes, history: list[bytes]) -> bytes:
    """One mutation of `flight`; `history` holds every record sent before it, either way."""
    kind = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    event(f"mutation: {kind}")
    b = bytearray(flight)
    records, rest = split_records(flight)
    index = data.draw(st.integers(0, len(b) - 1), label="at")
    if kind == "flip":
        b[index] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "set_byte":
        b[index] = data.draw(st.sampled_from([0, 1, 2, 0x7E, 0xFF, 14, 20, 21, 22, 23]))
    elif kind == "cut":
        del b[index:]
    elif kind == "insert":
        b[index:index] = data.draw(st.binary(min_size=1, max_size=16))
    elif kind == "delete":
        del b[index : index + data.draw(st.integers(1, 16))]
    else:
        at = data.draw(st.integers(0, len(records) - 1), label="record")
        if kind == "drop_record":
            del records[at]
        elif kind == "duplicate_record":
            records.insert(at, records[at])
        elif kind == "swap_records" and len(records) > 1:
            other = (at + 1) % len(records)
            records[at], records[other] = records[other], records[at]
        elif kind == "retype_record":
            new_type = data.draw(st.sampled_from([20, 21, 22, 23, 24]))
            records[at] = bytes([new_type]) + records[at][1:]
        elif kind == "relength_record":
            length = data.draw(st.integers(0, 0xFFFF))
            records[at] = records[at][:3] + length.to_bytes(2, "big") + records[at][5:]
        elif kind == "replay_earlier_record" and history:
            records.insert(at, data.draw(st.sampled_from(history)))
        elif kind == "random_message":
            records[at] = random_record(data)
        elif kind == "edit_message":
            records[at] = edit_message(data, records[at])
        b = bytearray(b"".join(records) + rest)
    return bytes(b)


class Link:
    """The two cores and what runs between them."""

    def __init__(
        self,
        data: st.DataObject,
        lab: Lab,
        kx: KeyExchange,
        *,
        tamper: bool,
        edit_only: bool = False,
    ) -> None:
        self.data = data
        self.tamper = tamper
        self.edit_only = edit_only  # tamper by editing one field of one plaintext message
        self.tampered = False
        seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
        rnd = random.Random(seed)
        self.client_conn = ClientConnection(lab.ca, "localhost", kx, rng=rnd.randbytes)
        self.client = Side("client", self.client_conn)
        self.server = Side("server", ServerConnection(lab.identities, rng=rnd.randbytes))
        self.history: list[bytes] = []
        self.flights = 0
        # Which flights to change: 1 the ClientHello, 2 the server's first flight, 3 the key
        # exchange and Finished, 4 the server's Finished, 5-6 the request and the answer,
        # 7-8 the close_notify each way. Drawn first, so each has its share.
        self.targets = (
            {data.draw(st.integers(1, 3), label="flight")}
            if edit_only
            else data.draw(st.sets(st.integers(1, 8), min_size=1, max_size=2), label="flights")
            if tamper
            else set()
        )

    def send(self, sender: Side, receiver: Side, out: bytes) -> None:
        """`out` over the link (perhaps changed), in random pieces; a failure's alert goes
        back to the sender, which must take it as that alert or fail to open it."""
        if not out or receiver.ended:
            return
        self.flights += 1
        if self.flights in self.targets:
            event(f"changed flight {self.flights} ({sender.name}'s)")
            if self.edit_only:
                records, rest = split_records(out)
                at = self.data.draw(st.integers(0, len(records) - 1), label="record")
                records[at] = edit_message(self.data, records[at])
                changed = b"".join(records) + rest
            else:
                changed = mutate(self.data, out, self.history)
            self.tampered |= changed != out
            out = changed
        self.history += split_records(out)[0]
        cuts = sorted(
            set(self.data.draw(st.lists(st.integers(1, max(1, len(out) - 1)), max_size=4)))
        )
        pieces = [out[a:b] for a, b in zip([0, *cuts], [*cuts, len(out)], strict=True)]
        for piece in pieces:
            receiver.conn.receive_data(piece)  # never raises: it only buffers
            try:
                receiver.events += drain(receiver.conn)
            except RemoteProtocolError as error:
                self._failed(receiver, sender, error)
                return

    def _failed(self, side: Side, peer: Side, error: RemoteProtocolError) -> None:
        side.error = error
        event(f"{side.name} failed: {error.alert}")
        assert side.conn.state is State.ERROR
        alert = side.conn.fail(error)
        if isinstance(error, Truncated):
            assert alert == b""  # nobody to tell
            return
        assert alert[:1] == bytes([ContentType.ALERT])
        if peer.ended:
            return
        # (Behind a partial record the peer still waits on, the alert is not a record start.)
        clean = peer.conn.records.buffered == 0
        peer.conn.receive_data(alert)
        try:
            events = drain(peer.conn)
        except RemoteProtocolError as peer_error:  # sealed with keys the peer does not have
            peer.error = peer_error
            event(f"{peer.name} could not open the alert: {peer_error.alert}")
            return
        peer.events += events
        if clean:
            assert events[-1:] == [AlertReceived(error.alert, error.code)]

    def flush(self) -> bool:
        """One round: each side's pending bytes to the other. False when nothing moved."""
        moved = False
        for sender, receiver in ((self.client, self.server), (self.server, self.client)):
            out = sender.conn.data_to_send()
            moved |= bool(out) and not receiver.ended
            self.send(sender, receiver, out)
        return moved

    def run(self) -> None:
        """Handshake, a request and its answer, close_notify both ways, then FIN."""
        client, server = self.client, self.server
        self.client_conn.start_handshake()
        for _ in range(MAX_ROUNDS):
            if not self.flush():
                break
        else:
            raise AssertionError(f"the handshake still moved after {MAX_ROUNDS} rounds")
        connected = (client.conn.state, server.conn.state) == (State.CONNECTED,) * 2
        if connected:
            client.conn.send(REQUEST)
            self.flush()
            if server.conn.state is State.CONNECTED:
                server.conn.send(RESPONSE)
                self.flush()
        for sender, receiver in ((client, server), (server, client)):
            if sender.conn.state is not State.ERROR:  # (CLOSED: it heard close_notify, may answer)
                self.send(sender, receiver, sender.conn.close())
        for side in (client, server):  # the peer's FIN
            if not side.ended:
                side.conn.receive_data(b"")
                with pytest.raises(RemoteProtocolError):  # "ends in an alert or a success"
                    side.events += drain(side.conn)
                side.error = Truncated("FIN")

    def check(self) -> None:
        client, server = self.client, self.server
        for side in (client, server):
            assert side.ended, f"the {side.name} is left in {side.conn.state}"
        if server.completed:
            # The client's transcript (less the server's Finished, if it arrived) is the
            # server's, less the server's Finished: every message as sent.
            ours = server.transcript()[: -(4 + 32)]
            assert client.transcript()[: len(ours)] == ours
        if client.completed:
            assert server.completed
            assert client.transcript() == server.transcript()
            done = [
                e for s in (client, server) for e in s.events if isinstance(e, HandshakeCompleted)
            ]
            assert done[0].keys == done[1].keys
        # Data arrives as sent or not at all; a close_notify only after the handshake.
        assert server.data() in (b"", REQUEST)
        assert client.data() in (b"", RESPONSE)
        for side in (client, server):
            if any(isinstance(e, CloseNotifyReceived) for e in side.events):
                assert side.completed
        outcome = "both completed" if client.completed and server.completed else "refused"
        event(f"outcome: {outcome}{' (tampered)' if self.tampered else ''}")
        if not self.tampered:  # (a run nothing changed must succeed: the harness works)
            assert client.completed
            assert server.completed
            assert (server.data(), client.data()) == (REQUEST, RESPONSE)
            assert client.conn.state is server.conn.state is State.CLOSED


@pytest.mark.parametrize("kx", list(KeyExchange), ids=lambda kx: kx.name.lower())
@FUZZ
@given(data=st.data())
def test_random_splits_never_change_the_outcome(
    lab: Lab, kx: KeyExchange, data: st.DataObject
) -> None:
    link = Link(data, lab, kx, tamper=False)
    link.run()
    link.check()  # untampered: both complete, data both ways, closed cleanly


@pytest.mark.parametrize("kx", list(KeyExchange), ids=lambda kx: kx.name.lower())
@FUZZ
@given(data=st.data())
def test_mutated_flights_end_in_an_alert_never_in_a_tampered_success(
    lab: Lab, kx: KeyExchange, data: st.DataObject
) -> None:
    link = Link(data, lab, kx, tamper=True)
    link.run()
    link.check()


@pytest.mark.parametrize("kx", list(KeyExchange), ids=lambda kx: kx.name.lower())
@FUZZ
@given(data=st.data())
def test_a_handshake_field_edited_in_flight_is_never_accepted(
    lab: Lab, kx: KeyExchange, data: st.DataObject
) -> None:
    """A man in the middle edits one field of one handshake message (the suite list, the
    server name, a random, the chosen suite, a share...), keeping it well-formed: the
    signature (ecdhe), the keys or, for what changes neither, the Finished must refuse it."""
    link = Link(data, lab, kx, tamper=True, edit_only=True)
    link.run()
    link.check()
    if link.tampered:
        assert not link.client.completed
        assert not link.server.completed


@FUZZ
@given(
    to_client=st.booleans(),
    flight=st.lists(messages, min_size=1, max_size=6),
    record_types=st.lists(st.sampled_from([21, 22, 22, 22, 23]), min_size=1, max_size=6),
    cuts=st.lists(st.integers(1, 2000), max_size=6),
)
def test_random_well_formed_flights_never_complete(
    lab: Lab,
    to_client: bool,
    flight: list[Message],
    record_types: list[int],
    cuts: list[int],
) -> None:
    """Well-formed messages in any order, framed in records of random types and sizes: only
    our errors, and no handshake completes without a real peer."""
    conn: Core
    if to_client:
        conn = ClientConnection(lab.ca, "localhost")
        conn.start_handshake()
    else:
        conn = ServerConnection(lab.identities)
    body = b"".join(encode_message(m) for m in flight)
    bounds = sorted({c for c in cuts if c < len(body)})
    fragments = [body[a:b] for a, b in zip([0, *bounds], [*bounds, len(body)], strict=True)]
    wire = b"".join(
        bytes([record_types[i % len(record_types)]])
        + VERSION.to_bytes(2, "big")
        + len(fragment).to_bytes(2, "big")
        + fragment
        for i, fragment in enumerate(fragments)
    )
    events: list[TLSEvent] = []
    error: RemoteProtocolError | None = None
    try:
        conn.receive_data(wire)
        events += drain(conn)
        conn.receive_data(b"")
        events += drain(conn)
    except RemoteProtocolError as exc:
        error = exc
    assert conn.state is State.ERROR
    if error is None:  # it heard an alert: nothing else ends without raising at FIN
        assert isinstance(events[-1], AlertReceived)
    else:
        event(f"refused: {error.alert}")
        assert isinstance(conn.fail(error), bytes)
    assert not any(isinstance(e, HandshakeCompleted | DataReceived) for e in events)


@pytest.mark.parametrize("kx", list(KeyExchange), ids=lambda kx: kx.name.lower())
def test_every_flight_fed_byte_by_byte_completes(lab: Lab, kx: KeyExchange) -> None:
    """The style's rule: every valid transcript fed whole (above) and a byte at a time."""
    client = ClientConnection(lab.ca, "localhost", kx)
    server = ServerConnection(lab.identities)
    client.start_handshake()
    for _ in range(4):
        for sender, receiver in ((client, server), (server, client)):
            for byte in sender.data_to_send():
                receiver.receive_data(bytes([byte]))
                drain(receiver)
    assert client.state is server.state is State.CONNECTED
    assert client.keys == server.keys
