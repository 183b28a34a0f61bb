"""`handshake-lab client load`: a steady, gentle, mixed workload, so every panel moves.

Each round, one after another: an HTTP/1.0 burst (a connection per request), a keep-alive
session (one connection, several requests), a WebSocket chat (echoes) and a ticker
(server push), one request over the toy TLS with each key exchange, one over real TLS.
Rounds start `1 / --rate` seconds apart, until SIGTERM or Ctrl-C; a round that fails
(the server restarting, say) is counted and the next one goes ahead. The client's own
telemetry (its metrics endpoint, its log) is the usual one: the dashboard reads both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from client.client import HTTPClient, RequestError
from client.ws import UpgradeFailed, URLError, connect
from handshake_lab.transport import TransportError
from handshake_lab.ws_session import ConnectionClosed
from handshake_tls import FOR_LEARNING_ONLY
from handshake_tls.wire import KeyExchange
from telemetry.setup import Telemetry, add_telemetry_arguments

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable

    from telemetry.bus import Bus

BURST: Final = 3  # HTTP/1.0 requests per round: three handshakes, three closes
SESSION: Final = 5  # keep-alive requests per round: one handshake
CHAT: Final = 3  # WebSocket echoes per round
TICKS: Final = 2  # ticker pushes waited for per round
TICK_MS: Final = 100  # the ticker's interval: pushes come unasked, quickly
FAILURES: Final = (RequestError, TransportError, UpgradeFailed, ConnectionClosed, OSError)


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="the server (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="plain HTTP and WebSocket port")
    parser.add_argument(
        "--toy-tls-port",
        type=int,
        default=8443,
        help=f"the toy TLS ({FOR_LEARNING_ONLY}); 0 skips it",
    )
    parser.add_argument("--real-tls-port", type=int, default=8444, help="0 skips real TLS")
    parser.add_argument(
        "--rate",
        type=float,
        default=1.0,
        metavar="ROUNDS_PER_S",
        help="rounds per second; a round is about 15 requests and messages (default: 1)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        metavar="N",
        help="stop after N rounds (default: 0, run on)",
    )
    parser.add_argument(
        "--cafile", default=None, help="the CA the TLS servers are signed by (default: the lab's)"
    )
    add_telemetry_arguments(parser, metrics_port=9465)
    parser.set_defaults(log_format="off")


class Workload:
    """One round of every kind of traffic, against one server."""

    def __init__(self, bus: Bus, args: argparse.Namespace) -> None:
        self.bus = bus
        self.args = args
        self.base = f"http://{args.host}:{args.port}"
        self.rounds = 0
        self.failures = 0

    async def round(self) -> None:
        steps: list[Callable[[], Awaitable[None]]] = [self.http10, self.keep_alive, self.chat]
        steps.append(self.ticker)
        if self.args.toy_tls_port:
            steps.append(self.toy_tls)
        if self.args.real_tls_port:
            steps.append(self.real_tls)
        for step in steps:
            try:
                await step()
            except FAILURES as exc:
                self.failures += 1
                print(f"handshake-lab client load: {step.__name__}: {exc}", file=sys.stderr)
        self.rounds += 1

    async def http10(self) -> None:
        async with HTTPClient(self.bus, http_version="1.0") as client:
            for _ in range(BURST):
                await client.get(self.base + "/")

    async def keep_alive(self) -> None:
        async with HTTPClient(self.bus) as client:
            for path in ("/", "/health", "/bytes?n=2048", "/delay?ms=20", "/health")[:SESSION]:
                await client.get(self.base + path)

    async def chat(self) -> None:
        ws = await connect(f"ws://{self.args.host}:{self.args.port}/ws/echo", bus=self.bus)
        try:
            for n in range(CHAT):
                await ws.send(f"hello {n}")
                await ws.receive()
        finally:
            await ws.close()

    async def ticker(self) -> None:
        url = f"ws://{self.args.host}:{self.args.port}/ws/ticker?interval_ms={TICK_MS}"
        ws = await connect(url, bus=self.bus)
        try:
            for _ in range(TICKS):
                await ws.receive()
        finally:
            await ws.close()

    async def toy_tls(self) -> None:
        for kx in (KeyExchange.RSA, KeyExchange.ECDHE):
            async with HTTPClient(self.bus, key_exchange=kx, cafile=self._cafile()) as client:
                await client.get(f"toytls://{self.args.host}:{self.args.toy_tls_port}/")

    async def real_tls(self) -> None:
        async with HTTPClient(self.bus, cafile=self._cafile()) as client:
            await client.get(f"https://{self.args.host}:{self.args.real_tls_port}/")

    def _cafile(self) -> Path | None:
        return Path(self.args.cafile) if self.args.cafile else None


async def run_load_async(args: argparse.Namespace, telemetry: Telemetry) -> int:
    workload = Workload(telemetry.bus, args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    period = 1 / args.rate
    while not stop.is_set() and (not args.rounds or workload.rounds < args.rounds):
        started = time.monotonic()
        await workload.round()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, period - (time.monotonic() - started))):
                await stop.wait()
    print(
        f"handshake-lab client load: {workload.rounds} round(s), "
        f"{workload.failures} failed step(s)",
        file=sys.stderr,
    )
    return 0


def run_load(args: argparse.Namespace) -> int:
    if not args.rate > 0 or args.rounds < 0:
        print("handshake-lab client load: --rate above 0, --rounds at least 0", file=sys.stderr)
        return 2
    try:
        telemetry = Telemetry.from_args(args)
    except OSError as exc:
        print(f"handshake-lab client load: {exc}", file=sys.stderr)
        return 2
    if telemetry.metrics is not None:
        print(
            f"handshake-lab client load: metrics on http://{args.metrics_host}:"
            f"{args.metrics_port}/metrics",
            file=sys.stderr,
        )
    try:
        return asyncio.run(run_load_async(args, telemetry))
    except URLError as exc:
        print(f"handshake-lab client load: {exc}", file=sys.stderr)
        return 2
    finally:
        telemetry.close()
