"""What a real Prometheus makes of the lab: its config checked by promtool, and the
server's /metrics, after every kind of traffic, linted by `promtool check metrics`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client.client import HTTPClient
from client.ws import connect
from tests.conftest import require_tool
from tests.integration.test_cli import server_process

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


async def promtool(*args: str, stdin: bytes = b"") -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        require_tool("promtool"),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        out, _ = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_prometheus_config_is_valid() -> None:
    code, out = await promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert code == 0, out
    assert "SUCCESS" in out


async def test_the_servers_metrics_pass_promtools_lint() -> None:
    async with server_process(
        "--toy-tls-port", "0", "--real-tls-port", "0", "--ss-interval", "0.05"
    ) as server:
        # Every family gets samples: HTTP both versions, a WebSocket, an error, and time for
        # the kernel sampler. (TLS listeners on port 0: only the plain one is reached here.)
        async with HTTPClient(http_version="1.0") as client:
            await client.get(server.url + "/")
        async with HTTPClient() as client:
            for _ in range(3):
                await client.get(server.url + "/health")
            await client.get(server.url + "/no-such-page")
        ws = await connect(server.url.replace("http", "ws") + "/ws/echo")
        await ws.send("hello")
        assert await ws.receive() is not None
        await ws.close()
        await asyncio.sleep(0.3)
        async with HTTPClient() as client:
            exposition = (await client.get(f"http://127.0.0.1:{server.metrics_port}/metrics")).body
        await server.stop()
    assert b"handshake_lab_tcp_sockets" in exposition
    assert b"handshake_lab_ws_messages_total" in exposition
    code, out = await promtool("check", "metrics", stdin=exposition)
    assert code == 0, out
    assert out.strip() == "", f"promtool's lint complains:\n{out}"
