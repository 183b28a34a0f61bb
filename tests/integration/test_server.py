"""The real server and client over loopback sockets, in one process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING

import pytest

from client.client import HTTPClient, RequestError
from telemetry.events import Name, Role
from tests.helpers import raw_exchange, sample, status_of

if TYPE_CHECKING:
    from tests.conftest import Observed, RunningServer

pytestmark = pytest.mark.integration


async def wait_until_closed(running: RunningServer, timeout_s: float = 3.0) -> None:
    async with asyncio.timeout(timeout_s):
        while running.server.open_connections:  # noqa: ASYNC110 (a bounded poll, test only)
            await asyncio.sleep(0.005)


def closed_events(observed: Observed, role: Role) -> list[dict[str, object]]:
    return [e.attrs for e in observed.timeline.named(Name.CONNECTION_CLOSED, role)]


async def test_http10_opens_one_connection_per_request(loopback_server: RunningServer) -> None:
    observed = loopback_server.observed
    async with HTTPClient(observed.bus, http_version="1.0") as client:
        for _ in range(4):
            response = await client.get(f"{loopback_server.url}/health")
            assert (response.status, response.body, response.reused) == (200, b"ok\n", False)
    await wait_until_closed(loopback_server)
    registry = observed.metrics.registry
    assert sample(registry, "handshake_lab_connections_opened_total", role="server") == 4
    assert sample(registry, "handshake_lab_connections_closed_total", role="server") == 4
    server_closes = closed_events(observed, Role.SERVER)
    assert [c["closed_by"] for c in server_closes] == ["server"] * 4
    assert {c["reason"] for c in server_closes} == {"http_1.0"}
    # The client saw the server's FIN first on every connection, too.
    assert [c["closed_by"] for c in closed_events(observed, Role.CLIENT)] == ["server"] * 4


async def test_keep_alive_reuses_one_connection(loopback_server: RunningServer) -> None:
    observed = loopback_server.observed
    async with HTTPClient(observed.bus) as client:
        responses = [await client.get(f"{loopback_server.url}/health") for _ in range(5)]
    assert [r.reused for r in responses] == [False, True, True, True, True]
    assert len({r.conn_id for r in responses}) == 1
    assert [r.index for r in responses] == [1, 2, 3, 4, 5]
    assert responses[1].timings.connect_s == 0.0
    await wait_until_closed(loopback_server)
    registry = observed.metrics.registry
    assert sample(registry, "handshake_lab_connections_opened_total", role="server") == 1
    assert sample(registry, "handshake_lab_requests_per_connection_sum", role="server") == 5
    (closed,) = closed_events(observed, Role.SERVER)
    assert (closed["closed_by"], closed["requests"]) == ("client", 5)


async def test_client_timings_add_up(loopback_server: RunningServer) -> None:
    async with HTTPClient() as client:
        response = await client.get(f"{loopback_server.url}/bytes?n=200000")
    t = response.timings
    assert len(response.body) == 200000
    assert 0 < t.connect_s <= t.first_byte_s <= t.total_s
    assert t.total_s == pytest.approx(t.first_byte_s + t.transfer_s)


async def test_pipelined_requests_are_answered_in_order(loopback_server: RunningServer) -> None:
    pipeline = (
        b"GET /delay?ms=50 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nsecond"
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    raw = await raw_exchange(loopback_server.port, pipeline)
    assert raw.count(b"HTTP/1.1 200 OK") == 3
    assert raw.index(b"slept 50 ms") < raw.index(b"second") < raw.index(b"ok\n")
    await wait_until_closed(loopback_server)
    (closed,) = closed_events(loopback_server.observed, Role.SERVER)
    assert closed["requests"] == 3


GET = b"GET / HTTP/1.1\r\nHost: x\r\n"
POST = b"POST /echo HTTP/1.1\r\nHost: x\r\n"

BAD_INPUTS = [
    pytest.param(b"NONSENSE\r\n\r\n", 400, id="malformed"),
    pytest.param(GET + b"X: " + b"a" * 20000 + b"\r\n\r\n", 431, id="huge-header"),
    pytest.param(
        GET + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431, id="many-headers"
    ),
    pytest.param(POST + b"Content-Length: 2000000\r\n\r\n", 413, id="big-body"),
    pytest.param(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400, id="smuggling-te-cl",
    ),
    pytest.param(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, id="http-2.0"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, id="h2-preface"),
    pytest.param(bytes.fromhex("16030100f4010000f00303") + bytes(64), 400, id="tls-on-plain-port"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "status"), BAD_INPUTS)
async def test_bad_input_gets_its_status_and_the_server_goes_on(
    loopback_server: RunningServer, raw: bytes, status: int
) -> None:
    answer = await raw_exchange(loopback_server.port, raw)
    assert status_of(answer) == status
    assert answer.count(b"HTTP/1.1 ") == 1  # nothing after the refusal (no smuggled answer)
    assert b"connection: close" in answer.lower()
    async with HTTPClient() as client:
        assert (await client.get(f"{loopback_server.url}/health")).status == 200
    await wait_until_closed(loopback_server)
    registry = loopback_server.observed.metrics.registry
    assert sample(registry, "handshake_lab_errors_total", role="server") == 1
    assert (
        sample(
            registry,
            "http_server_request_duration_seconds_count",
            http_response_status_code=str(status),
        )
        == 1
    )


@pytest.mark.parametrize("server_limits", [{"header_timeout_s": 0.3, "body_timeout_s": 0.3}])
class TestDeadlines:
    async def test_silent_connection_is_closed_without_an_answer(
        self, loopback_server: RunningServer
    ) -> None:
        answer = await raw_exchange(loopback_server.port, b"")
        assert answer == b""
        await wait_until_closed(loopback_server)
        (closed,) = closed_events(loopback_server.observed, Role.SERVER)
        assert (closed["reason"], closed["closed_by"]) == ("idle_timeout", "server")

    async def test_dribbled_head_gets_408(self, loopback_server: RunningServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", loopback_server.port)
        for byte in b"GET / HTTP/1.1\r\nHost":
            writer.write(bytes([byte]))
            await asyncio.sleep(0.03)
            if reader.at_eof():
                break
        answer = await reader.read(-1)
        writer.close()
        await writer.wait_closed()
        assert status_of(answer) == 408
        async with HTTPClient() as client:  # and the server goes on serving
            assert (await client.get(f"{loopback_server.url}/health")).status == 200

    async def test_dribbled_body_gets_408(self, loopback_server: RunningServer) -> None:
        raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a bit"
        answer = await raw_exchange(loopback_server.port, raw)
        assert status_of(answer) == 408
        async with HTTPClient() as client:
            assert (await client.get(f"{loopback_server.url}/health")).status == 200
        registry = loopback_server.observed.metrics.registry
        await wait_until_closed(loopback_server)
        assert sample(registry, "handshake_lab_errors_total", kind="timeout") == 1


@pytest.mark.parametrize("server_limits", [{"keep_alive_timeout_s": 0.2}])
async def test_idle_keep_alive_is_closed_by_the_server_and_the_client_retries(
    loopback_server: RunningServer,
) -> None:
    observed = loopback_server.observed
    async with HTTPClient(observed.bus) as client:
        first = await client.get(f"{loopback_server.url}/health")
        await asyncio.sleep(0.5)
        second = await client.get(f"{loopback_server.url}/health")
    assert second.status == 200
    assert second.conn_id != first.conn_id
    closes = closed_events(observed, Role.SERVER)
    assert closes[0]["reason"] == "keep_alive_timeout"
    assert closes[0]["closed_by"] == "server"
    fins = observed.timeline.named(Name.FIN_SENT, Role.SERVER)
    assert fins[0].attrs["active_closer"] is True
    # The client either noticed the FIN and retried, or had not reused the stale connection.
    retried = observed.timeline.named(Name.REQUEST_RETRIED, Role.CLIENT)
    assert second.retried == bool(retried)


@pytest.mark.parametrize("server_limits", [{"max_requests_per_connection": 2}])
async def test_request_cap_closes_the_connection_from_the_server(
    loopback_server: RunningServer,
) -> None:
    observed = loopback_server.observed
    async with HTTPClient(observed.bus) as client:
        responses = [await client.get(f"{loopback_server.url}/health") for _ in range(3)]
    assert [r.header(b"connection") for r in responses] == [None, b"close", None]
    assert [r.reused for r in responses] == [False, True, False]
    await wait_until_closed(loopback_server)
    first = closed_events(observed, Role.SERVER)[0]
    assert (first["reason"], first["closed_by"], first["requests"]) == ("max_requests", "server", 2)


async def test_expect_100_continue_over_the_socket(loopback_server: RunningServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", loopback_server.port)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
        b"Connection: close\r\n\r\n"
    )
    interim = await reader.readuntil(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100 ")
    writer.write(b"hello")
    answer = await reader.read(-1)
    writer.close()
    await writer.wait_closed()
    assert status_of(answer) == 200
    assert answer.endswith(b"hello")


async def test_http10_keep_alive_over_the_socket(loopback_server: RunningServer) -> None:
    two = b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /health HTTP/1.0\r\n\r\n"
    answer = await raw_exchange(loopback_server.port, two)
    assert answer.count(b"200 OK") == 2
    assert b"connection: keep-alive" in answer.lower()
    await wait_until_closed(loopback_server)
    (closed,) = closed_events(loopback_server.observed, Role.SERVER)
    assert (closed["requests"], closed["reason"]) == (2, "http_1.0")


async def test_client_vanishing_mid_request_is_counted_and_nothing_leaks(
    loopback_server: RunningServer,
) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", loopback_server.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npart")
    await writer.drain()
    writer.transport.abort()  # RST
    await wait_until_closed(loopback_server)
    async with HTTPClient() as client:
        assert (await client.get(f"{loopback_server.url}/health")).status == 200
    await wait_until_closed(loopback_server)
    registry = loopback_server.observed.metrics.registry
    assert sample(registry, "handshake_lab_connections_opened_total") == sample(
        registry, "handshake_lab_connections_closed_total"
    )
    assert sample(registry, "handshake_lab_connections_active") == 0


async def test_connection_refused_is_a_clear_client_error(observed: Observed) -> None:
    async with HTTPClient(observed.bus) as client:
        # Port 9 (discard) on loopback: nobody listens there in the test environment.
        with pytest.raises(RequestError) as caught:
            await client.get("http://127.0.0.1:9/")
    assert caught.value.kind == "refused"
    assert sample(observed.metrics.registry, "handshake_lab_errors_total", kind="refused") == 1


async def test_graceful_shutdown_finishes_in_flight_and_closes_idle(
    loopback_server: RunningServer,
) -> None:
    observed = loopback_server.observed
    url = loopback_server.url
    async with HTTPClient(observed.bus) as idle_client, HTTPClient(observed.bus) as busy_client:
        await idle_client.get(f"{url}/health")  # now an idle keep-alive connection
        in_flight = asyncio.create_task(busy_client.get(f"{url}/delay?ms=300"))
        await asyncio.sleep(0.1)
        await loopback_server.server.shutdown(timeout_s=5)
        response = await in_flight
    assert response.status == 200
    assert response.header(b"connection") == b"close"
    reasons = sorted(str(c["reason"]) for c in closed_events(observed, Role.SERVER))
    assert reasons == ["shutdown", "shutdown"]
    completed = observed.timeline.named(Name.SHUTDOWN_COMPLETED)
    assert completed[0].attrs["cancelled"] == 0


async def test_an_unparsable_target_is_a_400_not_a_crash(loopback_server: RunningServer) -> None:
    raw = b"GET //[ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert status_of(await raw_exchange(loopback_server.port, raw)) == 400
    async with HTTPClient() as client:
        assert (await client.get(f"{loopback_server.url}/health")).status == 200
    await wait_until_closed(loopback_server)
    failed = loopback_server.observed.timeline.named(Name.CONNECTION_FAILED)
    assert failed == []


async def test_shutdown_finishes_a_response_still_being_written(
    loopback_server: RunningServer,
) -> None:
    size = 8_000_000
    reader, writer = await asyncio.open_connection("127.0.0.1", loopback_server.port)
    writer.write(b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
    head = await reader.readuntil(b"\r\n\r\n")
    # 8 MB do not fit in the socket buffers: the server is still writing when shutdown starts.
    shutdown = asyncio.create_task(loopback_server.server.shutdown(timeout_s=10))
    received = 0
    while received < size:
        chunk = await reader.read(65536)
        if not chunk:
            break
        received += len(chunk)
    await shutdown
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    assert status_of(head) == 200
    assert received == size
    failures = loopback_server.observed.timeline.named(Name.CONNECTION_FAILED)
    assert failures == []


@pytest.mark.parametrize("server_limits", [{"send_timeout_s": 1.0, "linger_timeout_s": 0.5}])
async def test_a_peer_that_sends_fin_and_never_reads_is_dropped_in_bounded_time(
    loopback_server: RunningServer,
) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", loopback_server.port))
    await loop.sock_sendall(sock, b"GET /bytes?n=4000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.shutdown(socket.SHUT_WR)
    try:
        async with asyncio.timeout(3):
            while not loopback_server.server.accepted:  # noqa: ASYNC110 (a bounded poll)
                await asyncio.sleep(0.01)
        # send_timeout_s bounds a peer that stops reading, also after its FIN.
        await wait_until_closed(loopback_server, timeout_s=5)
    finally:
        sock.close()
    closes = closed_events(loopback_server.observed, Role.SERVER)
    assert len(closes) == 1


async def test_concurrent_requests_each_get_a_connection_and_all_are_closed(
    loopback_server: RunningServer,
) -> None:
    observed = loopback_server.observed
    async with HTTPClient(observed.bus) as client:
        url = f"{loopback_server.url}/delay?ms=50"
        responses = await asyncio.gather(*(client.get(url) for _ in range(3)))
        again = await client.get(url)  # one of the three idle connections is reused
    assert len({r.conn_id for r in responses}) == 3
    assert again.reused
    assert client.connections_opened == 3
    assert len(closed_events(observed, Role.CLIENT)) == 3


async def test_a_cancelled_request_closes_its_connection(loopback_server: RunningServer) -> None:
    observed = loopback_server.observed
    async with HTTPClient(observed.bus) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.get(f"{loopback_server.url}/delay?ms=2000"), 0.1)
    (closed,) = closed_events(observed, Role.CLIENT)
    assert closed["reason"] == "cancelled"
    await wait_until_closed(loopback_server)
