"""The response body the comparison servers send: the same bytes our `/` route answers.

Computed once, at import, through our own `App`, so that the bare h11 server and the
uvicorn app send a body of the size ours does (the host in it is a 5-digit port, as the
benchmark's ports are).
"""

from __future__ import annotations

from typing import Final

from server.app import App, Request, Response
from server.config import ServerConfig

CONTENT_TYPE: Final = b"text/plain; charset=utf-8"


def index_body(host: str = "127.0.0.1:50000") -> bytes:
    """What GET / on our server answers, for that Host header."""
    request = Request("GET", "/", "1.1", [(b"host", host.encode())], b"")
    response = App(ServerConfig()).handle(request)
    assert isinstance(response, Response)
    return response.body


BODY: Final = index_body()
