"""HTTP over the toy TLS, end to end on loopback: handshakes counted, failures answered."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import pytest

from client.client import HTTPClient, RequestError
from client.ws import connect
from handshake_tls.certs import make_lab_certificates
from handshake_tls.wire import KeyExchange
from server.lifecycle import Server
from telemetry.events import Name, Role
from tests.conftest import make_config
from tests.helpers import sample, wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Observed

pytestmark = pytest.mark.integration
N = 3


def handshakes(observed: Observed, role: str, result: str = "completed") -> float:
    return sample(
        observed.metrics.registry, "handshake_lab_tls_handshakes_total", role=role, result=result
    )


@pytest.mark.parametrize("kx", list(KeyExchange))
@pytest.mark.parametrize(("http_version", "expected"), [("1.0", N), ("1.1", 1)])
async def test_http_over_toy_tls_counts_one_handshake_per_connection(
    tls_server: Server,
    observed: Observed,
    tmp_path: Path,
    kx: KeyExchange,
    http_version: str,
    expected: int,
) -> None:
    url = f"toytls://127.0.0.1:{tls_server.toy_tls_port}/echo"
    async with HTTPClient(
        observed.bus,
        http_version=http_version,
        cafile=tmp_path / "certs" / "ca.pem",
        key_exchange=kx,
    ) as client:
        for i in range(N):
            body = f"secret {i}".encode()
            response = await client.request("POST", url, body=body)
            assert (response.status, response.body) == (200, body)
    await wait_until(lambda: tls_server.open_connections == 0, "closed")
    assert handshakes(observed, "server") == handshakes(observed, "client") == expected
    completed = [
        e for e in observed.timeline.events
        if e.name is Name.TLS_HANDSHAKE_COMPLETED and e.role is Role.SERVER
    ]  # fmt: skip
    assert {e.attrs["key_exchange"] for e in completed} == {kx.name.lower()}
    closed = [e for e in observed.timeline.events if e.name is Name.CONNECTION_CLOSED]
    assert {e.attrs["transport"] for e in closed} == {"toy-tls"}
    # Each step's time is a metric: the client's steps of every handshake are counted.
    steps = sample(
        observed.metrics.registry,
        "handshake_lab_tls_handshake_step_duration_seconds_count",
        role="client",
        step="certificate",
    )
    assert steps == expected


async def test_a_client_trusting_another_ca_refuses_and_the_server_hears_why(
    tls_server: Server, observed: Observed, tmp_path: Path
) -> None:
    other = make_lab_certificates(tmp_path / "other")
    url = f"toytls://127.0.0.1:{tls_server.toy_tls_port}/health"
    async with HTTPClient(observed.bus, cafile=other.ca) as client:
        with pytest.raises(RequestError) as caught:
            await client.get(url)
    assert caught.value.kind == "tls_unknown_ca"
    await wait_until(lambda: tls_server.open_connections == 0, "closed")
    registry = observed.metrics.registry
    labels = {"role": "server", "direction": "received", "alert": "unknown_ca"}
    assert sample(registry, "handshake_lab_tls_alerts_total", **labels) == 1
    assert handshakes(observed, "client", "tls_unknown_ca") == 1


async def test_random_bytes_at_the_toy_tls_port_get_an_alert_and_the_server_serves_on(
    observed: Observed, tmp_path: Path
) -> None:
    # (A short handshake timeout: the third input is a valid start that never goes on.)
    config = make_config(toy_tls_port=0, certs_dir=tmp_path / "certs", header_timeout_s=0.5)
    async with Server(config, observed.bus) as tls_server:
        await _garbage_then_a_request(tls_server, observed, tmp_path)
    kinds = [
        e.attrs["kind"] for e in observed.timeline.events if e.name is Name.TLS_HANDSHAKE_FAILED
    ]
    assert kinds == ["tls_decode_error", "tls_decode_error", "timeout"]


async def _garbage_then_a_request(tls_server: Server, observed: Observed, tmp_path: Path) -> None:
    for garbage in (
        os.urandom(64),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x7e\x01\x00\x01\x63",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.toy_tls_port)
        writer.write(garbage)
        async with asyncio.timeout(5):
            answer = await reader.read()  # an alert record (or nothing), then the close
        writer.close()
        assert answer == b"" or answer[0] == 21  # ContentType.ALERT
    async with HTTPClient(observed.bus, cafile=tmp_path / "certs" / "ca.pem") as client:
        response = await client.get(f"toytls://127.0.0.1:{tls_server.toy_tls_port}/health")
    assert response.status == 200


@pytest.mark.parametrize("kx", list(KeyExchange))
async def test_websocket_over_toy_tls(
    tls_server: Server, observed: Observed, tmp_path: Path, kx: KeyExchange
) -> None:
    url = f"ws+toytls://127.0.0.1:{tls_server.toy_tls_port}/ws/echo"
    cafile = tmp_path / "certs" / "ca.pem"
    async with await connect(url, bus=observed.bus, cafile=cafile, key_exchange=kx) as ws:
        for text in ("over", "the toy", "TLS"):
            await ws.send(text)
            message = await ws.receive()
            assert message is not None
            assert message.data == text
    assert ws.core.close_code == 1000
    await wait_until(lambda: tls_server.open_connections == 0, "closed")
    assert handshakes(observed, "server") == handshakes(observed, "client") == 1
    closed = [
        e for e in observed.timeline.events
        if e.name is Name.CONNECTION_CLOSED and e.role is Role.SERVER
    ]  # fmt: skip
    assert [(e.attrs["transport"], e.attrs["protocol"]) for e in closed] == [
        ("toy-tls", "websocket")
    ]
