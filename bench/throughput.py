"""`handshake-lab bench throughput`: requests/s of our server against uvicorn and aiohttp.

Method
------
Every cell of the matrix (servers by modes by transports) is one fresh server process, pinned
to one CPU (`--server-cpu`, default 0) and bound to 127.0.0.1, under one load generator
pinned to the other CPU (`--generator-cpu`, default 1), so the two never share a core:

  servers     ours_on        handshake-lab server, metrics endpoint + JSON event log to a
                             temporary file + its kernel sampler (ss) at its defaults
              ours_off       handshake-lab server --metrics-port 0 --log-format off
                             --ss-interval 0
              uvicorn_log    uvicorn --http h11 --loop asyncio bench.asgi_app, access log on
              uvicorn_nolog  the same with --no-access-log
              aiohttp        aiohttp.web (bench/aiohttp_app.py), no access log
  modes       keepalive      HTTP/1.1 requests reusing `--connections` connections
              http10         `GET / HTTP/1.0`: one new connection per request, which the
                             server closes first (so TIME_WAIT lands on the server's port)
  transports  plain          TCP
              tls            real TLS (Python's ssl on every server; the lab's RSA
                             certificate, made for 127.0.0.1 in a temporary directory)
              toy            our toy TLS (handshake_tls): only our server speaks it

Our server runs with `--max-requests-per-connection 1000000`: by default it closes a
keep-alive connection after 100 requests (to show the server as the active closer), which
uvicorn and aiohttp do not do; lifting it keeps "keep-alive" meaning the same for all.

Load: wrk when installed (`--generator auto`; wrk sends HTTP/1.1 `Connection: close` for
http10 and cannot speak the toy TLS, so those cells use ours), else `bench.loadgen`: our
own asyncio generator, one Protocol per connection. Each cell: warm-up (`--warmup`, not
measured), then `--duration` seconds measured; the server's CPU time (utime + stime, all
threads, /proc) is read at the window's edges, and the generator's own CPU over the same
window tells whether it, not the server, was the bottleneck (≥ 90 % of a core: marked
"generator saturated"). During http10 cells the count of TIME_WAIT sockets on the server's
port is sampled with `ss -tanH state time-wait '( sport = :PORT )'` a few times.

Cells are interleaved in rounds (`--rounds`): in each round every (mode, transport) group
runs all servers back to back, in an order rotated each round, and each server is
compared with uvicorn *in the same round* (the VM's speed drifts by ±20 % over minutes).
For ours_on, the server's own metrics are scraped at the window's edges (requests and
connections it counted), a check that telemetry was really on and of the connection count.

Output: a progress line per cell on stderr, tables on stdout, the JSON of every cell in
`--out` (default out/bench). Everything listens on and connects to 127.0.0.1 only; every
process started is stopped on exit, error, Ctrl-C and SIGTERM.

    .venv/bin/python -m bench.throughput              # the full matrix, about 7 minutes
    .venv/bin/python -m bench.throughput --quick      # 2 s per cell, one round, ~1.5 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench.common import (
    HOST,
    REPO_ROOT,
    VENV_BIN,
    Probe,
    Processes,
    comma_list,
    cpu_busy_seconds,
    cpu_seconds,
    free_port,
    log,
    pinned,
    scrape_metrics,
    source_digest,
    start_results,
    wait_until_serving,
    write_json,
)
from bench.loadgen import MARKER, SATURATED_AT
from bench.wrk import run_wrk
from handshake_tls.certs import make_lab_certificates

if TYPE_CHECKING:
    from collections.abc import Sequence

SERVERS: Final = ("ours_on", "ours_off", "uvicorn_log", "uvicorn_nolog", "aiohttp")
MODES: Final = ("keepalive", "http10")
TRANSPORTS: Final = ("plain", "tls", "toy")
TOY_SERVERS: Final = ("ours_on", "ours_off")  # the others do not speak the toy TLS
GENERATORS: Final = ("auto", "wrk", "ours")
LABELS: Final = {
    "ours_on": "handshake-lab server, telemetry on (metrics + JSON log file + ss sampler)",
    "ours_off": "handshake-lab server, telemetry off",
    "uvicorn_log": "uvicorn --http h11 --loop asyncio, access log on",
    "uvicorn_nolog": "uvicorn --http h11 --loop asyncio --no-access-log",
    "aiohttp": "aiohttp.web, no access log",
    "keepalive": "HTTP/1.1 keep-alive",
    "http10": "HTTP/1.0, a new connection per request",
    "plain": "TCP",
    "tls": "real TLS (Python ssl, RSA certificate)",
    "toy": "toy TLS (handshake_tls, ecdhe)",
}
# Same-round comparisons: (name, numerator, denominator). The goal of issue 6 is the first
# in keep-alive: telemetry on against uvicorn with its access log on (both keep a log).
RATIOS: Final = (
    ("ours_on/uvicorn_log", "ours_on", "uvicorn_log"),
    ("ours_on/uvicorn_nolog", "ours_on", "uvicorn_nolog"),
    ("ours_off/uvicorn_nolog", "ours_off", "uvicorn_nolog"),
    ("aiohttp/uvicorn_nolog", "aiohttp", "uvicorn_nolog"),
    ("ours_on/ours_off", "ours_on", "ours_off"),
)
GOAL: Final = ("keepalive", "plain", "ours_on/uvicorn_log", 1.0)
OURS_ARGS: Final = ("--max-requests-per-connection", "1000000")
GENERATOR_STARTUP_S: Final = 1.0  # time allowed for the generator process to import and connect
CONTENDED_SERVER_CORE: Final = 0.15
CONTENDED_GENERATOR_CORE: Final = 0.25
QUICK_DURATION_S: Final = 2.0
QUICK_WARMUP_S: Final = 0.5


# --- the servers ---------------------------------------------------------------------------


def server_command(
    server: str, transport: str, ports: dict[str, int], run_dir: Path, certs: Path
) -> list[str]:
    """The command line of `server`, listening for `transport` on `ports[transport]`."""
    cert, key = str(certs / "server-rsa.pem"), str(certs / "server-rsa.key")
    if server.startswith("ours_"):
        argv = [str(VENV_BIN / "handshake-lab"), "server", "--host", HOST]
        argv += ["--port", str(ports["plain"]), "--certs-dir", str(certs)]
        argv += ["--toy-tls-port", str(ports["toy"])] if transport == "toy" else ["--no-toy-tls"]
        argv += ["--real-tls-port", str(ports["tls"])] if transport == "tls" else ["--no-real-tls"]
        if server == "ours_on":
            argv += ["--metrics-host", HOST, "--metrics-port", str(ports["metrics"])]
            argv += ["--log-format", "json", "--log-file", str(run_dir / "events.jsonl")]
        else:
            argv += ["--metrics-port", "0", "--log-format", "off", "--ss-interval", "0"]
        return [*argv, *OURS_ARGS]
    if server.startswith("uvicorn_"):
        argv = [str(VENV_BIN / "uvicorn"), "bench.asgi_app:app", "--app-dir", str(REPO_ROOT)]
        argv += ["--http", "h11", "--loop", "asyncio", "--host", HOST]
        argv += ["--port", str(ports[transport])]
        if transport == "tls":
            argv += ["--ssl-keyfile", key, "--ssl-certfile", cert]
        return [*argv, "--no-access-log"] if server == "uvicorn_nolog" else argv
    if server == "aiohttp":
        argv = [sys.executable, "-m", "bench.aiohttp_app", "--port", str(ports[transport])]
        return [*argv, "--certfile", cert, "--keyfile", key] if transport == "tls" else argv
    raise ValueError(f"unknown server {server!r}")


def https_get(port: int, context: ssl.SSLContext, timeout_s: float = 2.0) -> tuple[Probe, str]:
    """One HTTPS GET with `Connection: close`, read to the end; and the TLS version."""
    with (
        socket.create_connection((HOST, port), timeout=timeout_s) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as sock,
    ):
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ssl.SSLEOFError:
            pass  # a server that closes TCP without close_notify: the response is complete
        version = sock.version() or "?"
    head, _sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    return Probe(int(head.split(b" ", 2)[1]), len(body), head.decode("latin-1")), version


def wait_ready(
    process: subprocess.Popen[bytes],
    transport: str,
    ports: dict[str, int],
    context: ssl.SSLContext,
    timeout_s: float = 20.0,
) -> tuple[Probe, str]:
    """Wait until the server answers on the port measured; its answer and TLS version."""
    if transport == "plain":
        return wait_until_serving(process, ports["plain"], timeout_s=timeout_s), "-"
    if transport == "toy":  # our server: plain answers once every listener is up
        return wait_until_serving(process, ports["plain"], timeout_s=timeout_s), "toy"
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before serving")
        try:
            return https_get(ports["tls"], context)
        except (OSError, ValueError, IndexError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no HTTPS on port {ports['tls']}: {exc}") from exc
            time.sleep(0.05)


# --- TIME_WAIT on the server's port ----------------------------------------------------------


class TimeWaitSampler:
    """Counts the TIME_WAIT sockets of the server's port with `ss` every `interval_s`, in a
    thread, on the generator's CPU (it must not take the server's): on the server's end
    (local port = PORT: the server closed first) and on the clients' (remote port = PORT:
    the client closed first). Whoever sends the first FIN holds TIME_WAIT."""

    def __init__(self, port: int, interval_s: float, cpu: int | None) -> None:
        self.port = port
        self.interval_s = interval_s
        self.cpu = cpu
        # (seconds into the window, on the server's end, on the clients' end)
        self.samples: list[tuple[float, int, int]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0

    def count(self) -> tuple[int, int] | None:
        """(server's end, clients' end), or None when ss fails."""
        port = self.port
        argv = ["ss", "-tanH", "state", "time-wait", f"( sport = :{port} or dport = :{port} )"]
        try:
            done = subprocess.run(
                pinned(argv, self.cpu), capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self.error = f"ss failed: {exc}"
            return None
        server = client = 0
        suffix = f":{port}"
        for line in done.stdout.splitlines():
            fields = line.split()  # Recv-Q Send-Q Local:Port Peer:Port (no State column)
            if len(fields) >= 4:
                if fields[2].endswith(suffix):
                    server += 1
                else:
                    client += 1
        return server, client

    def _sample(self) -> None:
        counts = self.count()
        if counts is not None:
            self.samples.append((time.monotonic() - self._started, *counts))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> None:
        self._started = time.monotonic()
        self._sample()
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self._sample()  # at the window's end: TIME_WAIT lasts 60 s, so this is the peak
        return {
            "time_wait_samples": self.samples,
            "time_wait_peak": max((s[1] for s in self.samples), default=None),
            "time_wait_client_peak": max((s[2] for s in self.samples), default=None),
            "time_wait_error": self.error,
        }


# --- one cell --------------------------------------------------------------------------------


def choose_generator(requested: str, transport: str) -> str:
    """wrk when asked (or, for auto, installed), except for the toy TLS, which only we speak."""
    if transport == "toy" or requested == "ours":
        return "ours"
    if requested == "wrk" or shutil.which("wrk"):
        return "wrk"
    return "ours"


def run_loadgen(
    processes: Processes,
    args: argparse.Namespace,
    mode: str,
    transport: str,
    port: int,
    ca: Path,
    window_start: float,
    run_dir: Path,
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bench.loadgen", "--json", "--port", str(port)]
    argv += ["--mode", mode, "--transport", transport, "--connections", str(args.connections)]
    argv += ["--duration", str(args.duration), "--window-start", repr(window_start)]
    argv += ["--cafile", str(ca), "--path", args.path]
    return processes.start("loadgen", argv, cpu=args.generator_cpu, output=run_dir / "loadgen.out")


def read_loadgen(output: Path) -> dict[str, Any]:
    text = output.read_text(errors="replace")
    for line in text.splitlines():
        if line.startswith(MARKER):
            result: dict[str, Any] = json.loads(line.removeprefix(MARKER))
            return result
    raise RuntimeError(f"the load generator gave no result:\n{text[-2000:]}")


def run_cell(
    processes: Processes,
    server: str,
    mode: str,
    transport: str,
    args: argparse.Namespace,
    certs: Path,
) -> dict[str, Any]:
    """One fresh server under one measured load; the cell's record."""
    ports = {name: free_port() for name in ("plain", "tls", "toy", "metrics")}
    port = ports[transport]
    generator = choose_generator(args.generator, transport)
    client_context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with tempfile.TemporaryDirectory(prefix="hl-throughput-") as tmp:
        run_dir = Path(tmp)
        ours = server.startswith("ours_")
        process = processes.start(
            server,
            server_command(server, transport, ports, run_dir, certs),
            cpu=args.server_cpu,
            output=run_dir / "server.out",
            stop_signal=signal.SIGINT if ours else signal.SIGTERM,
        )
        sampler = TimeWaitSampler(port, max(0.5, args.duration / 5), args.generator_cpu)
        try:
            probe, tls_version = wait_ready(process, transport, ports, client_context)
            if generator == "ours":
                window_start = time.monotonic() + GENERATOR_STARTUP_S + args.warmup
                load = run_loadgen(
                    processes, args, mode, transport, port, certs / "ca.pem", window_start, run_dir
                )
                time.sleep(max(0.0, window_start - time.monotonic()))
            else:
                url = f"{'https' if transport == 'tls' else 'http'}://{HOST}:{port}{args.path}"
                headers = ["Connection: close"] if mode == "http10" else []
                if args.warmup > 0:
                    run_wrk(
                        url,
                        duration_s=max(1, round(args.warmup)),
                        connections=args.connections,
                        headers=headers,
                        cpu=args.generator_cpu,
                    )
            metrics_before = scrape_metrics(ports["metrics"]) if server == "ours_on" else None
            busy_before = cpu_busy_seconds()
            cpu_before = cpu_seconds(process.pid)
            if mode == "http10":
                sampler.start()
            if generator == "ours":
                time.sleep(args.duration)
                cpu_used = cpu_seconds(process.pid) - cpu_before
                busy_after = cpu_busy_seconds()
                load.wait(timeout=args.duration + 30)
                result = read_loadgen(run_dir / "loadgen.out")
            else:
                wrk = run_wrk(
                    url,
                    duration_s=max(1, round(args.duration)),
                    connections=args.connections,
                    headers=headers,
                    cpu=args.generator_cpu,
                )
                cpu_used = cpu_seconds(process.pid) - cpu_before
                busy_after = cpu_busy_seconds()
                result = wrk_result(
                    wrk.to_dict(),
                    mode,
                    transport,
                    args.connections,
                    busy_before,
                    busy_after,
                    args.generator_cpu,
                )
            time_wait = sampler.stop() if mode == "http10" else {}
            metrics_after = scrape_metrics(ports["metrics"]) if server == "ours_on" else None
        finally:
            exit_code = processes.stop(process)
    duration = result["duration_s"]
    responses = result["responses"]
    record: dict[str, Any] = {
        "server": server,
        "mode": mode,
        "transport": transport,
        "generator": generator,
        "port": port,
        "source_sha256": source_digest(),
        "probe_status": probe.status,
        "response_body_bytes": probe.body_bytes,
        "response_head_bytes": len(probe.head) + 4,
        "tls_version": tls_version,
        "load": result,
        "requests_per_s": result["requests_per_s"],
        "errors_total": result["errors_total"],
        "generator_cpu_utilisation": result["cpu_utilisation"],
        "generator_saturated": result["saturated"],
        "server_cpu_s": cpu_used,
        "server_cpu_utilisation": cpu_used / duration if duration else 0.0,
        "server_cpu_us_per_request": cpu_used / responses * 1e6 if responses else 0.0,
        "cpu_busy_s": {
            cpu: after - busy_before["busy"][cpu] for cpu, after in busy_after["busy"].items()
        },
        "cpu_steal_s": {
            cpu: after - busy_before["steal"][cpu] for cpu, after in busy_after["steal"].items()
        },
        "server_exit_code": exit_code,
        **time_wait,
    }
    # Whole-core busy shares: the generator's core also does the kernel's loopback work, and
    # whatever else runs on the machine shows up as busy time no process of ours used.
    busy = record["cpu_busy_s"]
    record["server_core_busy"] = busy[args.server_cpu] / duration if duration else 0.0
    record["generator_core_busy"] = busy[args.generator_cpu] / duration if duration else 0.0
    if metrics_before is not None and metrics_after is not None:
        record["metrics"] = {
            name: metrics_after.get(name, 0.0) - metrics_before.get(name, 0.0)
            for name in (
                "http_server_request_duration_seconds_count",
                "handshake_lab_connections_opened_total",
            )
        }
    return record


def wrk_result(
    raw: dict[str, Any],
    mode: str,
    transport: str,
    connections: int,
    busy_before: dict[str, dict[int, float]],
    busy_after: dict[str, dict[int, float]],
    cpu: int,
) -> dict[str, Any]:
    """wrk's figures in the generator's shape. Its CPU is the generator CPU's busy time
    (wrk, the kernel's loopback work on that CPU, and the ss samples: an upper bound)."""
    busy = busy_after["busy"][cpu] - busy_before["busy"][cpu]
    utilisation = busy / raw["duration_s"] if raw["duration_s"] else 0.0
    errors = {
        kind: raw[f"errors_{kind}"]
        for kind in ("connect", "read", "write", "status", "timeout")
        if raw[f"errors_{kind}"]
    }
    return {
        "generator": "wrk",
        "mode": mode,
        "transport": transport,
        "connections": connections,
        "duration_s": raw["duration_s"],
        "responses": raw["requests"],
        "requests_per_s": raw["requests_per_s"],
        "errors": errors,
        "errors_total": raw["errors"],
        "connections_opened": None,  # wrk does not say
        "latency_p50_us": raw["latency_p50_us"],
        "latency_p90_us": raw["latency_p90_us"],
        "latency_p99_us": raw["latency_p99_us"],
        "latency_max_us": raw["latency_max_us"],
        "cpu_s": busy,
        "cpu_utilisation": utilisation,
        "saturated": utilisation >= SATURATED_AT,
    }


def describe(record: dict[str, Any]) -> str:
    load = record["load"]
    text = (
        f"{record['requests_per_s']:8.0f} req/s, {record['server_cpu_us_per_request']:6.0f} µs "
        f"CPU/req (server {record['server_cpu_utilisation']:.0%}, generator "
        f"{record['generator_cpu_utilisation']:.0%}), p50 {load['latency_p50_us'] / 1000:.1f} ms"
        f" p99 {load['latency_p99_us'] / 1000:.1f} ms"
    )
    text += (
        f", cores busy {record['server_core_busy']:.0%} (server's) "
        f"{record['generator_core_busy']:.0%} (generator's)"
    )
    if record.get("time_wait_peak") is not None:
        text += (
            f", TIME_WAIT peak {record['time_wait_peak']} on the server's end, "
            f"{record['time_wait_client_peak']} on the clients'"
        )
    if record["errors_total"]:
        text += f", ERRORS {load['errors']}"
    if record["generator_saturated"]:
        text += ", GENERATOR SATURATED"
    if contended(record):
        text += ", another process used the cores"
    return text


# --- the matrix ------------------------------------------------------------------------------


def cells(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(mode, transport) groups, each run over every server that speaks the transport."""
    return [(mode, transport) for mode in args.mode_list for transport in args.transport_list]


def servers_for(transport: str, servers: Sequence[str]) -> list[str]:
    return [s for s in servers if transport != "toy" or s in TOY_SERVERS]


def contended(run: dict[str, Any]) -> bool:
    """Did something else use the cores during this run? A core's busy time beyond what
    the process pinned to it used: kernel work adds up to ~10 % on an idle machine, so
    more than 15 % on the server's core or 25 % on the generator's (which also carries the
    kernel's share of loopback traffic) means another process took CPU time."""
    return bool(
        run["server_core_busy"] - run["server_cpu_utilisation"] > CONTENDED_SERVER_CORE
        or run["generator_core_busy"] - run["generator_cpu_utilisation"] > CONTENDED_GENERATOR_CORE
    )


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds per cell, and the same-round ratios."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["mode"], run["transport"], run["server"]), []).append(run)
    summary_cells = {}
    for (mode, transport, server), group in groups.items():
        rps = [r["requests_per_s"] for r in group]
        peaks = [r["time_wait_peak"] for r in group if r.get("time_wait_peak") is not None]
        client_peaks = [
            r["time_wait_client_peak"] for r in group if r.get("time_wait_client_peak") is not None
        ]
        summary_cells[f"{mode}/{transport}/{server}"] = {
            "mode": mode,
            "transport": transport,
            "server": server,
            "rounds": len(group),
            "requests_per_s_median": statistics.median(rps),
            "requests_per_s_min": min(rps),
            "requests_per_s_max": max(rps),
            "cpu_us_per_request_median": statistics.median(
                r["server_cpu_us_per_request"] for r in group
            ),
            "latency_p50_ms_median": statistics.median(
                r["load"]["latency_p50_us"] / 1000 for r in group
            ),
            "latency_p99_ms_median": statistics.median(
                r["load"]["latency_p99_us"] / 1000 for r in group
            ),
            "errors": sum(r["errors_total"] for r in group),
            "server_cpu_utilisation_median": statistics.median(
                r["server_cpu_utilisation"] for r in group
            ),
            "generator_cpu_max": max(r["generator_cpu_utilisation"] for r in group),
            "generator_core_busy_max": max(r["generator_core_busy"] for r in group),
            "generator_saturated": any(r["generator_saturated"] for r in group),
            "contended_rounds": sum(contended(r) for r in group),
            "time_wait_peak_max": max(peaks) if peaks else None,
            "time_wait_client_peak_max": max(client_peaks) if client_peaks else None,
        }
    by_round: dict[tuple[str, str, int], dict[str, dict[str, Any]]] = {}
    for run in runs:
        by_round.setdefault((run["mode"], run["transport"], run["round"]), {})[run["server"]] = run
    ratios: dict[str, Any] = {}
    for (mode, transport, _round), servers in sorted(by_round.items()):
        for name, numerator, denominator in RATIOS:
            if numerator in servers and denominator in servers:
                a, b = servers[numerator], servers[denominator]
                entry = ratios.setdefault(
                    f"{mode}/{transport}/{name}",
                    {"mode": mode, "transport": transport, "ratio": name, "per_round": []},
                )
                entry["per_round"].append(a["requests_per_s"] / b["requests_per_s"])
                entry.setdefault("contended", []).append(contended(a) or contended(b))
    for entry in ratios.values():
        entry["median"] = statistics.median(entry["per_round"])
    # What each transport costs each server, against plain TCP in the same round.
    transport_cost: dict[str, Any] = {}
    plain = {(r["mode"], r["server"], r["round"]): r for r in runs if r["transport"] == "plain"}
    for run in runs:
        base = plain.get((run["mode"], run["server"], run["round"]))
        if run["transport"] == "plain" or base is None:
            continue
        key = f"{run['mode']}/{run['server']}/{run['transport']}/plain"
        transport_cost.setdefault(key, []).append(run["requests_per_s"] / base["requests_per_s"])
    mode, transport, name, goal = GOAL
    goal_entry = ratios.get(f"{mode}/{transport}/{name}")
    return {
        "cells": summary_cells,
        "ratios": ratios,
        "transport_cost": {
            key: {"per_round": values, "median": statistics.median(values)}
            for key, values in transport_cost.items()
        },
        "goal": {
            "what": f"{mode} {transport}: {name} ≥ {goal}",
            "median": goal_entry["median"] if goal_entry else None,
            "per_round": goal_entry["per_round"] if goal_entry else [],
            "met": goal_entry["median"] >= goal if goal_entry else None,
        },
    }


def markdown(summary: dict[str, Any], args: argparse.Namespace) -> str:
    """The summary as Markdown tables, ready for docs/benchmarks.md."""
    cells_ = summary["cells"]
    columns = cells(args)
    lines = [
        "req/s, median over rounds (server CPU µs per request); * generator saturated, "
        "† another process used the cores in some round",
        "",
        "| server | " + " | ".join(f"{m} {t}" for m, t in columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for server in args.server_list:
        row = [server]
        for mode, transport in columns:
            c = cells_.get(f"{mode}/{transport}/{server}")
            if c is None:
                row.append("no toy TLS" if transport == "toy" else "-")
                continue
            text = f"{c['requests_per_s_median']:,.0f} ({c['cpu_us_per_request_median']:.0f})"
            if c["generator_saturated"]:
                text += " *"
            if c["contended_rounds"]:
                text += " †"
            if c["errors"]:
                text += f" {c['errors']} errors"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "| cell | req/s median (min to max) | p50 / p99 ms | server CPU "
        "| generator CPU (its core) | TIME_WAIT peak: server's end / clients' |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, c in cells_.items():
        peak = "-"
        if c["time_wait_peak_max"] is not None:
            peak = f"{c['time_wait_peak_max']:,} / {c['time_wait_client_peak_max']:,}"
        lines.append(
            f"| {key} | {c['requests_per_s_median']:,.0f} ({c['requests_per_s_min']:,.0f} to "
            f"{c['requests_per_s_max']:,.0f}) | {c['latency_p50_ms_median']:.1f} / "
            f"{c['latency_p99_ms_median']:.1f} | {c['server_cpu_utilisation_median']:.0%} "
            f"| {c['generator_cpu_max']:.0%} ({c['generator_core_busy_max']:.0%}) | {peak} |"
        )
    if summary["ratios"]:
        lines += ["", "| ratio, same round | median | per round |", "| --- | --- | --- |"]
        for key, r in summary["ratios"].items():
            flags = r.get("contended", [False] * len(r["per_round"]))
            per_round = ", ".join(
                f"{x:.2f}{' †' if flag else ''}"
                for x, flag in zip(r["per_round"], flags, strict=True)
            )
            lines.append(f"| {key} | {r['median']:.2f} | {per_round} |")
    if summary["transport_cost"]:
        lines += [
            "",
            "| transport / plain, same server and round | median | per round |",
            "| --- | --- | --- |",
        ]
        for key, r in summary["transport_cost"].items():
            per_round = ", ".join(f"{x:.2f}" for x in r["per_round"])
            lines.append(f"| {key} | {r['median']:.2f} | {per_round} |")
    goal = summary["goal"]
    if goal["median"] is not None:
        met = "met" if goal["met"] else "NOT met"
        lines += ["", f"Goal ({goal['what']}): {goal['median']:.2f}, {met}."]
    return "\n".join(lines) + "\n"


# --- the command -----------------------------------------------------------------------------


def add_throughput_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `handshake-lab bench throughput`."""
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated, from {', '.join(SERVERS)} (default: all)",
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated: keepalive, http10 (default: both)",
    )
    parser.add_argument(
        "--transports",
        default=",".join(TRANSPORTS),
        help="comma-separated: plain, tls, toy (default: all; toy runs on our server only)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds (default: %(default)s)")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds measured per cell (default: 6, --quick: 2)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of unmeasured load first (default: 1, --quick: 0.5)",
    )
    parser.add_argument(
        "--connections", type=int, default=50, help="concurrent connections (default: 50)"
    )
    parser.add_argument(
        "--generator",
        choices=GENERATORS,
        default="auto",
        help="wrk, ours (bench.loadgen), or auto: wrk when installed (default: auto)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one round of short cells: a smoke test"
    )
    parser.add_argument("--path", default="/", help="request target (default: %(default)s)")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU for the server (0)")
    parser.add_argument(
        "--generator-cpu", type=int, default=1, help="CPU for the load generator (1)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "out" / "bench",
        help="directory for the JSON results (default: out/bench)",
    )


def _resolve(args: argparse.Namespace) -> str | None:
    """Fill in the derived settings; an error message, or None."""
    try:
        args.server_list = comma_list(args.servers, SERVERS, "--servers")
        args.mode_list = comma_list(args.modes, MODES, "--modes")
        args.transport_list = comma_list(args.transports, TRANSPORTS, "--transports")
    except argparse.ArgumentTypeError as exc:
        return str(exc)
    if args.quick:
        args.duration = QUICK_DURATION_S if args.duration is None else args.duration
        args.warmup = QUICK_WARMUP_S if args.warmup is None else args.warmup
    args.duration = 6.0 if args.duration is None else args.duration
    args.warmup = 1.0 if args.warmup is None else args.warmup
    if args.quick and args.rounds == 2:
        args.rounds = 1
    if args.generator == "wrk" and shutil.which("wrk") is None:
        return "--generator wrk: wrk is not installed (apt-get install wrk)"
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0 or args.connections < 1:
        return "--rounds and --connections must be >= 1, --duration > 0, --warmup >= 0"
    if args.transport_list == ["toy"] and not set(args.server_list) & set(TOY_SERVERS):
        return "--transports toy needs ours_on or ours_off among --servers"
    return None


def run_throughput(args: argparse.Namespace) -> int:
    """Run the matrix; print the tables; write the JSON. The exit code: 0, 1 on a failure
    or a cell with errors, 2 on bad options, 130 when interrupted."""
    if (problem := _resolve(args)) is not None:
        print(f"handshake-lab bench throughput: {problem}", file=sys.stderr)
        return 2
    results = start_results(
        "throughput",
        args,
        f"servers on CPU {args.server_cpu}, load generator on CPU {args.generator_cpu}",
        omit=("out", "func", "handler"),
    )
    results["labels"] = LABELS
    results["ours_args"] = list(OURS_ARGS)
    results["load_average_before"] = _load_average()
    results["runs"] = []
    started = time.monotonic()
    groups = cells(args)
    total = args.rounds * sum(len(servers_for(t, args.server_list)) for _m, t in groups)
    done = 0
    try:
        with tempfile.TemporaryDirectory(prefix="hl-throughput-certs-") as certs_tmp:
            certs = Path(certs_tmp)
            make_lab_certificates(certs, (HOST, "localhost"))
            with Processes() as processes:
                for round_index in range(args.rounds):
                    for mode, transport in groups:
                        servers = servers_for(transport, args.server_list)
                        shift = round_index % len(servers) if servers else 0
                        for server in servers[shift:] + servers[:shift]:
                            done += 1
                            log(
                                f"{done}/{total} round {round_index + 1} {mode:9} "
                                f"{transport:5} {server} ..."
                            )
                            record = run_cell(processes, server, mode, transport, args, certs)
                            record["round"] = round_index + 1
                            results["runs"].append(record)
                            log(f"  {server:13} {describe(record)}")
    except KeyboardInterrupt:
        log("interrupted: servers stopped; writing what was measured")
        results["interrupted"] = True
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        # ValueError: a load generator's result line that does not parse
        log(f"failed: {exc!r}; servers stopped; writing what was measured")
        results["error"] = repr(exc)
    results["elapsed_s"] = time.monotonic() - started
    results["load_average_after"] = _load_average()
    digests = sorted({run["source_sha256"] for run in results["runs"]})
    results["source_sha256_seen"] = digests
    if len(digests) > 1:
        log(f"WARNING: the code under test changed during the benchmark: {digests}")
    results["summary"] = summarise(results["runs"]) if results["runs"] else {}
    path = write_json(args.out, "throughput", results)
    if results["summary"]:
        print(markdown(results["summary"], args))
    print(f"Raw results: {path}")
    if results.get("interrupted"):
        return 130
    errors = any(run["errors_total"] for run in results["runs"])
    return 1 if results.get("error") or errors else 0


def _load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_throughput_arguments(parser)
    return run_throughput(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
