"""`handshake-lab bench soak`: many connections of every kind, well- and ill-behaved, against
one server process; then proof that nothing was lost and nothing leaked.

Theory of operation: the server runs as its own process with its JSON log at debug level
(every event). Workers open `--connections` connections per round, each one behaviour drawn
from a fixed, seeded mix: HTTP/1.0, keep-alive, pipelined, WebSocket, toy TLS, real TLS, and
clients that vanish mid-request (RST), vanish while the answer is being written, half-close,
or stall until the server's header timeout. After each round, once the server has closed
everything, the server's file descriptors and RSS are read from /proc. Then:

- every request a client completed got its response, and the server's log has a response
  for every request it received on connections that did not vanish;
- connections opened == closed in the metrics, and == the clients' own count;
- the count of each event in the JSON log equals `handshake_lab_events_total` for it;
- no file descriptor leaked (the same count after each round as before the first);
- memory bounded: RSS after the last round within `--rss-margin` of after the first.

Last, `--shutdown` soaks again and sends SIGTERM mid-way: the server must exit 0 within
its shutdown timeout, answer every request it had accepted, and close every open WebSocket
with 1001 (Going Away).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import h11
from prometheus_client.parser import text_string_to_metric_families

from bench.common import HOST, VENV_BIN, Processes, free_port, log, wait_until_serving, write_json
from client.client import HTTPClient
from client.load import FAILURES
from client.ws import connect
from handshake_tls.certs import real_tls_client_context
from handshake_tls.wire import KeyExchange
from telemetry.metrics import ERROR_EVENTS
from telemetry.sockstates import ss_argv

if TYPE_CHECKING:
    import argparse
    import ssl
    from collections.abc import Awaitable, Callable, Iterable

# Behaviour -> weight in the mix (of 100).
MIX: Final = {
    "http1.0": 18,
    "keep-alive": 14,
    "pipelined": 10,
    "websocket": 10,
    "toy-tls": 8,
    "real-tls": 10,
    "vanish": 10,  # RST in the middle of the request head
    "vanish-reading": 6,  # RST while the server writes a large answer
    "half-close": 8,  # the request, then FIN: the answer must still come
    "stall": 6,  # half a head, then nothing: the server's header timeout answers 408
}
KEEP_ALIVE_REQUESTS: Final = 5
PIPELINED: Final = 5
WS_MESSAGES: Final = 3
ERROR_EVENT_NAMES: Final = frozenset(name.value for name in ERROR_EVENTS)
VANISHED: Final = frozenset({"reset", "broken_pipe", "eof"})  # failures a client causes by leaving
HEADER_TIMEOUT_S: Final = 1.0  # the server's, so that stalls end soon
SHUTDOWN_TIMEOUT_S: Final = 10.0
LARGE: Final = 4_000_000  # bytes of /bytes a vanishing reader leaves unread


@dataclass(slots=True)
class Tally:
    """What the clients did and saw, per behaviour."""

    connections: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)  # that must be answered
    responses: Counter[str] = field(default_factory=Counter)  # answers received
    failures: Counter[str] = field(default_factory=Counter)  # "behaviour: error"

    def merge(self, other: Tally) -> None:
        for mine, theirs in zip(
            (self.connections, self.requests, self.responses, self.failures),
            (other.connections, other.requests, other.responses, other.failures),
            strict=True,
        ):
            mine.update(theirs)


@dataclass(slots=True)
class Target:
    port: int
    toy_port: int
    tls_port: int
    cafile: Path
    tls: ssl.SSLContext


# ---- the behaviours --------------------------------------------------------------------


async def http10(t: Target, tally: Tally) -> None:
    async with HTTPClient(http_version="1.0") as client:
        tally.requests["http1.0"] += 1
        if (await client.get(f"http://{HOST}:{t.port}/health")).status == 200:
            tally.responses["http1.0"] += 1
        tally.connections["http1.0"] += client.connections_opened


async def keep_alive(t: Target, tally: Tally) -> None:
    async with HTTPClient() as client:
        for _ in range(KEEP_ALIVE_REQUESTS):
            tally.requests["keep-alive"] += 1
            if (await client.get(f"http://{HOST}:{t.port}/health")).status == 200:
                tally.responses["keep-alive"] += 1
        tally.connections["keep-alive"] += client.connections_opened


async def pipelined(t: Target, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection(HOST, t.port)
    tally.connections["pipelined"] += 1
    heads = [b"GET /health HTTP/1.1\r\nHost: soak\r\n\r\n"] * (PIPELINED - 1)
    heads.append(b"GET /health HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
    tally.requests["pipelined"] += PIPELINED
    writer.write(b"".join(heads))  # all at once: the server answers them in order
    answered = count_responses(await reader.read(-1), 200)  # (awaited before the +=)
    tally.responses["pipelined"] += answered
    writer.close()
    await writer.wait_closed()


def count_responses(data: bytes, status: int) -> int:
    """Complete HTTP/1.1 responses with `status` in `data` (a whole connection's bytes)."""
    parser = h11.Connection(h11.CLIENT)
    _request(parser)
    parser.receive_data(data)
    parser.receive_data(b"")
    answered = 0
    statuses: list[int] = []
    while True:
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError:
            return answered
        if isinstance(event, h11.Response):
            statuses.append(event.status_code)
        elif isinstance(event, h11.EndOfMessage):
            answered += statuses[-1] == status
            if parser.our_state is h11.MUST_CLOSE or parser.their_state is h11.MUST_CLOSE:
                return answered
            parser.start_next_cycle()
            _request(parser)
        elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            return answered


def _request(parser: h11.Connection) -> None:
    """h11 reads responses only to requests it saw sent: tell it one was."""
    parser.send(h11.Request(method="GET", target="/", headers=[("Host", "soak")]))
    parser.send(h11.EndOfMessage())


async def websocket(t: Target, tally: Tally) -> None:
    async with await connect(f"ws://{HOST}:{t.port}/ws/echo") as ws:
        tally.connections["websocket"] += 1
        for number in range(WS_MESSAGES):
            tally.requests["websocket"] += 1
            await ws.send(f"soak {number}")
            echo = await ws.receive()
            if echo is not None and echo.data == f"soak {number}":
                tally.responses["websocket"] += 1


async def toy_tls(t: Target, tally: Tally) -> None:
    kx = random.choice([KeyExchange.RSA, KeyExchange.ECDHE])
    async with HTTPClient(cafile=t.cafile, key_exchange=kx) as client:
        for _ in range(2):
            tally.requests["toy-tls"] += 1
            if (await client.get(f"toytls://{HOST}:{t.toy_port}/health")).status == 200:
                tally.responses["toy-tls"] += 1
        tally.connections["toy-tls"] += client.connections_opened


async def real_tls(t: Target, tally: Tally) -> None:
    async with HTTPClient(tls_context=t.tls) as client:
        for _ in range(2):
            tally.requests["real-tls"] += 1
            if (await client.get(f"https://{HOST}:{t.tls_port}/health")).status == 200:
                tally.responses["real-tls"] += 1
        tally.connections["real-tls"] += client.connections_opened


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel sends RST, not FIN (a client that vanished)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def vanish(t: Target, tally: Tally) -> None:
    _reader, writer = await asyncio.open_connection(HOST, t.port)
    tally.connections["vanish"] += 1
    writer.write(b"GET /health HTTP/1.1\r\nHost: so")
    await writer.drain()
    await asyncio.sleep(random.uniform(0, 0.02))
    _reset(writer)


async def vanish_reading(t: Target, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection(HOST, t.port)
    tally.connections["vanish-reading"] += 1
    writer.write(f"GET /bytes?n={LARGE} HTTP/1.1\r\nHost: soak\r\n\r\n".encode())
    await reader.read(4096)  # the answer has begun; we leave with the rest unread
    _reset(writer)


async def half_close(t: Target, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection(HOST, t.port)
    tally.connections["half-close"] += 1
    tally.requests["half-close"] += 1
    writer.write(b"GET /health HTTP/1.1\r\nHost: soak\r\n\r\n")
    writer.write_eof()  # FIN after the request: the answer must still come
    answered = count_responses(await reader.read(-1), 200)
    tally.responses["half-close"] += answered
    writer.close()
    await writer.wait_closed()


async def stall(t: Target, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection(HOST, t.port)
    tally.connections["stall"] += 1
    tally.requests["stall"] += 1  # it must be answered: 408 when the head timer fires
    writer.write(b"GET /health HTTP/1.1\r\nHost: soak\r\n")
    async with asyncio.timeout(HEADER_TIMEOUT_S * 5):
        answered = count_responses(await reader.read(-1), 408)
    tally.responses["stall"] += answered
    writer.close()
    await writer.wait_closed()


BEHAVIOURS: Final[dict[str, Callable[[Target, Tally], Awaitable[None]]]] = {
    "http1.0": http10,
    "keep-alive": keep_alive,
    "pipelined": pipelined,
    "websocket": websocket,
    "toy-tls": toy_tls,
    "real-tls": real_tls,
    "vanish": vanish,
    "vanish-reading": vanish_reading,
    "half-close": half_close,
    "stall": stall,
}


async def soak_round(
    target: Target,
    connections: int | None,
    concurrency: int,
    seed: int,
    stop: asyncio.Event | None = None,
) -> Tally:
    """`connections` behaviours (None: until `stop` is set) drawn from MIX, `concurrency`
    at a time; a failure is counted under its behaviour and the round goes on."""
    rng = random.Random(seed)
    names, weights = list(MIX), list(MIX.values())
    count = itertools.count() if connections is None else range(connections)
    queue = (rng.choices(names, weights)[0] for _ in count)  # (one iterator: workers share it)
    tally = Tally()
    done = 0
    started = time.monotonic()

    async def worker() -> None:
        nonlocal done
        for behaviour in queue:
            if stop is not None and stop.is_set():
                return
            try:
                await BEHAVIOURS[behaviour](target, tally)
            except (*FAILURES, EOFError, ValueError) as exc:
                tally.failures[f"{behaviour}: {type(exc).__name__}"] += 1
            done += 1
            if done % 2000 == 0:
                rate = done / (time.monotonic() - started)
                log(f"  {done}/{connections or '...'} connections ({rate:.0f}/s)")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


# ---- the server and what /proc and its metrics say --------------------------------------


def fd_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError("no VmRSS")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the server's /metrics, keyed (name, sorted labels)."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (n, _labels), value in samples.items() if n == name)


def wait_until_all_closed(port: int, timeout_s: float = 30.0) -> dict[Any, float]:
    """Scrape until the server has closed every connection it opened."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(port)
        opened = total(samples, "handshake_lab_connections_opened_total")
        closed = total(samples, "handshake_lab_connections_closed_total")
        if opened == closed or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


# ---- the checks ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def read_log(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def unanswered_requests(records: Iterable[dict[str, Any]]) -> list[int]:
    """Server connections where a request was received and no response sent, unless the
    client vanished (reset, broken pipe, EOF: it cannot be answered)."""
    received: Counter[int] = Counter()
    answered: Counter[int] = Counter()
    failed: set[int] = set()
    for r in records:
        if r["role"] != "server" or r["conn_id"] is None:
            continue
        if r["event"] == "http.request.received":
            received[r["conn_id"]] += 1
        elif r["event"] == "http.response.sent":  # (a WebSocket's 101 answers its GET)
            answered[r["conn_id"]] += 1
        elif r["event"] == "tcp.connection.failed" and r.get("kind") in VANISHED:
            failed.add(r["conn_id"])
    return sorted(c for c, n in received.items() if answered[c] < n and c not in failed)


# The log's events that the metrics count in a family of their own (not events_total):
# (event, role) -> the metric whose total must equal the log's count.
COUNTED_APART: Final = {
    ("tcp.connection.accepted", "server"): "handshake_lab_connections_opened_total",
    ("tcp.connection.closed", "server"): "handshake_lab_connections_closed_total",
    ("http.response.sent", "server"): "http_server_request_duration_seconds_count",
    ("ws.message.received", "server"): "handshake_lab_ws_messages_total",
}


def log_matches_metrics(records: Iterable[dict[str, Any]], samples: dict[Any, float]) -> list[str]:
    """Where the log's counts differ from the metrics': each event against
    handshake_lab_events_total, connections, responses and messages against their own
    families, and every error event against errors_total by kind."""
    records = list(records)
    logged = Counter((r["role"], r["event"]) for r in records)
    counted = {
        (dict(labels)["role"], dict(labels)["event"]): value
        for (name, labels), value in samples.items()
        if name == "handshake_lab_events_total"
    }
    differ = [
        f"{role} {event}: log {logged.get((role, event), 0)}, events_total "
        f"{counted.get((role, event), 0):g}"
        for role, event in set(logged) | set(counted)
        if logged.get((role, event), 0) != counted.get((role, event), 0)
    ]
    for (event, role), metric in COUNTED_APART.items():
        in_metric = sum(
            value
            for (name, labels), value in samples.items()
            if name == metric
            and dict(labels).get("role", role) == role
            and (metric != "handshake_lab_ws_messages_total" or ("direction", "received") in labels)
        )
        if logged.get((role, event), 0) != in_metric:
            differ.append(
                f"{role} {event}: log {logged.get((role, event), 0)}, {metric} {in_metric:g}"
            )
    errors = Counter(
        (r["role"], r["kind"]) for r in records if r["event"] in ERROR_EVENT_NAMES and "kind" in r
    )
    in_errors = {
        (dict(labels)["role"], dict(labels)["kind"]): value
        for (name, labels), value in samples.items()
        if name == "handshake_lab_errors_total"
    }
    differ.extend(
        f"errors {role} {kind}: log {errors.get((role, kind), 0)}, errors_total "
        f"{in_errors.get((role, kind), 0):g}"
        for role, kind in set(errors) | set(in_errors)
        if errors.get((role, kind), 0) != in_errors.get((role, kind), 0)
    )
    return sorted(differ)


def soak_checks(
    tally: Tally,
    records: list[dict[str, Any]],
    samples: dict[Any, float],
    fds: list[int],
    rss: list[int],
    rss_margin: float,
    server_connections: float,
) -> list[Check]:
    opened = total(samples, "handshake_lab_connections_opened_total")
    closed = total(samples, "handshake_lab_connections_closed_total")
    client_connections = sum(tally.connections.values())
    short = {b: tally.requests[b] - tally.responses[b] for b in tally.requests}
    short = {b: n for b, n in short.items() if n}
    unanswered = unanswered_requests(records)
    mismatched = log_matches_metrics(records, samples)
    checks = [
        Check(
            "every completed request got its response",
            not short and not tally.failures,
            f"{sum(tally.responses.values())} responses for {sum(tally.requests.values())} "
            f"requests; short by behaviour {short or 'none'}; failures "
            f"{dict(tally.failures) or 'none'}",
        ),
        Check(
            "the server answered every request it received (but to vanished clients)",
            not unanswered,
            f"unanswered on server connections {unanswered[:10] or 'none'}",
        ),
        Check(
            "connections opened == closed == the clients' count",
            opened == closed and server_connections == client_connections,
            f"server opened {opened:g}, closed {closed:g}; during the rounds "
            f"{server_connections:g}, the clients counted {client_connections}",
        ),
        Check(
            "the JSON log's counts == the metrics' (events, connections, responses, errors)",
            not mismatched,
            f"{len(records)} log lines; mismatches {mismatched[:5] or 'none'}",
        ),
        Check(
            "no file descriptor leaked",
            len(set(fds)) == 1,
            f"server fds before and after each round: {fds}",
        ),
    ]
    if len(rss) > 2:  # (at least two rounds: the first's RSS is what the others must keep)
        checks.append(
            Check(
                f"memory bounded (RSS after the last round <= after the first + {rss_margin:.0%})",
                rss[-1] <= rss[1] * (1 + rss_margin),
                f"RSS KiB at start and after each round: {rss}",
            )
        )
    return checks


def shutdown_checks(
    records: list[dict[str, Any]], code: int, took_s: float, held: int
) -> list[Check]:
    """What a SIGTERM under load must leave: exit 0 in time, every accepted request
    answered, every WebSocket open at the time closed with 1001. `held`: the connections
    the test held open itself; the load must have had more open at the signal."""
    started = next((i for i, r in enumerate(records) if r["event"] == "app.shutdown.started"), None)
    completed = next((r for r in records if r["event"] == "app.shutdown.completed"), None)
    if started is None or completed is None:
        return [Check("the server shut down", False, "no shutdown events in its log")]
    open_ws: set[int] = set()
    for r in records[:started]:
        if r["role"] != "server":
            continue
        if r["event"] == "ws.upgrade.accepted":
            open_ws.add(r["conn_id"])
        elif r["event"] in ("ws.close.sent", "ws.close.received", "tcp.connection.closed"):
            open_ws.discard(r["conn_id"])
    # Each open WebSocket's closing after the signal: the server's Close 1001 (Going Away),
    # unless the client's own Close (sent just before) arrived first and was answered.
    going_away: set[int] = set()
    first_close: dict[int, dict[str, Any]] = {}
    for r in records[started:]:
        if r["role"] == "server" and r["event"] in ("ws.close.sent", "ws.close.received"):
            first_close.setdefault(r["conn_id"], r)
    for conn, first in first_close.items():
        if first["event"] == "ws.close.received" or first.get("code") == 1001:
            going_away.add(conn)
    unanswered = unanswered_requests(records)
    open_at_signal = int(records[started].get("open_connections", 0))
    return [
        Check(
            "the signal came under load",
            open_at_signal > held,
            f"{open_at_signal} connections open at the signal, {held} of them held by the test",
        ),
        Check(
            "exit 0 within the shutdown timeout",
            code == 0 and took_s <= SHUTDOWN_TIMEOUT_S + 2,
            f"exit {code} after {took_s:.2f} s (timeout {SHUTDOWN_TIMEOUT_S:g} s)",
        ),
        Check(
            "every request accepted before the signal was answered",
            not unanswered and completed.get("cancelled") == 0,
            f"{completed.get('open_connections')} connections open at the signal, "
            f"{completed.get('cancelled')} cancelled; unanswered {unanswered[:10] or 'none'}",
        ),
        Check(
            "every open WebSocket got Close 1001 (or had its own Close answered)",
            bool(open_ws) and open_ws <= going_away,
            f"{len(open_ws)} open at the signal, {len(open_ws & going_away)} closed with 1001 "
            "or closing already",
        ),
    ]


# ---- the command -----------------------------------------------------------------------


def add_soak_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--connections", type=int, default=20_000, help="per round (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds; memory is compared between the first and the last (default: %(default)s)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="connections at a time (default: %(default)s)"
    )
    parser.add_argument(
        "--rss-margin",
        type=float,
        default=0.10,
        metavar="FRACTION",
        help="RSS may grow this much from the first round to the last (default: %(default)s)",
    )
    parser.add_argument(
        "--ss-interval",
        type=float,
        default=0.1,
        metavar="S",
        help="the server's kernel sampler interval; 0 turns it off (default: %(default)s)",
    )
    parser.add_argument(
        "--drain",
        action="store_true",
        help="after each round, wait (up to 65 s) until the TIME_WAIT sockets it left are "
        "gone before reading RSS: the kernel sampler remembers every socket ss lists, so "
        "RSS follows the kernel's socket count until then",
    )
    parser.add_argument(
        "--shutdown", action="store_true", help="then soak again and send SIGTERM mid-way"
    )
    parser.add_argument("--seed", type=int, default=1, help="the mix's seed (default: %(default)s)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench/results"),
        help="where the JSON goes (default: %(default)s)",
    )


def run_soak(args: argparse.Namespace) -> int:
    if args.connections < 1 or args.rounds < 1 or args.concurrency < 1:
        print(
            "handshake-lab bench soak: --connections, --rounds, --concurrency >= 1", file=sys.stderr
        )
        return 2
    try:
        results = asyncio.run(soak(args))
    except KeyboardInterrupt:
        log("interrupted: the server was stopped; no results")
        return 130
    checks = [Check(**c) for c in results["checks"]]
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}\n     {check.detail}")
    path = write_json(args.out, "soak", results)
    print(f"results: {path}")
    return 0 if all(c.ok for c in checks) else 1


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="handshake-lab-soak-") as scratch, Processes() as ps:
        work = Path(scratch)
        server = SoakedServer.start(ps, work, args.ss_interval)
        target = server.target
        log(f"server pid {server.process.pid}; warming up (every behaviour once or more)")
        await soak_round(target, 100, 8, seed=0)
        base = server.settled()
        fds, rss = [base.fds], [base.rss]
        tally = Tally()
        rounds = []
        for number in range(1, args.rounds + 1):
            log(f"round {number}/{args.rounds}: {args.connections} connections")
            started = time.monotonic()
            round_tally = await soak_round(
                target, args.connections, args.concurrency, args.seed + number
            )
            took = time.monotonic() - started
            if args.drain:
                waited = await asyncio.to_thread(server.drain_time_wait)
                log(f"  TIME_WAIT drained after {waited:.0f} s")
            after = server.settled()
            fds.append(after.fds)
            rss.append(after.rss)
            tally.merge(round_tally)
            rounds.append(
                {
                    "connections": sum(round_tally.connections.values()),
                    "seconds": round(took, 1),
                    "per_second": round(sum(round_tally.connections.values()) / took, 1),
                    "by_behaviour": dict(round_tally.connections),
                    "fds": after.fds,
                    "rss_kib": after.rss,
                }
            )
            log(f"  done in {took:.1f} s; server fds {after.fds}, RSS {after.rss} KiB")
        samples, records = server.snapshot()
        server_connections = total(samples, "handshake_lab_connections_opened_total") - base.opened
        checks = soak_checks(tally, records, samples, fds, rss, args.rss_margin, server_connections)
        results: dict[str, Any] = {
            "benchmark": "soak",
            "settings": {k: v for k, v in vars(args).items() if k not in ("func", "out")},
            "mix": MIX,
            "rounds": rounds,
            "requests": dict(tally.requests),
            "responses": dict(tally.responses),
            "failures": dict(tally.failures),
            "log_lines": len(records),
        }
        if args.shutdown:
            checks += await shutdown_under_load(server, args)
        else:
            server.stop()
        results["checks"] = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks]
        return results


async def shutdown_under_load(server: SoakedServer, args: argparse.Namespace) -> list[Check]:
    """Load again, with WebSockets held open and slow requests in flight; SIGTERM mid-way."""
    log("shutdown: load, WebSockets held open, slow requests; then SIGTERM")
    stop = asyncio.Event()
    target = server.target
    held: list[asyncio.Task[None]] = [
        asyncio.create_task(_hold_websocket(target, stop)) for _ in range(8)
    ]
    load = asyncio.create_task(soak_round(target, None, args.concurrency, 99, stop))
    await asyncio.sleep(2.0)
    slow = [asyncio.create_task(_slow_request(target)) for _ in range(8)]
    await asyncio.sleep(0.5)  # sent and waiting for their answers when the signal comes
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    stop.set()
    code = await asyncio.to_thread(server.process.wait, SHUTDOWN_TIMEOUT_S + 5)
    took = time.monotonic() - started
    for task in (*held, *slow, load):
        with contextlib.suppress(Exception):
            await task
    slow_answered = sum(1 for task in slow if task.done() and not task.exception())
    records = read_log(server.log_path)
    checks = shutdown_checks(records, code, took, held=len(held) + len(slow))
    checks.append(
        Check(
            "slow requests in flight at the signal were answered",
            slow_answered == len(slow),
            f"{slow_answered} of {len(slow)} GET /delay?ms=1500 answered 200",
        )
    )
    return checks


async def _hold_websocket(target: Target, stop: asyncio.Event) -> None:
    async with await connect(f"ws://{HOST}:{target.port}/ws/echo") as ws:
        await stop.wait()
        await ws.receive()  # the server's Close (1001) ends it


async def _slow_request(target: Target) -> None:
    async with HTTPClient() as client:
        response = await client.get(f"http://{HOST}:{target.port}/delay?ms=1500")
    if response.status != 200:
        raise RuntimeError(f"slow request answered {response.status}")


@dataclass(frozen=True, slots=True)
class Settled:
    fds: int
    rss: int
    opened: float


@dataclass(slots=True)
class SoakedServer:
    """The server process under soak, its log, and what it says about itself."""

    process: subprocess.Popen[bytes]
    processes: Processes
    target: Target
    metrics_port: int
    log_path: Path

    @classmethod
    def start(cls, processes: Processes, work: Path, ss_interval_s: float) -> SoakedServer:
        port, toy, tls, metrics = (free_port() for _ in range(4))
        log_path = work / "events.jsonl"
        process = processes.start(
            "server",
            [
                str(VENV_BIN / "handshake-lab"), "server", "--port", str(port),
                "--toy-tls-port", str(toy), "--real-tls-port", str(tls),
                "--metrics-port", str(metrics), "--certs-dir", str(work / "certs"),
                "--log-format", "json", "--log-file", str(log_path), "--log-level", "debug",
                "--header-timeout", str(HEADER_TIMEOUT_S),
                "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S),
                "--ss-interval", str(ss_interval_s),
            ],
            output=work / "server.out",
        )  # fmt: skip
        wait_until_serving(process, port, "/health")
        cafile = work / "certs" / "ca.pem"
        target = Target(port, toy, tls, cafile, real_tls_client_context(cafile))
        return cls(process, processes, target, metrics, log_path)

    def settled(self) -> Settled:
        """Once every connection is closed: the fds (the fewest of a few reads: the ss
        sampler's pipes come and go) and RSS."""
        samples = wait_until_all_closed(self.metrics_port)
        fds = []
        for _ in range(10):
            fds.append(fd_count(self.process.pid))
            time.sleep(0.037)
        return Settled(
            min(fds),
            rss_kib(self.process.pid),
            total(samples, "handshake_lab_connections_opened_total"),
        )

    def drain_time_wait(self, timeout_s: float = 65.0) -> float:
        """Wait until no socket on the server's ports is in TIME_WAIT (Linux holds them
        60 s), then two sampler intervals more; the seconds waited."""
        t = self.target
        port_filter = ss_argv([t.port, t.toy_port, t.tls_port])[-1]  # ( sport = :P or ... )
        argv = ["ss", "-Htan", "state", "time-wait", port_filter]
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            listing = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            if not listing.strip():
                break
            time.sleep(1.0)
        time.sleep(1.0)  # the sampler's next samples see them gone
        return time.monotonic() - started

    def snapshot(self) -> tuple[dict[Any, float], list[dict[str, Any]]]:
        """The metrics and the log lines emitted before the scrape. The log is flushed
        every second; the scrape is retried until no event fell in its instant."""
        for _ in range(20):
            before = time.time()
            samples = scrape(self.metrics_port)
            after = time.time()
            time.sleep(1.5)
            records = read_log(self.log_path)
            if not any(before <= r["ts"] <= after for r in records):
                return samples, [r for r in records if r["ts"] < before]
        raise RuntimeError("events kept arriving during every scrape")

    def stop(self) -> None:
        self.processes.stop(self.process)
