"""`handshake-lab`: one command, a subcommand per part of the lab."""

from __future__ import annotations

import argparse
import sys

from bench.cli import add_bench_arguments
from client.__main__ import add_get_arguments, run_get
from client.load import add_load_arguments, run_load
from client.ws_cli import add_ws_arguments, run_ws
from handshake_lab import __version__
from handshake_tls import FOR_LEARNING_ONLY
from handshake_tls.cli import add_certs_arguments, add_decrypt_arguments, run_certs, run_decrypt
from netlab.cli import add_lab_arguments, run_lab
from server.__main__ import add_arguments as add_server_arguments
from server.__main__ import run as run_server
from tour.cli import add_demo_arguments, run_demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="handshake-lab",
        description="Watch connections happen: TCP handshakes, HTTP/1.0 vs keep-alive, "
        "with every event as a log line and a Prometheus metric.",
    )
    parser.add_argument("--version", action="version", version=f"handshake-lab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="the guided tour: HTTP/1.0 vs keep-alive, WebSocket, toy and real TLS, the "
        "kernel's socket states (and, as root, the wire)",
        description="Start a server on loopback (plain, toy TLS, real TLS) and walk through "
        "the lessons one after another: what is about to happen, what to look at, the real "
        "traffic, the ladder of both ends' events and the kernel's socket states (from ss), "
        "and what was found. No root needed; as root, --lab adds the wire lessons, where "
        "every real segment is drawn with its seq/ack.",
    )
    add_demo_arguments(demo)
    demo.set_defaults(func=run_demo)

    server = commands.add_parser(
        "server",
        help="run the HTTP server",
        description="The lab's asyncio HTTP/1.0 + HTTP/1.1 server.",
    )
    add_server_arguments(server)
    server.set_defaults(func=run_server)

    certs = commands.add_parser(
        "certs",
        help="make the lab CA and server certificates (RSA and EC keys)",
        description="Make a lab CA and server certificates signed by it, one with an RSA "
        "key and one with an EC (P-256) key, for the TLS lessons. The lab's client trusts "
        "this CA; give it to other clients with e.g. curl --cacert.",
    )
    add_certs_arguments(certs)
    certs.set_defaults(func=run_certs)

    tls = commands.add_parser(
        "tls", help=f"look into recorded toy-TLS connections (the toy is {FOR_LEARNING_ONLY})"
    )
    tls_commands = tls.add_subparsers(dest="tls_command", metavar="COMMAND", required=True)
    decrypt = tls_commands.add_parser(
        "decrypt",
        help="a recording (client get --record) back to plaintext, with a key log or the "
        "server's key",
        description="Read a recorded toy-TLS connection afterwards. With the key log every "
        "connection opens. With only the server's private key, the rsa key exchange opens "
        "(the premaster was encrypted to that key) and ecdhe does not: forward secrecy. "
        f"The toy TLS is {FOR_LEARNING_ONLY}.",
    )
    add_decrypt_arguments(decrypt)
    decrypt.set_defaults(func=run_decrypt)

    client = commands.add_parser("client", help="HTTP requests with a timing breakdown; WebSockets")
    client_commands = client.add_subparsers(dest="client_command", metavar="COMMAND", required=True)
    get = client_commands.add_parser(
        "get",
        help="request a URL, N times, and time each request like curl -w",
        description="Request a URL and print, per request, where the time went (name lookup, "
        "TCP connect, first byte, transfer) and whether the connection was new or reused.",
    )
    add_get_arguments(get)
    get.set_defaults(func=run_get)
    ws = client_commands.add_parser(
        "ws",
        help="open a WebSocket: the upgrade handshake shown, then messages both ways",
        description="Open a WebSocket (RFC 6455) and show the upgrade as a lesson: the key "
        "sent, the accept value expected and what the server answered. Then send and "
        "receive messages: scripted (--send, --receive, --count) or interactive (lines "
        "from stdin).",
    )
    add_ws_arguments(ws)
    ws.set_defaults(func=run_ws)
    load = client_commands.add_parser(
        "load",
        help="a steady mixed workload (HTTP/1.0, keep-alive, WebSocket, toy and real TLS) "
        "with its own /metrics, so every dashboard panel moves",
        description="Send rounds of every kind of traffic to one server, --rate rounds per "
        "second, until SIGTERM or Ctrl-C: an HTTP/1.0 burst, a keep-alive session, a "
        "WebSocket chat and a ticker, the toy TLS with rsa and ecdhe, real TLS. Serves its "
        "own metrics (default port 9465).",
    )
    add_load_arguments(load)
    load.set_defaults(func=run_load)

    lab = commands.add_parser(
        "lab",
        help="a TCP lesson in the lab network (root): segments, kernel states, a ladder",
        description="Run a scenario between two network namespaces joined by the lab's own "
        "wire (delay, drops), with the real server and client, and draw what happened: every "
        "segment with its flags and seq/ack, each side's kernel state from ss, and the "
        "application's events. Needs root.",
    )
    add_lab_arguments(lab)
    lab.set_defaults(func=run_lab)

    bench = commands.add_parser(
        "bench",
        help="benchmarks: latency by protocol and RTT; throughput against uvicorn and aiohttp",
        description="The lab's benchmarks, with their results as tables, JSON and plots.",
    )
    add_bench_arguments(bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
