"""The one stream interface all HTTP (and later WebSocket) code sees, and its TCP form.

Server and client both import this module: a byte stream with half-close. Later
transports (toy TLS, real TLS) implement the same `Stream` protocol, so the HTTP code
runs over them unchanged. OS-level failures become `TransportError` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from telemetry.events import Name, format_address

if TYPE_CHECKING:
    from collections.abc import Iterator

    from telemetry.bus import Tracer

SocketFactory = Callable[[int], socket.socket]  # address family -> a new, unconnected socket

READ_SIZE: Final = 65536


class TransportError(Exception):
    """The connection failed below HTTP. `kind` is a bounded label: reset, timeout, ..."""

    def __init__(self, kind: str, message: str, *, fin_sent: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        # The transport ended its side itself (a toy-TLS fatal alert goes out with FIN):
        # the caller may still read until the peer's FIN, so that closing is no RST.
        self.fin_sent = fin_sent


class Stream(Protocol):
    """A byte stream with half-close, as HTTP needs it."""

    transport_name: str
    local_address: str | None
    remote_address: str | None

    @property
    def bytes_received(self) -> int: ...

    @property
    def bytes_sent(self) -> int: ...

    async def open(self, tracer: Tracer, timeout_s: float) -> None:
        """The transport's own handshake (a TLS one), reported through `tracer`."""
        ...

    async def receive_some(self, max_bytes: int = READ_SIZE) -> bytes:
        """Up to `max_bytes`; b"" once the peer has sent FIN."""
        ...

    async def send_all(self, data: bytes, timeout_s: float | None = None) -> None:
        """Write all of `data`; wait at most `timeout_s` for a slow reader to make room
        (then TransportError "send_timeout")."""
        ...

    async def send_eof(self) -> None:
        """Half-close: send what is buffered, then FIN; keep reading."""
        ...

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Close (flushing what is buffered); drop the connection if that takes longer."""
        ...

    def abort(self) -> None:
        """Drop the connection at once (RST when data is unread)."""
        ...


_KINDS: Final = {
    errno.ECONNRESET: "reset",
    errno.EPIPE: "broken_pipe",
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timeout",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
}


def as_transport_error(exc: OSError | asyncio.IncompleteReadError) -> TransportError:
    """What the OS or asyncio raised, as one `TransportError` with a bounded kind."""
    if isinstance(exc, asyncio.IncompleteReadError):
        return TransportError("eof", "connection closed mid-read")
    if isinstance(exc, TimeoutError):
        return TransportError("timeout", "timed out")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TransportError("tls_bad_certificate", f"certificate refused: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return TransportError("tls_error", f"TLS failed: {exc.reason or exc}")
    if isinstance(exc, socket.gaierror):
        return TransportError("name_lookup", f"name lookup failed: {exc.strerror}")
    return TransportError(_KINDS.get(exc.errno or 0, "os_error"), exc.strerror or str(exc))


@contextlib.contextmanager
def map_transport_errors() -> Iterator[None]:
    """Raise what the OS and asyncio raise inside as one `TransportError`."""
    try:
        yield
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise as_transport_error(exc) from exc


class TCPStream:
    """`Stream` over an asyncio TCP connection."""

    transport_name = "tcp"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.local_address = format_address(writer.get_extra_info("sockname"))
        self.remote_address = format_address(writer.get_extra_info("peername"))
        self.bytes_received = 0
        self.bytes_sent = 0

    async def open(self, tracer: Tracer, timeout_s: float) -> None:
        """Nothing to do: TCP's handshake was connect()/accept()."""

    # receive_some and send_all run for every request: a plain try costs nothing until
    # something fails, the context manager a generator per call.
    async def receive_some(self, max_bytes: int = READ_SIZE) -> bytes:
        try:
            data = await self._reader.read(max_bytes)
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise as_transport_error(exc) from exc
        self.bytes_received += len(data)
        return data

    async def send_all(self, data: bytes, timeout_s: float | None = None) -> None:
        writer = self._writer
        if writer.is_closing():
            raise TransportError("closed", "write on a closed connection")
        try:
            writer.write(data)
            self.bytes_sent += len(data)
            if writer.transport.get_write_buffer_size():  # else the kernel took it all
                # (A timer only here, where a wait can happen: most writes never get here.)
                async with asyncio.timeout(timeout_s):
                    await writer.drain()
        except TimeoutError:
            raise TransportError("send_timeout", "the peer stopped reading") from None
        except OSError as exc:
            raise as_transport_error(exc) from exc

    async def send_eof(self) -> None:
        writer = self._writer
        with map_transport_errors():
            if writer.can_write_eof() and not writer.is_closing():
                # drain() normally returns below a low-water mark; at the end we wait for
                # every byte to leave, so that nothing still buffered is lost to a RST.
                writer.transport.set_write_buffer_limits(high=0)
                writer.write_eof()
                await writer.drain()

    async def aclose(self, timeout_s: float = 2.0) -> None:
        self._writer.close()
        # close() flushes what is buffered first: a peer that never reads would hold us
        # for ever, so after timeout_s the connection is dropped instead.
        try:
            async with asyncio.timeout(timeout_s):
                await self._writer.wait_closed()
        except (OSError, TimeoutError):
            self.abort()
        except asyncio.CancelledError:
            self.abort()
            raise

    def abort(self) -> None:
        transport = self._writer.transport
        transport.abort()


class TLSStream(TCPStream):
    """`Stream` over real TLS (Python's ssl): asyncio did the handshake; `open()` reports
    what it agreed. Closing sends close_notify (the SSL transport's close)."""

    transport_name = "tls"

    async def send_eof(self) -> None:
        """TLS has no half-close in asyncio: close_notify goes with closing the TLS session
        (asyncio then waits, bounded, for the peer's close_notify before closing TCP)."""
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self._writer.wait_closed()

    async def open(self, tracer: Tracer, timeout_s: float) -> None:
        ssl_object = self._writer.get_extra_info("ssl_object")
        cipher = ssl_object.cipher() if ssl_object is not None else None
        tracer.emit(
            Name.TLS_HANDSHAKE_COMPLETED,
            kind="real",
            key_exchange="ecdhe",  # what TLS 1.3, and the suites we allow in 1.2, use
            suite=cipher[0] if cipher else "unknown",
            version=ssl_object.version() if ssl_object is not None else "unknown",
            duration_s=None,  # not observable: asyncio finishes it before handing us the stream
        )


async def _connect(
    family: int,
    proto: int,
    address: tuple[str, int],
    host: str,
    tls: ssl.SSLContext | None,
    make_socket: SocketFactory | None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    server_hostname = host if tls is not None else None
    if make_socket is None:
        return await asyncio.open_connection(
            *address, family=family, proto=proto, ssl=tls, server_hostname=server_hostname
        )
    sock = make_socket(family)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address)
        return await asyncio.open_connection(sock=sock, ssl=tls, server_hostname=server_hostname)
    except BaseException:
        sock.close()
        raise


def _literal_address(host: str, port: int) -> list[tuple[int, int, int, str, tuple[str, int]]]:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
    return []


@dataclass(frozen=True, slots=True)
class ConnectTimings:
    lookup_s: float
    connect_s: float
    address: str


async def open_tcp_stream(
    host: str,
    port: int,
    *,
    timeout_s: float = 10.0,
    tls: ssl.SSLContext | None = None,
    make_socket: SocketFactory | None = None,
) -> tuple[TCPStream, ConnectTimings]:
    """Look the name up, then connect, timing both steps apart (as `curl -w` does).

    `make_socket` makes the socket to connect with (the lab network makes it inside the
    client's network namespace); by default asyncio makes one.

    Raises:
        TransportError: the lookup or the connect failed or timed out.
    """
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    with map_transport_errors():
        async with asyncio.timeout(timeout_s):
            # An address literal needs no lookup (curl reports 0 for it too).
            infos = _literal_address(host, port) or await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
            looked_up = time.perf_counter()
            last_error: OSError | None = None
            for family, _type, proto, _name, sockaddr in infos:
                address, address_port = str(sockaddr[0]), int(sockaddr[1])
                try:
                    reader, writer = await _connect(
                        family, proto, (address, address_port), host, tls, make_socket
                    )
                except OSError as exc:
                    last_error = exc
                    continue
                connected = time.perf_counter()
                timings = ConnectTimings(
                    looked_up - started, connected - looked_up, format_address(sockaddr) or ""
                )
                return (TLSStream if tls else TCPStream)(reader, writer), timings
            raise last_error or OSError(errno.EHOSTUNREACH, "no address to connect to")
    raise AssertionError("unreachable")  # pragma: no cover (mypy: the with always returns)
