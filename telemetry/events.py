"""The one event vocabulary shared by server, client, WebSocket, TLS, kernel sampler and wire.

Theory of operation: every step of a connection is one `Event`. Its `name` follows
`<layer>.<thing>.<past verb>` (timed phases end in `.started/.completed/.failed`), so the
layer is read off the name and never stored twice. Sinks (JSON log, Prometheus metrics,
in-memory timeline) read events; the code that emits them does not know which sinks are on.

Addresses, paths and connection ids live in events (and so in logs), never in metric labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final


class Role(StrEnum):
    CLIENT = "client"
    SERVER = "server"

    @property
    def peer(self) -> Role:
        return Role.SERVER if self is Role.CLIENT else Role.CLIENT


class Level(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Name(StrEnum):
    """Every event name the lab emits. A sink matches on these, never on free strings."""

    # The listening socket.
    LISTENER_STARTED = "tcp.listener.started"
    LISTENER_STOPPED = "tcp.listener.stopped"
    # Opening: accept() on the server, connect() on the client.
    CONNECTION_ACCEPTED = "tcp.connection.accepted"
    CONNECT_COMPLETED = "tcp.connect.completed"
    CONNECT_FAILED = "tcp.connect.failed"
    # Closing: who sent FIN first is who closed first (and who will hold TIME_WAIT).
    FIN_SENT = "tcp.fin.sent"
    EOF_RECEIVED = "tcp.eof.received"
    CONNECTION_CLOSED = "tcp.connection.closed"
    CONNECTION_FAILED = "tcp.connection.failed"
    # HTTP on the server.
    REQUEST_RECEIVED = "http.request.received"
    CONTINUE_SENT = "http.continue.sent"
    RESPONSE_SENT = "http.response.sent"
    REQUEST_REJECTED = "http.request.rejected"
    # HTTP on the client.
    REQUEST_SENT = "http.request.sent"
    RESPONSE_RECEIVED = "http.response.received"
    REQUEST_FAILED = "http.request.failed"
    REQUEST_RETRIED = "http.request.retried"
    # WebSocket (RFC 6455): the upgrade, then messages and control frames.
    WS_UPGRADE_REQUESTED = "ws.upgrade.requested"
    WS_UPGRADE_ACCEPTED = "ws.upgrade.accepted"
    WS_UPGRADE_REFUSED = "ws.upgrade.refused"
    WS_MESSAGE_SENT = "ws.message.sent"
    WS_MESSAGE_RECEIVED = "ws.message.received"
    WS_PING_SENT = "ws.ping.sent"
    WS_PING_RECEIVED = "ws.ping.received"
    WS_PONG_RECEIVED = "ws.pong.received"
    WS_CLOSE_SENT = "ws.close.sent"
    WS_CLOSE_RECEIVED = "ws.close.received"
    WS_CONNECTION_FAILED = "ws.connection.failed"  # the peer broke the protocol or a limit
    WS_CONNECTION_CLOSED = "ws.connection.closed"
    # The toy TLS (handshake_tls): its handshake step by step, and its alerts.
    TLS_HANDSHAKE_STARTED = "tls.handshake.started"
    TLS_HANDSHAKE_STEP = "tls.handshake.step"
    TLS_HANDSHAKE_COMPLETED = "tls.handshake.completed"
    TLS_HANDSHAKE_FAILED = "tls.handshake.failed"
    TLS_ALERT_SENT = "tls.alert.sent"
    TLS_ALERT_RECEIVED = "tls.alert.received"
    # The kernel's view (telemetry/sockstates.py, sampled with `ss`): one event per change of
    # a socket's state between two samples, role = the side that owns the socket; `from`
    # and `to` are node_exporter's state names ("syn_sent", "time_wait", ...; "closed"
    # when the socket is new or gone; `from` "unknown" for what the first sample found).
    KERNEL_STATE_CHANGED = "kernel.state.changed"
    KERNEL_SAMPLER_UNAVAILABLE = "kernel.sampler.unavailable"  # no ss: said once, runs on
    # One ss run failed (killed, too slow, an error): that sample is lost, and the changes
    # until the next one are seen merged. `kind` ss_killed, ss_timeout or ss_failed.
    KERNEL_SAMPLE_FAILED = "kernel.sample.failed"
    # One per sample (debug): sockets by role and state, listen queues, what it cost; the
    # kernel gauges in telemetry/metrics.py are set from it.
    KERNEL_SAMPLE_TAKEN = "kernel.sample.taken"
    # The lab's wire (netlab/): every IPv4/TCP segment it forwarded or dropped, role = the
    # side that sent it; flags, seq/ack (absolute and relative to the ISN), length, window.
    WIRE_SEGMENT_FORWARDED = "wire.segment.forwarded"
    WIRE_SEGMENT_DROPPED = "wire.segment.dropped"
    # A side's TUN device failed to read (the wire stops reading it: what that side sends
    # from then on is lost) or to write (that segment is reported dropped too).
    WIRE_DEVICE_FAILED = "wire.device.failed"
    # Lifecycle of the server process.
    SHUTDOWN_STARTED = "app.shutdown.started"
    SHUTDOWN_COMPLETED = "app.shutdown.completed"

    @property
    def layer(self) -> str:
        return self.value.split(".", 1)[0]


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 4x, twice per request
class Event:
    """One thing that happened, with when, where and to which connection. Sinks must not
    change it.

    `ts` is wall-clock seconds (time.time()) so logs from several processes line up;
    durations are measured with a monotonic clock by the emitter and carried in `attrs`
    with their unit in the name (`duration_s`, `bytes`).
    """

    name: Name
    role: Role
    ts: float
    conn_id: int | None = None
    local: str | None = None
    remote: str | None = None
    level: Level = Level.INFO
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> str:
        return self.name.layer


def format_address(address: Any) -> str | None:
    """`('127.0.0.1', 8080)` → `'127.0.0.1:8080'`; IPv6 hosts are bracketed."""
    if not address:
        return None
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


# The HTTP methods that get their own metric label value; any other is "_OTHER", as the
# OpenTelemetry HTTP conventions say, so a client cannot grow the label set.
KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
