"""Classic pcap files of what the wire forwarded, for Wireshark and `tshark -r`.

Theory of operation: the wire's packets are bare IPv4 packets (the TUN devices carry no
link-layer header), so the file uses LINKTYPE_RAW (101): each record is one IP packet,
stamped with the time the wire delivered it, in microseconds. The writer takes any binary
stream and does no I/O of its own beyond writing to it; `read_pcap` reads such a file back
(for tests, and for the samples in tests/data/wire).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, BinaryIO, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["LINKTYPE_RAW", "PcapWriter", "read_pcap"]

MAGIC_US: Final = 0xA1B2C3D4  # microsecond timestamps, written in our byte order
LINKTYPE_RAW: Final = 101  # raw IPv4/IPv6, the version read from the first nibble
SNAPLEN: Final = 65535
_HEADER: Final = struct.Struct("<IHHiIII")
_RECORD: Final = struct.Struct("<IIII")


class PcapWriter:
    """Writes a pcap header at once, then one record per `write`; flushes each record so a
    file watched while the lab runs (or left by a crash) holds every packet so far."""

    def __init__(self, stream: BinaryIO, *, flush: bool = True) -> None:
        self._stream = stream
        self._flush = flush
        self.packets = 0
        stream.write(_HEADER.pack(MAGIC_US, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW))
        if flush:
            stream.flush()

    def write(self, ts: float, packet: bytes) -> None:
        seconds = int(ts)
        micros = round((ts - seconds) * 1_000_000)
        if micros == 1_000_000:  # rounding reached the next second
            seconds, micros = seconds + 1, 0
        data = packet[:SNAPLEN]
        self._stream.write(_RECORD.pack(seconds, micros, len(data), len(packet)) + data)
        self.packets += 1
        if self._flush:
            self._stream.flush()


def read_pcap(data: bytes) -> Iterator[tuple[float, bytes]]:
    """(timestamp, packet) per record of a classic pcap (either byte order, µs or ns).

    Raises:
        ValueError: not a pcap file, or a record cut short.
    """
    if len(data) < _HEADER.size:
        raise ValueError("too short for a pcap header")
    for order in ("<", ">"):
        (magic,) = struct.unpack_from(order + "I", data)
        if magic in (MAGIC_US, 0xA1B23C4D):
            scale = 1e-6 if magic == MAGIC_US else 1e-9
            break
    else:
        raise ValueError(f"not a pcap file (magic {data[:4].hex()})")
    record = struct.Struct(order + "IIII")
    offset = _HEADER.size
    while offset < len(data):
        if offset + record.size > len(data):
            raise ValueError(f"record header cut short at byte {offset}")
        seconds, fraction, incl_len, _orig_len = record.unpack_from(data, offset)
        offset += record.size
        if offset + incl_len > len(data):
            raise ValueError(f"record of {incl_len} bytes cut short at byte {offset}")
        yield seconds + fraction * scale, data[offset : offset + incl_len]
        offset += incl_len
