"""`handshake-lab client load` against a real server process: every kind of traffic shows
in the client's own /metrics (which promtool's lint accepts), and SIGTERM ends it cleanly."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from client.client import HTTPClient
from tests.conftest import require_tool
from tests.integration.test_cli import free_port, server_process
from tests.integration.test_prometheus import promtool

pytestmark = pytest.mark.integration


def value(exposition: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_the_workload_moves_every_kind_of_traffic_and_stops_on_sigterm() -> None:
    require_tool("promtool")
    toy, real, metrics = free_port(), free_port(), free_port()
    async with server_process("--toy-tls-port", str(toy), "--real-tls-port", str(real)) as server:
        load = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "handshake_lab", "client", "load", "--port", str(server.port),
            "--toy-tls-port", str(toy), "--real-tls-port", str(real),
            "--metrics-port", str(metrics), "--rate", "10",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            exposition = ""
            async with HTTPClient() as client, asyncio.timeout(30):
                # Until a whole round has gone through: the real TLS request is its last step.
                while (
                    value(exposition, "handshake_lab_connections_opened_total", transport="tls") < 1
                ):
                    await asyncio.sleep(0.3)
                    try:
                        response = await client.get(f"http://127.0.0.1:{metrics}/metrics")
                    except Exception:  # not serving yet
                        continue
                    exposition = response.body.decode()
            load.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                _, err = await load.communicate()
        finally:
            if load.returncode is None:
                load.kill()
                await load.wait()
    assert load.returncode == 0, err.decode()
    assert b"0 failed step(s)" in err
    client_side = {"role": "client"}
    by_version = "http_client_request_duration_seconds_count"
    assert value(exposition, by_version, network_protocol_version="1.0") >= 3  # the burst
    assert value(exposition, by_version, network_protocol_version="1.1") >= 5  # the session
    for kx in ("rsa", "ecdhe"):
        assert value(
            exposition, "handshake_lab_tls_handshakes_total", kind="toy", key_exchange=kx,
            result="completed", **client_side,
        ) >= 1  # fmt: skip
    assert value(exposition, "handshake_lab_ws_messages_total", direction="received") >= 3
    code, out = await promtool("check", "metrics", stdin=exposition.encode())
    assert code == 0, out
    assert out.strip() == ""
