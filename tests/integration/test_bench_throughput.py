"""`bench.throughput` end to end, tiny: our server (telemetry on and off) and uvicorn, plain
TCP, keep-alive and HTTP/1.0, our load generator, one round of 1 s cells.

Structure and sanity only (every cell there, answered without errors, one connection per
request for HTTP/1.0 and none new for keep-alive, TIME_WAIT on our server's port): no
speeds are asserted, the machine is shared. Then the load generator alone against an
in-process server: reconnecting when a server closes a kept-alive connection, and real
and toy TLS in both modes.
"""

from __future__ import annotations

import argparse
import json
import signal
from typing import TYPE_CHECKING, Any

import pytest

from bench.loadgen import LoadConfig, LoadGenerator
from bench.throughput import add_throughput_arguments, run_throughput
from tests.conftest import require_tool

if TYPE_CHECKING:
    from pathlib import Path

    from server.lifecycle import Server
    from tests.conftest import RunningServer

pytestmark = [pytest.mark.integration, pytest.mark.peer]

SERVERS = ("ours_on", "ours_off", "uvicorn_nolog")
MODES = ("keepalive", "http10")
CONNECTIONS = 20


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    require_tool("ss")
    require_tool("taskset")
    out: Path = tmp_path_factory.mktemp("throughput")
    parser = argparse.ArgumentParser()
    add_throughput_arguments(parser)
    args = parser.parse_args(
        [
            "--quick",
            "--duration=1",
            "--warmup=0.3",
            "--rounds=1",
            f"--connections={CONNECTIONS}",
            f"--servers={','.join(SERVERS)}",
            f"--modes={','.join(MODES)}",
            "--transports=plain",
            "--generator=ours",
            f"--out={out}",
        ]
    )
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        code = run_throughput(args)  # it turns SIGTERM into KeyboardInterrupt: put it back
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    data: dict[str, Any] = json.loads((out / "throughput.json").read_text())
    data["exit_code"] = code
    return data


def cell(results: dict[str, Any], server: str, mode: str) -> dict[str, Any]:
    runs: list[dict[str, Any]] = [
        r
        for r in results["runs"]
        if (r["server"], r["mode"], r["transport"]) == (server, mode, "plain")
    ]
    assert len(runs) == 1, (server, mode)
    return runs[0]


def test_every_cell_ran_and_answered_without_errors(results: dict[str, Any]) -> None:
    assert results["exit_code"] == 0
    assert "error" not in results
    assert len(results["runs"]) == len(SERVERS) * len(MODES)
    for server in SERVERS:
        for mode in MODES:
            run = cell(results, server, mode)
            assert run["generator"] == "ours"
            assert run["probe_status"] == 200
            assert run["load"]["responses"] > 0, (server, mode)
            assert run["errors_total"] == 0, (server, mode, run["load"]["errors"])
            assert run["requests_per_s"] > 0
            assert run["server_cpu_s"] > 0
            assert 0 < run["load"]["latency_p50_us"] <= run["load"]["latency_p99_us"]
            assert run["load"]["response_body_bytes"] == run["response_body_bytes"] > 0
            # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully.
            clean = (0,) if server.startswith("ours_") else (0, -signal.SIGTERM)
            assert run["server_exit_code"] in clean, (server, mode)
    summary = results["summary"]
    assert set(summary["cells"]) == {f"{m}/plain/{s}" for s in SERVERS for m in MODES}
    assert "keepalive/plain/ours_on/uvicorn_nolog" in summary["ratios"]
    assert summary["goal"]["median"] is None  # uvicorn_log was not run


@pytest.mark.parametrize("server", SERVERS)
def test_http10_opens_a_connection_per_request(results: dict[str, Any], server: str) -> None:
    load = cell(results, server, "http10")["load"]
    # Requests in flight at either edge of the window: at most one per connection.
    assert abs(load["connections_opened"] - load["responses"]) <= CONNECTIONS


@pytest.mark.parametrize("server", SERVERS)
def test_keepalive_reuses_its_connections(results: dict[str, Any], server: str) -> None:
    load = cell(results, server, "keepalive")["load"]
    assert load["connections_opened_total"] <= CONNECTIONS  # warm-up included
    assert load["connections_opened"] == 0  # none new in the measured window
    assert load["server_closed"] == 0


def test_our_server_counted_the_same_connections(results: dict[str, Any]) -> None:
    """Telemetry on: the server's own metrics, scraped at the window's edges, agree."""
    http10 = cell(results, "ours_on", "http10")
    counted = http10["metrics"]
    assert abs(counted["handshake_lab_connections_opened_total"] - http10["load"]["responses"]) <= (
        2 * CONNECTIONS
    )
    assert counted["http_server_request_duration_seconds_count"] > 0
    keepalive = cell(results, "ours_on", "keepalive")["metrics"]
    assert keepalive["handshake_lab_connections_opened_total"] == 0
    assert keepalive["http_server_request_duration_seconds_count"] > 0


@pytest.mark.parametrize("server", ["ours_on", "ours_off"])
def test_time_wait_piles_up_on_our_server_under_http10(
    results: dict[str, Any], server: str
) -> None:
    """Our server closes first under HTTP/1.0, so the TIME_WAIT sockets are on its port."""
    run = cell(results, server, "http10")
    assert run["time_wait_error"] is None
    assert run["time_wait_peak"] > 0
    assert "time_wait_peak" not in cell(results, server, "keepalive")


# --- the load generator itself, against an in-process server --------------------------------


@pytest.mark.parametrize("server_limits", [{"max_requests_per_connection": 5}])
async def test_generator_reconnects_when_the_server_closes_a_kept_alive_connection(
    loopback_server: RunningServer,
) -> None:
    config = LoadConfig(port=loopback_server.port, connections=4)
    result = await LoadGenerator(config).run(duration_s=0.5, warmup_s=0.1)
    assert result.errors == {}
    assert result.responses > 0
    # Every fifth response carries Connection: close, and a new connection follows it.
    assert result.server_closed >= result.responses // 5 - config.connections
    assert result.connections_opened >= result.server_closed - config.connections


@pytest.mark.parametrize("mode", ["keepalive", "http10"])
@pytest.mark.parametrize("transport", ["tls", "toy"])
async def test_generator_speaks_both_tls_kinds(
    tls_server: Server, tmp_path: Path, mode: str, transport: str
) -> None:
    port = tls_server.real_tls_port if transport == "tls" else tls_server.toy_tls_port
    assert port is not None
    config = LoadConfig(
        port=port,
        mode=mode,
        transport=transport,
        connections=4,
        cafile=tmp_path / "certs" / "ca.pem",
    )
    result = await LoadGenerator(config).run(duration_s=0.5, warmup_s=0.1)
    assert result.errors == {}
    assert result.responses > 0
    assert result.response_body_bytes > 0
    if mode == "http10":
        assert abs(result.connections_opened - result.responses) <= config.connections
    else:  # (this server closes a connection after 100 requests: then a new one follows)
        assert result.connections_opened <= result.server_closed + config.connections
        assert result.connections_opened < result.responses / 50
