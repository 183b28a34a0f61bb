"""IPv4/TCP segments as the wire sees them: decoding, checksums, and per-flow numbering.

Theory of operation: the wire reads raw IPv4 packets from the TUN devices. `decode_packet`
turns one into an `IPv4Packet` (and, for TCP, a frozen `Segment`: ports, flags, seq, ack,
window, payload and the handshake options). Nothing here does I/O or reads a clock, so
everything is tested on bytes.

`FlowTracker` watches segments in the order the senders sent them and answers, per segment,
what Wireshark would show beside it: the sequence and acknowledgement numbers relative to
each direction's initial sequence number (ISN), and whether the sender has sent this part
of its sequence space before (a retransmission). A new SYN with a new ISN on a 4-tuple seen
before starts a new connection there, so relative numbers restart at 0.

`syn_packet` (and `tcp_packet` for any flags and payload) builds a valid IPv4/TCP packet,
checksums included, for scenarios that inject segments from addresses no socket owns (a
SYN flood inside the lab) and for tests.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Final

__all__ = [
    "FlowInfo",
    "FlowTracker",
    "IPv4Packet",
    "MalformedPacket",
    "Segment",
    "TCPFlags",
    "decode_packet",
    "decode_segment",
    "internet_checksum",
    "payload_preview",
    "syn_packet",
    "tcp_checksum",
    "tcp_packet",
]

PROTO_TCP: Final = 6
_SEQ_SPACE: Final = 1 << 32


class MalformedPacket(ValueError):
    """The bytes are not a well-formed IPv4 packet (or its TCP header is cut short)."""


class TCPFlags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


# The order the lab names flags in ("SYN,ACK", "PSH,ACK", "FIN,ACK"): how people say them,
# not the bit order.
_FLAG_ORDER: Final = (
    TCPFlags.SYN,
    TCPFlags.FIN,
    TCPFlags.RST,
    TCPFlags.PSH,
    TCPFlags.ACK,
    TCPFlags.URG,
    TCPFlags.ECE,
    TCPFlags.CWR,
)


def flag_names(flags: int) -> str:
    """`0x12` → `"SYN,ACK"`; no flags → `""`."""
    return ",".join(str(f.name) for f in _FLAG_ORDER if flags & f)


@dataclass(frozen=True, slots=True)
class Segment:
    """One TCP segment with the addresses of the IPv4 packet that carried it."""

    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int  # the raw field; meaningful only when ACK is set (see `ack_number`)
    flags: TCPFlags
    window: int  # the raw 16-bit field, before any window scaling
    payload: bytes
    checksum: int
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    timestamps: tuple[int, int] | None = None

    @property
    def flag_names(self) -> str:
        return flag_names(self.flags)

    @property
    def ack_number(self) -> int | None:
        return self.ack if self.flags & TCPFlags.ACK else None

    @property
    def seq_len(self) -> int:
        """How much sequence space the segment consumes: payload, plus one each for SYN, FIN."""
        return (
            len(self.payload)
            + (1 if self.flags & TCPFlags.SYN else 0)
            + (1 if self.flags & TCPFlags.FIN else 0)
        )

    @property
    def is_pure_ack(self) -> bool:
        """Only ACK set, and no payload: the third segment of a handshake, a window update."""
        return self.flags & ~TCPFlags.PSH == TCPFlags.ACK and not self.payload

    @property
    def source(self) -> str:
        return f"{self.src}:{self.sport}"

    @property
    def destination(self) -> str:
        return f"{self.dst}:{self.dport}"


@dataclass(frozen=True, slots=True)
class IPv4Packet:
    src: str
    dst: str
    protocol: int
    ttl: int
    header: bytes
    body: bytes  # what follows the IP header, trimmed to the packet's total length
    is_fragment: bool
    segment: Segment | None  # the TCP segment, when it is one (and not a fragment)


def internet_checksum(data: bytes) -> int:
    """The 16-bit ones' complement of the ones' complement sum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_checksum(src: str, dst: str, tcp: bytes) -> int:
    """The checksum of a TCP header and payload with the IPv4 pseudo-header (RFC 793 §3.1).

    Over a segment whose checksum field is filled in, a correct one gives 0."""
    pseudo = (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack("!BBH", 0, PROTO_TCP, len(tcp))
    )
    return internet_checksum(pseudo + tcp)


def decode_packet(packet: bytes) -> IPv4Packet:
    """Decode one raw IPv4 packet (as read from a TUN device with IFF_NO_PI).

    Raises:
        MalformedPacket: not IPv4, or a header longer than the packet.
    """
    if len(packet) < 20:
        raise MalformedPacket(f"{len(packet)} bytes is shorter than an IPv4 header")
    version, ihl = packet[0] >> 4, (packet[0] & 0x0F) * 4
    if version != 4:
        raise MalformedPacket(f"IP version {version}, not 4")
    total_length = struct.unpack_from("!H", packet, 2)[0]
    if ihl < 20 or total_length < ihl or total_length > len(packet):
        raise MalformedPacket(
            f"header length {ihl} / total length {total_length} do not fit {len(packet)} bytes"
        )
    frag = struct.unpack_from("!H", packet, 6)[0]
    is_fragment = bool(frag & 0x2000) or (frag & 0x1FFF) != 0  # MF set, or an offset
    ttl, protocol = packet[8], packet[9]
    src = _dotted(packet[12:16])
    dst = _dotted(packet[16:20])
    body = packet[ihl:total_length]
    segment = None
    if protocol == PROTO_TCP and not is_fragment:
        segment = _decode_tcp(src, dst, body)
    return IPv4Packet(src, dst, protocol, ttl, packet[:ihl], body, is_fragment, segment)


def _dotted(address: bytes) -> str:
    # Several times faster than str(ipaddress.IPv4Address(...)); runs for every packet.
    return f"{address[0]}.{address[1]}.{address[2]}.{address[3]}"


def decode_segment(packet: bytes) -> Segment | None:
    """The TCP segment in a raw IPv4 packet; None when it carries something else."""
    return decode_packet(packet).segment


def _decode_tcp(src: str, dst: str, tcp: bytes) -> Segment:
    if len(tcp) < 20:
        raise MalformedPacket(f"{len(tcp)} bytes is shorter than a TCP header")
    sport, dport, seq, ack, offset_byte, flags, window, checksum = struct.unpack_from(
        "!HHIIBBHH", tcp
    )
    offset = (offset_byte >> 4) * 4
    if offset < 20 or offset > len(tcp):
        raise MalformedPacket(f"TCP data offset {offset} does not fit {len(tcp)} bytes")
    mss, wscale, sack_permitted, timestamps = _decode_options(tcp[20:offset])
    return Segment(
        src=src,
        dst=dst,
        sport=sport,
        dport=dport,
        seq=seq,
        ack=ack,
        flags=TCPFlags(flags),
        window=window,
        payload=bytes(tcp[offset:]),
        checksum=checksum,
        mss=mss,
        wscale=wscale,
        sack_permitted=sack_permitted,
        timestamps=timestamps,
    )


def _decode_options(raw: bytes) -> tuple[int | None, int | None, bool, tuple[int, int] | None]:
    """MSS, window scale, SACK permitted and timestamps; anything else is skipped, and a
    truncated option ends the walk (the segment is still worth showing)."""
    mss: int | None = None
    wscale: int | None = None
    sack_permitted = False
    timestamps: tuple[int, int] | None = None
    i = 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:  # end of option list
            break
        if kind == 1:  # no-op padding
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2 or i + raw[i + 1] > len(raw):
            break
        length = raw[i + 1]
        value = raw[i + 2 : i + length]
        if kind == 2 and length == 4:
            mss = int.from_bytes(value, "big")
        elif kind == 3 and length == 3:
            wscale = value[0]
        elif kind == 4 and length == 2:
            sack_permitted = True
        elif kind == 8 and length == 10:
            timestamps = (int.from_bytes(value[:4], "big"), int.from_bytes(value[4:], "big"))
        i += length
    return mss, wscale, sack_permitted, timestamps


def payload_preview(payload: bytes, limit: int = 40) -> str | None:
    """The payload's first line when it is printable ASCII ("GET / HTTP/1.0"), at most
    `limit` characters; None for no payload or binary (TLS records, WebSocket frames)."""
    line = payload.split(b"\n", 1)[0].rstrip(b"\r")[:limit]
    if not line or any(b < 0x20 or b > 0x7E for b in line):
        return None
    return line.decode("ascii")


@dataclass(frozen=True, slots=True)
class FlowInfo:
    """What the tracker says about one segment."""

    rel_seq: int | None
    rel_ack: int | None
    retransmission: bool
    keepalive: bool = False  # a TCP keepalive probe, as Wireshark's tcp.analysis.keep_alive


@dataclass(slots=True)
class _Direction:
    isn: int | None = None
    next_seq: int | None = None  # one past the highest sequence number sent so far


def _relative(number: int, isn: int | None) -> int | None:
    """`number` counted from `isn`; None when unknown or "before" it (a late segment of
    an earlier connection on a reused 4-tuple: only its absolute number means anything)."""
    if isn is None:
        return None
    relative = (number - isn) % _SEQ_SPACE
    return relative if relative < _SEQ_SPACE // 2 else None


def _before(a: int, b: int) -> bool:
    """a < b in sequence-number arithmetic (RFC 1982 style, modulo 2**32)."""
    return 0 < (b - a) % _SEQ_SPACE < _SEQ_SPACE // 2


@dataclass
class FlowTracker:
    """ISNs and retransmissions per direction of each 4-tuple, in the order segments were sent.

    Feed it every segment a sender sent, dropped or not: a retransmission is the *sender*
    sending a sequence range (or SYN/FIN) again, whatever the wire did with the first copy.
    """

    _directions: dict[tuple[str, int, str, int], _Direction] = field(default_factory=dict)

    def observe(self, seg: Segment) -> FlowInfo:
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        reverse_key = (seg.dst, seg.dport, seg.src, seg.sport)
        mine = self._directions.setdefault(key, _Direction())
        syn = bool(seg.flags & TCPFlags.SYN)
        if syn and seg.seq != mine.isn:
            # A new ISN: a new connection on this 4-tuple (or the first we see). A plain SYN
            # starts it, so the answer's ISN is unknown again; a SYN-ACK only sets its own.
            mine.isn, mine.next_seq = seg.seq, None
            if not seg.flags & TCPFlags.ACK:
                self._directions[reverse_key] = _Direction()
        theirs = self._directions.get(reverse_key)

        # A keepalive probe (RFC 9293 §3.8.4) re-sends the last byte already sent (or
        # nothing) at next - 1: the peer must answer with an ACK. Not a retransmission.
        keepalive = (
            len(seg.payload) <= 1
            and not seg.flags & (TCPFlags.SYN | TCPFlags.FIN | TCPFlags.RST)
            and mine.next_seq is not None
            and (seg.seq + 1) % _SEQ_SPACE == mine.next_seq
        )
        retransmission = False
        if seg.seq_len and not keepalive:
            end = (seg.seq + seg.seq_len) % _SEQ_SPACE
            if mine.next_seq is not None and _before(seg.seq, mine.next_seq):
                retransmission = True
            if mine.next_seq is None or _before(mine.next_seq, end):
                mine.next_seq = end

        rel_seq = _relative(seg.seq, mine.isn)
        rel_ack = None
        if seg.flags & TCPFlags.ACK and theirs is not None:
            rel_ack = _relative(seg.ack, theirs.isn)
        return FlowInfo(rel_seq, rel_ack, retransmission, keepalive)

    def isn(self, src: str, sport: int, dst: str, dport: int) -> int | None:
        """The ISN of one direction, when its SYN was seen."""
        direction = self._directions.get((src, sport, dst, dport))
        return direction.isn if direction else None


def tcp_packet(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    seq: int,
    *,
    ack: int = 0,
    flags: int = TCPFlags.ACK,
    payload: bytes = b"",
    window: int = 64240,
    options: bytes = b"",
    ttl: int = 64,
    ident: int = 0,
) -> bytes:
    """A valid IPv4/TCP packet, checksums filled in (`options` padded to 4 bytes)."""
    options += b"\0" * (-len(options) % 4)
    tcp = struct.pack(
        "!HHIIBBHHH",
        sport,
        dport,
        seq % _SEQ_SPACE,
        ack % _SEQ_SPACE,
        (20 + len(options)) // 4 << 4,
        flags,
        window,
        0,
        0,
    )
    tcp += options + payload
    checksum = tcp_checksum(src, dst, tcp)
    tcp = tcp[:16] + struct.pack("!H", checksum) + tcp[18:]
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(tcp),
        ident,
        0x4000,  # don't fragment, as Linux sets it
        ttl,
        PROTO_TCP,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + tcp


def syn_packet(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    seq: int,
    *,
    window: int = 64240,
    mss: int = 1460,
    ttl: int = 64,
    ident: int = 0,
) -> bytes:
    """A valid IPv4/TCP SYN (with an MSS option), checksums filled in."""
    return tcp_packet(
        src,
        sport,
        dst,
        dport,
        seq,
        flags=TCPFlags.SYN,
        window=window,
        options=struct.pack("!BBH", 2, 4, mss),
        ttl=ttl,
        ident=ident,
    )
