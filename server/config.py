"""Server settings: one frozen dataclass, filled from the command line or by the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from handshake_lab.ws_conn import WSLimits

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """What one connection may ask of the server, and how long it may take.

    A connection that sends nothing is closed `header_timeout_s` after accept; one that
    dribbles its headers gets 408 when the head is not complete by then (counted from
    accept for the first request and from the first byte for later ones); one that
    dribbles its body gets 408 `body_timeout_s` after the head.
    """

    max_header_bytes: int = 16 * 1024
    max_header_count: int = 100
    max_body_bytes: int = 1024 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    keep_alive_timeout_s: float = 5.0
    max_requests_per_connection: int = 100


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    backlog: int = 511
    limits: HTTPLimits = field(default_factory=HTTPLimits)
    ws: WSLimits = field(default_factory=WSLimits)
    # After we send FIN, how long we keep reading for the peer's FIN before closing.
    linger_timeout_s: float = 2.0
    # A peer that stops reading our response is dropped after this long.
    send_timeout_s: float = 30.0
    shutdown_timeout_s: float = 10.0
    # Beyond this many open connections a new one is answered 503 and closed (a few; the
    # rest closed at once: server.connection.overflow); 0: no limit. The server raises its
    # soft limit on open files to fit (server.lifecycle.ensure_file_limit).
    max_connections: int = 1000
    # The toy-TLS listener (None: off; 0: any free port) and where the lab's certificates
    # are (made there on first start when missing; None: handshake_tls.certs.DEFAULT_DIR).
    toy_tls_port: int | None = None
    certs_dir: Path | None = None
    # The real-TLS listener (Python's ssl, TLS 1.2 and 1.3, the lab's RSA certificate).
    real_tls_port: int | None = None
    # The kernel socket-state sampler (telemetry/sockstates.py): `ss` every ss_interval_s
    # over the listening ports, stretched to stay within ss_cpu_budget of a core. 0: off,
    # the default here so that servers made through the API (tests, benchmarks) sample
    # only when asked; the command line's default is 0.1 s.
    ss_interval_s: float = 0.0
    ss_cpu_budget: float = 0.02
    max_delay_ms: int = 10_000
    max_bytes: int = 16 * 1024 * 1024
