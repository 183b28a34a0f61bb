"""netlab.pcap: the classic pcap writer and reader, byte for byte."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from netlab.pcap import LINKTYPE_RAW, PcapWriter, read_pcap
from netlab.segments import syn_packet

WIRE = Path(__file__).parent.parent / "data" / "wire"


def test_header_and_records() -> None:
    out = io.BytesIO()
    writer = PcapWriter(out)
    packet = syn_packet("10.77.0.1", 40000, "10.77.0.2", 8080, 1)
    writer.write(1700000000.25, packet)
    writer.write(1700000001.9999999, packet)  # rounds up into the next second
    data = out.getvalue()
    assert struct.unpack_from("<IHHiIII", data) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW)
    first = struct.unpack_from("<IIII", data, 24)
    assert first == (1700000000, 250000, len(packet), len(packet))
    assert data[40 : 40 + len(packet)] == packet
    second = struct.unpack_from("<IIII", data, 40 + len(packet))
    assert second[:2] == (1700000002, 0)
    assert writer.packets == 2
    records = list(read_pcap(data))
    assert [p for _, p in records] == [packet, packet]
    assert records[0][0] == pytest.approx(1700000000.25)


def test_flushes_each_record() -> None:
    class Counting(io.BytesIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    out = Counting()
    writer = PcapWriter(out)
    writer.write(0.0, b"\x45")
    assert out.flushes == 2
    quiet = Counting()
    PcapWriter(quiet, flush=False).write(0.0, b"\x45")
    assert quiet.flushes == 0


def test_reads_big_endian_and_nanosecond_files() -> None:
    header = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 101)
    record = struct.pack(">IIII", 10, 500_000_000, 3, 3) + b"abc"
    assert list(read_pcap(header + record)) == [(10.5, b"abc")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xd4\xc3\xb2", "too short"),
        (b"\0" * 24, "not a pcap file"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101) + b"\0" * 8, "record header"),
        (
            struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
            + struct.pack("<IIII", 0, 0, 10, 10)
            + b"abc",
            "record of 10 bytes cut short",
        ),
    ],
)
def test_bad_files(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        list(read_pcap(data))


def test_sample_capture_round_trips() -> None:
    data = (WIRE / "http10.pcap").read_bytes()
    records = list(read_pcap(data))
    assert len(records) == 10
    out = io.BytesIO()
    writer = PcapWriter(out)
    for ts, packet in records:
        writer.write(ts, packet)
    assert out.getvalue() == data
