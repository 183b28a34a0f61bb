"""The toy TLS handshake as data: states named after the message expected next, and the
one table of what each message moves each state to (per key exchange, since `ecdhe`
has the signed ServerKeyExchange that `rsa` does not).

    client                                    server
    ClientHello (A, suites, kx, name)  ──▶    EXPECT_CLIENT_HELLO
    EXPECT_SERVER_HELLO                ◀──    ServerHello (B, suite)
    EXPECT_CERTIFICATE                 ◀──    Certificate (chain)
    EXPECT_SERVER_KEY_EXCHANGE         ◀──    ServerKeyExchange (share, signature)   ecdhe
    EXPECT_SERVER_HELLO_DONE           ◀──    ServerHelloDone
    ClientKeyExchange (C or share)     ──▶    EXPECT_CLIENT_KEY_EXCHANGE
    Finished (sealed)                  ──▶    EXPECT_FINISHED
    EXPECT_FINISHED                    ◀──    Finished (sealed)
    CONNECTED                                 CONNECTED
"""

from __future__ import annotations

import enum
from typing import Final

from handshake_tls.wire import (
    Certificate,
    ClientHello,
    ClientKeyExchange,
    Finished,
    KeyExchange,
    ServerHello,
    ServerHelloDone,
    ServerKeyExchange,
)


class State(enum.Enum):
    START = "start"
    EXPECT_CLIENT_HELLO = "expect_client_hello"
    EXPECT_SERVER_HELLO = "expect_server_hello"
    EXPECT_CERTIFICATE = "expect_certificate"
    EXPECT_SERVER_KEY_EXCHANGE = "expect_server_key_exchange"
    EXPECT_SERVER_HELLO_DONE = "expect_server_hello_done"
    EXPECT_CLIENT_KEY_EXCHANGE = "expect_client_key_exchange"
    EXPECT_FINISHED = "expect_finished"
    CONNECTED = "connected"
    CLOSED = "closed"  # close_notify went one way or both
    ERROR = "error"  # an alert was sent or received


_COMMON: Final[dict[tuple[State, type], State]] = {
    # client
    (State.EXPECT_SERVER_HELLO, ServerHello): State.EXPECT_CERTIFICATE,
    (State.EXPECT_SERVER_HELLO_DONE, ServerHelloDone): State.EXPECT_FINISHED,
    # server
    (State.EXPECT_CLIENT_HELLO, ClientHello): State.EXPECT_CLIENT_KEY_EXCHANGE,
    (State.EXPECT_CLIENT_KEY_EXCHANGE, ClientKeyExchange): State.EXPECT_FINISHED,
    # both
    (State.EXPECT_FINISHED, Finished): State.CONNECTED,
}

TRANSITIONS: Final[dict[KeyExchange, dict[tuple[State, type], State]]] = {
    KeyExchange.RSA: {
        **_COMMON,
        (State.EXPECT_CERTIFICATE, Certificate): State.EXPECT_SERVER_HELLO_DONE,
    },
    KeyExchange.ECDHE: {
        **_COMMON,
        (State.EXPECT_CERTIFICATE, Certificate): State.EXPECT_SERVER_KEY_EXCHANGE,
        (State.EXPECT_SERVER_KEY_EXCHANGE, ServerKeyExchange): State.EXPECT_SERVER_HELLO_DONE,
    },
}
