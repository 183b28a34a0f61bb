"""WebSocket over real sockets: our server and client against the `websockets` library, each
other, and raw bytes.

Servers listen on 127.0.0.1:0. Every count asserted comes from what the test did (how
many messages it sent); close codes come from RFC 6455, not from a previous run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import TYPE_CHECKING, Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidStatus

from client.ws import UpgradeFailed, connect
from handshake_lab.ws_conn import WSLimits
from handshake_lab.ws_handshake import accept_token
from handshake_lab.ws_session import MAX_QUEUED_MESSAGES
from server.lifecycle import Server
from telemetry.bus import Bus
from telemetry.events import Name, Role
from telemetry.timeline import Timeline
from tests.conftest import RunningServer, make_config
from tests.helpers import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    TEXT,
    close_code_of,
    raw_exchange,
    read_ws_frame,
    sample,
    status_of,
    wait_until,
    ws_frame,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from websockets.asyncio.server import ServerConnection

    from tests.conftest import Observed

pytestmark = pytest.mark.integration

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
BOUND_S = 5.0  # no single step of these tests should come near it


def ws_url(running: RunningServer, path: str) -> str:
    return f"ws://127.0.0.1:{running.port}{path}"


async def served(observed: Observed, ws: WSLimits | None = None) -> Server:
    server = Server(make_config(ws=ws or WSLimits()), observed.bus)
    await server.start()
    return server


@contextlib.asynccontextmanager
async def server_with(observed: Observed, ws: WSLimits) -> AsyncIterator[RunningServer]:
    """A server with these WebSocket limits, stopped at the end."""
    server = await served(observed, ws)
    try:
        yield RunningServer(server, observed)
    finally:
        await server.shutdown(timeout_s=BOUND_S)


def ws_events(observed: Observed, name: Name, role: Role = Role.SERVER) -> list[Any]:
    return [e for e in observed.timeline.events if e.name is name and e.role is role]


async def handshake_raw(
    port: int, path: str = "/ws/echo", extra: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Upgrade by hand; returns the stream positioned after the 101's head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET %s HTTP/1.1\r\nHost: lab\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
        % (path.encode(), KEY, extra)
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert status_of(head) == 101
    assert accept_token(KEY) in head
    return reader, writer


async def still_serves(running: RunningServer) -> None:
    """A normal WebSocket and a normal HTTP request still work."""
    async with ws_connect(ws_url(running, "/ws/echo")) as ws:
        await ws.send("still here")
        assert await ws.recv() == "still here"
    response = await raw_exchange(
        running.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_of(response) == 200


# --- real peers ----------------------------------------------------------------------------


@pytest.mark.peer
@pytest.mark.parametrize("compression", ["deflate", None])
async def test_websockets_client_echo_against_our_server(
    loopback_server: RunningServer, compression: str | None
) -> None:
    n = 20
    registry = loopback_server.observed.metrics.registry
    async with ws_connect(ws_url(loopback_server, "/ws/echo"), compression=compression) as ws:
        assert ws.response is not None
        negotiated = ws.response.headers.get("Sec-WebSocket-Extensions")
        assert (negotiated is not None) is (compression is not None)
        for i in range(n // 2):
            await ws.send(f"text {i} ✓")
            assert await ws.recv() == f"text {i} ✓"
            await ws.send(bytes([i]) * 300)
            assert await ws.recv() == bytes([i]) * 300
        await ws.send(["frag", "men", "ted"])  # one message in three frames (§5.4)
        assert await ws.recv() == "fragmented"
    await wait_until(lambda: loopback_server.server.open_connections == 0, "closed")
    assert sample(registry, "handshake_lab_ws_connections_active", role="server") == 0
    received = {"role": "server", "direction": "received"}
    assert sample(registry, "handshake_lab_ws_messages_total", **received) == n + 1
    assert sample(registry, "handshake_lab_ws_messages_total", role="server", direction="sent") == (
        n + 1
    )
    assert sample(registry, "handshake_lab_ws_messages_total", type="binary", **received) == n // 2
    closes = {"role": "server", "closed_by": "client", "code": "1000"}
    assert sample(registry, "handshake_lab_ws_closes_total", **closes) == 1
    [fragmented] = [
        e
        for e in ws_events(loopback_server.observed, Name.WS_MESSAGE_RECEIVED)
        if e.attrs["frames"] > 1
    ]
    # websockets ends a fragmented send with an empty final frame: 3 or 4 frames.
    assert fragmented.attrs["frames"] >= 3
    assert fragmented.attrs["bytes"] == len("fragmented")
    frames = sample(registry, "handshake_lab_ws_data_frames_total", **received)
    assert frames == n + fragmented.attrs["frames"]
    # TCP: after the Close frames, the server sent FIN first (RFC 6455 §7.1.1).
    [closed] = ws_events(loopback_server.observed, Name.CONNECTION_CLOSED)
    assert (closed.attrs["closed_by"], closed.attrs["protocol"]) == ("server", "websocket")


@pytest.mark.peer
@pytest.mark.parametrize("offer_deflate", [True, False])
async def test_our_client_against_a_websockets_server(
    observed: Observed, offer_deflate: bool
) -> None:
    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async with ws_serve(echo, "127.0.0.1", 0) as peer:
        port = peer.sockets[0].getsockname()[1]
        client = await connect(
            f"ws://127.0.0.1:{port}/", bus=observed.bus, offer_deflate=offer_deflate
        )
        assert client.handshake.status == 101
        assert client.handshake.accept == client.handshake.expected_accept
        assert (client.handshake.extensions == "permessage-deflate") is offer_deflate
        for data in ("hello", b"\x00" * 5000, "é" * 1000):
            await client.send(data, fragment_bytes=700)
            message = await client.receive()
            assert message is not None
            assert message.data == data
        rtt = await (await client.ping())
        assert 0 < rtt < BOUND_S
        await client.close(4001, "done")
    assert (client.core.close_code, client.core.closed_by) == (4001, "local")
    assert client.session.closing.closed_by is Role.SERVER  # websockets closes TCP first
    registry = observed.metrics.registry
    assert (
        sample(registry, "handshake_lab_ws_messages_total", role="client", direction="received")
        == 3
    )
    assert sample(registry, "handshake_lab_ws_ping_rtt_seconds_count", role="client") == 1
    assert sample(registry, "handshake_lab_ws_closes_total", role="client", code="4xxx") == 1


async def test_our_client_and_server_ticker_pushes_unasked(loopback_server: RunningServer) -> None:
    async with await connect(ws_url(loopback_server, "/ws/ticker?interval_ms=20")) as client:
        ticks = []
        for _ in range(3):
            message = await client.receive()
            assert message is not None
            assert isinstance(message.data, str)
            ticks.append(json.loads(message.data))
        assert client.core.messages_sent == 0  # we never asked
    assert [t["tick"] for t in ticks] == [1, 2, 3]
    assert all(t["interval_ms"] == 20 for t in ticks)
    assert ticks[2]["server_time"] - ticks[0]["server_time"] >= 0.03  # two intervals, loosely


@pytest.mark.peer
async def test_chat_broadcasts_to_everyone_on_the_path(loopback_server: RunningServer) -> None:
    url = ws_url(loopback_server, "/ws/chat")
    async with ws_connect(url) as alice, await connect(url) as bob:
        await wait_until(
            lambda: len(loopback_server.server.app.websocket.chat.members) == 2, "both joined"
        )
        await alice.send("hi all")
        assert await alice.recv() == "hi all"  # the sender too
        message = await bob.receive()
        assert message is not None
        assert message.data == "hi all"
        await bob.send(b"\x01\x02")
        assert await alice.recv() == b"\x01\x02"


# --- ping/pong, idle, shutdown -------------------------------------------------------------


@pytest.mark.peer
async def test_server_keepalive_pings_are_answered_and_timed(observed: Observed) -> None:
    limits = WSLimits(ping_interval_s=0.05, ping_timeout_s=1.0)
    async with server_with(observed, limits) as server:
        async with ws_connect(f"ws://127.0.0.1:{server.port}/ws/echo", ping_interval=None) as ws:
            registry = observed.metrics.registry
            await wait_until(
                lambda: (
                    sample(registry, "handshake_lab_ws_ping_rtt_seconds_count", role="server") >= 2
                ),
                "two keepalive pongs",
            )
            await ws.send("alive")
            assert await ws.recv() == "alive"
        sent = sample(registry, "handshake_lab_ws_pings_total", role="server", direction="sent")
        assert sent >= 2


async def test_a_peer_that_stops_answering_pings_is_closed_with_1011(observed: Observed) -> None:
    limits = WSLimits(ping_interval_s=0.05, ping_timeout_s=0.1, close_timeout_s=0.2)
    async with server_with(observed, limits) as server:
        reader, writer = await handshake_raw(server.port)
        try:
            # Read frames but never answer: the ping, then the Close.
            async with asyncio.timeout(BOUND_S):
                opcode, _ = await read_ws_frame(reader)
                assert opcode == PING
                opcode, payload = await read_ws_frame(reader)
                assert opcode == CLOSE
                assert close_code_of(payload) == 1011
                assert await reader.read() == b""  # then the server closes TCP
        finally:
            writer.close()
        await wait_until(lambda: server.server.open_connections == 0, "closed")
    kinds = [e.attrs["kind"] for e in ws_events(observed, Name.WS_CONNECTION_FAILED)]
    assert kinds == ["ws_ping_timeout", "ws_close_timeout"]


@pytest.mark.peer
async def test_an_idle_websocket_is_closed_by_the_server(observed: Observed) -> None:
    limits = WSLimits(ping_interval_s=0, idle_timeout_s=0.1)
    async with (
        server_with(observed, limits) as server,
        ws_connect(f"ws://127.0.0.1:{server.port}/ws/echo") as ws,
    ):
        with pytest.raises(WsConnectionClosed) as caught:
            async with asyncio.timeout(BOUND_S):
                await ws.recv()
    assert caught.value.rcvd is not None
    assert caught.value.rcvd.code == 1000
    assert "idle" in caught.value.rcvd.reason


@pytest.mark.peer
async def test_shutdown_sends_1001_and_waits_for_the_peers_close(observed: Observed) -> None:
    server = await served(observed)
    url = f"ws://127.0.0.1:{server.port}/ws/ticker?interval_ms=10"
    async with ws_connect(url) as first, await connect(url) as second:
        await first.recv()
        assert await second.receive() is not None
        await server.shutdown(timeout_s=BOUND_S)
        with pytest.raises(WsConnectionClosed) as caught:
            await drain_ticks(first)
        await second.wait_closed()
    assert caught.value.rcvd is not None
    assert caught.value.rcvd.code == 1001
    assert (second.core.close_code, second.core.closed_by) == (1001, "peer")
    [completed] = ws_events(observed, Name.SHUTDOWN_COMPLETED)
    assert completed.attrs["cancelled"] == 0  # both answered the Close in time
    registry = observed.metrics.registry
    assert sample(registry, "handshake_lab_ws_connections_active", role="server") == 0
    closes = {"role": "server", "closed_by": "server", "code": "1001"}
    assert sample(registry, "handshake_lab_ws_closes_total", **closes) == 2


async def drain_ticks(ws: Any) -> None:
    while True:
        await ws.recv()


# --- bad upgrades --------------------------------------------------------------------------

GOOD = (
    b"Host: lab\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.mark.parametrize(
    ("request_bytes", "status", "kind"),
    [
        # RFC 6455 §4.2.1 step 5: the key must decode to 16 bytes.
        pytest.param(
            b"GET /ws/echo HTTP/1.1\r\nHost: lab\r\nUpgrade: websocket\r\nConnection: Upgrade"
            b"\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
            "ws_bad_key",
            id="short-key",
        ),
        pytest.param(
            b"GET /ws/echo HTTP/1.1\r\nHost: lab\r\nUpgrade: websocket\r\nConnection: Upgrade"
            b"\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
            "ws_bad_key",
            id="no-key",
        ),
        # §4.4: an unknown version gets 426 and the version we speak.
        pytest.param(
            b"GET /ws/echo HTTP/1.1\r\n" + GOOD + b"Sec-WebSocket-Version: 8\r\n\r\n",
            426,
            "ws_unsupported_version",
            id="version-8",
        ),
        # §4.1: GET, HTTP/1.1.
        pytest.param(
            b"GET /ws/echo HTTP/1.0\r\n" + GOOD + b"Sec-WebSocket-Version: 13\r\n\r\n",
            400,
            "ws_bad_version",
            id="http-1.0",
        ),
        pytest.param(
            b"POST /ws/echo HTTP/1.1\r\n" + GOOD + b"Sec-WebSocket-Version: 13\r\n"
            b"Content-Length: 0\r\n\r\n",
            400,
            "ws_bad_method",
            id="post",
        ),
        # RFC 9110 §15.5.22: a WebSocket-only path asked without Upgrade: 426.
        pytest.param(
            b"GET /ws/echo HTTP/1.1\r\nHost: lab\r\n\r\n", 426, "ws_not_upgrade", id="plain-get"
        ),
        pytest.param(
            b"GET /ws/ticker?interval_ms=1 HTTP/1.1\r\n" + GOOD + b"Sec-WebSocket-Version: 13\r\n"
            b"\r\n",
            400,
            "ws_bad_request",
            id="ticker-too-fast",
        ),
    ],
)
async def test_bad_upgrades_get_their_status_and_the_server_serves_on(
    loopback_server: RunningServer, request_bytes: bytes, status: int, kind: str
) -> None:
    response = await raw_exchange(loopback_server.port, request_bytes)  # read until server FIN
    assert status_of(response) == status
    head = response.split(b"\r\n\r\n", 1)[0].lower()
    assert b"connection: close" in head
    if status == 426:
        assert b"sec-websocket-version: 13" in head
        assert b"upgrade: websocket" in head
    [refused] = ws_events(loopback_server.observed, Name.WS_UPGRADE_REFUSED)
    assert refused.attrs["kind"] == kind
    registry = loopback_server.observed.metrics.registry
    assert sample(registry, "handshake_lab_ws_upgrades_total", outcome=kind) == 1
    await still_serves(loopback_server)


@pytest.mark.peer
async def test_websockets_and_our_client_see_the_refusal(loopback_server: RunningServer) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with ws_connect(ws_url(loopback_server, "/ws/ticker?interval_ms=0")):
            pass
    assert caught.value.response.status_code == 400
    with pytest.raises(UpgradeFailed) as refused:
        await connect(ws_url(loopback_server, "/health"))  # not a WebSocket path: plain 200
    assert (refused.value.kind, refused.value.handshake.status) == ("ws_upgrade_refused", 200)
    assert refused.value.body == b"ok\n"


# --- protocol violations, as raw frames after a good handshake ---------------------------


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param(ws_frame(TEXT, b"hi", masked=False), 1002, id="unmasked"),  # §5.1
        pytest.param(ws_frame(TEXT, b"hi", rsv=0b010), 1002, id="reserved-bit"),  # §5.2
        pytest.param(ws_frame(PING, b"p" * 126), 1002, id="long-control-frame"),  # §5.5
        pytest.param(ws_frame(PING, b"p", fin=False), 1002, id="fragmented-control"),  # §5.5
        pytest.param(ws_frame(TEXT, b"\xc3\x28"), 1007, id="invalid-utf8"),  # §8.1
        pytest.param(ws_frame(CONTINUATION, b"x"), 1002, id="orphan-continuation"),  # §5.4
        # Our limit: the header alone (no payload is ever sent) earns 1009 at once.
        pytest.param(ws_frame(BINARY, b"", declared=2000), 1009, id="too-big-header-only"),
    ],
)
async def test_protocol_violations_get_a_close_frame_then_tcp_close(
    observed: Observed, frames: bytes, code: int
) -> None:
    limits = WSLimits(max_message_bytes=1000)
    async with server_with(observed, limits) as server:
        reader, writer = await handshake_raw(server.port)
        try:
            writer.write(frames)
            async with asyncio.timeout(BOUND_S):
                opcode, payload = await read_ws_frame(reader)
                assert opcode == CLOSE
                assert close_code_of(payload) == code
                assert await reader.read() == b""  # and the server closed TCP
        finally:
            writer.close()
        await still_serves(server)
    [failed] = ws_events(observed, Name.WS_CONNECTION_FAILED)
    assert failed.attrs["code"] == code
    assert sample(observed.metrics.registry, "handshake_lab_errors_total", role="server") == 1


async def test_frames_sent_with_the_upgrade_request_are_not_lost(
    loopback_server: RunningServer,
) -> None:
    early = ws_frame(TEXT, b"sent before the 101")  # in the very packet of the request
    reader, writer = await asyncio.open_connection("127.0.0.1", loopback_server.port)
    try:
        writer.write(
            b"GET /ws/echo HTTP/1.1\r\n" + GOOD + b"Sec-WebSocket-Version: 13\r\n\r\n" + early
        )
        async with asyncio.timeout(BOUND_S):
            assert status_of(await reader.readuntil(b"\r\n\r\n")) == 101
            assert await read_ws_frame(reader) == (TEXT, b"sent before the 101")
    finally:
        writer.close()


async def test_every_message_and_close_is_counted_once(observed: Observed) -> None:
    n = 50
    async with server_with(observed, WSLimits()) as server:
        url = f"ws://127.0.0.1:{server.port}/ws/echo"
        client_bus = Bus()  # the client's own events stay out of the server's metrics
        for _ in range(2):
            async with await connect(url, bus=client_bus) as client:
                for i in range(n):
                    await client.send(f"m{i}")
                    assert (await client.receive()) is not None
        await wait_until(lambda: server.server.open_connections == 0, "both closed")
    registry = observed.metrics.registry
    for direction in ("sent", "received"):
        labels = {"role": "server", "direction": direction}
        assert sample(registry, "handshake_lab_ws_messages_total", **labels) == 2 * n
        assert sample(registry, "handshake_lab_ws_message_size_bytes_count", **labels) == 2 * n
    assert sample(registry, "handshake_lab_ws_connections_active", role="server") == 0
    assert sample(registry, "handshake_lab_ws_upgrades_total", outcome="accepted") == 2
    assert sample(registry, "handshake_lab_ws_closes_total", role="server", code="1000") == 2
    assert sample(registry, "handshake_lab_ws_connection_duration_seconds_count") == 2
    # The log and the metrics tell the same story: one event counted per event emitted.
    emitted = len(ws_events(observed, Name.WS_MESSAGE_RECEIVED))
    events_metric = sample(
        registry, "handshake_lab_events_total", role="server", event="ws.message.received"
    )
    assert emitted == events_metric == 2 * n


# --- from the review: pressure, slow peers, timers ---------------------------------------


@pytest.mark.peer
async def test_a_ping_between_compressed_fragments_from_websockets(
    loopback_server: RunningServer,
) -> None:
    text = "hello compressible world " * 20
    async with ws_connect(ws_url(loopback_server, "/ws/echo"), compression="deflate") as ws:

        async def fragments() -> AsyncIterator[str]:
            yield text[:200]
            await ws.ping()  # RFC 6455 §5.4: a control frame between two data frames
            yield text[200:]

        async with asyncio.timeout(BOUND_S):
            await ws.send(fragments())
            assert await ws.recv() == text


@pytest.mark.peer
async def test_an_incompressible_message_of_the_limit_passes(observed: Observed) -> None:
    limit = 4096  # random bytes come out a little bigger from deflate than they went in
    async with (
        server_with(observed, WSLimits(max_message_bytes=limit)) as server,
        ws_connect(ws_url(server, "/ws/echo"), compression="deflate") as ws,
    ):
        payload = random.Random(7).randbytes(limit)
        await ws.send(payload)
        assert await ws.recv() == payload


@pytest.mark.peer
async def test_shutdown_closes_websockets_that_have_no_timer(observed: Observed) -> None:
    limits = WSLimits(ping_interval_s=0, idle_timeout_s=0)  # nothing would wake the read
    server = await served(observed, limits)
    async with ws_connect(f"ws://127.0.0.1:{server.port}/ws/echo") as ws:
        await ws.send("x")
        await ws.recv()
        shutdown = asyncio.create_task(server.shutdown(timeout_s=BOUND_S))
        with pytest.raises(WsConnectionClosed) as caught:
            async with asyncio.timeout(BOUND_S):
                await ws.recv()
        await shutdown
    assert caught.value.rcvd is not None
    assert caught.value.rcvd.code == 1001
    [completed] = ws_events(observed, Name.SHUTDOWN_COMPLETED)
    assert completed.attrs["cancelled"] == 0


async def test_the_close_timeout_holds_while_the_peer_floods_messages(observed: Observed) -> None:
    # The server closes (idle), the peer never answers with Close but keeps the server's
    # read buffer full: the close timeout must still end the connection.
    limits = WSLimits(idle_timeout_s=0.2, close_timeout_s=0.5, ping_interval_s=0)
    async with server_with(observed, limits) as server:
        reader, writer = await handshake_raw(server.port, "/ws/chat")
        opcode, payload = await read_ws_frame(reader)
        assert (opcode, close_code_of(payload)) == (CLOSE, 1000)
        flood = ws_frame(TEXT, b"m" * 200) * 50

        async def keep_sending() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(flood)
                    await writer.drain()

        sending = asyncio.create_task(keep_sending())
        try:
            await wait_until(lambda: server.server.open_connections == 0, "closed", BOUND_S)
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            writer.close()
    kinds = [e.attrs["kind"] for e in ws_events(observed, Name.WS_CONNECTION_FAILED)]
    assert "ws_close_timeout" in kinds


@pytest.mark.peer
async def test_a_chat_member_that_never_reads_delays_nobody(observed: Observed) -> None:
    async with server_with(observed, WSLimits()) as server:
        url = ws_url(server, "/ws/chat")
        _reader, silent = await handshake_raw(server.port, "/ws/chat")  # joins, never reads
        async with (
            ws_connect(url, compression=None, max_queue=None) as talker,
            ws_connect(url, compression=None, max_queue=None) as other,
        ):
            heard: asyncio.Queue[tuple[str, float]] = asyncio.Queue()

            async def listen(ws: Any, out: asyncio.Queue[tuple[str, float]] | None) -> None:
                with contextlib.suppress(WsConnectionClosed):
                    async for message in ws:
                        if out is not None and isinstance(message, str):
                            out.put_nowait((message, time.monotonic()))

            async def flood() -> None:
                for _ in range(200):  # ~12 MB: more than the silent member's socket holds
                    await talker.send(b"x" * 60_000)

            tasks = [
                asyncio.create_task(listen(talker, None)),
                asyncio.create_task(listen(other, heard)),
                asyncio.create_task(flood()),
            ]
            try:
                await asyncio.sleep(0.5)
                started = time.monotonic()
                await other.send("one")
                async with asyncio.timeout(BOUND_S):
                    message, at = await heard.get()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        silent.close()
    assert message == "one"
    assert at - started < 1.0  # not the send timeout (30 s) of the silent member
    closes = {"role": "server", "code": "1008", "closed_by": "server"}
    assert sample(observed.metrics.registry, "handshake_lab_ws_closes_total", **closes) >= 1


async def test_our_client_closes_although_nobody_read_its_messages(
    loopback_server: RunningServer,
) -> None:
    client = await connect(ws_url(loopback_server, "/ws/ticker?interval_ms=10"))
    full = MAX_QUEUED_MESSAGES + 1  # the queue, and one more waiting for room
    await wait_until(lambda: client.core.messages_received >= full, "the queue filled up")
    await asyncio.sleep(0.1)  # the pump is now stuck waiting for a reader
    async with asyncio.timeout(BOUND_S):
        await client.close()
    assert (client.core.close_code, client.core.closed_by) == (1000, "local")


@contextlib.asynccontextmanager
async def silent_websocket_server() -> AsyncIterator[int]:
    """Answers the upgrade with a valid 101, then reads and ignores everything."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept_token(key)
        )
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        await listener.wait_closed()


async def test_our_clients_close_is_bounded_by_the_close_timeout() -> None:
    limits = WSLimits(idle_timeout_s=0, close_timeout_s=0.3)  # keepalive ping due in 20 s
    async with silent_websocket_server() as port:
        client = await connect(f"ws://127.0.0.1:{port}/", limits=limits)
        started = time.monotonic()
        async with asyncio.timeout(BOUND_S):
            await client.close()
    assert time.monotonic() - started < 0.3 + 2.5  # the close timeout, then the FIN linger
    assert client.core.close_code == 1000


async def test_sent_frames_are_counted_in_bytes(observed: Observed) -> None:
    client_bus = Bus()
    client_timeline = Timeline()
    client_bus.subscribe(client_timeline)
    async with (
        server_with(observed, WSLimits()) as server,
        await connect(ws_url(server, "/ws/echo"), bus=client_bus, offer_deflate=False) as ws,
    ):
        await ws.send("é" * 10, fragment_bytes=5)  # 20 UTF-8 bytes: 4 frames
        assert await ws.receive() is not None
    sent = [e.attrs["frames"] for e in client_timeline.events if e.name is Name.WS_MESSAGE_SENT]
    received = [e.attrs["frames"] for e in ws_events(observed, Name.WS_MESSAGE_RECEIVED)]
    assert sent == received == [4]
