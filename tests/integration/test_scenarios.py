"""Every scenario of `handshake-lab lab`, run for real in the lab network, and what was
observed asserted from the raw events (the wire's segments, each kernel's ss samples), not
from the scenario's own findings."""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING

import pytest

from netlab.scenarios import (
    SCENARIOS,
    listen_queues,
    peak_states,
    request_wait_s,
    run_scenario,
)
from telemetry.events import Name, Role
from tests.conftest import require_tool

if TYPE_CHECKING:
    from pathlib import Path

    from netlab.scenarios import Run
    from telemetry.events import Event

pytestmark = [
    pytest.mark.integration,
    pytest.mark.netlab,
    pytest.mark.usefixtures("lab_possible"),
]


async def run(name: str, pcap: Path | None = None) -> Run:
    lines: list[str] = []
    async with asyncio.timeout(60):
        result = await run_scenario(name, say=lines.append, pcap=pcap)
    assert lines, "a scenario narrates what it does"
    return result


def segments(result: Run, role: Role, flags: str | None = None) -> list[Event]:
    return [
        e
        for e in result.events
        if e.name is Name.WIRE_SEGMENT_FORWARDED
        and e.role is role
        and (flags is None or e.attrs["flags"] == flags)
    ]


def states(result: Run, role: Role) -> set[str]:
    return {
        str(e.attrs["to"])
        for e in result.events
        if e.name is Name.KERNEL_STATE_CHANGED and e.role is role
    }


def test_every_scenario_the_issue_names_exists() -> None:
    assert set(SCENARIOS) >= {
        "handshake", "http10-vs-11", "close", "half-close", "time-wait", "close-wait",
        "simultaneous-close", "lost-ack", "accept-queue", "syn-flood", "keepalive", "tls",
    }  # fmt: skip


async def test_handshake() -> None:
    result = await run("handshake")
    syns = segments(result, Role.CLIENT, "SYN")
    synacks = segments(result, Role.SERVER, "SYN,ACK")
    assert len(syns) == 3
    for syn in syns:
        (synack,) = [s for s in synacks if s.remote == syn.local]
        third = next(s for s in segments(result, Role.CLIENT, "ACK") if s.local == syn.local)
        assert synack.attrs["ack"] == syn.attrs["seq"] + 1  # L1: ack = x + 1
        assert third.attrs["ack"] == synack.attrs["seq"] + 1  # and y + 1
        assert syn.attrs["rel_seq"] == 0
        assert syn.attrs["payload_bytes"] == 0  # a SYN carries no data
    assert len({s.attrs["seq"] for s in syns}) == 3  # L3: a new ISN every time
    # L2: with 50 ms each way the opening states last long enough for ss to see them.
    assert "syn_sent" in states(result, Role.CLIENT)
    assert "syn_recv" in states(result, Role.SERVER)
    assert "established" in states(result, Role.CLIENT) & states(result, Role.SERVER)


async def test_http10_makes_a_connection_per_request_and_keep_alive_one() -> None:
    result = await run("http10-vs-11")
    syn_times = [e.ts for e in segments(result, Role.CLIENT, "SYN")]
    requests = [e.ts for e in result.events if e.name is Name.REQUEST_SENT]
    assert len(requests) == 6
    # HTTP/1.0: each of the first three requests follows a SYN of its own ...
    for index in range(3):
        assert sum(1 for t in syn_times if t < requests[index]) == index + 1
    # ... keep-alive: one more SYN before the fourth request, then none.
    assert sum(1 for t in syn_times if t < requests[3]) == 4
    assert len(syn_times) == 4


async def test_close_shows_every_closing_state() -> None:
    result = await run("close")
    # The server closes first (HTTP/1.0): it walks the active closer's path ...
    assert {"fin_wait1", "fin_wait2", "time_wait"} <= states(result, Role.SERVER)
    # ... and the client, reading EOF and closing 0.3 s later, the passive one.
    assert {"close_wait", "last_ack"} <= states(result, Role.CLIENT)
    server_fin = segments(result, Role.SERVER)
    fin = next(e for e in server_fin if "FIN" in e.attrs["flags"])
    client_fin = next(e for e in segments(result, Role.CLIENT) if "FIN" in e.attrs["flags"])
    assert fin.ts < client_fin.ts


async def test_half_close_lets_the_server_answer_after_the_clients_fin() -> None:
    result = await run("half-close")
    client_fin = next(e for e in segments(result, Role.CLIENT) if "FIN" in e.attrs["flags"])
    answer = [
        e
        for e in segments(result, Role.SERVER)
        if e.ts > client_fin.ts and e.attrs["payload_bytes"] > 0
    ]
    assert answer, "the server sent its response after the client's FIN"
    assert answer[0].attrs["preview"].startswith("HTTP/1.1 200")
    assert "fin_wait2" in states(result, Role.CLIENT)
    assert "close_wait" in states(result, Role.SERVER)


async def test_time_wait_lands_on_the_side_that_closed_first() -> None:
    result = await run("time-wait")
    requests = [e for e in result.events if e.name is Name.REQUEST_SENT]
    second = requests[1].ts
    waits = [
        e
        for e in result.events
        if e.name is Name.KERNEL_STATE_CHANGED and e.attrs["to"] == "time_wait"
    ]
    first_part = {e.role for e in waits if e.ts < second}
    second_part = {e.role for e in waits if e.ts > second}
    assert first_part == {Role.SERVER}  # HTTP/1.0: the server closed first
    assert second_part == {Role.CLIENT}  # keep-alive: the client closed first
    assert all(e.attrs["timer"] == "timewait" and e.attrs["timer_left_s"] > 0 for e in waits)


async def test_close_wait_piles_up_on_a_server_that_never_closes() -> None:
    result = await run("close-wait")
    assert peak_states(result.events, Role.SERVER)["close_wait"] == 3
    assert peak_states(result.events, Role.CLIENT)["fin_wait2"] == 3
    # The scenario's own look at both kernels came after all three clients had closed; only
    # its cleanup, later, closes the leaked sockets.
    looked = max(ts for ts, _, _ in result.samples)
    server_fins = [e for e in segments(result, Role.SERVER) if "FIN" in e.attrs["flags"]]
    assert server_fins, "the cleanup closed the leaked sockets"
    assert not [e for e in server_fins if e.attrs["sent_ts"] < looked], (
        "the leaky server sent no FIN while the clients waited"
    )


async def test_simultaneous_close_goes_through_closing_on_both_sides() -> None:
    result = await run("simultaneous-close")
    assert "closing" in states(result, Role.CLIENT)
    assert "closing" in states(result, Role.SERVER)
    assert "time_wait" in states(result, Role.CLIENT) & states(result, Role.SERVER)


async def test_a_lost_third_segment_keeps_the_server_in_syn_recv() -> None:
    result = await run("lost-ack")
    dropped = [e for e in result.events if e.name is Name.WIRE_SEGMENT_DROPPED]
    assert [e.attrs["flags"] for e in dropped] == ["ACK", "ACK"]
    synacks = segments(result, Role.SERVER, "SYN,ACK")
    assert len(synacks) == 3
    assert len({e.attrs["seq"] for e in synacks}) == 1  # the same SYN-ACK, again
    assert [e.attrs["retransmission"] for e in synacks] == [False, True, True]
    sent = [e.attrs["sent_ts"] for e in synacks]
    first_gap, second_gap = sent[1] - sent[0], sent[2] - sent[1]
    assert second_gap > first_gap * 1.5  # exponential backoff
    assert "syn_recv" in states(result, Role.SERVER)


async def test_a_full_accept_queue_leaves_syns_unanswered_until_it_drains() -> None:
    result = await run("accept-queue")
    queues = listen_queues(result.events)
    assert queues
    assert max(current for current, _ in queues) >= 2  # backlog 1: Linux admits 2
    assert {limit for _, limit in queues} == {1}  # the limit ss reports is the backlog
    syns = segments(result, Role.CLIENT, "SYN")
    assert any(e.attrs["retransmission"] for e in syns)
    assert "syn_sent" in states(result, Role.CLIENT)
    connected = [e for e in result.events if e.name is Name.CONNECT_COMPLETED]
    assert len(connected) == 4  # all were served once the server accepted


async def test_syn_flood_fills_syn_recv_and_syncookies_serve_the_real_client() -> None:
    result = await run("syn-flood")
    client_syns = segments(result, Role.CLIENT, "SYN")
    spoofed = [e for e in client_syns if e.attrs.get("injected")]
    real = [e for e in client_syns if not e.attrs.get("injected")]
    assert len(spoofed) == 128
    assert all(not str(e.local).startswith(f"{result.client_ip}:") for e in spoofed)
    first_round, second_round = {e.local for e in spoofed[:64]}, {e.local for e in spoofed[64:]}
    assert not first_round & second_round  # two floods, not one replayed
    # The server's SYN-ACKs to spoofed addresses go nowhere: the wire drops them (no host).
    answered = {
        e.remote
        for e in result.events
        if e.name is Name.WIRE_SEGMENT_DROPPED
        and e.attrs["reason"] == "no_host"
        and e.attrs["flags"] == "SYN,ACK"
    }
    # syncookies off: only what the SYN queue holds (the backlog, 16, and one more) is
    # answered; on: every SYN is, the ones beyond the queue with a cookie.
    assert len(answered & first_round) <= 17
    assert len(answered & second_round) == 64
    assert peak_states(result.events, Role.SERVER)["syn_recv"] >= 16
    # The real client: its first connect (cookies off) got no SYN-ACK; the second did.
    synacks_to_client = {e.remote for e in segments(result, Role.SERVER, "SYN,ACK")}
    real_ports = list(dict.fromkeys(e.local for e in real))
    assert len(real_ports) == 2
    assert real_ports[0] not in synacks_to_client
    assert real_ports[1] in synacks_to_client
    completed = [e for e in result.events if e.name is Name.CONNECT_COMPLETED]
    assert [e.local for e in completed] == [real_ports[1]]


async def test_keepalive_probes_appear_on_the_wire_and_the_timer_in_ss(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    pcap = tmp_path / "keepalive.pcap"
    result = await run("keepalive", pcap=pcap)
    probes = [e for e in segments(result, Role.CLIENT) if e.attrs["keepalive"]]
    assert len(probes) >= 2
    assert all(e.attrs["payload_bytes"] == 0 for e in probes)
    # Wireshark's own analysis of the same packets finds the same probes.
    reader = await asyncio.create_subprocess_exec(
        tshark, "-r", str(pcap), "-Y", "tcp.analysis.keep_alive", "-T", "fields",
        "-e", "tcp.seq_raw", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    seen_by_tshark = (await reader.communicate())[0].decode().split()
    assert sorted(map(int, seen_by_tshark)) == sorted(e.attrs["seq"] for e in probes)
    gaps = [b.attrs["sent_ts"] - a.attrs["sent_ts"] for a, b in itertools.pairwise(probes)]
    assert all(0.5 < gap < 2.0 for gap in gaps)  # TCP_KEEPINTVL = 1 s
    timers = [sample for _, role, sample in result.samples if role is Role.CLIENT]
    assert any(s.timer == "keepalive" and s.state == "established" for s in timers)


async def test_tls_costs_round_trips_before_the_request() -> None:
    result = await run("tls")
    rtt = 2 * result.delay_s
    plain, toy, real = (request_wait_s(result.events, port) for port in (8080, 8443, 8444))
    assert plain is not None
    assert toy is not None
    assert real is not None
    # Lower bounds are the protocols' own: no handshake can beat the round trips it needs.
    assert plain >= 1 * rtt  # TCP
    assert real >= 2 * rtt  # TCP + TLS 1.3
    assert toy >= 3 * rtt  # TCP + the toy's two round trips (it waits for the Finished)
    assert plain < real < toy
    handshakes = [
        e for e in result.events if e.name is Name.TLS_HANDSHAKE_COMPLETED and e.role is Role.CLIENT
    ]
    assert sorted(str(e.remote).rsplit(":", 1)[1] for e in handshakes) == ["8443", "8444"]
