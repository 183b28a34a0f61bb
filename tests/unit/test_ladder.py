"""The ladder and the scenario findings are pure functions of a timeline: tested here on
hand-made events (the contract netlab/wire.py and telemetry/sockstates.py emit)."""

from __future__ import annotations

from typing import Any

import pytest

from netlab import ladder
from netlab.scenarios import peak_states
from telemetry.events import Event, Name, Role

CLIENT = "10.77.0.1:40312"
SERVER = "10.77.0.2:8080"


def segment(
    role: Role,
    flags: str,
    t: float,
    *,
    seq: int,
    ack: int | None = None,
    rel_seq: int | None = None,
    rel_ack: int | None = None,
    size: int = 0,
    dropped: bool = False,
    client: str = CLIENT,
    **extra: Any,
) -> Event:
    local, remote = (client, SERVER) if role is Role.CLIENT else (SERVER, client)
    name = Name.WIRE_SEGMENT_DROPPED if dropped else Name.WIRE_SEGMENT_FORWARDED
    attrs = {
        "flags": flags,
        "seq": seq,
        "ack": ack,
        "rel_seq": rel_seq,
        "rel_ack": rel_ack,
        "payload_bytes": size,
        "window": 64240,
        "sent_ts": t,
        **extra,
    }
    if dropped:
        attrs["reason"] = "rule:client:ack:1"
    return Event(name, role, t + 0.01, local=local, remote=remote, attrs=attrs)


def kernel(role: Role, t: float, to: str, frm: str = "closed", **extra: Any) -> Event:
    local, remote = (CLIENT, SERVER) if role is Role.CLIENT else (SERVER, CLIENT)
    attrs = {"from": frm, "to": to, "timer": None, "timer_left_s": None, **extra}
    return Event(Name.KERNEL_STATE_CHANGED, role, t, local=local, remote=remote, attrs=attrs)


def handshake(client: str = CLIENT, t0: float = 100.0, isn: int = 1000) -> list[Event]:
    return [
        segment(Role.CLIENT, "SYN", t0, seq=isn, rel_seq=0, client=client),
        segment(
            Role.SERVER, "SYN,ACK", t0 + 0.02, seq=7, ack=isn + 1, rel_seq=0, rel_ack=1,
            client=client,
        ),
        segment(
            Role.CLIENT, "ACK", t0 + 0.04, seq=isn + 1, ack=8, rel_seq=1, rel_ack=1,
            client=client,
        ),
    ]  # fmt: skip


def test_a_syn_shows_its_isn_and_the_syn_ack_its_absolute_ack() -> None:
    syn, synack, ack = handshake()
    assert ladder.segment_label(syn.attrs) == "SYN seq=1000"
    assert ladder.segment_label(synack.attrs) == "SYN,ACK seq=7 ack=1001"
    # After the handshake numbers are relative to each side's ISN, as Wireshark shows them.
    assert ladder.segment_label(ack.attrs) == "ACK seq=1 ack=1"


def test_data_segments_show_their_size_the_first_line_and_retransmissions() -> None:
    event = segment(
        Role.CLIENT, "PSH,ACK", 1.0, seq=5, ack=9, rel_seq=1, rel_ack=1, size=78,
        preview="GET / HTTP/1.0", retransmission=True,
    )  # fmt: skip
    assert ladder.segment_label(event.attrs) == (
        "PSH,ACK seq=1 ack=1 78 B GET / HTTP/1.0 (retransmission)"
    )


def test_without_relative_numbers_the_absolute_ones_are_shown() -> None:
    event = segment(Role.SERVER, "ACK", 1.0, seq=55, ack=66)
    assert ladder.segment_label(event.attrs) == "ACK seq=55 ack=66"


@pytest.mark.parametrize(
    ("role", "dropped", "start", "end"),
    [
        (Role.CLIENT, False, "──", "▶"),
        (Role.SERVER, False, "◀", "─"),
        (Role.CLIENT, True, "──", "✕"),
        (Role.SERVER, True, "✕", "─"),
    ],
)
def test_arrows_point_from_the_sender_and_a_drop_ends_in_a_cross(
    role: Role, dropped: bool, start: str, end: str
) -> None:
    drawn = ladder.arrow("SYN seq=1", role, dropped=dropped)
    assert drawn.startswith(start)
    assert drawn.endswith(end)
    assert "SYN seq=1" in drawn
    assert len(drawn) == ladder.ARROW_WIDTH


def test_a_long_label_is_cut_to_the_arrow_width() -> None:
    drawn = ladder.arrow("x" * 200, Role.CLIENT)
    assert len(drawn) <= ladder.ARROW_WIDTH
    assert "…" in drawn


def test_rows_are_in_send_order_with_states_in_their_side_column() -> None:
    events = [
        kernel(Role.SERVER, 100.025, "syn_recv"),
        *handshake(),
        kernel(Role.CLIENT, 100.005, "syn_sent"),
    ]
    table = ladder.rows(events)
    assert [r.t_ms for r in table] == sorted(r.t_ms for r in table)
    assert table[0].t_ms == 0.0
    assert table[0].arrow.startswith("── SYN seq=1000")
    client_states = [r.client_state for r in table if r.client_state]
    server_states = [r.server_state for r in table if r.server_state]
    assert client_states == ["SYN_SENT"]
    assert server_states == ["SYN_RECV"]


def test_a_timer_is_noted_beside_its_state() -> None:
    (row,) = ladder.rows(
        [kernel(Role.SERVER, 1.0, "time_wait", timer="timewait", timer_left_s=59.9)]
    )
    assert row.server_state == "TIME_WAIT"
    assert row.note == "timewait timer 59.9 s"


def test_a_dropped_segment_says_why() -> None:
    (row,) = ladder.rows([segment(Role.CLIENT, "ACK", 1.0, seq=1, ack=1, dropped=True)])
    assert row.arrow.endswith("✕")
    assert row.note == "dropped: rule:client:ack:1"


def test_app_events_become_notes_and_unknown_ones_are_left_out() -> None:
    events = [
        Event(Name.CONNECTION_ACCEPTED, Role.SERVER, 1.0, conn_id=1),
        Event(Name.WS_PING_SENT, Role.CLIENT, 1.1, conn_id=1),
    ]
    (row,) = ladder.rows(events)
    assert row.note == "server: accept()"


def test_several_connections_are_told_apart_by_the_client_port() -> None:
    events = [*handshake(), *handshake("10.77.0.1:40313", t0=101.0, isn=5000)]
    drawn = ladder.render(events)
    assert "[:40312] SYN seq=1000" in drawn
    assert "[:40313] SYN seq=5000" in drawn
    single = ladder.render(handshake())
    assert "[:" not in single


def test_render_has_a_header_and_the_findings_and_says_when_the_wire_was_not_seen() -> None:
    drawn = ladder.render(
        handshake(), client="client 10.77.0.1", server="server 10.77.0.2", footer=["1 connection"]
    )
    lines = drawn.splitlines()
    assert "client 10.77.0.1" in lines[0]
    assert "server 10.77.0.2" in lines[0]
    assert len(lines) == 1 + 3 + 1
    assert lines[-1] == "=> 1 connection"
    assert "not observed" in ladder.render([], wire_seen=False)


def test_peak_states_replays_transitions_per_socket() -> None:
    other = "10.77.0.1:40313"
    events = [
        kernel(Role.SERVER, 1.0, "close_wait", "established"),
        Event(
            Name.KERNEL_STATE_CHANGED, Role.SERVER, 1.1, local=SERVER, remote=other,
            attrs={"from": "established", "to": "close_wait"},
        ),
        kernel(Role.SERVER, 1.2, "closed", "close_wait"),
        kernel(Role.CLIENT, 1.3, "fin_wait2", "fin_wait1"),
    ]  # fmt: skip
    assert peak_states(events, Role.SERVER)["close_wait"] == 2
    assert peak_states(events, Role.CLIENT) == {"fin_wait2": 1}


def test_a_keepalive_probe_is_labelled() -> None:
    event = segment(Role.CLIENT, "ACK", 1.0, seq=40, ack=9, rel_seq=39, rel_ack=2, keepalive=True)
    assert ladder.segment_label(event.attrs) == "ACK seq=39 ack=2 (keep-alive probe)"


def test_without_the_wire_the_application_notes_stand_beside_their_side() -> None:
    events = [
        Event(Name.CONNECT_COMPLETED, Role.CLIENT, 1.0, conn_id=1, local=CLIENT, remote=SERVER),
        Event(Name.CONNECTION_ACCEPTED, Role.SERVER, 1.1, conn_id=1, local=SERVER, remote=CLIENT),
        Event(
            Name.TLS_HANDSHAKE_STEP, Role.SERVER, 1.2, conn_id=1, local=SERVER, remote=CLIENT,
            attrs={"step": "server_hello"},
        ),
    ]  # fmt: skip
    lines = ladder.render(events, wire_seen=False).splitlines()
    connect, accept, hello = lines[1:]
    wire_column = 8 + 2 + ladder.STATE_WIDTH + 1
    assert connect[wire_column:].startswith("connect() returns")
    # The server's notes end where the server's column begins.
    assert accept.rstrip().endswith("accept()")
    assert len(accept.rstrip()) == wire_column + ladder.NO_WIRE_WIDTH
    assert hello.rstrip().endswith("tls ServerHello")
    # With the wire, the same events stay notes after the server's column.
    (row,) = ladder.rows(events[2:])
    assert row.note == "server: tls ServerHello"


def test_without_the_wire_several_connections_keep_their_port_tag() -> None:
    other = "10.77.0.1:40313"
    events = [
        kernel(Role.CLIENT, 1.0, "established"),
        Event(
            Name.KERNEL_STATE_CHANGED, Role.CLIENT, 1.0, local=other, remote=SERVER,
            attrs={"from": "closed", "to": "established"},
        ),
        Event(Name.CONNECT_COMPLETED, Role.CLIENT, 1.1, conn_id=2, local=other, remote=SERVER),
    ]  # fmt: skip
    last = ladder.render(events, wire_seen=False).splitlines()[-1]
    assert "connect() returns" in last
    assert last.endswith("[:40313]")
