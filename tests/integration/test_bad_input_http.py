"""Bad HTTP input against a real server on 127.0.0.1, over raw sockets.

Each case is sent as raw bytes (our client would refuse to send them) and checked four ways:
- the answer: the status RFC 9110/9112 ask for, and exactly as many responses as the
  server should write, so that a request hidden behind a refused one is never answered;
- the close: after a refusal the server closes by itself, with FIN (our recv returns b"";
  a RST would raise ConnectionResetError instead);
- the server goes on: a plain GET on a new connection gets 200 afterwards;
- nothing is lost: connections opened == closed in the metrics and the events, each
  refusal is one `http.request.rejected` event with its kind and one count in
  `handshake_lab_errors_total{kind}`, and nothing else failed.

tests/integration/test_server.py already has a short table (malformed, 431, 413,
TE+CL, 505, h2 preface, TLS bytes) checking the status and the next GET; the rows here go
further, and every row is also checked for the FIN and the books. tests/unit/
test_fuzz_http.py fuzzes the core without sockets; the live fuzz at the end sends a few
hundred of its inputs here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Final

import pytest

from telemetry.events import Name, Role
from tests.helpers import sample, wait_until
from tests.unit.test_fuzz_http import LIMITS as FUZZ_LIMITS
from tests.unit.test_fuzz_http import RandomChoices, fuzz_input, read_responses

if TYPE_CHECKING:
    from collections.abc import Sequence

    from _pytest.mark.structures import ParameterSet

    from tests.conftest import RunningServer

pytestmark = pytest.mark.integration

# --- talking to the server ----------------------------------------------------------------


async def connect(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def read_until_fin(sock: socket.socket, timeout_s: float = 5.0) -> bytes:
    """Everything until the server's FIN. A RST fails the test, naming what came before."""
    loop = asyncio.get_running_loop()
    received = bytearray()
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                chunk = await loop.sock_recv(sock, 65536)
            except ConnectionResetError:
                raise AssertionError(f"RST, not FIN, after {bytes(received[:200])!r}") from None
            if not chunk:  # the FIN
                return bytes(received)
            received += chunk


async def exchange(
    port: int, data: bytes, *, half_close: bool = False, timeout_s: float = 5.0
) -> bytes:
    """Send `data`, optionally our FIN after it, and return all the server wrote until its
    FIN (which must come by itself when we do not half-close)."""
    sock = await connect(port)
    try:
        await asyncio.get_running_loop().sock_sendall(sock, data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return await read_until_fin(sock, timeout_s)
    finally:
        sock.close()


async def assert_serves(port: int) -> None:
    """The server goes on: a plain GET on a new connection gets its 200."""
    raw = await exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    (reply,) = read_responses(raw)
    assert (reply.status, reply.body) == (200, b"ok\n")


def check_books(
    running: RunningServer, connections: int, rejected: Sequence[tuple[int, str]]
) -> None:
    """Metrics and events agree, nothing lost: `connections` opened and as many closed,
    the refusals `rejected` (status, kind) and no other failure."""
    observed = running.observed
    registry = observed.metrics.registry
    timeline = observed.timeline
    closed = timeline.named(Name.CONNECTION_CLOSED, Role.SERVER)
    assert timeline.count(Name.CONNECTION_ACCEPTED, Role.SERVER) == connections
    assert len(closed) == connections
    assert sample(registry, "handshake_lab_connections_opened_total", role="server") == connections
    assert sample(registry, "handshake_lab_connections_closed_total", role="server") == connections
    assert sample(registry, "handshake_lab_connections_active", role="server") == 0
    rejections = timeline.named(Name.REQUEST_REJECTED, Role.SERVER)
    assert [(e.attrs["status"], e.attrs["kind"]) for e in rejections] == list(rejected)
    for kind, times in Counter(kind for _status, kind in rejected).items():
        assert sample(registry, "handshake_lab_errors_total", role="server", kind=kind) == times
    # Nothing else went wrong: no reset, no timeout, no internal error.
    assert sample(registry, "handshake_lab_errors_total", role="server") == len(rejected)
    assert timeline.named(Name.CONNECTION_FAILED, Role.SERVER) == []
    # Each refused connection was closed for the reason of its refusal.
    reasons = {e.conn_id: e.attrs["reason"] for e in closed}
    assert [reasons[e.conn_id] for e in rejections] == [kind for _status, kind in rejected]


async def settled(running: RunningServer, timeout_s: float = 3.0) -> None:
    await wait_until(
        lambda: running.server.open_connections == 0, "every connection closed", timeout_s
    )


def targets_received(running: RunningServer) -> list[str]:
    events = running.observed.timeline.named(Name.REQUEST_RECEIVED, Role.SERVER)
    return [e.attrs["target"] for e in events]


# --- the table: refused ---------------------------------------------------------------

GET: Final = b"GET / HTTP/1.1\r\nHost: x\r\n"
POST: Final = b"POST /echo HTTP/1.1\r\nHost: x\r\n"
CHUNKED: Final = POST + b"Transfer-Encoding: chunked\r\n"
# Behind each framing case: a request that would be answered 200 if the server's idea of
# where the first request ends were wrong (request smuggling). It must never be.
SMUGGLED: Final = b"GET /bytes?n=13 HTTP/1.1\r\nHost: x\r\n\r\n"
SMUGGLED_TARGET: Final = "/bytes?n=13"
SMUGGLED_ANSWER: Final = b"abcdefghijklm"
N: Final = len(SMUGGLED)
MIB: Final = 1024 * 1024


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def tls_client_hello() -> bytes:
    """A real TLS ClientHello, as Python's ssl writes it (no network involved)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# RFC 9113 §3.4: the client connection preface, then a SETTINGS frame (prior knowledge).
H2_PRIOR_KNOWLEDGE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex(
    "000006 04 00 00000000 0003 00000064".replace(" ", "")
)


def refused(raw: bytes, status: int, kind: str, case: str) -> ParameterSet:
    return pytest.param(raw, status, kind, id=case)


def framing(fields: bytes, body: bytes, status: int, kind: str, case: str) -> ParameterSet:
    """A POST with these framing fields and body, then SMUGGLED: refused, SMUGGLED unread."""
    return refused(POST + fields + b"\r\n\r\n" + body + SMUGGLED, status, kind, case)


def bad_chunks(body: bytes, status: int, case: str, kind: str = "bad_request") -> ParameterSet:
    return refused(CHUNKED + b"\r\n" + body + SMUGGLED, status, kind, case)


TE: Final = b"Transfer-Encoding: "
CL5: Final = b"Content-Length: 5\r\n"
BAD, FRAMING, BIG = "bad_request", "conflicting_framing", "header_too_large"
CODING = "unsupported_transfer_coding"
LAST: Final = b"0\r\n\r\n"

REFUSED = [
    # --- request line: RFC 9112 §3 request-line = method SP request-target SP HTTP-version
    # §2.3: HTTP-name is case-sensitive, HTTP-version is DIGIT "." DIGIT
    refused(b"GET / http/1.1\r\nHost: x\r\n\r\n", 400, BAD, "version-lowercase"),
    refused(b"GET / HTTP/1.10\r\nHost: x\r\n\r\n", 400, BAD, "two-digit-minor"),
    # §3: single SP between the parts; §3.2: no whitespace in the target; §3.1 method = token
    refused(b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, BAD, "two-spaces"),
    refused(b"GET\t/\tHTTP/1.1\r\nHost: x\r\n\r\n", 400, BAD, "tabs"),
    refused(b"GET HTTP/1.1\r\nHost: x\r\n\r\n", 400, BAD, "no-target"),
    refused(b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400, BAD, "space-in-target"),
    refused(b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400, BAD, "8-bit-target"),
    refused(b"G(ET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, BAD, "method-not-a-token"),
    # RFC 9110 §15.6.6: 505 for a major version we do not speak
    refused(b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505, "version_not_supported", "http-3.0"),
    # §2.2: a bare CR is not a line end. An empty line before the request line SHOULD be
    # ignored; h11 refuses it (a deviation, see docs/reliability.md).
    refused(b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400, BAD, "bare-cr-line-end"),
    refused(b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, BAD, "empty-line-first"),
    refused(bytes(range(32)) * 4, 400, BAD, "binary"),
    # §3: a request-target longer than the server will parse gets 414, whole or unfinished
    refused(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long",
            "long-target"),
    refused(b"GET /" + b"a" * 40_000, 414, "uri_too_long", "long-target-unfinished"),
    # --- fields: RFC 9112 §5 field-line = field-name ":" OWS field-value OWS; RFC 9110
    # §5.5: NUL, CR and LF are never allowed in a value, §5.1: a name is a token
    refused(GET + b"X: a\x00b\r\n\r\n", 400, BAD, "nul-in-value"),
    refused(GET + b"X\x00Y: a\r\n\r\n", 400, BAD, "nul-in-name"),
    refused(GET + b"X: a\rb\r\n\r\n", 400, BAD, "bare-cr-in-value"),
    refused(GET + b"X\rY: a\r\n\r\n", 400, BAD, "bare-cr-in-name"),
    refused(GET + b"X\x7fY: a\r\n\r\n", 400, BAD, "del-in-name"),
    refused(GET + b"X : a\r\n\r\n", 400, BAD, "space-before-colon"),  # §5.1: MUST 400
    refused(GET + b": a\r\n\r\n", 400, BAD, "empty-name"),
    refused(GET + b"NoColon\r\n\r\n", 400, BAD, "no-colon"),
    # §2.2: whitespace between the start line and the first field: reject (or ignore)
    refused(b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400, BAD, "fold-before-first-field"),
    # §3.2: MUST 400 for no Host in HTTP/1.1, and for two
    refused(GET + b"Host: y\r\n\r\n", 400, BAD, "two-hosts"),
    refused(b"GET / HTTP/1.1\r\n\r\n", 400, BAD, "no-host"),
    # §3.2: MUST 400 for a Host with an invalid value too (RFC 3986 §3.2.2 uri-host) (fixed)
    refused(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, BAD, "host-with-a-space"),
    refused(b"GET / HTTP/1.1\r\nHost: x/y@evil:80\r\n\r\n", 400, BAD, "host-not-a-host"),
    # RFC 6585 §5: 431 over --max-header-bytes (16 KiB) or --max-header-count (100)
    refused(GET + b"X: " + b"a" * MIB + b"\r\n\r\n", 431, BIG, "1-mib-field"),
    refused(GET + b"X-Many: 0123456789abcdef\r\n" * (MIB // 26) + b"\r\n", 431, BIG,
            "1-mib-of-fields"),
    refused(GET + b"a:\r\n" * 3000 + b"\r\n", 431, BIG, "3000-fields-in-12-kb"),
    # Counted on the wire: padding h11 strips from values takes room too (it passed, fixed)
    refused(GET + b"X:" + b" " * 40_000 + b"a\r\n\r\n", 431, BIG, "40-kb-of-whitespace"),
    refused(GET + b"X: a" + b"\r\n \t" * 8000 + b"\r\n\r\n", 431, BIG, "32-kb-of-folds"),
    # --- framing, each followed by SMUGGLED. RFC 9112 §6.3 ¶3: Transfer-Encoding with
    # Content-Length is a smuggling shape; we refuse it, however TE is spelled.
    framing(b"Transfer-Encoding: chunked\r\n" + CL5[:-2], LAST, 400, FRAMING, "te-then-cl"),
    framing(TE + b"Chunked\r\n" + CL5[:-2], LAST, 400, FRAMING, "te-capitalised-and-cl"),
    framing(CL5 + b"Transfer-Encoding:\r\n chunked", LAST, 400, FRAMING, "te-folded-and-cl"),
    # ... and a TE line that is not a field line at all is refused before that (§5.1)
    framing(CL5 + b"Transfer-Encoding : chunked", LAST, 400, BAD, "te-space-before-colon"),
    framing(CL5 + b"Transfer-Encoding:\x0bchunked", LAST, 400, BAD, "te-vertical-tab"),
    # §6.3: chunked not last MUST get 400; h11 answers every coding list other than
    # "chunked" with 501 (§6.1, a coding it does not know). Refused and closed all the same.
    framing(TE + b"chunked, identity", LAST, 501, CODING, "te-chunked-identity"),
    framing(TE + b"identity, chunked", LAST, 501, CODING, "te-identity-chunked"),
    framing(TE + b"chunked, chunked", LAST, 501, CODING, "te-chunked-twice"),  # §7: once
    framing(TE + b"chunked\r\n" + TE + b"chunked", LAST, 501, CODING, "te-two-fields"),
    framing(TE + b"xchunked", LAST, 501, CODING, "te-xchunked"),
    framing(TE[:-1], LAST, 501, CODING, "te-empty"),
    # §6.1: HTTP/1.0 has no Transfer-Encoding
    refused(b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
            400, FRAMING, "te-on-http-1.0"),
    refused(b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n" + CL5 + b"\r\n" + LAST
            + SMUGGLED, 400, FRAMING, "te-and-cl-on-http-1.0"),
    # RFC 9110 §8.6 Content-Length = 1*DIGIT; RFC 9112 §6.3 ¶5: invalid, so 400 and close
    framing(b"Content-Length: 3\r\nContent-Length: 40", b"abc", 400, BAD, "cl-two-values"),
    framing(b"Content-Length: 3, 40", b"abc", 400, BAD, "cl-list-two-values"),
    framing(b"Content-Length: 3\r\nContent-Length: 03", b"abc", 400, BAD, "cl-3-and-03"),
    framing(b"Content-Length: +3", b"abc", 400, BAD, "cl-plus"),
    framing(b"Content-Length: -3", b"abc", 400, BAD, "cl-minus"),
    framing(b"Content-Length: 3 3", b"abc", 400, BAD, "cl-space-inside"),
    framing(b"Content-Length: 0x3", b"abc", 400, BAD, "cl-hex"),
    framing(b"Content-Length: 3,", b"abc", 400, BAD, "cl-trailing-comma"),
    framing(b"Content-Length:", b"abc", 400, BAD, "cl-empty"),
    framing(b"Content-Length: 3\r\n 4", b"abc", 400, BAD, "cl-folded"),
    framing(b"Content-Length: " + b"9" * 25, b"", 400, BAD, "cl-25-digits"),
    # --- chunks: RFC 9112 §7.1 chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF,
    # chunk-size = 1*HEXDIG
    bad_chunks(b"zz\r\n", 400, "chunk-size-not-hex"),
    bad_chunks(b"-1\r\na\r\n" + LAST, 400, "chunk-size-negative"),
    bad_chunks(b"0x3\r\nabc\r\n" + LAST, 400, "chunk-size-0x"),
    bad_chunks(b"f" * 21 + b"\r\nabc\r\n" + LAST, 400, "chunk-size-21-digits"),
    bad_chunks(b" 3\r\nabc\r\n" + LAST, 400, "chunk-size-leading-space"),
    bad_chunks(b"\r\nabc\r\n" + LAST, 400, "chunk-size-empty"),
    bad_chunks(b"3\r\nabcX\r\n" + LAST, 400, "chunk-data-too-long"),
    bad_chunks(b"3\r\nabc\n" + LAST, 400, "chunk-data-lf-only"),
    # A size of 2^63-1 is valid syntax; the body limit (1 MiB) stops it as the bytes come.
    refused(CHUNKED + b"\r\n7fffffffffffffff\r\n" + b"a" * (MIB + 1), 413, "body_too_large",
            "chunk-size-huge"),
    # §7.1.1: a server ought to limit chunk extensions (h11: 16 KiB while incomplete).
    bad_chunks(b"3;" + b"e" * 100_000 + b"\r\nabc\r\n" + LAST, 431, "chunk-ext-100-kb", BIG),
    # --- other protocols on the plain port. RFC 9113 §3.4 (the preface, then SETTINGS),
    # answered as HTTP/2.0 by RFC 9110 §15.6.6; TLS's first byte 0x16 is no request line.
    refused(H2_PRIOR_KNOWLEDGE, 505, "version_not_supported", "h2-preface-and-settings"),
    refused(tls_client_hello(), 400, BAD, "tls-client-hello"),
]  # fmt: skip


@pytest.mark.parametrize("half_close", [False, True], ids=["open", "then-fin"])
@pytest.mark.parametrize(("raw", "status", "kind"), REFUSED)
async def test_refused_with_its_status_then_fin_and_the_server_goes_on(
    loopback_server: RunningServer, raw: bytes, status: int, kind: str, half_close: bool
) -> None:
    answer = await exchange(loopback_server.port, raw, half_close=half_close)
    (reply,) = read_responses(answer)  # one answer: nothing after the refusal
    assert reply.status == status
    assert reply.header(b"connection") == b"close"
    assert SMUGGLED_TARGET not in targets_received(loopback_server)
    await assert_serves(loopback_server.port)
    await settled(loopback_server)
    check_books(loopback_server, connections=2, rejected=[(status, kind)])
    if not half_close:  # (with our FIN sent first, who closed first is a race)
        refused = loopback_server.observed.timeline.named(Name.CONNECTION_CLOSED, Role.SERVER)[0]
        assert refused.attrs["closed_by"] == "server"


# --- the table: served, as the RFCs allow, and nothing smuggled -----------------------


@dataclass(frozen=True)
class Expect:
    status: int
    body: bytes | None = None  # None: not checked (the index page)
    headers: tuple[tuple[bytes, bytes], ...] = ()


def served(raw: bytes, expected: list[Expect], targets: list[str], case: str) -> ParameterSet:
    return pytest.param(raw, expected, targets, id=case)


def echoed(fields: bytes, body: bytes, echo: bytes, case: str) -> ParameterSet:
    """A POST /echo with these framing fields and body, answered with `echo` as its body."""
    return served(POST + fields + b"\r\n\r\n" + body, [Expect(200, echo)], ["/echo"], case)


def health(fields: bytes, case: str, line: bytes = b"GET /health HTTP/1.1") -> ParameterSet:
    raw = line + b"\r\nHost: x\r\n" + fields + b"\r\n"
    return served(raw, [Expect(200, b"ok\n")], ["/health"], case)


CHUNKED_SMUGGLED: Final = chunk(SMUGGLED) + LAST
ONE_BYTE_CHUNKS: Final = b"".join(b"1;n=%d\r\n%c\r\n" % (i, b) for i, b in enumerate(SMUGGLED))

SERVED = [
    # RFC 9112 §5.2: obs-fold may be replaced by SP; h11 does, and the value arrives so.
    served(POST + b"Content-Type: text/\r\n plain\r\nContent-Length: 2\r\n\r\nhi",
           [Expect(200, b"hi", ((b"content-type", b"text/ plain"),))], ["/echo"], "obs-fold"),
    # RFC 9112 §2.2: a recipient MAY take a bare LF as the line end.
    served(b"GET /health HTTP/1.1\nHost: x\n\n", [Expect(200, b"ok\n")], ["/health"], "bare-lf"),
    # RFC 9110 §2.5: a 1.x minor version we do not know is answered as 1.1.
    health(b"", "http-1.2", line=b"GET /health HTTP/1.2"),
    # RFC 9110 §8.6: identical Content-Length values may be taken as one. Each body holds a
    # whole request: it is echoed back as data, never answered.
    echoed(b"Content-Length: %d\r\nContent-Length: %d" % (N, N), SMUGGLED, SMUGGLED,
           "cl-twice-same"),
    echoed(b"Content-Length: %d, %d" % (N, N), SMUGGLED, SMUGGLED, "cl-list-same"),
    echoed(b"Content-Length: 00%d" % N, SMUGGLED, SMUGGLED, "cl-leading-zeros"),
    echoed(b"Content-Length: \t%d " % N, SMUGGLED, SMUGGLED, "cl-with-ows"),
    # RFC 9112 §7: coding names are case-insensitive; OWS around a value is not part of it.
    echoed(TE + b"Chunked", CHUNKED_SMUGGLED, SMUGGLED, "te-capitalised"),
    echoed(TE + b"\tchunked ", CHUNKED_SMUGGLED, SMUGGLED, "te-with-ows"),
    echoed(b"Transfer-Encoding:\r\n chunked", CHUNKED_SMUGGLED, SMUGGLED, "te-folded"),
    # Another field name altogether (RFC 9110 §5.1): framed by Content-Length.
    echoed(b"Transfer_Encoding: chunked\r\nContent-Length: %d" % N, SMUGGLED, SMUGGLED,
           "te-underscore"),
    # RFC 9110 §9.3.1: a GET's body means nothing, but it is read by its length and dropped.
    served(GET + b"Content-Length: %d\r\n\r\n" % N + SMUGGLED, [Expect(200)], ["/"],
           "get-with-a-body"),
    # RFC 9112 §7.1.1: unknown chunk extensions are ignored; BWS before the line end too.
    echoed(TE + b"chunked", b'%x;a=b;c="d;e"\r\n' % N + SMUGGLED + b"\r\n" + LAST, SMUGGLED,
           "chunk-extensions"),
    echoed(TE + b"chunked", b"%x \t\r\n" % N + SMUGGLED + b"\r\n" + LAST, SMUGGLED,
           "chunk-size-bws"),
    echoed(TE + b"chunked", ONE_BYTE_CHUNKS + LAST, SMUGGLED, "one-byte-chunks"),
    # RFC 9110 §6.5.1: a trailer field cannot frame the message; Content-Length there is inert.
    echoed(TE + b"chunked", chunk(b"abc") + b"0\r\nContent-Length: 99\r\n\r\n", b"abc",
           "cl-in-trailer"),
    # RFC 9110 §5.5: CTLs other than HTAB are invalid in a value, but a recipient MAY keep them.
    health(b"X: a\x01b\r\n", "ctl-in-value"),
    # RFC 9112 §3.2: Host is uri-host [":" port]; an IPv6 literal is bracketed.
    served(b"GET /health HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", [Expect(200, b"ok\n")],
           ["/health"], "host-ipv6-literal"),
    # RFC 9110 §7.8: Upgrade may be ignored; an h2c upgrade gets HTTP/1.1.
    health(b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
           b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n", "h2c-upgrade"),
    # RFC 9112 §3.2.2: absolute-form is accepted; answered here, never fetched elsewhere.
    served(b"GET http://elsewhere.example/health HTTP/1.1\r\nHost: x\r\n\r\n",
           [Expect(200, b"ok\n")], ["http://elsewhere.example/health"], "absolute-form"),
    # The control: honest pipelining after a body of 0 is answered, and the checks see it.
    served(GET + b"Content-Length: 0\r\n\r\n" + SMUGGLED,
           [Expect(200), Expect(200, SMUGGLED_ANSWER)], ["/", SMUGGLED_TARGET],
           "control-pipelined"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "expected", "targets"), SERVED)
async def test_served_as_the_rfcs_allow_and_nothing_smuggled(
    loopback_server: RunningServer, raw: bytes, expected: list[Expect], targets: list[str]
) -> None:
    answer = await exchange(loopback_server.port, raw, half_close=True)
    replies = read_responses(answer)
    assert [r.status for r in replies] == [e.status for e in expected]
    for reply, expect in zip(replies, expected, strict=True):
        if expect.body is not None:
            assert reply.body == expect.body
        for name, value in expect.headers:
            assert reply.header(name) == value
    assert targets_received(loopback_server) == targets
    await assert_serves(loopback_server.port)
    await settled(loopback_server)
    check_books(loopback_server, connections=2, rejected=[])


async def test_a_client_that_goes_on_sending_after_the_refusal_is_dropped_after_1_mib(
    loopback_server: RunningServer,
) -> None:
    # After a refusal the server reads and drops at most 1 MiB while it waits for our FIN
    # (handshake_lab/closing.py); past that it closes with RST rather than read for ever.
    raw = GET + b"X: " + b"a" * (8 * MIB) + b"\r\n\r\n"
    with pytest.raises(ConnectionError):  # EPIPE or ECONNRESET: the server stopped reading
        await exchange(loopback_server.port, raw)
    await assert_serves(loopback_server.port)
    await settled(loopback_server)
    check_books(loopback_server, connections=2, rejected=[(431, "header_too_large")])
    refused = loopback_server.observed.timeline.named(Name.CONNECTION_CLOSED, Role.SERVER)[0]
    assert refused.attrs["bytes_received"] <= 2 * MIB  # bounded: not the 8 MiB we sent


# --- slowloris: heads and bodies that never finish ----------------------------------------

SHORT: Final = {"header_timeout_s": 0.3, "body_timeout_s": 0.3}


async def dribble(sock: socket.socket, pieces: Sequence[bytes], every_s: float = 0.05) -> None:
    """Send `pieces` one at a time, `every_s` apart, until they run out or the server is gone."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError):
        for piece in pieces:
            await loop.sock_sendall(sock, piece)
            await asyncio.sleep(every_s)


async def dribbled_exchange(
    port: int, start: bytes, pieces: Sequence[bytes]
) -> tuple[bytes, float]:
    """Send `start`, then dribble `pieces`; all the server wrote until its FIN, and when."""
    loop = asyncio.get_running_loop()
    sock = await connect(port)
    started = loop.time()
    try:
        await loop.sock_sendall(sock, start)
        sender = asyncio.create_task(dribble(sock, pieces))
        try:
            answer = await read_until_fin(sock)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return answer, loop.time() - started
    finally:
        sock.close()


@pytest.mark.parametrize("server_limits", [SHORT])
class TestSlowloris:
    """tests/integration/test_server.py has a silent connection, a head dribbled byte by
    byte and a body cut short; these add what a slowloris varies."""

    async def test_header_lines_that_keep_coming_get_408_at_the_head_deadline(
        self, loopback_server: RunningServer
    ) -> None:
        # Every 50 ms a whole new field line: progress, but the deadline is for the head.
        lines = [b"X-%d: y\r\n" % i for i in range(200)]
        answer, elapsed = await dribbled_exchange(loopback_server.port, GET, lines)
        (reply,) = read_responses(answer)
        assert reply.status == 408
        assert SHORT["header_timeout_s"] <= elapsed < SHORT["header_timeout_s"] + 1.0
        await assert_serves(loopback_server.port)
        await settled(loopback_server)
        check_books(loopback_server, connections=2, rejected=[(408, "timeout")])

    async def test_a_second_request_dribbled_on_a_kept_alive_connection_gets_408(
        self, loopback_server: RunningServer
    ) -> None:
        second = b"GET /health HTTP/1.1\r\nHost: x\r\n"
        answer, _ = await dribbled_exchange(
            loopback_server.port,
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            [second[i : i + 1] for i in range(len(second))],
        )
        first, refusal = read_responses(answer)
        assert (first.status, refusal.status) == (200, 408)
        await assert_serves(loopback_server.port)
        await settled(loopback_server)
        check_books(loopback_server, connections=2, rejected=[(408, "timeout")])

    async def test_a_chunked_body_dribbled_a_chunk_at_a_time_gets_408(
        self, loopback_server: RunningServer
    ) -> None:
        answer, elapsed = await dribbled_exchange(
            loopback_server.port, CHUNKED + b"\r\n", [b"1\r\na\r\n"] * 200
        )
        (reply,) = read_responses(answer)
        assert reply.status == 408
        assert SHORT["body_timeout_s"] <= elapsed < SHORT["body_timeout_s"] + 1.0
        await settled(loopback_server)
        check_books(loopback_server, connections=1, rejected=[(408, "timeout")])

    async def test_a_body_promised_with_100_continue_and_never_sent_gets_408(
        self, loopback_server: RunningServer
    ) -> None:
        head = POST + b"Content-Length: 10\r\nExpect: 100-continue\r\n\r\n"
        answer = await exchange(loopback_server.port, head)
        (reply,) = read_responses(answer)
        assert (reply.informational, reply.status) == ((100,), 408)
        await settled(loopback_server)
        check_books(loopback_server, connections=1, rejected=[(408, "timeout")])

    async def test_fifty_slowloris_connections_do_not_stop_a_plain_request(
        self, loopback_server: RunningServer
    ) -> None:
        loop = asyncio.get_running_loop()
        held: list[socket.socket] = []
        try:
            for _ in range(50):
                held.append(await connect(loopback_server.port))
                await loop.sock_sendall(held[-1], GET)  # a head that never ends
            started = loop.time()
            await assert_serves(loopback_server.port)
            # Served while all fifty were held, well before their deadline freed anything.
            assert loop.time() - started < SHORT["header_timeout_s"] / 2
            assert loopback_server.server.open_connections >= 50
            answers = await asyncio.gather(*(read_until_fin(sock) for sock in held))
        finally:
            for sock in held:
                sock.close()
        assert [read_responses(a)[0].status for a in answers] == [408] * 50
        await settled(loopback_server)
        check_books(loopback_server, connections=51, rejected=[(408, "timeout")] * 50)


# --- pipelining floods ----------------------------------------------------------------

HEALTH: Final = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("server_limits", [{"max_requests_per_connection": 10_000}])
async def test_5000_pipelined_requests_in_one_write_are_answered_in_order(
    loopback_server: RunningServer,
) -> None:
    loop = asyncio.get_running_loop()
    sock = await connect(loopback_server.port)
    try:

        async def send_then_fin() -> None:
            await loop.sock_sendall(sock, HEALTH * 5000)
            sock.shutdown(socket.SHUT_WR)

        # Written while we read: the answers (about 0.8 MB) need not fit in the buffers.
        sender = asyncio.create_task(send_then_fin())
        answer = await read_until_fin(sock, timeout_s=30)
        await sender
    finally:
        sock.close()
    replies = read_responses(answer)
    assert [(r.status, r.body) for r in replies] == [(200, b"ok\n")] * 5000
    received = loopback_server.observed.timeline.named(Name.REQUEST_RECEIVED, Role.SERVER)
    assert [e.attrs["index"] for e in received] == list(range(1, 5001))
    await settled(loopback_server)
    check_books(loopback_server, connections=1, rejected=[])
    (closed,) = loopback_server.observed.timeline.named(Name.CONNECTION_CLOSED, Role.SERVER)
    assert (closed.attrs["requests"], closed.attrs["closed_by"]) == (5000, "client")


async def test_a_pipelined_flood_past_the_request_cap_gets_the_cap_then_fin(
    loopback_server: RunningServer,
) -> None:
    # --max-requests-per-connection (100): the 100th answer says close, and the server
    # closes with the 900 others unanswered (and unparsed).
    answer = await exchange(loopback_server.port, HEALTH * 1000)
    replies = read_responses(answer)
    assert len(replies) == 100
    assert [r.header(b"connection") for r in replies] == [None] * 99 + [b"close"]
    assert len(targets_received(loopback_server)) == 100
    await settled(loopback_server)
    check_books(loopback_server, connections=1, rejected=[])
    (closed,) = loopback_server.observed.timeline.named(Name.CONNECTION_CLOSED, Role.SERVER)
    assert (closed.attrs["reason"], closed.attrs["closed_by"]) == ("max_requests", "server")


@pytest.mark.parametrize("server_limits", [{"send_timeout_s": 2.0}])
async def test_a_client_that_pipelines_and_never_reads_is_held_back_then_dropped(
    loopback_server: RunningServer,
) -> None:
    loop = asyncio.get_running_loop()
    flooder = socket.socket()
    flooder.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connect)
    flooder.setblocking(False)
    try:
        await loop.sock_connect(flooder, ("127.0.0.1", loopback_server.port))
        # Each request asks for 1 MB; we never read. Push requests until the kernel takes
        # no more for 0.2 s: the server must have stopped reading (it holds one response
        # and one read, not the flood), well before our 64 MB are gone.
        burst = b"GET /bytes?n=1000000 HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
        pushed, cap = 0, 64 * MIB
        stalled_since: float | None = None
        while pushed < cap:
            try:
                pushed += flooder.send(burst)
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or loop.time()
                if loop.time() - stalled_since > 0.2:
                    break
                await asyncio.sleep(0.01)
        assert pushed < cap, "the server read the whole flood: nothing held it back"
        # Meanwhile everyone else is served.
        started = loop.time()
        await assert_serves(loopback_server.port)
        assert loop.time() - started < 0.5
        server = loopback_server.server
        await wait_until(lambda: server.open_connections == 1, "only the flooder left, held")
        # And it is dropped once the server's send has waited send_timeout_s.
        await settled(loopback_server, timeout_s=5.0)
    finally:
        flooder.close()
    timeline = loopback_server.observed.timeline
    (failed,) = timeline.named(Name.CONNECTION_FAILED, Role.SERVER)
    assert failed.attrs["kind"] == "send_timeout"
    registry = loopback_server.observed.metrics.registry
    assert sample(registry, "handshake_lab_errors_total", role="server", kind="send_timeout") == 1
    flood, _health = timeline.named(Name.CONNECTION_CLOSED, Role.SERVER)
    assert flood.attrs["closed_by"] == "server"
    assert flood.attrs["bytes_received"] < min(pushed, MIB)  # a few reads, not the flood
    opened = sample(registry, "handshake_lab_connections_opened_total", role="server")
    assert opened == sample(registry, "handshake_lab_connections_closed_total", role="server") == 2


# --- a live fuzz: the unit fuzz's inputs over real sockets ----------------------------

LIVE_FUZZ_INPUTS: Final = 300


# The unit fuzz's small limits, so that the inputs reach 413, 414 and 431 here too.
@pytest.mark.parametrize("server_limits", [asdict(FUZZ_LIMITS)])
async def test_live_fuzz_every_answer_parses_and_the_books_balance(
    loopback_server: RunningServer,
) -> None:
    rng = random.Random(8)
    inputs = [fuzz_input(RandomChoices(rng)) for _ in range(LIVE_FUZZ_INPUTS)]
    port = loopback_server.port
    timeline = loopback_server.observed.timeline
    gate = asyncio.Semaphore(25)

    async def one(data: bytes) -> tuple[str, bytes]:
        async with gate:
            sock = await connect(port)
            try:
                host, local_port = sock.getsockname()[:2]
                address = f"{host}:{local_port}"
                await asyncio.get_running_loop().sock_sendall(sock, data)
                sock.shutdown(socket.SHUT_WR)  # so that every input ends, answered or not
                return address, await read_until_fin(sock)
            finally:
                sock.close()

    results = await asyncio.gather(*(one(data) for data in inputs))
    await assert_serves(port)
    await settled(loopback_server)
    # What the server says it wrote, connection by connection, is what we read.
    sent: dict[str, list[tuple[str, int]]] = {address: [] for address, _ in results}
    for event in timeline.named(Name.RESPONSE_SENT, Role.SERVER):
        if event.remote in sent:
            sent[event.remote].append((event.attrs["method"], event.attrs["status"]))
    statuses: Counter[int] = Counter()
    for address, answer in results:
        replies = read_responses(answer, [method or None for method, _ in sent[address]])
        assert [r.status for r in replies] == [status for _, status in sent[address]]
        statuses.update(r.status for r in replies)
    rejected = [(e.attrs["status"], e.attrs["kind"]) for e in timeline.named(Name.REQUEST_REJECTED)]
    check_books(loopback_server, connections=LIVE_FUZZ_INPUTS + 1, rejected=rejected)
    # The inputs reached both sides: many answered by the routes, many refused.
    answered = statuses.total() - len(rejected)
    assert answered > LIVE_FUZZ_INPUTS // 10
    assert len(rejected) > LIVE_FUZZ_INPUTS // 10
    assert {status for status, _kind in rejected} >= {400, 413, 414, 431, 501, 505}
