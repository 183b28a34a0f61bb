"""Security defaults: every listener and every metrics endpoint on loopback unless told
otherwise, and no route that reads a path the request controls."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING

import pytest

from client.client import HTTPClient
from tests.conftest import require_tool
from tests.integration.test_cli import free_port, server_process

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import RunningServer

pytestmark = pytest.mark.integration


async def listening_addresses(ports: set[int]) -> dict[int, set[str]]:
    """Port -> the local addresses listening on it, as the kernel says (ss -tlnH)."""
    ss = await asyncio.create_subprocess_exec(
        require_tool("ss"), "-tlnH", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await ss.communicate()
    found: dict[int, set[str]] = {}
    for line in out.decode().splitlines():
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        if int(port) in ports:
            found.setdefault(int(port), set()).add(host)
    return found


async def test_every_listener_and_every_metrics_endpoint_binds_to_loopback_by_default(
    tmp_path: Path,
) -> None:
    toy, real, load_metrics = free_port(), free_port(), free_port()
    async with server_process(
        "--toy-tls-port", str(toy), "--real-tls-port", str(real),
        "--certs-dir", str(tmp_path / "certs"),
    ) as server:  # fmt: skip
        load = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "handshake_lab", "client", "load", "--port", str(server.port),
            "--toy-tls-port", str(toy), "--real-tls-port", str(real), "--rate", "1",
            "--cafile", str(tmp_path / "certs" / "ca.pem"), "--metrics-port", str(load_metrics),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert load.stderr is not None
            async with asyncio.timeout(15):
                while b"metrics on" not in await load.stderr.readline():
                    assert load.returncode is None
            ports = {server.port, toy, real, server.metrics_port, load_metrics}
            found = await listening_addresses(ports)
        finally:
            with contextlib.suppress(ProcessLookupError):
                load.send_signal(signal.SIGTERM)
            await load.wait()
    assert set(found) == ports  # each one listening...
    assert all(hosts == {"127.0.0.1"} for hosts in found.values()), found  # ...on loopback only


@pytest.mark.parametrize(
    "target",
    [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/ws-demo/../../../etc/passwd",
        "//etc/passwd",
        "/etc/passwd",
        "/..%2f..%2f..%2fetc%2fpasswd",
        "/bytes/../../etc/passwd",
    ],
)
async def test_no_route_serves_a_path_the_request_names(
    loopback_server: RunningServer, target: str
) -> None:
    async with HTTPClient() as client:
        response = await client.get(f"{loopback_server.url}{target}")
    assert response.status in (400, 404)
    assert b"root:" not in response.body
