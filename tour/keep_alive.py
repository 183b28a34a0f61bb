"""Lesson `http`: HTTP/1.0's connection per request against HTTP/1.1 keep-alive (L11, L12,
L8): the same requests both ways, the handshakes counted, and who closed first."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from client.__main__ import format_response
from client.client import HTTPClient
from client.trace import trace
from telemetry.events import Event, Name, Role
from tour.tour import Lesson

if TYPE_CHECKING:
    from client.pool import Response
    from tour.tour import Tour

MODES = (
    ("1.0", "HTTP/1.0: one TCP connection per request"),
    ("1.1", "HTTP/1.1 keep-alive: one TCP connection for all requests"),
)


async def run(tour: Tour) -> list[str]:
    responses: dict[str, list[Response]] = {}
    for version, title in MODES:
        tour.say(f"\n{title}")
        async with trace(tour.bus, tour.http, tour.out) as timeline:
            async with HTTPClient(tour.bus, http_version=version) as client:
                responses[version] = []
                for number in range(1, tour.count + 1):
                    response = await client.get(f"{tour.http}/health")
                    responses[version].append(response)
                    tour.say(format_response(number, "GET", "/health", version, response))
            tour.say("the ladder, from both ends' events and ss:")
        for line in connections_summary(timeline.events, tour.count):
            tour.say(line)
    return comparison(responses["1.0"], responses["1.1"])


def connections_summary(events: list[Event], count: int) -> list[str]:
    """How many connections `count` requests took, and who sent FIN first on them."""
    accepted = [e for e in events if e.name is Name.CONNECTION_ACCEPTED]
    closed = [e for e in events if e.name is Name.CONNECTION_CLOSED and e.role is Role.SERVER]
    by_server = sum(1 for e in closed if e.attrs["closed_by"] == "server")
    by_client = sum(1 for e in closed if e.attrs["closed_by"] == "client")
    lines = [
        f"=> {count} requests, {len(accepted)} TCP connection(s), so {len(accepted)} "
        "three-way handshake(s)."
    ]
    if by_server:
        lines.append(
            f"   The server closed {by_server} connection(s) first (it sent FIN first): "
            "TIME_WAIT stays on the server."
        )
    if by_client:
        lines.append(
            f"   The client closed {by_client} connection(s) first, when it was done: "
            "TIME_WAIT stays on the client."
        )
    return lines


def comparison(short: list[Response], kept: list[Response]) -> list[str]:
    """What keep-alive saved: handshakes, and the connect time of every reused request."""
    new_short = sum(1 for r in short if not r.reused)
    new_kept = sum(1 for r in kept if not r.reused)
    reused = [r for r in kept if r.reused]
    lines = [
        f"HTTP/1.0 made {new_short} connection(s) for {len(short)} requests; keep-alive made "
        f"{new_kept} for {len(kept)}: {new_short - new_kept} handshake(s) saved, and as many "
        "closes (and TIME_WAIT sockets).",
    ]
    if reused:
        ms = 1000.0
        connect = statistics.median(r.timings.connect_s for r in short) * ms
        total_short = statistics.median(r.timings.total_s for r in short) * ms
        total_reused = statistics.median(r.timings.total_s for r in reused) * ms
        lines.append(
            f"median request: {total_short:.3f} ms with a new connection (connect alone "
            f"{connect:.3f} ms), {total_reused:.3f} ms reusing one. On loopback a round trip "
            "costs microseconds; across the world each handshake costs a full round trip "
            "(`handshake-lab bench latency --rtt 0,20ms` measures it)."
        )
    return lines


LESSON = Lesson(
    name="http",
    title="HTTP/1.0 against HTTP/1.1 keep-alive",
    syllabus="L11 L12 L8",
    explain="The same GET /health, sent the HTTP/1.0 way and then over HTTP/1.1 keep-alive. "
    "HTTP/1.0 opens a TCP connection for every request (a three-way handshake each time) "
    "and the server closes it after answering. HTTP/1.1 keeps the connection open and sends "
    "the next request on it; the client closes it when it is done.",
    look_at="each request's `connection #N new` or `reused` and its connect time (0 when "
    "reused); in the ladder, who sends FIN first (`shutdown()/close(): FIN`) and on which "
    "side TIME_WAIT appears.",
    run=run,
)
