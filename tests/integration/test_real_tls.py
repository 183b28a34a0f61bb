"""Real TLS (Python's ssl) on the server's third listener, against real peers: curl,
openssl s_client, the websockets library; and our client against uvicorn over TLS."""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

import pytest
from websockets.asyncio.client import connect as ws_connect

from client.client import HTTPClient, RequestError
from client.ws import connect
from handshake_tls.certs import make_lab_certificates
from server.lifecycle import Server
from telemetry.events import Name, Role
from tests.conftest import make_config, require_tool
from tests.helpers import sample, wait_until
from tests.integration.test_peers import running_uvicorn

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Observed

pytestmark = [pytest.mark.integration, pytest.mark.peer]
N = 3


async def run(*argv: str, stdin: bytes = b"") -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(20):
        out, _ = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


def tls_connections(observed: Observed) -> list[str]:
    return [
        e.attrs["closed_by"]
        for e in observed.timeline.events
        if e.name is Name.CONNECTION_CLOSED
        and e.role is Role.SERVER
        and e.attrs["transport"] == "tls"
    ]


@pytest.mark.parametrize(("http10", "connections"), [(True, N), (False, 1)])
async def test_curl_over_real_tls(
    tls_server: Server, observed: Observed, tmp_path: Path, http10: bool, connections: int
) -> None:
    curl = require_tool("curl")
    url = f"https://localhost:{tls_server.real_tls_port}/health"
    args = ["--http1.0"] if http10 else []
    code, out = await run(
        curl, "-s", "--cacert", str(tmp_path / "certs" / "ca.pem"), *args, *[url] * N
    )
    assert code == 0, out
    assert out == "ok\n" * N
    await wait_until(lambda: tls_server.open_connections == 0, "closed")
    assert len(tls_connections(observed)) == connections
    versions = {
        e.attrs["version"]
        for e in observed.timeline.events
        if e.name is Name.TLS_HANDSHAKE_COMPLETED and e.role is Role.SERVER
    }
    assert versions == {"TLSv1.3"}
    handshakes = sample(
        observed.metrics.registry, "handshake_lab_tls_handshakes_total", kind="real"
    )
    assert handshakes == connections


async def test_openssl_s_client_verifies_and_gets_an_answer(
    tls_server: Server, tmp_path: Path
) -> None:
    openssl = require_tool("openssl")
    for version in ("-tls1_2", "-tls1_3"):
        code, out = await run(
            openssl, "s_client", version, "-connect", f"127.0.0.1:{tls_server.real_tls_port}",
            "-servername", "localhost", "-CAfile", str(tmp_path / "certs" / "ca.pem"),
            "-verify_return_error", "-ign_eof",
            stdin=b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n",
        )  # fmt: skip
        assert code == 0, out
        assert "Verify return code: 0 (ok)" in out
        assert "HTTP/1.1 200 OK" in out
        assert ("TLSv1.3" if version == "-tls1_3" else "TLSv1.2") in out


async def test_websockets_over_real_tls(tls_server: Server, tmp_path: Path) -> None:
    context = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.pem"))
    url = f"wss://localhost:{tls_server.real_tls_port}/ws/echo"
    async with ws_connect(url, ssl=context) as ws:
        await ws.send("over real TLS")
        assert await ws.recv() == "over real TLS"


async def test_our_client_over_real_tls_to_uvicorn_and_a_wrong_ca(
    observed: Observed, tmp_path: Path
) -> None:
    files = make_lab_certificates(tmp_path / "certs")
    async with running_uvicorn(
        ssl_certfile=str(files.certificate("ec")), ssl_keyfile=str(files.key("ec"))
    ) as peer:
        url = f"https://localhost:{peer.port}/"
        async with HTTPClient(observed.bus, cafile=files.ca) as client:
            for _ in range(N):
                response = await client.get(url)
                assert (response.status, response.body) == (200, b"1.1")
            assert client.connections_opened == 1  # keep-alive over TLS
        other = make_lab_certificates(tmp_path / "other")
        async with HTTPClient(observed.bus, cafile=other.ca) as client:
            with pytest.raises(RequestError) as caught:
                await client.get(url)
    assert caught.value.kind == "tls_bad_certificate"


async def test_our_websocket_client_over_real_tls(
    tls_server: Server, observed: Observed, tmp_path: Path
) -> None:
    url = f"wss://localhost:{tls_server.real_tls_port}/ws/echo"
    async with await connect(url, bus=observed.bus, cafile=tmp_path / "certs" / "ca.pem") as ws:
        await ws.send("wss from the lab's client")
        message = await ws.receive()
        assert message is not None
        assert message.data == "wss from the lab's client"
    assert ws.core.close_code == 1000


async def test_the_real_tls_listener_honours_sslkeylogfile(
    observed: Observed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    config = make_config(real_tls_port=0, certs_dir=tmp_path / "certs")
    async with Server(config, observed.bus) as server:
        monkeypatch.delenv("SSLKEYLOGFILE")  # (so only the server writes it)
        async with HTTPClient(observed.bus, cafile=tmp_path / "certs" / "ca.pem") as client:
            response = await client.get(f"https://localhost:{server.real_tls_port}/health")
        assert response.status == 200
    # NSS key log format (what Wireshark reads): TLS 1.3 traffic secrets, by client random.
    lines = keylog.read_text().splitlines()
    assert any(line.startswith("CLIENT_TRAFFIC_SECRET_0 ") for line in lines)
    assert any(line.startswith("SERVER_HANDSHAKE_TRAFFIC_SECRET ") for line in lines)
