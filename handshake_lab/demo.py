"""`handshake-lab demo`: the guided run. HTTP/1.0 against HTTP/1.1 keep-alive, then a
WebSocket, explained.

It starts the server on loopback, sends the same requests both ways with the lab's client,
then echoes messages over one WebSocket and lets the server push, and reads the story back
from the in-memory timeline: the same events the JSON log and the metrics get.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING

from client.__main__ import format_response
from client.client import HTTPClient
from client.ws import connect
from server.config import ServerConfig
from server.lifecycle import Server
from telemetry.bus import Bus
from telemetry.events import Event, Name, Role
from telemetry.timeline import Timeline

if TYPE_CHECKING:
    import argparse

    from handshake_lab.ws_conn import MessageReceived

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
        print(f"{RULE}\nWebSocket: one TCP connection, one HTTP request, then both ways\n{RULE}")
        before = len(timeline.events)
        await _websocket(server, bus, count)
        await _settle(server)
        print(_ws_summary(timeline.events[before:], count))
        print()
        print(f"{RULE}\nWhat the server saw, connection by connection (its event log)\n{RULE}")
        print(_server_story(timeline.events))
    print(
        "\nNext: run `handshake-lab server` and try `curl --http1.0` against it, "
        "`handshake-lab client get --count 3 http://127.0.0.1:8080/`, "
        "`handshake-lab client ws ws://127.0.0.1:8080/ws/echo`, or open "
        "http://127.0.0.1:8080/ws-demo in a browser."
    )
    return timeline


async def _websocket(server: Server, bus: Bus, count: int) -> None:
    url = f"ws://127.0.0.1:{server.port}"
    async with await connect(f"{url}/ws/echo", bus=bus) as ws:
        handshake = ws.handshake
        print(
            f"GET /ws/echo with Sec-WebSocket-Key {handshake.key} -> {handshake.status} "
            f"{handshake.reason}, Sec-WebSocket-Accept {handshake.accept} (expected "
            f"{handshake.expected_accept})"
        )
        for number in range(1, count + 1):
            await ws.send(f"message {number}")
            echo = await ws.receive()
            print(f"  -> message {number}   <- {_text(echo)}")
    async with await connect(f"{url}/ws/ticker?interval_ms=100", bus=bus) as ws:
        print("GET /ws/ticker?interval_ms=100: we send nothing; the server pushes:")
        for _ in range(count):
            push = await ws.receive()
            print(f"  <- {_text(push)}")


def _text(message: MessageReceived | None) -> str:
    if message is None:
        return "(closed)"
    return message.data if isinstance(message.data, str) else repr(message.data)


def _ws_summary(events: list[Event], count: int) -> str:
    server = [e for e in events if e.role is Role.SERVER]
    accepted = sum(1 for e in server if e.name is Name.CONNECTION_ACCEPTED)
    upgrades = sum(1 for e in server if e.name is Name.WS_UPGRADE_ACCEPTED)
    ticker = {
        e.conn_id
        for e in server
        if e.name is Name.WS_UPGRADE_ACCEPTED and e.attrs["path"] == "/ws/ticker"
    }
    pushed = sum(1 for e in server if e.name is Name.WS_MESSAGE_SENT and e.conn_id in ticker)
    first_fin = {e.conn_id: e.attrs["active_closer"] for e in server if e.name is Name.FIN_SENT}
    by_server = sum(1 for active in first_fin.values() if active)
    return "\n".join(
        [
            f"=> {upgrades} WebSockets over {accepted} TCP connection(s): each began as one "
            "HTTP GET answered 101 Switching Protocols, then carried frames both ways.",
            f"   {count} messages echoed on one connection; {pushed} pushed by the server on "
            "the other without a request (what plain HTTP cannot do).",
            f"   Closing: Close frames both ways, then the server sent FIN first on "
            f"{by_server} of {len(first_fin)} (RFC 6455 §7.1.1): TIME_WAIT on the server.",
        ]
    )


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
        step = _step(event)
        if not step:
            continue
        previous = steps[event.conn_id]
        if previous and previous[-1].split(" x")[0] == step:  # "message in x3"
            count = int(previous[-1].split(" x")[1]) if " x" in previous[-1] else 1
            previous[-1] = f"{step} x{count + 1}"
        else:
            previous.append(step)
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
        case Name.WS_UPGRADE_ACCEPTED:
            return "switched to WebSocket"
        case Name.WS_MESSAGE_RECEIVED:
            return "message in"
        case Name.WS_MESSAGE_SENT:
            return "message out"
        case Name.WS_CLOSE_RECEIVED:
            return f"Close {a['code']} received"
        case Name.WS_CLOSE_SENT:
            return f"Close {a['code']} sent"
        case Name.WS_UPGRADE_REQUESTED | Name.WS_CONNECTION_CLOSED:
            return ""
        case _:
            return event.name.value
