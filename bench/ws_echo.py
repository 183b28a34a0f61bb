"""WebSocket echo: round-trip latency and messages/s over one connection, ours and `websockets`.

For every run, a fresh server process is started (bound to 127.0.0.1, pinned to one CPU),
and one client in this process (pinned to the other CPU) opens one WebSocket to it, sends
--warmup unmeasured messages, then --messages small messages one after the other, each
timed with time.perf_counter from before send() to the echo received. Every echo is
compared with what was sent (same type, same content; each message is different), and a
mismatch stops the benchmark. The server's CPU time (utime + stime from /proc/PID/stat) and
this process's are read around the measured messages, for CPU time per message.

Rows (client → server):

  ours_to_ours_on           client.ws.connect (a Bus with no sinks) → our server, telemetry
                            on: JSON event log to a file + metrics enabled (the goal's case)
  websockets_to_ours_on     websockets.asyncio.client.connect → our server, telemetry on
  websockets_to_websockets  websockets.asyncio.client.connect → a websockets echo server
                            (websockets.asyncio.server.serve, this module, --serve-websockets)
  websockets_to_ours_off    websockets client → our server, --log-format off --metrics-port 0
                            (reference)

and, on request (--rows), ours_to_ours_off and ours_to_websockets. Compression is on for
every row by default (both clients offer permessage-deflate, as a browser does; each server
answers with its own default parameters, recorded as `extensions`); --no-compression turns
it off everywhere (websockets: compression=None; our client: offer_deflate=False).

The rows run one at a time, --repeat rounds, in an order rotated every round; the summary
is the median over rounds of each run's figures, and the ratio "our server / websockets
server" (messages/s, websockets client on both) is taken within each round. The goal of
the issue: our server, telemetry on, at least as fast as the websockets server (ratio ≥ 1).

--profile py-spy|cprofile runs the given rows once (default: ours_to_ours_on,
ours_to_ours_off) with the *server* sampled by py-spy or traced by cProfile during the
measured messages only, and prints where the server's CPU time per message goes.

JSON results go to --out (default out/bench); the telemetry-on event logs to a temporary
directory under it, deleted after each run unless --keep-logs.

    .venv/bin/python -m bench.ws_echo                          # 3 rounds x 4 rows, ~1-2 min
    .venv/bin/python -m bench.ws_echo --messages 2000 --repeat 1
    .venv/bin/python -m bench.ws_echo --no-compression --size 1024
    .venv/bin/python -m bench.ws_echo --profile py-spy --messages 5000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import gc
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import websockets.exceptions
from websockets.asyncio.client import connect as websockets_connect
from websockets.asyncio.server import serve as websockets_serve
from websockets.sync.client import connect as websockets_sync_connect

from bench.common import (
    HOST,
    REPO_ROOT,
    VENV_BIN,
    Processes,
    cpu_busy_seconds,
    cpu_seconds,
    free_port,
    log,
    percentile,
    source_digest,
    start_results,
    write_json,
)
from bench.profile_server import parse_collapsed
from client.ws import UpgradeFailed
from client.ws import connect as ours_connect
from handshake_lab.transport import TransportError
from handshake_lab.ws_session import ConnectionClosed
from telemetry.bus import Bus

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from types import FrameType

    from websockets.asyncio.server import ServerConnection

Data = str | bytes

PATH: Final = "/ws/echo"
# Row name → (client, server).
ROWS: Final = {
    "ours_to_ours_on": ("ours", "ours_on"),
    "websockets_to_ours_on": ("websockets", "ours_on"),
    "websockets_to_websockets": ("websockets", "websockets"),
    "websockets_to_ours_off": ("websockets", "ours_off"),
    "ours_to_ours_off": ("ours", "ours_off"),
    "ours_to_websockets": ("ours", "websockets"),
}
DEFAULT_ROWS: Final = tuple(list(ROWS)[:4])
PROFILE_ROWS: Final = ("ours_to_ours_on", "ours_to_ours_off")
SERVER_LABELS: Final = {
    "ours_on": "handshake-lab server, telemetry on (JSON event log to a file + metrics)",
    "ours_off": "handshake-lab server, telemetry off (--log-format off --metrics-port 0)",
    "websockets": "websockets.asyncio.server.serve, an echo handler",
}
CLIENT_LABELS: Final = {
    "ours": "client.ws.connect, telemetry Bus without sinks",
    "websockets": "websockets.asyncio.client.connect",
}
# (name, numerator row, denominator row, goal): messages/s ratios within a round.
RATIOS: Final = (
    (
        "our server (telemetry on) / websockets server",
        "websockets_to_ours_on",
        "websockets_to_websockets",
        1.0,
    ),
    (
        "our server (telemetry off) / websockets server",
        "websockets_to_ours_off",
        "websockets_to_websockets",
        None,
    ),
    (
        "telemetry on / off (websockets client)",
        "websockets_to_ours_on",
        "websockets_to_ours_off",
        None,
    ),
    (
        "our client / websockets client (our server, on)",
        "ours_to_ours_on",
        "websockets_to_ours_on",
        None,
    ),
)
FILLER: Final = "abcdefghijklmnopqrstuvwxyz0123456789"
# Where a server's time goes, by the files on the stack (py-spy: inclusive, a sample counts
# once per subsystem on its stack; cProfile: self time, in the first subsystem that matches).
SUBSYSTEMS: Final = (
    ("telemetry/ (Tracer.emit and the sinks)", ("telemetry/",)),
    ("json (encoder)", ("json/",)),
    ("permessage-deflate (wsproto/extensions.py)", ("wsproto/extensions.py",)),
    ("wsproto/ (framing, masking, UTF-8, deflate)", ("wsproto/",)),
    ("handshake_lab/ws_conn.py (our WS core)", ("handshake_lab/ws_conn.py",)),
    ("handshake_lab/ws_session.py (pump, send)", ("handshake_lab/ws_session.py",)),
    ("server/websocket.py (echo handler)", ("server/websocket.py",)),
    ("asyncio/queues.py (pump → handler queue)", ("asyncio/queues.py",)),
    ("asyncio/timeouts.py (asyncio.timeout)", ("asyncio/timeouts.py",)),
    ("asyncio/locks.py (write lock)", ("asyncio/locks.py",)),
    ("handshake_lab/transport.py (TCPStream)", ("handshake_lab/transport.py",)),
    ("asyncio/streams.py (StreamReader/Writer)", ("asyncio/streams.py",)),
    ("asyncio/selector_events.py (send/recv)", ("asyncio/selector_events.py",)),
    ("websockets/ (the websockets library)", ("websockets/",)),
)

# Self time of the rest (cProfile).
MORE_GROUPS: Final = (
    (
        "asyncio event loop (base_events.py, events.py, selectors.py)",
        ("asyncio/base_events.py", "asyncio/events.py", "selectors.py"),
    ),
    ("asyncio, the rest", ("asyncio/",)),
    ("server/ (connection, lifecycle)", ("server/",)),
)
IDLE: Final = "waiting in epoll_wait (idle: left out)"


def cprofile_group(file: str, function: str) -> str:
    """The subsystem a function's self time (cProfile) goes to."""
    if file == "~":  # built-in (C) functions
        if "select.epoll" in function:
            return IDLE
        if "_socket.socket" in function:
            return "socket send()/recv() (system calls)"
        if "zlib." in function:
            return "zlib (deflate, inflate: C)"
        return "other built-ins (len, isinstance, bytes and str methods...)"
    for label, patterns in SUBSYSTEMS + MORE_GROUPS:
        if any(pattern in file for pattern in patterns):
            return label
    return "other"


class EchoMismatch(RuntimeError):
    """An echo differed from the message sent."""


# --- servers -------------------------------------------------------------------------------


def _install_profile_signals(profile_path: Path | None) -> None:
    """With a path: SIGUSR1 starts cProfile in this process, SIGUSR2 stops it and writes it."""
    if profile_path is None:
        return
    profiler = cProfile.Profile()

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(profile_path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


async def serve_websockets(port: int, compression: bool) -> None:
    """A websockets echo server on 127.0.0.1:`port` until SIGTERM or SIGINT."""

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with websockets_serve(
        echo, HOST, port, compression="deflate" if compression else None
    ) as server:
        print(f"websockets echo server: listening on {HOST}:{port}", file=sys.stderr, flush=True)
        await stop.wait()
        server.close()


def serve_ours(server_args: Sequence[str]) -> int:
    """Our server, run from this module (only to cProfile it: see --cprofile-to)."""
    from server.__main__ import add_arguments, run

    parser = argparse.ArgumentParser(prog="handshake-lab server")
    add_arguments(parser)
    return run(parser.parse_args(server_args))


def server_command(
    server: str,
    port: int,
    metrics_port: int,
    log_file: Path,
    compression: bool,
    cprofile_to: Path | None = None,
) -> list[str]:
    """The command line of a server, listening on 127.0.0.1:`port`."""
    profiled = ["--cprofile-to", str(cprofile_to)] if cprofile_to else []
    if server == "websockets":
        argv = [sys.executable, "-m", "bench.ws_echo", "--serve-websockets", str(port)]
        return argv + ([] if compression else ["--no-compression"]) + profiled
    if server not in ("ours_on", "ours_off"):
        raise ValueError(f"unknown server {server!r}")
    # (--ws-ping-interval stays at its default, 20 s, as the websockets server's.)
    ours = ["--host", HOST, "--port", str(port)]
    if server == "ours_on":
        ours += [
            "--metrics-host",
            HOST,
            "--metrics-port",
            str(metrics_port),
            "--log-format",
            "json",
            "--log-file",
            str(log_file),
        ]
    else:
        ours += ["--metrics-port", "0", "--log-format", "off"]
    if cprofile_to:
        return [sys.executable, "-m", "bench.ws_echo", *profiled, "--serve-ours", "--", *ours]
    return [sys.executable, "-m", "server", *ours]


def wait_until_echoing(
    process: subprocess.Popen[bytes], url: str, output: Path, timeout_s: float = 20.0
) -> None:
    """Poll until one WebSocket message comes back from `url`; raise if the server exits."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = output.read_text(errors="replace")[-2000:] if output.exists() else ""
            raise RuntimeError(f"server exited with code {process.returncode}:\n{text}")
        try:
            with websockets_sync_connect(url, open_timeout=2, proxy=None) as probe:
                probe.send("ready?")
                answer = probe.recv(timeout=2)
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            last_error = exc
            time.sleep(0.05)
            continue
        if answer != "ready?":
            raise EchoMismatch(f"readiness probe: sent 'ready?', got {answer!r}")
        return
    raise RuntimeError(f"{url} not echoing after {timeout_s} s: {last_error!r}")


def scrape_ws_messages(metrics_port: int) -> float | None:
    """WebSocket messages our server's metrics counted as received, or None if unreadable."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{metrics_port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("handshake_lab_ws_messages_total{")
        and 'role="server"' in line
        and 'direction="received"' in line
    )


# --- clients -------------------------------------------------------------------------------


def make_payloads(start: int, count: int, size: int, binary: bool) -> list[Data]:
    """`count` different messages of `size` bytes: the index, then filler (ASCII)."""
    payloads: list[Data] = []
    filler = FILLER * (size // len(FILLER) + 1)
    for index in range(start, start + count):
        head = f"{index}:"
        text = (head + filler)[:size] if size >= len(head) else str(index)[-size:]
        payloads.append(text.encode() if binary else text)
    return payloads


async def time_round_trips(
    send: Callable[[Data], Awaitable[None]],
    receive: Callable[[], Awaitable[Data]],
    payloads: Sequence[Data],
) -> tuple[list[float], float]:
    """Each message sent and its echo read, in turn; (round trips in s, elapsed s).

    Raises:
        EchoMismatch: an echo was not the message sent.
    """
    perf = time.perf_counter
    samples: list[float] = []
    append = samples.append
    started = perf()
    for payload in payloads:
        before = perf()
        await send(payload)
        echo = await receive()
        append(perf() - before)
        if echo != payload or type(echo) is not type(payload):
            raise EchoMismatch(f"message {len(samples)}: sent {payload!r}, got back {echo!r}")
    return samples, perf() - started


class Hooks:
    """What to do around the measured messages (start and stop a profiler), and the
    server's CPU time."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def server_cpu_s(self) -> float:
        return cpu_seconds(self.server_pid)

    def before(self) -> None:
        pass

    def after(self) -> None:
        pass


async def run_client(
    client: str, url: str, args: argparse.Namespace, hooks: Hooks
) -> dict[str, Any]:
    """One connection: warm-up, then the measured messages; the run's raw figures."""
    warmup = make_payloads(0, args.warmup, args.size, args.binary)
    payloads = make_payloads(args.warmup, args.messages, args.size, args.binary)
    send: Callable[[Data], Awaitable[None]]
    receive: Callable[[], Awaitable[Data]]
    async with contextlib.AsyncExitStack() as stack:
        if client == "ours":
            ours = await ours_connect(url, bus=Bus(), offer_deflate=args.compression)
            stack.push_async_callback(ours.close)
            headers = ours.handshake.response_headers
            extensions = next(
                (v.decode() for k, v in headers if k.lower() == b"sec-websocket-extensions"), ""
            )

            async def receive_ours() -> Data:
                message = await ours.receive()
                if message is None:
                    raise EchoMismatch("the server closed the WebSocket instead of echoing")
                return message.data

            send, receive = ours.send, receive_ours
        else:
            theirs = await stack.enter_async_context(
                websockets_connect(
                    url, compression="deflate" if args.compression else None, proxy=None
                )
            )
            response = theirs.response
            extensions = response.headers.get("Sec-WebSocket-Extensions", "") if response else ""
            send, receive = theirs.send, theirs.recv
        await time_round_trips(send, receive, warmup)
        gc.collect()
        hooks.before()
        busy_before = cpu_busy_seconds()
        server_before, client_before = hooks.server_cpu_s(), time.process_time()
        samples, elapsed = await time_round_trips(send, receive, payloads)
        server_cpu = hooks.server_cpu_s() - server_before
        client_cpu = time.process_time() - client_before
        busy_after = cpu_busy_seconds()
        hooks.after()
    latencies = [sample * 1e6 for sample in samples]
    count = len(latencies)
    busy = sum(busy_after["busy"].values()) - sum(busy_before["busy"].values())
    return {
        "extensions": extensions,
        "messages": count,
        "elapsed_s": elapsed,
        "messages_per_s": count / elapsed,
        "median_us": statistics.median(latencies),
        "p90_us": percentile(latencies, 90),
        "p99_us": percentile(latencies, 99),
        "max_us": max(latencies),
        "min_us": min(latencies),
        "mean_us": statistics.fmean(latencies),
        "server_cpu_us_per_message": server_cpu / count * 1e6,
        "client_cpu_us_per_message": client_cpu / count * 1e6,
        # Busy seconds of each CPU during the measured messages, and the part of them that
        # was neither this client nor the server: other work on the machine (and the kernel).
        "cpu_busy_s": {
            cpu: after - busy_before["busy"][cpu] for cpu, after in busy_after["busy"].items()
        },
        "cpu_busy_others_s": busy - server_cpu - client_cpu,
        "cpu_steal_s": {
            cpu: after - busy_before["steal"][cpu] for cpu, after in busy_after["steal"].items()
        },
    }


# --- runs ----------------------------------------------------------------------------------


def run_one(
    processes: Processes,
    row: str,
    args: argparse.Namespace,
    run_dir: Path,
    make_hooks: Callable[[subprocess.Popen[bytes]], Hooks] = lambda process: Hooks(process.pid),
    cprofile_to: Path | None = None,
) -> dict[str, Any]:
    """A fresh server, one client connection measured on it; the record of the run."""
    client, server = ROWS[row]
    port = free_port()
    metrics_port = free_port() if server == "ours_on" else 0
    stem = f"{row}-{port}"
    log_file = run_dir / f"{stem}.events.jsonl"
    output = run_dir / f"{stem}.server.out"
    argv = server_command(server, port, metrics_port, log_file, args.compression, cprofile_to)
    source = source_digest() if server.startswith("ours") else None
    process = processes.start(server, argv, cpu=args.server_cpu, output=output)
    url = f"ws://{HOST}:{port}{PATH}"
    counted: float | None = None
    try:
        wait_until_echoing(process, url, output)
        record = asyncio.run(run_client(client, url, args, make_hooks(process)))
        if server == "ours_on":
            counted = scrape_ws_messages(metrics_port)
    finally:
        exit_code = processes.stop(process)
    record = {
        "row": row,
        "client": client,
        "server": server,
        "port": port,
        "source_sha256": source,
        **record,
        "server_exit_code": exit_code,
    }
    if server == "ours_on":
        # Telemetry really was on: the metrics counted every message (probe + warm-up
        # + measured), and the log grew by lines for each.
        record["metrics_messages_received"] = counted
        expected = 1 + args.warmup + args.messages
        if counted is not None and counted != expected:
            log(f"WARNING: the server's metrics counted {counted:.0f} messages, not {expected}")
        if log_file.exists():
            with log_file.open("rb") as events:
                record["log_lines"] = sum(1 for _line in events)
            record["log_bytes"] = log_file.stat().st_size
            if not args.keep_logs:
                log_file.unlink()
    if exit_code not in (0, -signal.SIGTERM):
        text = output.read_text(errors="replace")[-2000:] if output.exists() else ""
        log(f"WARNING: {server} exited with code {exit_code}:\n{text}")
    if not args.keep_logs:
        output.unlink(missing_ok=True)
    return record


def describe(record: dict[str, Any]) -> str:
    text = (
        f"{record['messages_per_s']:7.0f} msg/s, median {record['median_us']:5.0f} µs, "
        f"p99 {record['p99_us']:5.0f} µs, server CPU {record['server_cpu_us_per_message']:5.1f} "
        f"µs/msg, client CPU {record['client_cpu_us_per_message']:5.1f} µs/msg "
        f"[{record['extensions'] or 'no extension'}]"
    )
    steal = sum(record.get("cpu_steal_s", {}).values())
    if steal > 0.2:
        text += f", {steal:.1f} s stolen by the hypervisor"
    others = record.get("cpu_busy_others_s", 0.0) / record["elapsed_s"]
    if others > 0.1:
        text += f", other work kept the CPUs {others:.0%} busy"
    return text


def summarise(runs: list[dict[str, Any]], rows: Sequence[str]) -> dict[str, Any]:
    """Per row, the median over rounds of each figure; the ratios, within each round."""
    per_row: dict[str, Any] = {}
    for row in rows:
        records = [run for run in runs if run["row"] == row]
        if not records:
            continue
        summary = {
            key: statistics.median(r[key] for r in records)
            for key in (
                "median_us",
                "p90_us",
                "p99_us",
                "max_us",
                "messages_per_s",
                "server_cpu_us_per_message",
                "client_cpu_us_per_message",
            )
        }
        rates = [r["messages_per_s"] for r in records]
        summary |= {
            "messages_per_s_min": min(rates),
            "messages_per_s_max": max(rates),
            "rounds": len(records),
            "extensions": sorted({r["extensions"] for r in records}),
        }
        per_row[row] = summary
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["row"]] = run
    ratios = {}
    for name, numerator, denominator, goal in RATIOS:
        pairs = [
            (r[numerator], r[denominator])
            for r in by_round.values()
            if numerator in r and denominator in r
        ]
        if not pairs:
            continue
        rate = [a["messages_per_s"] / b["messages_per_s"] for a, b in pairs]
        # Latency and CPU per message, the other way up: > 1 means the numerator is better.
        latency = [b["median_us"] / a["median_us"] for a, b in pairs]
        cpu = [b["server_cpu_us_per_message"] / a["server_cpu_us_per_message"] for a, b in pairs]
        median = statistics.median(rate)
        ratios[name] = {
            "numerator": numerator,
            "denominator": denominator,
            "goal": goal,
            "messages_per_s_ratio_per_round": rate,
            "messages_per_s_ratio_median": median,
            "median_latency_ratio_median": statistics.median(latency),
            "server_cpu_ratio_median": statistics.median(cpu),
            "met": None if goal is None else median >= goal,
            "met_every_round": None if goal is None else all(x >= goal for x in rate),
        }
    return {"rows": per_row, "ratios": ratios}


def markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown tables, ready for docs/benchmarks.md."""
    lines = [
        "| client → server | median µs | p90 µs | p99 µs | max µs | messages/s (min to max) "
        "| server CPU µs/msg | client CPU µs/msg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row, s in summary["rows"].items():
        client, server = ROWS[row]
        lines.append(
            f"| {client} → {server} | {s['median_us']:.0f} | {s['p90_us']:.0f} "
            f"| {s['p99_us']:.0f} | {s['max_us']:.0f} | {s['messages_per_s']:.0f} "
            f"({s['messages_per_s_min']:.0f} to {s['messages_per_s_max']:.0f}) "
            f"| {s['server_cpu_us_per_message']:.1f} | {s['client_cpu_us_per_message']:.1f} |"
        )
    lines += [
        "",
        "| ratio (same round) | goal | messages/s ratio median (per round) "
        "| median latency, inverse | server CPU/msg, inverse | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in summary["ratios"].items():
        per_round = ", ".join(f"{x:.2f}" for x in r["messages_per_s_ratio_per_round"])
        goal = "-" if r["goal"] is None else f"≥ {r['goal']}"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(
            f"| {name} | {goal} | {r['messages_per_s_ratio_median']:.2f} ({per_round}) "
            f"| {r['median_latency_ratio_median']:.2f} | {r['server_cpu_ratio_median']:.2f} "
            f"| {met} |"
        )
    return "\n".join(lines) + "\n"


# --- profiles ------------------------------------------------------------------------------


class PySpyHooks(Hooks):
    """py-spy samples the server during the measured messages."""

    def __init__(self, processes: Processes, process: subprocess.Popen[bytes], raw: Path) -> None:
        super().__init__(process.pid)
        self.processes = processes
        self.raw = raw
        self.sampler: subprocess.Popen[bytes] | None = None
        self.rate = 0

    def before(self) -> None:
        py_spy = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
        if py_spy is None:
            raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
        argv = [py_spy, "record", "--pid", str(self.server_pid), "--rate", str(self.rate)]
        argv += ["--function", "--threads", "--format", "raw", "--output", str(self.raw)]
        self.sampler = self.processes.start(
            "py-spy",
            argv,
            output=self.raw.with_suffix(".py-spy.out"),
            stop_signal=signal.SIGINT,  # py-spy writes its output on SIGINT
        )
        time.sleep(1.0)  # let py-spy attach before the measured messages

    def after(self) -> None:
        if self.sampler is not None:
            self.processes.stop(self.sampler, timeout_s=30)


class CProfileHooks(Hooks):
    """cProfile (inside the server, see --cprofile-to) runs during the measured messages."""

    def before(self) -> None:
        os.kill(self.server_pid, signal.SIGUSR1)
        time.sleep(0.2)

    def after(self) -> None:
        os.kill(self.server_pid, signal.SIGUSR2)


def summarise_py_spy(text: str, top: int, cpu_us: float) -> dict[str, Any]:
    """Shares of the event loop thread's busy samples, and µs per message from `cpu_us`."""
    stacks = [(frames, n) for thread, frames, n in parse_collapsed(text) if thread == "MainThread"]
    # A sample in epoll_wait that py-spy counts as busy is a thread woken and runnable,
    # most often waiting for a CPU (the VM is shared), not using one: left out of the shares.
    in_select = sum(n for frames, n in stacks if frames and frames[-1][0].endswith("select"))
    stacks = [
        (frames, n) for frames, n in stacks if not frames or not frames[-1][0].endswith("select")
    ]
    total = sum(n for _frames, n in stacks)
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    subsystems: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        names = [f"{function} ({file})" for function, file in frames]
        for name in set(names):
            inclusive[name] += n
        if names:
            self_time[names[-1]] += n
        for label, patterns in SUBSYSTEMS:
            if any(pattern in file for _function, file in frames for pattern in patterns):
                subsystems[label] += n

    def shares(counter: collections.Counter[str], n: int | None) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "samples": count,
                "share": count / total,
                "us_per_message": count / total * cpu_us,
            }
            for name, count in counter.most_common(n)
            if total
        ]

    return {
        "samples": total,
        "samples_in_select_left_out": in_select,
        "server_cpu_us_per_message": cpu_us,
        "subsystems": [row for row in shares(subsystems, None) if row["samples"]],
        "inclusive": shares(inclusive, top),
        "self": shares(self_time, top),
    }


def summarise_cprofile(path: Path, top: int, messages: int, cpu_us: float) -> dict[str, Any]:
    """The heaviest functions of a cProfile dump, per message.

    cProfile's clock is wall time and its own overhead inflates functions that make many
    calls; time waiting in epoll_wait is left out, and the estimates spread the server's
    CPU time per message without the profiler (`cpu_us`) over the rest, by share.
    """
    stats = pstats.Stats(str(path))
    table: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    table = stats.stats  # type: ignore[attr-defined]
    groups: dict[str, float] = {}
    for (file, _line, function), (_cc, _nc, tottime, _ct, _callers) in table.items():
        group = cprofile_group(file, function)
        groups[group] = groups.get(group, 0.0) + tottime
    idle_s = groups.pop(IDLE, 0.0)
    busy_s = sum(groups.values())
    calls = sum(nc for _cc, nc, _tt, _ct, _callers in table.values())

    def per_message(seconds: float) -> dict[str, float]:
        share = seconds / busy_s if busy_s else 0.0
        return {
            "profiled_us_per_message": seconds / messages * 1e6,
            "share": share,
            "estimated_us_per_message": share * cpu_us,
        }

    def rows(key: int) -> list[dict[str, Any]]:
        ordered = sorted(table.items(), key=lambda item: item[1][key], reverse=True)
        chosen = [item for item in ordered if cprofile_group(item[0][0], item[0][2]) != IDLE]
        return [
            {
                "name": f"{function} ({Path(file).name}:{line})",
                "file": file,
                "calls_per_message": nc / messages,
                "self": per_message(tottime),
                "inclusive": per_message(cumtime),
            }
            for (file, line, function), (_cc, nc, tottime, cumtime, _callers) in chosen[:top]
        ]

    return {
        "busy_profiled_us_per_message": busy_s / messages * 1e6,
        "idle_profiled_us_per_message": idle_s / messages * 1e6,
        "server_cpu_us_per_message": cpu_us,
        "function_calls_per_message": calls / messages,
        "event_loop_iterations_per_message": sum(
            nc / messages
            for (file, _line, function), (_cc, nc, _tt, _ct, _c) in table.items()
            if function == "_run_once" and file.endswith("asyncio/base_events.py")
        ),
        "self_time_by_subsystem": {
            label: per_message(seconds)
            for label, seconds in sorted(groups.items(), key=lambda item: -item[1])
        },
        "by_self_time": rows(2),
        "by_inclusive_time": rows(3),
    }


def print_profile(row: str, tool: str, record: dict[str, Any], profile: dict[str, Any]) -> None:
    print(f"\n## {row}, {tool}; without the profiler: {describe(record)}")
    if tool == "py-spy":
        print(
            f"{profile['samples']} busy samples of the event loop thread (and "
            f"{profile['samples_in_select_left_out']} in select(), left out: woken, waiting "
            "for a CPU); µs/msg = share x "
            f"the server's CPU time per message without the profiler "
            f"({profile['server_cpu_us_per_message']:.1f} µs)"
        )
        print("\nSubsystems (inclusive):")
        for item in profile["subsystems"]:
            print(f"  {item['share']:6.1%} {item['us_per_message']:6.1f} µs  {item['name']}")
        for kind in ("inclusive", "self"):
            print(f"\nTop functions, {kind}:")
            for item in profile[kind]:
                print(f"  {item['share']:6.1%} {item['us_per_message']:6.1f} µs  {item['name']}")
        return
    print(
        f"cProfile: {profile['function_calls_per_message']:.0f} function calls and "
        f"{profile['event_loop_iterations_per_message']:.1f} event loop iterations per "
        f"message; {profile['busy_profiled_us_per_message']:.1f} µs busy per message under "
        f"cProfile ({profile['idle_profiled_us_per_message']:.1f} µs in epoll_wait, left out); "
        "est. µs = share of the busy time x the server's CPU time per message without the "
        f"profiler ({profile['server_cpu_us_per_message']:.1f} µs)"
    )
    print("(Inclusive times of functions that wait, like _run_once and select, count the wait.)")
    print("\nSelf time by subsystem (share, est. µs/msg, µs/msg under cProfile):")
    for label, item in profile["self_time_by_subsystem"].items():
        print(
            f"  {item['share']:6.1%} {item['estimated_us_per_message']:6.1f} "
            f"{item['profiled_us_per_message']:6.1f}  {label}"
        )
    for kind, title in (("by_self_time", "self"), ("by_inclusive_time", "inclusive")):
        print(
            f"\nTop functions by {title} time (calls/msg; self: share, est. µs/msg; "
            "inclusive: share, est. µs/msg):"
        )
        for item in profile[kind]:
            own, total = item["self"], item["inclusive"]
            print(
                f"  {item['calls_per_message']:5.1f}  {own['share']:6.1%} "
                f"{own['estimated_us_per_message']:6.1f}  {total['share']:6.1%} "
                f"{total['estimated_us_per_message']:6.1f}  {item['name']}"
            )


def profile_row(
    processes: Processes, row: str, args: argparse.Namespace, run_dir: Path
) -> dict[str, Any]:
    """One run with the server profiled during the measured messages."""
    tool = args.profile
    raw = run_dir / f"profile-{row}.{'collapsed.txt' if tool == 'py-spy' else 'prof'}"

    def hooks(process: subprocess.Popen[bytes]) -> Hooks:
        if tool == "py-spy":
            spy = PySpyHooks(processes, process, raw)
            spy.rate = args.rate
            return spy
        return CProfileHooks(process.pid)

    # First without the profiler: the server's CPU time per message that the shares divide.
    reference = run_one(processes, row, args, run_dir)
    log(f"  {row:25} without the profiler: {describe(reference)}")
    record = run_one(
        processes, row, args, run_dir, hooks, cprofile_to=raw if tool == "cprofile" else None
    )
    log(f"  {row:25} profiled: {describe(record)}")
    if not raw.exists():
        raise RuntimeError(f"{tool} wrote no profile to {raw}")
    cpu_us = reference["server_cpu_us_per_message"]
    if tool == "py-spy":
        profile = summarise_py_spy(raw.read_text(), args.top, cpu_us)
    else:
        profile = summarise_cprofile(raw, args.top, args.messages, cpu_us)
    print_profile(row, tool, reference, profile)
    kept = args.out / raw.name
    shutil.copyfile(raw, kept)
    return {
        "reference": reference,
        "record": record,
        "tool": tool,
        "profile_file": str(kept),
        **profile,
    }


# --- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ws_echo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=10_000,
        help="measured round trips per run (default: %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=500,
        help="unmeasured round trips first, on the same connection (default: %(default)s)",
    )
    parser.add_argument(
        "--size", type=int, default=16, help="bytes per message (default: %(default)s)"
    )
    parser.add_argument(
        "--binary", action="store_true", help="send binary messages (default: text)"
    )
    parser.add_argument(
        "--no-compression",
        dest="compression",
        action="store_false",
        help="no permessage-deflate on any row (default: offered by both clients, as "
        "browsers do, and accepted by both servers)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds over the rows, the order rotated each round (default: %(default)s)",
    )
    parser.add_argument(
        "--rows",
        default=None,
        help=f"comma-separated, from {', '.join(ROWS)} "
        f"(default: the first four; with --profile: {','.join(PROFILE_ROWS)})",
    )
    parser.add_argument(
        "--server-cpu", type=int, default=1, help="CPU for the server (default: %(default)s)"
    )
    parser.add_argument(
        "--client-cpu",
        type=int,
        default=0,
        help="CPU for this process, the clients (default: %(default)s)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="pin nothing: server and client go wherever the kernel puts them",
    )
    parser.add_argument(
        "--profile",
        choices=["py-spy", "cprofile"],
        help="instead of measuring: run each row once with its server profiled during the "
        "measured messages (py-spy sampling, or cProfile inside the server) and print where "
        "the server's time per message goes",
    )
    parser.add_argument(
        "--rate",
        type=int,
        default=250,
        help="py-spy samples per second; py-spy pauses the server for each, so a high rate "
        "slows it down (default: %(default)s)",
    )
    parser.add_argument(
        "--top", type=int, default=25, help="functions listed by --profile (default: 25)"
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the servers' event logs and output (in a ws_echo-* directory under --out)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "out" / "bench",
        help="directory for the JSON results (default: out/bench)",
    )
    internal = parser.add_argument_group("internal (how this script starts its servers)")
    internal.add_argument(
        "--serve-websockets",
        type=int,
        metavar="PORT",
        help="run the websockets echo server on 127.0.0.1:PORT until SIGTERM, nothing else",
    )
    internal.add_argument(
        "--serve-ours",
        action="store_true",
        help="the last option: run our server with the arguments after it, given as "
        "--serve-ours -- SERVER_ARGS (only with --cprofile-to)",
    )
    internal.add_argument(
        "--cprofile-to",
        type=Path,
        metavar="FILE",
        help="with --serve-*: SIGUSR1 starts cProfile in the server, SIGUSR2 writes it to FILE",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    server_args: list[str] = []
    if "--serve-ours" in argv:  # everything after it is for our server
        cut = argv.index("--serve-ours") + 1
        argv, server_args = argv[:cut], argv[cut:]
        server_args = server_args[1:] if server_args[:1] == ["--"] else server_args
    args = parser.parse_args(argv)
    args.server_args = server_args
    default_rows = PROFILE_ROWS if args.profile else DEFAULT_ROWS
    args.row_list = (
        [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else list(default_rows)
    )
    for row in args.row_list:
        if row not in ROWS:
            parser.error(f"unknown row {row!r}")
    if args.messages < 1 or args.warmup < 0 or args.size < 1 or args.repeat < 1:
        parser.error("--messages, --size and --repeat must be at least 1, --warmup at least 0")
    if args.no_pin:
        args.server_cpu = args.client_cpu = None
    return args


def packages() -> dict[str, str]:
    versions = {}
    for name in ("websockets", "wsproto"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_websockets is not None:
        _install_profile_signals(args.cprofile_to)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_websockets(args.serve_websockets, args.compression))
        return 0
    if args.serve_ours:
        _install_profile_signals(args.cprofile_to)
        return serve_ours(args.server_args)
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    placement = (
        "nothing pinned"
        if args.server_cpu is None
        else f"servers on CPU {args.server_cpu}, clients on CPU {args.client_cpu}"
    )
    results = start_results(
        "ws_echo",
        args,
        placement,
        omit=("out", "rows", "serve_websockets", "serve_ours", "server_args", "cprofile_to"),
    )
    results |= {
        "packages": packages(),
        "servers": SERVER_LABELS,
        "clients": CLIENT_LABELS,
        "runs": [],
        "profiles": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="ws_echo-", dir=args.out))
    started = time.monotonic()
    try:
        with Processes() as processes:
            if args.profile:
                for row in args.row_list:
                    log(f"profiling {row} with {args.profile}: {args.messages} messages ...")
                    results["profiles"].append(profile_row(processes, row, args, run_dir))
            else:
                total, done = args.repeat * len(args.row_list), 0
                for round_index in range(args.repeat):
                    shift = round_index % len(args.row_list)
                    for row in args.row_list[shift:] + args.row_list[:shift]:
                        done += 1
                        log(f"run {done}/{total} round {round_index + 1}: {row} ...")
                        record = run_one(processes, row, args, run_dir)
                        record["round"] = round_index + 1
                        results["runs"].append(record)
                        log(f"  {row:25} {describe(record)}")
    except KeyboardInterrupt:
        log("interrupted: servers stopped; writing what was measured")
        results["interrupted"] = True
    except (
        RuntimeError,
        OSError,
        subprocess.SubprocessError,
        websockets.exceptions.WebSocketException,
        TransportError,
        ConnectionClosed,
        UpgradeFailed,
    ) as exc:
        log(f"FAILED: {exc!r}; servers stopped; writing what was measured")
        results["error"] = repr(exc)
    finally:
        if not args.keep_logs:
            shutil.rmtree(run_dir, ignore_errors=True)
    results["elapsed_s"] = time.monotonic() - started
    digests = sorted({run["source_sha256"] for run in results["runs"] if run["source_sha256"]})
    results["source_sha256_seen"] = digests
    if len(digests) > 1:
        log(f"WARNING: the code under test changed during the benchmark: {digests}")
    stem = "ws_echo_profile" if args.profile else "ws_echo"
    if not args.profile:
        results["summary"] = summarise(results["runs"], args.row_list)
    path = write_json(args.out, stem, results)
    if results.get("summary", {}).get("rows"):
        print()
        print(markdown(results["summary"]))
    print(f"Raw results: {path}")
    if args.keep_logs:
        print(f"Server logs and output: {run_dir}")
    if results.get("interrupted"):
        return 130
    return 1 if results.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
