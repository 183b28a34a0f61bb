"""The toy TLS as a `Stream`: HTTP and WebSocket run over it unchanged.

`open()` runs the handshake over the TCP stream underneath, reporting each step as a
`tls.*` event; then `receive_some()` returns application data (b"" once close_notify
arrived: the clean end), `send_all()` seals, `send_eof()` sends close_notify and then FIN.
A protocol failure sends its alert and becomes a `TransportError` (kind `tls_<alert>`),
so the HTTP and WebSocket code handle it like any broken connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, NoReturn

from handshake_lab.transport import READ_SIZE, TransportError
from handshake_tls.connection import (
    NEED_DATA,
    AlertReceived,
    ClientConnection,
    CloseNotifyReceived,
    DataReceived,
    HandshakeCompleted,
    HandshakeStep,
    ServerConnection,
)
from handshake_tls.decrypt import keylog_line
from handshake_tls.errors import LocalProtocolError, RemoteProtocolError
from telemetry.events import Level, Name

if TYPE_CHECKING:
    from collections.abc import Callable

    from handshake_lab.transport import TCPStream
    from telemetry.bus import Tracer


class ToyTLSStream:
    """`Stream` over the toy TLS, over TCP."""

    transport_name = "toy-tls"

    def __init__(
        self,
        tcp: TCPStream,
        conn: ClientConnection | ServerConnection,
        *,
        record: Callable[[str, bytes], None] | None = None,
        keylog: Callable[[str], None] | None = None,
    ) -> None:
        """`record(sender, data)` gets every byte sent and received (for `tls decrypt`);
        `keylog(line)` gets the connection's keys once the handshake is done."""
        self.tcp = tcp
        self.conn = conn
        self._record = record
        self._keylog = keylog
        self._us, self._them = ("client", "server") if conn.client else ("server", "client")
        self.local_address = tcp.local_address
        self.remote_address = tcp.remote_address
        self._buffer = b""
        self._ended = False
        # After a fatal alert (sent or received) the bytes that follow are not TLS: read
        # raw, to be thrown away while waiting for the peer's FIN.
        self._dead = False
        self._tracer: Tracer | None = None
        self.handshake: HandshakeCompleted | None = None

    @property
    def bytes_received(self) -> int:
        return self.tcp.bytes_received

    @property
    def bytes_sent(self) -> int:
        return self.tcp.bytes_sent

    async def open(self, tracer: Tracer, timeout_s: float) -> None:
        """The handshake, bounded by `timeout_s`.

        Raises:
            TransportError: the handshake failed (kind `tls_<alert>`), timed out, or TCP did.
        """
        self._tracer = tracer
        conn = self.conn
        started = previous = time.perf_counter()
        tracer.emit(Name.TLS_HANDSHAKE_STARTED, kind="toy")
        try:
            async with asyncio.timeout(timeout_s):
                if isinstance(conn, ClientConnection):
                    conn.start_handshake()
                while True:
                    event = conn.next_event()
                    if out := conn.data_to_send():
                        await self._send(out)
                    if event is NEED_DATA:
                        conn.receive_data(await self._receive())
                    elif isinstance(event, HandshakeStep):
                        # The time since the step before: where the handshake spends it.
                        now = time.perf_counter()
                        tracer.emit(
                            Name.TLS_HANDSHAKE_STEP,
                            step=event.step,
                            duration_s=now - previous,
                            **event.fields,
                        )
                        previous = now
                    elif isinstance(event, HandshakeCompleted):
                        self.handshake = event
                        if self._keylog is not None:
                            self._keylog(keylog_line(conn.client_random, event.keys))
                        tracer.emit(
                            Name.TLS_HANDSHAKE_COMPLETED,
                            kind="toy",
                            suite=event.suite,
                            key_exchange=event.key_exchange,
                            duration_s=time.perf_counter() - started,
                        )
                        return
                    else:
                        self._alert_received(event)
        except RemoteProtocolError as error:
            await self._fail(error, started)
        except TimeoutError:
            self._failed("timeout", f"no complete handshake in {timeout_s} s", started)
            raise TransportError("timeout", "TLS handshake timed out") from None
        except TransportError as error:
            self._failed(error.kind, str(error), started)
            raise

    async def _fail(self, error: RemoteProtocolError, started: float | None) -> NoReturn:
        self._dead = True
        alert = self.conn.fail(error)
        self._failed(f"tls_{error.alert}", str(error), started)
        fin_sent = False
        if alert:
            try:
                await self.tcp.send_all(alert, 2.0)
            except TransportError:
                pass  # the peer is gone: the alert had nowhere to go
            else:
                self._emit(Name.TLS_ALERT_SENT, alert=error.alert, code=error.code)
                # A fatal alert ends the connection (RFC 8446 §6.2): FIN right behind it. A
                # drop with the peer's bytes unread is a RST, which without this FIN could
                # reach a peer still sending before the alert was read (found by
                # tests/integration/test_bad_input_tls.py); the caller reads until its FIN.
                with contextlib.suppress(TransportError, TimeoutError):
                    async with asyncio.timeout(2.0):
                        await self.tcp.send_eof()
                        fin_sent = True
        raise TransportError(f"tls_{error.alert}", str(error), fin_sent=fin_sent) from None

    def _failed(self, kind: str, reason: str, started: float | None) -> None:
        if started is not None:
            kx = self.conn.key_exchange
            self._emit(
                Name.TLS_HANDSHAKE_FAILED,
                Level.WARNING,
                kind=kind,
                key_exchange=kx.name.lower() if kx is not None else "unknown",
                reason=reason,
                duration_s=time.perf_counter() - started,
            )

    def _alert_received(self, event: object) -> NoReturn:
        if not isinstance(event, AlertReceived):  # (the core lets nothing else through)
            raise TransportError("tls_unexpected", f"unexpected {event!r}")
        self._dead = True
        self._emit(Name.TLS_ALERT_RECEIVED, Level.WARNING, alert=event.alert, code=event.code)
        raise TransportError(f"tls_{event.alert}", f"the peer sent the alert {event.alert}")

    def _emit(self, name: Name, level: Level = Level.INFO, **fields: object) -> None:
        if self._tracer is not None:
            self._tracer.emit(name, level, **fields)

    async def receive_some(self, max_bytes: int = READ_SIZE) -> bytes:
        if self._dead:
            return await self.tcp.receive_some(max_bytes)
        while not self._buffer:
            if self._ended:
                return b""
            try:
                event = self.conn.next_event()
            except RemoteProtocolError as error:
                await self._fail(error, None)
            if isinstance(event, DataReceived):
                self._buffer = event.data
            elif isinstance(event, CloseNotifyReceived):
                self._ended = True  # the peer's authenticated end: EOF for HTTP
            elif event is NEED_DATA:
                data = await self._receive()
                if not data and self.conn.closed_sent:
                    # TCP ends after our close_notify: the peer need not answer with its
                    # own (the data we wanted was all authenticated before).
                    self._ended = True
                self.conn.receive_data(data)
            else:
                self._alert_received(event)
        data, self._buffer = self._buffer[:max_bytes], self._buffer[max_bytes:]
        return data

    async def send_all(self, data: bytes, timeout_s: float | None = None) -> None:
        try:
            self.conn.send(data)
        except LocalProtocolError:
            raise TransportError("closed", "write on a closed TLS connection") from None
        await self._send(self.conn.data_to_send(), timeout_s)

    async def send_eof(self) -> None:
        """close_notify, then FIN: the end is authenticated, not only a TCP fact."""
        if notify := self.conn.close():
            await self._send(notify)
        await self.tcp.send_eof()

    async def _send(self, data: bytes, timeout_s: float | None = None) -> None:
        if self._record is not None:
            self._record(self._us, data)
        await self.tcp.send_all(data, timeout_s)

    async def _receive(self) -> bytes:
        data = await self.tcp.receive_some()
        if self._record is not None and data:
            self._record(self._them, data)
        return data

    async def aclose(self, timeout_s: float = 2.0) -> None:
        await self.tcp.aclose(timeout_s)

    def abort(self) -> None:
        self.tcp.abort()
