"""The client's connections: one TCP connection each, and the pool that reuses them.

A connection goes NEW (just connected) → ACTIVE (carrying a request) → IDLE (kept for
the next request, HTTP/1.1 keep-alive) → ... → CLOSED. The asyncio edge is here; what the
bytes mean is `ClientHTTPConnection`'s business.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from client.http_conn import ClientHTTPConnection, ResponseCompleted, ResponseReceived
from handshake_lab.closing import Closing
from handshake_lab.http_events import BodyReceived, NeedData, PeerClosed
from handshake_lab.transport import TransportError
from telemetry.events import Name

if TYPE_CHECKING:
    from client.http_conn import Headers
    from handshake_lab.transport import ConnectTimings, Stream
    from telemetry.bus import Tracer


class ConnState(enum.Enum):
    NEW = "new"
    ACTIVE = "active"
    IDLE = "idle"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Timings:
    """Where the time of one request went, as `curl -w` reports it (seconds).

    `lookup_s` and `connect_s` are 0 on a reused connection: that is the point of
    keep-alive. `first_byte_s` counts from the start, like curl's time_starttransfer.
    """

    lookup_s: float
    connect_s: float
    first_byte_s: float
    transfer_s: float
    total_s: float


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    http_version: str
    headers: Headers
    body: bytes
    timings: Timings
    reused: bool  # sent on a connection that had carried a request before
    retried: bool  # the first try failed on a stale connection
    conn_id: int
    index: int  # this request's number on its connection, from 1
    local: str | None
    remote: str | None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None


class ClientConnection:
    def __init__(
        self,
        stream: Stream,
        timings: ConnectTimings,
        conn_id: int,
        tracer: Tracer,
        http_version: str,
        linger_timeout_s: float,
    ) -> None:
        self.stream = stream
        self.connect_timings = timings
        self.conn_id = conn_id
        self.tracer = tracer
        self.core = ClientHTTPConnection(http_version)
        self.state = ConnState.NEW
        self.closing = Closing(stream, tracer, linger_timeout_s, flush_timeout_s=linger_timeout_s)
        self.protocol = "none"

    async def exchange(
        self, method: str, target: str, headers: Headers, body: bytes, started: float
    ) -> Response:
        """Send one request and read its whole response.

        Raises:
            TransportError: the connection failed; kind "closed_by_server" if the server
                closed it before answering (the stale keep-alive case).
            RemoteProtocolError: the response is not valid HTTP.
        """
        new = self.state is ConnState.NEW
        self.state = ConnState.ACTIVE
        data = self.core.send_request(method, target, headers, body)
        index = self.core.requests
        self.protocol = f"http/{self.core.http_version}"
        await self.stream.send_all(data)
        self.tracer.emit(
            Name.REQUEST_SENT,
            method=method,
            target=target,
            http_version=self.core.http_version,
            index=index,
            reused=not new,
            bytes=len(data),
        )
        first_byte = 0.0
        head: ResponseReceived | None = None
        chunks: list[bytes] = []
        while True:
            event = self.core.next_event()
            if type(event) is NeedData:
                received = await self.stream.receive_some()
                if not received:
                    self.closing.eof_received("response")
                elif not first_byte:
                    first_byte = time.perf_counter()
                self.core.receive_data(received)
            elif type(event) is ResponseReceived:
                head = event
            elif type(event) is BodyReceived:
                chunks.append(event.data)
            elif type(event) is ResponseCompleted:
                break
            else:
                assert type(event) is PeerClosed
                raise TransportError(
                    "closed_by_server", "the server closed the connection before answering"
                )
        assert head is not None
        done = time.perf_counter()
        lookup_s = self.connect_timings.lookup_s if new else 0.0
        connect_s = self.connect_timings.connect_s if new else 0.0
        timings = Timings(
            lookup_s, connect_s, first_byte - started, done - first_byte, done - started
        )
        response = Response(
            head.status,
            head.reason,
            head.http_version,
            head.headers,
            b"".join(chunks),
            timings,
            reused=not new,
            retried=False,
            conn_id=self.conn_id,
            index=index,
            local=self.stream.local_address,
            remote=self.stream.remote_address,
        )
        self.tracer.emit(
            Name.RESPONSE_RECEIVED,
            method=method,
            status=head.status,
            http_version=self.core.http_version,
            index=index,
            bytes=len(response.body),
            reused=not new,
            duration_s=timings.total_s,
            first_byte_s=timings.first_byte_s,
        )
        if self.core.reusable:
            self.core.start_next_cycle()
            self.state = ConnState.IDLE
        return response

    async def close(self, reason: str) -> None:
        """Close in TCP's order. When the server said it will close (HTTP/1.0,
        `Connection: close`), wait for its FIN first: the server is then the active
        closer, as the protocol intends, and holds TIME_WAIT."""
        if self.state is ConnState.CLOSED:
            return
        self.state = ConnState.CLOSED
        closing = self.closing
        if not closing.aborted and self.core.server_will_close and not closing.peer_eof:
            await closing.wait_for_peer_fin()
        await closing.finish(reason, protocol=self.protocol, requests=self.core.requests)

    async def fail(self, kind: str) -> None:
        """The connection is broken: drop it (RST) and record the close with the reason.

        The error itself is reported once, by the request that met it.
        """
        self.closing.fail(kind)
        await self.close(kind)
