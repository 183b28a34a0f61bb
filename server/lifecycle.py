"""Start, serve, shut down: the listener, the registry of connections, the signals.

Shutdown, as a checklist: stop accepting; tell every connection to drain (idle ones
send FIN at once, busy ones answer with `Connection: close`); wait up to the bound; cancel
what is left; report. Then the listening socket and the process can go.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import resource
import signal
import ssl
import time
from typing import TYPE_CHECKING, Any, Final, Self

from handshake_lab.transport import TCPStream, TLSStream
from handshake_tls.certs import DEFAULT_DIR, KEY_TYPES, ensure_lab_certificates
from handshake_tls.connection import ServerConnection, ServerIdentity
from handshake_tls.crypto import (
    certificate_der,
    load_certificate_pem,
    load_private_key_pem,
)
from handshake_tls.stream import ToyTLSStream
from server.app import App
from server.connection import Admission, ConnectionHandler, overflow
from telemetry.bus import Bus, Tracer
from telemetry.events import Name, Role
from telemetry.sockstates import SocketSampler

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable
    from pathlib import Path
    from types import TracebackType

    from handshake_lab.transport import Stream
    from server.config import ServerConfig


class Server:
    """The lab's HTTP server. Use `async with Server(config, bus) as server:`."""

    def __init__(
        self,
        config: ServerConfig,
        bus: Bus | None = None,
        app: App | None = None,
        make_listen_socket: Callable[[int], socket.socket] | None = None,
    ) -> None:
        self.config = config
        # port -> a bound socket: the lab network makes them in the server's namespace.
        self._make_listen_socket = make_listen_socket
        self.bus = bus or Bus()
        self.app = app or App(config)
        self.tracer = Tracer(self.bus, Role.SERVER)
        self._listener: asyncio.Server | None = None
        self._handlers: dict[asyncio.Task[None], ConnectionHandler] = {}
        self._ids = itertools.count(1)
        self.port = config.port
        self.accepted = 0
        self.served = 0  # open connections admitted under --max-connections
        self.refusing = 0  # open connections being answered 503
        self._extra_listeners: list[asyncio.Server] = []  # toy TLS, real TLS
        self.toy_tls_port: int | None = None
        self.real_tls_port: int | None = None
        self.tls_identities: dict[str, ServerIdentity] = {}
        self.sampler: SocketSampler | None = None  # the kernel's view (ss), when asked for
        self._hurry = asyncio.Event()

    async def start(self) -> None:
        config = self.config
        if config.max_connections:
            ensure_file_limit(config.max_connections + overflow(config.max_connections))
        self._listener = await self._listen(config.port, self._on_connection, "tcp")
        self.port = self._listener.sockets[0].getsockname()[1]
        if config.toy_tls_port is not None:
            self.tls_identities = load_identities(config.certs_dir)
            listener = await self._listen(
                config.toy_tls_port, self._on_toy_tls_connection, "toy-tls"
            )
            self._extra_listeners.append(listener)
            self.toy_tls_port = listener.sockets[0].getsockname()[1]
        if config.real_tls_port is not None:
            listener = await self._listen(
                config.real_tls_port,
                self._on_real_tls_connection,
                "tls",
                tls=real_tls_context(config.certs_dir),
            )
            self._extra_listeners.append(listener)
            self.real_tls_port = listener.sockets[0].getsockname()[1]
        if config.ss_interval_s > 0:
            ports = [p for p in (self.port, self.toy_tls_port, self.real_tls_port) if p]
            self.sampler = SocketSampler(
                self.bus, ports, interval_s=config.ss_interval_s, cpu_budget=config.ss_cpu_budget
            )
            self.sampler.start()

    async def _listen(
        self,
        port: int,
        accept: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        transport: str,
        tls: ssl.SSLContext | None = None,
    ) -> asyncio.Server:
        where: dict[str, Any] = {"host": self.config.host, "port": port, "reuse_address": True}
        if self._make_listen_socket is not None:
            where = {"sock": self._make_listen_socket(port)}
        listener = await asyncio.start_server(
            accept,
            **where,
            backlog=self.config.backlog,
            ssl=tls,
            ssl_handshake_timeout=self.config.limits.header_timeout_s if tls else None,
        )
        host, bound_port = listener.sockets[0].getsockname()[:2]
        self.tracer.emit(
            Name.LISTENER_STARTED,
            host=host,
            port=bound_port,
            backlog=self.config.backlog,
            transport=transport,
        )
        return listener

    @property
    def url(self) -> str:
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._handlers)

    async def _on_toy_tls_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        tcp = TCPStream(reader, writer)
        await self._serve_connection(
            ToyTLSStream(tcp, ServerConnection(self.tls_identities)), may_refuse=False
        )

    async def _on_real_tls_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._serve_connection(TLSStream(reader, writer), may_refuse=False)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._serve_connection(TCPStream(reader, writer))

    def admission(self, *, may_refuse: bool = True) -> Admission:
        """Beyond --max-connections served, a plain connection is answered 503 (a few:
        `overflow`); past those, and on the TLS ports (no handshake paid for a refusal),
        it is closed at once. Refused connections do not take a served one's place."""
        limit = self.config.max_connections
        if not limit or self.served < limit:
            return "serve"
        if may_refuse and self.refusing < overflow(limit):
            return "refuse"
        return "drop"

    async def _serve_connection(self, stream: Stream, *, may_refuse: bool = True) -> None:
        conn_id = next(self._ids)
        self.accepted += 1
        admission = self.admission(may_refuse=may_refuse)
        handler = ConnectionHandler(
            stream,
            self.app,
            self.config,
            self.tracer.bind(conn_id, stream.local_address, stream.remote_address),
            admission=admission,
        )
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = handler
        self.served += admission == "serve"
        self.refusing += admission == "refuse"
        if self._listener is None or not self._listener.is_serving():
            handler.begin_drain()  # accepted in the instant shutdown began
        try:
            await handler.run()
        except asyncio.CancelledError:
            # Shutdown cancelled it and run() has closed and reported it. This is the
            # outermost frame of asyncio's callback task, whose cancellation Python 3.11
            # would log as an error.
            pass
        finally:
            del self._handlers[task]
            self.served -= admission == "serve"
            self.refusing -= admission == "refuse"

    def hurry(self) -> None:
        """Stop waiting for open connections to finish: shutdown cancels them now."""
        self._hurry.set()

    async def shutdown(self, timeout_s: float | None = None) -> None:
        """Stop accepting, let connections finish within `timeout_s`, then cancel the rest."""
        if self._listener is None:
            return
        timeout_s = self.config.shutdown_timeout_s if timeout_s is None else timeout_s
        started = time.perf_counter()
        open_at_start = len(self._handlers)
        self.tracer.emit(Name.SHUTDOWN_STARTED, open_connections=open_at_start, timeout_s=timeout_s)
        self._listener.close()
        for listener in self._extra_listeners:
            listener.close()
        for handler in list(self._handlers.values()):
            handler.begin_drain()
        tasks = list(self._handlers)
        cancelled = 0
        if tasks:
            # Until every connection has finished, the timeout, or hurry() (a second signal).
            finished = asyncio.gather(*tasks, return_exceptions=True)
            hurried = asyncio.ensure_future(self._hurry.wait())
            either: list[asyncio.Future[Any]] = [finished, hurried]
            await asyncio.wait(either, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            hurried.cancel()
            pending = [task for task in tasks if not task.done()]
            for task in pending:
                task.cancel()
            cancelled = len(pending)
            await finished  # (return_exceptions: the cancelled ones end it without raising)
        await self._listener.wait_closed()
        self._listener = None
        if self.sampler is not None:
            await self.sampler.stop()
            self.sampler = None
        for listener in self._extra_listeners:
            await listener.wait_closed()
        self._extra_listeners.clear()
        self.tracer.emit(Name.LISTENER_STOPPED, host=self.config.host, port=self.port)
        self.tracer.emit(
            Name.SHUTDOWN_COMPLETED,
            open_connections=open_at_start,
            cancelled=cancelled,
            duration_s=time.perf_counter() - started,
        )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()


async def serve_until_signalled(
    server: Server, on_ready: Callable[[Server], None] | None = None
) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully; a second signal during the
    shutdown cancels what is still open at once (and the log is still written whole)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            server.hurry()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        await server.start()
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
    finally:
        try:
            await server.shutdown()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)


FILE_RESERVE: Final = 64  # listeners, the log, the metrics endpoint, ss's pipes, certificates


def ensure_file_limit(connections: int) -> None:
    """Let this process open `connections` sockets and its own files: raise the soft limit
    on open files toward the hard one when it is too low (1024 is a common default).

    Raises:
        OSError: the hard limit is too low (EMFILE; `ulimit -Hn` says it).
    """
    needed = connections + FILE_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise OSError(
                errno.EMFILE,
                f"--max-connections needs {needed} open files and the hard limit is {hard} "
                "(ulimit -Hn): lower --max-connections",
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def load_identities(certs_dir: Path | None) -> dict[str, ServerIdentity]:
    """The lab's server certificates, one per key type (made first when missing)."""
    files, _made = ensure_lab_certificates(certs_dir or DEFAULT_DIR)
    return {
        key_type: ServerIdentity(
            (certificate_der(load_certificate_pem(files.certificate(key_type).read_bytes())),),
            load_private_key_pem(files.key(key_type).read_bytes()),
        )
        for key_type in KEY_TYPES
    }


def real_tls_context(certs_dir: Path | None) -> ssl.SSLContext:
    """Python's TLS (OpenSSL), 1.2 and 1.3, with the lab's RSA certificate; it honours
    SSLKEYLOGFILE, so Wireshark can decrypt a capture."""
    files, _made = ensure_lab_certificates(certs_dir or DEFAULT_DIR)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.certificate("rsa"), files.key("rsa"))
    if keylog := os.environ.get("SSLKEYLOGFILE"):
        context.keylog_filename = keylog
    return context
