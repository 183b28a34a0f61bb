"""The kernel sampler for real: ss against our server on loopback, a stand-in ss for the
sampler's own logic, and a server process whose PATH has no ss."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import sys
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from server.lifecycle import Server
from telemetry import sockstates
from telemetry.bus import Bus
from telemetry.events import Level, Name, Role, format_address
from telemetry.metrics import Metrics
from telemetry.setup import Telemetry
from telemetry.sockstates import MAX_FAILURES, TCP_STATES, SocketSampler
from telemetry.timeline import Timeline
from tests.conftest import make_config, require_tool
from tests.helpers import sample, status_of, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from telemetry.events import Event
    from tests.conftest import Observed

pytestmark = pytest.mark.integration

DATA_SS = os.path.join(os.path.dirname(__file__), os.pardir, "data", "ss")


# --- the sampler with a stand-in ss (deterministic) ------------------------------------


def fake_ss(directory: Path, outputs: list[str], status: int = 0) -> None:
    """An `ss` in `directory` that prints `outputs` one per run (the last one again after
    that), with exit status `status`."""
    for index, text in enumerate(outputs):
        (directory / f"out{index}.txt").write_text(text)
    script = directory / "ss"
    script.write_text(
        "#!/bin/sh\nPATH=/usr/bin:/bin\n"
        f'dir="{directory}"\n'
        'n=$(cat "$dir/count" 2>/dev/null || echo 0)\n'
        f'[ "$n" -lt {len(outputs) - 1} ] && echo $((n + 1)) > "$dir/count"\n'
        'cat "$dir/out$n.txt"\n'
        'echo "$@" > "$dir/argv"\n'
        f"[ {status} -eq 0 ] || "
        f'{{ echo "Cannot open network namespace: nope" >&2; exit {status}; }}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def capture(name: str) -> str:
    with open(os.path.join(DATA_SS, f"{name}.txt")) as file:
        return file.read()


@pytest.fixture
def timeline_bus() -> tuple[Bus, Timeline]:
    bus = Bus()
    timeline = Timeline()
    bus.subscribe(timeline)
    return bus, timeline


async def test_sample_now_emits_each_change_then_the_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeline_bus: tuple[Bus, Timeline]
) -> None:
    bus, timeline = timeline_bus
    fake_ss(tmp_path, [capture("listen_estab"), capture("time_wait")])
    monkeypatch.setenv("PATH", str(tmp_path))
    sampler = SocketSampler(bus, [8080], netns="lab-server")
    first = await sampler.sample_now()
    assert len(first) == 7
    assert (tmp_path / "argv").read_text().split()[:3] == ["-N", "lab-server", "-tanoiH"]
    changes = timeline.named(Name.KERNEL_STATE_CHANGED)
    # The first sample cannot know when its sockets appeared: "unknown", not "closed".
    assert [(e.attrs["from"], e.attrs["to"]) for e in changes] == [(
        "unknown", s.state) for s in first
    ]  # fmt: skip
    assert {e.role for e in changes} == {Role.SERVER, Role.CLIENT}
    assert all(e.conn_id is None and e.level is Level.INFO for e in changes)
    (taken,) = timeline.named(Name.KERNEL_SAMPLE_TAKEN)
    assert taken.level is Level.DEBUG
    assert taken.attrs["sockets"]["server"]["established"] == 3
    assert taken.attrs["listen_queues"] == {"8080": {"current": 2, "limit": 4}}
    assert taken.attrs["interval_s"] is None
    assert timeline.events[-1] is taken  # the changes come first

    timeline.clear()
    second = await sampler.sample_now()
    # every connection of the first capture is gone; the listener stays (unchanged);
    # the TIME_WAIT ones are new
    gone = [e for e in timeline.named(Name.KERNEL_STATE_CHANGED) if e.attrs["to"] == "closed"]
    new = [e for e in timeline.named(Name.KERNEL_STATE_CHANGED) if e.attrs["from"] == "closed"]
    assert len(gone) == 6
    assert [e.attrs["to"] for e in new] == ["time_wait"] * 3
    assert all(e.attrs["timer"] == "timewait" for e in new)
    assert len(second) == 4
    (taken,) = timeline.named(Name.KERNEL_SAMPLE_TAKEN)
    assert taken.attrs["interval_s"] is not None
    assert sampler.achieved_interval_s == taken.attrs["interval_s"]


async def test_missing_ss_is_said_once_and_sampling_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeline_bus: tuple[Bus, Timeline]
) -> None:
    bus, timeline = timeline_bus
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no ss
    async with SocketSampler(bus, [8080], interval_s=0.01) as sampler:
        await wait_until(lambda: sampler.unavailable is not None, "the sampler gave up")
        assert await sampler.sample_now() == []
        await asyncio.sleep(0.05)
    (event,) = timeline.named(Name.KERNEL_SAMPLER_UNAVAILABLE)
    assert event.level is Level.WARNING
    assert "not installed" in event.attrs["reason"]
    assert "TIME_WAIT" in event.attrs["reason"]  # it says what the learner loses
    assert timeline.count(Name.KERNEL_SAMPLE_TAKEN) == 0


async def test_a_failing_ss_is_retried_then_reported_with_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeline_bus: tuple[Bus, Timeline]
) -> None:
    bus, timeline = timeline_bus
    fake_ss(tmp_path, [""], status=1)
    monkeypatch.setenv("PATH", str(tmp_path))
    sampler = SocketSampler(bus, [8080], netns="no-such-namespace")
    for _ in range(MAX_FAILURES - 1):
        assert await sampler.sample_now() == []
    assert sampler.unavailable is None  # a few failures may pass: not given up yet
    assert not timeline.named(Name.KERNEL_SAMPLER_UNAVAILABLE)
    assert await sampler.sample_now() == []
    assert await sampler.sample_now() == []  # once given up, said once
    (event,) = timeline.named(Name.KERNEL_SAMPLER_UNAVAILABLE)
    assert f"failed {MAX_FAILURES} times" in event.attrs["reason"]
    assert "Cannot open network namespace" in event.attrs["reason"]
    assert "install iproute2" not in event.attrs["reason"]  # it is installed
    assert event.attrs["netns"] == "no-such-namespace"


async def test_a_failure_that_passes_does_not_stop_sampling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeline_bus: tuple[Bus, Timeline]
) -> None:
    bus, timeline = timeline_bus
    monkeypatch.setenv("PATH", str(tmp_path))
    fake_ss(tmp_path, [""], status=1)
    sampler = SocketSampler(bus, [8080])
    assert await sampler.sample_now() == []
    (tmp_path / "ss").unlink()
    (tmp_path / "count").unlink(missing_ok=True)
    fake_ss(tmp_path, [capture("time_wait")])
    assert len(await sampler.sample_now()) > 0
    assert sampler.failures == 0
    assert not timeline.named(Name.KERNEL_SAMPLER_UNAVAILABLE)


async def test_an_ss_we_may_not_run_neither_crashes_the_sampler_nor_its_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeline_bus: tuple[Bus, Timeline]
) -> None:
    bus, timeline = timeline_bus
    (tmp_path / "ss").write_text("#!/bin/sh\n")  # not executable: PermissionError
    monkeypatch.setenv("PATH", str(tmp_path))
    async with SocketSampler(bus, [8080], interval_s=0.001) as sampler:
        await wait_until(lambda: sampler.unavailable is not None, "the sampler gave up")
    (event,) = timeline.named(Name.KERNEL_SAMPLER_UNAVAILABLE)
    assert "Permission denied" in event.attrs["reason"]


async def test_stopping_during_an_ss_run_leaves_no_ss_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeline_bus: tuple[Bus, Timeline]
) -> None:
    bus, _ = timeline_bus
    pid_file = tmp_path / "pid"
    script = tmp_path / "ss"
    script.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec /bin/sleep 30\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    sampler = SocketSampler(bus, [8080])
    sampler.start()
    await wait_until(pid_file.exists, "ss started")
    await sampler.stop()
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left to init


async def test_nobody_listening_means_no_ss_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_ss(tmp_path, [capture("time_wait")])
    monkeypatch.setenv("PATH", str(tmp_path))
    async with SocketSampler(Bus(), [8080], interval_s=0.01):
        await asyncio.sleep(0.1)
    assert not (tmp_path / "argv").exists()


# --- our server and the real ss ---------------------------------------------------------


@pytest.fixture
async def sampled_server(tmp_path: Path) -> AsyncIterator[tuple[Server, Timeline, int]]:
    """A server with every listener and the sampler on, a timeline, and /metrics (its port)."""
    require_tool("ss")
    telemetry = Telemetry()
    timeline = Timeline()
    telemetry.bus.subscribe(timeline)
    telemetry.enable_metrics(CollectorRegistry())
    metrics_port = telemetry.serve_metrics("127.0.0.1", 0)
    config = make_config(
        ss_interval_s=0.05,
        ss_cpu_budget=0.5,  # loopback tests: sample often, whatever it costs
        toy_tls_port=0,
        real_tls_port=0,
        certs_dir=tmp_path / "certs",
    )
    server = Server(config, telemetry.bus)
    await server.start()
    try:
        yield server, timeline, metrics_port
    finally:
        await server.shutdown(timeout_s=5)
        telemetry.close()


def kernel_changes(timeline: Timeline, local: str, remote: str) -> list[Event]:
    return [
        e
        for e in timeline.named(Name.KERNEL_STATE_CHANGED)
        if (e.local, e.remote) == (local, remote)
    ]


async def test_a_kept_alive_connection_is_established_on_both_ends(
    sampled_server: tuple[Server, Timeline, int],
) -> None:
    server, timeline, _ = sampled_server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert status_of(await reader.readuntil(b"\r\n\r\n")) == 200
        ours = format_address(writer.get_extra_info("sockname"))
        theirs = format_address(writer.get_extra_info("peername"))
        assert ours is not None
        assert theirs is not None

        def established(role: Role, local: str, remote: str) -> bool:
            return any(
                e.role is role and e.attrs["to"] == "established"
                for e in kernel_changes(timeline, local, remote)
            )

        await wait_until(
            lambda: (
                established(Role.CLIENT, ours, theirs) and established(Role.SERVER, theirs, ours)
            ),
            "kernel.state.changed to established for both ends",
        )
        (client_end,) = [
            e for e in kernel_changes(timeline, ours, theirs) if e.attrs["to"] == "established"
        ]
        # "closed" when a sample before saw no socket; "unknown" when the connection beat
        # the sampler's first sample.
        assert client_end.attrs["from"] in ("closed", "unknown")
        assert client_end.attrs["rtt_ms"] is not None
        assert client_end.attrs["cwnd"] is not None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_http_1_0_leaves_time_wait_on_the_server_with_its_timer(
    sampled_server: tuple[Server, Timeline, int],
) -> None:
    server, timeline, _ = sampled_server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    ours = format_address(writer.get_extra_info("sockname"))
    theirs = format_address(writer.get_extra_info("peername"))
    assert ours is not None
    assert theirs is not None
    writer.write(b"GET /health HTTP/1.0\r\n\r\n")
    await writer.drain()
    assert status_of(await reader.read(-1)) == 200  # the server closes first
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()

    def server_time_wait() -> list[Event]:
        return [
            e
            for e in kernel_changes(timeline, theirs, ours)
            if e.role is Role.SERVER and e.attrs["to"] == "time_wait"
        ]

    await wait_until(lambda: bool(server_time_wait()), "TIME_WAIT on the server's end")
    (event,) = server_time_wait()
    assert event.attrs["timer"] == "timewait"
    assert 0 < event.attrs["timer_left_s"] <= 60
    # the client's end never holds TIME_WAIT: it closed second
    assert not [e for e in kernel_changes(timeline, ours, theirs) if e.attrs["to"] == "time_wait"]


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    def fetch() -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).partition(b"\r\n\r\n")[2].decode()

    text = await asyncio.to_thread(fetch)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_the_gauges_on_the_real_metrics_endpoint(
    sampled_server: tuple[Server, Timeline, int],
) -> None:
    server, timeline, metrics_port = sampled_server
    ports = sorted(p for p in (server.port, server.toy_tls_port, server.real_tls_port) if p)
    assert server.sampler is not None
    assert server.sampler.ports == ports  # every listener is watched
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        await wait_until(
            lambda: (
                any(
                    e.attrs["to"] == "established"
                    for e in timeline.named(Name.KERNEL_STATE_CHANGED)
                )
                and timeline.count(Name.KERNEL_SAMPLE_TAKEN) >= 3
            ),
            "a sample with the connection",
        )
        samples = await scrape(metrics_port)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    for role in ("server", "client"):
        for state in TCP_STATES:
            labels = (("role", role), ("state", state))
            assert ("handshake_lab_tcp_sockets", labels) in samples
    assert value("handshake_lab_tcp_sockets", role="server", state="listen") == len(ports)
    assert value("handshake_lab_tcp_sockets", role="server", state="established") >= 1
    assert value("handshake_lab_tcp_sockets", role="client", state="established") >= 1
    for port in ports:
        assert value("handshake_lab_tcp_listen_queue_limit", port=str(port)) == 511
        assert value("handshake_lab_tcp_listen_queue_length", port=str(port)) == 0
    interval = value("handshake_lab_ss_sample_interval_seconds", role="server")
    assert interval >= 0.05 * 0.9  # never faster than asked (timer slack aside)
    assert value("handshake_lab_ss_sample_cpu_seconds_count", role="server") >= 3
    assert value("handshake_lab_ss_sample_cpu_seconds_sum", role="server") > 0


async def test_shutdown_stops_the_sampler(tmp_path: Path) -> None:
    require_tool("ss")
    bus = Bus()
    timeline = Timeline()
    bus.subscribe(timeline)
    metrics = Metrics(CollectorRegistry())
    bus.subscribe(metrics.observe)
    server = Server(make_config(ss_interval_s=0.02), bus)
    await server.start()
    await wait_until(lambda: timeline.count(Name.KERNEL_SAMPLE_TAKEN) >= 2, "two samples")
    await server.shutdown(timeout_s=5)
    taken = timeline.count(Name.KERNEL_SAMPLE_TAKEN)
    await asyncio.sleep(0.1)
    assert timeline.count(Name.KERNEL_SAMPLE_TAKEN) == taken
    assert server.sampler is None


async def test_a_server_without_ss_says_so_once_and_serves(tmp_path: Path) -> None:
    # PATH holds python and nothing else: no ss (the venv's python is run by its own path,
    # which is how it finds its packages)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The JSON log goes to stderr, line-buffered when not a terminal: read as it comes.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "handshake_lab", "server", "--port", str(port),
        "--metrics-port", "0", "--no-toy-tls", "--no-real-tls", "--ss-interval", "0.02",
        "--log-format", "json",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PATH": str(bin_dir)},
    )  # fmt: skip
    assert process.stderr is not None
    records: list[dict[str, object]] = []

    async def read_until(event: str) -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            if line.startswith(b"{"):
                records.append(json.loads(line))
                if records[-1]["event"] == event:
                    return
        raise AssertionError(f"the server's stderr ended before {event}")

    try:
        async with asyncio.timeout(15):
            await read_until("kernel.sampler.unavailable")
        await asyncio.sleep(0.2)  # ten intervals: time enough to say it again, wrongly
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.0\r\n\r\n")
        await writer.drain()
        assert status_of(await reader.read(-1)) == 200
        writer.close()
        process.terminate()
        async with asyncio.timeout(15):
            await read_until("app.shutdown.completed")
            await process.wait()
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    unavailable = [r for r in records if r["event"] == "kernel.sampler.unavailable"]
    assert len(unavailable) == 1
    assert unavailable[0]["level"] == "warning"
    assert "ss" in str(unavailable[0]["reason"])
    assert any(r["event"] == "http.response.sent" for r in records)


async def test_ss_killed_then_too_slow_loses_two_samples_says_so_and_the_server_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, observed: Observed
) -> None:
    real_ss = require_tool("ss")
    # An ss that is killed (SIGKILL, as the OOM killer would), then hangs, then is the real
    # one: the server must serve throughout, and each lost sample must be said.
    script = tmp_path / "ss"
    script.write_text(
        "#!/bin/sh\n"
        f'n=$(cat "{tmp_path}/count" 2>/dev/null || echo 0); echo $((n + 1)) > "{tmp_path}/count"\n'
        'case "$n" in\n'
        "  0) kill -9 $$ ;;\n"
        "  1) exec sleep 5 ;;\n"
        f'  *) exec {real_ss} "$@" ;;\n'
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(sockstates, "SS_TIMEOUT_S", 0.3)
    config = make_config(ss_interval_s=0.05, ss_cpu_budget=0.5)
    async with Server(config, observed.bus) as server:
        timeline = observed.timeline
        while not timeline.named(Name.KERNEL_SAMPLE_TAKEN):  # until the real ss answered
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /health HTTP/1.0\r\n\r\n")
            assert status_of(await reader.read(-1)) == 200  # served while ss fails
            writer.close()
            await asyncio.sleep(0.05)
    failed = timeline.named(Name.KERNEL_SAMPLE_FAILED)
    assert [e.attrs["kind"] for e in failed] == ["ss_killed", "ss_timeout"]
    assert failed[0].attrs["reason"] == "ss was killed by SIGKILL"
    assert "did not answer within 0.3 s" in failed[1].attrs["reason"]
    assert all("lost" in e.attrs and e.level is Level.WARNING for e in failed)
    assert not timeline.named(Name.KERNEL_SAMPLER_UNAVAILABLE)  # it recovered
    registry = observed.metrics.registry
    for kind in ("ss_killed", "ss_timeout"):
        assert sample(registry, "handshake_lab_errors_total", role="server", kind=kind) == 1
