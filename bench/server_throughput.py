"""Server throughput under wrk: our server (telemetry on and off) against uvicorn (h11).

For every run, a fresh server process is started pinned to one CPU, wrk runs pinned to
the other (`wrk -t1 -c50 -d10s`, keep-alive, then again with `Connection: close`), and
the server's CPU time (utime + stime from /proc/PID/stat, all threads) is read before and
after, to give CPU time per request. The four configurations run round-robin, in a
rotated order each round, and each is compared with uvicorn *in the same round*:

  ours_on        handshake-lab server, metrics endpoint + JSON event log to a file
  ours_off       handshake-lab server --metrics-port 0 --log-format off
  uvicorn_log    uvicorn --http h11 --loop asyncio, bench.asgi_app, access log on (to a file)
  uvicorn_nolog  the same with --no-access-log

and, on request (--configs), h11_protocol and h11_streams (see below), or alt_on and
alt_off: our server run from another source tree (--alt-root DIR), to A/B test a change
against the working tree in the same rounds.

Before the main runs, for context, a bare asyncio + h11 hello-world (bench.h11_hello, as
an asyncio.Protocol and with streams) is measured once against uvicorn --no-access-log.

Log files go to a temporary directory that is deleted after each run. Raw results are
written as JSON to --out (default out/bench). Everything listens on 127.0.0.1 only.

    .venv/bin/python -m bench.server_throughput              # about 7 minutes
    .venv/bin/python -m bench.server_throughput --rounds 5 --modes keepalive
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench.common import (
    HOST,
    REPO_ROOT,
    VENV_BIN,
    Processes,
    cpu_busy_seconds,
    cpu_seconds,
    free_port,
    log,
    source_digest,
    start_results,
    wait_until_serving,
    write_json,
)
from bench.wrk import run_wrk

if TYPE_CHECKING:
    from collections.abc import Sequence

CONFIGS: Final = ("ours_on", "ours_off", "uvicorn_log", "uvicorn_nolog")
CONTEXT_CONFIGS: Final = ("h11_protocol", "h11_streams", "uvicorn_nolog")
LABELS: Final = {
    "ours_on": "handshake-lab, telemetry on (metrics + JSON log file)",
    "ours_off": "handshake-lab, telemetry off",
    "uvicorn_log": "uvicorn --http h11 --loop asyncio, access log on",
    "uvicorn_nolog": "uvicorn --http h11 --loop asyncio --no-access-log",
    "h11_protocol": "bare asyncio.Protocol + h11 hello-world",
    "h11_streams": "bare asyncio streams + h11 hello-world",
}
MODES: Final = {"keepalive": [], "close": ["Connection: close"]}
ALL_CONFIGS: Final = (*CONFIGS, "h11_protocol", "h11_streams", "alt_on", "alt_off")
# The comparisons the issue sets goals for: (name, numerator, denominator, goal); the
# last two only when the hello-worlds are among --configs (for more than one context run).
RATIOS: Final[tuple[tuple[str, str, str, float | None], ...]] = (
    ("telemetry_on_vs_uvicorn_log", "ours_on", "uvicorn_log", 1.2),
    ("telemetry_off_vs_uvicorn_nolog", "ours_off", "uvicorn_nolog", 1.3),
    ("telemetry_on_vs_off", "ours_on", "ours_off", 0.9),
    ("h11_protocol_vs_uvicorn_nolog", "h11_protocol", "uvicorn_nolog", None),
    ("h11_streams_vs_uvicorn_nolog", "h11_streams", "uvicorn_nolog", None),
    ("alt_on_vs_ours_on", "alt_on", "ours_on", None),
    ("alt_off_vs_ours_off", "alt_off", "ours_off", None),
    ("alt_on_vs_uvicorn_log", "alt_on", "uvicorn_log", 1.2),
    ("alt_off_vs_uvicorn_nolog", "alt_off", "uvicorn_nolog", 1.3),
    ("alt_on_vs_alt_off", "alt_on", "alt_off", 0.9),
)


def server_command(
    config: str,
    port: int,
    metrics_port: int,
    run_dir: Path,
    ours_args: Sequence[str],
    alt_root: Path | None = None,
) -> tuple[list[str], dict[str, str] | None]:
    """The command line of a configuration, and its environment (None: ours)."""
    if config.startswith(("ours_", "alt_")):
        if config.startswith("alt_"):
            if alt_root is None:
                raise ValueError(f"{config} needs --alt-root")
            # The same server, imported from another source tree (PYTHONPATH comes first).
            argv = [sys.executable, "-m", "handshake_lab", "server"]
            env: dict[str, str] | None = {**os.environ, "PYTHONPATH": str(alt_root)}
        else:
            argv, env = [str(VENV_BIN / "handshake-lab"), "server"], None
        argv += ["--host", HOST, "--port", str(port)]
        if config.endswith("_on"):
            argv += [
                "--metrics-host",
                HOST,
                "--metrics-port",
                str(metrics_port),
                "--log-format",
                "json",
                "--log-file",
                str(run_dir / "events.jsonl"),
            ]
        else:
            argv += ["--metrics-port", "0", "--log-format", "off"]
        return [*argv, *ours_args], env
    if config in ("uvicorn_log", "uvicorn_nolog"):
        argv = [
            str(VENV_BIN / "uvicorn"),
            "bench.asgi_app:app",
            "--app-dir",
            str(REPO_ROOT),
            "--http",
            "h11",
            "--loop",
            "asyncio",
            "--host",
            HOST,
            "--port",
            str(port),
        ]
        return ([*argv, "--no-access-log"] if config == "uvicorn_nolog" else argv), None
    if config in ("h11_protocol", "h11_streams"):
        style = config.removeprefix("h11_")
        argv = [sys.executable, "-m", "bench.h11_hello", "--port", str(port), "--style", style]
        return argv, None
    raise ValueError(f"unknown configuration {config!r}")


def scrape_request_count(metrics_port: int) -> float | None:
    """Requests the server's own metrics counted (all label sets), or None if unreadable."""
    url = f"http://{HOST}:{metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("http_server_request_duration_seconds_count{")
    )


def run_one(
    processes: Processes,
    config: str,
    mode: str,
    args: argparse.Namespace,
    duration_s: int,
) -> dict[str, Any]:
    """One fresh server, one (warm-up and) measured wrk run; returns the record."""
    port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="hl-bench-") as tmp:
        run_dir = Path(tmp)
        telemetry_on = config in ("ours_on", "alt_on")
        log_file = run_dir / ("events.jsonl" if telemetry_on else "server.out")
        argv, env = server_command(
            config, port, metrics_port, run_dir, args.ours_arg, args.alt_root
        )
        source = source_digest(args.alt_root if config.startswith("alt_") else REPO_ROOT)
        ours = config.startswith(("ours_", "alt_"))
        process = processes.start(
            config,
            argv,
            cpu=args.server_cpu,
            output=run_dir / "server.out",
            stop_signal=signal.SIGINT if ours else signal.SIGTERM,
            env=env,
        )
        try:
            probe = wait_until_serving(process, port, args.path)
            url = f"http://{HOST}:{port}{args.path}"
            headers = MODES[mode]
            if args.warmup > 0:
                run_wrk(
                    url,
                    duration_s=args.warmup,
                    connections=args.connections,
                    threads=args.threads,
                    headers=headers,
                    cpu=args.wrk_cpu,
                )
            count_before = scrape_request_count(metrics_port) if telemetry_on else None
            log_before = log_file.stat().st_size if log_file.exists() else 0
            busy_before = cpu_busy_seconds()
            cpu_before = cpu_seconds(process.pid)
            result = run_wrk(
                url,
                duration_s=duration_s,
                connections=args.connections,
                threads=args.threads,
                headers=headers,
                cpu=args.wrk_cpu,
            )
            cpu_used = cpu_seconds(process.pid) - cpu_before
            busy_after = cpu_busy_seconds()
            log_bytes = (log_file.stat().st_size if log_file.exists() else 0) - log_before
            count_after = scrape_request_count(metrics_port) if telemetry_on else None
        finally:
            exit_code = processes.stop(process)
    record: dict[str, Any] = {
        "config": config,
        "mode": mode,
        "port": port,
        "source_sha256": source,
        "response_body_bytes": probe.body_bytes,
        **result.to_dict(),
        "server_cpu_s": cpu_used,
        "server_cpu_utilisation": cpu_used / result.duration_s if result.duration_s else 0.0,
        "server_cpu_us_per_request": cpu_used / result.requests * 1e6 if result.requests else 0.0,
        "log_bytes_during_run": log_bytes,
        # Busy seconds of each CPU during the run: server + wrk + kernel + anything else.
        "cpu_busy_s": {
            cpu: after - busy_before["busy"][cpu] for cpu, after in busy_after["busy"].items()
        },
        # Seconds the hypervisor ran something else instead of this VM's CPU.
        "cpu_steal_s": {
            cpu: after - busy_before["steal"][cpu] for cpu, after in busy_after["steal"].items()
        },
        "server_exit_code": exit_code,
    }
    if count_before is not None and count_after is not None:
        record["metrics_requests_counted"] = count_after - count_before
    return record


def describe(record: dict[str, Any]) -> str:
    text = (
        f"{record['requests_per_s']:9.0f} req/s, "
        f"{record['server_cpu_us_per_request']:6.1f} µs CPU/req "
        f"(server CPU {record['server_cpu_utilisation']:.0%}), "
        f"p50 {record['latency_p50_us'] / 1000:.2f} ms"
    )
    if record["errors"]:
        text += f", {record['errors']} wrk errors"
    steal = sum(record.get("cpu_steal_s", {}).values())
    if steal > 0.2:
        text += f", {steal:.1f} s stolen by the hypervisor"
    if "metrics_requests_counted" in record:
        text += f", metrics counted {record['metrics_requests_counted']:.0f}"
    return text


def summarise(runs: list[dict[str, Any]], configs: Sequence[str]) -> dict[str, Any]:
    """Per mode: each configuration's medians, and the ratios, round by round and median."""
    summary: dict[str, Any] = {}
    for mode in sorted({run["mode"] for run in runs}):
        by_round: dict[int, dict[str, dict[str, Any]]] = {}
        for run in runs:
            if run["mode"] == mode:
                by_round.setdefault(run["round"], {})[run["config"]] = run
        per_config = {}
        for config in configs:
            rps = [r[config]["requests_per_s"] for r in by_round.values() if config in r]
            cpu = [r[config]["server_cpu_us_per_request"] for r in by_round.values() if config in r]
            if rps:
                per_config[config] = {
                    "requests_per_s_median": statistics.median(rps),
                    "requests_per_s_min": min(rps),
                    "requests_per_s_max": max(rps),
                    "cpu_us_per_request_median": statistics.median(cpu),
                    "rounds": len(rps),
                }
        ratios = {}
        for name, numerator, denominator, goal in RATIOS:
            pairs = [
                (r[numerator], r[denominator])
                for r in by_round.values()
                if numerator in r and denominator in r
            ]
            if not pairs:
                continue
            rps_ratios = [a["requests_per_s"] / b["requests_per_s"] for a, b in pairs]
            # CPU per request, the other way up: > 1 means the numerator needs less CPU.
            cpu_ratios = [
                b["server_cpu_us_per_request"] / a["server_cpu_us_per_request"] for a, b in pairs
            ]
            median = statistics.median(rps_ratios)
            ratios[name] = {
                "goal": goal,
                "rps_ratio_per_round": rps_ratios,
                "rps_ratio_median": median,
                "cpu_efficiency_ratio_per_round": cpu_ratios,
                "cpu_efficiency_ratio_median": statistics.median(cpu_ratios),
                "met": None if goal is None else median >= goal,
                "met_every_round": None
                if goal is None
                else all(ratio >= goal for ratio in rps_ratios),
            }
        summary[mode] = {"configs": per_config, "ratios": ratios}
    return summary


def markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown tables, ready for docs/benchmarks.md."""
    lines = []
    for mode, data in summary.items():
        lines += [
            f"**{mode}**",
            "",
            "| configuration | req/s median (min to max) | server CPU µs/request (median) |",
            "| --- | --- | --- |",
        ]
        for config, c in data["configs"].items():
            lines.append(
                f"| {config} | {c['requests_per_s_median']:.0f} "
                f"({c['requests_per_s_min']:.0f} to {c['requests_per_s_max']:.0f}) "
                f"| {c['cpu_us_per_request_median']:.1f} |"
            )
        lines += [
            "",
            "| ratio (same round) | goal | req/s ratio median (per round) "
            "| CPU/request ratio median | met |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, r in data["ratios"].items():
            per_round = ", ".join(f"{x:.2f}" for x in r["rps_ratio_per_round"])
            goal = "-" if r["goal"] is None else f"≥ {r['goal']}"
            met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
            lines.append(
                f"| {name} | {goal} | {r['rps_ratio_median']:.2f} ({per_round}) "
                f"| {r['cpu_efficiency_ratio_median']:.2f} | {met} |"
            )
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.server_throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default: %(default)s)")
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds per wrk run (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="seconds of unmeasured wrk load before each run, 0 for none (default: %(default)s)",
    )
    parser.add_argument("--connections", type=int, default=50, help="wrk -c (default: 50)")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t (default: 1)")
    parser.add_argument("--path", default="/", help="request target (default: %(default)s)")
    parser.add_argument(
        "--modes",
        default="keepalive,close",
        help="comma-separated: keepalive, close (wrk -H 'Connection: close') "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated, from {', '.join(ALL_CONFIGS)} (default: the first four)",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU for the server (default: 0)")
    parser.add_argument("--wrk-cpu", type=int, default=1, help="CPU for wrk (default: 1)")
    parser.add_argument(
        "--ours-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for handshake-lab server, repeatable "
        "(e.g. --ours-arg=--max-requests-per-connection=100000)",
    )
    parser.add_argument(
        "--alt-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="for the alt_on and alt_off configurations: a source tree (holding server/, "
        "client/, telemetry/, handshake_lab/) to run our server from, to A/B test a change",
    )
    parser.add_argument(
        "--skip-context", action="store_true", help="skip the bare h11 hello-world context runs"
    )
    parser.add_argument(
        "--context-duration",
        type=int,
        default=None,
        help="seconds per context run (default: --duration)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "out" / "bench",
        help="directory for the JSON results (default: out/bench)",
    )
    args = parser.parse_args(argv)
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.config_list = [c.strip() for c in args.configs.split(",") if c.strip()]
    for mode in args.mode_list:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}")
    for config in args.config_list:
        if config not in ALL_CONFIGS:
            parser.error(f"unknown configuration {config!r}")
    if any(c.startswith("alt_") for c in args.config_list) and args.alt_root is None:
        parser.error("alt_on and alt_off need --alt-root DIR")
    if args.alt_root is not None:
        args.alt_root = args.alt_root.resolve()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = start_results(
        "server_throughput",
        args,
        f"server on CPU {args.server_cpu}, wrk on CPU {args.wrk_cpu}",
        omit=("out", "mode_list", "config_list"),
    )
    results |= {
        "labels": LABELS,
        "context": [],
        "runs": [],
    }
    started = time.monotonic()
    try:
        with Processes() as processes:
            if not args.skip_context:
                duration = args.context_duration or args.duration
                for mode in args.mode_list:
                    for config in CONTEXT_CONFIGS:
                        log(f"context  {mode:9} {config:14} {duration:g} s ...")
                        record = run_one(processes, config, mode, args, duration)
                        results["context"].append(record)
                        log(f"context  {mode:9} {config:14} {describe(record)}")
            total = args.rounds * len(args.mode_list) * len(args.config_list)
            done = 0
            for round_index in range(args.rounds):
                shift = round_index % len(args.config_list)
                order = args.config_list[shift:] + args.config_list[:shift]
                for mode in args.mode_list:
                    for config in order:
                        done += 1
                        log(f"run {done}/{total} round {round_index + 1} {mode:9} {config} ...")
                        record = run_one(processes, config, mode, args, args.duration)
                        record["round"] = round_index + 1
                        results["runs"].append(record)
                        log(f"  {config:14} {describe(record)}")
    except KeyboardInterrupt:
        log("interrupted: servers stopped; writing what was measured")
        results["interrupted"] = True
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        log(f"failed: {exc!r}; servers stopped; writing what was measured")
        results["error"] = repr(exc)
    results["elapsed_s"] = time.monotonic() - started
    digests = sorted({run["source_sha256"] for run in results["context"] + results["runs"]})
    results["source_sha256_seen"] = digests
    if len(digests) > 1:
        log(f"WARNING: the code under test changed during the benchmark: {digests}")
    results["summary"] = summarise(results["runs"], args.config_list)
    if results["context"]:
        context = {r["config"] + "/" + r["mode"]: r for r in results["context"]}
        results["context_ratios"] = {
            f"{config}_vs_uvicorn_nolog/{mode}": context[f"{config}/{mode}"]["requests_per_s"]
            / context[f"uvicorn_nolog/{mode}"]["requests_per_s"]
            for mode in args.mode_list
            for config in ("h11_protocol", "h11_streams")
            if f"{config}/{mode}" in context and f"uvicorn_nolog/{mode}" in context
        }
    path = write_json(args.out, "server_throughput", results)
    print()
    if results.get("context_ratios"):
        print("Context (one run each, req/s ratio to uvicorn --no-access-log):")
        for name, ratio in results["context_ratios"].items():
            print(f"  {name}: {ratio:.2f}")
        print()
    print(markdown(results["summary"]))
    print(f"Raw results: {path}")
    if results.get("interrupted"):
        return 130
    return 1 if results.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
