"""`handshake-lab bench`: the benchmarks a learner runs (latency; throughput)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.latency import add_latency_arguments, run_latency
from bench.soak import add_soak_arguments, run_soak
from bench.throughput import add_throughput_arguments, run_throughput

if TYPE_CHECKING:
    import argparse


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    latency = commands.add_parser(
        "latency",
        help="what each protocol choice costs in round trips: HTTP/1.0, keep-alive and "
        "WebSocket over TCP, toy TLS and real TLS, at the RTTs you give",
        description="Measure the latency of a cold (first) and warm requests for each mode "
        "and transport at each RTT (0 = loopback; others over the lab network's wire, as "
        "root), and compare each cell with a model: round trips x (RTT + 2 wake-ups, measured) + "
        "the same cell on loopback. Prints a table; writes JSON, CSV of every sample, and PNG "
        "plots.",
    )
    add_latency_arguments(latency)
    latency.set_defaults(func=run_latency)
    throughput = commands.add_parser(
        "throughput",
        help="requests/s of our server (telemetry on and off) beside uvicorn and aiohttp, "
        "HTTP/1.0 and keep-alive, plain and TLS",
        description="Requests per second for each server, mode and transport, with wrk when "
        "installed or the lab's own load generator, the server's CPU per request, and the "
        "TIME_WAIT sockets that HTTP/1.0 leaves (from ss). Prints a table; writes JSON.",
    )
    add_throughput_arguments(throughput)
    throughput.set_defaults(func=run_throughput)
    soak = commands.add_parser(
        "soak",
        help="many connections of every kind, well- and ill-behaved (RST, half-close, "
        "stalls), then proof that nothing was lost or leaked; --shutdown adds a SIGTERM "
        "under load",
        description="Rounds of --connections connections against one server process, a "
        "seeded mix of HTTP/1.0, keep-alive, pipelined, WebSocket, toy TLS and real TLS "
        "clients and ones that vanish (RST), half-close or stall. Then checks: every "
        "request answered, connections opened == closed, the JSON log's event counts == "
        "the metrics', no file descriptor leaked, RSS bounded. Prints each check; writes "
        "JSON; exit 1 if any fails.",
    )
    add_soak_arguments(soak)
    soak.set_defaults(func=run_soak)
