"""One WebSocket connection after the upgrade (RFC 6455 §5-7): our policy on top of wsproto.

Theory of operation
-------------------
wsproto frames, masks and unmasks, decodes UTF-8 incrementally and checks the framing
rules (masking by direction, reserved bits, control frames short and unfragmented, close
codes). It hands over message *pieces* as bytes arrive. This class is sans-I/O like our
HTTP cores (bytes in, events out, time passed in) and adds what a server facing strangers,
and a lab that wants to show what happened, needs:

- Whole messages. Pieces are assembled into one `MessageReceived`, with the count of
  frames it came in (fragmentation made visible).
- A message size limit that holds early. wsproto's extension hooks see each frame's
  header before its payload: a frame that *declares* more than the limit is refused with
  1009 at once, without reading (or waiting for) its body. Decompression is bounded too,
  so a small permessage-deflate frame cannot inflate into gigabytes.
- Failures as errors. A protocol violation raises `RemoteProtocolError` with the close
  code to send (1002, 1007, 1009); `fail()` writes that Close frame, and the connection
  is then closed without waiting for the peer's answer (RFC 6455 §7.1.7).
- Timers, read from `get_timer()` and run by `handle_timeout()`: a keepalive ping every
  `ping_interval_s`, closed with 1011 when its pong is late; an idle close when no message
  went either way for `idle_timeout_s`; a bound on the close handshake; and drain (1001)
  at shutdown.
- Who closed, with which code: `close_code`, `close_reason`, `closed_by` ("local" or
  "peer", the side that sent the first Close frame).
"""

from __future__ import annotations

import enum
import os
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, RsvBits
from wsproto.utilities import LocalProtocolError as WsprotoLocalError

from handshake_lab.errors import LocalProtocolError, RemoteProtocolError
from handshake_lab.http_events import NEED_DATA, NeedData, PeerClosed

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameDecoder

NORMAL: Final = 1000
GOING_AWAY: Final = 1001
NO_STATUS: Final = 1005  # RFC 6455 §7.4.1: a Close frame without a code
ABNORMAL: Final = 1006  # RFC 6455 §7.4.1: the TCP connection ended without a Close frame
PING_TIMEOUT: Final = 1011  # as the websockets library does for a missed keepalive pong
# The bounded error kinds (metric labels) for the close codes a peer's fault earns.
ERROR_KINDS: Final = {
    1002: "ws_protocol_error",
    1007: "ws_invalid_payload",
    1009: "ws_message_too_big",
}
PING_PAYLOAD: Final = struct.Struct("!Q")  # our keepalive pings carry a counter


@dataclass(frozen=True, slots=True)
class WSLimits:
    """What one WebSocket may ask of us, and how long it may stay quiet."""

    max_message_bytes: int = 1024 * 1024
    ping_interval_s: float = 20.0  # 0: no keepalive pings
    ping_timeout_s: float = 20.0
    idle_timeout_s: float = 300.0  # no message either way for this long: close (0: never)
    close_timeout_s: float = 5.0  # to wait for the peer's Close after ours


class WSState(enum.Enum):
    OPEN = "open"
    LOCAL_CLOSING = "local_closing"  # we sent Close, waiting for the peer's
    CLOSED = "closed"  # Close frames went both ways, or the connection failed


# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageReceived:
    data: str | bytes  # str for a text message, bytes for a binary one
    size: int  # payload bytes after decompression (UTF-8 bytes for text)
    frames: int  # 1 unless the peer fragmented the message
    compressed: bool


@dataclass(frozen=True, slots=True)
class PingReceived:
    payload: bytes  # the pong, with the same payload, is in data_to_send()


@dataclass(frozen=True, slots=True)
class PongReceived:
    payload: bytes
    rtt_s: float | None  # None for a pong that answers no ping of ours


@dataclass(frozen=True, slots=True)
class CloseReceived:
    code: int
    reason: str
    initiated_by_peer: bool  # else it answers our Close; our answer is in data_to_send()


@dataclass(frozen=True, slots=True)
class PingSent:
    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseSent:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class CloseTimedOut:
    """We sent Close and the peer's did not come in time: give up on the handshake."""


WSEvent = (
    MessageReceived
    | PingReceived
    | PongReceived
    | CloseReceived
    | PingSent
    | CloseSent
    | CloseTimedOut
    | NeedData
    | PeerClosed
)


# --- the message limit, inside wsproto's frame decoder ---------------------------------------


class MessageLimit(Extension):
    """Refuses a message over the limit as soon as a frame header says it will be.

    Never negotiated: wsproto calls every extension it is given for every frame, which
    makes its hooks the place where each frame's header is seen before its payload.
    Placed after permessage-deflate, it counts the payload as decompressed.
    """

    name = "x-handshake-lab-message-limit"

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self.wire_bytes = 0  # declared payload of the message's frames so far
        self.message_bytes = 0  # payload delivered (decompressed) so far
        self.frames = 0
        self.compressed = False  # RSV1 on the message's first frame (permessage-deflate)
        self._in_control = False
        self._frame_bytes = 0  # declared by the header of the frame being read
        self._open = False  # a fragmented message has begun and not ended
        self.refusal = ""

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:  # pragma: no cover (the ABC wants it; no handshake calls it)
        return False

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        # wsproto may call this more than once for one frame (again for each read until
        # the masking key is in), so it changes nothing a repeat would count twice; the
        # frame is counted in frame_inbound_complete.
        self._in_control = opcode.iscontrol()
        if not self._in_control:
            if opcode is not Opcode.CONTINUATION:
                if self._open:
                    # Fix (found by tests/unit/test_fuzz_ws.py): RFC 6455 §5.4, a new message
                    # while a fragmented one is open. wsproto's message decoder refuses it
                    # (1002), but only after the extensions have had its payload, which
                    # permessage-deflate inflated as the open message's: when that was not
                    # deflate data, the code was 1007 or 1002 depending on how much of the
                    # payload had arrived. From the header, it is 1002 however it arrives.
                    self.refusal = "a new data frame while a fragmented message is open"
                    return CloseReason.PROTOCOL_ERROR
                self.wire_bytes = self.message_bytes = self.frames = 0
                self.compressed = rsv.rsv1
            self._frame_bytes = payload_length
            if self.wire_bytes + payload_length > wire_limit(
                self.max_message_bytes, self.compressed
            ):
                self.refusal = (
                    f"a frame header announces a message of {self.wire_bytes + payload_length}"
                    f" bytes or more, limit {self.max_message_bytes}"
                )
                return CloseReason.MESSAGE_TOO_BIG
        return RsvBits(False, False, False)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not self._in_control:
            self.frames += 1
            self.wire_bytes += self._frame_bytes
            self._open = not fin
        return None

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        # (Counting only: the header check bounds a plain message, BoundedDeflate an
        # inflated one.)
        if not self._in_control:
            self.message_bytes += len(data)
        return data


class Deflater:
    """Our sending side of permessage-deflate (RFC 7692 §7.2.1), as negotiated."""

    def __init__(self, deflate: PerMessageDeflate, *, client: bool) -> None:
        # §7.1.2: each side's window and context takeover are the ones named for it.
        self.window_bits = (
            deflate.client_max_window_bits if client else deflate.server_max_window_bits
        )
        self.reset_each_message = (
            deflate.client_no_context_takeover if client else deflate.server_no_context_takeover
        )
        self._compressor: zlib._Compress | None = None

    def compress(self, data: bytes, fin: bool) -> bytes:
        """One frame's payload; `fin` ends the message."""
        if self._compressor is None:
            self._compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self.window_bits
            )
        out = self._compressor.compress(data)
        if fin:
            # §7.2.1: flush to a byte boundary and leave out the 00 00 ff ff it ends with.
            out = (out + self._compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
            if self.reset_each_message:
                self._compressor = None
        return out


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate (RFC 7692) whose inflating stops at the message limit, and which
    lets control frames pass between a compressed message's fragments.

    wsproto's own extension inflates a frame in one call, however large the result (1 MB
    of compressed zeros would become 1 GB), inflates the `00 00 ff ff` tail unbounded, and
    resets its per-message state on a ping between fragments, after which the rest of the
    message is handed over still compressed (RFC 6455 §5.4 allows that ping; wsproto's
    open pull request #205). Here every call inflates at most what is left of the limit,
    the whole message counts, and control frames leave the message's state alone.
    """

    def __init__(self, max_message_bytes: int) -> None:
        super().__init__()
        self.max_message_bytes = max_message_bytes
        self._control = False  # the frame being read is a control frame
        self._inflated = 0  # bytes of the current message inflated so far

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> CloseReason | RsvBits:
        self._control = opcode.iscontrol()
        if self._control:  # §6.1: control frames are never compressed
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else RsvBits(False, False, False)
        if opcode is not Opcode.CONTINUATION:
            self._inflated = 0
        return super().frame_inbound_header(proto, opcode, rsv, payload_length)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if self._control or not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(data)

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if self._control or not fin:
            return None
        if not self._inbound_compressed:
            self._inbound_compressed = None
            return None
        tail = self._inflate(b"\x00\x00\xff\xff")  # RFC 7692 §7.2.2: the flush marker
        if proto.client:
            no_context_takeover = self.server_no_context_takeover
        else:
            no_context_takeover = self.client_no_context_takeover
        if no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        return tail

    @property
    def message_bytes(self) -> int:
        """Bytes the current (compressed) message inflated to so far, its tail's included."""
        return self._inflated

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor = self._decompressor
        assert decompressor is not None
        room = self.max_message_bytes - self._inflated
        try:
            inflated = decompressor.decompress(data, room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(inflated)
        if decompressor.unconsumed_tail or len(inflated) > room:
            return CloseReason.MESSAGE_TOO_BIG
        return inflated


def wire_limit(max_message_bytes: int, compressed: bool) -> int:
    """The most payload bytes a message within the limit can take on the wire: zlib's
    deflateBound for incompressible data, when compressed (so a message of exactly the
    limit is not refused for being bigger compressed than plain)."""
    if not compressed:
        return max_message_bytes
    n = max_message_bytes
    return n + (n >> 12) + (n >> 14) + (n >> 25) + 13


def sendable_close_code(code: int) -> bool:
    """RFC 6455 §7.4: the codes an endpoint may put in a Close frame (1004-1006 and 1015
    are reserved; 1012-1013 are registered with IANA; 3000-4999 are for applications)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1013 or 3000 <= code <= 4999


# --- the connection ------------------------------------------------------------------------


class WebSocketConnection:
    """One side of an open WebSocket.

    Args:
        client: True on the client's side (it masks what it sends, RFC 6455 §5.3).
        limits: the limits and timers to apply.
        now: the time the upgrade completed, on the clock of every later `now`.
        deflate: the negotiated permessage-deflate, bounded by the message limit,
            or None.
        trailing_data: bytes that arrived after the handshake's response or request.
    """

    def __init__(
        self,
        *,
        client: bool,
        limits: WSLimits,
        now: float,
        deflate: BoundedDeflate | None = None,
        trailing_data: bytes = b"",
    ) -> None:
        self.limits = limits
        self.client = client
        self.deflate = deflate
        self._limit = MessageLimit(limits.max_message_bytes)
        extensions: list[Extension] = [deflate, self._limit] if deflate else [self._limit]
        self._ws = Connection(
            ConnectionType.CLIENT if client else ConnectionType.SERVER, extensions
        )
        self.state = WSState.OPEN
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_by: str | None = None  # "local" or "peer": who sent the first Close
        self.messages_received = 0
        self.messages_sent = 0
        self.last_message_bytes = 0
        self.last_message_frames = 0
        self._pieces: list[str | bytes | bytearray] = []
        self._outgoing = bytearray()
        self._pings: dict[bytes, float] = {}  # payload → when sent, awaiting their pong
        self._ping_count = 0
        self._next_ping_at: float | None = (
            now + limits.ping_interval_s if limits.ping_interval_s > 0 else None
        )
        self._last_message_at = now
        self._close_deadline: float | None = None
        self._drain_at: float | None = None
        self._peer_eof = False
        self._pending: list[WSEvent] = []
        # The frame router (see `_route_frame`): bytes not yet given to anyone, how many
        # bytes of a frame wsproto is in the middle of, and whether it holds an unfinished
        # fragmented message (then every frame goes to it until that message ends).
        self._inbox = bytearray(trailing_data)
        self._owed_to_wsproto = 0
        self._wsproto_in_message = False
        self._wsproto_has_bytes = False  # fed since it last had no event to give
        self._hook_view = FrameProtocol(client, [])  # what the extensions' hooks read: .client
        # Compressing is ours alone (we write every data frame); wsproto's extension object
        # inflates what the peer sends, on both paths.
        self._deflater = Deflater(deflate, client=client) if deflate and deflate.enabled() else None

    # --- receiving -----------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the peer; b"" means the peer sent FIN."""
        if self._peer_eof:
            raise LocalProtocolError("receive_data() after the peer's FIN")
        if not data:
            self._peer_eof = True
            if self.state is not WSState.CLOSED:
                # RFC 6455 §7.1.5: TCP closed with no Close frame: the code is 1006.
                self._set_closed(ABNORMAL, "connection closed without a Close frame", "peer")
                self._pending.append(PeerClosed())
            return
        if self.state is WSState.CLOSED:
            return  # after the closing handshake nothing more is read (§5.5.1)
        self._inbox += data

    def next_event(self, now: float) -> WSEvent:
        """The next thing the peer said (or `NEED_DATA`).

        Raises:
            RemoteProtocolError: the peer broke RFC 6455 or our limit; `close_code` is the
                code to close with (`fail()` writes the frame).
        """
        if self._pending:
            return self._pending.pop(0)
        while self.state is not WSState.CLOSED:
            if self._wsproto_has_bytes:  # (asking an idle wsproto costs a generator)
                event = self._wsproto_event(now)
                if event is not None:
                    return event
                self._wsproto_has_bytes = False
            routed = self._route_frame(now)
            if routed is False:
                break  # a frame is incomplete
            if routed is not True:
                return routed
        return NEED_DATA

    def _wsproto_event(self, now: float) -> WSEvent | None:
        """The next event of the frames given to wsproto, or None when it has none."""
        for event in self._ws.events():
            match event:
                case TextMessage() | BytesMessage():
                    received = self._on_piece(event.data, event.message_finished, now)
                    if received is not None:
                        return received
                case Ping():
                    if self.state is WSState.OPEN:  # RFC 6455 §5.5.2: answer with its payload
                        self._outgoing += self._ws.send(event.response())
                    return PingReceived(bytes(event.payload))
                case Pong():
                    payload = bytes(event.payload)
                    sent_at = self._pings.pop(payload, None)
                    if sent_at is not None and self.limits.ping_interval_s > 0:
                        self._next_ping_at = now + self.limits.ping_interval_s
                    return PongReceived(payload, None if sent_at is None else now - sent_at)
                case CloseConnection():
                    return self._on_close(event)
                case _:  # pragma: no cover (wsproto yields nothing else once open)
                    raise LocalProtocolError(f"unexpected wsproto event {event!r}")
        return None

    def _route_frame(self, now: float) -> MessageReceived | bool:
        """Hand the next frame in the inbox to whoever reads it.

        The common frame, a whole unfragmented text or binary message, is read here: a
        header, an XOR, maybe an inflate through the same permessage-deflate object
        wsproto uses, a UTF-8 decode. wsproto's general parser costs several times that
        per message (docs/benchmarks.md). Every other frame (control frames, fragments,
        anything with an unexpected bit, a length over the limit) goes to wsproto whole
        or streamed, and wsproto stays the authority on what is wrong with it.

        Returns:
            The message read here; True when bytes went to wsproto (which may now have
            events); False when the next frame is not all here yet.
        """
        inbox = self._inbox
        if self._owed_to_wsproto:  # the rest of a frame wsproto is reading
            if not inbox:
                return False
            chunk = bytes(inbox[: self._owed_to_wsproto])
            del inbox[: len(chunk)]
            self._owed_to_wsproto -= len(chunk)
            self._ws.receive_data(chunk)
            self._wsproto_has_bytes = True
            return True
        # RFC 6455 §5.2: FIN, RSV1-3, opcode | MASK, 7-bit length [16 or 64-bit length] [key]
        if len(inbox) < 2:
            return False
        first, second = inbox[0], inbox[1]
        length, offset, minimal = second & 0x7F, 2, True
        if length >= 126:
            offset = 4 if length == 126 else 10
            if len(inbox) < offset:
                return False
            length = int.from_bytes(inbox[2:offset], "big")
            # §5.2: "the minimal number of bytes MUST be used to encode the length"
            minimal = length >= (126 if offset == 4 else 0x10000)
        masked = second & 0x80
        if masked:
            offset += 4
        total = offset + length
        opcode, rsv = first & 0x0F, first & 0x70
        deflate = self.deflate
        plain = (
            first & 0x80  # FIN: the whole message in this frame
            and (opcode == 0x1 or opcode == 0x2)
            and not self._wsproto_in_message
            and (rsv == 0 or (rsv == 0x40 and deflate is not None and deflate.enabled()))
            and bool(masked) is not self.client  # §5.1: only clients mask
            and minimal
            and length <= wire_limit(self.limits.max_message_bytes, bool(rsv))
        )
        if not plain:
            if opcode == 0x1 or opcode == 0x2:
                self._wsproto_in_message = not first & 0x80
            elif opcode == 0x0 and first & 0x80:
                self._wsproto_in_message = False
            chunk = bytes(inbox[:total])
            del inbox[: len(chunk)]
            self._owed_to_wsproto = total - len(chunk)
            self._ws.receive_data(chunk)
            self._wsproto_has_bytes = True
            return True
        if len(inbox) < total:
            return False
        payload = bytes(inbox[offset:total])
        if masked:
            key = bytes(inbox[offset - 4 : offset])
            payload = _unmask(payload, key)
        del inbox[:total]
        return self._plain_message(opcode, payload, bool(rsv), now)

    def _plain_message(
        self, opcode: int, payload: bytes, compressed: bool, now: float
    ) -> MessageReceived:
        if compressed:
            # The extension's own hooks, in the order wsproto calls them for one frame.
            deflate, view = self.deflate, self._hook_view
            assert deflate is not None
            code = Opcode(opcode)
            deflate.frame_inbound_header(view, code, RsvBits(True, False, False), len(payload))
            inflated = deflate.frame_inbound_payload_data(view, payload)
            tail = deflate.frame_inbound_complete(view, True)
            for outcome in (inflated, tail):
                if isinstance(outcome, CloseReason):
                    raise self._refusal(outcome)
            assert isinstance(inflated, bytes)
            assert isinstance(tail, bytes | None)
            payload = inflated + (tail or b"")  # (BoundedDeflate kept it within the limit)
        data: str | bytes = payload
        if opcode == 0x1:
            try:
                data = payload.decode()
            except UnicodeDecodeError as exc:  # §8.1: a text message is UTF-8
                raise RemoteProtocolError(
                    f"invalid UTF-8 in a text message: {exc.reason}",
                    close_code=1007,
                    kind=ERROR_KINDS[1007],
                ) from None
        self.messages_received += 1
        self._last_message_at = now
        return MessageReceived(data, len(payload), 1, compressed)

    def _refusal(self, code: CloseReason) -> RemoteProtocolError:
        reason = (
            f"message inflates past the limit of {self.limits.max_message_bytes} bytes"
            if code == CloseReason.MESSAGE_TOO_BIG
            else "invalid compressed data"
        )
        return RemoteProtocolError(reason, close_code=int(code), kind=ERROR_KINDS[int(code)])

    def _on_piece(
        self, piece: str | bytes | bytearray, finished: bool, now: float
    ) -> MessageReceived | None:
        self._pieces.append(piece)
        if not finished:
            return None
        pieces, self._pieces = self._pieces, []
        # Text pieces are str (wsproto decodes UTF-8 as it goes), binary ones bytes.
        data = "".join(pieces) if isinstance(piece, str) else b"".join(pieces)  # type: ignore[arg-type]
        self.messages_received += 1
        self._last_message_at = now
        limit = self._limit
        size = limit.message_bytes
        if limit.compressed:
            # Fix (found by tests/unit/test_fuzz_ws.py): wsproto appends what the flush tail
            # inflates to (RFC 7692 §7.2.2) after every extension's payload hook, so
            # MessageLimit never counts it, and a message whose last symbols need the tail's
            # bits reported fewer bytes than it has. The inflater counts them all.
            assert self.deflate is not None
            size = self.deflate.message_bytes
        return MessageReceived(data, size, limit.frames, limit.compressed)

    def _on_close(self, event: CloseConnection) -> CloseReceived:
        code, reason = int(event.code), event.reason or ""
        if self._ws.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
            # wsproto reports a frame it cannot parse as a CloseConnection and leaves the
            # state as it was (a real Close frame moves it on): a failure, not a Close.
            if self._limit.refusal:  # our MessageLimit refused the frame: say why
                reason = self._limit.refusal
            elif code == 1009:
                reason = f"message inflates past the limit of {self.limits.max_message_bytes} bytes"
            raise RemoteProtocolError(
                reason, close_code=code, kind=ERROR_KINDS.get(code, "ws_protocol_error")
            )
        if self._ws.state is ConnectionState.REMOTE_CLOSING:
            # The peer closes first; RFC 6455 §5.5.1: answer with a Close (its code echoed).
            self._outgoing += self._ws.send(event.response())
            self._set_closed(code, reason, "peer")
            return CloseReceived(code, reason, initiated_by_peer=True)
        # Their answer to our Close: the closing handshake is complete.
        self.state = WSState.CLOSED
        self._close_deadline = None
        return CloseReceived(code, reason, initiated_by_peer=False)

    # --- sending -------------------------------------------------------------------------

    def send_message(self, data: str | bytes, now: float, *, fragment_bytes: int = 0) -> bytes:
        """A whole message (text for str) as frames, split every `fragment_bytes` if > 0.

        The frames are written here (RFC 6455 §5.2), not by wsproto: a data frame is a
        header and the payload, compressed by the same permessage-deflate object wsproto
        reads with, and wsproto's general writer costs more than the rest of a small
        echo. Control frames still go through wsproto. `last_message_bytes` and
        `last_message_frames` say what was sent.

        Raises:
            LocalProtocolError: the connection is closing or closed.
        """
        self._require_open("send a message")
        self.messages_sent += 1
        self._last_message_at = now
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self.last_message_bytes = len(payload)
        opcode = 0x1 if isinstance(data, str) else 0x2
        if fragment_bytes <= 0 or len(payload) <= fragment_bytes:
            self.last_message_frames = 1
            return self._data_frame(opcode, payload, True)
        self.last_message_frames = -(-len(payload) // fragment_bytes)
        # §5.4: the first frame has the type, the others are continuations. (A fragment
        # may end inside a UTF-8 sequence: only the whole message must be valid, §5.6.)
        out = bytearray()
        for start in range(0, len(payload), fragment_bytes):
            piece = payload[start : start + fragment_bytes]
            out += self._data_frame(
                0x0 if start else opcode, piece, start + fragment_bytes >= len(payload)
            )
        return bytes(out)

    def _data_frame(self, opcode: int, payload: bytes, fin: bool) -> bytes:
        first = opcode | (0x80 if fin else 0)
        if self._deflater is not None:
            if opcode:  # RFC 7692 §6.1: RSV1 on a compressed message's first frame only
                first |= 0x40
            payload = self._deflater.compress(payload, fin)
        length = len(payload)
        mask = 0x80 if self.client else 0  # §5.3: a client masks, a server does not
        if length < 126:
            head = bytes((first, mask | length))
        elif length < 0x10000:
            head = bytes((first, mask | 126)) + length.to_bytes(2, "big")
        else:
            head = bytes((first, mask | 127)) + length.to_bytes(8, "big")
        if not mask:
            return head + payload
        key = os.urandom(4)  # §5.3: unpredictable, per frame
        return head + key + _unmask(payload, key)

    def new_ping_payload(self) -> bytes:
        """A payload no other ping of ours has used (a counter)."""
        self._ping_count += 1
        return PING_PAYLOAD.pack(self._ping_count)

    def send_ping(self, now: float, payload: bytes) -> bytes:
        """A Ping; its pong's round trip comes back in `PongReceived.rtt_s`.

        Raises:
            LocalProtocolError: closing or closed, or a payload over 125 bytes.
        """
        self._require_open("send a ping")
        if len(payload) > 125:  # RFC 6455 §5.5: control frame payloads are short
            raise LocalProtocolError("a ping payload is at most 125 bytes")
        self._pings[payload] = now
        return self._send(Ping(payload=payload))

    def close(self, now: float, code: int = NORMAL, reason: str = "") -> bytes:
        """Start the closing handshake (or b"" when it has started already).

        Raises:
            LocalProtocolError: a code that may not be sent (see `sendable_close_code`).
        """
        if not sendable_close_code(code):
            raise LocalProtocolError(f"close code {code} may not be sent (RFC 6455 §7.4)")
        if self.state is not WSState.OPEN:
            return b""
        self.state = WSState.LOCAL_CLOSING
        self._close_deadline = now + self.limits.close_timeout_s
        self.close_code, self.close_reason, self.closed_by = code, reason, "local"
        return self._send(CloseConnection(code=code, reason=reason or None))

    def fail(self, error: RemoteProtocolError) -> bytes:
        """The Close frame for a peer's failure; the connection is then CLOSED.

        RFC 6455 §7.1.7: after it, close TCP without waiting for the peer's Close.
        """
        out = b""
        if self._ws.state is ConnectionState.OPEN:
            out = self._ws.send(CloseConnection(code=error.close_code, reason=_short(str(error))))
        self._set_closed(error.close_code, str(error), "local")
        return out

    def data_to_send(self) -> bytes:
        """Bytes the core decided to send by itself: pongs, the answer to a Close."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def _send(self, event: Ping | CloseConnection) -> bytes:
        try:
            return self._ws.send(event)
        except WsprotoLocalError as exc:  # pragma: no cover (our states keep us out of it)
            raise LocalProtocolError(str(exc)) from exc

    def _require_open(self, what: str) -> None:
        if self.state is not WSState.OPEN:
            raise LocalProtocolError(f"cannot {what}: the WebSocket is {self.state.value}")

    def _set_closed(self, code: int, reason: str, by: str) -> None:
        self.state = WSState.CLOSED
        self._close_deadline = None
        if self.closed_by is None:
            self.close_code, self.close_reason, self.closed_by = code, reason, by

    # --- timers --------------------------------------------------------------------------

    def begin_drain(self, now: float) -> None:
        """Shutdown: close with 1001 at the next `handle_timeout()`, which is due now."""
        if self.state is WSState.OPEN:
            self._drain_at = now

    def get_timer(self) -> float | None:
        """When the adapter must call `handle_timeout()`, if nothing arrives before."""
        if self.state is WSState.LOCAL_CLOSING:
            return self._close_deadline
        if self.state is WSState.CLOSED:
            return None
        return min(self._deadlines(), default=None)

    def _deadlines(self) -> list[float]:
        deadlines = [self._drain_at, self._next_ping_at]
        if self._pings:
            deadlines.append(min(self._pings.values()) + self.limits.ping_timeout_s)
        if self.limits.idle_timeout_s > 0:
            deadlines.append(self._last_message_at + self.limits.idle_timeout_s)
        return [deadline for deadline in deadlines if deadline is not None]

    def handle_timeout(self, now: float) -> PingSent | CloseSent | CloseTimedOut | None:
        """Run the timer that is due; its bytes are in `data_to_send()`.

        Returns:
            What was done, or None when no timer was due yet.
        """
        if self.state is WSState.LOCAL_CLOSING:
            assert self._close_deadline is not None
            if now < self._close_deadline:
                return None
            self._set_closed(ABNORMAL, "no Close frame from the peer in time", "local")
            return CloseTimedOut()
        if self.state is WSState.CLOSED:
            return None
        limits = self.limits
        if self._drain_at is not None and now >= self._drain_at:
            return self._close_for(now, GOING_AWAY, "server shutting down")
        if self._pings and now >= min(self._pings.values()) + limits.ping_timeout_s:
            return self._close_for(now, PING_TIMEOUT, "keepalive ping timeout")
        if limits.idle_timeout_s > 0 and now >= self._last_message_at + limits.idle_timeout_s:
            return self._close_for(now, NORMAL, f"idle for {limits.idle_timeout_s:g} s")
        if self._next_ping_at is not None and now >= self._next_ping_at:
            self._next_ping_at = None  # the next one is due a ping interval after its pong
            payload = self.new_ping_payload()
            self._outgoing += self.send_ping(now, payload)
            return PingSent(payload)
        return None

    def _close_for(self, now: float, code: int, reason: str) -> CloseSent:
        self._outgoing += self.close(now, code, reason)
        return CloseSent(code, reason)


def _unmask(payload: bytes, key: bytes) -> bytes:
    """RFC 6455 §5.3: XOR with the 4-byte key, repeated (one big-integer XOR: fast).
    Masking and unmasking are the same operation."""
    n = len(payload)
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def _short(reason: str) -> str:
    """A close reason that fits a control frame (RFC 6455 §5.5: 125 bytes with the code)."""
    encoded = reason.encode()
    if len(encoded) <= 123:
        return reason
    return encoded[:120].decode("utf-8", "ignore") + "..."
