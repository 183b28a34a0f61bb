"""Our server and client against real third-party peers: curl, httpx, uvicorn, http.server.

Every number asserted here comes from what the test did (how many requests, which bytes
it sent), never from a previous run of our own code. Servers listen on 127.0.0.1:0; the
tests that need curl skip without it (and fail in CI, where it must be installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from client.client import HTTPClient
from telemetry.bus import Bus
from telemetry.events import Name, Role
from telemetry.setup import Telemetry
from telemetry.timeline import Timeline
from tests.conftest import require_tool
from tests.helpers import sample, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
    from pathlib import Path

    from prometheus_client.metrics_core import Metric

    from server.lifecycle import Server
    from tests.conftest import RunningServer

pytestmark = [pytest.mark.integration, pytest.mark.peer]

N = 3  # requests per scenario: enough to tell "one connection" from "one per request"
PEER_TIMEOUT_S = 10.0  # a bound on any one peer; the tests take well under a second each


# --- helpers -------------------------------------------------------------------------------


async def drained(server: Server) -> None:
    """Wait until the server has closed (and reported) every connection."""
    await wait_until(lambda: server.open_connections == 0, "the server's connections closed")


@dataclass
class CurlTransfer:
    """One URL of a curl run: its status, whether it connected, its response headers."""

    status: int
    num_connects: int
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class CurlRun:
    transfers: list[CurlTransfer]
    verbose: str  # curl's -v output (stderr)


WRITE_OUT_MARK = "curl-transfer:"  # not "@...": -w @file reads the format from a file


@pytest.fixture
def curl() -> str:
    """curl's path: skips the test without it (fails it in CI)."""
    return require_tool("curl")


async def run_curl(curl: str, *args: str, urls: Iterable[str]) -> CurlRun:
    """Run curl once over `urls` (in order, one process, so it may reuse connections).

    Headers of each response go to stdout (`-D -`), then one write-out line per URL with
    its status and `num_connects` (1: a new TCP connection, 0: a reused one).
    """
    argv = [
        curl,
        "-q",  # ignore any ~/.curlrc; must come first
        "--silent",
        "--show-error",
        "--verbose",
        "--noproxy",
        "*",
        "--max-time",
        str(PEER_TIMEOUT_S),
        "--dump-header",
        "-",
        "--write-out",
        f"{WRITE_OUT_MARK} %{{http_code}} %{{num_connects}}\\n",
        *args,
    ]
    for url in urls:
        argv += ["--output", "/dev/null", url]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(PEER_TIMEOUT_S + 5):
            stdout, stderr = await process.communicate()
    except BaseException:
        process.kill()
        await process.wait()
        raise
    verbose = stderr.decode(errors="replace")
    assert process.returncode == 0, f"curl failed ({process.returncode}): {verbose}"
    transfers: list[CurlTransfer] = []
    headers: list[tuple[str, str]] = []
    for line in stdout.decode("latin-1").splitlines():
        if line.startswith(WRITE_OUT_MARK):
            _mark, status, num_connects = line.split()
            transfers.append(CurlTransfer(int(status), int(num_connects), headers))
            headers = []
        elif ":" in line and not line.startswith("HTTP/"):
            name, value = line.split(":", 1)
            headers.append((name.strip(), value.strip()))
    return CurlRun(transfers, verbose)


def server_closed_events(running: RunningServer) -> list[dict[str, Any]]:
    return [e.attrs for e in running.observed.timeline.named(Name.CONNECTION_CLOSED, Role.SERVER)]


def scraped(families: list[Metric], sample_name: str, **labels: str) -> float:
    """The sum of the scraped samples called `sample_name` that carry `labels`."""
    return sum(
        s.value
        for family in families
        for s in family.samples
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def scrape(port: int) -> list[Metric]:
    """GET /metrics over HTTP and parse it as Prometheus does."""
    async with httpx.AsyncClient(trust_env=False, timeout=PEER_TIMEOUT_S) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return list(text_string_to_metric_families(response.text))


# --- a tiny ASGI app under uvicorn ---------------------------------------------------------

Scope = dict[str, Any]
Message = dict[str, Any]


async def asgi_app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Answers every request with the HTTP version uvicorn saw, so tests can check it."""
    assert scope["type"] == "http"
    more_body = True
    while more_body:
        message = await receive()
        more_body = message.get("more_body", False)
    body = scope["http_version"].encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass
class Uvicorn:
    server: uvicorn.Server
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def running_uvicorn(timeout_keep_alive: int = 5, **settings: Any) -> AsyncIterator[Uvicorn]:
    """uvicorn (h11) in this event loop on 127.0.0.1:0, stopped on the way out; `settings`
    go to its Config (e.g. ssl_certfile)."""
    config = uvicorn.Config(
        asgi_app,
        host="127.0.0.1",
        port=0,
        http="h11",
        ws="none",
        loop="asyncio",
        lifespan="off",
        log_level="warning",
        log_config=None,
        timeout_keep_alive=timeout_keep_alive,
        **settings,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or task.done(), "uvicorn started")
        assert server.started, "uvicorn did not start"
        port = int(server.servers[0].sockets[0].getsockname()[1])
        yield Uvicorn(server, port)
    finally:
        server.should_exit = True
        async with asyncio.timeout(PEER_TIMEOUT_S):
            await task


def client_with_timeline(http_version: str = "1.1") -> tuple[HTTPClient, Timeline]:
    bus = Bus()
    timeline = Timeline()
    bus.subscribe(timeline)
    return HTTPClient(bus, http_version=http_version, timeout_s=PEER_TIMEOUT_S), timeline


# --- curl against our server ---------------------------------------------------------------


async def test_curl_http10_opens_a_connection_per_request_and_server_closes(
    curl: str, loopback_server: RunningServer
) -> None:
    urls = [f"{loopback_server.url}/health"] * N
    run = await run_curl(curl, "--http1.0", urls=urls)
    await drained(loopback_server.server)

    assert [t.status for t in run.transfers] == [200] * N
    assert [t.num_connects for t in run.transfers] == [1] * N, "curl reused an HTTP/1.0 conn"
    assert all(t.header("connection") == "close" for t in run.transfers)
    registry = loopback_server.observed.metrics.registry
    assert sample(registry, "handshake_lab_connections_opened_total", role="server") == N
    closed = server_closed_events(loopback_server)
    assert len(closed) == N
    for attrs in closed:
        assert attrs["closed_by"] == "server"
        assert attrs["protocol"] == "http/1.0"
        assert attrs["requests"] == 1
    assert (
        sample(
            registry,
            "http_server_request_duration_seconds_count",
            network_protocol_version="1.0",
            http_request_method="GET",
            http_response_status_code="200",
        )
        == N
    )
    assert sample(registry, "http_server_request_duration_seconds_count") == N


async def test_curl_keep_alive_reuses_one_connection(
    curl: str, loopback_server: RunningServer
) -> None:
    urls = [f"{loopback_server.url}/", f"{loopback_server.url}/health", f"{loopback_server.url}/"]
    run = await run_curl(curl, urls=urls)
    await drained(loopback_server.server)

    assert [t.status for t in run.transfers] == [200] * len(urls)
    assert [t.num_connects for t in run.transfers] == [1] + [0] * (len(urls) - 1)
    assert run.verbose.count("Re-using existing connection") == len(urls) - 1
    registry = loopback_server.observed.metrics.registry
    assert sample(registry, "handshake_lab_connections_opened_total", role="server") == 1
    assert sample(
        registry, "http_server_request_duration_seconds_count", network_protocol_version="1.1"
    ) == len(urls)
    per_connection = "handshake_lab_requests_per_connection"
    assert sample(registry, f"{per_connection}_count", role="server") == 1
    assert sample(registry, f"{per_connection}_sum", role="server") == len(urls)
    [closed] = server_closed_events(loopback_server)
    assert closed["requests"] == len(urls)
    assert closed["protocol"] == "http/1.1"
    assert closed["closed_by"] == "client"  # curl hangs up when it is done


async def test_curl_http10_keep_alive_is_honoured(
    curl: str, loopback_server: RunningServer
) -> None:
    urls = [f"{loopback_server.url}/health"] * N
    run = await run_curl(curl, "--http1.0", "--header", "Connection: keep-alive", urls=urls)
    await drained(loopback_server.server)

    assert [t.status for t in run.transfers] == [200] * N
    assert all(t.header("connection") == "keep-alive" for t in run.transfers)
    assert [t.num_connects for t in run.transfers] == [1] + [0] * (N - 1)
    registry = loopback_server.observed.metrics.registry
    assert sample(registry, "handshake_lab_connections_opened_total", role="server") == 1
    [closed] = server_closed_events(loopback_server)
    assert closed["requests"] == N
    assert closed["protocol"] == "http/1.0"
    assert closed["closed_by"] == "client"
    assert (
        sample(
            registry, "http_server_request_duration_seconds_count", network_protocol_version="1.0"
        )
        == N
    )


# --- httpx against our server --------------------------------------------------------------


async def test_httpx_methods_bodies_and_keep_alive(loopback_server: RunningServer) -> None:
    payload = b"handshake-lab echo \x00\xff payload"
    chunks = [b"first chunk;", b"", b"second chunk;", b"x" * 5000]

    async def chunked_body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    sent = 0
    async with httpx.AsyncClient(
        base_url=loopback_server.url, trust_env=False, timeout=PEER_TIMEOUT_S
    ) as client:
        index = await client.get("/")
        sent += 1
        assert index.status_code == 200
        assert index.http_version == "HTTP/1.1"
        assert index.text  # the route list; its wording is not this test's business

        echo = await client.post(
            "/echo", content=payload, headers={"content-type": "application/x-lab"}
        )
        sent += 1
        assert echo.status_code == 200
        assert echo.content == payload
        assert echo.headers["content-type"] == "application/x-lab"

        head = await client.head("/bytes", params={"n": "100"})
        sent += 1
        assert head.status_code == 200
        assert head.headers["content-length"] == "100"
        assert head.content == b""

        # After a HEAD, a body wrongly sent would corrupt this next exchange.
        upload = await client.post("/echo", content=chunked_body())
        sent += 1
        assert upload.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in upload.request.headers
        assert upload.status_code == 200
        assert upload.content == b"".join(chunks)

        for _ in range(N):
            got = await client.get("/bytes", params={"n": "100"})
            sent += 1
            assert got.status_code == 200
            assert len(got.content) == 100

        registry = loopback_server.observed.metrics.registry
        assert sample(registry, "handshake_lab_connections_opened_total", role="server") == 1
        assert sample(registry, "handshake_lab_connections_active", role="server") == 1
    await drained(loopback_server.server)

    assert sample(registry, "handshake_lab_connections_opened_total", role="server") == 1
    assert sample(registry, "http_server_request_duration_seconds_count") == sent
    [closed] = server_closed_events(loopback_server)
    assert closed["requests"] == sent
    assert closed["closed_by"] == "client"


# --- the real /metrics endpoint ------------------------------------------------------------


@pytest.fixture
def metrics_port(loopback_server: RunningServer) -> Iterator[int]:
    """Our process's Prometheus endpoint on 127.0.0.1:0, fed by the test server's bus."""
    telemetry = Telemetry(loopback_server.observed.bus)
    try:
        telemetry.enable_metrics()
        yield telemetry.serve_metrics("127.0.0.1", 0)
    finally:
        telemetry.close()


async def test_metrics_endpoint_counts_connections(
    curl: str, loopback_server: RunningServer, metrics_port: int
) -> None:
    opened = "handshake_lab_connections_opened_total"
    closed = "handshake_lab_connections_closed_total"
    server = {"role": "server", "transport": "tcp"}
    before = await scrape(metrics_port)
    assert scraped(before, opened, **server) == 0

    await run_curl(curl, "--http1.0", urls=[f"{loopback_server.url}/health"] * N)
    await drained(loopback_server.server)
    after_http10 = await scrape(metrics_port)
    assert scraped(after_http10, opened, **server) == N
    assert scraped(after_http10, closed, protocol="http/1.0", closed_by="server", **server) == N
    assert (
        scraped(
            after_http10,
            "http_server_request_duration_seconds_count",
            network_protocol_version="1.0",
        )
        == N
    )

    async with httpx.AsyncClient(
        base_url=loopback_server.url, trust_env=False, timeout=PEER_TIMEOUT_S
    ) as client:
        for _ in range(N):
            assert (await client.get("/health")).status_code == 200
    await drained(loopback_server.server)
    after_keep_alive = await scrape(metrics_port)
    opened_now = scraped(after_keep_alive, opened, **server)
    assert opened_now - scraped(after_http10, opened, **server) == 1
    assert scraped(after_keep_alive, closed, protocol="http/1.1", **server) == 1
    assert (
        scraped(
            after_keep_alive,
            "http_server_request_duration_seconds_count",
            network_protocol_version="1.1",
        )
        == N
    )
    per_connection = "handshake_lab_requests_per_connection"
    assert scraped(after_keep_alive, f"{per_connection}_count", role="server") == N + 1
    assert scraped(after_keep_alive, f"{per_connection}_sum", role="server") == 2 * N
    # Every connection that opened has closed, and the gauge agrees.
    assert opened_now == scraped(after_keep_alive, closed, **server)
    assert scraped(after_keep_alive, "handshake_lab_connections_active", **server) == 0


# --- our client against python -m http.server ------------------------------------------------


@contextlib.asynccontextmanager
async def running_http_server(directory: Path) -> AsyncIterator[int]:
    """`python -m http.server` on 127.0.0.1, port 0: it prints the port it got."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-u",  # unbuffered: the "Serving HTTP on ..." line must reach us now
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "--directory",
        str(directory),
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(PEER_TIMEOUT_S):
            line = (await process.stdout.readline()).decode()
        match = re.search(r" port (\d+)", line)
        assert match, f"http.server did not say its port: {line!r}"
        yield int(match.group(1))  # it printed after listen(): it accepts already
    finally:
        if process.returncode is None:
            process.terminate()
        await process.communicate()


async def test_client_against_http_server_http10_answers(tmp_path: Path) -> None:
    content = b"served by the standard library\n" * 10
    (tmp_path / "file.txt").write_bytes(content)
    client, timeline = client_with_timeline()
    async with running_http_server(tmp_path) as port, client:
        url = f"http://127.0.0.1:{port}/file.txt"
        first = await client.get(url)
        assert first.status == 200
        assert first.http_version == "1.0"  # http.server's default protocol_version
        assert first.body == content
        assert not first.reused

        second = await client.get(url)
        assert second.status == 200
        assert second.body == content
        assert not second.reused, "reused a connection the HTTP/1.0 server closes"
        assert second.conn_id != first.conn_id
        assert client.connections_opened == 2

    closes = timeline.named(Name.CONNECTION_CLOSED, Role.CLIENT)
    # (closes finish in the background, so their order is not fixed)
    assert len(closes) == 2
    assert {e.conn_id for e in closes} == {first.conn_id, second.conn_id}
    for event in closes:
        assert event.attrs["closed_by"] == "server"  # it said 1.0: it closes, we follow
        assert event.attrs["requests"] == 1
    assert timeline.count(Name.REQUEST_RETRIED) == 0


# --- our client against uvicorn ------------------------------------------------------------


async def test_client_keep_alive_against_uvicorn() -> None:
    client, timeline = client_with_timeline()
    async with running_uvicorn() as peer, client:
        responses = [await client.get(f"{peer.url}/n/{i}") for i in range(N)]
        assert client.connections_opened == 1
    assert [r.status for r in responses] == [200] * N
    assert [r.body for r in responses] == [b"1.1"] * N  # what uvicorn saw
    assert [r.reused for r in responses] == [False] + [True] * (N - 1)
    assert len({r.conn_id for r in responses}) == 1
    assert [r.index for r in responses] == list(range(1, N + 1))
    assert timeline.count(Name.CONNECT_COMPLETED, Role.CLIENT) == 1
    [closed] = timeline.named(Name.CONNECTION_CLOSED, Role.CLIENT)
    assert closed.attrs["requests"] == N
    assert closed.attrs["closed_by"] == "client"  # aclose() hangs up the idle connection


async def test_client_http10_against_uvicorn_opens_a_connection_each() -> None:
    client, timeline = client_with_timeline("1.0")
    async with running_uvicorn() as peer, client:
        responses = [await client.get(f"{peer.url}/n/{i}") for i in range(N)]
        assert client.connections_opened == N
    assert [r.status for r in responses] == [200] * N
    assert [r.body for r in responses] == [b"1.0"] * N  # uvicorn saw HTTP/1.0
    assert not any(r.reused for r in responses)
    assert len({r.conn_id for r in responses}) == N
    closes = timeline.named(Name.CONNECTION_CLOSED, Role.CLIENT)
    assert len(closes) == N
    assert all(e.attrs["closed_by"] == "server" for e in closes)


async def test_client_retries_when_the_server_closed_the_idle_connection() -> None:
    """uvicorn drops our idle keep-alive connection; the next GET goes out on it, meets the
    FIN, and is sent again once on a new connection (GET is idempotent)."""
    client, timeline = client_with_timeline()
    async with running_uvicorn(timeout_keep_alive=1) as peer, client:
        first = await client.get(f"{peer.url}/first")
        assert first.status == 200
        # uvicorn closes the idle connection after 1 s; wait for that, not for a fixed time.
        await wait_until(
            lambda: not peer.server.server_state.connections, "uvicorn closed the idle connection"
        )
        await asyncio.sleep(0.05)  # let our side read the FIN
        second = await client.get(f"{peer.url}/second")
        assert client.connections_opened == 2
    assert second.status == 200
    assert second.body == b"1.1"
    assert second.retried
    assert not second.reused  # the answer came on the new connection
    assert second.index == 1
    assert second.conn_id != first.conn_id
    [retry] = timeline.named(Name.REQUEST_RETRIED, Role.CLIENT)
    assert retry.attrs["stale_conn_id"] == first.conn_id
    assert retry.attrs["kind"] == "closed_by_server"
    assert retry.attrs["target"] == "/second"
    stale_close = [
        e for e in timeline.named(Name.CONNECTION_CLOSED, Role.CLIENT) if e.conn_id == first.conn_id
    ]
    assert [e.attrs["closed_by"] for e in stale_close] == ["server"]
    assert timeline.count(Name.REQUEST_FAILED) == 0
