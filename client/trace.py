"""`client get --trace`: the ladder without the lab network.

Outside the lab (no root, a server anywhere) the client still sees its own application
events and, through `ss`, the kernel's socket states: both ends when the server runs on
this machine (ss lists every socket of the host's namespace), only ours otherwise. It
cannot see segments, so the ladder draws none and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
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
        await sampler.sample_now()  # what is there before we start: the LISTEN, old sockets
        async with sampler:
            yield timeline
            await asyncio.sleep(SETTLE_S)
            await sampler.sample_now()
    finally:
        unsubscribe()
    print(render_trace(timeline.events, port), file=out)


def _plain(address: str | None) -> str | None:
    """`[::ffff:127.0.0.1]:80` (a dual-stack socket's view of an IPv4 peer) → `127.0.0.1:80`."""
    if address and address.startswith("[::ffff:") and "]:" in address:
        host, port = address[len("[::ffff:") :].split("]:", 1)
        return f"{host}:{port}"
    return address


def ours(events: list[Event], port: int) -> list[Event]:
    """Our connections only: ss on a shared port also lists other clients' sockets, and
    other listeners on the same port number (another address, IPv6)."""
    mine = {e.local for e in events if e.name is Name.CONNECT_COMPLETED and e.role is Role.CLIENT}
    servers = {
        e.remote for e in events if e.name is Name.CONNECT_COMPLETED and e.role is Role.CLIENT
    }
    server_hosts = {str(a).rsplit(":", 1)[0] for a in servers}
    kept = []
    for event in events:
        if event.name is Name.KERNEL_STATE_CHANGED:
            local = _plain(event.local)
            if event.attrs.get("to") == "listen" or event.attrs.get("from") == "listen":
                host, _, listen_port = str(local).rpartition(":")
                if listen_port != str(port) or not _listens_for(host, server_hosts):
                    continue
            else:
                client_end = local if event.role is Role.CLIENT else _plain(event.remote)
                if client_end not in mine:
                    continue
        kept.append(event)
    return kept


def _listens_for(host: str, server_hosts: set[str]) -> bool:
    """Would a listener bound to `host` take our connections (to `server_hosts`)?"""
    wildcard = host in ("*", "0.0.0.0", "[::]") or host.startswith("*%")
    plain = _plain(f"{host}:0") or ""
    return wildcard or plain.rsplit(":", 1)[0] in server_hosts


def render_trace(events: list[Event], port: int) -> str:
    kept = ours(events, port)
    samples = [e for e in events if e.name is Name.KERNEL_SAMPLE_TAKEN]
    footer = [
        "no wire segments: this run was not in the lab network, so no arrow is drawn "
        "(as root, `handshake-lab lab handshake` shows the real segments)",
    ]
    unavailable = [e for e in events if e.name is Name.KERNEL_SAMPLER_UNAVAILABLE]
    if unavailable:
        footer.append(f"no kernel states: {unavailable[0].attrs.get('reason')}")
    else:
        gaps = sorted(b.ts - a.ts for a, b in itertools.pairwise(samples))
        spacing = f", {gaps[len(gaps) // 2] * 1000:.0f} ms apart (median)" if gaps else ""
        footer.append(
            f"kernel states: {len(samples)} ss samples{spacing}; a state is drawn when ss "
            "answered and held at some moment of that run: states shorter than the spacing "
            "(SYN_SENT on loopback lasts microseconds) are not seen"
        )
        if not any(e.attrs.get("to") == "listen" for e in kept):
            footer.append(
                f"no LISTEN socket on :{port} seen on this machine: the server runs elsewhere "
                "(or nothing listens), so only the client's side is shown"
            )
        elif not any(
            e.role is Role.SERVER and e.attrs.get("to") != "listen"
            for e in kept
            if e.name is Name.KERNEL_STATE_CHANGED
        ):
            footer.append("no server-side connection states seen (between two samples)")
    return ladder.render(kept, wire_seen=False, footer=footer)
