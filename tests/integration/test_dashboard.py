"""Every query of the Grafana dashboard, evaluated by a real Prometheus scraping a real
server that served every kind of traffic: each must be valid and return data. A panel that
can never show anything fails here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from client.client import HTTPClient
from client.ws import connect
from handshake_tls.wire import KeyExchange
from tests.conftest import require_tool
from tests.integration.test_cli import free_port, server_process

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"


def panel_queries() -> list[tuple[str, str]]:
    queries: list[tuple[str, str]] = []
    for path in sorted(DASHBOARD.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            queries.extend((panel["title"], target["expr"]) for target in panel["targets"])
    return queries


def test_every_panel_says_what_to_look_for() -> None:
    panels = [
        p for path in DASHBOARD.glob("*.json") for p in json.loads(path.read_text())["panels"]
    ]
    assert len(panels) >= 12
    assert all(p["description"].strip() and p["targets"] for p in panels)


@contextlib.asynccontextmanager
async def prometheus(tmp_path: Path, target: str) -> AsyncIterator[str]:
    """A real Prometheus on 127.0.0.1 scraping `target` every second; yields its URL."""
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: lab, static_configs: [{{targets: ['{target}']}}]}}]\n"
    )
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        require_tool("prometheus"), f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(30), HTTPClient() as client:
            while True:
                with contextlib.suppress(Exception):
                    if (await client.get(url + "/-/ready")).status == 200:
                        break
                await asyncio.sleep(0.2)
        yield url
    finally:
        process.terminate()
        await process.wait()


async def query(client: HTTPClient, url: str, expr: str) -> dict[str, Any]:
    response = await client.get(f"{url}/api/v1/query?query={urllib.parse.quote(expr)}")
    answer: dict[str, Any] = json.loads(response.body)
    return answer


async def every_kind_of_traffic(http: int, toy: int, real: int) -> None:
    base = f"http://127.0.0.1:{http}"
    async with HTTPClient(http_version="1.0") as client:
        for _ in range(3):
            await client.get(base + "/")
    async with HTTPClient() as client:
        for _ in range(3):
            await client.get(base + "/health")
        await client.get(base + "/no-such-page")
        await client.get(f"https://127.0.0.1:{real}/")
    for kx in (KeyExchange.RSA, KeyExchange.ECDHE):
        async with HTTPClient(key_exchange=kx) as client:
            await client.get(f"toytls://127.0.0.1:{toy}/")
    with socket.create_connection(("127.0.0.1", toy)) as bad:  # not TLS at all: an alert
        bad.sendall(b"GET / HTTP/1.1\r\n\r\n")
        bad.settimeout(5)
        with contextlib.suppress(OSError):
            bad.recv(100)
    ws = await connect(f"ws://127.0.0.1:{http}/ws/echo")
    for text in ("one", "two"):
        await ws.send(text)
        assert await ws.receive() is not None
    await asyncio.sleep(0.8)  # the server pings every 0.2 s: pongs give round trips
    await ws.close()


async def test_every_dashboard_query_returns_data_from_a_real_prometheus(tmp_path: Path) -> None:
    toy, real = free_port(), free_port()
    async with server_process(
        "--toy-tls-port", str(toy), "--real-tls-port", str(real),
        "--ss-interval", "0.1", "--ws-ping-interval", "0.2",
    ) as server:  # fmt: skip
        async with prometheus(tmp_path, f"127.0.0.1:{server.metrics_port}") as url:
            async with HTTPClient() as client:
                # Prometheus applies new targets within 5 s of starting: wait for a scrape.
                for _ in range(60):
                    if (await query(client, url, "up == 1"))["data"]["result"]:
                        break
                    await asyncio.sleep(0.5)
                else:
                    pytest.fail("Prometheus never scraped the server")
            await every_kind_of_traffic(server.port, toy, real)
            await asyncio.sleep(3)  # scrapes after the traffic: rates need two samples
            empty, invalid = [], []
            async with HTTPClient() as client:
                for title, expr in panel_queries():
                    answer = await query(client, url, expr)
                    if answer.get("status") != "success":
                        invalid.append((title, answer.get("error")))
                    elif not answer["data"]["result"]:
                        empty.append(title)
        await server.stop()
    assert not invalid, invalid
    assert not empty, f"panels with no data: {empty}"
