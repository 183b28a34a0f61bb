"""What every benchmark script needs: processes it starts and always stops, CPU pinning,
CPU time from /proc, readiness probes, percentiles, the machine's description.

Every process is started in its own session (so a Ctrl-C in the terminal reaches only the
benchmark, which then stops its children in order), bound to 127.0.0.1 by its arguments,
and stopped by `Processes.close()`, which a `with` block guarantees on error and Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Self

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from types import FrameType, TracebackType

HOST: Final = "127.0.0.1"
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
# The venv's bin/ directory: handshake-lab, uvicorn and py-spy live next to this python.
VENV_BIN: Final = Path(sys.executable).parent
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    """Progress on stderr, with the time of day, flushed at once."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """`argv` run on one CPU only (taskset execs it, so the PID stays the program's)."""
    if cpu is None:
        return list(argv)
    return ["taskset", "-c", str(cpu), *argv]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def cpu_busy_seconds() -> dict[str, dict[int, float]]:
    """Per CPU, seconds busy (user, system, irq) and stolen by the hypervisor, from /proc/stat.

    Read before and after a run, they tell whether something else was using the CPUs
    (the other engineers' tests on a shared machine, say) or the host took time away
    from this virtual machine (steal).
    """
    busy, steal = {}, {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(value) for value in values]
            cpu = int(name[3:])
            # user nice system idle iowait irq softirq steal
            busy[cpu] = (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / CLOCK_TICKS
            steal[cpu] = ticks[7] / CLOCK_TICKS
    return {"busy": busy, "steal": steal}


def install_sigterm_handler() -> None:
    """SIGTERM stops the benchmark like Ctrl-C does: through the `finally` blocks."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


class Processes:
    """The processes a benchmark started; `close()` (or leaving the `with`) stops them all."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[str, subprocess.Popen[bytes], int]] = {}

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int | None = None,
        output: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        cwd: Path = REPO_ROOT,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` pinned to `cpu`, stdout and stderr to `output` (or discarded)."""
        sink: IO[bytes] | int
        sink = open(output, "wb") if output else subprocess.DEVNULL  # noqa: SIM115
        try:
            process = subprocess.Popen(
                pinned(argv, cpu),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        finally:
            if not isinstance(sink, int):
                sink.close()  # the child has its own copy
        self._running[process.pid] = (name, process, stop_signal)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int:
        """Ask the process to stop (its stop signal), kill it after `timeout_s`; its code."""
        name, _process, stop_signal = self._running.pop(process.pid, ("?", process, 0))
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(stop_signal or signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {process.pid}) did not stop in {timeout_s} s: killing it")
                process.kill()
                process.wait()
        return process.returncode

    def close(self) -> None:
        for _name, process, _sig in list(self._running.values()):
            self.stop(process, timeout_s=5.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Probe:
    status: int
    body_bytes: int
    head: str


def http_get(port: int, path: str = "/", timeout_s: float = 2.0) -> Probe:
    """One HTTP/1.1 GET with `Connection: close` on 127.0.0.1, read to the end."""
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _sep, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return Probe(status, len(body), head.decode("latin-1"))


def wait_until_serving(
    process: subprocess.Popen[bytes], port: int, path: str = "/", timeout_s: float = 20.0
) -> Probe:
    """Poll until the server answers `path` with 200; raise if it exits or takes too long."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before serving")
        try:
            probe = http_get(port, path)
        except (OSError, ValueError, IndexError) as exc:
            last_error = exc
            time.sleep(0.05)
            continue
        if probe.status == 200:
            return probe
        raise RuntimeError(f"server answered {probe.status} to GET {path}")
    raise RuntimeError(f"server not serving on port {port} after {timeout_s} s: {last_error}")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _command_version(argv: Sequence[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not found"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"error: {exc}"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "?"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages = {}
    for name in ("h11", "uvicorn", "aiohttp", "httpx", "prometheus-client"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "packages": packages,
        "wrk": _command_version(["wrk", "-v"]),
        "nginx": _command_version(["nginx", "-v"]),
        "git": git_state(),
    }


def source_digest(root: Path = REPO_ROOT) -> str:
    """SHA-256 (first 12 hex digits) of the code under test: every .py file of the packages.

    Recorded with every run: other people edit this code while benchmarks run, and a
    fresh server process per run would pick up their changes.
    """
    digest = hashlib.sha256()
    for package in ("server", "client", "telemetry", "handshake_lab"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the measured code differed from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "source_sha256": source_digest(),
        "modified": git(
            "status", "--porcelain", "--", "server", "client", "telemetry", "handshake_lab"
        ).splitlines(),
    }


def start_results(
    benchmark: str, args: argparse.Namespace, placement: str, omit: Collection[str]
) -> dict[str, Any]:
    """The common start of a benchmark run: SIGTERM handled, the machine described in the
    log, and the results skeleton with the settings (all of `args` but `omit`)."""
    install_sigterm_handler()
    info = machine_info()
    log(f"{info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}; {placement}")
    settings = {key: value for key, value in vars(args).items() if key not in omit}
    return {"benchmark": benchmark, "machine": info, "settings": settings}


def write_json(out_dir: Path, stem: str, data: dict[str, Any]) -> Path:
    """Write `stem-<UTC time>.json` and `stem.json` (the latest) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, default=str) + "\n"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = out_dir / f"{stem}-{stamp}.json"
    path.write_text(text)
    (out_dir / f"{stem}.json").write_text(text)
    return path


def scrape_metrics(port: int, timeout_s: float = 5.0) -> dict[str, float] | None:
    """A Prometheus endpoint on 127.0.0.1 read once: each sample name's value summed over
    its label sets (`{name: total}`), or None when it cannot be read."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=timeout_s) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_and_labels, _sep, value = line.rpartition(" ")
        name = name_and_labels.split("{", 1)[0]
        with contextlib.suppress(ValueError):
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def comma_list(value: str, allowed: Sequence[str], what: str = "") -> list[str]:
    """`a,b` -> ["a", "b"], each one of `allowed`; argparse's error otherwise."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(
            f"{what + ': ' if what else ''}choose from {', '.join(allowed)} (comma-separated), "
            f"not {', '.join(unknown) or 'nothing'}"
        )
    return items
