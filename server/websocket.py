"""The WebSocket routes: which paths upgrade, and what each does once it has.

`upgrade()` is pure: it checks the handshake (`ws_handshake`), negotiates
permessage-deflate and returns an `Upgrade` (what to run, the 101's fields) or an
`UpgradeRefused` (the 400/426 to send). The handlers are the application, written
against `WebSocketSession` (`WebSocketRoute` hooks): they see whole messages, never a frame.

- /ws/echo    every message comes back, same type, same bytes
- /ws/ticker  the server pushes a message every `interval_ms`, unasked: what HTTP cannot
- /ws/chat    every message goes to every client connected to /ws/chat
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from handshake_lab.errors import RemoteProtocolError
from handshake_lab.transport import TransportError
from handshake_lab.ws_conn import BoundedDeflate
from handshake_lab.ws_handshake import (
    VERSION,
    accept_headers,
    check_upgrade_request,
    is_upgrade_request,
    negotiate_deflate,
)
from handshake_lab.ws_session import ConnectionClosed, WebSocketRoute

if TYPE_CHECKING:
    from collections.abc import Callable

    from handshake_lab.ws_conn import MessageReceived
    from handshake_lab.ws_session import WebSocketSession
    from server.app import Request
    from server.config import ServerConfig

Headers = list[tuple[bytes, bytes]]
TICKER_INTERVAL_MS: Final = (10, 60_000, 1000)  # minimum, maximum, default


@dataclass(frozen=True, slots=True)
class Upgrade:
    """Switch the connection to WebSocket (101) and run `route` on it."""

    path: str
    route: WebSocketRoute
    headers: Headers  # of the 101 response
    deflate: BoundedDeflate | None
    origin: str | None


@dataclass(frozen=True, slots=True)
class UpgradeRefused:
    """Answer with `status` (400 or 426) and close; `kind` says why, for metrics."""

    path: str
    status: int
    headers: Headers
    kind: str
    reason: str

    @property
    def body(self) -> bytes:
        return f"{self.status} {self.reason}\n".encode()


class WebSocketRoutes:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.chat = ChatRoom()
        echo = Echo()
        # Each path makes the route for one upgrade from its query, or says what is wrong.
        self._routes: dict[str, Callable[[dict[str, list[str]]], WebSocketRoute | str]] = {
            "/ws/echo": lambda _query: echo,
            "/ws/ticker": self._ticker,
            "/ws/chat": lambda _query: self.chat,
        }

    def handles(self, path: str) -> bool:
        return path in self._routes

    def upgrade(
        self, request: Request, path: str, query: dict[str, list[str]]
    ) -> Upgrade | UpgradeRefused:
        def refuse(
            status: int, kind: str, reason: str, extra: Headers | None = None
        ) -> UpgradeRefused:
            headers = [(b"content-type", b"text/plain; charset=utf-8"), *(extra or [])]
            return UpgradeRefused(path, status, headers, kind, reason)

        if not is_upgrade_request(request.headers):
            # RFC 9110 §15.5.22: a 426 says which protocol to upgrade to.
            return refuse(
                426,
                "ws_not_upgrade",
                f"{path} is a WebSocket endpoint: send Upgrade: websocket",
                [(b"upgrade", b"websocket"), (b"sec-websocket-version", VERSION)],
            )
        try:
            offer = check_upgrade_request(request.method, request.http_version, request.headers)
        except RemoteProtocolError as error:
            # RFC 6455 §4.4: with 426, say which version we speak.
            # (and, RFC 9110 §15.5.22, the protocol to upgrade to)
            extra = (
                [(b"upgrade", b"websocket"), (b"sec-websocket-version", VERSION)]
                if error.status_hint == 426
                else []
            )
            return refuse(error.status_hint, error.kind, str(error), extra)
        if request.body:
            return refuse(400, "ws_bad_request", "a WebSocket upgrade request has no body")
        route = self._routes[path](query)
        if isinstance(route, str):
            return refuse(400, "ws_bad_request", route)
        limit = self.config.ws.max_message_bytes
        negotiated = negotiate_deflate(offer.extension_offers, lambda: BoundedDeflate(limit))
        deflate, answer = negotiated if negotiated else (None, None)
        return Upgrade(path, route, accept_headers(offer, answer), deflate, offer.origin)

    def _ticker(self, query: dict[str, list[str]]) -> WebSocketRoute | str:
        low, high, default = TICKER_INTERVAL_MS
        values = query.get("interval_ms")
        try:
            interval_ms = int(values[0]) if values else default
        except ValueError:
            return "?interval_ms must be a whole number"
        if not low <= interval_ms <= high:
            return f"?interval_ms must be between {low} and {high}"
        return Ticker(interval_ms / 1000)


class Echo(WebSocketRoute):
    async def on_message(self, session: WebSocketSession, message: MessageReceived) -> None:
        await session.send(message.data)


class Ticker(WebSocketRoute):
    """Pushes a message every interval, on a schedule (no drift), whatever the client does."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def on_open(self, session: WebSocketSession) -> None:
        self._task = asyncio.create_task(self._push(session))

    async def on_close(self, session: WebSocketSession) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _push(self, session: WebSocketSession) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        interval_ms = round(self.interval_s * 1000)
        with contextlib.suppress(ConnectionClosed, TransportError):  # the pump reports it
            for n in itertools.count(1):
                await asyncio.sleep(max(0.0, started + n * self.interval_s - loop.time()))
                tick = {"tick": n, "server_time": time.time(), "interval_ms": interval_ms}
                await session.send(json.dumps(tick))


class ChatRoom(WebSocketRoute):
    """Everyone connected to /ws/chat; a message from one goes to all, sender included.

    Each member has its own outbox and writer task, so the sender's pump only queues: a
    member too slow to read delays nobody else, and when its outbox is full it is closed
    with 1008 rather than left to fall ever further behind.
    """

    OUTBOX_MESSAGES = 64

    def __init__(self) -> None:
        self.members: dict[WebSocketSession, asyncio.Queue[str | bytes]] = {}
        self._writers: dict[WebSocketSession, asyncio.Task[None]] = {}
        self._evictions: set[asyncio.Task[None]] = set()

    async def on_open(self, session: WebSocketSession) -> None:
        outbox: asyncio.Queue[str | bytes] = asyncio.Queue(self.OUTBOX_MESSAGES)
        self.members[session] = outbox
        self._writers[session] = asyncio.create_task(self._write(session, outbox))

    async def on_close(self, session: WebSocketSession) -> None:
        self.members.pop(session, None)
        writer = self._writers.pop(session, None)
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def on_message(self, session: WebSocketSession, message: MessageReceived) -> None:
        for member, outbox in list(self.members.items()):
            try:
                outbox.put_nowait(message.data)
            except asyncio.QueueFull:
                self._evict(member)

    def _evict(self, member: WebSocketSession) -> None:
        self.members.pop(member, None)
        task = asyncio.create_task(self._close(member))
        self._evictions.add(task)
        task.add_done_callback(self._evictions.discard)

    @staticmethod
    async def _close(member: WebSocketSession) -> None:
        with contextlib.suppress(TransportError):  # (its pump reports a broken connection)
            await member.close(1008, "too slow to read the chat")

    async def _write(self, session: WebSocketSession, outbox: asyncio.Queue[str | bytes]) -> None:
        with contextlib.suppress(ConnectionClosed, TransportError):  # the pump reports it
            while True:
                await session.send(await outbox.get())
