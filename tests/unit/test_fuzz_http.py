"""Fuzzing the server's HTTP core (`server/http_conn.py`) with Hypothesis, no sockets.

Inputs are requests built near the grammar (RFC 9112 §3 request line, §5 fields, §6
framing, §7 chunks) and then mutated: the spellings request smugglers use (framing headers
twice, with a sign, folded, with whitespace, on HTTP/1.0), bad chunk lines, NUL/CR/LF
dropped in anywhere, truncations, whitespace padding, and plain random bytes. Each input is
fed whole and again split at random (or byte by byte), the way TCP may deliver it, and the
core is driven as the adapter (`server/connection.py`) drives it. Invariants:

- it raises nothing but `RemoteProtocolError` (no `LocalProtocolError`, nothing of h11's);
- it ends: at most one event per byte, checked on every step, so a loop would fail fast;
- every byte it writes parses as HTTP/1.1 responses (h11, acting as a client, reads them);
- however the bytes are split, the outcome is the same: the same requests served with the
  same bodies, then the same refusal (status and kind) or the same quiet close.

The suite runs a bounded number of examples; `HANDSHAKE_LAB_FUZZ_EXAMPLES=20000` runs a
longer search (docs/reliability.md records such a run). `fuzz_input()` is also what the
live fuzz in tests/integration/test_bad_input_http.py sends over real sockets.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handshake_lab.errors import RemoteProtocolError
from handshake_lab.http_events import BodyReceived, NeedData, PeerClosed
from server.config import HTTPLimits
from server.http_conn import Phase, RequestCompleted, RequestReceived, ServerHTTPConnection

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

T = TypeVar("T")

EXAMPLES: Final = int(os.environ.get("HANDSHAKE_LAB_FUZZ_EXAMPLES", "400"))

# Small limits, so that short inputs reach every one of them.
LIMITS: Final = HTTPLimits(
    max_header_bytes=512,
    max_header_count=8,
    max_body_bytes=64,
    header_timeout_s=10.0,
    body_timeout_s=10.0,
    keep_alive_timeout_s=5.0,
    max_requests_per_connection=3,
)


# --- reading what the core writes -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """One response as h11, acting as a client, read it."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes
    informational: tuple[int, ...] = ()  # 1xx before it (100 Continue)

    def header(self, name: bytes) -> bytes | None:
        return self.headers.get(name)


def read_responses(data: bytes, methods: Sequence[str | None] = ()) -> list[Reply]:
    """Every response in `data`, each parsed by a fresh h11 client; raises AssertionError
    unless all of `data` is well-formed HTTP/1.1 responses.

    `methods[i]` is the method of the request the i-th response answers (HEAD answers
    carry no body). Where it is None or past the end of `methods` (a refusal, whose request
    may never have parsed), a response that ends right after its head is read as the
    answer to a HEAD.
    """
    replies: list[Reply] = []
    rest = data
    while rest:
        # RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
        assert rest.startswith(b"HTTP/1.1 "), f"not an HTTP/1.1 status line: {rest[:40]!r}"
        method = methods[len(replies)] if len(replies) < len(methods) else None
        reply, rest = _read_one(rest, method or "GET", allow_head=method is None)
        replies.append(reply)
    return replies


def _read_one(data: bytes, method: str, *, allow_head: bool) -> tuple[Reply, bytes]:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    informational: list[int] = []
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = client.next_event()
        if isinstance(event, h11.InformationalResponse):
            assert event.http_version == b"1.1"
            informational.append(event.status_code)
        elif isinstance(event, h11.Response):
            assert event.http_version == b"1.1"
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            assert event is h11.NEED_DATA, event
            # Cut short. Only a refused HEAD may end right after its head.
            assert allow_head, f"truncated: {data!r}"
            assert response is not None
            assert not body
            return _read_one(data, "HEAD", allow_head=False)
    assert response is not None
    headers = {name: value for name, value in response.headers}
    reply = Reply(response.status_code, headers, bytes(body), tuple(informational))
    return reply, client.trailing_data[0]


# --- inputs: near-valid requests, then mutations ----------------------------------------


class Choices(Protocol):
    """Where an input's choices come from: Hypothesis (shrinks) or a seeded Random."""

    def integer(self, low: int, high: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...

    def raw(self, max_size: int) -> bytes: ...


@dataclass(slots=True)
class DrawChoices:
    draw: st.DrawFn

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))

    def raw(self, max_size: int) -> bytes:
        return self.draw(st.binary(max_size=max_size))


@dataclass(slots=True)
class RandomChoices:
    rng: random.Random

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def raw(self, max_size: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, max_size))


# Each pool is (usual, odd): the usual spelling three times in four, so that most inputs
# get far enough to meet the odd parts. (No /delay or /ws/ paths: the live fuzz must not
# wait on purpose or switch protocols.)
Pool = tuple[tuple[T, ...], tuple[T, ...]]
METHODS: Final[Pool[bytes]] = (
    (b"GET", b"POST", b"HEAD", b"PUT"),
    (b"OPTIONS", b"get", b"G(ET", b""),
)
TARGETS: Final[Pool[bytes]] = (
    (b"/", b"/health", b"/echo", b"/a?b=1"),
    (b"*", b"http://x/p", b"/a b", b"/\xff", b"/" + b"t" * 520),
)
VERSIONS: Final[Pool[bytes]] = (
    (b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"),
    (b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"http/1.1", b"HTTP/1.10", b""),
)
FIELDS: Final[Pool[bytes]] = (
    (b"Accept: */*", b"Connection: close", b"Connection: keep-alive", b"Expect: 100-continue"),
    (
        b"Host: y", b"Host:", b"Host : x", b"Host: a b", b"Host: [::1]:80", b"X: a\x00b",
        b"X: a\rb", b"X\x00: a", b": a",
        b"NoColon", b" folded", b"\tfolded", b"X: \x80\xff", b"X: a\x01b", b"Upgrade: h2c",
        b"Transfer_Encoding: chunked", b"Content-Type: text/\r\n plain",
    ),
)  # fmt: skip
# The framing header of a body of n bytes, spelled as honest clients and smugglers do
# (RFC 9110 §8.6 Content-Length = 1*DIGIT; RFC 9112 §6.1 Transfer-Encoding).
LENGTHS: Final[Pool[Callable[[int], bytes]]] = (
    (lambda n: b"Content-Length: %d" % n,),
    (
        lambda n: b"Content-Length: +%d" % n,
        lambda n: b"Content-Length: 00%d" % n,
        lambda n: b"Content-Length:  %d\t" % n,
        lambda n: b"Content-Length: %d, %d" % (n, n),
        lambda n: b"Content-Length: %d, %d" % (n, n + 1),
        lambda n: b"Content-Length: %d\r\nContent-Length: %d" % (n, n),
        lambda n: b"Content-Length: %d\r\nContent-Length: %d" % (n, n + 1),
        lambda n: b"Content-Length: %x" % (n + 10),
        lambda n: b"Content-Length: -%d" % n,
        lambda n: b"Content-Length: %d\r\n %d" % (n, n),
        lambda n: b"Content-Length: %d" % (n + 3),
    ),
)
CODINGS: Final[Pool[bytes]] = (
    (b"Transfer-Encoding: chunked",),
    (
        b"Transfer-Encoding: Chunked", b"Transfer-Encoding:  chunked\t",
        b"Transfer-Encoding: chunked, identity", b"Transfer-Encoding: identity, chunked",
        b"Transfer-Encoding: chunked, chunked",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        b"Transfer-Encoding:\r\n chunked", b"Transfer-Encoding : chunked",
        b"Transfer-Encoding: gzip", b"Transfer-Encoding: xchunked", b"Transfer-Encoding:",
    ),
)  # fmt: skip
# RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
SIZES: Final[Pool[Callable[[int], bytes]]] = (
    (lambda n: b"%x" % n, lambda n: b"%X" % n),
    (
        lambda n: b"000%x" % n,
        lambda n: b"%x;ext=1" % n,
        lambda n: b'%x;a="b;c"' % n,
        lambda n: b"%x \t" % n,
        lambda n: b" %x" % n,
        lambda n: b"0x%x" % n,
        lambda n: b"-%x" % n,
        lambda n: b"%x" % (n + 5),
        lambda n: b"ffffffffffffffff",
        lambda n: b"1" * 21,
        lambda n: b"",
        lambda n: b"zz",
    ),
)
CHUNK_ENDS: Final[Pool[bytes]] = ((b"\r\n",), (b"\n", b"", b"X\r\n"))
TRAILERS: Final[Pool[bytes]] = ((b"",), (b"X: y\r\n", b"Content-Length: 5\r\n", b"bad trailer\r\n"))
LINE_ENDS: Final[Pool[bytes]] = ((b"\r\n",), (b"\n",))
SPECIAL: Final = b"\r\n\x00 \t:,;\x0b\x7f\x80\xff0aA"


def pick(c: Choices, pool: Pool[T]) -> T:
    usual, odd = pool
    return c.choice(usual if c.integer(0, 3) else odd)


def fuzz_request(c: Choices) -> bytes:
    """One request near the grammar: a request line, fields, a body framed some way."""
    eol = pick(c, LINE_ENDS)
    line = b" ".join((pick(c, METHODS), pick(c, TARGETS), pick(c, VERSIONS)))
    fields = [pick(c, FIELDS) for _ in range(c.integer(0, 3))]
    if c.integer(0, 3) == 0:  # whitespace or folding padding: the head's size on the wire
        pad = c.integer(0, 600)
        fields.append(
            c.choice((b"X-Pad:" + b" " * pad + b"a", b"X-Pad: a" + b"\r\n \t" * (pad // 4)))
        )
    body = b""
    match c.choice(("none", "none", "length", "length", "chunked", "chunked", "both")):
        case "length":
            body = c.raw(80)
            fields.append(pick(c, LENGTHS)(len(body)))
        case "chunked":
            fields.append(pick(c, CODINGS))
            body = fuzz_chunks(c)
        case "both":
            body = fuzz_chunks(c)
            fields += [pick(c, CODINGS), pick(c, LENGTHS)(len(body))]
    if c.integer(0, 7):  # RFC 9112 §3.2: HTTP/1.1 needs exactly one Host
        fields.insert(c.integer(0, len(fields)), b"Host: x")
    return eol.join((line, *fields, b"", b"")) + body


def fuzz_chunks(c: Choices) -> bytes:
    chunks = []
    for _ in range(c.integer(0, 3)):
        data = c.raw(30)
        chunks.append(pick(c, SIZES)(len(data)) + b"\r\n" + data + pick(c, CHUNK_ENDS))
    last = c.choice((b"0", b"0", b"0;e", b"00"))
    return b"".join(chunks) + last + b"\r\n" + pick(c, TRAILERS) + b"\r\n"


def fuzz_input(c: Choices) -> bytes:
    """One or more requests (pipelined), then a few byte-level mutations; or random bytes."""
    if c.integer(0, 9) == 0:
        return c.raw(300) or b"\x00"
    data = bytearray(b"".join(fuzz_request(c) for _ in range(c.integer(1, 3))))
    for _ in range(c.choice((0, 0, 1, 2, 3))):
        where = c.integer(0, len(data))
        match c.choice(("insert", "replace", "delete", "truncate")):
            case "insert":
                data[where:where] = bytes([c.choice(SPECIAL)])
            case "replace":
                data[where : where + 1] = bytes([c.choice(SPECIAL)])
            case "delete":
                del data[where : where + c.integer(1, 4)]
            case "truncate":
                del data[max(where, 1) :]
    return bytes(data) or b"\x00"


@st.composite
def inputs(draw: st.DrawFn) -> bytes:
    return fuzz_input(DrawChoices(draw))


# --- driving the core as the adapter does -----------------------------------------------


@dataclass(slots=True)
class Outcome:
    """What the core did with one input."""

    served: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # and bodies
    refusal: tuple[int, str] | None = None  # status, kind
    refused_in: Phase | None = None
    close_reason: str | None = None
    written: bytearray = field(default_factory=bytearray)
    fed: int = 0  # bytes given to the core so far
    events: int = 0  # other than NeedData

    @property
    def methods(self) -> list[str]:
        return [method for method, _target, _version, _body in self.served]


def drive(data: bytes, splits: Sequence[int], end: str, limits: HTTPLimits = LIMITS) -> Outcome:
    """Feed `data` cut at `splits` (then FIN, or the timer firing when `end` is "timer"),
    answering each complete request with 200, and stopping where the adapter would."""
    conn = ServerHTTPConnection(limits, 0.0)
    out = Outcome()
    cuts = [0, *splits, len(data)]
    chunks = [data[a:b] for a, b in pairwise(cuts) if b > a]
    body = bytearray()
    try:
        for chunk in [*chunks, b""] if end == "eof" else chunks:
            out.fed += len(chunk)
            conn.receive_data(chunk, 0.0)
            if not _drain(conn, out, body):
                break  # closed: the adapter reads no further
        else:
            deadline = conn.get_timer()
            if end == "timer" and deadline is not None:
                conn.handle_timeout(deadline)  # a 408 if a request was cut short
    except RemoteProtocolError as error:
        out.refusal = (error.status_hint, error.kind)
        out.refused_in = conn.phase
        out.written += conn.error_response(error)
        assert conn.phase is Phase.CLOSED
    out.close_reason = conn.close_reason
    return out


def _drain(conn: ServerHTTPConnection, out: Outcome, body: bytearray) -> bool:
    """Events until the core needs data (True) or the connection is over (False)."""
    request: RequestReceived | None = conn.current_request
    while True:
        event = conn.next_event(0.0)
        out.written += conn.data_to_send()
        if isinstance(event, NeedData):
            return True
        out.events += 1
        # At most one event per byte fed, plus the end of the last message and the FIN:
        # a core that loops without consuming input fails here, at once.
        assert out.events <= out.fed + 2, "more events than bytes: a loop?"
        if isinstance(event, RequestReceived):
            request = event
            body.clear()
        elif isinstance(event, BodyReceived):
            body += event.data
        elif isinstance(event, RequestCompleted):
            assert request is not None
            index = len(out.served) + 1
            out.served.append((request.method, request.target, request.http_version, bytes(body)))
            answer = b"served %d\n" % index
            out.written += conn.send_response(0.0, 200, [(b"content-type", b"text/plain")], answer)
            if conn.phase is Phase.CLOSED:
                return False
        else:
            assert isinstance(event, PeerClosed)
            return False


# --- the properties ---------------------------------------------------------------------


def check_written(outcome: Outcome, data: bytes) -> None:
    """What the core wrote is one 200 per request served, then the refusal if any."""
    replies = read_responses(bytes(outcome.written), outcome.methods)
    served = len(outcome.served)
    assert len(replies) == served + (outcome.refusal is not None)
    for index, (reply, method) in enumerate(zip(replies, outcome.methods, strict=False), 1):
        assert reply.status == 200
        assert reply.body == (b"" if method == "HEAD" else b"served %d\n" % index)
    if outcome.refusal is not None:
        refusal = replies[-1]
        assert refusal.status == outcome.refusal[0]
        assert refusal.header(b"connection") == b"close"
        if not refusal.body:  # only the refusal of a HEAD goes without its text
            assert b"HEAD" in data


def cut_points(size: int, points: Sequence[int], bytewise: bool) -> list[int]:
    if bytewise:
        return list(range(1, size))
    return sorted({point % size for point in points} - {0})


def too_large_mid_body(outcome: Outcome) -> bool:
    """h11's 431 for a chunk line or trailer section over the limit while still incomplete
    (RFC 9112 §7.1.1 lets a server limit them); one that arrives whole in one read passes.
    So this refusal may depend on the split; it stays bounded by the read size (64 KiB)."""
    return outcome.refusal == (431, "header_too_large") and outcome.refused_in is Phase.EXPECT_BODY


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    data=inputs(),
    points=st.lists(st.integers(1, 10_000), max_size=12),
    bytewise=st.booleans(),
    end=st.sampled_from(("eof", "timer")),
)
def test_any_input_whole_or_split_gets_the_same_answers(
    data: bytes, points: list[int], bytewise: bool, end: str
) -> None:
    whole = drive(data, [], end)
    split = drive(data, cut_points(len(data), points, bytewise), end)
    check_written(whole, data)
    check_written(split, data)
    if too_large_mid_body(whole) or too_large_mid_body(split):
        shorter, longer = sorted((whole.served, split.served), key=len)
        assert longer[: len(shorter)] == shorter
        return
    assert split.served == whole.served
    if split.refusal != whole.refusal and malformed_and_too_large(data, end, whole, split):
        return
    assert (split.refusal, split.close_reason) == (whole.refusal, whole.close_reason)


def malformed_and_too_large(data: bytes, end: str, *outcomes: Outcome) -> bool:
    """A head that breaks h11's rules and is over the size limit is refused however it
    arrives, but which rule speaks depends on the split: h11 checks the size of a head
    still incomplete (431, or 414 for the request line) and the grammar and framing of a
    complete one (400, 501). With the size limit out of the way, the grammar refuses it."""
    roomy = drive(data, [], end, replace(LIMITS, max_header_bytes=1 << 20))
    if roomy.refusal is None or roomy.refusal[0] not in (400, 501):
        return False
    allowed = {roomy.refusal[0], 414, 431}
    return all(o.refusal is not None and o.refusal[0] in allowed for o in outcomes)


def test_the_generator_reaches_every_outcome() -> None:
    """The inputs are worth their time: among 2,000 of them (seeded) some are served, and
    some refused with each status the core can give."""
    rng = random.Random(8)
    statuses: set[int] = set()
    served = 0
    for _ in range(2000):
        outcome = drive(fuzz_input(RandomChoices(rng)), [], "eof")
        served += bool(outcome.served)
        if outcome.refusal is not None:
            statuses.add(outcome.refusal[0])
    assert served > 100
    assert statuses == {400, 413, 414, 431, 501, 505}


# --- what fuzzing found, kept as plain cases --------------------------------------------

GET = b"GET / HTTP/1.1\r\nHost: x\r\n"
FOUND = [
    # RFC 6585 §5, and our limit "however the head arrives": counted on the wire, where
    # whitespace and folded lines take room too (h11 strips them from the values).
    pytest.param(GET + b"X:" + b" " * 600 + b"a\r\n\r\n", 431, "header_too_large", id="ows"),
    pytest.param(
        GET + b"X: a" + b"\r\n \t" * 200 + b"\r\n\r\n", 431, "header_too_large", id="obs-fold"
    ),
    # RFC 9112 §3.2: a Host whose value is no uri-host [":" port] MUST get 400.
    pytest.param(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "bad_request", id="bad-host"),
    # RFC 9112 §3: a request-target longer than the server will parse gets 414.
    pytest.param(
        b"GET /" + b"a" * 600 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long",
        id="long-request-line",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "status", "kind"), FOUND)
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_found_by_fuzzing(raw: bytes, status: int, kind: str, bytewise: bool) -> None:
    outcome = drive(raw, cut_points(len(raw), [], bytewise), "eof")
    assert outcome.refusal == (status, kind)
    check_written(outcome, raw)


def test_a_head_just_within_the_limit_passes_whole_and_bytewise() -> None:
    # The boundary of the wire count: exactly max_header_bytes, padding included.
    head = GET + b"X:" + b" " * 10 + b"a\r\n\r\n"
    raw = head[:-4] + b"a" * (LIMITS.max_header_bytes - len(head)) + b"\r\n\r\n"
    assert len(raw) == LIMITS.max_header_bytes
    for bytewise in (False, True):
        outcome = drive(raw, cut_points(len(raw), [], bytewise), "eof")
        assert (outcome.refusal, len(outcome.served)) == (None, 1)
        longer = raw[:-4] + b"a\r\n\r\n"  # one byte over
        outcome = drive(longer, cut_points(len(longer), [], bytewise), "eof")
        assert outcome.refusal == (431, "header_too_large")
