"""The asyncio edge of one server connection: move bytes, arm timers, emit events.

Every decision is the core's (`ServerHTTPConnection`); this loop reads, feeds, drains
events, answers through the `App`, writes, and closes in the order TCP teaches: the side
that closes first sends FIN, keeps reading until the peer's FIN (so unread data never
turns our close into a RST), and ends in TIME_WAIT.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Literal

from handshake_lab.closing import Closing
from handshake_lab.errors import RemoteProtocolError
from handshake_lab.http_events import BodyReceived, NeedData, PeerClosed
from handshake_lab.transport import TransportError
from handshake_lab.watchdog import Watchdog
from handshake_lab.ws_conn import WebSocketConnection
from handshake_lab.ws_session import WebSocketSession
from server.app import Request, Response
from server.http_conn import Phase, RequestCompleted, RequestReceived, ServerHTTPConnection
from server.websocket import UpgradeRefused
from telemetry.events import Level, Name, Role

if TYPE_CHECKING:
    from handshake_lab.transport import Stream
    from server.app import App
    from server.config import ServerConfig
    from server.websocket import Upgrade
    from telemetry.bus import Tracer


Admission = Literal["serve", "refuse", "drop"]


def overflow(limit: int) -> int:
    """How many connections beyond `limit` are answered 503 before the rest are closed at
    once: enough to tell clients why, few enough to bound the file descriptors."""
    return max(16, limit // 10)


class ConnectionHandler:
    def __init__(
        self,
        stream: Stream,
        app: App,
        config: ServerConfig,
        tracer: Tracer,
        *,
        admission: Admission = "serve",
    ) -> None:
        self.stream = stream
        # Beyond --max-connections: "refuse" answers the first request's head with 503,
        # "drop" closes at once (Server.admission decides).
        self.admission = admission
        self.app = app
        self.config = config
        self.tracer = tracer
        self.loop = asyncio.get_running_loop()
        self.core = ServerHTTPConnection(config.limits, self.loop.time())
        self.watchdog = Watchdog()
        self._reading = False  # waiting for the peer's bytes (not writing ours)
        self.closing = Closing(stream, tracer, config.linger_timeout_s, config.send_timeout_s)
        self.protocol = "none"
        self.websocket: WebSocketSession | None = None  # once the connection has upgraded

    def begin_drain(self) -> None:
        """Shutdown asks us to finish: idle connections close now, busy ones after answering,
        WebSockets with Close 1001."""
        if self.websocket is not None:
            self.websocket.begin_drain()
            return
        self.core.begin_drain(self.loop.time())
        deadline = self.core.get_timer()
        # Only a read waits on the core's deadline; a response still being written keeps
        # its own (send) deadline and is finished first.
        if deadline is not None and self._reading:
            self.watchdog.move(deadline)

    async def run(self) -> None:
        self.tracer.emit(Name.CONNECTION_ACCEPTED, transport=self.stream.transport_name)
        failure: str | None = None
        try:
            try:
                if self.admission == "drop":
                    raise TransportError(
                        "over_capacity",
                        f"closed at accept: {self.config.max_connections} connections served "
                        "and as many refusals under way as allowed (--max-connections)",
                    )
                # The transport's own handshake first (toy TLS); TCP has nothing to do.
                await self.stream.open(self.tracer, self.config.limits.header_timeout_s)
                await self._serve()
            except RemoteProtocolError as error:
                # (nested, so that a cancellation while answering is handled below)
                await self._reject(error)
        except TransportError as error:
            self.tracer.emit(
                Name.CONNECTION_FAILED, Level.WARNING, kind=error.kind, reason=str(error)
            )
            failure = error.kind
            try:
                if error.fin_sent:
                    await self.closing.after_transport_fin(error.kind)
            except asyncio.CancelledError:
                failure = "shutdown_timeout"  # shutdown ran out of time while we lingered
                self.closing.abort(Role.SERVER)
                raise
            finally:
                self.closing.fail(error.kind)
        except asyncio.CancelledError:
            failure = "shutdown_timeout"  # shutdown ran out of time for this connection
            self.closing.abort(Role.SERVER)
            raise
        except Exception as exc:  # a bug of ours: report it, drop this connection, serve on
            failure = "internal_error"
            self.tracer.emit(Name.CONNECTION_FAILED, Level.ERROR, kind=failure, reason=f"{exc!r}")
            self.closing.abort(Role.SERVER)
        finally:
            self.watchdog.close()
            if self.websocket is not None and failure is None:
                failure = f"websocket_closed_{self.websocket.core.close_code or 1006}"
            await self.closing.finish(
                failure or self.core.close_reason or "closed",
                protocol=self.protocol,
                requests=self.core.requests,
            )

    async def _serve(self) -> None:
        core = self.core
        request: RequestReceived | None = None
        body: list[bytes] = []
        started = 0.0
        while True:
            event = core.next_event(self.loop.time())
            if type(event) is NeedData:
                if continue_bytes := core.data_to_send():
                    await self._send(continue_bytes)
                    self.tracer.emit(Name.CONTINUE_SENT)
                data = await self._receive()
                if data is None:  # the core's deadline passed
                    core.handle_timeout(self.loop.time())  # raises 408 if a request was cut short
                    return
                if not data:
                    self.closing.eof_received(core.phase.value)
                core.receive_data(data, self.loop.time())
            elif type(event) is RequestReceived:
                if self.admission == "refuse":  # at its head: no 100 Continue, no body read
                    raise RemoteProtocolError(
                        f"the server is at its limit of {self.config.max_connections} open "
                        "connections (--max-connections); retry",
                        status_hint=503,
                        kind="over_capacity",
                    )
                started = time.perf_counter()
                request = event
                body = []
                self.protocol = f"http/{event.http_version}"
                self.tracer.emit(
                    Name.REQUEST_RECEIVED,
                    method=event.method,
                    target=event.target,
                    http_version=event.http_version,
                    index=event.index,
                    head_bytes=event.head_bytes,
                )
            elif type(event) is BodyReceived:
                body.append(event.data)
            elif type(event) is RequestCompleted:
                assert request is not None
                await self._respond(request, b"".join(body), started)
                if core.phase is Phase.CLOSED or core.phase is Phase.SWITCHED:
                    return
            else:
                assert type(event) is PeerClosed
                return

    async def _receive(self) -> bytes | None:
        """Read, or None when the core's timer fires first."""
        deadline = self.core.get_timer()
        if deadline is None:
            return await self.stream.receive_some()
        self._reading = True
        try:
            return await self.watchdog.wait(self.stream.receive_some(), deadline)
        except TimeoutError:
            return None
        finally:
            self._reading = False

    async def _send(self, data: bytes) -> None:
        deadline = self.loop.time() + self.config.send_timeout_s
        try:
            await self.watchdog.wait(self.stream.send_all(data), deadline)
        except TimeoutError:
            raise TransportError("send_timeout", "peer stopped reading our response") from None

    async def _respond(self, event: RequestReceived, body: bytes, started: float) -> None:
        request = Request(event.method, event.target, event.http_version, event.headers, body)
        response = self.app.handle(request)
        if not isinstance(response, Response):
            await self._websocket(event, response, started)
            return
        if response.delay_s > 0:
            await asyncio.sleep(response.delay_s)
        headers = [(b"date", _http_date()), *(response.headers or [])]
        out = self.core.send_response(self.loop.time(), response.status, headers, response.body)
        await self._send(out)
        self._response_sent(event, response.status, len(response.body), started)

    def _response_sent(
        self, event: RequestReceived, status: int, size: int, started: float
    ) -> None:
        self.tracer.emit(
            Name.RESPONSE_SENT,
            method=event.method,
            status=status,
            http_version=event.http_version,
            index=event.index,
            bytes=size,
            duration_s=time.perf_counter() - started,
            keep_alive=self.core.phase is Phase.EXPECT_REQUEST
            or self.core.phase is Phase.EXPECT_HEAD,
        )

    async def _websocket(
        self, event: RequestReceived, answer: Upgrade | UpgradeRefused, started: float
    ) -> None:
        """A WebSocket path: refuse the upgrade (and close), or switch and serve it."""
        emit = self.tracer.emit
        emit(Name.WS_UPGRADE_REQUESTED, path=answer.path, http_version=event.http_version)
        if isinstance(answer, UpgradeRefused):
            emit(
                Name.WS_UPGRADE_REFUSED,
                Level.WARNING,
                path=answer.path,
                status=answer.status,
                kind=answer.kind,
                reason=answer.reason,
            )
            headers = [(b"date", _http_date()), *answer.headers]
            # Closed after: the bytes after a refused upgrade may be WebSocket frames.
            out = self.core.send_response(
                self.loop.time(), answer.status, headers, answer.body, close_reason=answer.kind
            )
            await self._send(out)
            self._response_sent(event, answer.status, len(answer.body), started)
            return
        await self._send(self.core.switch_protocols([(b"date", _http_date()), *answer.headers]))
        self._response_sent(event, 101, 0, started)
        self.protocol = "websocket"
        emit(
            Name.WS_UPGRADE_ACCEPTED,
            path=answer.path,
            extensions=answer.deflate.name if answer.deflate else "",
            origin=answer.origin,
        )
        core = WebSocketConnection(
            client=False,
            limits=self.config.ws,
            now=self.loop.time(),
            deflate=answer.deflate,
            trailing_data=self.core.trailing_data,
        )
        self.websocket = WebSocketSession(
            self.stream,
            core,
            self.tracer,
            self.closing,
            send_timeout_s=self.config.send_timeout_s,
            path=answer.path,
        )
        await self.websocket.serve(answer.route)

    async def _reject(self, error: RemoteProtocolError) -> None:
        request = self.core.current_request
        self.tracer.emit(
            Name.REQUEST_REJECTED,
            Level.WARNING,
            status=error.status_hint,
            kind=error.kind,
            reason=str(error),
        )
        out = self.core.error_response(error)
        started = time.perf_counter()
        try:
            await self._send(out)
        except TransportError as exc:
            self.tracer.emit(Name.CONNECTION_FAILED, Level.WARNING, kind=exc.kind, reason=str(exc))
            self.closing.fail(exc.kind)
            return
        self.tracer.emit(
            Name.RESPONSE_SENT,
            method=request.method if request else "",
            status=error.status_hint,
            http_version=request.http_version if request else "unknown",
            index=request.index if request else 0,
            bytes=len(out),
            duration_s=time.perf_counter() - started,
            keep_alive=False,
        )


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    """RFC 9110 §6.6.1 Date, formatted once a second: it is costly on the hot path."""
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, formatdate(second, usegmt=True).encode())
    return _date_cache[1]
