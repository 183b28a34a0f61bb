"""Server-side HTTP/1.0 and HTTP/1.1 for one connection: our policy on top of h11.

Theory of operation
-------------------
h11 parses and frames; this class adds what a server facing strangers needs and h11
leaves to its user. It is sans-I/O: the adapter feeds bytes with `receive_data()`, pulls
events with `next_event()`, writes what `send_response()` and `data_to_send()` return,
and sleeps until `get_timer()`; time is passed in, never read.

Our rules over h11's:
- Request smuggling shapes are refused: Transfer-Encoding together with Content-Length
  (RFC 9112 §6.1 lets a server reject it, and h11 would let chunked win), and
  Transfer-Encoding on HTTP/1.0 (RFC 9112 §6.1: a 1.0 recipient cannot frame it).
- Limits on the whole head (bytes and header count) hold however the bytes arrive; h11
  checks its buffer only while the head is incomplete. The bytes are counted on the wire
  (what h11 consumed), not from the parsed fields: whitespace and folded lines, which h11
  strips, take room too. A request line alone over the limit gets 414 (RFC 9112 §3).
- HTTP/x.y with x != 1 gets 505 (RFC 9110 §15.6.6); h11 accepts any digit pair.
- Deadlines: a silent connection is closed, a dribbled head or body gets 408.
- HTTP/1.0 keep-alive, which h11 does not do: when a 1.0 request asks for it, the answer
  says `Connection: keep-alive` and a fresh h11 connection takes over the bytes left.
- A cap on requests per connection, after which we close (and are the active closer).
- Switching protocols (RFC 9110 §15.2.2): `switch_protocols()` writes the 101, and the
  bytes the client sent after its request (`trailing_data`) go to the next protocol.

h11 parses every request; responses are written here, by a few lines of bytes formatting
(`_response_head`). Every framing decision is already ours (Content-Length always, no body
for HEAD, keep-alive or close, HTTP/1.0 keep-alive which h11 cannot express), and h11's
sending side costs about 20 µs a response, the larger part of a keep-alive request on
loopback (see docs/benchmarks.md). So each request cycle gets a fresh h11 connection,
handed whatever bytes of the next (pipelined) request were already read.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Final

import h11

from handshake_lab.errors import LocalProtocolError, RemoteProtocolError
from handshake_lab.http_events import NEED_DATA, BodyReceived, NeedData, PeerClosed

if TYPE_CHECKING:
    from server.config import HTTPLimits

Headers = list[tuple[bytes, bytes]]

SERVER_NAME: Final = b"handshake-lab"
REASONS: Final = {status.value: status.phrase.encode() for status in HTTPStatus}
# RFC 9110 §5.1 field-name = token; §5.5 a field value never holds CR, LF or NUL.
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE: Final = re.compile(rb"[\r\n\x00]")
# RFC 9112 §3.2 Host = uri-host [ ":" port ]; RFC 3986 §3.2.2 uri-host = IP-literal /
# IPv4address / reg-name (unreserved, pct-encoded, sub-delims; an IPv4 address is one too).
_HOST: Final = re.compile(
    rb"(?:\[[0-9A-Za-z:\-._~%!$&'()*+,;=]+\]|[0-9A-Za-z\-._~%!$&'()*+,;=]*)(?::[0-9]*)?"
)
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_valid_fields: set[tuple[bytes, bytes]] = set()  # header fields already checked


class Phase(enum.Enum):
    """Where the connection is in its current request/response cycle."""

    EXPECT_REQUEST = "expect_request"  # no byte of the next request yet
    EXPECT_HEAD = "expect_head"  # some bytes of a head, not all
    EXPECT_BODY = "expect_body"  # head done, body coming
    RESPONDING = "responding"  # request complete, the application answers
    SWITCHED = "switched"  # 101 sent: the connection speaks another protocol now
    CLOSED = "closed"  # response sent with close, or peer gone


@dataclass(slots=True)  # per request: not frozen, a frozen __init__ costs 4x
class RequestReceived:
    method: str
    target: str
    http_version: str
    headers: Headers
    index: int  # 1 for the first request on this connection
    head_bytes: int


@dataclass(frozen=True, slots=True)
class RequestCompleted:
    pass


ServerEvent = RequestReceived | BodyReceived | RequestCompleted | NeedData | PeerClosed


class ServerHTTPConnection:
    """One server-side connection's HTTP state.

    Args:
        limits: the limits and timeouts to apply.
        now: the time of accept, on the same clock as every later `now`.
    """

    def __init__(self, limits: HTTPLimits, now: float) -> None:
        self.limits = limits
        self._h11 = self._new_h11()
        self.phase = Phase.EXPECT_REQUEST
        self._deadline: float | None = now + limits.header_timeout_s
        self.requests = 0
        self.draining = False  # set by shutdown: answer what is in flight, then close
        self.close_reason: str | None = None
        self._request: RequestReceived | None = None
        self._body_bytes = 0
        self._keep_alive_10 = False  # an HTTP/1.0 request asked for keep-alive
        self._client_closes = False  # the request said `Connection: close`
        self._continue_sent = False
        self._method = ""  # of the request being read, known before it is accepted
        self._outgoing = bytearray()
        self._fed = 0  # bytes given to the current h11 connection: the head's size on the wire
        self._peer_eof = False
        self.trailing_data = b""  # after switch_protocols(): the next protocol's first bytes

    def _new_h11(self) -> h11.Connection:
        # h11's own limit bounds memory while a head is incomplete; ours covers the rest.
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)

    # --- receiving -----------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the peer; b"" means the peer sent FIN."""
        if data and self.phase is Phase.EXPECT_REQUEST:
            self.phase = Phase.EXPECT_HEAD
            if self.requests > 0:  # the first request's clock started at accept
                self._deadline = now + self.limits.header_timeout_s
        if data and self._peer_eof:
            raise LocalProtocolError("receive_data() after the peer's FIN")
        self._peer_eof = self._peer_eof or not data
        self._fed += len(data)
        self._h11.receive_data(data)

    def next_event(self, now: float) -> ServerEvent:
        """The next thing the peer said.

        Raises:
            RemoteProtocolError: the request breaks HTTP or one of our limits; its
                `status_hint` is the answer (`error_response()` builds it).
        """
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            kind = {431: "header_too_large", 501: "unsupported_transfer_coding"}.get(
                status, "bad_request"
            )
            if status == 431 and self.phase is Phase.EXPECT_HEAD:
                # Over the limit before the head was complete: is the request line alone?
                buffered = self._h11.trailing_data[0]
                end = buffered.find(b"\n")
                if _line_length(buffered[: len(buffered) if end < 0 else end]) > (
                    self.limits.max_header_bytes
                ):
                    status, kind = 414, "uri_too_long"
            if self._peer_eof and self.phase is not Phase.EXPECT_REQUEST:
                kind = "incomplete_request"  # the client left mid-request; nobody to answer
            raise RemoteProtocolError(str(exc), status_hint=status, kind=kind) from exc
        match event:
            case h11.Request():
                return self._on_request(event, now)
            case h11.Data():
                self._body_bytes += len(event.data)
                if self._body_bytes > self.limits.max_body_bytes:
                    raise RemoteProtocolError(
                        "request body larger than the limit", status_hint=413, kind="body_too_large"
                    )
                return BodyReceived(bytes(event.data))
            case h11.EndOfMessage():
                self.phase = Phase.RESPONDING
                self._deadline = None
                return RequestCompleted()
            case h11.ConnectionClosed():
                return self._on_peer_closed()
            case h11.NEED_DATA:
                if self._h11.they_are_waiting_for_100_continue and not self._continue_sent:
                    # RFC 9110 §10.1.1: the client holds its body until we say so.
                    self._continue_sent = True
                    self._outgoing += CONTINUE
                return NEED_DATA
            case _:  # PAUSED: only if called while a response is owed; the adapter never does
                raise LocalProtocolError(f"next_event() in phase {self.phase.value}: {event!r}")

    def _on_request(self, event: h11.Request, now: float) -> RequestReceived:
        version = event.http_version.decode("ascii")
        method = self._method = event.method.decode("ascii", "replace")
        target = event.target.decode("ascii", "replace")
        # The head's size as it came: of what this h11 connection was fed, it consumed the
        # head and nothing else. (Summing the parsed fields missed the whitespace and folds
        # h11 strips: a 40 KB head of padding arriving in one read passed the 16 KiB limit.)
        head_bytes = self._fed - len(self._h11.trailing_data[0])
        # One pass over the fields: names lowercased, the framing headers.
        # (raw_items() is a list; iterating h11's Headers itself goes through a slow ABC.)
        headers: Headers = []
        content_length: int | None = None
        host = b""
        has_transfer_encoding = False
        connection_tokens: set[bytes] = set()
        for raw_name, value in event.headers.raw_items():
            name = raw_name.lower()
            headers.append((name, value))
            if name == b"content-length":
                content_length = int(value)  # h11 checked it is one decimal number
            elif name == b"transfer-encoding":
                has_transfer_encoding = True
            elif name == b"host":
                host = value  # (h11 refused a second one)
            elif name == b"connection":
                connection_tokens.update(t.strip().lower() for t in value.split(b","))
        # The checks below run in order of what a client most needs to hear, except that
        # the head's size comes first: h11 refuses a head over it before it is complete,
        # so must we when it arrives whole, or the answer would depend on the split.
        if head_bytes > self.limits.max_header_bytes:
            # RFC 9112 §3: a request-target longer than we will parse gets 414. The line is
            # method SP target SP HTTP/x.y (h11 checked), measured here without its line end
            # as in next_event, so that the answer is the same however the bytes arrive.
            if len(event.method) + len(event.target) + 10 > self.limits.max_header_bytes:
                raise RemoteProtocolError(
                    f"request line over the limit of {self.limits.max_header_bytes} bytes",
                    status_hint=414,
                    kind="uri_too_long",
                )
            raise RemoteProtocolError(
                f"request head is {head_bytes} bytes, limit {self.limits.max_header_bytes}",
                status_hint=431,
                kind="header_too_large",
            )
        if not version.startswith("1."):  # RFC 9110 §2.5: only the major version matters
            raise RemoteProtocolError(
                f"HTTP/{version} is not supported", status_hint=505, kind="version_not_supported"
            )
        if len(headers) > self.limits.max_header_count:
            raise RemoteProtocolError(
                f"{len(headers)} header fields, limit {self.limits.max_header_count}",
                status_hint=431,
                kind="header_too_large",
            )
        if not _HOST.fullmatch(host):
            # RFC 9112 §3.2: MUST answer 400 to a Host with an invalid value (h11 checks
            # only that there is one, in HTTP/1.1). The index page shows it back, too.
            raise RemoteProtocolError(f"invalid Host: {host!r}")
        if has_transfer_encoding and content_length is not None:
            # RFC 9112 §6.3 ¶3: a sign of smuggling; reject and close.
            raise RemoteProtocolError(
                "both Transfer-Encoding and Content-Length", kind="conflicting_framing"
            )
        if has_transfer_encoding and version == "1.0":
            raise RemoteProtocolError(
                "Transfer-Encoding in an HTTP/1.0 request", kind="conflicting_framing"
            )
        if content_length is not None and content_length > self.limits.max_body_bytes:
            raise RemoteProtocolError(
                f"Content-Length {content_length} over the limit {self.limits.max_body_bytes}",
                status_hint=413,
                kind="body_too_large",
            )
        self.requests += 1
        self._client_closes = b"close" in connection_tokens
        self._keep_alive_10 = (
            version == "1.0" and b"keep-alive" in connection_tokens and not self._client_closes
        )
        self._continue_sent = False
        self._body_bytes = 0
        self.phase = Phase.EXPECT_BODY
        self._deadline = now + self.limits.body_timeout_s
        self._request = RequestReceived(method, target, version, headers, self.requests, head_bytes)
        return self._request

    def _on_peer_closed(self) -> PeerClosed:
        # (A FIN inside a request never gets here: h11 raises for it, see next_event.)
        self.phase = Phase.CLOSED
        self._deadline = None
        self.close_reason = self.close_reason or "peer_closed"
        return PeerClosed()

    # --- timers --------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When the adapter must call `handle_timeout()`, if nothing arrives before."""
        return self._deadline

    def handle_timeout(self, now: float) -> str:
        """The deadline passed. Returns the reason to close quietly (nothing was asked).

        Raises:
            RemoteProtocolError: 408, the head or body was too slow (slowloris).
        """
        if self._deadline is None or now < self._deadline:
            raise LocalProtocolError("handle_timeout() before the deadline")
        self._deadline = None
        if self.phase is Phase.EXPECT_REQUEST:
            self.phase = Phase.CLOSED
            if self.draining:
                self.close_reason = "shutdown"
            else:
                self.close_reason = "keep_alive_timeout" if self.requests else "idle_timeout"
            return self.close_reason
        part = "head" if self.phase is Phase.EXPECT_HEAD else "body"
        raise RemoteProtocolError(
            f"request {part} not complete in time", status_hint=408, kind="timeout"
        )

    # --- sending -------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes the core decided to send on its own (100 Continue)."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    @property
    def current_request(self) -> RequestReceived | None:
        """The request being received or answered, if any."""
        return self._request

    def begin_drain(self, now: float) -> None:
        """Shutdown: answer the request in progress with `Connection: close`; an idle
        connection's timer fires at once (`handle_timeout()` then says "shutdown")."""
        self.draining = True
        if self.phase is Phase.EXPECT_REQUEST:
            self._deadline = now

    def send_response(
        self,
        now: float,
        status: int,
        headers: Headers,
        body: bytes,
        *,
        close_reason: str | None = None,
    ) -> bytes:
        """The whole response to the current request, as bytes to write.

        Adds Server, Content-Length and the Connection header our policy calls for (the
        adapter adds Date: the core reads no clock), leaves the body out for HEAD, and
        prepares the connection for the next request. `close_reason`, when given, closes
        the connection after this response whatever the policy would say.

        Raises:
            LocalProtocolError: no request to answer, a status this writer does not
                frame (1xx, 204, 304), or a header that is not a valid field.
        """
        if self.phase is not Phase.RESPONDING or self._request is None:
            raise LocalProtocolError(f"no request to answer in phase {self.phase.value}")
        if status < 200 or status in (204, 304) or status > 999:
            raise LocalProtocolError(f"status {status} is not one this server sends")
        request = self._request
        keep_alive = self._keep_alive()
        if keep_alive and close_reason is not None:
            keep_alive, self.close_reason = False, close_reason
        connection: bytes | None
        if not keep_alive:
            connection = b"close"
        else:
            remaining = self.limits.max_requests_per_connection - self.requests
            connection = b"keep-alive" if self._keep_alive_10 else None
            headers = [
                *headers,
                (
                    b"keep-alive",
                    b"timeout=%d, max=%d" % (self.limits.keep_alive_timeout_s, remaining),
                ),
            ]
        head = _response_head(status, headers, len(body), connection)
        self._next_cycle(keep_alive, now)
        return head if request.method == "HEAD" else head + body

    def switch_protocols(self, headers: Headers) -> bytes:
        """The `101 Switching Protocols` answer to the current request; HTTP ends here.

        Returns:
            The response head to write. What the client sent after its request is in
            `trailing_data`, for the next protocol to read first.

        Raises:
            LocalProtocolError: no complete request to answer.
        """
        if self.phase is not Phase.RESPONDING or self._request is None:
            raise LocalProtocolError(f"no request to answer in phase {self.phase.value}")
        self.trailing_data = self._h11.trailing_data[0]
        self._request = None
        self.phase = Phase.SWITCHED
        self._deadline = None
        self.close_reason = "switched_protocols"
        return _response_head(101, headers, None, None)

    def _keep_alive(self) -> bool:
        """May this connection carry another request? Sets `close_reason` when not."""
        assert self._request is not None
        if self.draining:
            self.close_reason = "shutdown"
        elif self._client_closes:
            self.close_reason = "client_asked_close"
        elif self._request.http_version == "1.0" and not self._keep_alive_10:
            self.close_reason = "http_1.0"  # RFC 9112 §9.3: 1.0 persists only when asked
        elif self.requests >= self.limits.max_requests_per_connection:
            self.close_reason = "max_requests"
        else:
            return True
        return False

    def _next_cycle(self, keep_alive: bool, now: float) -> None:
        self._request = None
        self._method = ""
        if not keep_alive:
            self.phase = Phase.CLOSED
            self._deadline = None
            return
        # A fresh h11 connection for the next request, given what was read of it already.
        leftover = self._h11.trailing_data[0]
        self._h11 = self._new_h11()
        self._fed = len(leftover)
        if leftover:  # (b"" would mean EOF to h11)
            self._h11.receive_data(leftover)
        if self._peer_eof:
            self._h11.receive_data(b"")
        self.phase = Phase.EXPECT_HEAD if leftover else Phase.EXPECT_REQUEST
        timeout = self.limits.header_timeout_s if leftover else self.limits.keep_alive_timeout_s
        self._deadline = now + timeout

    def error_response(self, error: RemoteProtocolError) -> bytes:
        """A complete answer to a refused request, always with `Connection: close`.

        It must go out whatever state the request reached, even a request line that
        never parsed.
        """
        method = self._method  # set before our checks, so a refused HEAD gets no body either
        self._request = None
        self.phase = Phase.CLOSED
        self._deadline = None
        self.close_reason = error.kind
        status = error.status_hint
        body = f"{status} {REASONS.get(status, b'Error').decode()}: {error}\n".encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        if status == HTTPStatus.SERVICE_UNAVAILABLE:  # (over --max-connections: come back)
            headers.append((b"retry-after", b"1"))
        head = _response_head(status, headers, len(body), b"close")
        return head if method == "HEAD" else head + body


def _line_length(line: bytes) -> int:
    """A line's length without its end (CRLF, or LF alone: RFC 9112 §2.2)."""
    return len(line) - line.endswith(b"\r")


def _response_head(
    status: int, headers: Headers, content_length: int | None, connection: bytes | None
) -> bytes:
    """RFC 9112 §4 status-line, then §5 field lines, then the empty line."""
    lines = [b"HTTP/1.1 %d %s\r\nserver: %s\r\n" % (status, REASONS.get(status, b""), SERVER_NAME)]
    for field in headers:
        if field not in _valid_fields:  # most fields repeat response after response
            name, value = field
            if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
                raise LocalProtocolError(f"not a valid header field: {name!r}: {value!r}")
            if len(_valid_fields) > 1024:
                _valid_fields.clear()
            _valid_fields.add(field)
        lines.append(b"%s: %s\r\n" % field)
    if content_length is not None:  # (None: a 101, which has no body, RFC 9110 §15.2)
        lines.append(b"content-length: %d\r\n" % content_length)
    if connection is not None:
        lines.append(b"connection: %s\r\n" % connection)
    lines.append(b"\r\n")
    return b"".join(lines)
