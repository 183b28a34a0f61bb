"""--max-connections: beyond the limit a new connection is answered 503 and closed (over the
toy TLS after its handshake, a WebSocket upgrade too), while the open ones go on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from client.client import HTTPClient
from client.ws import UpgradeFailed, connect
from server.lifecycle import Server
from telemetry.events import Name, Role
from tests.conftest import make_config
from tests.helpers import sample
from tests.integration.test_cli import run

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from tests.conftest import Observed

pytestmark = pytest.mark.integration

LIMIT = 2


@pytest.fixture
async def small_server(observed: Observed, tmp_path: Path) -> AsyncIterator[Server]:
    config = make_config(max_connections=LIMIT, toy_tls_port=0, certs_dir=tmp_path / "certs")
    async with Server(config, observed.bus) as server:
        yield server


async def test_beyond_the_limit_503_and_the_open_ones_go_on(
    small_server: Server, observed: Observed, tmp_path: Path
) -> None:
    url = f"{small_server.url}/health"
    async with HTTPClient(observed.bus) as first, HTTPClient(observed.bus) as second:
        assert (await first.get(url)).status == 200
        assert (await second.get(url)).status == 200
        # Two kept-alive connections: the server is at its limit.
        async with HTTPClient(observed.bus) as third:
            refused = await third.get(url)
        assert refused.status == 503
        assert refused.header(b"retry-after") == b"1"
        assert refused.header(b"connection") == b"close"
        with pytest.raises(UpgradeFailed) as upgrade:
            await connect(f"ws://127.0.0.1:{small_server.port}/ws/echo", bus=observed.bus)
        assert upgrade.value.handshake.status == 503
        toy = f"toytls://127.0.0.1:{small_server.toy_tls_port}/health"
        async with HTTPClient(observed.bus, cafile=tmp_path / "certs" / "ca.pem") as over_tls:
            assert (await over_tls.get(toy)).status == 503
        # The open ones were not disturbed.
        for client in (first, second):
            again = await client.get(url)
            assert (again.status, again.reused) == (200, True)
    # Both closed: room again.
    async with HTTPClient(observed.bus) as later:
        assert (await later.get(url)).status == 200
    registry = observed.metrics.registry
    assert sample(registry, "handshake_lab_errors_total", role="server", kind="over_capacity") == 3
    closes = [
        e
        for e in observed.timeline.events
        if e.name is Name.CONNECTION_CLOSED and e.role is Role.SERVER
    ]
    refused_closes = [e for e in closes if e.attrs["reason"] == "over_capacity"]
    assert len(refused_closes) == 3
    assert all(e.attrs["closed_by"] == "server" for e in refused_closes)


async def test_no_limit_with_zero(observed: Observed) -> None:
    async with Server(make_config(max_connections=0), observed.bus) as server:
        clients = [HTTPClient(observed.bus) for _ in range(5)]
        try:
            for client in clients:
                assert (await client.get(f"{server.url}/health")).status == 200
            assert server.open_connections == 5
        finally:
            for client in clients:
                await client.aclose()


async def test_a_negative_limit_is_refused_by_the_command() -> None:
    code, _, err = await run("server", "--max-connections", "-1", "--metrics-port", "0")
    assert code == 2
    assert "--max-connections must be >= 0" in err
