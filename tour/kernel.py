"""Lesson `kernel`: the kernel's own socket states, seen with `ss` (L2, L7, L8): TIME_WAIT
lands on whichever side sent FIN first."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from client.client import HTTPClient
from client.trace import ours, trace
from telemetry.events import Event, Name, Role
from tour.tour import Lesson

if TYPE_CHECKING:
    from tour.tour import Tour

HOLD_S: Final = 0.1  # the kept-alive connection stays open for five of ss's samples


async def run(tour: Tour) -> list[str]:
    async with trace(tour.bus, tour.http, tour.out) as timeline:
        async with HTTPClient(tour.bus, http_version="1.0") as client:
            short = await client.get(f"{tour.http}/health")
        tour.say(f"HTTP/1.0 request from {short.local}: the server answers, then closes first")
        async with HTTPClient(tour.bus, http_version="1.1") as client:
            kept = await client.get(f"{tour.http}/health")
            tour.say(
                f"HTTP/1.1 request from {kept.local}: the connection stays open {HOLD_S:g} s..."
            )
            await asyncio.sleep(HOLD_S)
        tour.say("... until our client is done and closes it first")
        tour.say("the ladder, from both ends' events and ss:")
    port = tour.server.port
    changes = [e for e in ours(timeline.events, port) if e.name is Name.KERNEL_STATE_CHANGED]
    if any(e.name is Name.KERNEL_SAMPLER_UNAVAILABLE for e in timeline.events):
        return ["ss could not run here (apt-get install iproute2): no kernel states to show."]
    return [
        time_wait_finding(changes, short.local, "HTTP/1.0", "the server"),
        time_wait_finding(changes, kept.local, "keep-alive", "the client"),
        "Linux holds TIME_WAIT a fixed 60 s (TCP_TIMEWAIT_LEN; RFC 793's 2 MSL would be 4 "
        "minutes): a late duplicate segment of this connection cannot be taken for part of "
        "a new one with the same four-tuple (addresses and ports), and if the last ACK is "
        "lost the peer's FIN can still be answered. A busy HTTP/1.0 server pays for "
        "it in sockets: `handshake-lab bench throughput` counts thousands.",
    ]


def time_wait_finding(
    changes: list[Event], client_address: str | None, mode: str, expected: str
) -> str:
    """Which side of the connection from `client_address` ss saw in TIME_WAIT."""
    for event in changes:
        if event.attrs.get("to") != "time_wait":
            continue
        client_end = event.local if event.role is Role.CLIENT else event.remote
        if client_end != client_address:
            continue
        side = "the client" if event.role is Role.CLIENT else "the server"
        left = event.attrs.get("timer_left_s")
        timer = f", {left:g} s left on its timer" if left is not None else ""
        verdict = "as it sent FIN first" if side == expected else f"though {expected} closed"
        return (
            f"{mode}: TIME_WAIT on {side}'s socket {event.local} -> {event.remote}{timer}, "
            f"{verdict}."
        )
    return f"{mode}: no TIME_WAIT seen for the connection from {client_address} (between samples)."


LESSON = Lesson(
    name="kernel",
    title="The kernel's socket states: TIME_WAIT on whoever closed first",
    syllabus="L2 L7 L8",
    explain="Everything so far was the application's view. The kernel keeps its own state "
    "for every socket (LISTEN, ESTABLISHED, FIN_WAIT_2, TIME_WAIT...), which `ss -tan` "
    "lists. We sample it every 20 ms during two requests: HTTP/1.0, where the server closes "
    "first, and HTTP/1.1, where the connection stays open until the client closes it.",
    look_at="in the ladder's state columns: ESTABLISHED on both ends while the keep-alive "
    "connection is held open; "
    "then TIME_WAIT on the server for the HTTP/1.0 connection and on the client for the "
    "keep-alive one, with the 60 s timer counting down.",
    run=run,
)
