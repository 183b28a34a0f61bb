"""The soak's checks on hand-made logs and metrics: each must fail on what it guards."""

from __future__ import annotations

from typing import Any

from bench.soak import Tally, log_matches_metrics, shutdown_checks, soak_checks, unanswered_requests


def rec(event: str, conn: int | None = 1, role: str = "server", **attrs: Any) -> dict[str, Any]:
    return {"event": event, "role": role, "conn_id": conn, "ts": 0.0, **attrs}


def test_a_request_without_a_response_is_unanswered_unless_the_client_vanished() -> None:
    records = [
        rec("http.request.received", 1),
        rec("http.response.sent", 1, status=200),
        rec("http.request.received", 2),  # never answered
        rec("http.request.received", 3),
        rec("tcp.connection.failed", 3),  # the client vanished: cannot be answered
        rec("http.request.received", 4, role="client"),  # not the server's
    ]
    assert unanswered_requests(records) == [2]


def metrics(**counts: float) -> dict[Any, float]:
    return {
        ("handshake_lab_events_total", (("event", name.replace("_", ".")), ("role", "server"))): v
        for name, v in counts.items()
    }


def test_log_and_metrics_counts_must_match_per_event() -> None:
    records = [rec("tcp.connection.accepted"), rec("tcp.connection.accepted")]
    assert log_matches_metrics(records, metrics(tcp_connection_accepted=2)) == []
    (mismatch,) = log_matches_metrics(records, metrics(tcp_connection_accepted=3))
    assert "log 2, metrics 3" in mismatch


def checks_by_name(**changes: Any) -> dict[str, bool]:
    tally = Tally()
    tally.requests["http1.0"] = tally.responses["http1.0"] = 1
    tally.connections["http1.0"] = 1
    settings: dict[str, Any] = {
        "tally": tally,
        "records": [],
        "samples": {
            ("handshake_lab_connections_opened_total", ()): 2.0,
            ("handshake_lab_connections_closed_total", ()): 2.0,
        },
        "fds": [11, 11, 11],
        "rss": [100, 200, 210],
        "rss_margin": 0.1,
        "server_connections": 1.0,
    }
    settings.update(changes)
    return {c.name.split(" (")[0]: c.ok for c in soak_checks(**settings)}


def test_soak_checks_pass_and_each_fails_on_its_fault() -> None:
    assert all(checks_by_name().values())
    assert not checks_by_name(fds=[11, 12, 11])["no file descriptor leaked"]
    assert not checks_by_name(rss=[100, 200, 221])["memory bounded"]
    assert not checks_by_name(server_connections=2.0)[
        "connections opened == closed == the clients' count"
    ]
    short = Tally()
    short.requests["stall"] = 1
    assert not checks_by_name(tally=short)["every completed request got its response"]


def test_shutdown_checks_need_1001_for_every_open_websocket_and_exit_0() -> None:
    records = [
        rec("ws.upgrade.accepted", 1),
        rec("ws.upgrade.accepted", 2),
        rec("app.shutdown.started", None),
        rec("ws.close.sent", 1, code=1001),
        rec("ws.close.sent", 2, code=1000),  # not Going Away
        rec("app.shutdown.completed", None, cancelled=0, open_connections=2),
    ]
    by_name = {c.name: c.ok for c in shutdown_checks(records, 0, 1.0)}
    assert not by_name["every open WebSocket got Close 1001 (or had its own Close answered)"]
    assert by_name["exit 0 within the shutdown timeout"]
    assert not {c.name: c.ok for c in shutdown_checks(records, 1, 1.0)}[
        "exit 0 within the shutdown timeout"
    ]
    (missing,) = shutdown_checks(records[:2], 0, 1.0)
    assert not missing.ok
