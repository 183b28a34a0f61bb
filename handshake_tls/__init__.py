"""A toy TLS you can read, watch and attack (not TLS: see handshake_tls/README.md)."""

from typing import Final

from handshake_tls.connection import ClientConnection, ServerConnection, ServerIdentity
from handshake_tls.errors import LocalProtocolError, RemoteProtocolError, TLSError
from handshake_tls.stream import ToyTLSStream
from handshake_tls.wire import KeyExchange

# Said on every entry point of the toy: CLI help, --explain, the README, the tour.
FOR_LEARNING_ONLY: Final = "a toy for learning, not for protecting anything"

__all__ = [
    "FOR_LEARNING_ONLY",
    "ClientConnection",
    "KeyExchange",
    "LocalProtocolError",
    "RemoteProtocolError",
    "ServerConnection",
    "ServerIdentity",
    "TLSError",
    "ToyTLSStream",
]
