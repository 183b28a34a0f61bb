"""The tour's findings are computed from events, never from what a lesson meant to happen:
tested here on hand-made events, including the outcomes a healthy run never produces."""

from __future__ import annotations

from telemetry.events import Event, Name, Role
from tour.keep_alive import connections_summary
from tour.kernel import time_wait_finding
from tour.tls import who_finished_first
from tour.websocket import summary

SERVER = "127.0.0.1:8080"
CLIENT = "127.0.0.1:40000"


def time_wait(role: Role, left: float | None = 59.0) -> Event:
    local, remote = (CLIENT, SERVER) if role is Role.CLIENT else (SERVER, CLIENT)
    return Event(
        Name.KERNEL_STATE_CHANGED, role, 1.0, local=local, remote=remote,
        attrs={"from": "fin_wait2", "to": "time_wait", "timer_left_s": left},
    )  # fmt: skip


def test_time_wait_on_the_expected_side() -> None:
    finding = time_wait_finding([time_wait(Role.SERVER)], CLIENT, "HTTP/1.0", "the server")
    assert finding == (
        f"HTTP/1.0: TIME_WAIT on the server's socket {SERVER} -> {CLIENT}, 59 s left on its "
        "timer, as it sent FIN first."
    )


def test_time_wait_on_the_other_side_is_said_so() -> None:
    finding = time_wait_finding([time_wait(Role.CLIENT, None)], CLIENT, "HTTP/1.0", "the server")
    assert "TIME_WAIT on the client's socket" in finding
    assert finding.endswith("though the server closed.")


def test_time_wait_of_another_connection_or_none_at_all() -> None:
    other = "127.0.0.1:40001"
    finding = time_wait_finding([time_wait(Role.SERVER)], other, "keep-alive", "the client")
    assert (
        finding
        == f"keep-alive: no TIME_WAIT seen for the connection from {other} (between samples)."
    )


def completed(role: Role, ts: float, version: str, client: str = CLIENT) -> Event:
    local, remote = (client, SERVER) if role is Role.CLIENT else (SERVER, client)
    return Event(
        Name.TLS_HANDSHAKE_COMPLETED, role, ts, local=local, remote=remote,
        attrs={"kind": "real", "version": version},
    )  # fmt: skip


def test_who_finished_first_per_connection() -> None:
    other = "127.0.0.1:40001"
    lines = who_finished_first(
        [
            completed(Role.CLIENT, 1.000, "TLSv1.3"),
            completed(Role.SERVER, 1.002, "TLSv1.3"),
            completed(Role.SERVER, 2.000, "TLSv1.2", other),
            completed(Role.CLIENT, 2.001, "TLSv1.2", other),
            completed(Role.CLIENT, 3.0, "TLSv1.3", "127.0.0.1:40002"),  # its server unseen
        ]
    )
    assert len(lines) == 2
    assert lines[0].startswith("TLSv1.3: the client's handshake completed first, 2.000 ms")
    assert lines[1].startswith("TLSv1.2: the server's handshake completed first, 1.000 ms")


def server_event(name: Name, conn: int, **attrs: object) -> Event:
    return Event(name, Role.SERVER, 1.0, conn_id=conn, attrs=dict(attrs))


def test_websocket_summary_says_only_what_the_events_show() -> None:
    events = [
        server_event(Name.CONNECTION_ACCEPTED, 1),
        server_event(Name.WS_UPGRADE_ACCEPTED, 1, path="/ws/echo"),
        server_event(Name.WS_MESSAGE_RECEIVED, 1),
        server_event(Name.WS_MESSAGE_SENT, 1),
        server_event(Name.WS_CLOSE_SENT, 1, code=1001),  # the server began closing
        server_event(Name.FIN_SENT, 1, active_closer=False),  # and the client's FIN came first
    ]
    echoes, closing = summary(events)[1:]
    assert echoes.startswith("1 message(s) echoed on /ws/echo; 0 pushed")
    assert "the client sent Close first on 0 of 1, and 0 closing handshake(s) completed" in closing
    assert "the server sent FIN first on 0 of 1" in closing
    assert closing.endswith("TIME_WAIT on the client.")


def test_connections_summary_counts_who_closed_first() -> None:
    events = [
        server_event(Name.CONNECTION_ACCEPTED, 1),
        server_event(Name.CONNECTION_ACCEPTED, 2),
        server_event(Name.CONNECTION_CLOSED, 1, closed_by="server"),
        server_event(Name.CONNECTION_CLOSED, 2, closed_by="client"),
    ]
    lines = connections_summary(events, 2)
    assert lines[0] == "=> 2 requests, 2 TCP connection(s), so 2 three-way handshake(s)."
    assert "The server closed 1 connection(s) first" in lines[1]
    assert "The client closed 1 connection(s) first" in lines[2]
