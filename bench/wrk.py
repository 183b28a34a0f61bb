"""Run wrk once and read its numbers (through a Lua `done()` hook, not by scraping text)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from bench.common import pinned

REPORT_SCRIPT: Final = Path(__file__).with_name("wrk_report.lua")
MARKER: Final = "WRK_JSON "


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    bytes: int
    errors_connect: int
    errors_read: int
    errors_write: int
    errors_status: int  # responses that were not 2xx or 3xx
    errors_timeout: int
    latency_mean_us: float
    latency_p50_us: float
    latency_p90_us: float
    latency_p99_us: float
    latency_max_us: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        return (
            self.errors_connect
            + self.errors_read
            + self.errors_write
            + self.errors_status
            + self.errors_timeout
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requests_per_s": self.requests_per_s, "errors": self.errors}


def run_wrk(
    url: str,
    *,
    duration_s: int,
    connections: int = 50,
    threads: int = 1,
    headers: list[str] | None = None,
    cpu: int | None = None,
) -> WrkResult:
    """`wrk -tT -cC -dDs [-H ...] URL` pinned to `cpu`; raises if wrk fails."""
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "-s",
        str(REPORT_SCRIPT),
    ]
    for header in headers or []:
        argv += ["-H", header]
    argv.append(url)
    done = subprocess.run(
        pinned(argv, cpu),
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            raw = json.loads(line.removeprefix(MARKER))
            return WrkResult(
                requests=raw["requests"],
                duration_s=raw["duration_us"] / 1e6,
                bytes=raw["bytes"],
                errors_connect=raw["errors_connect"],
                errors_read=raw["errors_read"],
                errors_write=raw["errors_write"],
                errors_status=raw["errors_status"],
                errors_timeout=raw["errors_timeout"],
                latency_mean_us=raw["latency_mean_us"],
                latency_p50_us=raw["latency_p50_us"],
                latency_p90_us=raw["latency_p90_us"],
                latency_p99_us=raw["latency_p99_us"],
                latency_max_us=raw["latency_max_us"],
            )
    raise RuntimeError(
        f"wrk exited with {done.returncode} and no report:\n{done.stdout}\n{done.stderr}"
    )
