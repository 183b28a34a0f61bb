"""netlab.segments: decoding real packets (captured from the lab wire), checksums, flags,
relative numbers and retransmissions, without root."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from netlab.pcap import read_pcap
from netlab.segments import (
    FlowTracker,
    MalformedPacket,
    Segment,
    TCPFlags,
    decode_packet,
    decode_segment,
    flag_names,
    internet_checksum,
    payload_preview,
    syn_packet,
    tcp_checksum,
    tcp_packet,
)

WIRE = Path(__file__).parent.parent / "data" / "wire"


def packets(name: str) -> list[bytes]:
    return [packet for _, packet in read_pcap((WIRE / name).read_bytes())]


def segments(name: str) -> list[Segment]:
    found = [decode_segment(p) for p in packets(name)]
    assert all(s is not None for s in found)
    return [s for s in found if s is not None]


def test_http10_capture_decodes_as_tshark_shows_it() -> None:
    segs = segments("http10.pcap")
    assert [s.flag_names for s in segs] == [
        "SYN",
        "SYN,ACK",
        "ACK",
        "PSH,ACK",
        "ACK",
        "PSH,ACK",
        "FIN,ACK",
        "ACK",
        "FIN,ACK",
        "ACK",
    ]
    assert [s.src for s in segs[:3]] == ["10.77.0.1", "10.77.0.2", "10.77.0.1"]
    syn, syn_ack, ack = segs[:3]
    assert (syn.sport, syn.dport) == (syn_ack.dport, syn_ack.sport)
    assert syn.dport == 8080
    assert syn.ack_number is None
    assert syn_ack.ack_number == (syn.seq + 1) % 2**32  # L1: ack = x + 1
    assert ack.ack_number == (syn_ack.seq + 1) % 2**32  # ack = y + 1
    assert (syn.mss, syn.wscale, syn.sack_permitted) == (1460, 10, True)
    assert syn.timestamps is not None
    assert syn.timestamps[1] == 0
    assert [len(s.payload) for s in segs] == [0, 0, 0, 35, 0, 60, 0, 0, 0, 0]
    assert payload_preview(segs[3].payload) == "GET / HTTP/1.0"
    assert payload_preview(segs[5].payload) == "HTTP/1.1 200 OK"
    assert segs[2].is_pure_ack
    assert not segs[3].is_pure_ack
    assert not segs[6].is_pure_ack


def test_kernel_checksums_verify() -> None:
    for packet in packets("http10.pcap") + packets("synack_retransmitted.pcap"):
        ip = decode_packet(packet)
        assert internet_checksum(ip.header) == 0
        assert tcp_checksum(ip.src, ip.dst, ip.body) == 0
        # and a flipped payload or header bit is noticed
        broken = bytearray(ip.body)
        broken[-1] ^= 0x01
        assert tcp_checksum(ip.src, ip.dst, bytes(broken)) != 0


def test_relative_numbers_match_wireshark() -> None:
    tracker = FlowTracker()
    infos = [tracker.observe(s) for s in segments("http10.pcap")]
    # What `tshark -T fields -e tcp.seq -e tcp.ack` prints for the same file.
    assert [(i.rel_seq, i.rel_ack) for i in infos] == [
        (0, None),
        (0, 1),
        (1, 1),
        (1, 1),
        (1, 36),
        (1, 36),
        (61, 36),
        (36, 61),
        (36, 62),
        (62, 37),
    ]
    assert not any(i.retransmission for i in infos)


def test_resent_synack_is_a_retransmission() -> None:
    segs = segments("synack_retransmitted.pcap")
    assert [s.flag_names for s in segs] == ["SYN", "SYN,ACK", "SYN,ACK", "ACK"]
    tracker = FlowTracker()
    infos = [tracker.observe(s) for s in segs]
    assert segs[1].seq == segs[2].seq
    assert [i.retransmission for i in infos] == [False, False, True, False]
    assert infos[2].rel_seq == 0


def seg(
    src: str = "10.77.0.1",
    sport: int = 40000,
    seq: int = 0,
    flags: TCPFlags = TCPFlags.ACK,
    ack: int = 0,
    payload: bytes = b"",
) -> Segment:
    dst, dport = ("10.77.0.2", 8080) if src == "10.77.0.1" else ("10.77.0.1", 40000)
    if src != "10.77.0.1":
        sport = 8080
    return Segment(src, dst, sport, dport, seq, ack, flags, 512, payload, 0)


def test_new_syn_on_a_reused_four_tuple_restarts_relative_numbers() -> None:
    tracker = FlowTracker()
    tracker.observe(seg(seq=1000, flags=TCPFlags.SYN))
    tracker.observe(seg("10.77.0.2", seq=5000, ack=1001, flags=TCPFlags.SYN | TCPFlags.ACK))
    assert tracker.observe(seg(seq=1001, ack=5001)).rel_ack == 1
    # The same ports again (TIME_WAIT reuse), a new ISN: a new connection.
    again = tracker.observe(seg(seq=777_000, flags=TCPFlags.SYN))
    assert (again.rel_seq, again.retransmission) == (0, False)
    # The server's ISN is unknown until its new SYN-ACK: its rel_seq is None, not stale.
    early = tracker.observe(seg("10.77.0.2", seq=5000, ack=777_001))
    assert (early.rel_seq, early.rel_ack) == (None, 1)
    answer = tracker.observe(
        seg("10.77.0.2", seq=9000, ack=777_001, flags=TCPFlags.SYN | TCPFlags.ACK)
    )
    assert (answer.rel_seq, answer.rel_ack, answer.retransmission) == (0, 1, False)
    assert tracker.isn("10.77.0.2", 8080, "10.77.0.1", 40000) == 9000
    # A late segment of the old connection: "before" the new ISNs, so no relative numbers.
    late = tracker.observe(seg(seq=1001, ack=5001))
    assert (late.rel_seq, late.rel_ack) == (None, None)


def test_retransmissions_of_data_syn_and_fin() -> None:
    tracker = FlowTracker()
    assert not tracker.observe(seg(seq=10, flags=TCPFlags.SYN)).retransmission
    assert tracker.observe(seg(seq=10, flags=TCPFlags.SYN)).retransmission  # SYN again
    assert not tracker.observe(seg(seq=11, payload=b"a" * 100)).retransmission
    assert not tracker.observe(seg(seq=111, payload=b"b" * 100)).retransmission
    assert tracker.observe(seg(seq=11, payload=b"a" * 100)).retransmission
    assert tracker.observe(seg(seq=61, payload=b"x" * 100)).retransmission  # overlaps
    # Pure ACKs (even duplicates) and keep-alive probes consume nothing: never marked.
    assert not tracker.observe(seg(seq=211)).retransmission
    assert not tracker.observe(seg(seq=211)).retransmission
    assert not tracker.observe(seg(seq=210)).retransmission
    assert not tracker.observe(seg(seq=211, flags=TCPFlags.FIN | TCPFlags.ACK)).retransmission
    assert tracker.observe(seg(seq=211, flags=TCPFlags.FIN | TCPFlags.ACK)).retransmission


def test_keepalive_probes_are_one_below_the_next_byte() -> None:
    tracker = FlowTracker()
    tracker.observe(seg(seq=10, flags=TCPFlags.SYN))
    assert not tracker.observe(seg(seq=11, payload=b"a" * 40)).keepalive  # next byte: 51
    probe = tracker.observe(seg(seq=50))  # nothing, at next - 1 (Linux's probe)
    assert probe.keepalive
    assert not probe.retransmission
    one_byte = tracker.observe(seg(seq=50, payload=b"a"))  # the last byte again (BSD's)
    assert one_byte.keepalive
    assert not one_byte.retransmission
    assert not tracker.observe(seg(seq=51)).keepalive  # an ordinary ACK
    assert not tracker.observe(seg(seq=49)).keepalive  # further back: not a probe
    assert not tracker.observe(seg(seq=50, payload=b"ab")).keepalive  # data: a retransmission
    assert not tracker.observe(seg(seq=50, flags=TCPFlags.FIN | TCPFlags.ACK)).keepalive
    assert not FlowTracker().observe(seg(seq=50)).keepalive  # nothing sent yet to be below


def test_no_syn_seen_means_no_relative_numbers() -> None:
    info = FlowTracker().observe(seg(seq=123, ack=456, payload=b"mid-stream"))
    assert (info.rel_seq, info.rel_ack, info.retransmission) == (None, None, False)


def test_relative_numbers_wrap_around() -> None:
    tracker = FlowTracker()
    tracker.observe(seg(seq=2**32 - 1, flags=TCPFlags.SYN))
    info = tracker.observe(seg(seq=0, payload=b"x"))
    assert (info.rel_seq, info.retransmission) == (1, False)
    info = tracker.observe(seg(seq=1, payload=b"y"))
    assert (info.rel_seq, info.retransmission) == (2, False)
    assert tracker.observe(seg(seq=0, payload=b"x")).retransmission


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (0x02, "SYN"),
        (0x12, "SYN,ACK"),
        (0x10, "ACK"),
        (0x18, "PSH,ACK"),
        (0x11, "FIN,ACK"),
        (0x14, "RST,ACK"),
        (0x04, "RST"),
        (0x19, "FIN,PSH,ACK"),
        (0xC2, "SYN,ECE,CWR"),
        (0x30, "ACK,URG"),
        (0x00, ""),
    ],
)
def test_flag_names(flags: int, names: str) -> None:
    assert flag_names(flags) == names


def test_syn_packet_is_valid() -> None:
    packet = syn_packet("10.77.0.123", 43210, "10.77.0.2", 8080, seq=2**32 + 5)
    ip = decode_packet(packet)
    assert (ip.src, ip.dst, ip.protocol, ip.ttl, ip.is_fragment) == (
        "10.77.0.123",
        "10.77.0.2",
        6,
        64,
        False,
    )
    assert internet_checksum(ip.header) == 0
    assert tcp_checksum(ip.src, ip.dst, ip.body) == 0
    segment = ip.segment
    assert segment is not None
    assert (segment.sport, segment.dport, segment.seq, segment.flag_names) == (
        43210,
        8080,
        5,
        "SYN",
    )
    assert (segment.mss, segment.payload, segment.window) == (1460, b"", 64240)


def test_checksum_known_answer() -> None:
    # RFC 1071 §3's example: the words 0001 f203 f4f5 f6f7 sum to 0xddf2 (complement 0x220d).
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert internet_checksum(b"\x01") == ~0x0100 & 0xFFFF  # odd length: padded with zero


def test_non_tcp_and_fragments_have_no_segment() -> None:
    udp = bytearray(syn_packet("10.77.0.1", 1, "10.77.0.2", 2, 0))
    udp[9] = 17
    assert decode_segment(bytes(udp)) is None
    fragment = bytearray(syn_packet("10.77.0.1", 1, "10.77.0.2", 2, 0))
    fragment[6:8] = struct.pack("!H", 0x2000)  # more fragments follow
    assert decode_packet(bytes(fragment)).is_fragment
    assert decode_segment(bytes(fragment)) is None


def test_trailing_bytes_beyond_total_length_are_ignored() -> None:
    packet = syn_packet("10.77.0.1", 1, "10.77.0.2", 2, 0)
    segment = decode_segment(packet + b"\0" * 6)  # link padding
    assert segment is not None
    assert segment.payload == b""


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"\x45" + b"\0" * 10, "shorter than an IPv4 header"),
        (b"\x60" + b"\0" * 39, "IP version 6, not 4"),
        (b"\x45\0\x00\x50" + b"\0" * 36, "do not fit 40 bytes"),
        (b"\x4f\0\x00\x14" + b"\0" * 16, "do not fit"),
        (
            bytes.fromhex("4500001c000040004006") + b"\0" * 10 + b"\0" * 8,
            "shorter than a TCP header",
        ),
    ],
)
def test_malformed_packets(packet: bytes, message: str) -> None:
    with pytest.raises(MalformedPacket, match=message):
        decode_packet(packet)


def test_bad_tcp_data_offset() -> None:
    packet = bytearray(syn_packet("10.77.0.1", 1, "10.77.0.2", 2, 0))
    packet[20 + 12] = 0xF0  # 60-byte header in a 24-byte TCP segment
    with pytest.raises(MalformedPacket, match="data offset 60"):
        decode_packet(bytes(packet))


@pytest.mark.parametrize(
    ("payload", "preview"),
    [
        (b"GET / HTTP/1.0\r\nhost: x\r\n\r\n", "GET / HTTP/1.0"),
        (b"HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK"),
        (b"x" * 100, "x" * 40),
        (b"", None),
        (b"\x16\x03\x01\x02\x00", None),  # a TLS record
        (b"\r\nrest", None),  # an empty first line shows nothing
        (b"\x81\x05hello", None),  # a WebSocket frame
    ],
)
def test_payload_preview(payload: bytes, preview: str | None) -> None:
    assert payload_preview(payload) == preview


def test_options_walk_stops_at_garbage() -> None:
    packet = bytearray(syn_packet("10.77.0.1", 1, "10.77.0.2", 2, 0))
    packet[20 + 20 : 20 + 24] = bytes([1, 3, 9, 0])  # NOP, then a wscale claiming 9 bytes
    segment = decode_segment(bytes(packet))
    assert segment is not None
    assert (segment.mss, segment.wscale) == (None, None)


def test_tcp_packet_with_payload_and_odd_options() -> None:
    packet = tcp_packet(
        "10.77.0.2",
        8080,
        "10.77.0.1",
        40000,
        seq=7,
        ack=2**32 + 9,
        flags=TCPFlags.PSH | TCPFlags.ACK,
        payload=b"HTTP/1.1 200 OK\r\n",
        options=b"\x01",  # one NOP, padded to a word
    )
    ip = decode_packet(packet)
    assert tcp_checksum(ip.src, ip.dst, ip.body) == 0
    segment = ip.segment
    assert segment is not None
    assert (segment.flag_names, segment.seq, segment.ack_number) == ("PSH,ACK", 7, 9)
    assert segment.payload == b"HTTP/1.1 200 OK\r\n"
