"""Our own HTTP load generator: many connections on one asyncio loop, for when wrk is absent.

Method
------
`connections` slots each keep one request in flight, closed-loop, like wrk:

- **keepalive**: a slot opens one connection and sends its next request (HTTP/1.1, no
  `Connection` header) the moment a response is complete. If the server closes anyway
  (`Connection: close`, or a cap of requests per connection), the slot opens a new
  connection and counts a `server_closed` reconnect.
- **http10**: every request is `GET ... HTTP/1.0` on a new connection. When its response
  is complete the slot opens the next connection at once, while the old one waits for the
  server's FIN before closing its end, so the server stays the active closer (and holds
  TIME_WAIT, as HTTP/1.0 teaches); an old connection that has answered no longer counts
  against the slot.

Each connection is one `asyncio.Protocol`: the request bytes are encoded once, and the
response is framed by `ResponseParser` (status line, Content-Length, `Connection`; a body
without Content-Length runs to the end of the connection). Nothing else of HTTP is parsed.

Transports: plain TCP; real TLS (`ssl.SSLContext` trusting the lab CA, a full handshake per
connection: no session resumption); and the toy TLS, driven through its sans-I/O core
(`handshake_tls.connection.ClientConnection`, the same code our client uses) right in the
protocol, so toy-TLS cells run with the same number of connections as the others.

A response counts when it completes inside the measured window (after the warm-up). Its
latency runs from the write of its request, or, for a connection's first request, from
the start of the connect (TCP and TLS handshakes included, as a user waits for them).
A non-2xx status counts as an error (`status_NNN`), as do resets, an end of connection
before a response, refused connects and TLS failures, each under its own kind.

The generator reports its own CPU time (`time.process_time`, every thread) over the
window: at 90 % of a core or more it says it is `saturated`, and its figure is then a
lower bound of the server's capacity, not a measurement of it.

    .venv/bin/python -m bench.loadgen --port 8080 --mode http10 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench.common import HOST, percentile
from handshake_tls.certs import trusted_ca
from handshake_tls.connection import (
    NEED_DATA,
    AlertReceived,
    ClientConnection,
    CloseNotifyReceived,
    DataReceived,
    HandshakeCompleted,
)
from handshake_tls.errors import RemoteProtocolError
from handshake_tls.wire import KeyExchange

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cryptography import x509

MODES: Final = ("keepalive", "http10")
TRANSPORTS: Final = ("plain", "tls", "toy")
MARKER: Final = "LOADGEN_JSON "
SATURATED_AT: Final = 0.9  # of one core
MAX_HEAD_BYTES: Final = 64 * 1024
RETRY_DELAY_S: Final = 0.01  # after a failed connect: no busy loop against a dead port


class FramingError(ValueError):
    """A response we cannot frame; `kind` names it in the error counts."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    keep_alive: bool  # the server leaves the connection open after this response
    body_bytes: int


class ResponseParser:
    """HTTP/1.x responses out of a byte stream, framed by Content-Length.

    Only what a load generator needs: the status, the body's length, and whether the
    connection stays open (RFC 9112 §9.3: HTTP/1.1 persists unless `Connection: close`;
    HTTP/1.0 only with `Connection: keep-alive`). Without Content-Length the body runs to
    the end of the connection (RFC 9112 §6.3, rule 8); chunked bodies are refused (none of
    the servers measured sends one for a fixed body).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._status = 0
        self._keep_alive = False
        self._remaining = 0  # body bytes still to come; -1: until the end of the connection
        self._body_bytes = 0
        self._in_body = False

    def feed(self, data: bytes) -> list[Response]:
        """The responses `data` completes (often exactly one).

        Raises:
            FramingError: a head we cannot read.
        """
        buffer = self._buffer + data if self._buffer else data
        responses = []
        while buffer:
            if not self._in_body:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise FramingError("head_too_large", f"no end of head in {len(buffer)} B")
                    break
                self._start(buffer[:end])
                buffer = buffer[end + 4 :]
                if self._remaining == 0:
                    responses.append(self._complete())
                    continue
            if self._remaining < 0:  # until the end of the connection
                self._body_bytes += len(buffer)
                buffer = b""
                break
            taken = min(self._remaining, len(buffer))
            self._remaining -= taken
            self._body_bytes += taken
            buffer = buffer[taken:]
            if self._remaining == 0:
                responses.append(self._complete())
        self._buffer = buffer
        return responses

    def feed_eof(self) -> Response | None:
        """The response the end of the connection completes, if any.

        Raises:
            FramingError: the connection ended inside a head or a Content-Length body.
        """
        if self._in_body and self._remaining < 0:
            return self._complete()
        if self._in_body or self._buffer:
            raise FramingError("truncated", "the connection ended inside a response")
        return None

    def _start(self, head: bytes) -> None:
        # Status line: HTTP/1.x SP 3DIGIT SP reason (RFC 9112 §4).
        if not head.startswith(b"HTTP/1.") or len(head) < 12 or head[8:9] != b" ":
            raise FramingError("bad_status_line", f"not a status line: {head[:40]!r}")
        try:
            self._status = int(head[9:12])
        except ValueError:
            raise FramingError("bad_status_line", f"bad status: {head[:40]!r}") from None
        lower = head.lower()
        if b"\r\ntransfer-encoding:" in lower:
            raise FramingError("chunked", "a Transfer-Encoding body: not supported here")
        http11 = head[7:8] == b"1"
        connection = _field(lower, b"\r\nconnection:")
        if http11:
            self._keep_alive = connection is None or b"close" not in connection
        else:
            self._keep_alive = connection is not None and b"keep-alive" in connection
        length = _field(lower, b"\r\ncontent-length:")
        if length is None:
            # 1xx, 204 and 304 have no body (RFC 9112 §6.3, rule 1); else: to the end.
            no_body = self._status < 200 or self._status in (204, 304)
            self._remaining = 0 if no_body else -1
            if self._remaining < 0:
                self._keep_alive = False
        else:
            try:
                self._remaining = int(length)
            except ValueError:
                raise FramingError("bad_content_length", f"Content-Length {length!r}") from None
            if self._remaining < 0:
                raise FramingError("bad_content_length", f"Content-Length {length!r}")
        self._body_bytes = 0
        self._in_body = True

    def _complete(self) -> Response:
        self._in_body = False
        return Response(self._status, self._keep_alive, self._body_bytes)


def _field(lower_head: bytes, name: bytes) -> bytes | None:
    """The (first) value of the field `name` (lower case, with its CRLF and colon)."""
    start = lower_head.find(name)
    if start < 0:
        return None
    start += len(name)
    end = lower_head.find(b"\r\n", start)
    return lower_head[start : end if end >= 0 else len(lower_head)].strip()


@dataclass(frozen=True, slots=True)
class LoadConfig:
    port: int
    host: str = HOST
    path: str = "/"
    mode: str = "keepalive"
    transport: str = "plain"
    connections: int = 50
    cafile: Path | None = None  # for tls and toy: the CA to trust (default: the lab's)
    toy_key_exchange: str = "ecdhe"

    def request(self) -> bytes:
        version = "1.0" if self.mode == "http10" else "1.1"
        return f"GET {self.path} HTTP/{version}\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()


@dataclass(slots=True)
class LoadResult:
    generator: str
    mode: str
    transport: str
    connections: int
    duration_s: float
    responses: int
    requests_per_s: float
    errors: dict[str, int]
    errors_total: int
    connections_opened: int  # in the measured window
    connections_opened_total: int  # warm-up included
    server_closed: int  # keep-alive connections the server closed (a new one followed)
    latency_mean_us: float
    latency_p50_us: float
    latency_p90_us: float
    latency_p99_us: float
    latency_max_us: float
    cpu_s: float
    cpu_utilisation: float
    saturated: bool
    response_body_bytes: int
    warmup_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Connection(asyncio.Protocol):
    """One connection of one slot; reports to the generator, which decides what follows."""

    __slots__ = ("_gen", "_parser", "_sent_at", "_toy", "answered", "transport")

    def __init__(self, gen: LoadGenerator, started: float) -> None:
        self._gen = gen
        self._parser = ResponseParser()
        self._sent_at = started  # the first request waits for the connect too
        self._toy = gen.new_toy_connection()
        self.transport: asyncio.Transport | None = None
        self.answered = False  # its slot has moved on (response done, or failed)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._gen.opened(self)
        if self._toy is not None:
            self._toy.start_handshake()  # (its ClientHello waits in data_to_send())
            transport.write(self._toy.data_to_send())
        else:
            transport.write(self._gen.request)

    def _send_request(self) -> None:
        assert self.transport is not None
        if self._toy is not None:
            self._toy.send(self._gen.request)
            self.transport.write(self._toy.data_to_send())
        else:
            self.transport.write(self._gen.request)

    def data_received(self, data: bytes) -> None:
        if self._toy is not None:
            self._toy.receive_data(data)
            self._drain_toy()
        else:
            self._received(data)

    def _received(self, data: bytes) -> None:
        try:
            responses = self._parser.feed(data)
        except FramingError as error:
            self._fail(error.kind)
            return
        for response in responses:
            self._respond(response)

    def _respond(self, response: Response) -> None:
        now = time.perf_counter()
        gen = self._gen
        gen.record(now - self._sent_at, response)
        if response.keep_alive and gen.keep_alive and gen.running and not self.answered:
            self._sent_at = now
            self._send_request()
            return
        if not self.answered:
            self.answered = True
            gen.slot_free(server_closed=gen.keep_alive)
        # Wait for the server's FIN (it is the active closer), unless we are stopping.
        if not gen.running and self.transport is not None:
            self.transport.close()

    def _drain_toy(self) -> None:
        toy = self._toy
        assert toy is not None
        assert self.transport is not None
        while True:
            try:
                event = toy.next_event()
            except RemoteProtocolError as error:
                self._fail(f"tls_{error.alert}")
                return
            if out := toy.data_to_send():
                self.transport.write(out)
            if event is NEED_DATA:
                return
            if isinstance(event, DataReceived):
                self._received(event.data)
            elif isinstance(event, HandshakeCompleted):
                self._send_request()
            elif isinstance(event, CloseNotifyReceived):
                self._ended()
                # Answer with ours: the server lingers for our end, then both close.
                self.transport.write(toy.close())
                self.transport.close()
                return
            elif isinstance(event, AlertReceived):
                self._fail(f"tls_alert_{event.alert}")
                return
            # (HandshakeStep: the lesson's detail; nothing to do here.)

    def eof_received(self) -> bool | None:
        if self._toy is not None:
            if not self.answered:
                self._toy.receive_data(b"")
                self._drain_toy()
            return None  # the transport closes itself
        self._ended()
        return None

    def _ended(self) -> None:
        try:
            response = self._parser.feed_eof()
        except FramingError as error:
            self._fail(error.kind)
            return
        if response is not None:
            self._respond(response)
        elif not self.answered:
            self._fail("eof_before_response")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered:
            kind = "eof_before_response" if exc is None else _error_kind(exc)
            self._fail(kind)
        self._gen.closed(self)

    def _fail(self, kind: str) -> None:
        if self.transport is not None:
            self.transport.abort()
        if not self.answered:
            self.answered = True
            self._gen.error(kind)
            self._gen.slot_free(server_closed=False)


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return "tls_error"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__.lower()


class LoadGenerator:
    """`connections` slots against one server; `run()` measures one window."""

    def __init__(self, config: LoadConfig) -> None:
        if config.mode not in MODES:
            raise ValueError(f"mode {config.mode!r} not in {MODES}")
        if config.transport not in TRANSPORTS:
            raise ValueError(f"transport {config.transport!r} not in {TRANSPORTS}")
        self.config = config
        self.request = config.request()
        self.keep_alive = config.mode == "keepalive"
        self.running = False
        self._measuring = False
        self._ssl: ssl.SSLContext | None = None
        self._trusted: x509.Certificate | None = None
        if config.transport == "tls":
            self._ssl = ssl.create_default_context(
                cafile=str(config.cafile) if config.cafile else None
            )
        elif config.transport == "toy":
            self._trusted = trusted_ca(config.cafile)
        self._open: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._all_closed = asyncio.Event()
        self._reset()
        self.opened_total = 0

    def _reset(self) -> None:
        self.responses = 0
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.opened_in_window = 0
        self.server_closed = 0
        self.body_bytes = 0

    def new_toy_connection(self) -> ClientConnection | None:
        if self._trusted is None:
            return None
        return ClientConnection(
            self._trusted, self.config.host, KeyExchange[self.config.toy_key_exchange.upper()]
        )

    # --- what connections report ---

    def opened(self, conn: _Connection) -> None:
        self._open.add(conn)
        self.opened_total += 1
        if self._measuring:
            self.opened_in_window += 1

    def closed(self, conn: _Connection) -> None:
        self._open.discard(conn)
        if not self._open:
            self._all_closed.set()

    def record(self, elapsed_s: float, response: Response) -> None:
        if not self._measuring:
            return
        if 200 <= response.status < 300:
            self.responses += 1
            self.latencies.append(elapsed_s)
            self.body_bytes = response.body_bytes
        else:
            self.errors[f"status_{response.status}"] += 1

    def error(self, kind: str) -> None:
        if self._measuring:
            self.errors[kind] += 1

    def slot_free(self, *, server_closed: bool) -> None:
        """A slot's connection is done with (answered and closing, or failed): open anew."""
        if server_closed and self._measuring:
            self.server_closed += 1
        if self.running:
            self._start_connection()

    # --- the slots ---

    def _start_connection(self, delay_s: float = 0.0) -> None:
        task = asyncio.get_running_loop().create_task(self._connect(delay_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, delay_s: float) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            await loop.create_connection(
                lambda: _Connection(self, started),
                self.config.host,
                self.config.port,
                ssl=self._ssl,
                server_hostname=self.config.host if self._ssl else None,
            )
        except (OSError, TimeoutError) as exc:
            self.error("connect_" + _error_kind(exc).removeprefix("connect_"))
            if self.running:
                self._start_connection(RETRY_DELAY_S)

    async def run(
        self, duration_s: float, warmup_s: float = 0.0, window_start: float | None = None
    ) -> LoadResult:
        """Load unmeasured for `warmup_s` (or until `window_start`, a `time.monotonic()`
        value: the clock is the system's, so another process can name the moment its own
        measurements start), then `duration_s` measured; everything is closed after."""
        self.running = True
        loaded = time.monotonic()
        for _ in range(self.config.connections):
            self._start_connection()
        if window_start is None:
            window_start = loaded + warmup_s
        if (wait := window_start - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        self._reset()
        self._measuring = True
        started, cpu_started = time.perf_counter(), time.process_time()
        warmed_s = time.monotonic() - loaded
        await asyncio.sleep(duration_s)
        self._measuring = False
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        await self.stop()
        return self._result(elapsed, cpu, warmed_s)

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Close every connection (a graceful close first, then an abort) and connect."""
        self.running = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self._open):
            if conn.transport is not None:
                conn.transport.close()
        if self._open:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout_s)
        for conn in list(self._open):
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)  # let the aborts' connection_lost run

    def _result(self, elapsed_s: float, cpu_s: float, warmup_s: float) -> LoadResult:
        latencies_us = [s * 1e6 for s in self.latencies]
        utilisation = cpu_s / elapsed_s if elapsed_s else 0.0
        return LoadResult(
            generator="ours",
            mode=self.config.mode,
            transport=self.config.transport,
            connections=self.config.connections,
            duration_s=elapsed_s,
            responses=self.responses,
            requests_per_s=self.responses / elapsed_s if elapsed_s else 0.0,
            errors=dict(self.errors),
            errors_total=sum(self.errors.values()),
            connections_opened=self.opened_in_window,
            connections_opened_total=self.opened_total,
            server_closed=self.server_closed,
            latency_mean_us=sum(latencies_us) / len(latencies_us) if latencies_us else 0.0,
            latency_p50_us=percentile(latencies_us, 50),
            latency_p90_us=percentile(latencies_us, 90),
            latency_p99_us=percentile(latencies_us, 99),
            latency_max_us=max(latencies_us, default=0.0),
            cpu_s=cpu_s,
            cpu_utilisation=utilisation,
            saturated=utilisation >= SATURATED_AT,
            response_body_bytes=self.body_bytes,
            warmup_s=warmup_s,
        )


def run_load(
    config: LoadConfig,
    duration_s: float,
    warmup_s: float = 0.0,
    window_start: float | None = None,
) -> LoadResult:
    """One load run on a fresh event loop (see `LoadGenerator.run`)."""
    return asyncio.run(LoadGenerator(config).run(duration_s, warmup_s, window_start))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=HOST, help="server address (default: %(default)s)")
    parser.add_argument("--port", type=int, required=True, help="server port")
    parser.add_argument("--path", default="/", help="request target (default: %(default)s)")
    parser.add_argument("--mode", choices=MODES, default="keepalive")
    parser.add_argument("--transport", choices=TRANSPORTS, default="plain")
    parser.add_argument("--connections", type=int, default=50, help="(default: %(default)s)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds unmeasured first")
    parser.add_argument(
        "--window-start",
        type=float,
        default=None,
        metavar="MONOTONIC",
        help="warm up until this time.monotonic() value instead of for --warmup seconds "
        "(for a harness that measures the server over the same window)",
    )
    parser.add_argument("--cafile", type=Path, default=None, help="CA to trust (tls, toy)")
    parser.add_argument("--toy-key-exchange", choices=("ecdhe", "rsa"), default="ecdhe")
    parser.add_argument(
        "--json", action="store_true", help=f"one line '{MARKER}{{...}}' instead of a summary"
    )
    args = parser.parse_args(argv)
    if args.connections < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--connections >= 1, --duration > 0 and --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = LoadConfig(
        port=args.port,
        host=args.host,
        path=args.path,
        mode=args.mode,
        transport=args.transport,
        connections=args.connections,
        cafile=args.cafile,
        toy_key_exchange=args.toy_key_exchange,
    )
    with contextlib.suppress(KeyboardInterrupt):
        result = run_load(config, args.duration, args.warmup, args.window_start)
        if args.json:
            print(MARKER + json.dumps(result.to_dict()), flush=True)
        else:
            print(
                f"{result.requests_per_s:.0f} req/s, {result.responses} responses, "
                f"errors {result.errors or 0}, p50 {result.latency_p50_us / 1000:.2f} ms, "
                f"p99 {result.latency_p99_us / 1000:.2f} ms, "
                f"{result.connections_opened} connections opened, "
                f"generator CPU {result.cpu_utilisation:.0%}"
                + (" (SATURATED)" if result.saturated else "")
            )
        return 1 if result.errors_total else 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
