"""The WebSocket client: connect, upgrade, then talk over a `WebSocketSession`.

`connect()` opens TCP, sends the upgrade GET (through `ClientHTTPConnection`, h11
underneath), checks the 101 with `ws_handshake`, and starts the session's pump in a
task. The `Handshake` it records is the lesson the CLI prints: the key we sent, the
accept value we expected and what the server answered.

Closing follows RFC 6455 §7.1.1: Close frames both ways, then the client waits for the
server to close TCP first (the server holds TIME_WAIT), and closes after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import quote, urlsplit

from client.http_conn import ClientHTTPConnection, ResponseReceived
from handshake_lab.closing import Closing
from handshake_lab.errors import RemoteProtocolError
from handshake_lab.http_events import BodyReceived, NeedData, PeerClosed
from handshake_lab.transport import SocketFactory, TransportError, open_tcp_stream
from handshake_lab.ws_conn import BoundedDeflate, WebSocketConnection, WSLimits, WSState
from handshake_lab.ws_handshake import (
    DEFLATE,
    accept_token,
    check_upgrade_response,
    client_request_headers,
    encode_key,
)
from handshake_lab.ws_session import WebSocketSession
from handshake_tls.certs import real_tls_client_context, trusted_ca
from handshake_tls.connection import ClientConnection as TLSClient
from handshake_tls.stream import ToyTLSStream
from handshake_tls.wire import KeyExchange
from telemetry.bus import Bus, Tracer
from telemetry.events import Level, Name, Role

if TYPE_CHECKING:
    import ssl
    from pathlib import Path
    from types import TracebackType

    from wsproto.extensions import Extension

    from handshake_lab.transport import Stream
    from handshake_lab.ws_conn import MessageReceived

Headers = list[tuple[bytes, bytes]]
CLIENT_LIMITS = WSLimits(idle_timeout_s=0)  # the server decides when a quiet socket goes
_conn_ids = itertools.count(1)
DEFAULT_PORTS: Final = {
    "ws": 80,
    "http": 80,
    "wss": 443,
    "https": 443,
    "ws+toytls": 8443,
    "toytls": 8443,
}
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"  # RFC 3986 pchar and "/", already encoded octets kept


class URLError(ValueError):
    """The URL is not one this client can open."""


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    path: str  # with the query
    host_header: str
    toy_tls: bool = False
    real_tls: bool = False

    @classmethod
    def parse(cls, url: str) -> Target:
        """`ws://host:port/path?query` (`http://` is taken as `ws://`), or over the toy
        TLS `ws+toytls://` (or `toytls://`; default port 8443).

        Raises:
            URLError: not such a URL (wss://, real TLS, is not there yet).
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise URLError(f"cannot parse {url!r}: {exc}") from None
        if parts.scheme not in DEFAULT_PORTS:
            raise URLError(f"{url!r}: the URL must start with ws://, wss:// or ws+toytls://")
        if not parts.hostname:
            raise URLError(f"{url!r} names no host")
        if port == 0:
            raise URLError(f"{url!r}: port 0 is not a port one can connect to")
        default_port = DEFAULT_PORTS[parts.scheme]
        port = port or default_port
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default_port else f"{shown}:{port}"
        # The request target is ASCII (RFC 9112 §3.2): anything else is percent-encoded.
        path = quote(parts.path or "/", safe=_PATH_SAFE) + (
            f"?{quote(parts.query, safe=_PATH_SAFE + '?')}" if parts.query else ""
        )
        return cls(
            host,
            port,
            path,
            host_header,
            toy_tls=parts.scheme in ("ws+toytls", "toytls"),
            real_tls=parts.scheme in ("wss", "https"),
        )


@dataclass(slots=True)
class Handshake:
    """The opening handshake as it happened, for the lesson (and the log)."""

    url: str
    path: str
    key: str
    expected_accept: str
    request_headers: Headers
    status: int = 0
    reason: str = ""
    response_headers: Headers = field(default_factory=list)
    extensions: str = ""
    connect_s: float = 0.0  # TCP three-way handshake (as connect() saw it)
    upgrade_s: float = 0.0  # from the GET sent to the 101 read: one round trip
    local: str | None = None
    remote: str | None = None

    @property
    def accept(self) -> str | None:
        for name, value in self.response_headers:
            if name.lower() == b"sec-websocket-accept":
                return value.decode("ascii", "replace")
        return None


class UpgradeFailed(RemoteProtocolError):
    """The server did not switch to WebSocket; `handshake` and `body` say what it said."""

    def __init__(self, error: RemoteProtocolError, handshake: Handshake, body: bytes) -> None:
        super().__init__(str(error), kind=error.kind, status_hint=error.status_hint)
        self.handshake = handshake
        self.body = body


class WebSocketClient:
    """An open client WebSocket. Use `async with await connect(url) as ws:`."""

    def __init__(self, session: WebSocketSession, handshake: Handshake) -> None:
        self.session = session
        self.handshake = handshake
        self._pump = asyncio.create_task(self._run_pump())
        self._closed = False

    @property
    def core(self) -> WebSocketConnection:
        return self.session.core

    async def send(self, data: str | bytes, *, fragment_bytes: int = 0) -> None:
        await self.session.send(data, fragment_bytes=fragment_bytes)

    async def receive(self) -> MessageReceived | None:
        return await self.session.receive()

    async def ping(self, payload: bytes | None = None) -> asyncio.Future[float]:
        """Send a Ping; returns the future of its round trip (seconds)."""
        return await self.session.ping(payload)

    async def wait_closed(self) -> None:
        """Until the WebSocket and its TCP connection are closed (by either side)."""
        await asyncio.shield(self._pump)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close: our Close frame, the server's answer, then TCP in the server's order."""
        self.session.stop_waiting_for_reader()
        if not self._closed:
            self._closed = True
            with contextlib.suppress(TransportError):  # the pump reports it
                await self.session.close(code, reason)
        await self.wait_closed()

    async def abort(self) -> None:
        """Drop the connection without a closing handshake."""
        self.session.stop_waiting_for_reader()
        self.session.closing.abort(Role.CLIENT)
        await asyncio.gather(self._pump, return_exceptions=True)

    async def _run_pump(self) -> None:
        session = self.session
        closing = session.closing
        failure: str | None = None
        try:
            await session.pump()
        except TransportError as error:
            session.tracer.emit(
                Name.CONNECTION_FAILED, Level.WARNING, kind=error.kind, reason=str(error)
            )
            closing.fail(error.kind)
            failure = error.kind
        finally:
            if failure is None and not closing.aborted and not closing.peer_eof:
                # RFC 6455 §7.1.1: the server closes TCP first; we wait for its FIN.
                await closing.wait_for_peer_fin("websocket_closed")
            await closing.finish(
                failure or f"websocket_closed_{session.core.close_code or 1006}",
                protocol="websocket",
                requests=1,
            )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None or self.core.state is WSState.OPEN:
            await self.close(1000 if exc_type is None else 1001)
        else:
            await self.abort()


async def connect(
    url: str,
    *,
    bus: Bus | None = None,
    limits: WSLimits = CLIENT_LIMITS,
    offer_deflate: bool = True,
    timeout_s: float = 10.0,
    extra_headers: Headers | None = None,
    send_timeout_s: float = 30.0,
    nonce: bytes | None = None,
    cafile: Path | None = None,
    key_exchange: KeyExchange = KeyExchange.ECDHE,
    tls_context: ssl.SSLContext | None = None,
    make_socket: SocketFactory | None = None,
) -> WebSocketClient:
    """Open a WebSocket to `url`. `tls_context` replaces the default real-TLS one (e.g. to
    cap the version); `make_socket` is as for `open_tcp_stream`.

    Raises:
        URLError: a URL this client cannot open.
        TransportError: TCP failed (refused, timed out, reset).
        UpgradeFailed: the server answered something other than a valid 101.
    """
    target = Target.parse(url)
    tracer = Tracer(bus or Bus(), Role.CLIENT)
    context: ssl.SSLContext | None = None
    if target.real_tls:
        try:
            context = tls_context or real_tls_client_context(cafile)
        except OSError as exc:
            raise TransportError("no_ca", str(exc)) from None
    tcp, timings = await open_tcp_stream(
        target.host, target.port, timeout_s=timeout_s, tls=context, make_socket=make_socket
    )
    tracer = tracer.bind(next(_conn_ids), tcp.local_address, tcp.remote_address)
    tracer.emit(
        Name.CONNECT_COMPLETED,
        transport=tcp.transport_name,
        duration_s=timings.connect_s,
        address=timings.address,
    )
    stream: Stream = tcp
    if target.toy_tls:
        try:
            trusted = trusted_ca(cafile)
        except (OSError, ValueError) as exc:
            tcp.abort()
            raise TransportError("no_ca", str(exc)) from None
        stream = ToyTLSStream(tcp, TLSClient(trusted, target.host, key_exchange))
    closing = Closing(stream, tracer, linger_timeout_s=2.0, flush_timeout_s=send_timeout_s)
    try:
        await stream.open(tracer, timeout_s)
    except TransportError as error:
        closing.fail(error.kind)
        await closing.finish(error.kind, protocol="none", requests=0)
        raise
    key = encode_key(nonce or os.urandom(16))
    headers = client_request_headers(target.host_header, key, offer_deflate=offer_deflate)
    headers += extra_headers or []
    handshake = Handshake(
        url,
        target.path,
        key.decode(),
        accept_token(key).decode(),
        headers,
        connect_s=timings.connect_s,
        local=stream.local_address,
        remote=stream.remote_address,
    )
    offered: list[Extension] = [BoundedDeflate(limits.max_message_bytes)] if offer_deflate else []
    http = ClientHTTPConnection()
    try:
        async with asyncio.timeout(timeout_s):
            started = time.perf_counter()
            await stream.send_all(http.send_request("GET", target.path, headers))
            tracer.emit(Name.WS_UPGRADE_REQUESTED, path=target.path, key=handshake.key)
            try:
                head, body = await _read_answer(stream, http, closing)
            except RemoteProtocolError as error:  # not HTTP at all
                raise UpgradeFailed(error, handshake, b"") from None
        handshake.upgrade_s = time.perf_counter() - started
        handshake.status, handshake.reason = head.status, head.reason
        handshake.response_headers = head.headers
        try:
            extensions = check_upgrade_response(head.status, head.headers, key, offered)
        except RemoteProtocolError as error:
            raise UpgradeFailed(error, handshake, body) from None
    except BaseException as error:
        if isinstance(error, RemoteProtocolError):
            tracer.emit(
                Name.WS_UPGRADE_REFUSED,
                Level.WARNING,
                path=target.path,
                status=error.status_hint if error.kind == "ws_upgrade_refused" else 0,
                kind=error.kind,
                reason=str(error),
            )
        await _give_up(closing, error, server_will_close=http.server_will_close)
        if isinstance(error, TimeoutError):
            raise TransportError("timeout", f"no answer to the upgrade in {timeout_s} s") from None
        raise
    handshake.extensions = ", ".join(ext.name for ext in extensions)
    deflate = next((ext for ext in extensions if ext.name == DEFLATE), None)
    assert deflate is None or isinstance(deflate, BoundedDeflate)
    tracer.emit(
        Name.WS_UPGRADE_ACCEPTED,
        path=target.path,
        extensions=handshake.extensions,
        duration_s=handshake.upgrade_s,
    )
    core = WebSocketConnection(
        client=True,
        limits=limits,
        now=asyncio.get_running_loop().time(),
        deflate=deflate,
        trailing_data=http.trailing_data,
    )
    session = WebSocketSession(
        stream, core, tracer, closing, send_timeout_s=send_timeout_s, path=target.path
    )
    return WebSocketClient(session, handshake)


async def _read_answer(
    stream: Stream, http: ClientHTTPConnection, closing: Closing
) -> tuple[ResponseReceived, bytes]:
    """The server's answer: a 101 (then no body), or a refusal with its body."""
    head: ResponseReceived | None = None
    body: list[bytes] = []
    while True:
        event = http.next_event()
        if isinstance(event, NeedData):
            data = await stream.receive_some()
            if not data:
                closing.eof_received("upgrade")
            http.receive_data(data)
        elif isinstance(event, ResponseReceived):
            head = event
            if event.status == 101:
                return event, b""
        elif isinstance(event, BodyReceived):
            body.append(event.data)
        elif isinstance(event, PeerClosed):
            raise TransportError("closed_by_server", "the server closed before answering")
        else:  # ResponseCompleted
            assert head is not None
            return head, b"".join(body)


async def _give_up(closing: Closing, error: BaseException, *, server_will_close: bool) -> None:
    """Close a connection whose upgrade did not happen."""
    if isinstance(error, TransportError):
        closing.fail(error.kind)
    elif not isinstance(error, RemoteProtocolError):  # timeout, cancelled: drop it
        closing.abort(Role.CLIENT)
    elif server_will_close and not closing.peer_eof:
        await closing.wait_for_peer_fin("upgrade_refused")  # it closes first, as it said
    reason: Any = getattr(error, "kind", type(error).__name__)
    await closing.finish(str(reason), protocol="http/1.1", requests=1)
