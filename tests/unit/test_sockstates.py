"""The kernel sampler's pure parts: ss output parsing (on real captures, tests/data/ss/),
diffing per 4-tuple, the CPU-budget pacing, and the metrics set from a sample."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from telemetry.bus import Bus
from telemetry.events import Event, Level, Name, Role
from telemetry.metrics import Metrics
from telemetry.sockstates import (
    CLOSED,
    TCP_STATES,
    UNKNOWN,
    Pacer,
    SocketSample,
    SocketTracker,
    parse_ss,
    parse_time_s,
    ss_argv,
)
from tests.helpers import sample

DATA = Path(__file__).resolve().parent.parent / "data" / "ss"


def capture(name: str) -> list[SocketSample]:
    return parse_ss((DATA / f"{name}.txt").read_text())


def by_state(samples: list[SocketSample], state: str) -> list[SocketSample]:
    return [s for s in samples if s.state == state]


# --- parsing real captures -------------------------------------------------------------


def test_listen_socket_shows_its_accept_queue_and_limit() -> None:
    samples = capture("listen_estab")
    (listen,) = by_state(samples, "listen")
    # backlog 4, three clients connected, one accepted: two wait in the accept queue
    assert (listen.local, listen.remote, listen.recv_q, listen.send_q) == (
        "127.0.0.1:8080",
        "0.0.0.0:*",
        2,
        4,
    )
    assert listen.local_port == 8080


def test_established_both_ends_with_tcp_info_and_keepalive_timer() -> None:
    samples = capture("listen_estab")
    established = by_state(samples, "established")
    assert len(established) == 6  # three connections, both ends on one host
    unread = [s for s in established if s.recv_q]
    assert [(s.local, s.recv_q) for s in unread] == [("127.0.0.1:8080", 27)]
    keepalive = [s for s in established if s.timer == "keepalive"]
    assert len(keepalive) == 2
    assert {s.timer_left_s for s in keepalive} == {119 * 60.0}
    assert all(s.rtt_ms is not None and s.rtt_ms > 0 for s in established)
    assert all(s.cwnd is not None and s.cwnd >= 10 for s in established)


def test_header_line_is_skipped_when_minus_h_was_not_honoured() -> None:
    with_header = (DATA / "with_header.txt").read_text()
    assert with_header.startswith("State")
    assert [(s.state, s.local, s.remote) for s in parse_ss(with_header)] == [
        (s.state, s.local, s.remote) for s in capture("listen_estab")
    ]


def test_syn_sent_with_its_retransmission_timer() -> None:
    samples = capture("syn_sent")
    syn_sent = by_state(samples, "syn_sent")
    assert {s.remote for s in syn_sent} == {"10.99.0.1:8080", "127.0.0.1:8080"}
    for s in syn_sent:
        assert (s.timer, s.retransmits, s.send_q) == ("on", 1, 1)  # the SYN, sent twice
        assert s.timer_left_s is not None
        assert 0 < s.timer_left_s < 2
    (listen,) = by_state(samples, "listen")
    assert (listen.recv_q, listen.send_q) == (1, 0)  # listen(0): full at one


def test_syn_recv_timer_reads_seconds_dot_milliseconds() -> None:
    (syn_recv,) = by_state(capture("syn_recv"), "syn_recv")
    assert (syn_recv.local, syn_recv.remote) == ("10.99.0.2:8080", "10.99.0.1:40000")
    # ss printed "1.520ms": one second and 520 ms, not 1.52 ms
    assert (syn_recv.timer, syn_recv.timer_left_s, syn_recv.retransmits) == ("on", 1.52, 1)
    assert syn_recv.rtt_ms is None  # a request socket has no TCP info


def test_closing_states_fin_wait_close_wait_last_ack() -> None:
    samples = capture("closing_states")
    states = {s.state for s in samples}
    assert {"fin_wait1", "fin_wait2", "close_wait", "last_ack", "established"} <= states
    (fin_wait1,) = by_state(samples, "fin_wait1")
    assert fin_wait1.send_q > 0  # its FIN waits behind data the peer does not read
    assert fin_wait1.timer == "persist"  # zero-window probes
    assert fin_wait1.retrans_total == 1
    (last_ack,) = by_state(samples, "last_ack")
    assert (last_ack.local_port, last_ack.timer) == (8080, "persist")
    orphan = [s for s in by_state(samples, "fin_wait2") if s.timer == "timewait"]
    assert len(orphan) == 1  # closed, not shut down: the FIN timeout runs
    assert orphan[0].timer_left_s == 59.0


def test_simultaneous_close_shows_closing() -> None:
    (closing,) = by_state(capture("closing"), "closing")
    assert closing.remote == "127.0.0.1:8080"
    assert closing.send_q > 0


def test_time_wait_on_whichever_end_closed_first_with_its_timer() -> None:
    time_wait = by_state(capture("time_wait"), "time_wait")
    assert len(time_wait) == 3
    assert sorted(s.local_port == 8080 for s in time_wait) == [False, False, True]
    assert {(s.timer, s.timer_left_s) for s in time_wait} == {("timewait", 59.0)}


def test_ipv6_brackets_mapped_addresses_and_interface_scope() -> None:
    samples = capture("ipv6")
    keys = {(s.state, s.local, s.remote, s.interface) for s in samples}
    assert ("listen", "[::1]:8080", "[::]:*", None) in keys
    assert ("established", "[::1]:8080", "[::1]:44420", None) in keys
    assert ("listen", "*:8081", "*:*", "lo") in keys  # SO_BINDTODEVICE: ss's "*%lo:8081"
    mapped = [s for s in samples if s.local.startswith("[::ffff:127.0.0.1]")]
    assert [(m.local, m.interface, m.local_port) for m in mapped] == [
        ("[::ffff:127.0.0.1]:8081", "lo", 8081)
    ]


def test_odd_lines_are_skipped_or_kept_as_far_as_they_parse() -> None:
    samples = parse_ss((DATA / "odd.txt").read_text())
    assert [(s.state, s.remote) for s in samples] == [
        ("established", "127.0.0.1:36572"),
        ("new_state", "127.0.0.1:36575"),  # an unknown state is kept, spelled like ours
        ("time_wait", "127.0.0.1:44088"),
        ("time_wait", "127.0.0.1:44089"),
    ]
    established, unknown, time_wait, cut = samples
    assert (established.rtt_ms, established.cwnd, established.retrans_total) == (0.008, 10, 2)
    assert (unknown.timer, unknown.timer_left_s, unknown.retransmits) == ("on", None, None)
    assert unknown.cwnd is None  # "cwnd:" with no value
    assert time_wait.timer_left_s == 65.0  # "1min5sec"
    assert (cut.timer, cut.rtt_ms, cut.cwnd) == (None, None, None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("119min", 7140.0, id="minutes"),
        pytest.param("1min5sec", 65.0, id="minutes-seconds"),
        pytest.param("59sec", 59.0, id="seconds"),
        pytest.param("1.520ms", 1.52, id="seconds-dot-millis"),
        pytest.param("056ms", 0.056, id="millis"),
        pytest.param("", 0.0, id="zero"),  # print_ms_timer(0) prints nothing
        pytest.param("soon", None, id="garbage"),
    ],
)
def test_timer_times(text: str, seconds: float | None) -> None:
    assert parse_time_s(text) == seconds


@pytest.mark.parametrize("text", ["", "\n\n", "\t ts sack\n", "State Recv-Q Send-Q\n"])
def test_nothing_to_parse(text: str) -> None:
    assert parse_ss(text) == []


def test_ss_is_asked_for_both_ends_of_every_port() -> None:
    argv = ss_argv([8443, 8080, 8080], netns="lab-server")
    assert argv[:4] == ["ss", "-N", "lab-server", "-tanoiH"]
    assert argv[4] == "( sport = :8080 or dport = :8080 or sport = :8443 or dport = :8443 )"
    assert "-N" not in ss_argv([8080])


# --- diffing ---------------------------------------------------------------------------


def sock(state: str, local: str, remote: str, **fields: object) -> SocketSample:
    return SocketSample(state, local, remote, 0, 0, **fields)  # type: ignore[arg-type]


SERVER_END = ("127.0.0.1:8080", "127.0.0.1:40000")
CLIENT_END = ("127.0.0.1:40000", "127.0.0.1:8080")


def transitions(tracker: SocketTracker, *samples: SocketSample) -> list[tuple[str, str, str]]:
    return [(c.role, c.from_state, c.to_state) for c in tracker.update(samples)]


def test_new_sockets_come_from_closed_with_the_role_owning_them() -> None:
    tracker = SocketTracker([8080])
    # What the first sample finds was there before it: when it appeared is unknown.
    assert transitions(tracker, sock("listen", "127.0.0.1:8080", "0.0.0.0:*")) == [
        ("server", UNKNOWN, "listen")
    ]
    assert transitions(
        tracker,
        sock("listen", "127.0.0.1:8080", "0.0.0.0:*"),
        sock("established", *SERVER_END),
        sock("established", *CLIENT_END),
    ) == [
        ("server", CLOSED, "established"),
        ("client", CLOSED, "established"),
    ]
    assert transitions(tracker, sock("listen", "127.0.0.1:8080", "0.0.0.0:*")) == [
        ("server", "established", CLOSED),
        ("client", "established", CLOSED),
    ]


def test_an_unchanged_sample_gives_no_changes_even_when_queues_and_timers_move() -> None:
    tracker = SocketTracker([8080])
    tracker.update([sock("time_wait", *SERVER_END, timer="timewait", timer_left_s=59.0)])
    later = sock("time_wait", *SERVER_END, timer="timewait", timer_left_s=58.0)
    assert tracker.update([later]) == []
    assert tracker.sockets[SERVER_END] is later  # but the latest values are kept


def test_a_state_change_carries_the_socket_as_it_is_now() -> None:
    tracker = SocketTracker([8080])
    tracker.update([sock("established", *SERVER_END)])
    now = sock("time_wait", *SERVER_END, timer="timewait", timer_left_s=59.0, retransmits=0)
    (change,) = tracker.update([now])
    attrs = change.attrs()
    assert (change.role, attrs["from"], attrs["to"]) == (Role.SERVER, "established", "time_wait")
    assert (attrs["timer"], attrs["timer_left_s"], attrs["retransmits"]) == ("timewait", 59.0, 0)
    assert {"recv_q", "send_q", "rtt_ms", "cwnd"} <= attrs.keys()


def test_a_gone_socket_closes_with_nothing_said_of_its_queues_or_timer() -> None:
    tracker = SocketTracker([8080])
    tracker.update([SocketSample("close_wait", *SERVER_END, 1, 5, timer="on", timer_left_s=0.2)])
    (change,) = tracker.update([])
    attrs = change.attrs()
    assert (attrs["from"], attrs["to"], attrs["recv_q"], attrs["send_q"], attrs["timer"]) == (
        "close_wait",
        CLOSED,
        None,  # ss said nothing of a socket that is gone: not 0
        None,
        None,
    )
    assert change.sample.local == SERVER_END[0]  # where it was


def test_a_reused_four_tuple_is_a_new_socket_not_a_transition() -> None:
    tracker = SocketTracker([8080])
    tracker.update([sock("time_wait", *CLIENT_END)])
    # TIME_WAIT never becomes ESTABLISHED: the port was reused by a new connection
    assert transitions(tracker, sock("established", *CLIENT_END)) == [
        ("client", "time_wait", CLOSED),
        ("client", CLOSED, "established"),
    ]


def test_states_a_sample_skipped_are_one_change() -> None:
    tracker = SocketTracker([8080])
    tracker.update([sock("established", *CLIENT_END)])
    # FIN_WAIT_1 and FIN_WAIT_2 came and went between the samples
    assert transitions(tracker, sock("time_wait", *CLIENT_END)) == [
        ("client", "established", "time_wait")
    ]


def test_a_given_role_owns_every_socket() -> None:
    tracker = SocketTracker([8080], role=Role.CLIENT)
    assert [c.role for c in tracker.update([sock("established", *SERVER_END)])] == [Role.CLIENT]
    assert list(tracker.counts()) == ["client"]


def test_counts_have_every_state_of_every_role_and_listen_queues_per_port() -> None:
    tracker = SocketTracker([8080, 8443])
    tracker.update(capture("listen_estab"))
    counts = tracker.counts()
    assert set(counts) == {"server", "client"}
    for by_state in counts.values():
        assert tuple(by_state) == TCP_STATES
    assert counts["server"]["listen"] == 1
    assert counts["server"]["established"] == 3
    assert counts["client"]["established"] == 3
    assert counts["client"]["time_wait"] == 0
    assert tracker.listen_queues() == {"8080": {"current": 2, "limit": 4}}


def test_counts_leave_out_states_node_exporter_has_no_name_for() -> None:
    tracker = SocketTracker([8080])
    tracker.update([sock("new_state", *SERVER_END)])
    assert sum(tracker.counts()["server"].values()) == 0


# --- pacing ----------------------------------------------------------------------------


def test_a_cheap_sample_keeps_the_interval() -> None:
    pacer = Pacer(interval_s=0.1, cpu_budget=0.02)
    pacer.start(10.0)
    assert pacer.finish(10.001) == pytest.approx(0.001)
    assert pacer.delay_s(10.001) == pytest.approx(0.099)
    assert pacer.achieved_interval_s is None  # one sample: no interval yet


def test_a_slow_sample_stretches_the_interval_to_the_budget() -> None:
    pacer = Pacer(interval_s=0.1, cpu_budget=0.02)
    pacer.start(0.0)
    pacer.finish(0.028)  # 28 ms (14,000 TIME_WAIT) at 2 %: one sample per 1.4 s
    assert pacer.delay_s(0.028) == pytest.approx(1.4 - 0.028)
    pacer.start(1.4)
    assert pacer.achieved_interval_s == pytest.approx(1.4)


def test_late_wakeups_give_no_negative_delay_and_the_interval_achieved_is_reported() -> None:
    pacer = Pacer(interval_s=0.1, cpu_budget=0.5)
    pacer.start(0.0)
    pacer.finish(0.01)
    assert pacer.delay_s(0.5) == 0.0  # the loop was busy: sample at once
    pacer.start(0.5)
    assert pacer.achieved_interval_s == pytest.approx(0.5)


@pytest.mark.parametrize("budget", [0.02, 0.1, 0.5])
def test_over_a_run_of_varying_costs_the_time_spent_stays_within_the_budget(
    budget: float,
) -> None:
    pacer = Pacer(interval_s=0.1, cpu_budget=budget)
    now = 0.0
    first = None
    for cost in [0.0025, 0.004, 0.028, 0.2, 0.001, 0.05, 0.003] * 5:
        now += pacer.delay_s(now)
        first = now if first is None else first
        pacer.start(now)
        now += cost
        pacer.finish(now)
    now += pacer.delay_s(now)  # until the next one is due
    assert first is not None
    assert pacer.spent_s <= budget * (now - first) + 1e-9
    assert pacer.samples == 35


@pytest.mark.parametrize(("interval", "budget"), [(0, 0.02), (-1, 0.02), (0.1, 0), (0.1, 1.5)])
def test_pacer_refuses_nonsense(interval: float, budget: float) -> None:
    with pytest.raises(ValueError, match=r"must be|fraction"):
        Pacer(interval, budget)


# --- metrics ---------------------------------------------------------------------------


def sample_event(
    counts: dict[str, dict[str, int]],
    queues: dict[str, dict[str, int]],
    interval_s: float | None = 0.1,
    role: Role = Role.SERVER,
) -> Event:
    return Event(
        Name.KERNEL_SAMPLE_TAKEN,
        role,
        0.0,
        level=Level.DEBUG,
        attrs={
            "sockets": counts,
            "listen_queues": queues,
            "sockets_total": 0,
            "changes": 0,
            "cpu_s": 0.004,
            "interval_s": interval_s,
            "next_in_s": 0.1,
        },
    )


def test_metrics_gauges_follow_the_latest_sample() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    bus = Bus()
    bus.subscribe(metrics.observe)
    tracker = SocketTracker([8080])
    tracker.update(capture("listen_estab"))
    bus.emit(sample_event(tracker.counts(), tracker.listen_queues(), interval_s=None))
    sockets = "handshake_lab_tcp_sockets"
    assert sample(registry, sockets, role="client", state="established") == 3
    for role in ("server", "client"):
        for state in TCP_STATES:  # every series is there, zero or not
            assert any(
                s.labels == {"role": role, "state": state}
                for m in registry.collect()
                for s in m.samples
                if s.name == sockets
            ), (role, state)
    assert sample(registry, "handshake_lab_tcp_listen_queue_length", port="8080") == 2
    assert sample(registry, "handshake_lab_tcp_listen_queue_limit", port="8080") == 4
    assert sample(registry, "handshake_lab_ss_sample_cpu_seconds_count") == 1
    assert sample(registry, "handshake_lab_ss_sample_interval_seconds") == 0  # none yet

    tracker.update([])  # everything gone, the listener too
    bus.emit(sample_event(tracker.counts(), tracker.listen_queues(), interval_s=1.4))
    assert sample(registry, sockets, role="client", state="established") == 0
    assert sample(registry, sockets, role="server", state="listen") == 0
    assert not any(
        s.name == "handshake_lab_tcp_listen_queue_length"
        for m in registry.collect()
        for s in m.samples
    )
    assert sample(registry, "handshake_lab_ss_sample_interval_seconds", role="server") == 1.4
    assert sample(registry, "handshake_lab_ss_sample_cpu_seconds_count") == 2


def test_a_sampler_that_gave_up_leaves_no_stale_gauges() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    tracker = SocketTracker([8080])
    tracker.update(capture("listen_estab"))
    metrics.observe(sample_event(tracker.counts(), tracker.listen_queues(), interval_s=0.3))
    assert sample(registry, "handshake_lab_tcp_sockets", role="client", state="established") == 3
    metrics.observe(
        Event(Name.KERNEL_SAMPLER_UNAVAILABLE, Role.SERVER, 1.0, attrs={"reason": "ss failed"})
    )
    gauges = {
        "handshake_lab_tcp_sockets",
        "handshake_lab_tcp_listen_queue_length",
        "handshake_lab_tcp_listen_queue_limit",
        "handshake_lab_ss_sample_interval_seconds",
    }
    left = [s.name for m in registry.collect() for s in m.samples if s.name in gauges]
    assert left == []  # what the last sample said is no longer shown as current
    assert sample(registry, "handshake_lab_ss_sample_cpu_seconds_count") == 1  # history stays


def test_a_client_side_sample_leaves_the_server_side_gauges_alone() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    server = SocketTracker([8080], role=Role.SERVER)
    server.update(capture("listen_estab"))
    metrics.observe(sample_event(server.counts(), server.listen_queues()))
    client = SocketTracker([8080], role=Role.CLIENT)
    client.update([])
    metrics.observe(sample_event(client.counts(), client.listen_queues(), role=Role.CLIENT))
    assert sample(registry, "handshake_lab_tcp_sockets", role="server", state="listen") == 1
    assert sample(registry, "handshake_lab_tcp_listen_queue_limit", port="8080") == 4


def test_state_changes_are_counted_by_role_from_and_to() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    tracker = SocketTracker([8080])
    tracker.update([sock("established", *SERVER_END)])
    for change in tracker.update([sock("time_wait", *SERVER_END)]):
        metrics.observe(Event(Name.KERNEL_STATE_CHANGED, change.role, 0.0, attrs=change.attrs()))
    labels = {"role": "server", "from": "established", "to": "time_wait"}
    assert sample(registry, "handshake_lab_tcp_state_changes_total", **labels) == 1
