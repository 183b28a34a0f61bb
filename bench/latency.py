"""`handshake-lab bench latency`: what each protocol choice costs, in round trips.

Theory of operation: a matrix of cells, one per mode (HTTP/1.0, HTTP/1.1 keep-alive, a
WebSocket message), transport (plain TCP, toy TLS with rsa or ecdhe, real TLS 1.3 and
1.2) and round-trip time. RTT 0 is plain loopback; any other RTT runs over the lab
network's wire with a one-way delay of RTT / 2 (root). The lab's own server and client run
in this process, so a cell's time is the client's, from asking to having the answer.

Each cell makes a fresh client: its first request is a cold one (it pays for the
connection and the handshakes), then `--warmup` requests are thrown away and `--requests`
are the warm ones; `--cold` fresh clients in all give the cold median. Each cell is
compared with a model: the round trips the protocol needs, times the cost of a round trip,
plus what the same cell costs on loopback (the CPU and the kernel, back to back). A round
trip costs the RTT plus an empirical overhead of the lab path, two "wake-ups": measured on
loopback (`wake_cost`: a request after an RTT-long idle gap, against one back to back),
never fitted to the wire's figures, but its form was chosen after the 20 ms cells came out
5-6 % over without it (docs/benchmarks.md has its accuracy at other RTTs). On this VM a
wake-up is ~0.35 ms. The model, counted from the message flows:

  TCP handshake           1  SYN → SYN-ACK; the ACK goes with the request
  toy TLS (rsa, ecdhe)    2  ClientHello → ServerHello...Done; key exchange + Finished →
                             the server's Finished; only then the request (like TLS 1.2)
  real TLS 1.3            1  ClientHello → ServerHello...Finished; the client's Finished
                             goes with the request
  real TLS 1.2            2  the full handshake: two flights each way before data (no
                             False Start, no session resumption: each connection is new)
  HTTP request            1  request → response
  WebSocket upgrade       1  GET + Upgrade → 101, then each message 1 (send → echo)

  http1.0     cold and warm: 1 + TLS + 1         (every request is a new connection)
  keep-alive  cold: 1 + TLS + 1; warm: 1
  websocket   cold: 1 + TLS + 1 + 1; warm: 1

Closing costs no latency here: the client hands over the answer, then closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import functools
import json
import math
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry

from bench.common import comma_list
from client.client import HTTPClient
from client.ws import connect as ws_connect
from handshake_tls.certs import make_lab_certificates, real_tls_client_context
from handshake_tls.wire import KeyExchange
from netlab.netns import lab_unavailable_reason
from netlab.network import LabNetwork
from server.config import HTTPLimits, ServerConfig
from server.lifecycle import Server
from telemetry.bus import Bus
from telemetry.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from handshake_lab.transport import SocketFactory

MODES: Final = ("http1.0", "keep-alive", "websocket")
# The server closes a keep-alive connection after 100 requests by default: a warm sample
# must never pay for a new connection.
UNCAPPED: Final = HTTPLimits(max_requests_per_connection=10**9)
LAB_PORTS: Final = {"plain": 8080, "toy": 8443, "real": 8444}


@dataclass(frozen=True, slots=True)
class Transport:
    name: str
    listener: str  # which of the server's listeners: plain, toy, real
    handshake_rtts: int  # the TLS handshake's round trips (see the module docstring)
    key_exchange: KeyExchange = KeyExchange.ECDHE
    tls_version: ssl.TLSVersion | None = None


TRANSPORTS: Final = {
    t.name: t
    for t in (
        Transport("tcp", "plain", 0),
        Transport("toy-rsa", "toy", 2, KeyExchange.RSA),
        Transport("toy-ecdhe", "toy", 2, KeyExchange.ECDHE),
        Transport("tls1.3", "real", 1, tls_version=ssl.TLSVersion.TLSv1_3),
        Transport("tls1.2", "real", 2, tls_version=ssl.TLSVersion.TLSv1_2),
    )
}
SCHEMES: Final = {
    ("plain", False): "http",
    ("toy", False): "toytls",
    ("real", False): "https",
    ("plain", True): "ws",
    ("toy", True): "ws+toytls",
    ("real", True): "wss",
}


def model_rtts(mode: str, transport: Transport, *, cold: bool) -> int:
    """Round trips `mode` needs over `transport` for a cold or a warm request."""
    tls = transport.handshake_rtts
    if mode == "http1.0":
        return 1 + tls + 1
    if mode == "keep-alive":
        return 1 + tls + 1 if cold else 1
    if mode == "websocket":
        return 1 + tls + 1 + 1 if cold else 1
    raise ValueError(f"unknown mode {mode!r}")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: a value that was measured)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(slots=True)
class Cell:
    """One mode, transport and RTT: the samples and what the model says of them."""

    mode: str
    transport: str
    rtt_s: float
    cold_samples_s: list[float] = field(default_factory=list)  # fresh clients' first requests
    warm_samples_s: list[float] = field(default_factory=list)
    connections: int = 0  # opened by the server for this cell, from its metrics
    wake_s: float = 0.0  # what waking one end from an RTT-long idle wait costs (loopback)
    model_cold_rtts: int = 0
    model_warm_rtts: int = 0
    # Filled in from the RTT-0 cell of the same mode and transport.
    predicted_cold_s: float | None = None
    predicted_warm_s: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.mode, self.transport)

    @property
    def cold_s(self) -> float:
        return statistics.median(self.cold_samples_s)

    @property
    def warm_median_s(self) -> float:
        return statistics.median(self.warm_samples_s)

    def summary(self) -> dict[str, Any]:
        warm = self.warm_samples_s
        return {
            "mode": self.mode,
            "transport": self.transport,
            "rtt_s": self.rtt_s,
            "connections": self.connections,
            "requests": len(self.cold_samples_s) + len(warm),
            "cold_s": self.cold_s,
            "cold_samples": len(self.cold_samples_s),
            "warm_median_s": statistics.median(warm),
            "warm_p95_s": percentile(warm, 0.95),
            "warm_p99_s": percentile(warm, 0.99),
            "model_cold_rtts": self.model_cold_rtts,
            "model_warm_rtts": self.model_warm_rtts,
            "wake_s": self.wake_s,
            "predicted_cold_s": self.predicted_cold_s,
            "predicted_warm_s": self.predicted_warm_s,
            "cold_ratio": _ratio(self.cold_s, self.predicted_cold_s),
            "warm_ratio": _ratio(statistics.median(warm), self.predicted_warm_s),
        }


def _ratio(measured: float, predicted: float | None) -> float | None:
    return None if not predicted else measured / predicted


def apply_model(cells: Sequence[Cell]) -> None:
    """Predict each cell from its mode's round trips and its RTT-0 twin's times: a round
    trip costs the RTT plus waking each end once from its idle wait (`wake_s`)."""
    loopback = {c.key: c for c in cells if c.rtt_s == 0}
    for cell in cells:
        twin = loopback.get(cell.key)
        if twin is None or cell.rtt_s == 0:  # a loopback cell is its own twin: no test
            continue
        round_trip = cell.rtt_s + 2 * cell.wake_s
        cell.predicted_cold_s = cell.model_cold_rtts * round_trip + twin.cold_s
        cell.predicted_warm_s = cell.model_warm_rtts * round_trip + twin.warm_median_s


# ---- running cells ----------------------------------------------------------------------


@dataclass
class Place:
    """Where a server runs and how a client reaches it: loopback or the lab network."""

    server: Server
    host: str
    ports: dict[str, int]
    cafile: Path
    metrics: Metrics
    make_socket: SocketFactory | None = None

    def opened(self) -> int:
        return int(
            sum(
                value
                for (role, _transport), value in self.metrics.connections_opened.values.items()
                if role == "server"
            )
        )


@contextlib.asynccontextmanager
async def place(rtt_s: float, certs: Path) -> AsyncIterator[Place]:
    """A server with all three listeners: on 127.0.0.1 for RTT 0, else in the lab."""
    bus = Bus()
    metrics = Metrics(CollectorRegistry())
    bus.subscribe(metrics.observe)
    if rtt_s == 0:
        config = ServerConfig(
            host="127.0.0.1",
            port=0,
            toy_tls_port=0,
            real_tls_port=0,
            certs_dir=certs,
            limits=UNCAPPED,
        )
        async with Server(config, bus) as server:
            assert server.toy_tls_port is not None
            assert server.real_tls_port is not None
            ports = {"plain": server.port, "toy": server.toy_tls_port, "real": server.real_tls_port}
            yield Place(server, "127.0.0.1", ports, certs / "ca.pem", metrics)
        return
    # The wire gets a bus of its own that nobody listens to: no event per segment to build.
    async with LabNetwork(Bus(), delay_s=rtt_s / 2, precise=True) as net:
        config = ServerConfig(
            host=net.server_ip,
            port=LAB_PORTS["plain"],
            toy_tls_port=LAB_PORTS["toy"],
            real_tls_port=LAB_PORTS["real"],
            certs_dir=certs,
            limits=UNCAPPED,
        )
        async with Server(config, bus, make_listen_socket=net.listen_socket) as server:
            yield Place(
                server, net.server_ip, dict(LAB_PORTS), certs / "ca.pem", metrics,
                net.make_client_socket,
            )  # fmt: skip


def _tls_context(where: Place, transport: Transport) -> ssl.SSLContext | None:
    if transport.tls_version is None:
        return None
    context = real_tls_client_context(where.cafile)
    context.minimum_version = context.maximum_version = transport.tls_version
    return context


async def measure(
    where: Place,
    mode: str,
    transport: Transport,
    rtt_s: float,
    requests: int,
    warmup: int,
    colds: int = 1,
) -> Cell:
    cell = Cell(
        mode,
        transport.name,
        rtt_s,
        model_cold_rtts=model_rtts(mode, transport, cold=True),
        model_warm_rtts=model_rtts(mode, transport, cold=False),
    )
    run = _websocket if mode == "websocket" else _http
    opened_before = where.opened()
    times = await run(where, mode, transport, 1 + warmup + requests)
    cell.cold_samples_s.append(times[0])
    cell.warm_samples_s = times[1 + warmup :]
    await asyncio.sleep(0.05 + 2 * rtt_s)  # closes finish: the count is the server's
    cell.connections = where.opened() - opened_before
    if colds > 1:
        # One cold request is one sample: more fresh clients make its median worth
        # comparing. The first after the pause above would also pay for waking up: thrown.
        await run(where, mode, transport, 1)
        for _ in range(colds - 1):
            cell.cold_samples_s.append((await run(where, mode, transport, 1))[0])
    return cell


async def _http(where: Place, mode: str, transport: Transport, count: int) -> list[float]:
    scheme = SCHEMES[(transport.listener, False)]
    url = f"{scheme}://{where.host}:{where.ports[transport.listener]}/health"
    times = []
    async with HTTPClient(
        http_version="1.0" if mode == "http1.0" else "1.1",
        cafile=where.cafile,
        key_exchange=transport.key_exchange,
        make_socket=where.make_socket,
        tls_context=_tls_context(where, transport),
    ) as client:
        for _ in range(count):
            started = time.perf_counter()
            await client.get(url)
            times.append(time.perf_counter() - started)
    return times


async def _websocket(where: Place, _mode: str, transport: Transport, count: int) -> list[float]:
    scheme = SCHEMES[(transport.listener, True)]
    url = f"{scheme}://{where.host}:{where.ports[transport.listener]}/ws/echo"
    tls_context = _tls_context(where, transport)  # made before the clock, as for HTTP
    started = time.perf_counter()
    ws = await ws_connect(
        url,
        cafile=where.cafile,
        key_exchange=transport.key_exchange,
        tls_context=tls_context,
        make_socket=where.make_socket,
        offer_deflate=False,
    )
    times = []
    try:
        for index in range(count):
            if index:
                started = time.perf_counter()
            await ws.send("ping")
            answer = await ws.receive()
            if answer is None:
                raise RuntimeError("the server closed the WebSocket")
            times.append(time.perf_counter() - started)
    finally:
        await ws.close()
    return times


# ---- the command ------------------------------------------------------------------------


def parse_rtt(text: str) -> float:
    """`0`, `10ms`, `0.05s`, `50` (ms) -> seconds."""
    value = text.strip().lower()
    try:
        if value.endswith("ms"):
            return float(value[:-2]) / 1000
        if value.endswith("s"):
            return float(value[:-1])
        return float(value) / 1000
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a round-trip time: {text!r} (e.g. 0,10ms,50ms)"
        ) from None


def parse_rtts(text: str) -> list[float]:
    rtts = [parse_rtt(part) for part in text.split(",") if part.strip()]
    if not rtts or any(not 0 <= r <= 10 for r in rtts):
        raise argparse.ArgumentTypeError("RTTs from 0 to 10 s, comma-separated (e.g. 0,10ms,50ms)")
    return rtts


def add_latency_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rtt",
        type=parse_rtts,
        default=None,
        metavar="LIST",
        help="round-trip times, e.g. 0,10ms,50ms (a bare number is ms; 5 ms and up: below, "
        "the wire's timing is not precise); 0 is loopback, others need root (the lab "
        "network's wire); 0 is always measured too, the model needs it (default: 0,20ms as "
        "root, else 0)",
    )
    parser.add_argument(
        "--requests", type=int, default=50, metavar="N", help="warm requests per cell (default: 50)"
    )
    parser.add_argument(
        "--warmup", type=int, default=5, metavar="N", help="requests thrown away (default: 5)"
    )
    parser.add_argument(
        "--cold",
        type=int,
        default=5,
        metavar="N",
        help="cold requests per cell, each the first of a fresh client (default: 5)",
    )
    parser.add_argument(
        "--modes",
        type=functools.partial(comma_list, allowed=MODES),
        default=list(MODES),
        metavar="LIST",
        help=f"some of {','.join(MODES)} (default: all)",
    )
    parser.add_argument(
        "--transports",
        type=functools.partial(comma_list, allowed=list(TRANSPORTS)),
        default=list(TRANSPORTS),
        metavar="LIST",
        help=f"some of {','.join(TRANSPORTS)} (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/bench"),
        metavar="DIR",
        help="where the JSON, CSV and PNG files go (default: %(default)s)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


async def run_matrix(
    rtts: Sequence[float],
    modes: Sequence[str],
    transports: Sequence[str],
    requests: int,
    warmup: int,
    progress: Callable[[int, int, str], None] = lambda _done, _total, _what: None,
    colds: int = 1,
    cells: list[Cell] | None = None,
) -> list[Cell]:
    """Every cell, RTT by RTT (one server per RTT), the model applied. Cells are appended
    to `cells` as they are measured, so a caller keeps them if the run is cut short."""
    rtts = sorted({0.0, *rtts})
    total = len(rtts) * len(modes) * len(transports)
    cells = [] if cells is None else cells
    with tempfile.TemporaryDirectory(prefix="handshake-lab-bench-") as directory:
        certs = Path(directory)
        await asyncio.to_thread(make_lab_certificates, certs, ("127.0.0.1", "10.77.0.2"))
        wakes: dict[float, float] = {}
        for rtt in rtts:
            async with place(rtt, certs) as where:
                if rtt == 0:
                    for far in rtts[1:]:
                        progress(len(cells), total, f"wake-up after {far * 1000:g} ms idle")
                        wakes[far] = await wake_cost(where, far)
                for mode in modes:
                    for name in transports:
                        progress(len(cells), total, f"{mode} {name} rtt={rtt * 1000:g}ms")
                        cell = await measure(
                            where, mode, TRANSPORTS[name], rtt, requests, warmup, colds
                        )
                        cell.wake_s = wakes.get(rtt, 0.0)
                        cells.append(cell)
    progress(total, total, "done")
    apply_model(cells)
    return cells


async def wake_cost(where: Place, idle_s: float, count: int = 40) -> float:
    """What waking from `idle_s` of idleness adds to a request, on loopback: keep-alive
    requests each after an idle gap, against the same back to back (medians). Over a wire
    each end waits idle for about a round trip before every answer it handles; the CPU's
    and the VM's wake-up from that wait is part of the round trip's cost."""
    url = f"http://{where.host}:{where.ports['plain']}/health"
    async with HTTPClient() as client:
        await client.get(url)
        hot, rested = [], []
        for _ in range(count):
            started = time.perf_counter()
            await client.get(url)
            hot.append(time.perf_counter() - started)
        for _ in range(count):
            await asyncio.sleep(idle_s)
            started = time.perf_counter()
            await client.get(url)
            rested.append(time.perf_counter() - started)
    return max(0.0, statistics.median(rested) - statistics.median(hot))


def progress_bar(done: int, total: int, what: str) -> None:
    if not sys.stderr.isatty():  # a log file: one plain line per step
        print(f"{done}/{total} {what}", file=sys.stderr, flush=True)
        return
    width = 30
    filled = round(width * done / total) if total else width
    print(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what:<40}",
        end="" if done < total else "\n",
        file=sys.stderr,
        flush=True,
    )


def table(cells: Sequence[Cell]) -> str:
    """Cold and warm medians per cell, each with its model and measured / predicted."""
    lines = [
        f"{'mode':<11} {'transport':<10} {'RTT':>6}  {'cold ms':>8} {'model':>8} {'x':>5}"
        f"  {'warm p50':>8} {'p95':>7} {'p99':>7} {'model':>8} {'x':>5}  {'conns':>5}"
    ]
    for cell in cells:
        s = cell.summary()
        lines.append(
            f"{cell.mode:<11} {cell.transport:<10} {cell.rtt_s * 1000:>4g}ms"
            f"  {s['cold_s'] * 1000:>8.2f} {_ms(s['predicted_cold_s'])} {_x(s['cold_ratio'])}"
            f"  {s['warm_median_s'] * 1000:>8.2f} {s['warm_p95_s'] * 1000:>7.2f}"
            f" {s['warm_p99_s'] * 1000:>7.2f} {_ms(s['predicted_warm_s'])} {_x(s['warm_ratio'])}"
            f"  {cell.connections:>5}"
        )
    wakes = sorted({(c.rtt_s, c.wake_s) for c in cells if c.rtt_s > 0})
    lines.append(
        "model = round trips * (RTT + 2 wake-ups) + the same cell on loopback; "
        "x = measured / model\n"
        "wake-up (one end, after an RTT idle, measured on loopback): "
        + (", ".join(f"{w * 1000:.2f} ms at {r * 1000:g} ms" for r, w in wakes) or "-")
        + "\n"
        f"round trips, cold: {_rtts_legend(cells, cold=True)}\n"
        f"round trips, warm: {_rtts_legend(cells, cold=False)}"
    )
    return "\n".join(lines)


def _rtts_legend(cells: Sequence[Cell], *, cold: bool) -> str:
    seen: dict[tuple[str, str], int] = {}
    for c in cells:
        seen[c.key] = c.model_cold_rtts if cold else c.model_warm_rtts
    return ", ".join(f"{mode}/{name} {n}" for (mode, name), n in seen.items())


def _ms(value: float | None) -> str:
    return f"{value * 1000:>8.2f}" if value is not None else f"{'-':>8}"


def _x(value: float | None) -> str:
    return f"{value:>5.2f}" if value is not None else f"{'-':>5}"


def write_files(
    cells: Sequence[Cell], out: Path, stamp: str, stopped: str | None = None
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    document = {
        "benchmark": "latency",
        "complete": stopped is None,
        "stopped": stopped,
        "model": "round trips * (RTT + 2 * wake_s) + the same cell's loopback time "
        "(see bench/latency.py)",
        "cells": [c.summary() for c in cells],
        "samples": [dataclasses.asdict(c) for c in cells],
    }
    json_path = out / f"latency-{stamp}.json"
    json_path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    written.append(json_path)
    csv_path = out / f"latency-{stamp}.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["mode", "transport", "rtt_s", "kind", "index", "seconds"])
        for c in cells:
            for index, value in enumerate(c.cold_samples_s, start=1):
                writer.writerow([c.mode, c.transport, c.rtt_s, "cold", index, f"{value:.6f}"])
            for index, value in enumerate(c.warm_samples_s, start=1):
                writer.writerow([c.mode, c.transport, c.rtt_s, "warm", index, f"{value:.6f}"])
    written.append(csv_path)
    return written


def plot(cells: Sequence[Cell], out: Path, stamp: str) -> list[Path]:
    """Two PNGs: warm and cold latency by cell and RTT; measured against the model."""
    import matplotlib

    matplotlib.use("Agg")  # no screen: files only
    import matplotlib.pyplot as plt

    rtts = sorted({c.rtt_s for c in cells})
    keys = list(dict.fromkeys(c.key for c in cells))
    by = {(c.key, c.rtt_s): c for c in cells}
    figure, axes = plt.subplots(1, 2, figsize=(14, 0.35 * len(keys) + 2.5), sharey=True)
    height = 0.8 / len(rtts)
    for side, (axis, cold) in enumerate(zip(axes, (True, False), strict=True)):
        for index, rtt in enumerate(rtts):
            values = [
                (by[(k, rtt)].cold_s if cold else by[(k, rtt)].warm_median_s) * 1000
                if (k, rtt) in by
                else 0.0
                for k in keys
            ]
            positions = [i + index * height for i in range(len(keys))]
            axis.barh(positions, values, height=height, label=f"RTT {rtt * 1000:g} ms")
        axis.set_title("cold (first request)" if cold else "warm (median)")
        axis.set_xlabel("ms")
        if side == 0:
            axis.set_yticks([i + 0.4 - height / 2 for i in range(len(keys))])
            axis.set_yticklabels([f"{mode} / {name}" for mode, name in keys])
        axis.legend()
    figure.tight_layout()
    by_mode = out / f"latency-{stamp}-by-mode.png"
    figure.savefig(by_mode, dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 7))
    for cold, marker in ((True, "o"), (False, "x")):
        points = []
        for c in cells:
            predicted = c.predicted_cold_s if cold else c.predicted_warm_s
            if c.rtt_s > 0 and predicted:
                points.append((predicted, c.cold_s if cold else c.warm_median_s))
        if points:
            axis.scatter(
                [p * 1000 for p, _ in points],
                [m * 1000 for _, m in points],
                marker=marker,
                label="cold" if cold else "warm median",
            )
    top = max([c.cold_s for c in cells] + [c.warm_median_s for c in cells] + [1e-3]) * 1100
    axis.plot([0, top], [0, top], color="grey", linewidth=1, label="measured = model")
    axis.set_xlabel("model: round trips * (RTT + 2 wake-ups) + loopback (ms)")
    axis.set_ylabel("measured (ms)")
    axis.set_title("measured against the round-trip model")
    axis.legend()
    figure.tight_layout()
    against = out / f"latency-{stamp}-model.png"
    figure.savefig(against, dpi=110)
    plt.close(figure)
    return [by_mode, against]


def run_latency(args: argparse.Namespace) -> int:
    if args.requests < 1 or args.warmup < 0 or args.cold < 1:
        print(
            "handshake-lab bench latency: --requests and --cold at least 1, --warmup at least 0",
            file=sys.stderr,
        )
        return 2
    reason = lab_unavailable_reason()
    if args.rtt is None:
        args.rtt = [0.0] if reason else [0.0, 0.02]
        if reason:
            print(
                f"handshake-lab bench latency: loopback only (RTT 0): {reason}; as root, "
                "--rtt 0,20ms adds round trips over the lab network's wire",
                file=sys.stderr,
            )
    if any(r > 0 for r in args.rtt) and reason is not None:
        print(
            f"handshake-lab bench latency: an RTT above 0 runs over the lab network's "
            f"wire, which cannot run here: {reason}. Use --rtt 0 (loopback) without root.",
            file=sys.stderr,
        )
        return 2
    try:  # before the run, not after it: a path that cannot be written must not cost one
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=args.out):
            pass
    except OSError as exc:
        print(
            f"handshake-lab bench latency: cannot write {args.out}: {exc.strerror}", file=sys.stderr
        )
        return 2
    cells: list[Cell] = []
    status, stopped = 0, None
    try:
        asyncio.run(
            run_matrix(
                args.rtt,
                args.modes,
                args.transports,
                args.requests,
                args.warmup,
                progress_bar,
                colds=args.cold,
                cells=cells,
            )
        )
    except KeyboardInterrupt:
        status, stopped = 130, "interrupted"
    except (OSError, RuntimeError, TimeoutError) as exc:
        status, stopped = 1, f"failed: {exc!r}"
    if stopped is not None:
        print(f"\nhandshake-lab bench latency: {stopped}; writing the cells measured so far",
              file=sys.stderr)  # fmt: skip
        apply_model(cells)
        if not cells:
            return status
    print(table(cells))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    written = write_files(cells, args.out, stamp, stopped)
    if not args.no_plots:
        written += plot(cells, args.out, stamp)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    add_latency_arguments(parser)
    return run_latency(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
