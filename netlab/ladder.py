"""The ladder (sequence) diagram: one run's events drawn as a terminal timeline.

Theory of operation: the ladder is a pure function of the timeline. Every row is one
event, at its time since the first one: a segment the wire forwarded is an arrow from its
sender's side to the other (a dropped one ends in ✕), a kernel state change is written in
its side's column, an application event in the notes beside its side. Nothing is drawn
that was not observed: without the lab network there are no wire events, and the ladder
says so instead of inventing arrows.

Seq/ack: a SYN shows its absolute sequence number (the ISN), the SYN-ACK its absolute
ack (ISN + 1, lesson L1); after that, numbers are relative to each side's ISN, as
Wireshark shows them, so a learner can follow the byte counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from telemetry.events import Name, Role

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from telemetry.events import Event

STATE_WIDTH: Final = 12
ARROW_WIDTH: Final = 60
WIRE_EVENTS: Final = frozenset({Name.WIRE_SEGMENT_FORWARDED, Name.WIRE_SEGMENT_DROPPED})
# Application events worth a note on the ladder, and how they read there.
APP_NOTES: Final[dict[Name, str]] = {
    Name.LISTENER_STARTED: "listen()",
    Name.CONNECTION_ACCEPTED: "accept()",
    Name.CONNECT_COMPLETED: "connect() returns",
    Name.CONNECT_FAILED: "connect() failed",
    Name.REQUEST_SENT: "http.request.sent",
    Name.REQUEST_RECEIVED: "http.request",
    Name.RESPONSE_SENT: "http.response",
    Name.RESPONSE_RECEIVED: "http.response.received",
    Name.FIN_SENT: "shutdown()/close(): FIN",
    Name.EOF_RECEIVED: "read() = EOF",
    Name.CONNECTION_CLOSED: "closed",
    Name.CONNECTION_FAILED: "connection failed",
    Name.REQUEST_FAILED: "request failed",
    Name.WS_UPGRADE_ACCEPTED: "ws.upgrade",
    Name.WS_MESSAGE_SENT: "ws message sent",
    Name.WS_MESSAGE_RECEIVED: "ws message received",
    Name.WS_CLOSE_SENT: "ws Close sent",
    Name.WS_CLOSE_RECEIVED: "ws Close received",
    Name.TLS_HANDSHAKE_COMPLETED: "tls handshake complete",
    Name.TLS_ALERT_SENT: "tls alert sent",
    Name.TLS_ALERT_RECEIVED: "tls alert received",
}
NO_WIRE_WIDTH: Final = 44  # without the wire, its column holds the application's notes


# ss -o calls the retransmission timer "on"; the others are named for what they time.
TIMER_NAMES: Final = {"on": "retransmit"}


@dataclass(frozen=True, slots=True)
class Row:
    t_ms: float
    client_state: str = ""
    arrow: str = ""
    server_state: str = ""
    note: str = ""
    # An application event: whose, and what (`note` says both, for the wire's layout);
    # `tag` names the connection when several are drawn.
    side: Role | None = None
    app: str = ""
    tag: str = ""


def segment_label(attrs: dict[str, object]) -> str:
    """`SYN seq=2841197305`, `SYN,ACK seq=911620 ack=2841197306`, `PSH,ACK 78 B GET /`."""
    flags = str(attrs.get("flags", "?"))
    names = flags.split(",")
    parts = [flags]
    if "SYN" in names:
        parts.append(f"seq={attrs.get('seq')}")
        if "ACK" in names:
            parts.append(f"ack={attrs.get('ack')}")
    else:
        rel_seq, rel_ack = attrs.get("rel_seq"), attrs.get("rel_ack")
        parts.append(f"seq={attrs.get('seq') if rel_seq is None else rel_seq}")
        if "ACK" in names:
            parts.append(f"ack={attrs.get('ack') if rel_ack is None else rel_ack}")
    size = attrs.get("payload_bytes") or 0
    if size:
        parts.append(f"{size} B")
        if attrs.get("preview"):
            parts.append(str(attrs["preview"]))
    if attrs.get("keepalive"):
        parts.append("(keep-alive probe)")
    if attrs.get("retransmission"):
        parts.append("(retransmission)")
    return " ".join(parts)


def arrow(label: str, sender: Role, *, dropped: bool = False, width: int = ARROW_WIDTH) -> str:
    """`── SYN seq=1 ───▶` from the client, `◀── ... ──` from the server; ✕ when dropped."""
    text = f" {label} "
    if len(text) > width - 4:
        text = text[: width - 6] + "… "
    fill = "─" * max(1, width - 3 - len(text))
    if sender is Role.CLIENT:
        return f"──{text}{fill}{'✕' if dropped else '▶'}"
    return f"{'✕' if dropped else '◀'}─{text}{fill}─"


def tls_step(attrs: dict[str, object]) -> str:
    """`client_hello` as the message is called, `tls ClientHello`; Finished says which way."""
    step = str(attrs.get("step"))
    if step == "keys":
        return "tls keys derived"
    name = "".join(part.capitalize() for part in step.split("_"))
    if "sent" in attrs:
        name += " sent" if attrs["sent"] else " received"
    return f"tls {name}"


def kernel_state(value: object) -> str:
    """node_exporter's `syn_sent` as ss and the seeds write it: `SYN_SENT`."""
    return str(value).upper()


def _port(address: str | None) -> str:
    return address.rsplit(":", 1)[-1] if address else "?"


def rows(events: Iterable[Event], *, show_ports: bool = False) -> list[Row]:
    """One row per event worth drawing, in time order (see the module docstring)."""
    ordered = sorted(events, key=lambda e: e.attrs.get("sent_ts", e.ts))
    if not ordered:
        return []
    start = ordered[0].attrs.get("sent_ts", ordered[0].ts)
    result: list[Row] = []
    for event in ordered:
        t_ms = (event.attrs.get("sent_ts", event.ts) - start) * 1000
        client_side = event.role is Role.CLIENT
        # Which connection: the client's port names it (the server's is the same for all).
        client_address = event.local if client_side else event.remote
        tag = f"[:{_port(client_address)}] " if show_ports and client_address else ""
        if event.name in WIRE_EVENTS:
            dropped = event.name is Name.WIRE_SEGMENT_DROPPED
            label = tag + segment_label(event.attrs)
            note = f"dropped: {event.attrs.get('reason')}" if dropped else ""
            result.append(Row(t_ms, arrow=arrow(label, event.role, dropped=dropped), note=note))
        elif event.name is Name.KERNEL_STATE_CHANGED:
            state = kernel_state(event.attrs.get("to"))
            timer = event.attrs.get("timer")
            left = event.attrs.get("timer_left_s")
            timer_name = TIMER_NAMES.get(str(timer), str(timer))
            note = tag + (f"{timer_name} timer {left:g} s" if timer and left is not None else "")
            if event.attrs.get("to") == "listen":
                note = f"LISTEN on :{_port(event.local)}"
                state = "LISTEN"
            if client_side:
                result.append(Row(t_ms, client_state=state, note=note.strip()))
            else:
                result.append(Row(t_ms, server_state=state, note=note.strip()))
        elif event.name in APP_NOTES or event.name is Name.TLS_HANDSHAKE_STEP:
            who = "client" if client_side else "server"
            text = APP_NOTES.get(event.name) or tls_step(event.attrs)
            result.append(
                Row(t_ms, note=f"{tag}{who}: {text}", side=event.role, app=text, tag=tag.strip())
            )
    return result


def render(
    events: Sequence[Event],
    *,
    client: str = "client",
    server: str = "server",
    wire_seen: bool = True,
    footer: Sequence[str] = (),
) -> str:
    """The ladder as text: a header naming both ends, a row per event, then `footer`."""
    connections = {
        e.local if e.role is Role.CLIENT else e.remote
        for e in events
        if e.name in WIRE_EVENTS
        or (e.name is Name.KERNEL_STATE_CHANGED and e.attrs.get("to") != "listen")
    }
    connections.discard(None)
    table = rows(events, show_ports=len(connections) > 1)
    middle = "wire" if wire_seen else "(no wire: not observed)"
    width = ARROW_WIDTH if wire_seen else NO_WIRE_WIDTH
    # A long name (an address) spills into the wire's column, never shifting the server's.
    wire_column = 8 + 2 + STATE_WIDTH + 1
    left = f"{'t(ms)':>8}  {client} ".ljust(wire_column)
    wire = f"{middle:^{width}}"[len(left) - wire_column :]
    lines = [f"{left}{wire} {server}"]
    for row in table:
        arrow, note = row.arrow, row.note
        if not wire_seen and row.side is not None:
            # No segments to draw: the application's events take the wire's place, beside
            # the side they happened on; the note keeps which connection.
            arrow = row.app if row.side is Role.CLIENT else row.app.rjust(width)
            note = row.tag
        lines.append(
            f"{row.t_ms:>8.1f}  {row.client_state:<{STATE_WIDTH}} "
            f"{arrow:<{width}} {row.server_state:<{STATE_WIDTH}} {note}".rstrip()
        )
    lines.extend(f"=> {line}" for line in footer)
    return "\n".join(lines)
