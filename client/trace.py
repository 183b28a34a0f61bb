"""`client get --trace`: the ladder without the lab network.

Outside the lab (no root, a server anywhere) the client still sees its own application
events and, through `ss`, the kernel's socket states: both ends when the server runs on
this machine (ss lists every socket of the host's namespace), only ours otherwise. It
cannot see segments, so the ladder draws none and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from netlab import ladder
from telemetry.events import Name, Role
from telemetry.sockstates import SocketSampler
from telemetry.timeline import Timeline

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from typing import TextIO

    from telemetry.bus import Bus
    from telemetry.events import Event

DEFAULT_PORTS: Final = {"http": 80, "https": 443, "toytls": 8443}
TRACE_INTERVAL_S: Final = 0.02
TRACE_BUDGET: Final = 0.25  # a traced run is short and asked for: more samples than a server's
SETTLE_S: Final = 0.2  # after the last close, long enough to see TIME_WAIT land


@contextlib.asynccontextmanager
async def trace(bus: Bus, url: str, out: TextIO) -> AsyncIterator[Timeline]:
    """Record everything on `bus` (with the kernel's states for the URL's port) while the
    block runs; then draw the ladder to `out`."""
    parts = urlsplit(url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 80)
    timeline = Timeline()
    unsubscribe = bus.subscribe(timeline)
    sampler = SocketSampler(bus, [port], interval_s=TRACE_INTERVAL_S, cpu_budget=TRACE_BUDGET)
    try:
        async with sampler:
            yield timeline
            await asyncio.sleep(SETTLE_S)
            await sampler.sample_now()
    finally:
        unsubscribe()
    print(render_trace(timeline.events), file=out)


def ours(events: list[Event]) -> list[Event]:
    """Our connections only: ss on a shared port also lists other clients' sockets."""
    mine = {e.local for e in events if e.name is Name.CONNECT_COMPLETED and e.role is Role.CLIENT}
    kept = []
    for event in events:
        if event.name is Name.KERNEL_STATE_CHANGED and event.attrs.get("to") != "listen":
            client_end = event.local if event.role is Role.CLIENT else event.remote
            if client_end not in mine:
                continue
        kept.append(event)
    return kept


def render_trace(events: list[Event]) -> str:
    kept = ours(events)
    footer = [
        "no wire segments: this run was not in the lab network, so no arrow is drawn "
        "(as root, `handshake-lab lab handshake` shows the real segments)",
        f"kernel states are ss samples every {TRACE_INTERVAL_S * 1000:.0f} ms or more: states "
        "shorter than that (SYN_SENT on loopback lasts microseconds) are not seen",
    ]
    if any(e.name is Name.KERNEL_SAMPLER_UNAVAILABLE for e in events):
        footer.append("no kernel states: ss (iproute2) is not available here")
    elif not any(e.role is Role.SERVER and e.name is Name.KERNEL_STATE_CHANGED for e in kept):
        footer.append(
            "no server-side states: the server's sockets are not on this machine (or not seen)"
        )
    return ladder.render(kept, wire_seen=False, footer=footer)
