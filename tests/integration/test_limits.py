"""--max-connections: beyond the limit a plain connection's request is answered 503 at its head
(a few of them: then, and on the TLS ports, the connection is closed at once), refusals never
take a served connection's place, the open ones go on, and the server makes room for the
file descriptors it allows."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from client.client import HTTPClient, RequestError
from client.ws import UpgradeFailed, connect
from server.connection import overflow
from server.lifecycle import Server
from telemetry.events import Name, Role
from tests.conftest import make_config
from tests.helpers import sample, status_of, wait_until
from tests.integration.test_cli import COMMAND, free_port, run

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


async def silent(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that sends nothing (yet)."""
    return await asyncio.open_connection("127.0.0.1", port)


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
        # The toy TLS port closes at once: no handshake is paid for a refusal.
        toy = f"toytls://127.0.0.1:{small_server.toy_tls_port}/health"
        async with HTTPClient(observed.bus, cafile=tmp_path / "certs" / "ca.pem") as over_tls:
            with pytest.raises(RequestError):
                await over_tls.get(toy)
        # The open ones were not disturbed.
        for client in (first, second):
            again = await client.get(url)
            assert (again.status, again.reused) == (200, True)
    async with HTTPClient(observed.bus) as later:
        assert (await later.get(url)).status == 200
    await wait_until(lambda: small_server.open_connections == 0, "all closed")
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
    assert (
        not [  # the server began no handshake (the client did, and was closed on)
            e
            for e in observed.timeline.events
            if e.name is Name.TLS_HANDSHAKE_STARTED and e.role is Role.SERVER
        ]
    )


async def test_refusals_never_take_a_served_connections_place(
    small_server: Server, observed: Observed
) -> None:
    url = f"{small_server.url}/health"
    first, second = HTTPClient(observed.bus), HTTPClient(observed.bus)
    for client in (first, second):
        assert (await client.get(url)).status == 200
    waiting = [await silent(small_server.port) for _ in range(5)]  # refusals, headless
    await wait_until(lambda: small_server.refusing == 5, "five refusals under way")
    for client in (first, second):
        await client.aclose()
    await wait_until(lambda: small_server.served == 0, "the two served ones closed")
    async with HTTPClient(observed.bus) as later:  # room again, whatever is still refusing
        assert (await later.get(url)).status == 200
    for _reader, writer in waiting:
        writer.close()


async def test_a_refused_request_gets_no_100_continue_and_its_body_is_not_awaited(
    small_server: Server, observed: Observed
) -> None:
    async with HTTPClient(observed.bus) as a, HTTPClient(observed.bus) as b:
        for client in (a, b):
            await client.get(f"{small_server.url}/health")
        reader, writer = await silent(small_server.port)
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        async with asyncio.timeout(5):
            answer = await reader.read(-1)  # answered and closed without the body
        writer.close()
    assert status_of(answer) == 503
    assert b"100 Continue" not in answer


async def test_past_the_refusals_allowed_connections_are_closed_at_once(
    observed: Observed,
) -> None:
    server = Server(make_config(max_connections=1), observed.bus)
    async with server, HTTPClient(observed.bus) as held:
        await held.get(f"{server.url}/health")
        waiting = [await silent(server.port) for _ in range(overflow(1))]
        await wait_until(lambda: server.refusing == overflow(1), "refusals under way")
        reader, writer = await silent(server.port)
        async with asyncio.timeout(5):
            assert await reader.read(-1) == b""  # closed at accept: no answer
        writer.close()
        for _reader, waiting_writer in waiting:
            waiting_writer.close()
    failed = [
        e
        for e in observed.timeline.events
        if e.name is Name.CONNECTION_FAILED and e.attrs["kind"] == "over_capacity"
    ]
    assert len(failed) == 1
    assert "closed at accept" in failed[0].attrs["reason"]


async def test_a_negative_limit_is_refused_by_the_command() -> None:
    code, _, err = await run("server", "--max-connections", "-1", "--metrics-port", "0")
    assert code == 2
    assert "--max-connections must be >= 0" in err


async def test_a_limit_the_open_file_limit_cannot_hold_is_a_clear_error() -> None:
    port = free_port()
    shell = (
        "ulimit -n 200 && exec "
        + " ".join([*COMMAND, "server", "--port", str(port), "--metrics-port", "0",
                    "--no-toy-tls", "--no-real-tls", "--max-connections", "1000"])
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", shell, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
    )
    async with asyncio.timeout(20):
        _, err = await process.communicate()
    assert process.returncode == 2
    assert "needs 1164 open files and the hard limit is 200" in err.decode()


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
