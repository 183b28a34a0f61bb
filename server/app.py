"""The routes: pure functions from a request to a response, no I/O.

`/delay` does not sleep here: it returns a response with `delay_s`, and the adapter waits.
A WebSocket path answers with an `Upgrade` (or `UpgradeRefused`) instead of a response;
the adapter switches protocols and runs its handler. Every number a client can choose is
bounded, and no route reads a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs, urlsplit

from server.websocket import Upgrade, UpgradeRefused, WebSocketRoutes
from server.ws_demo import WS_DEMO_PAGE

if TYPE_CHECKING:
    from collections.abc import Callable

    from server.config import ServerConfig

Headers = list[tuple[bytes, bytes]]
TEXT: Final = b"text/plain; charset=utf-8"
HTML: Final = b"text/html; charset=utf-8"

INDEX_TEXT: Final = """\
handshake-lab: watch connections happen.

Try, and watch the server's event log as you do:
  curl --http1.0 http://{host}/            one request, one TCP connection (server closes)
  curl http://{host}/ http://{host}/health two requests, ONE connection (keep-alive)
  curl -d 'hello' http://{host}/echo       POST body echoed back
  curl http://{host}/delay?ms=200          a slow answer (at most {max_delay_ms} ms)
  curl -o /dev/null http://{host}/bytes?n=100000   N bytes (at most {max_bytes})
  handshake-lab client ws ws://{host}/ws/echo            WebSocket: type lines, get them back
  handshake-lab client ws --receive 5 ws://{host}/ws/ticker  the server pushes, unasked
  open http://{host}/ws-demo in a browser                 both, from the browser
  handshake-lab client get --count 3 http://{host}/          3 requests, 1 handshake
  handshake-lab client get --count 3 --http1.0 http://{host}/ 3 requests, 3 handshakes
Metrics are on their own port (see --metrics-port), not here.
"""


@dataclass(slots=True)  # per request: not frozen, a frozen __init__ costs 4x
class Request:
    method: str
    target: str
    http_version: str
    headers: Headers
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (`name` lowercase), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: Headers | None = None
    delay_s: float = 0.0  # the adapter waits this long before answering


class App:
    """The lab's HTTP routes."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._index_pages: dict[bytes, Response] = {}
        self._routes: dict[
            str, tuple[frozenset[str], Callable[[Request, dict[str, list[str]]], Response]]
        ] = {
            "/": (frozenset({"GET", "HEAD"}), self._index),
            "/health": (frozenset({"GET", "HEAD"}), lambda _r, _q: _text(200, b"ok\n")),
            "/echo": (frozenset({"POST", "PUT"}), self._echo),
            "/delay": (frozenset({"GET", "HEAD"}), self._delay),
            "/bytes": (frozenset({"GET", "HEAD"}), self._bytes),
            "/ws-demo": (
                frozenset({"GET", "HEAD"}),
                lambda _r, _q: Response(200, WS_DEMO_PAGE, [(b"content-type", HTML)]),
            ),
        }
        self.websocket = WebSocketRoutes(config)

    def handle(self, request: Request) -> Response | Upgrade | UpgradeRefused:
        try:
            parts = urlsplit(request.target)
        except ValueError:  # e.g. "//[": h11 accepts it, urlsplit does not
            return _text(400, b"cannot parse the request target\n")
        if self.websocket.handles(parts.path):
            return self.websocket.upgrade(request, parts.path, parse_qs(parts.query))
        route = self._routes.get(parts.path)
        if route is None:
            return _text(404, b"not found; GET / lists what there is\n")
        methods, handler = route
        if request.method not in methods:
            allow = ", ".join(sorted(methods)).encode()
            return Response(
                405, b"method not allowed\n", [(b"content-type", TEXT), (b"allow", allow)]
            )
        return handler(request, parse_qs(parts.query))

    def _index(self, request: Request, _query: dict[str, list[str]]) -> Response:
        host = request.header(b"host") or b"127.0.0.1:8080"
        page = self._index_pages.get(host)
        if page is None:  # formatted once per Host value (and at most 64 of those)
            text = INDEX_TEXT.format(
                host=host.decode("ascii", "replace"),
                max_delay_ms=self.config.max_delay_ms,
                max_bytes=self.config.max_bytes,
            )
            page = _text(200, text.encode())
            if len(self._index_pages) < 64:
                self._index_pages[host] = page
        return page

    def _echo(self, request: Request, _query: dict[str, list[str]]) -> Response:
        content_type = request.header(b"content-type") or b"application/octet-stream"
        return Response(200, request.body, [(b"content-type", content_type)])

    def _delay(self, _request: Request, query: dict[str, list[str]]) -> Response:
        ms = _bounded_int(query, "ms", self.config.max_delay_ms)
        if isinstance(ms, Response):
            return ms
        return Response(200, f"slept {ms} ms\n".encode(), [(b"content-type", TEXT)], ms / 1000)

    def _bytes(self, _request: Request, query: dict[str, list[str]]) -> Response:
        n = _bounded_int(query, "n", self.config.max_bytes)
        if isinstance(n, Response):
            return n
        pattern = b"abcdefghijklmnopqrstuvwxyz0123456789\n"
        body = (pattern * (n // len(pattern) + 1))[:n]
        return Response(200, body, [(b"content-type", b"application/octet-stream")])


def _text(status: int, body: bytes) -> Response:
    return Response(status, body, [(b"content-type", TEXT)])


def _bounded_int(query: dict[str, list[str]], name: str, maximum: int) -> int | Response:
    values = query.get(name)
    if not values:
        return _text(400, f"missing ?{name}=N (0 to {maximum})\n".encode())
    try:
        value = int(values[0])
    except ValueError:
        return _text(400, f"?{name} must be a whole number\n".encode())
    if not 0 <= value <= maximum:
        return _text(400, f"?{name} must be between 0 and {maximum}\n".encode())
    return value
