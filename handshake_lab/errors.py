"""The errors of the HTTP cores, shared by server and client.

As in h11: a `RemoteProtocolError` is the peer's fault and carries what to answer
(`status_hint`) and a bounded `kind` for metrics; a `LocalProtocolError` is ours.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of the errors a protocol core raises; a core raises nothing else."""

    def __init__(self, message: str, *, status_hint: int = 400, kind: str = "bad_request") -> None:
        super().__init__(message)
        self.status_hint = status_hint
        self.kind = kind


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol or a limit; `status_hint` is the answer to send."""
