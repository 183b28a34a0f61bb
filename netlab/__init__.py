"""The lab network: two network namespaces joined by the lab's own wire (TUN devices),
with delay, loss and targeted drops, every segment decoded; scenarios and the ladder.

`LabNetwork` (netlab.network) is the entry point; `lab_unavailable_reason()` says why it
cannot run here (not root, no /dev/net/tun, no `ip`). The pure parts, segment decoding,
drop rules and the pcap writer, need neither root nor a network.
"""

from netlab.netns import lab_unavailable_reason
from netlab.network import CLIENT_IP, SERVER_IP, LabCommandError, LabNetwork, LabUnavailable
from netlab.pcap import PcapWriter, read_pcap
from netlab.rules import DropRule, DropRules
from netlab.segments import (
    FlowInfo,
    FlowTracker,
    MalformedPacket,
    Segment,
    TCPFlags,
    decode_packet,
    decode_segment,
    syn_packet,
    tcp_packet,
)
from netlab.wire import Wire

__all__ = [
    "CLIENT_IP",
    "SERVER_IP",
    "DropRule",
    "DropRules",
    "FlowInfo",
    "FlowTracker",
    "LabCommandError",
    "LabNetwork",
    "LabUnavailable",
    "MalformedPacket",
    "PcapWriter",
    "Segment",
    "TCPFlags",
    "Wire",
    "decode_packet",
    "decode_segment",
    "lab_unavailable_reason",
    "read_pcap",
    "syn_packet",
    "tcp_packet",
]
