"""Where our server's time goes under wrk: py-spy samples, summed per function.

Starts `handshake-lab server` pinned to one CPU (telemetry on, off, or both, one after the
other), puts wrk on it from the other CPU, and samples it with `py-spy record` (installed
in the venv: `.venv/bin/pip install py-spy`) for the measured seconds. py-spy pauses the
server for each sample (so stacks are exact); that slows it down a little, which is why
the throughput benchmark runs without it. Idle samples (the event loop waiting in epoll)
are left out, so the shares are shares of the server's busy CPU time; only the event-loop
thread is summed (the metrics endpoint's thread, waiting in select(), would otherwise show
up as busy).

Prints, per configuration, the functions with the most samples *inclusive* (on the
stack) and *self* (at the top of the stack), and the share of a few subsystems; writes
the raw collapsed stacks (for flamegraph.pl or speedscope) and a JSON summary to --out.

    .venv/bin/python -m bench.profile_server
    .venv/bin/python -m bench.profile_server --configs ours_on --mode close --duration 20
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench.common import (
    HOST,
    REPO_ROOT,
    VENV_BIN,
    Processes,
    free_port,
    install_sigterm_handler,
    log,
    machine_info,
    wait_until_serving,
    write_json,
)
from bench.server_throughput import MODES, server_command
from bench.wrk import run_wrk

if TYPE_CHECKING:
    from collections.abc import Sequence

FRAME: Final = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
# Subsystems by the file a frame is in; a sample counts once per subsystem on its stack.
SUBSYSTEMS: Final = (
    ("telemetry/ (Tracer.emit and the sinks)", ("telemetry/",)),
    ("json (encoder)", ("json/",)),
    ("prometheus_client", ("prometheus_client/",)),
    ("h11", ("h11/",)),
    ("server/http_conn.py (our HTTP core)", ("server/http_conn.py",)),
    ("server/app.py (routes)", ("server/app.py",)),
    ("urllib.parse", ("urllib/parse.py",)),
    ("asyncio/timeouts.py (asyncio.timeout)", ("asyncio/timeouts.py",)),
    ("asyncio/streams.py (StreamReader/Writer)", ("asyncio/streams.py",)),
    ("handshake_lab/transport.py (TCPStream)", ("handshake_lab/transport.py",)),
)


def parse_collapsed(text: str) -> list[tuple[str, list[tuple[str, str]], int]]:
    """py-spy's raw output with --threads: `thread (TID): NAME;frame;... count`, root first.

    Returns (thread name, frames as (function, file), samples) per line.
    """
    stacks = []
    for line in text.splitlines():
        stack_text, _sep, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        parts = stack_text.split(";")
        thread = "?"
        if parts[0].startswith("thread ("):
            thread = parts.pop(0).partition("): ")[2] or parts[0]
        frames = []
        for frame in parts:
            match = FRAME.match(frame)
            frames.append((match["function"], match["file"]) if match else (frame, ""))
        stacks.append((thread, frames, int(count)))
    return stacks


def summarise(text: str, top: int, thread: str = "MainThread") -> dict[str, Any]:
    """Shares of the samples of `thread` (the event loop's); other threads only counted."""
    all_stacks = parse_collapsed(text)
    per_thread: collections.Counter[str] = collections.Counter()
    for name, _frames, count in all_stacks:
        per_thread[name] += count
    stacks = [(frames, count) for name, frames, count in all_stacks if name == thread]
    total = sum(count for _frames, count in stacks)
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    subsystems: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        names = [f"{function} ({file})" for function, file in frames]
        for name in set(names):
            inclusive[name] += count
        if names:
            self_time[names[-1]] += count
        files = {file for _function, file in frames}
        for label, patterns in SUBSYSTEMS:
            if any(pattern in file for file in files for pattern in patterns):
                subsystems[label] += count

    def share(counter: collections.Counter[str], n: int | None) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": count, "share": count / total if total else 0.0}
            for name, count in counter.most_common(n)
        ]

    return {
        "thread": thread,
        "samples": total,
        "samples_per_thread": dict(per_thread),
        "inclusive": share(inclusive, top),
        "self": share(self_time, top),
        "subsystems": [
            {"subsystem": label, "samples": subsystems[label], "share": subsystems[label] / total}
            for label, _patterns in SUBSYSTEMS
            if total
        ],
    }


def print_summary(config: str, mode: str, rps: float, summary: dict[str, Any]) -> None:
    print(
        f"\n## {config}, {mode}: {summary['samples']} samples of the event loop thread, "
        f"{rps:.0f} req/s while sampled"
    )
    others = {k: v for k, v in summary["samples_per_thread"].items() if k != summary["thread"]}
    if others:
        print(f"(not counted: samples of other threads {others})")
    print("\nSubsystems (inclusive share of busy samples):")
    for row in summary["subsystems"]:
        print(f"  {row['share']:6.1%}  {row['subsystem']}")
    for kind in ("inclusive", "self"):
        print(f"\nTop functions, {kind}:")
        for row in summary[kind]:
            print(f"  {row['share']:6.1%}  {row['function']}")


def profile_one(
    processes: Processes, config: str, args: argparse.Namespace, py_spy: str
) -> dict[str, Any]:
    port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="hl-profile-") as tmp:
        run_dir = Path(tmp)
        argv, env = server_command(
            config, port, metrics_port, run_dir, args.ours_arg, args.alt_root
        )
        process = processes.start(
            config,
            argv,
            env=env,
            cpu=args.server_cpu,
            output=run_dir / "server.out",
            stop_signal=signal.SIGINT,
        )
        raw_path = run_dir / "stacks.txt"
        try:
            wait_until_serving(process, port, "/")
            url = f"http://{HOST}:{port}/"
            headers = MODES[args.mode]
            run_wrk(
                url, duration_s=1, connections=args.connections, headers=headers, cpu=args.wrk_cpu
            )
            sampler = processes.start(
                "py-spy",
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(process.pid),
                    "--rate",
                    str(args.rate),
                    "--function",
                    "--threads",
                    "--format",
                    "raw",
                    "--output",
                    str(raw_path),
                    "--duration",
                    str(args.duration),
                ],
                cpu=args.wrk_cpu,
                output=run_dir / "py-spy.out",
                stop_signal=signal.SIGINT,
            )
            time.sleep(0.5)  # let py-spy attach before the load starts
            result = run_wrk(
                url,
                duration_s=args.duration,
                connections=args.connections,
                headers=headers,
                cpu=args.wrk_cpu,
            )
            try:
                sampler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log("py-spy did not finish in time")
            processes.stop(sampler)
            text = raw_path.read_text() if raw_path.exists() else ""
            if not text:
                spy_out = (run_dir / "py-spy.out").read_text(errors="replace")
                raise RuntimeError(f"py-spy wrote no samples:\n{spy_out}")
        finally:
            processes.stop(process)
    args.out.mkdir(parents=True, exist_ok=True)
    stacks_file = args.out / f"profile-{config}-{args.mode}.collapsed.txt"
    stacks_file.write_text(text)
    summary = summarise(text, args.top)
    print_summary(config, args.mode, result.requests_per_s, summary)
    return {
        "config": config,
        "mode": args.mode,
        "requests_per_s_while_sampled": result.requests_per_s,
        "collapsed_stacks_file": str(stacks_file),
        **summary,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--configs",
        default="ours_on,ours_off",
        help="ours_on, ours_off, alt_on, alt_off (default: ours_on,ours_off)",
    )
    parser.add_argument("--mode", choices=list(MODES), default="keepalive")
    parser.add_argument("--duration", type=int, default=10, help="seconds sampled (10)")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second (100)")
    parser.add_argument("--connections", type=int, default=50, help="wrk -c (default: 50)")
    parser.add_argument("--top", type=int, default=25, help="functions listed (default: 25)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--wrk-cpu", type=int, default=1)
    parser.add_argument(
        "--ours-arg", action="append", default=[], metavar="ARG", help="extra server argument"
    )
    parser.add_argument(
        "--alt-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="for alt_on and alt_off: the source tree to run our server from",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "bench")
    args = parser.parse_args(argv)
    args.config_list = [c.strip() for c in args.configs.split(",") if c.strip()]
    for config in args.config_list:
        if config not in ("ours_on", "ours_off", "alt_on", "alt_off"):
            parser.error(f"unknown configuration {config!r}")
        if config.startswith("alt_") and args.alt_root is None:
            parser.error(f"{config} needs --alt-root DIR")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    install_sigterm_handler()
    py_spy = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
    if py_spy is None:
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "benchmark": "profile_server",
        "machine": machine_info(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "profiles": [],
    }
    try:
        with Processes() as processes:
            for config in args.config_list:
                log(f"profiling {config} ({args.mode}) for {args.duration} s at {args.rate} Hz")
                results["profiles"].append(profile_one(processes, config, args, py_spy))
    except KeyboardInterrupt:
        log("interrupted: processes stopped")
        return 130
    path = write_json(args.out, f"profile_server-{args.mode}", results)
    print(f"\nJSON summary: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
