"""The errors of the protocol cores (HTTP, WebSocket), shared by server and client.

As in h11 and wsproto: a `RemoteProtocolError` is the peer's fault and carries what to
answer (`status_hint` for HTTP, `close_code` for WebSocket) and a bounded `kind` for
metrics; a `LocalProtocolError` is ours.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of the errors a protocol core raises; a core raises nothing else."""

    def __init__(
        self,
        message: str,
        *,
        status_hint: int = 400,
        kind: str = "bad_request",
        close_code: int = 1002,  # RFC 6455 §7.4.1: protocol error
    ) -> None:
        super().__init__(message)
        self.status_hint = status_hint
        self.kind = kind
        self.close_code = close_code


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol or a limit; the hint or close code is the answer."""
