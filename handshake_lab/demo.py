"""`handshake-lab demo`: the guided run. HTTP/1.0 against HTTP/1.1 keep-alive, explained.

It starts the server on loopback, sends the same requests both ways with the lab's client,
and reads the story back from the in-memory timeline: the same events the JSON log and
the metrics get.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING

from client.__main__ import format_response
from client.client import HTTPClient
from server.config import ServerConfig
from server.lifecycle import Server
from telemetry.bus import Bus
from telemetry.events import Event, Name, Role
from telemetry.timeline import Timeline

if TYPE_CHECKING:
    import argparse

RULE = "-" * 78


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--count", type=int, default=3, metavar="N", help="requests per mode (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="server port on 127.0.0.1 (default: any free port)"
    )


def run_demo(args: argparse.Namespace) -> int:
    if args.count < 1:
        print("handshake-lab demo: --count must be at least 1")
        return 2
    asyncio.run(demo(args.count, args.port))
    return 0


async def demo(count: int, port: int = 0) -> Timeline:
    bus = Bus()
    timeline = Timeline()
    bus.subscribe(timeline)
    async with Server(ServerConfig(port=port), bus) as server:
        print(f"handshake-lab demo: server on {server.url} (loopback only)\n")
        for version, title in (
            ("1.0", "HTTP/1.0: one TCP connection per request"),
            ("1.1", "HTTP/1.1 keep-alive: one TCP connection for all requests"),
        ):
            print(f"{RULE}\n{title}\n{RULE}")
            before = len(timeline.events)
            async with HTTPClient(bus, http_version=version) as client:
                for number in range(1, count + 1):
                    response = await client.get(f"{server.url}/health")
                    print(format_response(number, "GET", "/health", version, response))
            # Let the server log its side of the closes before we tell the story.
            await _settle(server)
            print(_summary(timeline.events[before:], count))
            print()
        print(f"{RULE}\nWhat the server saw, connection by connection (its event log)\n{RULE}")
        print(_server_story(timeline.events))
    print(
        "\nNext: run `handshake-lab server` and try `curl --http1.0` against it, or "
        "`handshake-lab client get --count 3 http://127.0.0.1:8080/`."
    )
    return timeline


async def _settle(server: Server) -> None:
    for _ in range(100):
        if server.open_connections == 0:
            return
        await asyncio.sleep(0.01)


def _summary(events: list[Event], count: int) -> str:
    accepted = [e for e in events if e.name is Name.CONNECTION_ACCEPTED]
    closed = [e for e in events if e.name is Name.CONNECTION_CLOSED and e.role is Role.SERVER]
    by_server = sum(1 for e in closed if e.attrs["closed_by"] == "server")
    by_client = len(closed) - by_server
    lines = [
        f"=> {count} requests, {len(accepted)} TCP connection(s), so {len(accepted)} "
        f"three-way handshake(s)."
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
    return "\n".join(lines)


def _server_story(events: list[Event]) -> str:
    steps: dict[int, list[str]] = defaultdict(list)
    for event in events:
        if event.role is not Role.SERVER or event.conn_id is None:
            continue
        steps[event.conn_id].append(_step(event))
    return "\n".join(f"  conn #{conn_id}: " + " -> ".join(s) for conn_id, s in steps.items())


def _step(event: Event) -> str:
    a = event.attrs
    match event.name:
        case Name.CONNECTION_ACCEPTED:
            return f"accept() from {event.remote}"
        case Name.REQUEST_RECEIVED:
            return f"{a['method']} {a['target']} HTTP/{a['http_version']}"
        case Name.RESPONSE_SENT:
            return f"{a['status']}"
        case Name.FIN_SENT:
            return "FIN sent (closes first)" if a["active_closer"] else "FIN sent"
        case Name.EOF_RECEIVED:
            return "FIN received"
        case Name.CONNECTION_CLOSED:
            return f"closed ({a['reason']}, {a['requests']} request(s))"
        case _:
            return event.name.value
