"""`handshake-lab server`: the command line of the server."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from handshake_lab.ws_conn import WSLimits
from handshake_tls import FOR_LEARNING_ONLY
from handshake_tls.certs import DEFAULT_DIR
from server.config import HTTPLimits, ServerConfig
from server.lifecycle import Server, serve_until_signalled
from telemetry.setup import Telemetry, add_telemetry_arguments

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULTS = ServerConfig()
LOG_FLUSH_S = 1.0  # a log file is at most this far behind
LIMITS = HTTPLimits()
WS = WSLimits()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=DEFAULTS.host,
        help="address to listen on (default: %(default)s; "
        "0.0.0.0 exposes the lab to your whole network)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULTS.port, help="TCP port (default: %(default)s)"
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=DEFAULTS.backlog,
        help="listen() backlog: the accept queue's length (default: %(default)s)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULTS.max_connections,
        metavar="N",
        help="beyond N open connections, a new one gets 503 Service Unavailable (over TLS, "
        "after its handshake; a WebSocket upgrade too) and is closed, while the open ones "
        "go on; 0: no limit (default: %(default)s)",
    )
    limits = parser.add_argument_group("HTTP limits and timeouts")
    limits.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=LIMITS.keep_alive_timeout_s,
        metavar="S",
        help="close an idle keep-alive connection after S seconds (default: %(default)s)",
    )
    limits.add_argument(
        "--max-requests-per-connection",
        type=int,
        default=LIMITS.max_requests_per_connection,
        metavar="N",
        help="close a connection after N requests; the server is then the active "
        "closer (default: %(default)s)",
    )
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=LIMITS.header_timeout_s,
        metavar="S",
        help="a request head must be complete within S seconds, else 408 (default: %(default)s)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=LIMITS.body_timeout_s,
        metavar="S",
        help="a request body must be complete S seconds after its head, else 408 "
        "(default: %(default)s)",
    )
    limits.add_argument(
        "--max-header-bytes",
        type=int,
        default=LIMITS.max_header_bytes,
        metavar="N",
        help="request head size limit, else 431 (default: %(default)s)",
    )
    limits.add_argument(
        "--max-header-count",
        type=int,
        default=LIMITS.max_header_count,
        metavar="N",
        help="header field count limit, else 431 (default: %(default)s)",
    )
    limits.add_argument(
        "--max-body-bytes",
        type=int,
        default=LIMITS.max_body_bytes,
        metavar="N",
        help="request body size limit, else 413 (default: %(default)s)",
    )
    limits.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULTS.shutdown_timeout_s,
        metavar="S",
        help="on SIGINT/SIGTERM, wait at most S seconds for requests in "
        "flight (default: %(default)s)",
    )
    ws = parser.add_argument_group("WebSocket (/ws/echo, /ws/ticker, /ws/chat)")
    ws.add_argument(
        "--ws-ping-interval",
        type=float,
        default=WS.ping_interval_s,
        metavar="S",
        help="ping each WebSocket S seconds after its last pong; 0 turns keepalive "
        "pings off (default: %(default)s)",
    )
    ws.add_argument(
        "--ws-ping-timeout",
        type=float,
        default=WS.ping_timeout_s,
        metavar="S",
        help="close with 1011 when a ping's pong is S seconds late (default: %(default)s)",
    )
    ws.add_argument(
        "--ws-idle-timeout",
        type=float,
        default=WS.idle_timeout_s,
        metavar="S",
        help="close with 1000 after S seconds without a message either way; 0: never "
        "(default: %(default)s)",
    )
    ws.add_argument(
        "--ws-max-message",
        type=int,
        default=WS.max_message_bytes,
        metavar="BYTES",
        help="close with 1009 when a message is larger (after decompression) "
        "(default: %(default)s)",
    )
    ws.add_argument(
        "--ws-close-timeout",
        type=float,
        default=WS.close_timeout_s,
        metavar="S",
        help="after our Close frame, wait S seconds for the peer's (default: %(default)s)",
    )
    tls = parser.add_argument_group("TLS: the toy (handshake_tls, not TLS) and the real one")
    tls.add_argument(
        "--toy-tls-port",
        type=int,
        default=8443,
        metavar="PORT",
        help="also serve HTTP and WebSocket over the toy TLS on PORT "
        f"({FOR_LEARNING_ONLY}) (default: %(default)s)",
    )
    tls.add_argument("--no-toy-tls", action="store_true", help="no toy-TLS listener")
    tls.add_argument(
        "--real-tls-port",
        type=int,
        default=8444,
        metavar="PORT",
        help="also serve over real TLS (Python's ssl, TLS 1.2 and 1.3, the lab's RSA "
        "certificate; honours SSLKEYLOGFILE) on PORT (default: %(default)s)",
    )
    tls.add_argument("--no-real-tls", action="store_true", help="no real-TLS listener")
    tls.add_argument(
        "--certs-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"the lab's certificates, made there when missing (default: {DEFAULT_DIR})",
    )
    kernel = parser.add_argument_group("kernel socket states (ss, iproute2)")
    kernel.add_argument(
        "--ss-interval",
        type=float,
        default=0.1,
        metavar="SECONDS",
        help="sample the kernel's sockets on the listening ports with ss every SECONDS "
        "(kernel.state.changed events, handshake_lab_tcp_sockets), or as often as "
        "--ss-budget allows (a sample costs ~6 ms of CPU with no sockets, so 2 %% gives one "
        "every ~0.3 s); 0 turns it off (default: %(default)s)",
    )
    kernel.add_argument(
        "--ss-budget",
        type=float,
        default=DEFAULTS.ss_cpu_budget,
        metavar="FRACTION",
        help="the share of one core sampling may take: a slow sample (many sockets) "
        "stretches the interval (default: %(default)s)",
    )
    add_telemetry_arguments(parser, metrics_port=9464)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    limits = HTTPLimits(
        max_header_bytes=args.max_header_bytes,
        max_header_count=args.max_header_count,
        max_body_bytes=args.max_body_bytes,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        keep_alive_timeout_s=args.keep_alive_timeout,
        max_requests_per_connection=args.max_requests_per_connection,
    )
    ws = WSLimits(
        max_message_bytes=args.ws_max_message,
        ping_interval_s=args.ws_ping_interval,
        ping_timeout_s=args.ws_ping_timeout,
        idle_timeout_s=args.ws_idle_timeout,
        close_timeout_s=args.ws_close_timeout,
    )
    return ServerConfig(
        host=args.host,
        port=args.port,
        backlog=args.backlog,
        limits=limits,
        ws=ws,
        shutdown_timeout_s=args.shutdown_timeout,
        max_connections=args.max_connections,
        toy_tls_port=None if args.no_toy_tls else args.toy_tls_port,
        real_tls_port=None if args.no_real_tls else args.real_tls_port,
        certs_dir=args.certs_dir,
        ss_interval_s=args.ss_interval,
        ss_cpu_budget=args.ss_budget,
    )


def run(args: argparse.Namespace) -> int:
    if args.max_connections < 0:
        print("handshake-lab server: --max-connections must be >= 0", file=sys.stderr)
        return 2
    if not (0 <= args.ss_interval < math.inf and 0 < args.ss_budget <= 1):  # nan fails too
        print(
            "handshake-lab server: --ss-interval must be >= 0 and --ss-budget in (0, 1]",
            file=sys.stderr,
        )
        return 2
    config = config_from_args(args)
    try:
        telemetry = Telemetry.from_args(args)
    except OSError as exc:
        print(
            f"handshake-lab server: cannot serve metrics on {args.metrics_host}:"
            f"{args.metrics_port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    server = Server(config, telemetry.bus)
    metrics = (
        f", metrics on http://{args.metrics_host}:{args.metrics_port}/metrics"
        if args.metrics_port
        else ", metrics off"
    )

    def say_ready(running: Server) -> None:
        print(f"handshake-lab server: listening on {running.url}{metrics}", file=sys.stderr)
        if running.toy_tls_port is not None:
            print(
                f"handshake-lab server: toy TLS on toytls://{config.host}:{running.toy_tls_port}"
                f" ({FOR_LEARNING_ONLY}; certificates in {config.certs_dir or DEFAULT_DIR})",
                file=sys.stderr,
            )
        if running.real_tls_port is not None:
            print(
                f"handshake-lab server: real TLS on https://{config.host}:{running.real_tls_port}",
                file=sys.stderr,
            )
        print(
            "handshake-lab server: Ctrl-C (SIGINT) or SIGTERM stops it gracefully", file=sys.stderr
        )

    try:
        asyncio.run(_serve(server, telemetry, say_ready))
    except OSError as exc:
        print(
            f"handshake-lab server: cannot listen on {config.host}:{config.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 2
    finally:
        telemetry.close()
    return 0


async def _serve(server: Server, telemetry: Telemetry, say_ready: Callable[[Server], None]) -> None:
    flushing = asyncio.create_task(telemetry.flush_log_every(LOG_FLUSH_S))
    try:
        await serve_until_signalled(server, say_ready)
    finally:
        flushing.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(prog="handshake-lab server")
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
