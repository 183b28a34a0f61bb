"""The event bus and its sinks: JSON log, text log, metrics, timeline."""

from __future__ import annotations

import io
import json

import pytest
from prometheus_client import CollectorRegistry

from telemetry.bus import Bus, Tracer
from telemetry.events import Event, Level, Name, Role, format_address
from telemetry.jsonlog import LogSink, event_to_dict, format_json
from telemetry.metrics import Metrics
from telemetry.timeline import Timeline
from tests.helpers import sample


def test_tracer_emits_nothing_without_sinks_and_everything_with_them() -> None:
    bus = Bus()
    tracer = Tracer(bus, Role.SERVER).bind(7, "127.0.0.1:1", "127.0.0.1:2")
    tracer.emit(Name.CONNECTION_ACCEPTED, transport="tcp")  # no sink: dropped on purpose
    timeline = Timeline()
    bus.subscribe(timeline)
    tracer.emit(Name.CONNECTION_ACCEPTED, transport="tcp")
    (event,) = timeline.events
    assert (event.conn_id, event.local, event.remote, event.layer) == (
        7,
        "127.0.0.1:1",
        "127.0.0.1:2",
        "tcp",
    )


def test_a_failing_sink_does_not_stop_the_others(capsys: pytest.CaptureFixture[str]) -> None:
    bus = Bus()

    def broken(_event: Event) -> None:
        raise RuntimeError("boom")

    timeline = Timeline()
    bus.subscribe(broken)
    bus.subscribe(timeline)
    tracer = Tracer(bus, Role.CLIENT)
    tracer.emit(Name.REQUEST_SENT)
    tracer.emit(Name.REQUEST_SENT)
    assert len(timeline.events) == 2
    assert bus.sink_errors == 2
    assert capsys.readouterr().err.count("boom") == 1  # reported once, not per event


def test_unsubscribe_stops_delivery() -> None:
    bus = Bus()
    timeline = Timeline()
    remove = bus.subscribe(timeline)
    remove()
    assert not bus.active


def test_json_log_has_the_documented_keys_one_object_per_line() -> None:
    stream = io.StringIO()
    bus = Bus()
    bus.subscribe(LogSink(stream, "json"))
    tracer = Tracer(bus, Role.SERVER).bind(3, "127.0.0.1:8080", "127.0.0.1:5000")
    tracer.emit(Name.RESPONSE_SENT, status=200, duration_s=0.001, bytes=12)
    tracer.emit(Name.FIN_SENT, reason="http_1.0")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert record["event"] == "http.response.sent"
    assert record["role"] == "server"
    assert record["conn_id"] == 3
    assert record["level"] == "info"
    assert record["remote"] == "127.0.0.1:5000"
    assert (record["status"], record["bytes"]) == (200, 12)
    assert isinstance(record["ts"], float)


def test_text_log_is_one_readable_line() -> None:
    stream = io.StringIO()
    sink = LogSink(stream, "text")
    sink(
        Event(
            Name.CONNECTION_ACCEPTED, Role.SERVER, 0.0, 4, None, "127.0.0.1:9", attrs={"x": "a b"}
        )
    )
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert "#4 tcp.connection.accepted 127.0.0.1:9 x='a b'" in line


def test_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="json or text"):
        LogSink(io.StringIO(), "xml")
    with pytest.raises(ValueError, match="debug, info"):
        LogSink(io.StringIO(), "json", level="chatty")


@pytest.mark.parametrize(
    ("level", "logged"),
    [
        ("debug", ["ws.message.received", "ws.close.sent", "ws.connection.failed"]),
        ("info", ["ws.close.sent", "ws.connection.failed"]),
        ("warning", ["ws.connection.failed"]),
        ("error", []),
    ],
)
def test_the_log_level_leaves_out_less_severe_events(level: str, logged: list[str]) -> None:
    stream = io.StringIO()
    bus = Bus()
    bus.subscribe(LogSink(stream, "json", level=level))
    tracer = Tracer(bus, Role.SERVER)
    tracer.emit(Name.WS_MESSAGE_RECEIVED, Level.DEBUG, bytes=1)
    tracer.emit(Name.WS_CLOSE_SENT, code=1000)
    tracer.emit(Name.WS_CONNECTION_FAILED, Level.WARNING, kind="ws_protocol_error")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == logged


def test_format_address() -> None:
    assert format_address(("127.0.0.1", 80)) == "127.0.0.1:80"
    assert format_address(("::1", 80, 0, 0)) == "[::1]:80"
    assert format_address(None) is None


def _connection(tracer: Tracer, requests: int, closed_by: str) -> None:
    tracer.emit(Name.CONNECTION_ACCEPTED, transport="tcp")
    for index in range(1, requests + 1):
        tracer.emit(
            Name.RESPONSE_SENT,
            method="GET",
            status=200,
            http_version="1.1",
            index=index,
            bytes=2,
            duration_s=0.0001,
            keep_alive=True,
        )
    tracer.emit(
        Name.CONNECTION_CLOSED,
        transport="tcp",
        protocol="http/1.1",
        closed_by=closed_by,
        reason="x",
        requests=requests,
        lifetime_s=0.1,
        bytes_received=10,
        bytes_sent=20,
    )


def test_metrics_follow_the_events() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    bus = Bus()
    bus.subscribe(metrics.observe)
    tracer = Tracer(bus, Role.SERVER)
    _connection(tracer, 3, "client")
    _connection(tracer, 1, "server")
    tracer.emit(Name.REQUEST_REJECTED, status=431, kind="header_too_large", reason="big")
    opened = sample(registry, "handshake_lab_connections_opened_total", role="server")
    closed = sample(registry, "handshake_lab_connections_closed_total", role="server")
    assert opened == closed == 2
    assert sample(registry, "handshake_lab_connections_closed_total", closed_by="server") == 1
    assert sample(registry, "handshake_lab_connections_active", role="server") == 0
    assert (
        sample(registry, "http_server_request_duration_seconds_count", http_request_method="GET")
        == 4
    )
    assert sample(registry, "handshake_lab_requests_per_connection_sum", role="server") == 4
    assert sample(registry, "handshake_lab_requests_per_connection_count", role="server") == 2
    assert sample(registry, "handshake_lab_errors_total", kind="header_too_large") == 1
    assert sample(registry, "handshake_lab_received_bytes_total") == 20
    assert sample(registry, "handshake_lab_events_total") == 2 * 2 + 4 + 1


def test_unknown_methods_do_not_grow_the_label_set() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    tracer_bus = Bus()
    tracer_bus.subscribe(metrics.observe)
    tracer = Tracer(tracer_bus, Role.SERVER)
    for method in ("FOO", "BAR", "GET"):
        tracer.emit(
            Name.RESPONSE_SENT,
            method=method,
            status=405,
            http_version="1.1",
            index=1,
            bytes=0,
            duration_s=0.0,
            keep_alive=True,
        )
    count = "http_server_request_duration_seconds_count"
    assert sample(registry, count, http_request_method="_OTHER") == 2
    assert sample(registry, count, http_request_method="FOO") == 0


@pytest.mark.parametrize(
    "event",
    [
        Event(Name.REQUEST_RECEIVED, Role.SERVER, 1795313119.123456, 3, "127.0.0.1:8080",
              "[::1]:5000", attrs={"target": '/a"b\\c\n\u00e9', "index": 1, "ok": True}),
        Event(Name.LISTENER_STARTED, Role.SERVER, 1.5, None, None, None),
        Event(Name.RESPONSE_SENT, Role.CLIENT, 2.0, 9, None, None, attrs={"duration_s": 1e-05}),
    ],
)  # fmt: skip
def test_fast_json_line_is_the_documented_object(event: Event) -> None:
    line = format_json(event)
    assert line.endswith("}\n")
    assert line.count("\n") == 1  # a newline inside a value is escaped
    assert json.loads(line) == event_to_dict(event)
