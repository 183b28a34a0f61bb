"""Client-side HTTP/1.0 and HTTP/1.1 for one connection: our policy on top of h11.

Theory of operation
-------------------
Sans-I/O, like the server's core: `send_request()` returns the bytes of a whole request,
`receive_data()` takes what was read, `next_event()` says what the server answered.
After a response, `reusable` says whether the connection may carry another request
(HTTP/1.1 keep-alive) and `start_next_cycle()` makes it ready. A `101 Switching
Protocols` answer to a request with `Upgrade` ends HTTP on the connection: `switched`
turns true and `trailing_data` holds what the server sent after the 101 (WebSocket frames).

h11 writes only HTTP/1.1 request lines. For the HTTP/1.0 lesson we rewrite the version in
the line we send (RFC 9112 §3: `method SP target SP HTTP-version`); h11 still frames the
rest, and the server's answer tells it the connection must close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import h11

from handshake_lab.errors import LocalProtocolError, RemoteProtocolError
from handshake_lab.http_events import NEED_DATA, BodyReceived, NeedData, PeerClosed

Headers = list[tuple[bytes, bytes]]
HTTP_VERSIONS: Final = ("1.0", "1.1")


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    status: int
    reason: str
    http_version: str
    headers: Headers


@dataclass(frozen=True, slots=True)
class ResponseCompleted:
    pass


ClientEvent = ResponseReceived | BodyReceived | ResponseCompleted | NeedData | PeerClosed


class ClientHTTPConnection:
    """One client-side connection's HTTP state.

    Args:
        http_version: "1.1" (keep-alive) or "1.0" (one request, then the server closes).
    """

    def __init__(self, http_version: str = "1.1") -> None:
        if http_version not in HTTP_VERSIONS:
            raise LocalProtocolError(f"HTTP/{http_version} is not spoken here (1.0 or 1.1)")
        self.http_version = http_version
        self._h11 = h11.Connection(h11.CLIENT)
        self.requests = 0
        self.response_started = False  # some byte of the answer has arrived
        self._peer_eof = False

    def send_request(self, method: str, target: str, headers: Headers, body: bytes = b"") -> bytes:
        """The whole request as bytes. Sets Content-Length when there is a body.

        Raises:
            LocalProtocolError: the connection cannot carry a request now.
        """
        if self._h11.our_state is not h11.IDLE:
            raise LocalProtocolError(f"connection not ready for a request ({self._h11.our_state})")
        names = {name.lower() for name, _ in headers}
        all_headers = list(headers)
        if (body or method in ("POST", "PUT", "PATCH")) and b"content-length" not in names:
            all_headers.append((b"content-length", b"%d" % len(body)))
        try:
            head = self._h11.send(h11.Request(method=method, target=target, headers=all_headers))
            if body:
                head += self._h11.send(h11.Data(data=body))
            head += self._h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from exc
        self.requests += 1
        self.response_started = False
        if self.http_version == "1.0":
            line_end = head.index(b"\r\n")
            head = head[:line_end].replace(b" HTTP/1.1", b" HTTP/1.0") + head[line_end:]
        return head

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the server; b"" means it sent FIN."""
        if data and self._peer_eof:
            raise LocalProtocolError("receive_data() after the server's FIN")
        self._peer_eof = not data
        self.response_started = self.response_started or bool(data)
        self._h11.receive_data(data)

    def next_event(self) -> ClientEvent:
        """The next thing the server said.

        Raises:
            RemoteProtocolError: the response is not valid HTTP/1.x.
        """
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            if self._peer_eof and not self.response_started:
                # h11 calls a FIN before any answer an error; for us it is the stale
                # keep-alive case, which the pool may retry.
                return PeerClosed()
            raise RemoteProtocolError(str(exc), kind="bad_response") from exc
        match event:
            case h11.Response():
                return ResponseReceived(
                    event.status_code,
                    event.reason.decode("latin-1"),
                    event.http_version.decode("ascii"),
                    list(event.headers),
                )
            case h11.InformationalResponse() if event.status_code == 101:
                # h11 switches only when our request proposed it (RFC 9110 §7.8).
                return ResponseReceived(
                    101,
                    event.reason.decode("latin-1"),
                    event.http_version.decode("ascii"),
                    list(event.headers),
                )
            case h11.InformationalResponse():
                return self.next_event()  # 100 Continue and friends: not the answer
            case h11.Data():
                return BodyReceived(bytes(event.data))
            case h11.EndOfMessage():
                return ResponseCompleted()
            case h11.ConnectionClosed():
                return PeerClosed()
            case _:  # NEED_DATA, or PAUSED which a client never reaches between requests
                return NEED_DATA

    @property
    def switched(self) -> bool:
        """The server answered 101: the connection speaks the upgraded protocol now."""
        return self._h11.their_state is h11.SWITCHED_PROTOCOL

    @property
    def trailing_data(self) -> bytes:
        """After a 101: the bytes that followed it, for the next protocol to read first."""
        return bytes(self._h11.trailing_data[0])

    @property
    def reusable(self) -> bool:
        """After a complete response: may this connection carry another request?"""
        return (
            self.http_version == "1.1"
            and self._h11.our_state is h11.DONE
            and self._h11.their_state is h11.DONE
        )

    @property
    def server_will_close(self) -> bool:
        """The response said the connection ends here (HTTP/1.0, `Connection: close`)."""
        return self._h11.their_state in (h11.MUST_CLOSE, h11.CLOSED)

    def start_next_cycle(self) -> None:
        try:
            self._h11.start_next_cycle()
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from exc
