"""Bad WebSocket input over real sockets: every RFC 6455 violation a server must reject.

Each row is sent as raw bytes, built here frame by frame (RFC 6455 §5.2), to a real server
on 127.0.0.1 after a real upgrade. For every row the test checks, from the bytes on the
wire and from the server's telemetry:

- the answer: a Close frame with the row's code (parsed from what the server sent), or
  the handshake's HTTP status, and nothing else (no echo of what followed the fault);
- the TCP close: the server sends FIN first and the client reads EOF (b""), not a reset;
- the server serves on: a new WebSocket echo works afterwards;
- nothing lost: the metrics (closes by code and closer, errors by kind, connections
  opened == closed, events counted) agree with the events, one by one.

A short live fuzz at the end sends a few hundred random frame sequences, valid and
mutated, and checks each answer against the verdict of the sans-I/O core fed the same
bytes (`tests/unit/test_fuzz_ws.py` fuzzes the core itself).

Close codes come from RFC 6455 (§7.4.1); limits from this file's server (`LIMITS`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import random
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import pytest

from handshake_lab.errors import RemoteProtocolError
from handshake_lab.http_events import NEED_DATA
from handshake_lab.ws_conn import (
    ERROR_KINDS,
    BoundedDeflate,
    CloseReceived,
    MessageReceived,
    PingReceived,
    WebSocketConnection,
    WSLimits,
    sendable_close_code,
)
from handshake_lab.ws_handshake import accept_token, negotiate_deflate
from server.lifecycle import Server
from telemetry.events import Name, Role
from telemetry.metrics import ERROR_EVENTS, close_code_label
from tests.conftest import RunningServer, make_config
from tests.helpers import sample, status_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from telemetry.events import Event
    from tests.conftest import Observed

pytestmark = pytest.mark.integration

LIMIT: Final = 100_000  # --ws-max-message of the server under test
LIMITS: Final = WSLimits(max_message_bytes=LIMIT, ping_interval_s=0, idle_timeout_s=0)
BOUND_S: Final = 5.0  # no single step comes near it
KEY: Final = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example key
MASK: Final = b"\x37\xfa\x21\x3d"  # RFC 6455 §5.7's example masking key

# Opcodes (RFC 6455 §5.2).
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES: Final = frozenset({CONT, TEXT, BINARY})
KNOWN_OPCODES: Final = frozenset({CONT, TEXT, BINARY, CLOSE, PING, PONG})


# --- frames, built and parsed by hand (RFC 6455 §5.2) ---------------------------------------


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """§5.3: XOR with the 4-byte key, repeated (masking and unmasking are the same)."""
    n = len(payload)
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length: int | None = None,
    width: int | None = None,
) -> bytes:
    """One frame: FIN, RSV1-3 (`rsv` as 3 bits, 0b100 is RSV1), opcode | MASK, length
    [16 or 64-bit length] [masking key] payload.

    Args:
        mask: the masking key; None sends the frame unmasked.
        length: the payload length the header declares (default: the payload's own).
        width: bytes of extended length: 0 (7-bit), 2 (after 126) or 8 (after 127);
            default the fewest, as §5.2 requires.
    """
    declared = len(payload) if length is None else length
    if width is None:
        width = 0 if declared < 126 else 2 if declared < 0x10000 else 8
    head = bytes([(0x80 if fin else 0) | (rsv & 0b111) << 4 | (opcode & 0x0F)])
    mask_bit = 0x80 if mask is not None else 0
    if width == 0:
        head += bytes([mask_bit | declared])
    elif width == 2:
        head += bytes([mask_bit | 126]) + declared.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + declared.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + mask_bytes(payload, mask)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@dataclass(frozen=True, slots=True)
class Frame:
    fin: bool
    rsv: int  # RSV1-3 as 3 bits
    opcode: int
    masked: bool
    payload: bytes  # unmasked
    minimal: bool  # the length took the fewest bytes (§5.2)


def parse_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """The whole frames in `data`, and what is left of an incomplete last one."""
    frames: list[Frame] = []
    view = memoryview(data)
    at = 0
    while len(data) - at >= 2:
        first, second = data[at], data[at + 1]
        length, offset = second & 0x7F, at + 2
        minimal = True
        if length >= 126:
            width = 2 if length == 126 else 8
            if len(data) < offset + width:
                break
            length = int.from_bytes(data[offset : offset + width], "big")
            minimal = length >= (126 if width == 2 else 0x10000)
            offset += width
        masked = bool(second & 0x80)
        key = bytes(view[offset : offset + 4]) if masked else b""
        offset += len(key) if masked else 0
        if len(data) < offset + length or (masked and len(key) < 4):
            break
        payload = bytes(view[offset : offset + length])
        frames.append(
            Frame(
                fin=bool(first & 0x80),
                rsv=first >> 4 & 0b111,
                opcode=first & 0x0F,
                masked=masked,
                payload=mask_bytes(payload, key) if masked else payload,
                minimal=minimal,
            )
        )
        at = offset + length
    return frames, data[at:]


def close_code_of(close: Frame) -> int:
    """The code of a Close frame; 1005 (§7.4.1) when it carries none."""
    assert close.opcode == CLOSE
    return struct.unpack("!H", close.payload[:2])[0] if close.payload else 1005


def check_frames_an_endpoint_may_send(
    frames: list[Frame], *, from_client: bool, deflate: bool
) -> None:
    """Every rule of RFC 6455 §5 a sender must keep, as assertions."""
    in_message = False
    for f in frames:
        assert f.masked is from_client, f"§5.1: masking {f}"
        assert f.minimal, f"§5.2: non-minimal length {f}"
        assert f.opcode in KNOWN_OPCODES, f"§5.2: reserved opcode {f}"
        if f.opcode in DATA_OPCODES:
            assert (f.opcode == CONT) is in_message, f"§5.4: fragmentation {f}"
            # RFC 7692 §6.1: RSV1 marks a compressed message, on its first frame only.
            allowed = 0b100 if deflate and f.opcode != CONT else 0
            assert f.rsv & ~allowed == 0, f"§5.2: reserved bits {f}"
            in_message = not f.fin
            continue
        assert f.rsv == 0, f"§5.2: reserved bits on a control frame {f}"
        assert f.fin, f"§5.5: fragmented control frame {f}"
        assert len(f.payload) <= 125, f"§5.5: control frame too long {f}"
        if f.opcode == CLOSE:
            assert len(f.payload) != 1, f"§5.5.1: 1-byte Close payload {f}"
            if f.payload:
                assert sendable_close_code(close_code_of(f)), f"§7.4: code {f}"
                f.payload[2:].decode()  # §5.5.1: the reason is UTF-8


class Inflater:
    """The reading side of permessage-deflate (RFC 7692 §7.2.2), for the server's frames."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(-15)

    def message(self, frames: list[Frame]) -> bytes:
        data = b"".join(f.payload for f in frames)
        if not frames[0].rsv & 0b100:
            return data
        return self._inflater.decompress(data + b"\x00\x00\xff\xff")


def deflated(data: bytes) -> bytes:
    """A message's payload as permessage-deflate sends it (§7.2.1: the 4-byte tail off)."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


# --- the raw client -------------------------------------------------------------------------


def upgrade_request(
    *,
    method: bytes = b"GET",
    path: bytes = b"/ws/echo",
    version: bytes = b"HTTP/1.1",
    upgrade: bytes | None = b"websocket",
    connection: bytes | None = b"Upgrade",
    key: bytes | None = KEY,
    ws_version: bytes | None = b"13",
    extra: bytes = b"",
    body: bytes = b"",
) -> bytes:
    """An upgrade request (RFC 6455 §4.1); a field given None is left out."""
    fields = [(b"Host", b"lab")]
    for name, value in (
        (b"Upgrade", upgrade),
        (b"Connection", connection),
        (b"Sec-WebSocket-Key", key),
        (b"Sec-WebSocket-Version", ws_version),
    ):
        if value is not None:
            fields.append((name, value))
    head = b"".join(b"%s: %s\r\n" % field for field in fields)
    return b"%s %s %s\r\n%s%s\r\n%s" % (method, path, version, head, extra, body)


async def open_websocket(
    port: int, *, deflate: bool = False, early: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Upgrade by hand; returns the stream positioned after the 101's head.

    Args:
        early: frames sent with the request, in the same write (before the 101 came).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    offer = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else b""
    writer.write(upgrade_request(extra=offer) + early)
    async with asyncio.timeout(BOUND_S):
        head = await reader.readuntil(b"\r\n\r\n")
    assert status_of(head) == 101
    assert accept_token(KEY) in head
    assert (b"permessage-deflate" in head.lower()) is deflate
    return reader, writer


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until the peer's FIN. A reset raises (ConnectionResetError): a test
    that gets one fails, as it should."""
    chunks = []
    async with asyncio.timeout(BOUND_S):
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def echoes(port: int) -> None:
    """The server serves on: a new WebSocket echoes a message and closes with 1000."""
    reader, writer = await open_websocket(port)
    try:
        writer.write(frame(TEXT, "still serving ✓".encode()) + frame(CLOSE, close_payload(1000)))
        frames, rest = parse_frames(await read_to_eof(reader))
    finally:
        await close_writer(writer)
    assert rest == b""
    assert [(f.opcode, f.payload) for f in frames] == [
        (TEXT, "still serving ✓".encode()),
        (CLOSE, close_payload(1000)),
    ]


@pytest.fixture
async def ws_server(observed: Observed) -> AsyncIterator[RunningServer]:
    server = Server(make_config(ws=LIMITS), observed.bus)
    await server.start()
    try:
        yield RunningServer(server, observed)
    finally:
        await server.shutdown(timeout_s=BOUND_S)


async def all_closed(running: RunningServer) -> None:
    """Until the server has closed every connection it accepted: its closed events, which
    carry the last metric updates, are all in. (Woken by the bus, not polled.)"""
    timeline = running.observed.timeline

    def done() -> bool:
        accepted = timeline.count(Name.CONNECTION_ACCEPTED, Role.SERVER)
        return accepted == timeline.count(Name.CONNECTION_CLOSED, Role.SERVER)

    finished = asyncio.Event()

    def wake(_event: Event) -> None:
        if done():
            finished.set()

    unsubscribe = running.observed.bus.subscribe(wake)
    try:
        if not done():
            async with asyncio.timeout(BOUND_S):
                await finished.wait()
    finally:
        unsubscribe()


def server_events(observed: Observed, name: Name, conn_id: int | None = None) -> list[Event]:
    return [
        e
        for e in observed.timeline.events
        if e.name is name and e.role is Role.SERVER and (conn_id is None or e.conn_id == conn_id)
    ]


def check_metrics_agree_with_events(observed: Observed) -> None:
    """What the metrics say equals what the events say, count for count: nothing lost."""
    registry = observed.metrics.registry
    events = [e for e in observed.timeline.events if e.role is Role.SERVER]
    names = Counter(e.name for e in events)
    for name, count in names.items():
        assert sample(registry, "handshake_lab_events_total", role="server", event=name) == count
    opened = sample(registry, "handshake_lab_connections_opened_total", role="server")
    closed = sample(registry, "handshake_lab_connections_closed_total", role="server")
    assert opened == closed == names[Name.CONNECTION_ACCEPTED] == names[Name.CONNECTION_CLOSED]
    assert opened > 0
    assert sample(registry, "handshake_lab_connections_active", role="server") == 0
    assert sample(registry, "handshake_lab_ws_connections_active", role="server") == 0
    errors = Counter(e.attrs["kind"] for e in events if e.name in ERROR_EVENTS)
    for kind, count in errors.items():
        assert sample(registry, "handshake_lab_errors_total", role="server", kind=kind) == count
    assert sample(registry, "handshake_lab_errors_total", role="server") == errors.total()
    closes = Counter(
        (e.attrs["closed_by"], close_code_label(e.attrs["code"]))
        for e in events
        if e.name is Name.WS_CONNECTION_CLOSED
    )
    for (closed_by, code), count in closes.items():
        labels = {"role": "server", "closed_by": closed_by, "code": code}
        assert sample(registry, "handshake_lab_ws_closes_total", **labels) == count
    assert sample(registry, "handshake_lab_ws_closes_total", role="server") == closes.total()
    assert closes.total() == names[Name.WS_UPGRADE_ACCEPTED]


def check_server_closed_tcp_first(observed: Observed, conn_id: int | None) -> None:
    """The server sent FIN first, then read the client's: no reset either way."""
    assert conn_id is not None
    [fin] = server_events(observed, Name.FIN_SENT, conn_id)
    assert fin.attrs["active_closer"] is True
    assert len(server_events(observed, Name.EOF_RECEIVED, conn_id)) == 1
    assert server_events(observed, Name.CONNECTION_FAILED, conn_id) == []
    [closed] = server_events(observed, Name.CONNECTION_CLOSED, conn_id)
    assert closed.attrs["closed_by"] == "server"


# --- protocol violations after a good upgrade ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    data: bytes  # sent after the 101, in one write
    code: int  # the Close code the server must answer with
    deflate: bool = False  # permessage-deflate negotiated (RFC 7692)
    before: tuple[int, ...] = ()  # opcodes of the server's answers to a valid prefix


def v(
    data: bytes, code: int, id: str, *, deflate: bool = False, before: tuple[int, ...] = ()
) -> object:
    return pytest.param(Violation(data, code, deflate, before), id=id)


LONG: Final = b"p" * 126  # one byte too many for a control frame (§5.5)
# Sent in the same write right after each fault: §7.1.7 says nothing more is read.
NEVER_READ: Final = frame(TEXT, b"never read") + frame(PING, b"never answered")

VIOLATIONS: Final = [
    # §5.1: "a client MUST mask all frames that it sends to the server".
    v(frame(TEXT, b"hi", mask=None), 1002, "unmasked-text"),
    v(frame(BINARY, b"hi", mask=None), 1002, "unmasked-binary"),
    v(frame(PING, b"hi", mask=None), 1002, "unmasked-ping"),
    v(frame(CLOSE, close_payload(1000), mask=None), 1002, "unmasked-close"),
    v(frame(TEXT, b"a", fin=False) + frame(CONT, b"b", mask=None), 1002, "unmasked-continuation"),
    # §5.2: "RSV1, RSV2, RSV3: MUST be 0 unless an extension is negotiated that defines
    # meanings for non-zero values".
    v(frame(TEXT, b"hi", rsv=0b100), 1002, "rsv1-without-extension"),
    v(frame(TEXT, b"hi", rsv=0b010), 1002, "rsv2"),
    v(frame(TEXT, b"hi", rsv=0b001), 1002, "rsv3"),
    v(frame(BINARY, b"hi", rsv=0b111), 1002, "rsv1-2-3"),
    v(frame(PING, b"hi", rsv=0b010), 1002, "rsv2-on-ping"),
    # ... and with permessage-deflate, which defines RSV1 for a message's first frame only
    # (RFC 7692 §6.1): not on control frames, not on continuations, RSV2/3 still not.
    v(frame(PING, b"hi", rsv=0b100), 1002, "deflate-rsv1-on-ping", deflate=True),
    v(
        frame(TEXT, deflated(b"ab"), fin=False, rsv=0b100) + frame(CONT, b"c", rsv=0b100),
        1002,
        "deflate-rsv1-on-continuation",
        deflate=True,
    ),
    v(frame(TEXT, b"hi", rsv=0b010), 1002, "deflate-rsv2", deflate=True),
    # Found by tests/unit/test_fuzz_ws.py: a new message while a compressed one is open
    # (§5.4) had its payload inflated as the open message's first, and failed as 1007
    # when that was not deflate data (fixed in ws_conn.MessageLimit).
    v(
        frame(BINARY, deflated(b"ab"), fin=False, rsv=0b100) + frame(TEXT, b"\xff\xff\xff\xff"),
        1002,
        "deflate-new-message-while-one-is-open",
        deflate=True,
    ),
    # §5.2: opcodes 0x3-0x7 (data) and 0xB-0xF (control) are reserved.
    *(v(frame(op, b"x"), 1002, f"reserved-opcode-{op:#x}") for op in range(0x3, 0x8)),
    *(v(frame(op, b"x"), 1002, f"reserved-opcode-{op:#x}") for op in range(0xB, 0x10)),
    # §5.5: "All control frames MUST have a payload length of 125 bytes or less and MUST
    # NOT be fragmented."
    v(frame(PING, b"p", fin=False), 1002, "fragmented-ping"),
    v(frame(PONG, b"p", fin=False), 1002, "fragmented-pong"),
    v(frame(CLOSE, close_payload(1000), fin=False), 1002, "fragmented-close"),
    v(frame(PING, LONG), 1002, "ping-126-bytes"),
    v(frame(PONG, LONG), 1002, "pong-126-bytes"),
    v(frame(CLOSE, close_payload(1000, b"r" * 124)), 1002, "close-126-bytes"),
    v(frame(PING, LONG, fin=False), 1002, "fragmented-and-long-ping"),
    # §5.4: a continuation continues a message; a new message waits for the open one.
    v(frame(CONT, b"x"), 1002, "continuation-without-start"),
    v(frame(CONT, b"x", fin=False), 1002, "unfinished-continuation-without-start"),
    v(
        frame(TEXT, b"done") + frame(CONT, b"x"),
        1002,
        "continuation-after-a-message",
        before=(TEXT,),
    ),
    v(frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), 1002, "text-while-text-open"),
    v(frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"), 1002, "binary-while-text-open"),
    v(
        frame(BINARY, b"a", fin=False) + frame(PING) + frame(TEXT, b"b", fin=False),
        1002,
        "text-while-binary-open-after-a-ping",
        before=(PONG,),
    ),
    # §5.6 / §8.1: a text message is UTF-8, judged as a whole (RFC 3629).
    v(frame(TEXT, b"\xff"), 1007, "utf8-invalid-byte"),
    v(frame(TEXT, b"\xc0\xaf"), 1007, "utf8-overlong"),
    v(frame(TEXT, b"\xed\xa0\x80"), 1007, "utf8-surrogate"),
    v(frame(TEXT, b"\xf4\x90\x80\x80"), 1007, "utf8-above-u10ffff"),
    v(frame(TEXT, "é".encode()[:1]), 1007, "utf8-truncated-at-end"),
    v(frame(TEXT, b"\xe2\x82", fin=False) + frame(CONT, b"\x28"), 1007, "utf8-split-invalid"),
    v(
        frame(TEXT, b"ok \xf0\x9f", fin=False) + frame(CONT, b"\x98", fin=False) + frame(CONT),
        1007,
        "utf8-split-truncated-at-end",
    ),
    # An invalid byte fails the message at once, with no need to wait for its end.
    v(frame(TEXT, b"\xff", fin=False), 1007, "utf8-invalid-in-an-unfinished-message"),
    v(
        frame(TEXT, "ok ✓".encode()) + frame(TEXT, b"\x80"),
        1007,
        "utf8-after-a-good-one",
        before=(TEXT,),
    ),
    # §5.5.1: a Close body is empty or a 2-byte code, then a UTF-8 reason.
    v(frame(CLOSE, b"\x03"), 1002, "close-1-byte"),
    # §7.4: codes below 1000, reserved (1004), local-only (1005, 1006, 1015), unassigned
    # (1016-2999) and above 4999 are not for the wire.
    *(
        v(frame(CLOSE, close_payload(code)), 1002, f"close-code-{code}")
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)
    ),
    v(frame(CLOSE, close_payload(1000, b"bye \xff")), 1007, "close-reason-not-utf8"),
    v(frame(CLOSE, close_payload(1000, b"\xe2\x82")), 1007, "close-reason-truncated-utf8"),
    # §5.2: "the most significant bit MUST be 0" of a 64-bit length ...
    v(frame(BINARY, length=1 << 63, width=8), 1002, "length-64-top-bit"),
    v(frame(TEXT, length=(1 << 64) - 1, width=8), 1002, "length-64-all-ones"),
    # ... and "the minimal number of bytes MUST be used to encode the length".
    v(frame(TEXT, b"hello", width=2), 1002, "length-5-in-16-bits"),
    v(frame(TEXT, b"x" * 125, width=2), 1002, "length-125-in-16-bits"),
    v(frame(TEXT, b"hello", width=8), 1002, "length-5-in-64-bits"),
    v(frame(BINARY, b"x" * 0xFFFF, width=8), 1002, "length-65535-in-64-bits"),
    v(frame(PING, b"p", width=2), 1002, "ping-length-in-16-bits"),
    # Our limit (--ws-max-message): 1009. The header alone is enough to refuse.
    v(frame(BINARY, b"x" * (LIMIT + 1)), 1009, "message-over-limit"),
    v(frame(BINARY, length=LIMIT + 1), 1009, "message-over-limit-header-only"),
    v(frame(TEXT, length=(1 << 63) - 1, width=8), 1009, "length-64-largest"),
    v(
        frame(BINARY, b"x" * (LIMIT // 2), fin=False) + frame(CONT, b"x" * (LIMIT // 2 + 1)),
        1009,
        "fragments-over-limit",
    ),
    v(
        frame(BINARY, b"x" * LIMIT, fin=False) + frame(PING) + frame(CONT, b"x"),
        1009,
        "fragments-over-limit-by-one-after-a-ping",
        before=(PONG,),
    ),
    # RFC 7692: a compressed message is counted inflated (a deflate bomb), and corrupt
    # compressed data is invalid payload.
    v(
        frame(BINARY, deflated(bytes(LIMIT + 1)), rsv=0b100),
        1009,
        "deflate-bomb",
        deflate=True,
    ),
    v(frame(BINARY, b"\xff\xff\xff\xff", rsv=0b100), 1007, "deflate-corrupt", deflate=True),
]


@pytest.mark.parametrize("case", VIOLATIONS)
async def test_a_violation_gets_its_close_code_then_a_clean_tcp_close(
    ws_server: RunningServer, case: Violation
) -> None:
    observed = ws_server.observed
    reader, writer = await open_websocket(ws_server.port, deflate=case.deflate)
    try:
        writer.write(case.data + NEVER_READ)
        await writer.drain()
        received = await read_to_eof(reader)  # the server's FIN (a reset would raise)
    finally:
        await close_writer(writer)  # our FIN, after theirs
    frames, rest = parse_frames(received)
    assert rest == b""
    check_frames_an_endpoint_may_send(frames, from_client=False, deflate=case.deflate)
    *answers, close = frames
    assert (close.opcode, close_code_of(close)) == (CLOSE, case.code)
    # What the valid prefix earned, and nothing for what followed the fault (NEVER_READ).
    assert tuple(f.opcode for f in answers) == case.before
    await all_closed(ws_server)

    [accepted] = server_events(observed, Name.WS_UPGRADE_ACCEPTED)
    conn = accepted.conn_id
    [failed] = server_events(observed, Name.WS_CONNECTION_FAILED, conn)
    assert (failed.attrs["code"], failed.attrs["kind"]) == (case.code, ERROR_KINDS[case.code])
    [sent] = server_events(observed, Name.WS_CLOSE_SENT, conn)
    assert (sent.attrs["code"], sent.attrs["initiated"]) == (case.code, True)
    [ws_closed] = server_events(observed, Name.WS_CONNECTION_CLOSED, conn)
    assert (ws_closed.attrs["code"], ws_closed.attrs["closed_by"]) == (case.code, "server")
    messages = sum(op in (TEXT, BINARY) for op in case.before)
    assert ws_closed.attrs["messages_received"] == messages
    check_server_closed_tcp_first(observed, conn)

    await echoes(ws_server.port)
    await all_closed(ws_server)
    registry = observed.metrics.registry
    labels = {"role": "server", "closed_by": "server", "code": str(case.code)}
    assert sample(registry, "handshake_lab_ws_closes_total", **labels) == 1
    kind = ERROR_KINDS[case.code]
    assert sample(registry, "handshake_lab_errors_total", role="server", kind=kind) == 1
    assert sample(registry, "handshake_lab_errors_total", role="server") == 1
    assert sample(registry, "handshake_lab_connections_opened_total", role="server") == 2
    check_metrics_agree_with_events(observed)


# --- the client closes first, then sends more: not a fault, and nothing more is read ------


@dataclass(frozen=True, slots=True)
class ClosedThen:
    close: bytes  # the client's Close frame
    then: bytes  # in the same write, after it: frames after Close
    later: bytes  # sent once the server's Close has come: data after the closing handshake
    code: int  # what the server's Close says: the client's code echoed (§5.5.1)


def c(close: bytes, then: bytes, later: bytes, code: int, id: str) -> object:
    return pytest.param(ClosedThen(close, then, later, code), id=id)


CLOSE_1000: Final = frame(CLOSE, close_payload(1000))
# Raw deflate data whose last symbol needs bits of the 00 00 ff ff tail: it inflates to
# 4 bytes, and to 10 more once the tail is added.
TAIL_HEAVY: Final = bytes.fromhex("626198300101")

AFTER_CLOSE: Final = [
    # §5.5.1: after sending Close, an endpoint sends no more data; whatever comes after
    # the peer's Close is not read, let alone echoed or failed.
    c(CLOSE_1000, frame(TEXT, b"after close"), b"", 1000, "text-after-close"),
    c(CLOSE_1000, frame(PING, b"after close"), b"", 1000, "ping-after-close"),
    c(CLOSE_1000, frame(TEXT, b"x", mask=None), b"", 1000, "violation-after-close"),
    c(CLOSE_1000, frame(CLOSE, close_payload(4000)), b"", 1000, "second-close"),
    c(CLOSE_1000, b"", frame(TEXT, b"x") + os.urandom(64), 1000, "data-after-handshake"),
    c(CLOSE_1000, b"\x00\x01garbage", frame(CLOSE, b"\x03"), 1000, "garbage-before-and-after"),
    c(frame(CLOSE), frame(TEXT, b"x"), b"", 1005, "no-code-then-text"),
    c(frame(CLOSE, close_payload(4999, "bye ✓".encode())), b"", b"", 4999, "code-4999"),
]


@pytest.mark.parametrize("case", AFTER_CLOSE)
async def test_after_the_clients_close_nothing_more_is_read(
    ws_server: RunningServer, case: ClosedThen
) -> None:
    observed = ws_server.observed
    reader, writer = await open_websocket(ws_server.port)
    try:
        writer.write(case.close + case.then)
        received = await read_to_eof(reader)
        if case.later:
            writer.write(case.later)  # the server reads on until our FIN, discarding
            await writer.drain()
    finally:
        await close_writer(writer)
    frames, rest = parse_frames(received)
    assert rest == b""
    check_frames_an_endpoint_may_send(frames, from_client=False, deflate=False)
    [close] = frames  # no echo, no pong: only the answering Close
    assert close.opcode == CLOSE
    assert close_code_of(close) == case.code
    [ours], _ = parse_frames(case.close)
    assert close.payload == ours.payload  # the code and reason echoed (§5.5.1)
    await all_closed(ws_server)

    [accepted] = server_events(observed, Name.WS_UPGRADE_ACCEPTED)
    conn = accepted.conn_id
    assert server_events(observed, Name.WS_CONNECTION_FAILED) == []
    [got] = server_events(observed, Name.WS_CLOSE_RECEIVED, conn)
    [sent] = server_events(observed, Name.WS_CLOSE_SENT, conn)
    assert got.attrs["code"] == sent.attrs["code"] == case.code
    assert (got.attrs["initiated"], sent.attrs["initiated"]) == (True, False)
    [ws_closed] = server_events(observed, Name.WS_CONNECTION_CLOSED, conn)
    assert (ws_closed.attrs["code"], ws_closed.attrs["closed_by"]) == (case.code, "client")
    assert ws_closed.attrs["messages_received"] == 0
    check_server_closed_tcp_first(observed, conn)  # RFC 6455 §7.1.1: the server first
    registry = observed.metrics.registry
    labels = {"role": "server", "closed_by": "client", "code": close_code_label(case.code)}
    assert sample(registry, "handshake_lab_ws_closes_total", **labels) == 1

    await echoes(ws_server.port)
    await all_closed(ws_server)
    assert sample(registry, "handshake_lab_errors_total", role="server") == 0
    check_metrics_agree_with_events(observed)


# The other side of the close-code rows: every code a peer may send is accepted and echoed
# (§7.4.1 and the IANA registry's 1012-1013; 3000-4999 for applications).
@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 4000]
)
async def test_every_close_code_a_peer_may_send_is_echoed(
    ws_server: RunningServer, code: int
) -> None:
    reader, writer = await open_websocket(ws_server.port)
    try:
        writer.write(frame(CLOSE, close_payload(code, b"why")))
        frames, rest = parse_frames(await read_to_eof(reader))
    finally:
        await close_writer(writer)
    assert (rest, [(f.opcode, f.payload) for f in frames]) == (
        b"",
        [(CLOSE, close_payload(code, b"why"))],
    )
    await all_closed(ws_server)
    assert server_events(ws_server.observed, Name.WS_CONNECTION_FAILED) == []
    check_metrics_agree_with_events(ws_server.observed)


# The valid neighbours of the length and fragmentation rows, so that those rows fail for
# the rule they name and not for something else in their bytes.
@pytest.mark.parametrize(
    ("data", "expected", "deflate"),
    [
        pytest.param(frame(TEXT, b"x" * 126, width=2), [b"x" * 126], False, id="126-in-16-bits"),
        pytest.param(
            frame(BINARY, b"y" * 0x10000, width=8), [b"y" * 0x10000], False, id="65536-in-64-bits"
        ),
        pytest.param(
            frame(BINARY, b"z" * (LIMIT - 1), fin=False) + frame(PING, b"p") + frame(CONT, b"z"),
            [b"p", b"z" * LIMIT],
            False,
            id="exactly-the-limit-in-fragments-with-a-ping",
        ),
        pytest.param(
            frame(TEXT, b"ok \xf0\x9f", fin=False) + frame(CONT, b"\x98\x80"),
            ["ok 😀".encode()],
            False,
            id="utf8-split-in-a-4-byte-sequence",
        ),
        pytest.param(frame(PING, b"p" * 125), [b"p" * 125], False, id="ping-125-bytes"),
        pytest.param(
            frame(BINARY, deflated(bytes(LIMIT)), rsv=0b100),
            [bytes(LIMIT)],
            True,
            id="deflated-exactly-the-limit",
        ),
        # Found by tests/unit/test_fuzz_ws.py: fragments whose last symbols inflate only
        # with the bits of the flush tail (RFC 7692 §7.2.2): 4 bytes, then 10 at the tail.
        # The size counted was 4 (fixed in ws_conn.py); the size metric must say 14.
        pytest.param(
            frame(BINARY, b"", fin=False, rsv=0b100) + frame(CONT, TAIL_HEAVY),
            [b"\x04\x00" + b"\x90" * 12],
            True,
            id="deflated-fragments-inflating-at-the-tail",
        ),
    ],
)
async def test_the_valid_neighbours_of_the_rows_are_served(
    ws_server: RunningServer, data: bytes, expected: list[bytes], deflate: bool
) -> None:
    reader, writer = await open_websocket(ws_server.port, deflate=deflate)
    try:
        writer.write(data + CLOSE_1000)
        frames, rest = parse_frames(await read_to_eof(reader))
    finally:
        await close_writer(writer)
    assert rest == b""
    check_frames_an_endpoint_may_send(frames, from_client=False, deflate=deflate)
    inflater = Inflater()
    assert [inflater.message([f]) for f in frames[:-1]] == expected
    assert close_code_of(frames[-1]) == 1000
    await all_closed(ws_server)
    observed = ws_server.observed
    assert server_events(observed, Name.WS_CONNECTION_FAILED) == []
    # Each message's size, as the events (and so the size histogram) have it, is its own.
    sizes = [len(m) for f, m in zip(frames, expected, strict=False) if f.opcode != PONG]
    for direction in (Name.WS_MESSAGE_RECEIVED, Name.WS_MESSAGE_SENT):
        assert [e.attrs["bytes"] for e in server_events(observed, direction)] == sizes
    registry = observed.metrics.registry
    size_sum = sample(registry, "handshake_lab_ws_message_size_bytes_sum", direction="received")
    assert size_sum == sum(sizes)
    check_metrics_agree_with_events(observed)


# --- bad upgrades: an HTTP 4xx, then the server closes --------------------------------------
# (tests/integration/test_websocket.py has no key, version 8, HTTP/1.0, POST, a plain GET
# and a bad ticker query; these are the rest of RFC 6455 §4.2.1, with the same checks as
# the frame rows above.)

UNPADDED_KEY: Final = base64.b64encode(bytes(16)).rstrip(b"=")


def h(request: bytes, status: int, kind: str, id: str) -> object:
    return pytest.param(request, status, kind, id=id)


BAD_UPGRADES: Final = [
    # §4.2.1 step 5: "a |Sec-WebSocket-Key| header field with a base64-encoded value that,
    # when decoded, is 16 bytes in length", and only one.
    h(upgrade_request(key=b"not base64!"), 400, "ws_bad_key", "key-not-base64"),
    h(upgrade_request(key=base64.b64encode(bytes(15))), 400, "ws_bad_key", "key-15-bytes"),
    h(upgrade_request(key=base64.b64encode(bytes(17))), 400, "ws_bad_key", "key-17-bytes"),
    h(upgrade_request(key=UNPADDED_KEY), 400, "ws_bad_key", "key-without-padding"),
    h(upgrade_request(key=b""), 400, "ws_bad_key", "key-empty"),
    h(upgrade_request(extra=b"Sec-WebSocket-Key: %s\r\n" % KEY), 400, "ws_bad_key", "two-keys"),
    # §4.2.1 step 6: "a |Sec-WebSocket-Version| header field, with a value of 13"; §4.4:
    # another version gets 426 and the one we speak.
    h(upgrade_request(ws_version=None), 400, "ws_bad_version", "no-version"),
    h(upgrade_request(ws_version=b"14"), 426, "ws_unsupported_version", "version-14"),
    h(upgrade_request(ws_version=b"13, 8"), 426, "ws_unsupported_version", "version-list"),
    h(
        upgrade_request(extra=b"Sec-WebSocket-Version: 8\r\n"),
        426,
        "ws_unsupported_version",
        "two-version-fields",
    ),
    # §4.2.1 steps 3-4: "Upgrade: websocket" and "Connection: Upgrade". Without the
    # first, a WebSocket path says what it wants (426, RFC 9110 §15.5.22).
    h(upgrade_request(upgrade=None), 426, "ws_not_upgrade", "no-upgrade-field"),
    h(upgrade_request(upgrade=b"h2c"), 426, "ws_not_upgrade", "upgrade-to-h2c"),
    h(upgrade_request(connection=None), 400, "ws_not_upgrade", "no-connection-field"),
    h(upgrade_request(connection=b"keep-alive"), 400, "ws_not_upgrade", "connection-keep-alive"),
    # §4.1 step 2 / §4.2.1 step 1: "An HTTP/1.1 or higher GET request".
    h(upgrade_request(method=b"PUT"), 400, "ws_bad_method", "put"),
    h(upgrade_request(method=b"DELETE"), 400, "ws_bad_method", "delete"),
    h(upgrade_request(method=b"HEAD"), 400, "ws_bad_method", "head"),
    h(
        upgrade_request(version=b"HTTP/1.0", connection=b"keep-alive, Upgrade"),
        400,
        "ws_bad_version",
        "http-1.0-keep-alive",
    ),
    # An upgrade GET carries no body; the bytes after its head are WebSocket frames.
    h(
        upgrade_request(extra=b"Content-Length: 5\r\n", body=b"hello"),
        400,
        "ws_bad_request",
        "get-with-a-body",
    ),
    # Frames sent right behind a refused upgrade are not read as a second request.
    h(
        upgrade_request(key=b"bad") + frame(TEXT, b"early") + frame(CLOSE, close_payload(1000)),
        400,
        "ws_bad_key",
        "refused-with-frames-behind",
    ),
]


@pytest.mark.parametrize(("request_bytes", "status", "kind"), BAD_UPGRADES)
async def test_a_bad_upgrade_gets_its_status_then_a_clean_tcp_close(
    ws_server: RunningServer, request_bytes: bytes, status: int, kind: str
) -> None:
    observed = ws_server.observed
    reader, writer = await asyncio.open_connection("127.0.0.1", ws_server.port)
    try:
        writer.write(request_bytes)
        received = await read_to_eof(reader)  # the server's FIN (a reset would raise)
    finally:
        await close_writer(writer)
    head, _, body = received.partition(b"\r\n\r\n")
    fields = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    )
    assert status_of(head) == status
    assert fields[b"connection"] == b"close"
    if request_bytes.startswith(b"HEAD "):
        assert body == b""
    else:
        assert len(body) == int(fields[b"content-length"])  # one response, nothing after it
    if status == 426:
        assert (fields[b"sec-websocket-version"], fields[b"upgrade"]) == (b"13", b"websocket")
    await all_closed(ws_server)

    [refused] = server_events(observed, Name.WS_UPGRADE_REFUSED)
    assert (refused.attrs["status"], refused.attrs["kind"]) == (status, kind)
    conn = refused.conn_id
    [response] = server_events(observed, Name.RESPONSE_SENT, conn)
    assert (response.attrs["status"], response.attrs["keep_alive"]) == (status, False)
    assert server_events(observed, Name.WS_UPGRADE_ACCEPTED) == []
    check_server_closed_tcp_first(observed, conn)
    registry = observed.metrics.registry
    assert sample(registry, "handshake_lab_ws_upgrades_total", role="server", outcome=kind) == 1
    assert sample(registry, "handshake_lab_errors_total", role="server", kind=kind) == 1

    await echoes(ws_server.port)
    await all_closed(ws_server)
    assert sample(registry, "handshake_lab_errors_total", role="server") == 1
    check_metrics_agree_with_events(observed)


# --- a short live fuzz: random frame sequences against the running server ---------------
# WS_FUZZ_LIVE_SEQUENCES=5000 WS_FUZZ_SEED=... for a longer run (docs/reliability.md).

LIVE_SEQUENCES: Final = int(os.environ.get("WS_FUZZ_LIVE_SEQUENCES", "300"))
LIVE_SEED: Final = int(os.environ.get("WS_FUZZ_SEED", "6455"))
LIVE_CONCURRENCY: Final = 16


def random_text(rng: random.Random, size: int) -> bytes:
    alphabet = "aé✓😀\x00 "
    return "".join(rng.choice(alphabet) for _ in range(size)).encode()


def random_payload(rng: random.Random, opcode: int) -> bytes:
    size = rng.choice([0, 1, 2, 5, 40, 125, 126, 127, 300, rng.randrange(2000)])
    if opcode == CLOSE:
        return rng.choice(
            [
                b"",
                b"\x03",
                close_payload(rng.choice([1000, 1001, 1003, 1011, 3000, 4999]), b"ok"),
                close_payload(rng.randrange(0x10000), random_text(rng, 3)),
                close_payload(1000, b"\xff"),
            ]
        )
    if opcode in (PING, PONG):
        size = min(size, 125) if rng.random() < 0.9 else size
    if opcode == TEXT and rng.random() < 0.8:
        return random_text(rng, size)[:size]  # sometimes cut inside a character
    return rng.randbytes(size)


def random_message(rng: random.Random, deflate: bool) -> bytes:
    """A valid message, maybe fragmented, maybe compressed, with control frames between."""
    opcode = rng.choice([TEXT, BINARY])
    payload = random_text(rng, rng.randrange(300)) if opcode == TEXT else rng.randbytes(300)
    compressed = deflate and rng.random() < 0.5
    wire = deflated(payload) if compressed else payload
    cuts = sorted(rng.sample(range(len(wire) + 1), k=min(rng.randrange(3), len(wire) + 1)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    out = b""
    for i, piece in enumerate(pieces):
        if i and rng.random() < 0.3:
            out += frame(PING, rng.randbytes(4))
        last = i == len(pieces) - 1
        rsv = 0b100 if compressed and i == 0 else 0
        out += frame(opcode if i == 0 else CONT, piece, fin=last, rsv=rsv, mask=rng.randbytes(4))
    return out


def random_frame(rng: random.Random) -> bytes:
    """One frame with every field drawn, most of them right, some of them not."""
    opcode = rng.choices(
        [TEXT, BINARY, CONT, PING, PONG, CLOSE, rng.choice([0x3, 0x7, 0xB, 0xF])],
        weights=[25, 15, 15, 10, 5, 8, 2],
    )[0]
    payload = random_payload(rng, opcode)
    width = None if rng.random() < 0.95 else rng.choice([0, 2, 8])
    if width == 0 and len(payload) > 125:
        width = None
    lie = rng.random()
    length = None
    if lie < 0.03:  # a length that is not the payload's
        length = max(0, len(payload) + rng.randint(-3, 3))
    elif lie < 0.05:  # a message over the limit, the header alone sent
        length, width = LIMIT + rng.randint(1, 1000), None
    return frame(
        opcode,
        payload,
        fin=rng.random() < 0.8,
        rsv=0 if rng.random() < 0.9 else rng.randrange(8),
        mask=rng.randbytes(4) if rng.random() < 0.97 else None,
        length=length,
        width=width,
    )


def random_sequence(rng: random.Random, deflate: bool) -> bytes:
    """Valid messages and random frames, maybe mutated, maybe ending in a Close."""
    data = b"".join(
        random_message(rng, deflate) if rng.random() < 0.65 else random_frame(rng)
        for _ in range(rng.randint(1, 6))
    )
    mutation = rng.random()
    if data and mutation < 0.15:  # one bit flipped
        at = rng.randrange(len(data))
        data = data[:at] + bytes([data[at] ^ 1 << rng.randrange(8)]) + data[at + 1 :]
    elif data and mutation < 0.2:  # one byte gone
        at = rng.randrange(len(data))
        data = data[:at] + data[at + 1 :]
    elif mutation < 0.25:  # one byte more
        at = rng.randrange(len(data) + 1)
        data = data[:at] + rng.randbytes(1) + data[at:]
    elif data and mutation < 0.3:  # cut short
        data = data[: rng.randrange(len(data))]
    if rng.random() < 0.6:
        data += frame(CLOSE, close_payload(1000), mask=rng.randbytes(4))
    return data


Answer = tuple[int, object]  # (opcode, payload) of a message or pong, (CLOSE, code)


def core_verdict(data: bytes, deflate: bool) -> tuple[list[Answer], tuple[str, int]]:
    """What the server must send for `data` followed by our FIN, from the sans-I/O core
    alone, and how the WebSocket ends: (who sent the first Close, its code)."""
    extension = None
    if deflate:
        negotiated = negotiate_deflate(["permessage-deflate"], lambda: BoundedDeflate(LIMIT))
        assert negotiated is not None
        extension = negotiated[0]
    core = WebSocketConnection(client=False, limits=LIMITS, now=0.0, deflate=extension)
    core.receive_data(data, 0.0)
    answers: list[Answer] = []
    try:
        while (event := core.next_event(0.0)) is not NEED_DATA:
            if isinstance(event, MessageReceived):
                text = isinstance(event.data, str)
                payload = event.data.encode() if isinstance(event.data, str) else event.data
                answers.append((TEXT if text else BINARY, payload))
            elif isinstance(event, PingReceived):
                answers.append((PONG, event.payload))
            elif isinstance(event, CloseReceived):
                answers.append((CLOSE, event.code))
                return answers, ("client", event.code)
    except RemoteProtocolError as error:
        answers.append((CLOSE, error.close_code))
        return answers, ("server", error.close_code)
    return answers, ("client", 1006)  # our FIN, with no Close frame (§7.1.5)


@dataclass(frozen=True, slots=True)
class Sequence:
    data: bytes
    deflate: bool
    delivery: str  # "after" the 101, "with" the upgrade request, or "split" into writes
    cuts: tuple[int, ...] = ()  # where "split" writes end


async def fuzz_one(port: int, sequence: Sequence) -> list[Answer]:
    """Send the sequence and our FIN; the server's answers, after checking they are well
    formed."""
    data, deflate = sequence.data, sequence.deflate
    early = data if sequence.delivery == "with" else b""
    reader, writer = await open_websocket(port, deflate=deflate, early=early)
    try:
        if sequence.delivery == "after":
            writer.write(data)
        elif sequence.delivery == "split":
            for start, end in itertools.pairwise([0, *sequence.cuts, len(data)]):
                writer.write(data[start:end])
                await writer.drain()
                await asyncio.sleep(0.001)  # (apart: each a read of its own, most likely)
        writer.write_eof()
        received = await read_to_eof(reader)  # a reset raises
    finally:
        await close_writer(writer)
    frames, rest = parse_frames(received)
    assert rest == b""
    check_frames_an_endpoint_may_send(frames, from_client=False, deflate=deflate)
    inflater = Inflater()
    answers: list[Answer] = []
    for f in frames:
        if f.opcode == CLOSE:
            answers.append((CLOSE, close_code_of(f)))
        elif f.opcode == PONG:
            answers.append((PONG, f.payload))
        else:
            answers.append((f.opcode, inflater.message([f])))
    return answers


async def test_live_fuzz_random_frame_sequences(ws_server: RunningServer) -> None:
    rng = random.Random(LIVE_SEED)
    sequences = []
    for _ in range(LIVE_SEQUENCES):
        deflate = rng.random() < 0.3
        data = random_sequence(rng, deflate)
        delivery = rng.choice(["after", "after", "with", "split"])
        cuts = sorted(rng.sample(range(len(data) + 1), min(3, len(data) + 1)))
        sequences.append(Sequence(data, deflate, delivery, tuple(cuts)))
    gate = asyncio.Semaphore(LIVE_CONCURRENCY)
    mismatches: list[str] = []

    async def one(index: int, sequence: Sequence) -> None:
        expected, _ = core_verdict(sequence.data, sequence.deflate)
        async with gate:
            try:
                got = await fuzz_one(ws_server.port, sequence)
            except (AssertionError, OSError, TimeoutError) as exc:
                got = [(-1, repr(exc))]
        if got != expected:
            mismatches.append(
                f"seed {LIVE_SEED} #{index} {sequence!r:.2000}:"
                f" server {got!r:.300}, core {expected!r:.300}"
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(i, sequence) for i, sequence in enumerate(sequences)))
    elapsed = time.perf_counter() - started
    assert mismatches == [], "\n".join(mismatches[:5])
    await all_closed(ws_server)
    observed = ws_server.observed
    registry = observed.metrics.registry
    # The closes the core predicts are the closes the metrics counted.
    endings = Counter(core_verdict(s.data, s.deflate)[1] for s in sequences)
    labelled: Counter[tuple[str, str]] = Counter()
    for (closed_by, code), count in endings.items():
        labelled[closed_by, close_code_label(code)] += count
    for (closed_by, label), count in labelled.items():
        labels = {"role": "server", "closed_by": closed_by, "code": label}
        assert sample(registry, "handshake_lab_ws_closes_total", **labels) == count
    assert sample(registry, "handshake_lab_ws_closes_total", role="server") == len(sequences)
    failures = sum(count for (by, _code), count in endings.items() if by == "server")
    assert len(server_events(observed, Name.WS_CONNECTION_FAILED)) == failures
    assert server_events(observed, Name.CONNECTION_FAILED) == []  # no reset, no timeout
    # Peers chose thousands of codes and faults: the label values stay a small fixed set.
    codes, kinds = set(), set()
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == "handshake_lab_ws_closes_total":
                codes.add(s.labels["code"])
            elif s.name == "handshake_lab_errors_total":
                kinds.add(s.labels["kind"])
    assert codes <= {str(code) for code in range(1000, 1016)} | {"3xxx", "4xxx", "other"}
    assert kinds <= set(ERROR_KINDS.values())
    await echoes(ws_server.port)
    await all_closed(ws_server)
    check_metrics_agree_with_events(observed)
    print(
        f"live fuzz: {len(sequences)} sequences, seed {LIVE_SEED}, {elapsed:.2f} s,"
        f" endings {sorted(endings.items())}"
    )
