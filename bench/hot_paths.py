"""Micro-benchmarks of the server's per-request hot path, in µs per call (timeit, best of N).

They put a price on each piece the profile (bench.profile_server) shows, so that a change
can be weighed before it is made. Each line is one operation as the server does it per
request, or per event, next to a cheaper way to do the same thing where there is one:

  telemetry   Tracer.emit of one RESPONSE_SENT with no sink, the JSON log, the metrics,
              both; json.dumps(default=str) against one reused JSONEncoder; the metrics
              sink; prometheus-client updates with and without a .labels() lookup
  http core   ServerHTTPConnection: one GET in and its response out (sans-I/O), against
              bare h11 doing the same, h11 parsing alone, and the response bytes
              formatted by hand
  routes      App.handle(GET /)
  asyncio     `async with asyncio.timeout(...)` around an await that does not block

    .venv/bin/python -m bench.hot_paths
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import time
import timeit
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Final

import h11
from prometheus_client import CollectorRegistry, Counter, Histogram

from server.app import App, Request, Response
from server.config import HTTPLimits, ServerConfig
from server.http_conn import RequestCompleted, ServerHTTPConnection
from telemetry.bus import Bus, Tracer
from telemetry.events import Event, Name, Role
from telemetry.jsonlog import LogSink, event_to_dict
from telemetry.metrics import Metrics, method_label

if TYPE_CHECKING:
    from collections.abc import Callable

REQUEST: Final = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:50000\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
)
RESPONSE_ATTRS: Final[dict[str, Any]] = {
    "method": "GET",
    "status": 200,
    "http_version": "1.1",
    "index": 7,
    "bytes": 792,
    "duration_s": 0.000123,
    "keep_alive": True,
}


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best (least disturbed) time of one call, in µs."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def telemetry_cases() -> dict[str, Callable[[], object]]:
    def tracer(*sinks: Callable[[Event], None]) -> Tracer:
        bus = Bus()
        for sink in sinks:
            bus.subscribe(sink)
        return Tracer(bus, Role.SERVER).bind(1, "127.0.0.1:50000", "127.0.0.1:40000")

    log_sink = LogSink(io.StringIO(), "json")
    metrics = Metrics(CollectorRegistry())
    silent = tracer()
    logged = tracer(log_sink)
    measured = tracer(metrics.observe)
    both = tracer(log_sink, metrics.observe)
    event = Event(
        Name.RESPONSE_SENT, Role.SERVER, 1.0, 1, "127.0.0.1:50000", "127.0.0.1:40000",
        attrs=dict(RESPONSE_ATTRS),
    )  # fmt: skip
    encoder = json.JSONEncoder(default=str)
    # prometheus-client's own objects, as telemetry/metrics.py used them up to fe14499.
    registry = CollectorRegistry()
    counter = Counter("bench_events_total", "-", ["role", "event"], registry=registry)
    histogram = Histogram("bench_duration_seconds", "-", ["a", "b", "c"], registry=registry)
    counter_child = counter.labels("server", Name.RESPONSE_SENT.value)
    histogram_child = histogram.labels(method_label("GET"), "200", "1.1")

    def labels_each_time() -> None:
        counter.labels("server", Name.RESPONSE_SENT.value).inc()
        histogram.labels(method_label("GET"), "200", "1.1").observe(0.000123)

    def emit(t: Tracer) -> Callable[[], object]:
        return lambda: t.emit(Name.RESPONSE_SENT, **RESPONSE_ATTRS)

    def cached_children() -> None:
        counter_child.inc()
        histogram_child.observe(0.000123)

    closed_attrs: dict[str, Any] = {
        "transport": "tcp",
        "closed_by": "client",
        "reason": "peer_closed",
        "lifetime_s": 0.01,
        "bytes_received": 700,
        "bytes_sent": 9000,
        "protocol": "http/1.1",
        "requests": 1,
    }

    def emit_closed() -> None:
        both.emit(Name.CONNECTION_CLOSED, **closed_attrs)

    return {
        "Tracer.emit, no sink (telemetry off)": emit(silent),
        "Tracer.emit, JSON log sink (to memory)": emit(logged),
        "Tracer.emit, metrics sink": emit(measured),
        "Tracer.emit, both sinks (telemetry on)": emit(both),
        "Tracer.emit(CONNECTION_CLOSED), both sinks": emit_closed,
        "json.dumps(event_to_dict(e), default=str)": lambda: json.dumps(
            event_to_dict(event), default=str
        ),
        "one reused JSONEncoder(default=str).encode": lambda: encoder.encode(event_to_dict(event)),
        "Metrics.observe(RESPONSE_SENT)": lambda: metrics.observe(event),
        "prometheus-client: counter + histogram, .labels() each time": labels_each_time,
        "prometheus-client: the same on cached label children": cached_children,
    }


def http_cases() -> dict[str, Callable[[], object]]:
    config = ServerConfig()
    app = App(config)
    headers = [(b"host", b"127.0.0.1:50000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
    request = Request("GET", "/", "1.1", headers, b"")
    response = app.handle(request)
    assert isinstance(response, Response)
    body = response.body
    date = formatdate(time.time(), usegmt=True).encode()
    response_headers = [(b"date", date), (b"content-type", b"text/plain; charset=utf-8")]

    def ours_cycle() -> None:
        core = ServerHTTPConnection(config.limits, 0.0)
        core.receive_data(REQUEST, 0.0)
        while type(core.next_event(0.0)) is not RequestCompleted:
            pass
        core.send_response(0.0, 200, response_headers, body)

    def h11_cycle() -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(REQUEST)
        while type(conn.next_event()) is not h11.EndOfMessage:
            pass
        conn.send(h11.Response(status_code=200, headers=[(b"server", b"x"), *response_headers]))
        conn.send(h11.Data(data=body))
        conn.send(h11.EndOfMessage())

    def h11_parse_only() -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(REQUEST)
        while type(conn.next_event()) is not h11.EndOfMessage:
            pass

    head_headers = [
        (b"server", b"handshake-lab"),
        *response_headers,
        (b"content-length", b"%d" % len(body)),
        (b"keep-alive", b"timeout=5, max=99"),
    ]

    def hand_formatted() -> bytes:
        # What h11's three send() calls produce, formatted directly (no validation).
        lines = b"".join(b"%s: %s\r\n" % (name, value) for name, value in head_headers)
        return b"HTTP/1.1 200 OK\r\n" + lines + b"\r\n" + body

    def new_core() -> None:
        ServerHTTPConnection(config.limits, 0.0)

    # A keep-alive connection answering request after request (no cap on their number).
    endless = HTTPLimits(max_requests_per_connection=10**9)
    core = ServerHTTPConnection(endless, 0.0)

    def keep_alive_cycle() -> None:
        core.receive_data(REQUEST, 0.0)
        while type(core.next_event(0.0)) is not RequestCompleted:
            pass
        core.send_response(0.0, 200, response_headers, body)

    return {
        "ServerHTTPConnection(): a new connection's core": new_core,
        "new core + GET in + response out": ours_cycle,
        "bare h11, the same (new Connection)": h11_cycle,
        "bare h11, parsing the GET only": h11_parse_only,
        "response bytes formatted by hand (no h11)": hand_formatted,
        "keep-alive core: GET in + response out": keep_alive_cycle,
        "App.handle(GET /)": lambda: app.handle(request),
    }


def asyncio_cases(number: int, repeat: int) -> dict[str, float]:
    async def measure() -> dict[str, float]:
        loop = asyncio.get_running_loop()

        async def nothing() -> None:
            return None

        async def plain() -> None:
            for _ in range(number):
                await nothing()

        async def with_timeout() -> None:
            for _ in range(number):
                async with asyncio.timeout(30.0):
                    await nothing()

        async def with_timeout_at() -> None:
            for _ in range(number):
                async with asyncio.timeout_at(loop.time() + 10.0):
                    await nothing()

        results = {}
        for name, coroutine in (
            ("await of a coroutine that returns at once", plain),
            ("the same inside asyncio.timeout(30)", with_timeout),
            ("the same inside asyncio.timeout_at(now + 10)", with_timeout_at),
        ):
            times = []
            for _ in range(repeat):
                started = loop.time()
                await coroutine()
                times.append((loop.time() - started) / number * 1e6)
            results[name] = min(times)
        return results

    return asyncio.run(measure())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hot_paths",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--number", type=int, default=20000, help="calls per timing (20000)")
    parser.add_argument("--repeat", type=int, default=5, help="timings, best kept (5)")
    parser.add_argument("--cpu", type=int, default=0, help="pin to this CPU (default: 0)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu})
    results: dict[str, Any] = {}
    for group, cases in (("telemetry", telemetry_cases()), ("http core", http_cases())):
        results[group] = {name: best_us(fn, args.number, args.repeat) for name, fn in cases.items()}
    results["asyncio"] = asyncio_cases(args.number, args.repeat)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for group, values in results.items():
        print(f"\n{group}")
        for name, us in values.items():
            print(f"  {us:8.2f} µs  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
