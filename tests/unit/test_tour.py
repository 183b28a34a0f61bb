"""The tour's findings are computed from events, never from what a lesson meant to happen:
tested here on hand-made events, including the outcomes a healthy run never produces."""

from __future__ import annotations

from telemetry.events import Event, Name, Role
from tour.kernel import time_wait_finding
from tour.tls import who_finished_first

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
