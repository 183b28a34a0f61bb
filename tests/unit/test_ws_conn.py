"""The WebSocket connection core (RFC 6455 §5-7), client and server cores joined in memory.

No sockets and no loop: bytes go from one core to the other by hand, and time is a
number the test chooses. Raw frames for the bad-input tables are built byte by byte
(`tests.helpers.ws_frame`, from RFC 6455 §5.2).
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from handshake_lab.errors import LocalProtocolError, RemoteProtocolError
from handshake_lab.http_events import NEED_DATA, PeerClosed
from handshake_lab.ws_conn import (
    BoundedDeflate,
    CloseReceived,
    CloseSent,
    CloseTimedOut,
    MessageReceived,
    PingReceived,
    PingSent,
    PongReceived,
    WebSocketConnection,
    WSEvent,
    WSLimits,
    WSState,
)
from handshake_lab.ws_handshake import negotiate_deflate
from tests.helpers import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT
from tests.helpers import ws_frame as frame

LIMIT: Final = 1000
QUIET: Final = WSLimits(max_message_bytes=LIMIT, ping_interval_s=0, idle_timeout_s=0)


@dataclass
class Pair:
    client: WebSocketConnection
    server: WebSocketConnection

    @classmethod
    def make(cls, limits: WSLimits = QUIET, *, deflate: bool = False) -> Pair:
        server_deflate = client_deflate = None
        if deflate:
            negotiated = negotiate_deflate(
                ["permessage-deflate"], lambda: BoundedDeflate(limits.max_message_bytes)
            )
            assert negotiated is not None
            server_deflate, answer = negotiated
            client_deflate = BoundedDeflate(limits.max_message_bytes)
            client_deflate.finalize(answer)
        return cls(
            WebSocketConnection(client=True, limits=limits, now=0.0, deflate=client_deflate),
            WebSocketConnection(client=False, limits=limits, now=0.0, deflate=server_deflate),
        )


def events(core: WebSocketConnection, data: bytes = b"", now: float = 0.0) -> list[WSEvent]:
    """Feed `data` (if any), then every event up to NEED_DATA."""
    if data:
        core.receive_data(data, now)
    out: list[WSEvent] = []
    while (event := core.next_event(now)) is not NEED_DATA:
        out.append(event)
    return out


def bytewise(core: WebSocketConnection, data: bytes) -> list[WSEvent]:
    out: list[WSEvent] = []
    for i in range(len(data)):
        out += events(core, data[i : i + 1])
    return out


def failure(core: WebSocketConnection, data: bytes) -> RemoteProtocolError:
    core.receive_data(data, 0.0)
    with pytest.raises(RemoteProtocolError) as caught:
        drain(core)
    return caught.value


def drain(core: WebSocketConnection) -> None:
    while core.next_event(0.0) is not NEED_DATA:
        pass


# --- messages ------------------------------------------------------------------------------


@pytest.mark.parametrize("client_sends", [True, False])
@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("data", ["héllo wörld", b"\x00\xff" * 100, ""])
def test_messages_arrive_whole_both_ways(
    client_sends: bool, deflate: bool, data: str | bytes
) -> None:
    pair = Pair.make(deflate=deflate)
    sender, receiver = (pair.client, pair.server) if client_sends else (pair.server, pair.client)
    wire = sender.send_message(data, 0.0)
    size = len(data.encode()) if isinstance(data, str) else len(data)
    expected = MessageReceived(data, size, 1, deflate)
    assert events(receiver, wire) == [expected]
    # The same bytes fed one at a time make the same message (a fresh pair: deflate's
    # window is per connection).
    pair = Pair.make(deflate=deflate)
    sender, receiver = (pair.client, pair.server) if client_sends else (pair.server, pair.client)
    assert bytewise(receiver, sender.send_message(data, 0.0)) == [expected]
    assert (sender.messages_sent, receiver.messages_received) == (1, 1)


@pytest.mark.parametrize("client_sends", [True, False])
def test_a_message_over_64_kib_takes_the_8_byte_length(client_sends: bool) -> None:
    limits = WSLimits(max_message_bytes=1 << 20, ping_interval_s=0, idle_timeout_s=0)
    pair = Pair.make(limits)
    sender, receiver = (pair.client, pair.server) if client_sends else (pair.server, pair.client)
    data = bytes(range(256)) * 300  # 76,800 bytes: over 65,535 (RFC 6455 §5.2)
    wire = sender.send_message(data, 0.0)
    assert wire[1] & 0x7F == 127
    assert events(receiver, wire) == [MessageReceived(data, len(data), 1, False)]


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate",
        "permessage-deflate; server_max_window_bits=9; client_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    ],
)
def test_compressed_messages_both_ways_with_negotiated_parameters(offer: str) -> None:
    negotiated = negotiate_deflate([offer], lambda: BoundedDeflate(LIMIT))
    assert negotiated is not None
    server_deflate, answer = negotiated
    client_deflate = BoundedDeflate(LIMIT)
    client_deflate.finalize(answer)
    client = WebSocketConnection(client=True, limits=QUIET, now=0.0, deflate=client_deflate)
    server = WebSocketConnection(client=False, limits=QUIET, now=0.0, deflate=server_deflate)
    texts = ["repeat " * 20, "repeat " * 20, "other", "x" * 500]
    for text in texts:  # several messages: the contexts carry over (or are reset) in step
        wire = client.send_message(text, 0.0, fragment_bytes=64)
        assert events(server, wire) == [MessageReceived(text, len(text), _frames(wire), True)]
        back = server.send_message(text.encode(), 0.0)
        assert back[0] & 0x40  # RSV1: compressed
        assert len(back) < len(text) or len(text) < 10
        assert events(client, back) == [MessageReceived(text.encode(), len(text), 1, True)]


def _frames(wire: bytes) -> int:
    """How many frames are in `wire` (masked frames of under 126 bytes each)."""
    count, at = 0, 0
    while at < len(wire):
        length = wire[at + 1] & 0x7F
        assert length < 126
        at += 2 + 4 + length
        count += 1
    return count


@pytest.mark.parametrize("deflate", [False, True])
def test_fragmented_messages_count_their_frames(deflate: bool) -> None:
    pair = Pair.make(deflate=deflate)
    wire = pair.client.send_message("abcdefghij", 0.0, fragment_bytes=3)
    [message] = events(pair.server, wire)
    assert isinstance(message, MessageReceived)
    assert (message.data, message.frames, message.size) == ("abcdefghij", 4, 10)


def test_a_ping_between_fragments_is_answered_and_the_message_kept() -> None:
    pair = Pair.make()  # §5.4: control frames may come in the middle of a message
    first = frame(BINARY, b"01234", fin=False)
    assert events(pair.server, first + frame(PING, b"p")) == [PingReceived(b"p")]
    assert pair.server.data_to_send()  # the pong
    assert events(pair.server, frame(CONTINUATION, b"56789")) == [
        MessageReceived(b"0123456789", 10, 2, False)
    ]


@pytest.mark.parametrize("deflate", [False, True])
def test_fragments_and_control_frames_fed_byte_by_byte(deflate: bool) -> None:
    pair = Pair.make(deflate=deflate)
    wire = pair.client.send_message("fragmented, fed one byte at a time", 0.0, fragment_bytes=7)
    wire += pair.client.send_ping(0.0, b"between")
    wire += pair.client.send_message(b"then whole", 0.0)
    got = bytewise(pair.server, wire)
    assert [type(e) for e in got] == [MessageReceived, PingReceived, MessageReceived]
    first, ping, second = got
    assert isinstance(first, MessageReceived)
    assert (first.data, first.frames) == ("fragmented, fed one byte at a time", 5)
    assert ping == PingReceived(b"between")
    assert isinstance(second, MessageReceived)
    assert (second.data, second.frames) == (b"then whole", 1)


def test_a_message_of_exactly_the_limit_passes() -> None:
    pair = Pair.make()
    [message] = events(pair.server, pair.client.send_message(b"x" * LIMIT, 0.0))
    assert isinstance(message, MessageReceived)
    assert message.size == LIMIT


def test_a_frame_announcing_too_much_is_refused_from_its_header_alone() -> None:
    pair = Pair.make()
    # Only the header and the mask arrive: the payload is never sent, and not waited for.
    header = frame(BINARY, b"", declared=LIMIT + 1)
    error = failure(pair.server, header)
    assert (error.close_code, error.kind) == (1009, "ws_message_too_big")
    assert str(LIMIT) in str(error)


def test_fragments_under_the_limit_pass_however_the_bytes_arrive() -> None:
    # wsproto reads a frame header again for every read until the masking key is in:
    # the limit must not count those repeats.
    pair = Pair.make()
    wire = pair.client.send_message(b"y" * (LIMIT - 10), 0.0, fragment_bytes=300)
    [message] = bytewise(pair.server, wire)
    assert isinstance(message, MessageReceived)
    assert (message.size, message.frames) == (LIMIT - 10, 4)


def test_fragments_adding_up_past_the_limit_are_refused() -> None:
    pair = Pair.make()
    first = frame(TEXT, b"a" * 600, fin=False)
    second = frame(CONTINUATION, b"", declared=600)
    assert events(pair.server, first) == []
    assert failure(pair.server, second).close_code == 1009


def deflated(data: bytes, cut: int = 4) -> bytes:
    """`data` as one permessage-deflate message body (RFC 7692 §7.2.1: no 00 00 ff ff)."""
    compressor = zlib.compressobj(wbits=-15)
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return body[:-cut] if cut else body


@pytest.mark.parametrize("client_receives", [False, True])
def test_a_deflate_bomb_is_refused_before_it_inflates(client_receives: bool) -> None:
    limits = WSLimits(max_message_bytes=10_000, ping_interval_s=0, idle_timeout_s=0)
    pair = Pair.make(limits, deflate=True)
    payload = deflated(b"\x00" * 5_000_000)
    assert len(payload) < limits.max_message_bytes  # small on the wire ...
    receiver = pair.client if client_receives else pair.server
    bomb = frame(BINARY, payload, rsv=0b100, masked=not client_receives)  # RSV1: compressed
    error = failure(receiver, bomb)
    assert error.close_code == 1009  # ... refused without inflating 5 MB
    assert "inflates" in str(error)


@pytest.mark.parametrize("control", [PING, PONG])
def test_a_control_frame_between_compressed_fragments_leaves_the_message_whole(
    control: int,
) -> None:
    # RFC 6455 §5.4 allows it; RFC 7692 compresses the message, not each frame.
    pair = Pair.make(deflate=True)
    text = "hello hello hello compressible world " * 5
    body = deflated(text.encode())
    third = len(body) // 3
    data = (
        frame(TEXT, body[:third], fin=False, rsv=0b100)
        + frame(control, b"p")
        + frame(CONTINUATION, body[third : 2 * third], fin=False)
        + frame(CONTINUATION, body[2 * third :])
    )
    got = bytewise(pair.server, data)
    assert [type(e) for e in got] == [
        PingReceived if control == PING else PongReceived,
        MessageReceived,
    ]
    assert got[1] == MessageReceived(text, len(text), 3, True)
    # The shared inflate context is intact for the next message.
    again = pair.client.send_message(text, 0.0)
    assert events(pair.server, again) == [MessageReceived(text, len(text), 1, True)]


def test_an_uncompressed_fragmented_message_with_deflate_on() -> None:
    pair = Pair.make(deflate=True)  # RFC 7692 §6: RSV1 off means this message is plain
    data = frame(TEXT, b"ab", fin=False) + frame(CONTINUATION, b"cd")
    assert events(pair.server, data) == [MessageReceived("abcd", 4, 2, False)]


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1014, 1015, 2999, 5000, 70000])
def test_close_codes_that_may_not_be_sent_are_refused_before_anything_changes(code: int) -> None:
    pair = Pair.make()
    with pytest.raises(LocalProtocolError, match="may not be sent"):
        pair.client.close(0.0, code)
    assert pair.client.state is WSState.OPEN
    assert pair.client.close(0.0, 4999)  # still open, and a valid code works


def test_a_compressed_control_frame_is_a_protocol_error() -> None:
    pair = Pair.make(deflate=True)
    assert failure(pair.server, frame(PING, b"p", rsv=0b100)).close_code == 1002  # §6.1


def test_the_deflate_tail_counts_toward_the_limit() -> None:
    # A message whose body stops inside a deflate block: the 00 00 ff ff that RFC 7692
    # §7.2.2 appends releases more output, which must count too.
    rnd = random.Random(5)
    while True:
        data = bytes(rnd.choice(b"ab") for _ in range(rnd.randint(100, 3000))) * 20
        body = deflated(data, cut=0)
        body = body[: rnd.randint(1, len(body) - 1)]
        probe = zlib.decompressobj(-15)
        try:
            head = probe.decompress(body)
            tail = probe.decompress(b"\x00\x00\xff\xff")
        except zlib.error:
            continue
        if len(tail) > 100:
            break
    limits = WSLimits(max_message_bytes=len(head), ping_interval_s=0, idle_timeout_s=0)
    pair = Pair.make(limits, deflate=True)
    assert failure(pair.server, frame(BINARY, body, rsv=0b100)).close_code == 1009


@pytest.mark.parametrize("fragments", [1, 3])
def test_an_incompressible_message_of_exactly_the_limit_passes_compressed(
    fragments: int,
) -> None:
    pair = Pair.make(deflate=True)
    data = random.Random(1).randbytes(LIMIT)  # compressed, it takes more than LIMIT bytes
    wire = pair.client.send_message(data, 0.0, fragment_bytes=-(-LIMIT // fragments) + 1)
    assert events(pair.server, wire) == [MessageReceived(data, LIMIT, fragments, True)]


def test_compressed_fragments_inflating_past_the_limit_together_are_refused() -> None:
    limits = WSLimits(max_message_bytes=10_000, ping_interval_s=0, idle_timeout_s=0)
    pair = Pair.make(limits, deflate=True)
    compressor = zlib.compressobj(wbits=-15)
    halves = [compressor.compress(b"\x00" * 6_000) + compressor.flush(zlib.Z_SYNC_FLUSH)]
    halves.append(compressor.compress(b"\x00" * 6_000) + compressor.flush(zlib.Z_SYNC_FLUSH))
    first = frame(BINARY, halves[0], fin=False, rsv=0b100)  # each inflates under the limit
    assert events(pair.server, first) == []
    error = failure(pair.server, frame(CONTINUATION, halves[1][:-4]))
    assert error.close_code == 1009


def test_corrupt_deflate_data_is_invalid_payload() -> None:
    pair = Pair.make(deflate=True)
    error = failure(pair.server, frame(BINARY, b"\xff\xff\xff\xff", rsv=0b100))
    assert error.close_code == 1007


# --- protocol violations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        # §5.1: a client MUST mask every frame it sends.
        pytest.param(frame(TEXT, b"hi", masked=False), 1002, id="unmasked"),
        # §5.2: RSV1-3 MUST be 0 unless an extension says otherwise.
        pytest.param(frame(TEXT, b"hi", rsv=0b001), 1002, id="rsv3"),
        pytest.param(frame(TEXT, b"hi", rsv=0b100), 1002, id="rsv1-without-deflate"),
        # §5.5: control frames have at most 125 bytes of payload ...
        pytest.param(frame(PING, b"p" * 126), 1002, id="long-ping"),
        # ... and MUST NOT be fragmented.
        pytest.param(frame(PING, b"p", fin=False), 1002, id="fragmented-ping"),
        # §5.6 / §8.1: a text message must be valid UTF-8.
        pytest.param(frame(TEXT, b"\xff\xfe"), 1007, id="invalid-utf8"),
        pytest.param(
            frame(TEXT, b"\xe2\x82", fin=False) + frame(CONTINUATION, b"\x28"),
            1007,
            id="invalid-utf8-across-fragments",
        ),
        # §5.4: a continuation needs a message to continue; a new one must wait.
        pytest.param(frame(CONTINUATION, b"x"), 1002, id="orphan-continuation"),
        pytest.param(
            frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002, id="interleaved-messages"
        ),
        # §5.2: the length in the fewest bytes: 2 bytes only from 126, 8 only from 65536.
        pytest.param(b"\x81\xfe\x00\x02abcd" + b"hi", 1002, id="length-not-minimal-16"),
        pytest.param(
            b"\x81\xff" + (2).to_bytes(8, "big") + b"abcd" + b"hi", 1002, id="length-not-minimal-64"
        ),
        # §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved.
        pytest.param(frame(0x3, b""), 1002, id="reserved-opcode"),
        # §5.5.1: a close body is empty or starts with a 2-byte code ...
        pytest.param(frame(CLOSE, b"\x03"), 1002, id="close-1-byte"),
        # ... from the ranges §7.4 allows (1005 and 1006 never go on the wire).
        pytest.param(frame(CLOSE, struct.pack("!H", 999)), 1002, id="close-code-999"),
        pytest.param(frame(CLOSE, struct.pack("!H", 1006)), 1002, id="close-code-1006"),
        pytest.param(frame(CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007, id="close-reason"),
    ],
)
def test_protocol_violations_fail_with_the_right_close_code(data: bytes, code: int) -> None:
    pair = Pair.make()
    error = failure(pair.server, data)
    assert error.close_code == code
    out = pair.server.fail(error)
    assert pair.server.state is WSState.CLOSED
    assert (pair.server.close_code, pair.server.closed_by) == (code, "local")
    # The Close frame goes to the client, who reads the code the server chose.
    [close] = events(pair.client, out)
    assert isinstance(close, CloseReceived)
    assert (close.code, close.initiated_by_peer) == (code, True)
    # After failing, more bytes from the peer are not read (§7.1.7).
    pair.server.receive_data(frame(TEXT, b"ignored"), 0.0)
    assert events(pair.server) == []


def test_the_client_refuses_a_masked_frame_from_the_server() -> None:
    pair = Pair.make()
    assert failure(pair.client, frame(TEXT, b"hi", masked=True)).close_code == 1002


def test_a_failure_after_our_close_sends_no_second_close() -> None:
    pair = Pair.make()
    pair.server.close(0.0)
    error = failure(pair.server, frame(TEXT, b"hi", masked=False))
    assert pair.server.fail(error) == b""
    assert pair.server.close_code == 1000  # the first Close's code stands


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_give_only_events_or_our_protocol_error(data: bytes) -> None:
    pair = Pair.make(deflate=True)
    pair.server.receive_data(data, 0.0)
    errors: list[RemoteProtocolError] = []
    try:
        drain(pair.server)
    except RemoteProtocolError as error:
        errors.append(error)
    assert all(error.close_code in (1002, 1007, 1009) for error in errors)


# --- ping and pong -------------------------------------------------------------------------


def test_a_ping_is_answered_with_its_payload_and_the_rtt_measured() -> None:
    pair = Pair.make()
    payload = pair.client.new_ping_payload()
    assert events(pair.server, pair.client.send_ping(1.0, payload)) == [PingReceived(payload)]
    pong = pair.server.data_to_send()
    assert pair.server.data_to_send() == b""
    assert events(pair.client, pong, now=1.25) == [PongReceived(payload, 0.25)]


def test_an_unsolicited_pong_has_no_rtt() -> None:
    pair = Pair.make()
    assert events(pair.server, frame(PONG, b"hello")) == [PongReceived(b"hello", None)]


def test_ping_payloads_are_bounded_and_pings_need_an_open_connection() -> None:
    pair = Pair.make()
    with pytest.raises(LocalProtocolError, match="125"):
        pair.client.send_ping(0.0, b"x" * 126)
    pair.client.close(0.0)
    with pytest.raises(LocalProtocolError, match="local_closing"):
        pair.client.send_ping(0.0, b"x")
    with pytest.raises(LocalProtocolError, match="local_closing"):
        pair.client.send_message("x", 0.0)


def test_no_pong_once_we_are_closing() -> None:
    pair = Pair.make()
    pair.server.close(0.0)
    assert events(pair.server, frame(PING, b"p")) == [PingReceived(b"p")]
    assert pair.server.data_to_send() == b""


# --- closing -------------------------------------------------------------------------------


@pytest.mark.parametrize("client_closes", [True, False])
def test_the_closing_handshake_both_ways(client_closes: bool) -> None:
    pair = Pair.make()
    closer, other = (pair.client, pair.server) if client_closes else (pair.server, pair.client)
    wire = closer.close(0.0, 4000, "bye")
    assert closer.close(0.0) == b""  # once only
    assert closer.state is WSState.LOCAL_CLOSING
    assert events(other, wire) == [CloseReceived(4000, "bye", initiated_by_peer=True)]
    answer = other.data_to_send()
    assert other.state is WSState.CLOSED
    assert events(closer, answer) == [CloseReceived(4000, "bye", initiated_by_peer=False)]
    assert closer.state is WSState.CLOSED  # type: ignore[comparison-overlap]
    assert (closer.closed_by, other.closed_by) == ("local", "peer")
    assert closer.close_code == other.close_code == 4000
    assert closer.get_timer() is None


def test_a_close_without_a_code_is_1005() -> None:
    pair = Pair.make()
    assert events(pair.server, frame(CLOSE)) == [CloseReceived(1005, "", initiated_by_peer=True)]


def test_messages_still_arrive_while_we_wait_for_the_peers_close() -> None:
    pair = Pair.make()
    pair.server.close(0.0)
    [message] = events(pair.server, pair.client.send_message("late", 0.0))
    assert isinstance(message, MessageReceived)
    assert message.data == "late"


def test_tcp_closed_without_a_close_frame_is_1006() -> None:
    pair = Pair.make()
    pair.server.receive_data(b"", 0.0)
    assert events(pair.server) == [PeerClosed()]
    assert (pair.server.close_code, pair.server.closed_by) == (1006, "peer")
    with pytest.raises(LocalProtocolError, match="FIN"):
        pair.server.receive_data(b"more", 0.0)


def test_tcp_closed_after_the_closing_handshake_is_no_event() -> None:
    pair = Pair.make()
    events(pair.server, pair.client.close(0.0))
    pair.server.receive_data(b"", 0.0)
    assert events(pair.server) == []
    assert pair.server.close_code == 1000


def test_a_long_failure_reason_is_cut_to_fit_a_control_frame() -> None:
    pair = Pair.make()
    out = pair.server.fail(RemoteProtocolError("é" * 200, close_code=1008))
    [close] = events(pair.client, out)
    assert isinstance(close, CloseReceived)
    assert close.code == 1008
    assert len(close.reason.encode()) <= 123
    assert close.reason.endswith("...")


def test_bytes_that_arrived_with_the_handshake_are_read_first() -> None:
    sender = WebSocketConnection(client=True, limits=QUIET, now=0.0)
    early = sender.send_message("early", 0.0)
    receiver = WebSocketConnection(client=False, limits=QUIET, now=0.0, trailing_data=early)
    assert [e.data for e in events(receiver) if isinstance(e, MessageReceived)] == ["early"]


# --- timers --------------------------------------------------------------------------------


def test_keepalive_pings_then_a_close_when_the_pong_is_late() -> None:
    limits = WSLimits(ping_interval_s=10, ping_timeout_s=5, idle_timeout_s=0)
    pair = Pair.make(limits)
    server = pair.server
    assert server.get_timer() == 10
    assert server.handle_timeout(9.0) is None  # not due yet
    fired = server.handle_timeout(10.0)
    assert isinstance(fired, PingSent)
    [ping] = events(pair.client, server.data_to_send(), now=10.5)
    assert ping == PingReceived(fired.payload)
    # The pong comes back; the next ping is due an interval later.
    assert events(server, pair.client.data_to_send(), now=11.0) == [
        PongReceived(fired.payload, 1.0)
    ]
    assert server.get_timer() == 21.0
    second = server.handle_timeout(21.0)
    assert isinstance(second, PingSent)
    assert second.payload != fired.payload
    # No pong this time: at 21 + 5 the server gives up with 1011.
    assert server.get_timer() == 26.0
    assert server.handle_timeout(26.0) == CloseSent(1011, "keepalive ping timeout")
    unanswered, close = events(pair.client, server.data_to_send())
    assert unanswered == PingReceived(second.payload)
    assert isinstance(close, CloseReceived)
    assert close.code == 1011


def test_an_idle_connection_is_closed() -> None:
    limits = WSLimits(ping_interval_s=0, idle_timeout_s=30)
    pair = Pair.make(limits)
    events(pair.server, pair.client.send_message("hi", 0.0), now=10.0)  # activity at 10
    assert pair.server.get_timer() == 40.0
    pair.server.send_message("hi back", 20.0)  # our messages count too
    assert pair.server.get_timer() == 50.0
    assert pair.server.handle_timeout(50.0) == CloseSent(1000, "idle for 30 s")
    assert pair.server.state is WSState.LOCAL_CLOSING


def test_the_closing_handshake_is_bounded() -> None:
    limits = WSLimits(ping_interval_s=0, idle_timeout_s=0, close_timeout_s=5)
    pair = Pair.make(limits)
    pair.server.close(100.0, 1000)
    assert pair.server.get_timer() == 105.0
    assert pair.server.handle_timeout(104.0) is None
    assert pair.server.handle_timeout(105.0) == CloseTimedOut()
    assert pair.server.state is WSState.CLOSED
    assert pair.server.close_code == 1000  # the code we sent still says why
    assert pair.server.handle_timeout(200.0) is None
    assert pair.server.next_event(200.0) is NEED_DATA


def test_drain_closes_with_1001_at_once() -> None:
    pair = Pair.make()
    assert pair.server.get_timer() is None  # no pings, no idle limit
    pair.server.begin_drain(7.0)
    assert pair.server.get_timer() == 7.0
    assert pair.server.handle_timeout(7.0) == CloseSent(1001, "server shutting down")
    pair.server.begin_drain(8.0)  # already closing: nothing more
    assert pair.server.get_timer() == 7.0 + QUIET.close_timeout_s


# --- our frame router against wsproto alone ---------------------------------------------

Outcome = tuple[str, object]


def through_ours(data: bytes, chunk: int) -> list[Outcome]:
    core = WebSocketConnection(client=False, limits=BIG, now=0.0)
    out: list[Outcome] = []
    for start in range(0, len(data), chunk):
        core.receive_data(data[start : start + chunk], 0.0)
        try:
            while (event := core.next_event(0.0)) is not NEED_DATA:
                match event:
                    case MessageReceived():
                        out.append(("message", event.data))
                    case PingReceived():
                        out.append(("ping", event.payload))
                    case PongReceived():
                        out.append(("pong", event.payload))
                    case CloseReceived():
                        return [*out, ("close", event.code)]
        except RemoteProtocolError as error:
            return [*out, ("fail", error.close_code)]
    return out


def through_wsproto(data: bytes) -> list[Outcome]:
    ws = Connection(ConnectionType.SERVER)
    ws.receive_data(data)
    out: list[Outcome] = []
    pieces: list[Any] = []
    for event in ws.events():
        match event:
            case TextMessage() | BytesMessage():
                pieces.append(event.data)
                if event.message_finished:
                    text = isinstance(event, TextMessage)
                    out.append(("message", "".join(pieces) if text else b"".join(pieces)))
                    pieces = []
            case Ping():
                out.append(("ping", bytes(event.payload)))
            case Pong():
                out.append(("pong", bytes(event.payload)))
            case CloseConnection():
                failed = ws.state is ConnectionState.OPEN  # a parse failure leaves it OPEN
                return [*out, ("fail" if failed else "close", int(event.code))]
    return out


BIG: Final = WSLimits(max_message_bytes=1 << 20, ping_interval_s=0, idle_timeout_s=0)
random_frame = st.builds(
    lambda opcode, payload, fin, rsv, masked: frame(
        opcode, payload, fin=fin, rsv=rsv, masked=masked
    ),
    opcode=st.sampled_from([TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE, 0x3]),
    payload=st.one_of(
        st.text(max_size=40).map(str.encode), st.binary(max_size=40), st.just(b"\xc3")
    ),
    fin=st.booleans(),
    rsv=st.sampled_from([0, 0, 0, 0b100, 0b010]),
    masked=st.sampled_from([True, True, True, False]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(random_frame, max_size=6), st.integers(min_value=1, max_value=50))
def test_our_frame_router_agrees_with_wsproto(frames: list[bytes], chunk: int) -> None:
    data = b"".join(frames)
    assert through_ours(data, chunk) == through_wsproto(data)
