"""Prometheus metrics, every one defined once, all driven by events from the bus.

Naming follows the Prometheus rules (base units, `_total` on counters, `_seconds`,
`_bytes`) and, for HTTP, the OpenTelemetry HTTP semantic conventions as Prometheus
renders them (`http_server_request_duration_seconds` with `http_request_method`,
`http_response_status_code`, `network_protocol_version`). Label values are bounded:
methods outside the standard set become `_OTHER`; addresses, paths and connection ids
never become labels (they are in the logs).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from telemetry.events import KNOWN_METHODS, Event, Name

# From 25 µs (a loopback request) to 10 s (many round trips at 100 ms RTT).
DURATION_BUCKETS_S: Final = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
REQUESTS_PER_CONNECTION_BUCKETS: Final = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)
PREFIX: Final = "handshake_lab"


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "_OTHER"


class Metrics:
    """All of the lab's metrics in one registry. Use `metrics.observe` as a bus sink."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        http_labels = [
            "http_request_method",
            "http_response_status_code",
            "network_protocol_version",
        ]
        self.events = Counter(
            f"{PREFIX}_events_total",
            "Telemetry events emitted, by name; equals the count of lines in the event log.",
            ["role", "event"],
            registry=registry,
        )
        self.connections_opened = Counter(
            f"{PREFIX}_connections_opened_total",
            "TCP connections opened (accepted by the server, connected by the client).",
            ["role", "transport"],
            registry=registry,
        )
        self.connections_closed = Counter(
            f"{PREFIX}_connections_closed_total",
            "TCP connections closed, by the protocol they carried and by who sent FIN first.",
            ["role", "transport", "protocol", "closed_by"],
            registry=registry,
        )
        self.connections_active = Gauge(
            f"{PREFIX}_connections_active",
            "TCP connections open now.",
            ["role", "transport"],
            registry=registry,
        )
        self.requests_per_connection = Histogram(
            f"{PREFIX}_requests_per_connection",
            "HTTP requests carried by one connection before it closed (1 for HTTP/1.0).",
            ["role"],
            buckets=REQUESTS_PER_CONNECTION_BUCKETS,
            registry=registry,
        )
        self.connect_duration = Histogram(
            f"{PREFIX}_tcp_connect_duration_seconds",
            "Client: time from connect() to an established connection (one round trip).",
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self.received_bytes = Counter(
            f"{PREFIX}_received_bytes_total",
            "Bytes read from TCP connections, counted when a connection closes.",
            ["role"],
            registry=registry,
        )
        self.sent_bytes = Counter(
            f"{PREFIX}_sent_bytes_total",
            "Bytes written to TCP connections, counted when a connection closes.",
            ["role"],
            registry=registry,
        )
        self.errors = Counter(
            f"{PREFIX}_errors_total",
            "Errors by kind (bad_request, header_too_large, timeout, reset, ...).",
            ["role", "kind"],
            registry=registry,
        )
        self.server_duration = Histogram(
            "http_server_request_duration_seconds",
            "Server: from the request head received to the response written.",
            http_labels,
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self.client_duration = Histogram(
            "http_client_request_duration_seconds",
            "Client: from the request started (connect included when new) to the response read.",
            http_labels,
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )

    def observe(self, event: Event) -> None:
        """The bus sink: turn one event into metric updates."""
        role = event.role.value
        attrs = event.attrs
        self.events.labels(role, event.name.value).inc()
        match event.name:
            case Name.CONNECTION_ACCEPTED | Name.CONNECT_COMPLETED:
                transport = attrs["transport"]
                self.connections_opened.labels(role, transport).inc()
                self.connections_active.labels(role, transport).inc()
                if event.name is Name.CONNECT_COMPLETED:
                    self.connect_duration.observe(attrs["duration_s"])
            case Name.CONNECTION_CLOSED:
                transport = attrs["transport"]
                self.connections_closed.labels(
                    role, transport, attrs["protocol"], attrs["closed_by"]
                ).inc()
                self.connections_active.labels(role, transport).dec()
                self.requests_per_connection.labels(role).observe(attrs["requests"])
                self.received_bytes.labels(role).inc(attrs["bytes_received"])
                self.sent_bytes.labels(role).inc(attrs["bytes_sent"])
            case Name.RESPONSE_SENT | Name.RESPONSE_RECEIVED:
                histogram = (
                    self.server_duration
                    if event.name is Name.RESPONSE_SENT
                    else self.client_duration
                )
                histogram.labels(
                    method_label(attrs["method"]), str(attrs["status"]), attrs["http_version"]
                ).observe(attrs["duration_s"])
            # One count per failure: a failed connect is followed by its REQUEST_FAILED.
            case Name.REQUEST_REJECTED | Name.CONNECTION_FAILED | Name.REQUEST_FAILED:
                self.errors.labels(role, attrs["kind"]).inc()
            case _:
                pass
