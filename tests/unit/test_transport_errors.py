"""OS and asyncio failures become one TransportError with a bounded kind."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from handshake_lab.transport import TransportError, as_transport_error, map_transport_errors


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionResetError(errno.ECONNRESET, "reset"), "reset"),
        (BrokenPipeError(errno.EPIPE, "pipe"), "broken_pipe"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "refused"),
        (TimeoutError(), "timeout"),
        (socket.gaierror(socket.EAI_NONAME, "unknown name"), "name_lookup"),
        (asyncio.IncompleteReadError(b"ab", 5), "eof"),
        (OSError(errno.EMFILE, "too many open files"), "os_error"),
    ],
)
def test_kinds(exc: OSError | asyncio.IncompleteReadError, kind: str) -> None:
    assert as_transport_error(exc).kind == kind
    with pytest.raises(TransportError) as caught, map_transport_errors():
        raise exc
    assert caught.value.kind == kind
    assert caught.value.__cause__ is exc
