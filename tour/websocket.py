"""Lesson `websocket`: one HTTP request upgraded to a WebSocket, messages both ways, the
server pushing unasked, and the closing handshake (L15)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from client.trace import trace
from client.ws import connect
from telemetry.events import Event, Name, Role
from tour.tour import Lesson

if TYPE_CHECKING:
    from handshake_lab.ws_conn import MessageReceived
    from tour.tour import Tour

TICK_MS = 100
CLOSE_EVENTS = (Name.WS_CLOSE_SENT, Name.WS_CLOSE_RECEIVED)


async def run(tour: Tour) -> list[str]:
    async with trace(tour.bus, tour.http, tour.out) as timeline:
        async with await connect(f"{tour.ws}/ws/echo", bus=tour.bus) as ws:
            handshake = ws.handshake
            tour.say(
                f"GET /ws/echo with Sec-WebSocket-Key {handshake.key} -> {handshake.status} "
                f"{handshake.reason}, Sec-WebSocket-Accept {handshake.accept} (expected "
                f"{handshake.expected_accept}: base64(SHA-1(key + the RFC's GUID)))"
            )
            for number in range(1, tour.count + 1):
                await ws.send(f"message {number}")
                echo = await ws.receive()
                tour.say(f"  -> message {number}   <- {_text(echo)}")
        async with await connect(f"{tour.ws}/ws/ticker?interval_ms={TICK_MS}", bus=tour.bus) as ws:
            tour.say(f"GET /ws/ticker?interval_ms={TICK_MS}: we send nothing; the server pushes:")
            for _ in range(tour.count):
                tour.say(f"  <- {_text(await ws.receive())}")
        tour.say("the ladder, from both ends' events and ss:")
    return summary(timeline.events)


def _text(message: MessageReceived | None) -> str:
    if message is None:
        return "(closed)"
    return message.data if isinstance(message.data, str) else repr(message.data)


def summary(events: list[Event]) -> list[str]:
    """What the server's events say about its WebSockets: upgrades, echoes, pushes, and
    who began each closing handshake and each TCP close."""
    server = [e for e in events if e.role is Role.SERVER]
    accepted = sum(1 for e in server if e.name is Name.CONNECTION_ACCEPTED)
    paths = {e.conn_id: e.attrs["path"] for e in server if e.name is Name.WS_UPGRADE_ACCEPTED}
    on = Counter((paths.get(e.conn_id), e.name) for e in server)
    echoed = min(on["/ws/echo", Name.WS_MESSAGE_RECEIVED], on["/ws/echo", Name.WS_MESSAGE_SENT])
    pushed = on["/ws/ticker", Name.WS_MESSAGE_SENT]
    lines = [
        f"{len(paths)} WebSocket(s) over {accepted} TCP connection(s): each began as one HTTP "
        "GET answered 101 Switching Protocols, then carried frames both ways.",
        f"{echoed} message(s) echoed on /ws/echo; {pushed} pushed by the server on /ws/ticker "
        "without a request (what plain HTTP cannot do).",
    ]
    # The server's first Close event on each connection says who began the closing
    # handshake; a Close both sent and received means it was completed.
    first_close: dict[int | None, Name] = {}
    closes: dict[int | None, set[Name]] = {}
    for e in server:
        if e.name in CLOSE_EVENTS:
            first_close.setdefault(e.conn_id, e.name)
            closes.setdefault(e.conn_id, set()).add(e.name)
    by_client = sum(1 for name in first_close.values() if name is Name.WS_CLOSE_RECEIVED)
    completed = sum(1 for names in closes.values() if len(names) == len(CLOSE_EVENTS))
    first_fin = {e.conn_id: e.attrs["active_closer"] for e in server if e.name is Name.FIN_SENT}
    by_server = sum(1 for active in first_fin.values() if active)
    fin_side = (
        "TIME_WAIT on the server"
        if first_fin and by_server == len(first_fin)
        else "TIME_WAIT on the client"
        if first_fin and by_server == 0
        else "TIME_WAIT on whichever side sent FIN first"
    )
    lines.append(
        f"Closing: the client sent Close first on {by_client} of {len(first_close)}, and "
        f"{completed} closing handshake(s) completed (a Close each way); then the server "
        f"sent FIN first on {by_server} of {len(first_fin)} (RFC 6455 §7.1.1: the server "
        f"should close TCP first): {fin_side}."
    )
    return lines


LESSON = Lesson(
    name="websocket",
    title="WebSocket: one upgrade, then messages both ways and server push",
    syllabus="L15",
    explain="A WebSocket starts as an HTTP/1.1 GET with `Upgrade: websocket` and a random "
    "Sec-WebSocket-Key; the server proves it speaks the protocol by answering 101 with "
    "Sec-WebSocket-Accept, computed from that key. From then on the same TCP connection "
    "carries frames, either way, whenever either side likes: we echo messages on one, and "
    "on another the server pushes ticks we never asked for. Closing is a handshake too: "
    "Close frames both ways, then TCP's FINs.",
    look_at="the accept value equal to the expected one; the pushes arriving with no request; "
    "in the ladder, one accept() per WebSocket, `ws.upgrade`, the messages, the Close "
    "frames, then who sends FIN first.",
    run=run,
)
