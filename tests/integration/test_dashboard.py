"""Every query of the Grafana dashboard, evaluated by a real Prometheus scraping a real
server and a real `handshake-lab client load` (the two ends of the compose demo) after every
kind of traffic: each must be valid and return data. A panel that can never show anything
fails here, and so does a panel that mixes the two ends' series without saying which is
which."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from client.client import HTTPClient
from client.ws import connect
from handshake_tls.wire import KeyExchange
from tests.conftest import require_tool
from tests.helpers import spawned
from tests.integration.test_cli import COMMAND, free_port, server_process

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
# A metric name, then its label matchers if any (PromQL's functions and keywords match the
# name part too; they carry no role label, so they are never looked up).
SELECTOR = re.compile(r"\b([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?")
BY_ROLE = re.compile(r"\bby\s*\([^)]*\brole\b")


def panels() -> list[dict[str, Any]]:
    return [
        panel
        for path in sorted(DASHBOARD.glob("*.json"))
        for panel in json.loads(path.read_text())["panels"]
    ]


def panel_queries() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in panels() for target in panel["targets"]]


def test_every_panel_says_what_to_look_for() -> None:
    found = panels()
    assert len(found) >= 12
    assert all(p["description"].strip() and p["targets"] for p in found)
    assert len({p["id"] for p in found}) == len(found), "panel ids repeat"
    assert any(p["title"].startswith("Client:") for p in found), "no panel shows the client's side"


def unscoped(expr: str, with_role: set[str]) -> list[str]:
    """The metrics in `expr` that both ends export (they have a role label) which it neither
    filters on role nor groups by role: their series from the server and from the client
    would be added up as if they were one."""
    if BY_ROLE.search(expr):
        return []
    return [
        name
        for name, matchers in SELECTOR.findall(expr)
        if name in with_role and "role=" not in matchers.replace(" ", "")
    ]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum(rate(x_total{role="server"}[1m]))', []),
        ("sum(rate(x_total[1m]))", ["x_total"]),
        ("sum by (role, kind) (rate(x_total[1m]))", []),
        ('sum(x{state="time_wait"}) / sum(y)', ["x"]),
        ('histogram_quantile(0.5, sum by (le) (rate(y_bucket{role = "client"}[1m])))', []),
    ],
)
def test_unscoped_finds_series_of_both_ends_added_up(expr: str, expected: list[str]) -> None:
    assert unscoped(expr, {"x_total", "x", "y_bucket"}) == expected


@contextlib.asynccontextmanager
async def prometheus(tmp_path: Path, targets: dict[str, str]) -> AsyncIterator[str]:
    """A real Prometheus on 127.0.0.1 scraping each job's target every second; yields its URL."""
    config = tmp_path / "prometheus.yml"
    jobs = ", ".join(
        f"{{job_name: {job}, static_configs: [{{targets: ['{target}']}}]}}"
        for job, target in targets.items()
    )
    config.write_text(
        f"global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs: [{jobs}]\n"
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


@contextlib.asynccontextmanager
async def client_load(
    http: int, toy: int, real: int, metrics: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`handshake-lab client load` against the server's ports, its metrics on `metrics`;
    stopped with SIGTERM, as compose stops it."""
    async with spawned(
        *COMMAND, "client", "load", "--port", str(http), "--toy-tls-port", str(toy),
        "--real-tls-port", str(real), "--metrics-port", str(metrics), "--rate", "5",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    ) as process:  # fmt: skip
        yield process


async def query(client: HTTPClient, url: str, expr: str) -> dict[str, Any]:
    response = await client.get(f"{url}/api/v1/query?query={urllib.parse.quote(expr)}")
    answer: dict[str, Any] = json.loads(response.body)
    return answer


async def the_rest_of_the_traffic(http: int, toy: int) -> None:
    """What the client load does not do: a request that is not TLS at all on the toy-TLS
    port (an alert, an error), and a WebSocket kept open across the server's pings."""
    with socket.create_connection(("127.0.0.1", toy)) as bad:
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
    async with HTTPClient(key_exchange=KeyExchange.RSA) as client:  # and one from outside
        await client.get(f"toytls://127.0.0.1:{toy}/")


async def test_every_dashboard_query_returns_data_from_a_real_prometheus(tmp_path: Path) -> None:
    toy, real, load_metrics = free_port(), free_port(), free_port()
    async with server_process(
        "--toy-tls-port", str(toy), "--real-tls-port", str(real),
        "--ss-interval", "0.1", "--ws-ping-interval", "0.2",
        # Nobody reads the server's stderr after it starts: a log there would fill the pipe
        # under the load and block the server.
        "--log-format", "off",
    ) as server, client_load(server.port, toy, real, load_metrics) as load:  # fmt: skip
        targets = {
            "server": f"127.0.0.1:{server.metrics_port}",
            "client": f"127.0.0.1:{load_metrics}",
        }
        async with prometheus(tmp_path, targets) as url, HTTPClient() as client:
            # Prometheus applies new targets within 5 s of starting: wait for both scrapes.
            for _ in range(60):
                if len((await query(client, url, "up == 1"))["data"]["result"]) == 2:
                    break
                await asyncio.sleep(0.5)
            else:
                pytest.fail("Prometheus never scraped both the server and the client load")
            await the_rest_of_the_traffic(server.port, toy)
            # Until every panel has data (rates need two scrapes after the traffic), or 30 s.
            deadline = time.monotonic() + 30
            while True:
                empty, invalid = [], []
                for title, expr in panel_queries():
                    answer = await query(client, url, expr)
                    if answer.get("status") != "success":
                        invalid.append((title, answer.get("error")))
                    elif not answer["data"]["result"]:
                        empty.append(title)
                if invalid or not empty or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1)
            with_role = {
                series["metric"]["__name__"]
                for series in (await query(client, url, 'group by (__name__) ({role!=""})'))[
                    "data"
                ]["result"]
            }
        load.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            _, err = await load.communicate()
        await server.stop()
    assert not invalid, invalid
    assert not empty, f"panels with no data: {empty}"
    assert {"handshake_lab_connections_opened_total", "handshake_lab_errors_total"} <= with_role
    mixed = [(t, e, unscoped(e, with_role)) for t, e in panel_queries() if unscoped(e, with_role)]
    assert not mixed, f"queries adding up both ends' series: {mixed}"
    assert load.returncode == 0, err.decode()
    assert b" 0 failed step(s)" in err, err.decode()
