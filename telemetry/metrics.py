"""Prometheus metrics, every one defined once, all driven by events from the bus.

Naming follows the Prometheus rules (base units, `_total` on counters, `_seconds`,
`_bytes`) and, for HTTP, the OpenTelemetry HTTP semantic conventions as Prometheus
renders them (`http_server_request_duration_seconds` with `http_request_method`,
`http_response_status_code`, `network_protocol_version`). Label values are bounded:
methods outside the standard set become `_OTHER`; addresses, paths and connection ids
never become labels (they are in the logs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from telemetry.events import KNOWN_METHODS, Name
from telemetry.instruments import CounterVec, GaugeVec, HistogramVec, InstrumentCollector
from telemetry.sockstates import TCP_STATES

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from telemetry.events import Event

# From 25 µs (a loopback request) to 10 s (many round trips at 100 ms RTT).
DURATION_BUCKETS_S: Final = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
REQUESTS_PER_CONNECTION_BUCKETS: Final = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)
MESSAGE_SIZE_BUCKETS: Final = tuple(float(4**n) for n in range(1, 13))  # 4 B to 16 MiB
# A WebSocket lives from a blink (a refused message) to hours (a dashboard left open).
LIFETIME_BUCKETS_S: Final = (0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0)
PREFIX: Final = "handshake_lab"
# One count per failure: a failed connect is followed by its REQUEST_FAILED, not counted.
ERROR_EVENTS: Final = frozenset(
    {
        Name.REQUEST_REJECTED,
        Name.CONNECTION_FAILED,
        Name.REQUEST_FAILED,
        Name.WS_UPGRADE_REFUSED,
        Name.WS_CONNECTION_FAILED,
        Name.KERNEL_SAMPLE_FAILED,
        Name.WIRE_DEVICE_FAILED,
    }
)
WS_EVENTS: Final = frozenset(name for name in Name if name.layer == "ws")
TLS_EVENTS: Final = frozenset(name for name in Name if name.layer == "tls")
# RFC 6455 §7.4: the registered close codes keep their number as a label value; the
# application's ranges (3000-3999 registered, 4000-4999 private) are folded, so a peer
# cannot grow the label set.
KNOWN_CLOSE_CODES: Final = frozenset(range(1000, 1016))


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "_OTHER"


def close_code_label(code: int) -> str:
    if code in KNOWN_CLOSE_CODES:
        return str(code)
    if 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return "other"


class Metrics:
    """All of the lab's metrics, registered in `registry`. Use `metrics.observe` as a sink."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        http_labels = [
            "http_request_method",
            "http_response_status_code",
            "network_protocol_version",
        ]
        self.events = CounterVec(
            f"{PREFIX}_events_total",
            "Telemetry events emitted, by name; equals the count of lines in the event log.",
            ["role", "event"],
        )
        self.connections_opened = CounterVec(
            f"{PREFIX}_connections_opened_total",
            "TCP connections opened (accepted by the server, connected by the client).",
            ["role", "transport"],
        )
        self.connections_closed = CounterVec(
            f"{PREFIX}_connections_closed_total",
            "TCP connections closed, by the protocol they carried and by who sent FIN first.",
            ["role", "transport", "protocol", "closed_by"],
        )
        self.connections_active = GaugeVec(
            f"{PREFIX}_connections_active", "TCP connections open now.", ["role", "transport"]
        )
        self.requests_per_connection = HistogramVec(
            f"{PREFIX}_requests_per_connection",
            "HTTP requests carried by one connection before it closed (1 for HTTP/1.0).",
            ["role"],
            REQUESTS_PER_CONNECTION_BUCKETS,
        )
        self.connect_duration = HistogramVec(
            f"{PREFIX}_tcp_connect_duration_seconds",
            "Client: time from connect() to an established connection (one round trip).",
            [],
            DURATION_BUCKETS_S,
        )
        self.received_bytes = CounterVec(
            f"{PREFIX}_received_bytes_total",
            "Bytes read from TCP connections, counted when a connection closes.",
            ["role"],
        )
        self.sent_bytes = CounterVec(
            f"{PREFIX}_sent_bytes_total",
            "Bytes written to TCP connections, counted when a connection closes.",
            ["role"],
        )
        self.errors = CounterVec(
            f"{PREFIX}_errors_total",
            "Errors by kind (bad_request, header_too_large, timeout, reset, ...).",
            ["role", "kind"],
        )
        self.server_duration = HistogramVec(
            "http_server_request_duration_seconds",
            "Server: from the request head received to the response written.",
            http_labels,
            DURATION_BUCKETS_S,
        )
        self.client_duration = HistogramVec(
            "http_client_request_duration_seconds",
            "Client: from the request started (connect included when new) to the response read.",
            http_labels,
            DURATION_BUCKETS_S,
        )
        self.ws_upgrades = CounterVec(
            f"{PREFIX}_ws_upgrades_total",
            "WebSocket upgrades: outcome is accepted, or why it was refused.",
            ["role", "outcome"],
        )
        self.ws_active = GaugeVec(
            f"{PREFIX}_ws_connections_active", "WebSockets open now.", ["role"]
        )
        self.ws_messages = CounterVec(
            f"{PREFIX}_ws_messages_total",
            "WebSocket messages, by direction (sent, received) and type (text, binary).",
            ["role", "direction", "type"],
        )
        self.ws_frames = CounterVec(
            f"{PREFIX}_ws_data_frames_total",
            "WebSocket data frames; more than messages when messages are fragmented.",
            ["role", "direction"],
        )
        self.ws_message_size = HistogramVec(
            f"{PREFIX}_ws_message_size_bytes",
            "WebSocket message payload sizes (after decompression).",
            ["role", "direction"],
            MESSAGE_SIZE_BUCKETS,
        )
        self.ws_pings = CounterVec(
            f"{PREFIX}_ws_pings_total",
            "WebSocket pings, by direction; keepalive pings included.",
            ["role", "direction"],
        )
        self.ws_ping_rtt = HistogramVec(
            f"{PREFIX}_ws_ping_rtt_seconds",
            "From our ping to its pong: the round trip as the application sees it.",
            ["role"],
            DURATION_BUCKETS_S,
        )
        self.ws_closes = CounterVec(
            f"{PREFIX}_ws_closes_total",
            "WebSockets closed, by who sent Close first and its code (1006: none was sent).",
            ["role", "closed_by", "code"],
        )
        self.ws_lifetime = HistogramVec(
            f"{PREFIX}_ws_connection_duration_seconds",
            "How long WebSockets stayed open.",
            ["role"],
            LIFETIME_BUCKETS_S,
        )
        self.tls_handshakes = CounterVec(
            f"{PREFIX}_tls_handshakes_total",
            "TLS handshakes by kind (toy), key exchange and result (completed, or the failure).",
            ["role", "kind", "key_exchange", "result"],
        )
        self.tls_handshake_duration = HistogramVec(
            f"{PREFIX}_tls_handshake_duration_seconds",
            "From the first handshake byte to the verified Finished.",
            ["role", "kind", "key_exchange"],
            DURATION_BUCKETS_S,
        )
        self.tls_step_duration = HistogramVec(
            f"{PREFIX}_tls_handshake_step_duration_seconds",
            "Toy TLS: the time each handshake step took (since the step before).",
            ["role", "step"],
            DURATION_BUCKETS_S,
        )
        self.tls_alerts = CounterVec(
            f"{PREFIX}_tls_alerts_total",
            "TLS alerts sent and received, by alert.",
            ["role", "direction", "alert"],
        )
        # The kernel's view (telemetry/sockstates.py, from `ss`), set by kernel.sample.taken.
        self.tcp_sockets = GaugeVec(
            f"{PREFIX}_tcp_sockets",
            "TCP sockets on the lab's ports by the side owning them and state (node_exporter's "
            "state names, as in node_tcp_connection_states), as ss saw them last.",
            ["role", "state"],
        )
        self.tcp_state_changes = CounterVec(
            f"{PREFIX}_tcp_state_changes_total",
            "Socket state changes between two ss samples (closed: new or gone).",
            ["role", "from", "to"],
        )
        self.listen_queue = GaugeVec(
            f"{PREFIX}_tcp_listen_queue_length",
            "Connections completed and waiting for accept() on a listening port (ss Recv-Q).",
            ["port"],
        )
        self.listen_queue_limit = GaugeVec(
            f"{PREFIX}_tcp_listen_queue_limit",
            "The accept queue's limit on a listening port (the listen() backlog, ss Send-Q).",
            ["port"],
        )
        self.ss_interval = GaugeVec(
            f"{PREFIX}_ss_sample_interval_seconds",
            "The time between the last two ss samples (longer than asked when a sample is "
            "slow: the sampler keeps to its CPU budget).",
            ["role"],
        )
        self.ss_duration = HistogramVec(
            f"{PREFIX}_ss_sample_cpu_seconds",
            "The CPU one ss sample cost: ss itself, forking it, parsing, diffing, emitting. "
            "_sum / elapsed time is the share of a core spent sampling.",
            ["role"],
            DURATION_BUCKETS_S,
        )
        registry.register(
            InstrumentCollector(
                [
                    self.events,
                    self.connections_opened,
                    self.connections_closed,
                    self.connections_active,
                    self.requests_per_connection,
                    self.connect_duration,
                    self.received_bytes,
                    self.sent_bytes,
                    self.errors,
                    self.server_duration,
                    self.client_duration,
                    self.ws_upgrades,
                    self.ws_active,
                    self.ws_messages,
                    self.ws_frames,
                    self.ws_message_size,
                    self.ws_pings,
                    self.ws_ping_rtt,
                    self.ws_closes,
                    self.ws_lifetime,
                    self.tls_handshakes,
                    self.tls_handshake_duration,
                    self.tls_step_duration,
                    self.tls_alerts,
                    self.tcp_sockets,
                    self.tcp_state_changes,
                    self.listen_queue,
                    self.listen_queue_limit,
                    self.ss_interval,
                    self.ss_duration,
                ]
            )
        )

    def observe(self, event: Event) -> None:
        """The bus sink: turn one event into metric updates."""
        role = event.role  # a StrEnum: usable as a label value as it is
        attrs = event.attrs
        name = event.name
        self.events.inc((role, name))
        if name is Name.RESPONSE_SENT or name is Name.RESPONSE_RECEIVED:  # the hot path
            histogram = self.server_duration if name is Name.RESPONSE_SENT else self.client_duration
            labels = (method_label(attrs["method"]), str(attrs["status"]), attrs["http_version"])
            histogram.observe(labels, attrs["duration_s"])
        elif name is Name.CONNECTION_ACCEPTED or name is Name.CONNECT_COMPLETED:
            opened = (role, attrs["transport"])
            self.connections_opened.inc(opened)
            self.connections_active.add(opened, 1)
            if name is Name.CONNECT_COMPLETED:
                self.connect_duration.observe((), attrs["duration_s"])
        elif name is Name.CONNECTION_CLOSED:
            transport = attrs["transport"]
            self.connections_closed.inc((role, transport, attrs["protocol"], attrs["closed_by"]))
            self.connections_active.add((role, transport), -1)
            self.requests_per_connection.observe((role,), attrs["requests"])
            self.received_bytes.inc((role,), attrs["bytes_received"])
            self.sent_bytes.inc((role,), attrs["bytes_sent"])
        elif name in WS_EVENTS:
            self._observe_ws(name, role, attrs)
        elif name in TLS_EVENTS:
            self._observe_tls(name, role, attrs)
        elif name is Name.KERNEL_STATE_CHANGED:
            if attrs["from"] != "unknown":  # the first sample's sockets: found, not changed
                self.tcp_state_changes.inc((role, attrs["from"], attrs["to"]))
        elif name is Name.KERNEL_SAMPLE_TAKEN:
            self._observe_sample(role, attrs)
        elif name is Name.KERNEL_SAMPLER_UNAVAILABLE:
            # No more samples: the last one's figures would stand forever, as if current.
            for gauge in (self.tcp_sockets, self.listen_queue, self.listen_queue_limit):
                gauge.values.clear()
            self.ss_interval.values.pop((role,), None)
        elif name in ERROR_EVENTS:
            self.errors.inc((role, attrs["kind"]))

    def _observe_sample(self, role: str, attrs: dict[str, Any]) -> None:
        sockets = self.tcp_sockets.values
        for sampled_role, by_state in attrs["sockets"].items():
            for state in TCP_STATES:  # every state has a series, zero when no socket is in it
                sockets[(sampled_role, state)] = float(by_state.get(state, 0))
        queues = attrs["listen_queues"]
        for gauge, key in ((self.listen_queue, "current"), (self.listen_queue_limit, "limit")):
            # A port whose listener is gone loses its series (a sampler that watches the
            # client side only reports no listeners and touches none).
            if "server" in attrs["sockets"]:
                for labels in [labels for labels in gauge.values if labels[0] not in queues]:
                    del gauge.values[labels]
            for port, queue in queues.items():
                gauge.values[(port,)] = float(queue[key])
        if attrs["interval_s"] is not None:
            self.ss_interval.values[(role,)] = attrs["interval_s"]
        self.ss_duration.observe((role,), attrs["cpu_s"])

    def _observe_tls(self, name: Name, role: str, attrs: dict[str, Any]) -> None:
        if name is Name.TLS_HANDSHAKE_COMPLETED:
            kx = attrs["key_exchange"]
            self.tls_handshakes.inc((role, attrs["kind"], kx, "completed"))
            if attrs["duration_s"] is not None:  # (None: real TLS, done before we see it)
                self.tls_handshake_duration.observe((role, attrs["kind"], kx), attrs["duration_s"])
        elif name is Name.TLS_HANDSHAKE_STEP:
            self.tls_step_duration.observe((role, attrs["step"]), attrs["duration_s"])
        elif name is Name.TLS_HANDSHAKE_FAILED:
            # Counted in errors_total by the connection failure that always follows it
            # (one count per failure).
            self.tls_handshakes.inc(
                (role, "toy", attrs.get("key_exchange", "unknown"), attrs["kind"])
            )
        elif name is Name.TLS_ALERT_SENT or name is Name.TLS_ALERT_RECEIVED:
            direction = "sent" if name is Name.TLS_ALERT_SENT else "received"
            self.tls_alerts.inc((role, direction, attrs["alert"]))

    def _observe_ws(self, name: Name, role: str, attrs: dict[str, Any]) -> None:
        if name is Name.WS_MESSAGE_SENT or name is Name.WS_MESSAGE_RECEIVED:
            direction = "sent" if name is Name.WS_MESSAGE_SENT else "received"
            self.ws_messages.inc((role, direction, attrs["type"]))
            self.ws_frames.inc((role, direction), attrs["frames"])
            self.ws_message_size.observe((role, direction), attrs["bytes"])
        elif name is Name.WS_PING_SENT or name is Name.WS_PING_RECEIVED:
            self.ws_pings.inc((role, "sent" if name is Name.WS_PING_SENT else "received"))
        elif name is Name.WS_PONG_RECEIVED:
            if attrs["rtt_s"] is not None:
                self.ws_ping_rtt.observe((role,), attrs["rtt_s"])
        elif name is Name.WS_UPGRADE_ACCEPTED:
            self.ws_upgrades.inc((role, "accepted"))
            self.ws_active.add((role,), 1)
        elif name is Name.WS_UPGRADE_REFUSED:
            self.ws_upgrades.inc((role, attrs["kind"]))
            self.errors.inc((role, attrs["kind"]))
        elif name is Name.WS_CONNECTION_FAILED:
            self.errors.inc((role, attrs["kind"]))
        elif name is Name.WS_CONNECTION_CLOSED:
            self.ws_active.add((role,), -1)
            self.ws_closes.inc((role, attrs["closed_by"], close_code_label(attrs["code"])))
            self.ws_lifetime.observe((role,), attrs["lifetime_s"])
