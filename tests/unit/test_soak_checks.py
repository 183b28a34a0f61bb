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
        rec("tcp.connection.failed", 3, kind="reset"),  # the client vanished: cannot be answered
        rec("http.request.received", 5),
        rec("tcp.connection.failed", 5, kind="internal_error"),  # ours: no excuse
        rec("http.request.received", 4, role="client"),  # not the server's
    ]
    assert unanswered_requests(records) == [2, 5]


def metrics(**counts: float) -> dict[Any, float]:
    return {
        ("handshake_lab_events_total", (("event", name.replace("_", ".")), ("role", "server"))): v
        for name, v in counts.items()
    }


def test_log_and_metrics_counts_must_match_per_event() -> None:
    records = [rec("http.request.received"), rec("http.request.received")]
    assert log_matches_metrics(records, metrics(http_request_received=2)) == []
    (mismatch,) = log_matches_metrics(records, metrics(http_request_received=3))
    assert "log 2, events_total 3" in mismatch


def checks_by_name(**changes: Any) -> dict[str, bool]:
    tally = Tally()
    tally.requests["http1.0"] = tally.responses["http1.0"] = 1
    tally.connections["http1.0"] = 1
    settings: dict[str, Any] = {
        "tally": tally,
        "records": [
            rec(name, conn)
            for name in ("tcp.connection.accepted", "tcp.connection.closed")
            for conn in (1, 2)
        ],
        "samples": {
            **metrics(tcp_connection_accepted=2, tcp_connection_closed=2),
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
    assert not checks_by_name(
        samples={
            ("handshake_lab_connections_opened_total", ()): 2.0,
            ("handshake_lab_connections_closed_total", ()): 1.0,
        }
    )["connections opened == closed == the clients' count"]
    assert "memory bounded" not in checks_by_name(rss=[100, 200])  # one round: not measured
    assert not checks_by_name(server_connections=2.0)[
        "connections opened == closed == the clients' count"
    ]
    short = Tally()
    short.requests["stall"] = 1
    assert not checks_by_name(tally=short)["every completed request got its response"]


def shutdown_records(**completed: Any) -> list[dict[str, Any]]:
    return [
        rec("ws.upgrade.accepted", 1),
        rec("ws.upgrade.accepted", 2),
        rec("app.shutdown.started", None, open_connections=5),
        rec("ws.close.sent", 1, code=1001),
        rec("ws.close.received", 2, code=1000),  # its own Close came first: answered
        rec("app.shutdown.completed", None, **{"cancelled": 0, "open_connections": 5, **completed}),
    ]


def shutdown_by_name(records: list[dict[str, Any]], code: int = 0, took_s: float = 1.0,
                     held: int = 2) -> dict[str, bool]:  # fmt: skip
    return {c.name.split(" (")[0]: c.ok for c in shutdown_checks(records, code, took_s, held)}


def test_shutdown_checks_pass_and_each_fails_on_its_fault() -> None:
    assert all(shutdown_by_name(shutdown_records()).values())
    assert not shutdown_by_name(shutdown_records(), code=1)["exit 0 within the shutdown timeout"]
    assert not shutdown_by_name(shutdown_records(), took_s=60)["exit 0 within the shutdown timeout"]
    assert not shutdown_by_name(shutdown_records(cancelled=1))[
        "every request accepted before the signal was answered"
    ]
    assert not shutdown_by_name(shutdown_records(), held=5)["the signal came under load"]
    went_on = shutdown_records()
    went_on[4] = rec("ws.close.sent", 2, code=1000)  # the server closed it, not with 1001
    assert not shutdown_by_name(went_on)["every open WebSocket got Close 1001"]
    (missing,) = shutdown_checks(went_on[:2], 0, 1.0, 2)
    assert not missing.ok


def test_the_log_must_match_the_connection_and_error_families_too() -> None:
    records = [rec("tcp.connection.accepted"), rec("http.request.rejected", kind="bad_request")]
    samples = {
        **metrics(tcp_connection_accepted=1, http_request_rejected=1),
        ("handshake_lab_connections_opened_total", (("role", "server"), ("transport", "tcp"))): 1.0,
        ("handshake_lab_errors_total", (("kind", "bad_request"), ("role", "server"))): 1.0,
    }
    assert log_matches_metrics(records, samples) == []
    samples[("handshake_lab_errors_total", (("kind", "bad_request"), ("role", "server")))] = 2.0
    (mismatch,) = log_matches_metrics(records, samples)
    assert mismatch == "errors server bad_request: log 1, errors_total 2"
