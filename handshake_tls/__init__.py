"""A toy TLS you can read, watch and attack (not TLS: see handshake_tls/README.md)."""

from handshake_tls.connection import ClientConnection, ServerConnection, ServerIdentity
from handshake_tls.errors import LocalProtocolError, RemoteProtocolError, TLSError
from handshake_tls.stream import ToyTLSStream
from handshake_tls.wire import KeyExchange

__all__ = [
    "ClientConnection",
    "KeyExchange",
    "LocalProtocolError",
    "RemoteProtocolError",
    "ServerConnection",
    "ServerIdentity",
    "TLSError",
    "ToyTLSStream",
]
