"""What the kernel socket sampler (telemetry/sockstates.py) costs, at 0, 1,000 and 14,000
TIME_WAIT sockets on the watched port.

For each level, on 127.0.0.1: a listening socket on a free port, then N connections to
it that the client closes first (so TIME_WAIT lands on the client's end, 60 s on Linux);
then, while they last:

- one `ss` run (`run_ss`, the sampler's own command): wall time, and CPU time from the
  children's rusage (this process has no other children meanwhile); median of `--runs`;
- parsing that output (`parse_ss`) and diffing it against itself (`SocketTracker.update`,
  the steady state: nothing changed): median of `--runs`;
- a `SocketSampler` at its defaults (100 ms, 2 % of a core) on a bus with the metrics sink
  (as in the server) for `--seconds`: the interval it achieved, the share of a core it
  took (this process's and its children's CPU, minus a baseline run without the sampler),
  and the event loop's lag meanwhile: a 1 ms ticker's worst and 99th-percentile delay
  (also measured in the baseline). The first sample of a level reports every socket as
  new (N events): its cost is listed apart.

`--inline` also runs the sampler with parsing on the event loop instead of a worker
thread, to show what the thread buys.

    .venv/bin/python -m bench.ss_sampler                     # ~2 minutes
    .venv/bin/python -m bench.ss_sampler --levels 0 1000 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bench.common import HOST, REPO_ROOT, free_port, log, percentile, start_results, write_json
from telemetry import sockstates
from telemetry.bus import Bus
from telemetry.events import Name
from telemetry.metrics import Metrics
from telemetry.sockstates import SocketSampler, SocketTracker, parse_ss, run_ss
from telemetry.timeline import Timeline


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_time_wait(port: int, count: int) -> socket.socket:
    """A listener on `port` and `count` connections to it closed by the client first."""
    listener = socket.socket()
    listener.bind((HOST, port))
    listener.listen(128)
    for _ in range(count):
        client = socket.create_connection((HOST, port))
        server, _ = listener.accept()
        client.close()  # the client's FIN first: TIME_WAIT on its end
        server.close()
    return listener


def time_wait_total() -> int:
    """TIME_WAIT sockets in the whole namespace (ss walks them all, whatever the filter)."""
    out = subprocess.run(
        ["ss", "-tanH", "state", "time-wait"], capture_output=True, text=True, check=True
    ).stdout
    return len(out.splitlines())


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    """Sleep 1 ms at a time; how late each wake-up was is the loop's lag."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - started - 0.001)


async def run_window(port: int, seconds: float, *, sampler_on: bool) -> dict[str, Any]:
    """`seconds` of the ticker, with or without a sampler at its defaults."""
    bus = Bus()
    timeline = Timeline()
    bus.subscribe(timeline)
    bus.subscribe(Metrics(CollectorRegistry()).observe)
    lags: list[float] = []
    stop = asyncio.Event()
    cpu0, children0, wall0 = own_cpu_s(), children_cpu_s(), time.perf_counter()
    tick = asyncio.create_task(ticker(lags, stop))
    if sampler_on:
        async with SocketSampler(bus, [port]):
            await asyncio.sleep(seconds)
    else:
        await asyncio.sleep(seconds)
    stop.set()
    await tick
    wall = time.perf_counter() - wall0
    result: dict[str, Any] = {
        "wall_s": wall,
        "cpu_share": (own_cpu_s() - cpu0 + children_cpu_s() - children0) / wall,
        "lag_max_ms": max(lags) * 1000,
        "lag_p99_ms": percentile(lags, 99) * 1000,
    }
    taken = timeline.named(Name.KERNEL_SAMPLE_TAKEN)
    if taken:
        intervals = [e.attrs["interval_s"] for e in taken if e.attrs["interval_s"] is not None]
        result |= {
            "samples": len(taken),
            "first_sample_s": taken[0].attrs["cpu_s"],
            "first_sample_changes": taken[0].attrs["changes"],
            "later_sample_s": statistics.median(e.attrs["cpu_s"] for e in taken[1:])
            if len(taken) > 1
            else None,
            "achieved_interval_s": statistics.median(intervals) if intervals else None,
            "sampling_share": sum(e.attrs["cpu_s"] for e in taken) / wall,
        }
    return result


async def measure_level(count: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    log(f"{count} TIME_WAIT sockets on port {port}")
    started = time.perf_counter()
    listener = make_time_wait(port, count)
    made_s = time.perf_counter() - started
    try:
        walls, cpus, parses, diffs = [], [], [], []
        text = ""
        for _ in range(args.runs):
            children0, wall0 = children_cpu_s(), time.perf_counter()
            text = await run_ss([port])
            walls.append(time.perf_counter() - wall0)
            cpus.append(children_cpu_s() - children0)
            parse0 = time.perf_counter()
            samples = parse_ss(text)
            parses.append(time.perf_counter() - parse0)
            tracker = SocketTracker([port])
            tracker.update(samples)
            diff0 = time.perf_counter()
            tracker.update(samples)
            diffs.append(time.perf_counter() - diff0)
        seen = sum(1 for s in parse_ss(text) if s.state == "time_wait")
        # The sampler first: TIME_WAIT lasts 60 s, and every window must fall inside it.
        sampled = await run_window(port, args.seconds, sampler_on=True)
        baseline = await run_window(port, args.seconds, sampler_on=False)
        result: dict[str, Any] = {
            "time_wait_on_port": seen,
            "time_wait_in_namespace": time_wait_total(),
            "made_in_s": made_s,
            "ss_output_bytes": len(text),
            "ss_wall_ms": statistics.median(walls) * 1000,
            "ss_cpu_ms": statistics.median(cpus) * 1000,
            "parse_ms": statistics.median(parses) * 1000,
            "diff_ms": statistics.median(diffs) * 1000,
            "baseline": baseline,
            "sampler": sampled,
            "sampler_cpu_share": sampled["cpu_share"] - baseline["cpu_share"],
        }
        if args.inline:
            saved = sockstates.THREAD_PARSE_BYTES
            sockstates.THREAD_PARSE_BYTES = 1 << 62  # type: ignore[misc]
            try:
                result["sampler_inline_parse"] = await run_window(
                    port, args.seconds, sampler_on=True
                )
            finally:
                sockstates.THREAD_PARSE_BYTES = saved  # type: ignore[misc]
        log(
            f"  ss {result['ss_wall_ms']:.1f} ms wall / {result['ss_cpu_ms']:.1f} ms CPU, "
            f"parse {result['parse_ms']:.1f} ms, achieved interval "
            f"{sampled.get('achieved_interval_s')}, sampler CPU "
            f"{100 * result['sampler_cpu_share']:.2f} %, lag max {sampled['lag_max_ms']:.1f} ms"
        )
        return result
    finally:
        listener.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = start_results("ss_sampler", args, "one process, 127.0.0.1", omit={"out"})
    results["levels"] = {}
    for count in args.levels:
        results["levels"][str(count)] = await measure_level(count, args)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 1000, 14000])
    parser.add_argument("--runs", type=int, default=20, help="ss runs per level (medians)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="sampler window per level; 2-3 windows must fit in TIME_WAIT's 60 s",
    )
    parser.add_argument("--inline", action="store_true", help="also parse on the loop")
    parser.add_argument("--out", default=str(REPO_ROOT / "out" / "bench"))
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    path = write_json(Path(args.out), "ss_sampler", results)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
