"""The asyncio edge of one open WebSocket, the same on server and client.

The core (`WebSocketConnection`) decides; this class moves bytes and emits events. One
task, the pump, reads: it feeds the core, answers pings and Close frames, runs the timers
(keepalive pings, idle close, drain) and hands each whole message on: on the server to the
route's `on_message`, awaited in the pump itself (no hand-over to another task, and a slow
route pushes back on its peer through TCP); on the client to a bounded queue that
`receive()` reads. Any task may send; writes go through one lock, because a frame must
leave whole and in the order the core produced it (permessage-deflate's window depends
on that order).

The pump returns when the WebSocket is closed (both Close frames seen, a failure, a
timeout, or TCP gone); closing TCP afterwards is the caller's part (`Closing`), because
RFC 6455 §7.1.1 wants the server to close TCP first and the client to wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import TYPE_CHECKING, Final

from handshake_lab.errors import RemoteProtocolError
from handshake_lab.http_events import NeedData, PeerClosed
from handshake_lab.transport import TransportError
from handshake_lab.watchdog import Watchdog
from handshake_lab.ws_conn import (
    PING_TIMEOUT,
    CloseReceived,
    CloseSent,
    CloseTimedOut,
    MessageReceived,
    PingReceived,
    PingSent,
    PongReceived,
    WSState,
)
from telemetry.events import Level, Name

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from handshake_lab.closing import Closing
    from handshake_lab.transport import Stream
    from handshake_lab.ws_conn import WebSocketConnection
    from telemetry.bus import Tracer

MAX_QUEUED_MESSAGES: Final = 64  # then the pump stops reading: TCP pushes back on the peer


class ConnectionClosed(Exception):
    """The WebSocket is closed (or closing): nothing more can be sent."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"WebSocket closed ({code}: {reason})" if code else "WebSocket closed")
        self.code = code
        self.reason = reason


class WebSocketRoute:
    """What a server runs on a WebSocket; override what you need. The pump awaits each
    hook in order, so a route needs no locks of its own."""

    async def on_open(self, session: WebSocketSession) -> None:
        """The upgrade is done (e.g. start pushing)."""

    async def on_message(self, session: WebSocketSession, message: MessageReceived) -> None:
        """A whole message arrived; the next is read once this returns."""

    async def on_close(self, session: WebSocketSession) -> None:
        """The WebSocket is closed (by either side, or failed); stop what on_open started."""


class WebSocketSession:
    """One open WebSocket: `send()`, `receive()` (or `async for`), `close()`, `ping()`."""

    def __init__(
        self,
        stream: Stream,
        core: WebSocketConnection,
        tracer: Tracer,
        closing: Closing,
        *,
        send_timeout_s: float,
        path: str = "",
    ) -> None:
        self.stream = stream
        self.core = core
        self.tracer = tracer
        self.closing = closing
        self.send_timeout_s = send_timeout_s
        self.path = path
        self.loop = asyncio.get_running_loop()
        self.opened = time.perf_counter()
        self._messages: asyncio.Queue[MessageReceived | None] = asyncio.Queue(MAX_QUEUED_MESSAGES)
        self._write_lock = asyncio.Lock()
        self._watchdog: Watchdog | None = None
        self._send_failure: TransportError | None = None
        self._pong_waiters: dict[bytes, asyncio.Future[float]] = {}
        self._route: WebSocketRoute | None = None
        self._reader_gone = False
        self.closed = asyncio.Event()

    # --- for the application -------------------------------------------------------------

    async def send(self, data: str | bytes, *, fragment_bytes: int = 0) -> None:
        """Send one message (text for str, binary for bytes).

        Raises:
            ConnectionClosed: the WebSocket is closing or closed.
            TransportError: the connection failed while writing.
        """
        core = self.core
        if core.state is not WSState.OPEN:
            raise ConnectionClosed(core.close_code, core.close_reason)
        out = core.send_message(data, self.loop.time(), fragment_bytes=fragment_bytes)
        await self._write(out)
        if self.tracer.bus.active:
            self.tracer.emit(
                Name.WS_MESSAGE_SENT,
                Level.DEBUG,
                type="text" if isinstance(data, str) else "binary",
                bytes=core.last_message_bytes,
                frames=core.last_message_frames,
            )

    async def receive(self) -> MessageReceived | None:
        """The next whole message, or None once the WebSocket is closed."""
        if self._messages.empty() and self.closed.is_set():
            return None
        message = await self._messages.get()
        if message is None:
            self._messages.put_nowait(None)  # every later receive() sees the end too
        return message

    def __aiter__(self) -> WebSocketSession:
        return self

    async def __anext__(self) -> MessageReceived:
        message = await self.receive()
        if message is None:
            raise StopAsyncIteration
        return message

    async def ping(self, payload: bytes | None = None) -> asyncio.Future[float]:
        """Send a Ping. Returns a future of the round trip, set when the pong arrives
        (cancelled if the WebSocket closes first)."""
        core = self.core
        if core.state is not WSState.OPEN:
            raise ConnectionClosed(core.close_code, core.close_reason)
        payload = core.new_ping_payload() if payload is None else payload
        pong: asyncio.Future[float] = self.loop.create_future()
        self._pong_waiters[payload] = pong
        await self._write(core.send_ping(self.loop.time(), payload))
        self.tracer.emit(Name.WS_PING_SENT, Level.DEBUG, keepalive=False)
        return pong

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; the pump finishes it (or times it out)."""
        out = self.core.close(self.loop.time(), code, reason)
        if out:
            self.tracer.emit(Name.WS_CLOSE_SENT, code=code, reason=reason, initiated=True)
            await self._write(out)
            self._wake_reader()

    def stop_waiting_for_reader(self) -> None:
        """From now on the pump never waits for room in the queue: it keeps what fits and
        drops the rest (a full queue is emptied). For a client closing while nobody reads,
        whose pump must go on to read the server's Close and FIN."""
        self._reader_gone = True
        if self._messages.full():
            while not self._messages.empty():
                self._messages.get_nowait()

    def _wake_reader(self) -> None:
        """The core's next deadline may be earlier now: move the pending read's."""
        deadline = self.core.get_timer()
        # (move() does nothing unless a read is waiting: writes do not use the watchdog)
        if self._watchdog is not None and deadline is not None:
            self._watchdog.move(deadline)

    def begin_drain(self) -> None:
        """Shutdown: the pump sends Close 1001 now and waits for the peer's, bounded."""
        self.core.begin_drain(self.loop.time())
        self._wake_reader()

    async def serve(self, route: WebSocketRoute) -> None:
        """Run `route` on this WebSocket until it is closed: `on_open`, then `on_message`
        for every message, in order, from the pump; `on_close` at the end, whatever ended it.
        A route that raises is reported and the WebSocket closed with 1011."""
        self._route = route
        try:
            await self._call(route.on_open(self))
            await self.pump()
        finally:
            await self._call(route.on_close(self))

    async def _call(self, step: Awaitable[None]) -> None:
        try:
            await step
        except (ConnectionClosed, TransportError):
            pass  # the connection is closing or gone: the pump sees and reports it
        except Exception as exc:  # a bug in a route: report it, close with 1011, serve on
            self.tracer.emit(
                Name.WS_CONNECTION_FAILED,
                Level.ERROR,
                kind="internal_error",
                code=1011,
                reason=f"{exc!r}",
            )
            with contextlib.suppress(TransportError):
                await self.close(1011, "internal error")

    # --- the pump --------------------------------------------------------------------------

    async def pump(self) -> None:
        """Read and dispatch until the WebSocket is closed; then report how it ended.

        Raises:
            TransportError: the connection failed below WebSocket.
        """
        self._watchdog = Watchdog()
        try:
            await self._pump()
        except RemoteProtocolError as error:
            await self._fail(error)
        finally:
            self._watchdog.close()
            for waiter in self._pong_waiters.values():
                waiter.cancel()
            if not self._messages.full():  # (when full, nobody waits: see receive())
                self._messages.put_nowait(None)
            self._report_closed()
            self.closed.set()

    async def _pump(self) -> None:
        core = self.core
        loop = self.loop
        emit = self.tracer.emit
        while True:
            event = core.next_event(loop.time())
            kind = type(event)
            if kind is NeedData:
                if core.state is WSState.CLOSED:
                    return
                data = await self._receive()
                if data is None:  # a timer of the core is due
                    self._on_timer(core.handle_timeout(loop.time()))
                    await self._flush()
                    continue
                if not data:
                    if self._send_failure is not None:
                        raise self._send_failure  # we dropped it ourselves after a failed write
                    self.closing.eof_received("websocket")
                core.receive_data(data, loop.time())
            elif kind is MessageReceived:
                assert isinstance(event, MessageReceived)
                if self.tracer.bus.active:
                    emit(
                        Name.WS_MESSAGE_RECEIVED,
                        Level.DEBUG,
                        type="text" if isinstance(event.data, str) else "binary",
                        bytes=event.size,
                        frames=event.frames,
                        compressed=event.compressed,
                    )
                if self._route is not None:
                    await self._call(self._route.on_message(self, event))
                elif not self._reader_gone:
                    await self._messages.put(event)
                elif not self._messages.full():
                    self._messages.put_nowait(event)
            elif kind is PingReceived:
                emit(Name.WS_PING_RECEIVED, Level.DEBUG)
                await self._flush()  # the pong
            elif kind is PongReceived:
                assert isinstance(event, PongReceived)
                emit(
                    Name.WS_PONG_RECEIVED,
                    Level.DEBUG,
                    rtt_s=event.rtt_s,
                    answered=event.rtt_s is not None,
                )
                waiter = self._pong_waiters.pop(event.payload, None)
                if waiter is not None and event.rtt_s is not None and not waiter.done():
                    waiter.set_result(event.rtt_s)
            elif kind is CloseReceived:
                assert isinstance(event, CloseReceived)
                initiated = event.initiated_by_peer
                emit(
                    Name.WS_CLOSE_RECEIVED,
                    code=event.code,
                    reason=event.reason,
                    initiated=initiated,
                )
                if initiated:
                    await self._flush()  # our answering Close
                    emit(Name.WS_CLOSE_SENT, code=event.code, reason=event.reason, initiated=False)
            else:
                assert kind is PeerClosed
                return

    def _on_timer(self, fired: PingSent | CloseSent | CloseTimedOut | None) -> None:
        if type(fired) is PingSent:
            self.tracer.emit(Name.WS_PING_SENT, Level.DEBUG, keepalive=True)
        elif type(fired) is CloseSent:
            assert isinstance(fired, CloseSent)
            if fired.code == PING_TIMEOUT:
                self._warn("ws_ping_timeout", fired.code, fired.reason)
            self.tracer.emit(
                Name.WS_CLOSE_SENT, code=fired.code, reason=fired.reason, initiated=True
            )
        elif type(fired) is CloseTimedOut:
            code = self.core.close_code or 1000
            self._warn("ws_close_timeout", code, "no Close frame from the peer in time")

    def _warn(self, kind: str, code: int, reason: str) -> None:
        self.tracer.emit(
            Name.WS_CONNECTION_FAILED, Level.WARNING, kind=kind, code=code, reason=reason
        )

    async def _fail(self, error: RemoteProtocolError) -> None:
        """The peer broke the protocol: tell it with a Close frame, then stop reading."""
        self._warn(error.kind, error.close_code, str(error))
        out = self.core.fail(error)
        if out:
            self.tracer.emit(
                Name.WS_CLOSE_SENT, code=error.close_code, reason=str(error), initiated=True
            )
            await self._write(out)

    def _report_closed(self) -> None:
        core = self.core
        role = self.tracer.role
        closed_by = role if core.closed_by == "local" else role.peer
        self.tracer.emit(
            Name.WS_CONNECTION_CLOSED,
            path=self.path,
            code=core.close_code if core.close_code is not None else 1006,
            reason=core.close_reason,
            closed_by=closed_by.value,
            lifetime_s=time.perf_counter() - self.opened,
            messages_received=core.messages_received,
            messages_sent=core.messages_sent,
        )

    # --- bytes in and out ------------------------------------------------------------------

    async def _receive(self) -> bytes | None:
        """Read, or None when the core's timer fires first."""
        # Always through the watchdog (with no deadline: never), so that `begin_drain()`
        # and `close()` can wake a read whatever the core's timers were.
        deadline = self.core.get_timer()
        if deadline is None:
            deadline = math.inf
        elif deadline <= self.loop.time():
            # Due already: a read that finds data buffered returns without waiting, and a
            # peer that keeps the buffer full would otherwise hold the timers off for ever.
            return None
        assert self._watchdog is not None
        try:
            return await self._watchdog.wait(self.stream.receive_some(), deadline)
        except TimeoutError:
            return None

    async def _flush(self) -> None:
        out = self.core.data_to_send()
        if out:
            await self._write(out)

    async def _write(self, data: bytes) -> None:
        try:
            async with self._write_lock:
                await self.stream.send_all(data, self.send_timeout_s)
        except TransportError as error:
            self._drop(error)

    def _drop(self, error: TransportError) -> None:
        """A write failed: drop the connection; the pump sees it end and raises `error`."""
        if self._send_failure is None:
            self._send_failure = error
            self.closing.fail(error.kind)
        raise error
