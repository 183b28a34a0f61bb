"""Closing a TCP connection in the order TCP teaches, and knowing who closed first.

Shared by server and client. The side that sends FIN first is the active closer and will
hold TIME_WAIT; `closed_by` records it. After our FIN we keep reading until the peer's FIN
(bounded in time and bytes), throwing data away: closing a socket with unread data makes
the kernel send RST, which can destroy an answer the peer has not read yet.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final

from handshake_lab.transport import TransportError
from telemetry.events import Name

if TYPE_CHECKING:
    from handshake_lab.transport import Stream
    from telemetry.bus import Tracer
    from telemetry.events import Role

# Failures that mean the peer ended the connection (as opposed to us giving up on it).
PEER_FAULT_KINDS: Final = frozenset({"reset", "broken_pipe", "closed_by_server", "eof"})
LINGER_DISCARD_LIMIT: Final = 1024 * 1024


class Closing:
    """The closing half of one connection's life: FINs, RSTs, and the closed event."""

    def __init__(
        self, stream: Stream, tracer: Tracer, linger_timeout_s: float, flush_timeout_s: float
    ) -> None:
        self.stream = stream
        self.tracer = tracer
        self.linger_timeout_s = linger_timeout_s
        self.flush_timeout_s = flush_timeout_s  # for what we wrote to leave, before our FIN
        self.opened = time.perf_counter()
        self.peer_eof = False
        self.aborted = False
        self.closed_by: Role | None = None

    @property
    def role(self) -> Role:
        return self.tracer.role

    def eof_received(self, phase: str) -> None:
        """The peer's FIN arrived; if we had not sent ours, the peer closed first."""
        self.peer_eof = True
        if self.closed_by is None:
            self.closed_by = self.role.peer
        self.tracer.emit(Name.EOF_RECEIVED, phase=phase)

    def abort(self, closed_by: Role) -> None:
        """Drop the connection now (RST). `closed_by`: whose doing it was, if not yet known."""
        if self.closed_by is None:
            self.closed_by = closed_by
        self.aborted = True
        self.stream.abort()

    def fail(self, kind: str) -> None:
        """The connection broke with a `TransportError` of this kind: drop it."""
        self.abort(self.role.peer if kind in PEER_FAULT_KINDS else self.role)

    async def after_transport_fin(self, reason: str) -> None:
        """The transport sent our FIN itself (after a fatal alert): we closed first; read
        until the peer's FIN, so that what it still sends does not make our close a RST."""
        if self.closed_by is None:
            self.closed_by = self.role
        self.tracer.emit(Name.FIN_SENT, reason=reason, active_closer=self.closed_by is self.role)
        if not self.peer_eof:
            await self.wait_for_peer_fin(reason)

    async def wait_for_peer_fin(self, phase: str = "closing") -> bool:
        """Read and discard until the peer's FIN, for at most the linger timeout."""
        discarded = 0
        try:
            async with asyncio.timeout(self.linger_timeout_s):
                while discarded <= LINGER_DISCARD_LIMIT:
                    data = await self.stream.receive_some()
                    if not data:
                        self.eof_received(phase)
                        return True
                    discarded += len(data)
        except TimeoutError:
            pass
        except TransportError as error:
            self.fail(error.kind)
        return False

    async def finish(self, reason: str, **fields: Any) -> None:
        """Send our FIN (unless aborted), wait for the peer's, close, emit the closed event.

        Never raises, except CancelledError, after closing.
        """
        try:
            if not self.aborted:
                if self.closed_by is None:
                    self.closed_by = self.role
                async with asyncio.timeout(self.flush_timeout_s):
                    await self.stream.send_eof()
                self.tracer.emit(
                    Name.FIN_SENT, reason=reason, active_closer=self.closed_by is self.role
                )
                if not self.peer_eof and not await self.wait_for_peer_fin():
                    # The peer never closed: drop it rather than wait on.
                    self.abort(self.role)
        except TransportError as error:
            self.fail(error.kind)
        except TimeoutError:  # the peer stopped reading what we still had to send
            self.abort(self.role)
        except asyncio.CancelledError:
            self.abort(self.role)
            raise
        finally:
            try:
                await self.stream.aclose(self.linger_timeout_s)
            finally:
                self._emit_closed(reason, fields)

    def _emit_closed(self, reason: str, fields: dict[str, Any]) -> None:
        self.tracer.emit(
            Name.CONNECTION_CLOSED,
            transport=self.stream.transport_name,
            closed_by=(self.closed_by or self.role).value,
            reason=reason,
            lifetime_s=time.perf_counter() - self.opened,
            bytes_received=self.stream.bytes_received,
            bytes_sent=self.stream.bytes_sent,
            **fields,
        )
