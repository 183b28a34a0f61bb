"""Client latency: 1,000 sequential GETs per client against nginx on loopback.

nginx (Debian's) is started with a config written into a temporary directory, one worker,
`return 200 "ok";`, bound to 127.0.0.1 and pinned to one CPU; the clients run in this
process, pinned to the other. If nginx is missing, our own server (`/health`, telemetry
off) stands in, and the results say so.

Clients, each timed per request from the call to the whole body read (and, for the ones
that close, the connection released as the client does it):

  ours_1.1_keepalive     client.HTTPClient(http_version="1.1"), one connection reused
  ours_1.1_telemetry     the same with telemetry on: metrics + JSON log to a temp file
  ours_1.0_new_conn      HTTPClient(http_version="1.0"): a new connection per request
  ours_1.1_close         HTTPClient("1.1") sending `Connection: close`
  aiohttp_keepalive      aiohttp.ClientSession, its pool reuses one connection
  aiohttp_close          another ClientSession, every request sending `Connection: close`
  httpx_keepalive        httpx.AsyncClient, its pool reuses one connection
  httpx_close            another AsyncClient, every request sending `Connection: close`

The clients are interleaved: request i of every client runs before request i+1 of any,
in an order rotated every iteration, after an unmeasured warm-up. After each request the
event loop turns (polling) untimed for --settle-ms, so that what a client leaves running in the
background (our client closes a connection after returning the response) is not timed
as part of the next client's request.

    .venv/bin/python -m bench.client_latency
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import httpx

from bench.common import (
    HOST,
    REPO_ROOT,
    VENV_BIN,
    Processes,
    free_port,
    log,
    percentile,
    start_results,
    wait_until_serving,
    write_json,
)
from client.client import HTTPClient
from telemetry.setup import Telemetry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

CLIENTS: Final = (
    "ours_1.1_keepalive",
    "ours_1.1_telemetry",
    "ours_1.0_new_conn",
    "ours_1.1_close",
    "aiohttp_keepalive",
    "aiohttp_close",
    "httpx_keepalive",
    "httpx_close",
)
# The goal of the issue: our client's median at or below aiohttp's, like for like.
GOALS: Final = (
    ("ours_1.1_keepalive", "aiohttp_keepalive"),
    ("ours_1.0_new_conn", "aiohttp_close"),
    ("ours_1.1_close", "aiohttp_close"),
)

NGINX_CONF: Final = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen {host}:{port};
        default_type text/plain;
        location / {{ return 200 "ok"; }}
    }}
}}
"""


def start_target(
    processes: Processes, tmp: Path, cpu: int | None, prefer_nginx: bool
) -> tuple[str, str]:
    """Start nginx (or our server); returns (URL, description)."""
    port = free_port()
    nginx = shutil.which("nginx")
    if prefer_nginx and nginx:
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, host=HOST, port=port))
        process = processes.start(
            "nginx",
            [
                nginx,
                "-c",
                str(conf),
                "-p",
                str(tmp),
                "-e",
                str(tmp / "error.log"),
                "-g",
                "daemon off;",
            ],
            cpu=cpu,
            output=tmp / "nginx.out",
            stop_signal=signal.SIGQUIT,  # graceful: finish and exit
        )
        wait_until_serving(process, port, "/")
        version = _nginx_version(nginx)
        return f"http://{HOST}:{port}/", f'{version}, 1 worker, return 200 "ok"'
    log("nginx not found (or --target ours): our own server stands in, /health, telemetry off")
    argv = [
        str(VENV_BIN / "handshake-lab"),
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--metrics-port",
        "0",
        "--log-format",
        "off",
        "--max-requests-per-connection",
        "1000000",
    ]
    process = processes.start(
        "server", argv, cpu=cpu, output=tmp / "server.out", stop_signal=signal.SIGINT
    )
    wait_until_serving(process, port, "/health")
    return f"http://{HOST}:{port}/health", "handshake-lab server /health (telemetry off)"


def _nginx_version(nginx: str) -> str:
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return (done.stderr or done.stdout).strip()


class Clients:
    """Every client under test, opened and closed together."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self._stack = contextlib.AsyncExitStack()
        self.fetchers: dict[str, Callable[[], Awaitable[bytes]]] = {}
        self.telemetry: Telemetry | None = None

    async def __aenter__(self) -> Clients:
        stack = self._stack
        url = self.url
        close_header = [(b"connection", b"close")]

        def ours(
            client: HTTPClient, headers: list[tuple[bytes, bytes]] | None = None
        ) -> Callable[[], Awaitable[bytes]]:
            async def fetch() -> bytes:
                response = await client.get(url, headers)
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}")
                return response.body

            return fetch

        keepalive = await stack.enter_async_context(HTTPClient(http_version="1.1"))
        self.telemetry = Telemetry()
        self.telemetry.enable_metrics()
        self.telemetry.open_log("json", str(self.tmp / "client-events.jsonl"))
        stack.callback(self.telemetry.close)
        with_telemetry = await stack.enter_async_context(
            HTTPClient(self.telemetry.bus, http_version="1.1")
        )
        http10 = await stack.enter_async_context(HTTPClient(http_version="1.0"))
        close11 = await stack.enter_async_context(HTTPClient(http_version="1.1"))

        # One session (one pool) per variant: a shared pool would hand the keep-alive
        # variant's idle connection to the closing variant, and both would be mixed.
        def aiohttp_fetch(
            session: aiohttp.ClientSession, headers: dict[str, str] | None = None
        ) -> Callable[[], Awaitable[bytes]]:
            async def fetch() -> bytes:
                async with session.get(url, headers=headers) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"status {response.status}")
                    return body

            return fetch

        aiohttp_ka = await stack.enter_async_context(aiohttp.ClientSession())
        aiohttp_cl = await stack.enter_async_context(aiohttp.ClientSession())

        def httpx_fetch(
            client: httpx.AsyncClient, headers: dict[str, str] | None = None
        ) -> Callable[[], Awaitable[bytes]]:
            async def fetch() -> bytes:
                response = await client.get(url, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(f"status {response.status_code}")
                return response.content

            return fetch

        # trust_env=False: no proxy from the environment between us and loopback.
        httpx_ka = await stack.enter_async_context(httpx.AsyncClient(trust_env=False))
        httpx_cl = await stack.enter_async_context(httpx.AsyncClient(trust_env=False))

        self.fetchers = {
            "ours_1.1_keepalive": ours(keepalive),
            "ours_1.1_telemetry": ours(with_telemetry),
            "ours_1.0_new_conn": ours(http10),
            "ours_1.1_close": ours(close11, close_header),
            "aiohttp_keepalive": aiohttp_fetch(aiohttp_ka),
            "aiohttp_close": aiohttp_fetch(aiohttp_cl, {"Connection": "close"}),
            "httpx_keepalive": httpx_fetch(httpx_ka),
            "httpx_close": httpx_fetch(httpx_cl, {"Connection": "close"}),
        }
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()


async def settle(seconds: float) -> None:
    """Keep the event loop turning (polling, not sleeping) for `seconds`.

    Background I/O completes, and the CPU does not go idle: an idle virtual CPU is slow to
    wake up, which would add its wake-up time to every request.
    """
    deadline = time.perf_counter() + seconds
    while True:
        await asyncio.sleep(0)  # one turn of the loop: ready callbacks, then poll for I/O
        if time.perf_counter() >= deadline:
            return


async def measure(
    url: str, tmp: Path, names: Sequence[str], requests: int, warmup: int, settle_s: float
) -> dict[str, list[float]]:
    """Latencies in µs per client, interleaved request by request.

    After each request, untimed, the loop turns for `settle_s`: work a client left running
    in the background (closing a connection after returning the response) finishes
    there, instead of inside the next client's timing.
    """
    samples: dict[str, list[float]] = {name: [] for name in names}
    async with Clients(url, tmp) as clients:
        fetchers = [(name, clients.fetchers[name]) for name in names]
        log(f"warm-up: {warmup} requests per client")
        for _ in range(warmup):
            for _name, fetch in fetchers:
                await fetch()
        gc.collect()
        perf = time.perf_counter_ns
        progress_every = max(requests // 5, 1)
        for i in range(requests):
            shift = i % len(fetchers)
            for name, fetch in fetchers[shift:] + fetchers[:shift]:
                started = perf()
                body = await fetch()
                samples[name].append((perf() - started) / 1000)
                if settle_s:
                    await settle(settle_s)
                if body != b"ok" and not body.startswith(b"ok"):
                    raise RuntimeError(f"{name}: unexpected body {body[:40]!r}")
            if (i + 1) % progress_every == 0:
                medians = ", ".join(
                    f"{name} {statistics.median(values):.0f}" for name, values in samples.items()
                )
                log(f"{i + 1}/{requests} requests each; median µs so far: {medians}")
    return samples


async def profile(url: str, tmp: Path, name: str, requests: int, top: int) -> str:
    """Run one client alone under cProfile; the report, heaviest functions first."""
    async with Clients(url, tmp) as clients:
        fetch = clients.fetchers[name]
        for _ in range(50):
            await fetch()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(requests):
            await fetch()
        profiler.disable()
    report = io.StringIO()
    stats = pstats.Stats(profiler, stream=report)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return report.getvalue()


def summarise(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "median_us": statistics.median(values),
            "p95_us": percentile(values, 95),
            "p99_us": percentile(values, 99),
            "mean_us": statistics.fmean(values),
            "min_us": min(values),
            "max_us": max(values),
            "requests": len(values),
        }
        for name, values in samples.items()
        if values
    }


def markdown(summary: dict[str, dict[str, float]], goals: list[dict[str, Any]]) -> str:
    lines = [
        "| client | median µs | p95 µs | p99 µs | mean µs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['median_us']:.0f} | {s['p95_us']:.0f} | {s['p99_us']:.0f} "
            f"| {s['mean_us']:.0f} |"
        )
    lines += ["", "| goal: median at or below | ours µs | theirs µs | ratio | met |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for goal in goals:
        lines.append(
            f"| {goal['ours']} ≤ {goal['theirs']} | {goal['ours_median_us']:.0f} "
            f"| {goal['theirs_median_us']:.0f} | {goal['ratio']:.2f} "
            f"| {'yes' if goal['met'] else 'NO'} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.client_latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--requests", type=int, default=1000, help="measured requests per client (default: 1000)"
    )
    parser.add_argument(
        "--warmup", type=int, default=50, help="unmeasured requests per client (default: 50)"
    )
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=1.0,
        help="untimed pause after each request, so that background work (a close still "
        "under way) does not land in the next client's timing; 0 for none (default: 1)",
    )
    parser.add_argument(
        "--clients",
        default=",".join(CLIENTS),
        help=f"comma-separated subset of {', '.join(CLIENTS)} (default: all)",
    )
    parser.add_argument(
        "--target",
        choices=["nginx", "ours"],
        default="nginx",
        help="the server: nginx, or our own server (default: nginx, ours if nginx is missing)",
    )
    parser.add_argument("--client-cpu", type=int, default=0, help="CPU for the clients (0)")
    parser.add_argument("--server-cpu", type=int, default=1, help="CPU for the server (1)")
    parser.add_argument(
        "--profile",
        choices=CLIENTS,
        metavar="CLIENT",
        help="instead of measuring: run this client alone, --requests times, under cProfile, "
        "and print where its time goes",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "out" / "bench",
        help="directory for the JSON results (default: out/bench)",
    )
    args = parser.parse_args(argv)
    args.client_list = [c.strip() for c in args.clients.split(",") if c.strip()]
    for name in args.client_list:
        if name not in CLIENTS:
            parser.error(f"unknown client {name!r}")
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    results = start_results(
        "client_latency",
        args,
        f"clients on CPU {args.client_cpu}, server on CPU {args.server_cpu}",
        omit=("out", "client_list"),
    )
    samples: dict[str, list[float]] = {}
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="hl-bench-") as tmp, Processes() as processes:
        url, target = start_target(processes, Path(tmp), args.server_cpu, args.target == "nginx")
        log(f"target: {target} at {url}")
        results["target"] = target
        try:
            if args.profile:
                print(asyncio.run(profile(url, Path(tmp), args.profile, args.requests, 30)))
                return 0
            samples = asyncio.run(
                measure(
                    url,
                    Path(tmp),
                    args.client_list,
                    args.requests,
                    args.warmup,
                    args.settle_ms / 1000,
                )
            )
        except KeyboardInterrupt:
            log("interrupted: stopping the server")
            interrupted = True
    if interrupted:
        return 130
    summary = summarise(samples)
    goals = []
    for ours, theirs in GOALS:
        if ours in summary and theirs in summary:
            a, b = summary[ours]["median_us"], summary[theirs]["median_us"]
            goals.append(
                {
                    "ours": ours,
                    "theirs": theirs,
                    "ours_median_us": a,
                    "theirs_median_us": b,
                    "ratio": a / b,
                    "met": a <= b,
                }
            )
    results.update(summary=summary, goals=goals, samples_us=samples)
    path = write_json(args.out, "client_latency", results)
    print()
    print(f"Target: {target}; {args.requests} requests per client, interleaved")
    print(markdown(summary, goals))
    print(f"\nRaw results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
