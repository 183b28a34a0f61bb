"""Lessons `toy-tls` and `real-tls` (L13, L14): the lab's toy handshake step by step with
each key exchange, then Python's real TLS 1.3 and 1.2 beside it."""

from __future__ import annotations

import ssl
import statistics
from typing import TYPE_CHECKING

from bench.latency import TRANSPORTS
from client.__main__ import format_response
from client.client import HTTPClient
from client.explain import HandshakeExplainer
from client.trace import trace
from handshake_tls.certs import real_tls_client_context
from handshake_tls.wire import KeyExchange
from telemetry.events import Event, Name, Role
from telemetry.timeline import Timeline
from tour.tour import Lesson

if TYPE_CHECKING:
    from client.pool import Response
    from tour.tour import Tour

MS = 1000.0
# Round trips before the client may send its request: TCP's, then the TLS handshake's
# (bench/latency.py's model).
ROUND_TRIPS = {
    "TCP": 1,
    "TLSv1.3": 1 + TRANSPORTS["tls1.3"].handshake_rtts,
    "TLSv1.2": 1 + TRANSPORTS["tls1.2"].handshake_rtts,
}


async def run_toy(tour: Tour) -> list[str]:
    durations: dict[str, float] = {}
    for kx in (KeyExchange.RSA, KeyExchange.ECDHE):
        name = kx.name.lower()
        tour.say(f"\nkey exchange {name}: GET /health over toytls://, each step as it happens")
        async with trace(tour.bus, tour.toytls, tour.out) as timeline:
            unsubscribe = tour.bus.subscribe(HandshakeExplainer(tour.out))
            try:
                async with HTTPClient(tour.bus, cafile=tour.cafile, key_exchange=kx) as client:
                    response = await client.get(f"{tour.toytls}/health")
            finally:
                unsubscribe()
            tour.say(format_response(1, "GET", "/health", "1.1", response))
            tour.say("the ladder, from both ends' events and ss:")
        durations[name] = handshake_ms(timeline.events, "toy")
    tour.notes["toy_ecdhe_ms"] = durations["ecdhe"]
    key = tour.cafile.parent / "server-rsa.key"
    return [
        f"rsa: {durations['rsa']:.3f} ms. The client made the premaster secret C and sent it "
        f"encrypted to the certificate's RSA key: whoever gets that key later ({key}) can "
        "open a recording of such a connection (`handshake-lab client get URL --kx rsa "
        f"--record FILE`, then `handshake-lab tls decrypt FILE --server-key {key}`).",
        f"ecdhe: {durations['ecdhe']:.3f} ms. Each side sent an ephemeral X25519 share, the "
        "server's signed by its certificate's key; the shared secret was never sent and the "
        "shares are gone: the server's key alone cannot open a recording (forward secrecy).",
        "Both: keys from HKDF(secret, A, B), so a replayed handshake meets a fresh random "
        "and derives other keys; Finished proves both sides saw the same handshake. A toy "
        "for learning, not for protecting anything: real TLS follows.",
    ]


def handshake_ms(events: list[Event], kind: str) -> float:
    """The client's handshake time of the first `kind` ("toy") handshake in `events`."""
    for event in events:
        if (
            event.name is Name.TLS_HANDSHAKE_COMPLETED
            and event.role is Role.CLIENT
            and event.attrs.get("kind") == kind
        ):
            return float(event.attrs["duration_s"]) * MS
    raise LookupError(f"no completed {kind} handshake among the events")


async def run_real(tour: Tour) -> list[str]:
    tls12 = real_tls_client_context(tour.cafile)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    versions = {"TLS 1.3": real_tls_client_context(tour.cafile), "TLS 1.2": tls12}
    connects: dict[str, list[float]] = {}
    timeline = Timeline()
    with tour.recording(timeline):
        for label, url, context in (
            ("plain TCP", tour.http, None),
            *((label, tour.https, context) for label, context in versions.items()),
        ):
            tour.say(f"{label}: {tour.count} request(s), a new connection each")
            for _ in range(tour.count):
                async with HTTPClient(tour.bus, tls_context=context) as client:
                    response = await client.get(f"{url}/health")
                agreed = _agreed(timeline.events, response) if context else "TCP"
                t = response.timings
                tour.say(
                    f"   {agreed:<40} connect {t.connect_s * MS:6.3f} ms  "
                    f"total {t.total_s * MS:6.3f} ms"
                )
                connects.setdefault(agreed.split(",")[0], []).append(t.connect_s * MS)
    tour.say("the ladder of one more connection with each version:")
    async with trace(tour.bus, tour.https, tour.out) as traced:
        for context in versions.values():
            async with HTTPClient(tour.bus, tls_context=context) as client:
                await client.get(f"{tour.https}/health")
    medians = ", ".join(
        f"{version} {statistics.median(times):.3f} ms ({ROUND_TRIPS.get(version, '?')} round "
        "trip(s))"
        for version, times in connects.items()
    )
    lines = [
        f"median connect time (until the request can go): {medians}.",
        "TLS 1.3 sends its key share in the ClientHello, so the server answers with "
        "everything in one flight: one round trip after TCP's. TLS 1.2 (and our toy, whose "
        "client waits for the server's Finished) take two. On loopback a round trip is "
        "microseconds and the CPU dominates; at 20 ms RTT the round trips do "
        "(`handshake-lab bench latency --rtt 0,20ms`).",
        *who_finished_first(traced.events),
    ]
    toy = tour.notes.get("toy_ecdhe_ms")
    if toy is not None:
        lines.append(
            f"The toy's ecdhe handshake alone (after TCP's) took {toy:.3f} ms: in Python, and "
            "shaped like TLS 1.2's, two round trips."
        )
    certs = tour.cafile.parent
    lines.append(
        f"Try it with a server running (`handshake-lab server --certs-dir {certs}`): "
        f"`openssl s_client -connect 127.0.0.1:8444 -CAfile {tour.cafile} -tls1_2`, or "
        f"`curl -v --cacert {tour.cafile} https://localhost:8444/health`; SSLKEYLOGFILE makes "
        "the traffic readable in Wireshark."
    )
    return lines


def who_finished_first(events: list[Event]) -> list[str]:
    """Per real TLS connection: which end's handshake completed first, and by how much."""
    done: dict[str, dict[Role, Event]] = {}
    for event in events:
        if event.name is Name.TLS_HANDSHAKE_COMPLETED and event.attrs.get("kind") == "real":
            client_end = event.local if event.role is Role.CLIENT else event.remote
            done.setdefault(str(client_end), {})[event.role] = event
    lines = []
    for ends in done.values():
        if len(ends) < 2:  # one end only (its peer was not ours)
            continue
        client, server = ends[Role.CLIENT], ends[Role.SERVER]
        first, gap = (
            ("client", server.ts - client.ts)
            if client.ts <= server.ts
            else ("server", client.ts - server.ts)
        )
        lines.append(
            f"{client.attrs['version']}: the {first}'s handshake completed first, "
            f"{gap * MS:.3f} ms before the other's"
            + (
                " (its Finished goes out with the request right behind it: the server is "
                "done only when it reads them)"
                if first == "client"
                else " (the server's Finished is the last handshake message: the client "
                "waits a round trip for it before it may send the request)"
            )
            + "."
        )
    return lines


def _agreed(events: list[Event], response: Response) -> str:
    """What the client's real TLS handshake for `response`'s connection agreed."""
    for event in events:
        if (
            event.name is Name.TLS_HANDSHAKE_COMPLETED
            and event.role is Role.CLIENT
            and event.attrs.get("kind") == "real"
            and event.local == response.local
        ):
            return f"{event.attrs['version']}, {event.attrs['suite']}"
    return "unknown (no handshake event)"


TOY = Lesson(
    name="toy-tls",
    title="The toy TLS handshake, step by step: rsa, then ecdhe",
    syllabus="L13",
    explain="HTTPS in its classic shape, run by the lab's own toy TLS so every field can be "
    "printed: the client sends its random A and the suites it offers; the server answers "
    "with its random B, its choice and its certificate; the client checks the certificate "
    "against the lab CA, then both derive the same keys from A, B and a secret C that only "
    "they know. With rsa the client makes C and sends it encrypted to the server's key; "
    "with ecdhe each side sends half of a Diffie-Hellman exchange and C is never sent.",
    look_at="the randoms A and B, the certificate's names and fingerprint, how C gets "
    "agreed in each mode, the time each step took; in the ladder, the handshake's steps on "
    "both sides before the first http.request.",
    run=run_toy,
)

REAL = Lesson(
    name="real-tls",
    title="Real TLS beside it: TLS 1.3 and TLS 1.2 (Python's ssl)",
    syllabus="L13 L14",
    explain="The same request over real TLS, the same certificate, once with TLS 1.3 and "
    "once held to TLS 1.2. Real TLS hides its steps inside the ssl library: we see what "
    "it agreed (version, cipher suite) and what it cost (connect time: TCP's handshake "
    "plus TLS's), next to a plain TCP connect.",
    look_at="the version and suite of each; the connect times: TCP alone, TCP + TLS 1.3, "
    "TCP + TLS 1.2; in the ladder, the server's accept() after the client's handshake: "
    "asyncio hands a TLS connection over only once its handshake is done.",
    run=run_real,
)
