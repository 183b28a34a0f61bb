"""The client API: `async with HTTPClient() as client: await client.get(url)`.

HTTP/1.1 keeps one idle connection per origin and reuses it; HTTP/1.0 opens a new
connection for every request. A request that fails on a reused connection before any
byte of the answer (the server had closed it while idle) is sent again once on a new
connection, if its method is idempotent (RFC 9110 §9.2.2), and the event says so.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Final, Self
from urllib.parse import urlsplit

from client.pool import ClientConnection, ConnState, Response
from handshake_lab.errors import ProtocolError
from handshake_lab.transport import SocketFactory, TransportError, open_tcp_stream
from handshake_tls.certs import real_tls_client_context, trusted_ca
from handshake_tls.connection import ClientConnection as TLSClient
from handshake_tls.stream import ToyTLSStream
from handshake_tls.wire import KeyExchange
from telemetry.bus import Bus, Tracer
from telemetry.events import Level, Name, Role

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable
    from pathlib import Path
    from types import TracebackType

    from cryptography import x509

    from client.http_conn import Headers

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})


# Numbered per process, not per client, so several clients' connections never share a number.
_connection_ids = itertools.count(1)


class RequestError(Exception):
    """A request that got no response: `kind` says why (refused, timeout, bad_response...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class HTTPClient:
    """An asyncio HTTP/1.x client that shows its connections.

    Args:
        bus: where events go (a fresh, silent bus by default).
        http_version: "1.1" (keep-alive, the default) or "1.0" (a connection per request).
        timeout_s: bound on connecting and on each whole request/response.
        linger_timeout_s: how long to wait for the peer's FIN when closing.
        cafile: for toytls:// URLs, the CA to trust (default: the lab's, in
            handshake_tls.certs.DEFAULT_DIR).
        key_exchange: for toytls:// URLs, rsa or ecdhe.
        tls_keylog, tls_record: for toytls:// URLs, where key-log lines and the bytes of
            each connection go (for `handshake-lab tls decrypt`).
    """

    def __init__(
        self,
        bus: Bus | None = None,
        *,
        http_version: str = "1.1",
        timeout_s: float = 30.0,
        linger_timeout_s: float = 1.0,
        cafile: Path | None = None,
        key_exchange: KeyExchange = KeyExchange.ECDHE,
        tls_keylog: Callable[[str], None] | None = None,
        tls_record: Callable[[int], Callable[[str, bytes], None]] | None = None,
        make_socket: SocketFactory | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if http_version not in ("1.0", "1.1"):
            raise ValueError(f"http_version must be '1.0' or '1.1', not {http_version!r}")
        self.bus = bus or Bus()
        self.tracer = Tracer(self.bus, Role.CLIENT)
        self.http_version = http_version
        self.timeout_s = timeout_s
        self.linger_timeout_s = linger_timeout_s
        # Idle keep-alive connections per origin; concurrent requests each take their own.
        self._idle: dict[tuple[str, str, int], list[ClientConnection]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.connections_opened = 0
        self.cafile = cafile  # the CA that toytls:// servers must be signed by
        self.key_exchange = key_exchange
        self.make_socket = make_socket  # the lab network's: a socket in the client's namespace
        self._ca: x509.Certificate | None = None
        self._ssl: ssl.SSLContext | None = tls_context  # None: made from cafile when needed
        self.tls_keylog = tls_keylog  # gets a key-log line per toy-TLS connection
        self.tls_record = tls_record  # conn_id -> where that connection's bytes are recorded

    async def get(self, url: str, headers: Headers | None = None) -> Response:
        return await self.request("GET", url, headers)

    async def request(
        self, method: str, url: str, headers: Headers | None = None, body: bytes = b""
    ) -> Response:
        """Send one request and return the whole response.

        Raises:
            RequestError: no response (connection refused, timeout, invalid response...).
            ValueError: the URL is not an http:// URL.
        """
        scheme, host, port, target, host_header = _split_url(url)
        origin = (scheme, host, port)
        all_headers: Headers = [(b"host", host_header), *(headers or [])]
        if not any(name.lower() == b"user-agent" for name, _ in all_headers):
            all_headers.append((b"user-agent", b"handshake-lab"))
        started = time.perf_counter()
        idle = self._idle.get(origin)
        connection = idle.pop() if idle else None
        try:
            if connection is None:
                connection = await self._connect(origin)
            try:
                response = await self._exchange(
                    connection, method, target, all_headers, body, started
                )
            except TransportError as error:
                if not (
                    connection.core.requests > 1
                    and not connection.core.response_started
                    and method in IDEMPOTENT_METHODS
                ):
                    raise
                # The server closed the idle connection just as we reused it: try once more.
                await connection.fail(error.kind)
                self.tracer.emit(
                    Name.REQUEST_RETRIED,
                    Level.WARNING,
                    method=method,
                    target=target,
                    reason=str(error),
                    kind=error.kind,
                    stale_conn_id=connection.conn_id,
                )
                started = time.perf_counter()
                connection = await self._connect(origin)
                response = await self._exchange(
                    connection, method, target, all_headers, body, started
                )
                response = replace(response, retried=True)
        except (TransportError, ProtocolError) as error:
            if connection is not None and connection.state is not ConnState.CLOSED:
                await connection.fail(error.kind)
            self.tracer.emit(
                Name.REQUEST_FAILED,
                Level.WARNING,
                method=method,
                target=target,
                kind=error.kind,
                reason=str(error),
            )
            raise RequestError(error.kind, str(error)) from error
        except asyncio.CancelledError:
            # The caller gave up (a timeout around us, Ctrl-C): the connection is in an
            # unknown state, so drop it, record it, and let the cancellation go on.
            if connection is not None and connection.state is not ConnState.CLOSED:
                await connection.fail("cancelled")
            raise
        if connection.state is ConnState.IDLE:
            self._idle.setdefault(origin, []).append(connection)
        else:
            # The answer is complete: hand it over now, and let the close (waiting for the
            # server's FIN) finish in the background; aclose() waits for it.
            reason = "http_1.0" if self.http_version == "1.0" else "server_asked_close"
            closing = asyncio.create_task(connection.close(reason))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        return response

    async def _connect(self, origin: tuple[str, str, int]) -> ClientConnection:
        scheme, host, port = origin
        try:
            tls = self._ssl_context() if scheme == "https" else None
            stream, timings = await open_tcp_stream(
                host, port, timeout_s=self.timeout_s, tls=tls, make_socket=self.make_socket
            )
        except TransportError as error:
            self.tracer.emit(
                Name.CONNECT_FAILED,
                Level.WARNING,
                host=host,
                port=port,
                kind=error.kind,
                reason=str(error),
            )
            raise
        conn_id = next(_connection_ids)
        self.connections_opened += 1
        tracer = self.tracer.bind(conn_id, stream.local_address, stream.remote_address)
        tracer.emit(
            Name.CONNECT_COMPLETED,
            transport=stream.transport_name,
            host=host,
            port=port,
            lookup_s=timings.lookup_s,
            duration_s=timings.connect_s,
        )
        if scheme == "https":
            await stream.open(tracer, self.timeout_s)  # (reports what TLS agreed)
        if scheme == "toytls":
            toy = ToyTLSStream(
                stream,
                TLSClient(self._trusted_ca(), host, self.key_exchange),
                record=self.tls_record(conn_id) if self.tls_record else None,
                keylog=self.tls_keylog,
            )
            connection = ClientConnection(
                toy, timings, conn_id, tracer, self.http_version, self.linger_timeout_s
            )
            try:
                await toy.open(tracer, self.timeout_s)
            except TransportError as error:
                await connection.fail(error.kind)
                raise
            return connection
        return ClientConnection(
            stream, timings, conn_id, tracer, self.http_version, self.linger_timeout_s
        )

    def _ssl_context(self) -> ssl.SSLContext:
        """Real TLS trusting the lab CA (or --cafile); honours SSLKEYLOGFILE."""
        if self._ssl is None:
            try:
                self._ssl = real_tls_client_context(self.cafile)
            except OSError as exc:
                raise TransportError("no_ca", str(exc)) from None
        return self._ssl

    def _trusted_ca(self) -> x509.Certificate:
        if self._ca is None:
            try:
                self._ca = trusted_ca(self.cafile)
            except (OSError, ValueError) as exc:
                raise TransportError("no_ca", str(exc)) from None
        return self._ca

    async def _exchange(
        self,
        connection: ClientConnection,
        method: str,
        target: str,
        headers: Headers,
        body: bytes,
        started: float,
    ) -> Response:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await connection.exchange(method, target, headers, body, started)
        except TimeoutError:
            raise TransportError(
                "timeout", f"no complete response within {self.timeout_s} s"
            ) from None

    async def aclose(self) -> None:
        """Close every idle connection (the client sends FIN first: it is the active closer)
        and wait for the closes still under way."""
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await connection.close("client_done")
        while self._closing:
            await asyncio.gather(*self._closing)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


DEFAULT_PORTS: Final = {"http": 80, "https": 443, "toytls": 8443}


def _split_url(url: str) -> tuple[str, str, int, str, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"not an http://, https:// or toytls:// URL: {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in URL: {url!r}")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ValueError(f"bad port in URL: {url!r}") from exc
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host_header = parts.netloc.rsplit("@", 1)[-1].encode(
        "idna" if not parts.netloc.isascii() else "ascii"
    )
    return parts.scheme, parts.hostname, port, target, host_header
