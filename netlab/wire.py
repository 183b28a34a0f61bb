"""The lab's wire: moves packets between the client's and the server's TUN device.

Theory of operation: the event loop watches both TUN fds (`loop.add_reader`). Each read
gives one raw IPv4 packet, sent by the side whose device it came out of. The wire decides
its fate in a fixed order, at the moment it reads it:

1. not IPv4 (IPv6 chatter, should any remain): dropped quietly, no event;
2. addressed to neither lab host (a SYN-ACK to a spoofed address): dropped, "no_host";
3. a drop rule selects it (TCP only): dropped, "rule:<rule>";
4. random loss (seeded): dropped, "loss";
5. otherwise it is queued for its direction, to be delivered `delay_s` (± uniform
   `jitter_s`) later, but never before a packet read earlier in the same direction, so
   jitter never reorders a direction (the ladder would lie about TCP otherwise).

Each direction is a FIFO with one timer for its head: asyncio's timer heap does not keep
equal deadlines in order, the FIFO does. At delivery the packet is written to the other
device, written to the pcap (stamped with the delivery time) and, for TCP, reported as a
`wire.segment.forwarded` event whose `ts` is that delivery time. Drops are reported when
read. The `FlowTracker` sees every TCP segment in send order, dropped ones too, so a
resent segment is marked a retransmission even when the wire lost the first copy.

The settings (`delay_s`, `jitter_s`, `loss`) are plain attributes and may be changed while
the wire runs; a change applies to packets read afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from netlab.rules import DropRules
from netlab.segments import FlowInfo, FlowTracker, MalformedPacket, Segment, decode_packet
from netlab.segments import payload_preview as _preview
from telemetry.events import Event, Level, Name, Role

if TYPE_CHECKING:
    from collections.abc import Sequence

    from netlab.pcap import PcapWriter
    from netlab.rules import DropRule
    from telemetry.bus import Bus

__all__ = ["Wire"]

MAX_PACKET: Final = 65535
_BATCH: Final = 64  # packets read per wake-up before giving the loop back


PRECISE_EARLY_S: Final = 0.002


@dataclass(slots=True)
class _Queued:
    deliver_at: float  # loop time
    packet: bytes
    sent_ts: float
    delay_s: float
    segment: Segment | None
    info: FlowInfo | None


class Wire:
    """Forwards packets between two TUN fds with delay, jitter, loss and drop rules."""

    def __init__(
        self,
        bus: Bus,
        fds: dict[Role, int],
        hosts: dict[Role, str],
        *,
        delay_s: float = 0.0,
        jitter_s: float = 0.0,
        loss: float = 0.0,
        rules: Sequence[DropRule | str] = (),
        pcap: PcapWriter | None = None,
        seed: int | None = None,
        precise: bool = False,
    ) -> None:
        self.bus = bus
        # Precise: wake PRECISE_EARLY_S before a packet is due and spin to its moment. An
        # event loop's timer fires up to a millisecond late (epoll counts in ms) and an idle
        # VM wakes slowly: ~0.5 ms per leg, 5 % of a 20 ms round trip. Spinning costs CPU,
        # so it is for measuring latency (bench latency), not for moving bulk data. The
        # spin holds the event loop the ends share: never more than a quarter of the delay.
        self.precise = precise
        self.fds = dict(fds)
        self.hosts = dict(hosts)
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.loss = loss
        self.rules = DropRules(rules)
        self.pcap = pcap
        self.rng = random.Random(seed)
        self.flows = FlowTracker()
        # Counters: packets delivered (TCP or not: what the pcap holds), TCP segments
        # delivered, and drops by reason ("loss", "rule:...", "no_host", "not_ipv4").
        self.forwarded = 0
        self.forwarded_segments = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self.write_errors = 0
        self.failed_devices: set[tuple[Role, str]] = set()  # (side, "read" | "write")
        self._queues: dict[Role, collections.deque[_Queued]] = {
            Role.CLIENT: collections.deque(),
            Role.SERVER: collections.deque(),
        }
        self._timers: dict[Role, asyncio.TimerHandle | None] = {
            Role.CLIENT: None,
            Role.SERVER: None,
        }
        self._last_deliver_at = {Role.CLIENT: 0.0, Role.SERVER: 0.0}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def early_s(self) -> float:
        return min(PRECISE_EARLY_S, self.delay_s / 4) if self.precise else 0.0

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        for side, fd in self.fds.items():
            loop.add_reader(fd, self._on_readable, side)

    def stop(self) -> None:
        """Stop reading; whatever is still in flight is not delivered, and each such
        segment is reported dropped ("lab_stopped"), so no segment the wire read goes
        unaccounted. Safe to call twice."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        for side, fd in self.fds.items():
            loop.remove_reader(fd)
            timer = self._timers[side]
            if timer is not None:
                timer.cancel()
            self._timers[side] = None
            queue = self._queues[side]
            while queue:
                item = queue.popleft()
                self._drop(side, item.segment, item.info, item.sent_ts, "lab_stopped")

    # -- reading -------------------------------------------------------------------------

    def _on_readable(self, side: Role) -> None:
        fd = self.fds[side]
        for _ in range(_BATCH):
            try:
                packet = os.read(fd, MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # the device went away under us (deleted): stop reading
                if self._loop is not None:
                    self._loop.remove_reader(fd)
                    self._device_failed(
                        side, "read", exc, "every packet this side sends from now on"
                    )
                return
            if self._loop is None:
                return
            self.accept(side, packet)

    def accept(self, side: Role, packet: bytes) -> None:
        """Decide the fate of one packet that `side` sent (read from `side`'s device)."""
        assert self._loop is not None
        sent_ts = time.time()
        try:
            ip = decode_packet(packet)
        except MalformedPacket:
            # IPv6 (turned off on the devices, but the kernel may try) or a broken packet.
            self.dropped["not_ipv4" if not packet or packet[0] >> 4 != 4 else "malformed"] += 1
            return
        segment = ip.segment
        info = self.flows.observe(segment) if segment is not None else None
        peer = side.peer
        if ip.dst != self.hosts[peer]:
            self._drop(side, segment, info, sent_ts, "no_host")
            return
        if segment is not None and self.rules:
            rule = self.rules.check(side, segment)
            if rule is not None:
                self._drop(side, segment, info, sent_ts, f"rule:{rule}")
                return
        if self.loss > 0 and self.rng.random() < self.loss:
            self._drop(side, segment, info, sent_ts, "loss")
            return
        delay = self.delay_s
        if self.jitter_s > 0:
            delay = max(0.0, delay + self.rng.uniform(-self.jitter_s, self.jitter_s))
        now = self._loop.time()
        deliver_at = max(now + delay, self._last_deliver_at[side])  # no reordering
        self._last_deliver_at[side] = deliver_at
        queue = self._queues[side]
        delay_s = round(deliver_at - now, 6)
        queue.append(_Queued(deliver_at, packet, sent_ts, delay_s, segment, info))
        if len(queue) == 1:
            self._timers[side] = self._loop.call_at(
                deliver_at - self.early_s, self._deliver_due, side
            )

    # -- delivering ----------------------------------------------------------------------

    def _deliver_due(self, side: Role) -> None:
        loop = self._loop
        if loop is None:
            return
        queue = self._queues[side]
        now = loop.time()
        while queue and queue[0].deliver_at <= now + self.early_s:
            while now < queue[0].deliver_at:  # precise: spin the last stretch
                now = loop.time()
            self._deliver(side, queue.popleft())
        self._timers[side] = (
            loop.call_at(queue[0].deliver_at - self.early_s, self._deliver_due, side)
            if queue
            else None
        )

    def _deliver(self, side: Role, item: _Queued) -> None:
        try:
            os.write(self.fds[side.peer], item.packet)
        except OSError as exc:
            # The segment was read, so it is accounted for: reported dropped, like a loss.
            self.write_errors += 1
            self._drop(side, item.segment, item.info, item.sent_ts, f"write_error:{exc.strerror}")
            self._device_failed(side.peer, "write", exc, "what the wire delivers to it")
            return
        ts = time.time()
        self.forwarded += 1
        if self.pcap is not None:
            self.pcap.write(ts, item.packet)
        if item.segment is not None and item.info is not None:
            self.forwarded_segments += 1
            if self.bus.active:
                attrs = segment_attrs(item.segment, item.info, item.sent_ts)
                attrs["delay_s"] = item.delay_s
                self._emit(Name.WIRE_SEGMENT_FORWARDED, side, item.segment, ts, attrs)

    def inject(self, packet: bytes, toward: Role) -> None:
        """Write a raw IPv4 packet into `toward`'s device at once, as if the other side had
        sent it (no delay, no rules, no loss); reported and captured like a forwarded one,
        with `injected=True`."""
        os.write(self.fds[toward], packet)
        ts = time.time()
        self.forwarded += 1
        if self.pcap is not None:
            self.pcap.write(ts, packet)
        try:
            segment = decode_packet(packet).segment
        except MalformedPacket:
            return
        if segment is None:
            return
        sender = toward.peer
        info = self.flows.observe(segment)
        self.forwarded_segments += 1
        if self.bus.active:
            attrs = segment_attrs(segment, info, ts)
            attrs["delay_s"] = 0.0
            attrs["injected"] = True
            self._emit(Name.WIRE_SEGMENT_FORWARDED, sender, segment, ts, attrs)

    def _drop(
        self,
        side: Role,
        segment: Segment | None,
        info: FlowInfo | None,
        sent_ts: float,
        reason: str,
    ) -> None:
        self.dropped[reason] += 1
        if segment is None or info is None or not self.bus.active:
            return
        attrs = segment_attrs(segment, info, sent_ts)
        attrs["reason"] = reason
        self._emit(Name.WIRE_SEGMENT_DROPPED, side, segment, sent_ts, attrs)

    def _device_failed(self, side: Role, op: str, exc: OSError, lost: str) -> None:
        """Said once per device and operation; each segment lost is its own drop event."""
        if (side, op) in self.failed_devices:
            return
        self.failed_devices.add((side, op))
        self.bus.emit(
            Event(
                name=Name.WIRE_DEVICE_FAILED,
                role=side,
                ts=time.time(),
                level=Level.ERROR,
                attrs={
                    "kind": f"tun_{op}_failed",
                    "reason": f"{op} on {side.value}'s TUN device: {exc.strerror}",
                    "errno": exc.errno,
                    "lost": lost,
                },
            )
        )

    def _emit(
        self, name: Name, side: Role, segment: Segment, ts: float, attrs: dict[str, Any]
    ) -> None:
        self.bus.emit(
            Event(
                name=name,
                role=side,
                ts=ts,
                conn_id=None,
                local=segment.source,
                remote=segment.destination,
                level=Level.INFO,
                attrs=attrs,
            )
        )


def segment_attrs(segment: Segment, info: FlowInfo, sent_ts: float) -> dict[str, Any]:
    """The attributes every wire event carries about its segment."""
    return {
        "flags": segment.flag_names,
        "seq": segment.seq,
        "ack": segment.ack_number,
        "rel_seq": info.rel_seq,
        "rel_ack": info.rel_ack,
        "payload_bytes": len(segment.payload),
        "window": segment.window,
        "sent_ts": sent_ts,
        "retransmission": info.retransmission,
        "keepalive": info.keepalive,
        "preview": _preview(segment.payload),
    }
