"""One scenario per TCP lesson: the real server and client inside the lab network.

Theory of operation: a scenario is a short script run in a `Lab`: the lab network (two
namespaces joined by the wire, with its delay and drop rules), a socket-state sampler in
each namespace (so each side's `ss` is that side's alone), and one bus whose timeline
holds the application's, the kernel's and the wire's events. The script narrates what it
does, provokes the lesson's situation (an HTTP/1.0 request, a handler that never closes, a
dropped ACK, a flood of spoofed SYNs) and returns its findings: sentences computed from
the timeline, never from what the script meant to happen. The ladder is drawn from the same
timeline (netlab/ladder.py); the tests assert on the same events.

Actors: where the lesson is about what the real server does (HTTP/1.0 closing first,
keep-alive) the real `server.Server` and `client.HTTPClient` run, given sockets made in
their namespaces. Where it is about an application misbehaving (never closing, never
accepting, both closing at once), a few lines of plain sockets play that application.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from client.client import HTTPClient
from handshake_tls.certs import make_lab_certificates
from netlab.network import LabNetwork
from netlab.segments import syn_packet
from server.config import HTTPLimits, ServerConfig
from server.lifecycle import Server
from telemetry.bus import Bus, Tracer
from telemetry.events import Event, Name, Role, format_address
from telemetry.sockstates import SocketSampler
from telemetry.timeline import Timeline

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

    from telemetry.sockstates import SocketSample

PORT: Final = 8080
SAMPLE_INTERVAL_S: Final = 0.01  # short states (SYN_SENT for one RTT) must be seen
SAMPLE_BUDGET: Final = 0.5  # a lab run may spend half a core on ss; a server may not


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    lessons: str
    shows: str
    script: Callable[[Lab], Awaitable[list[str]]]
    delay_s: float = 0.05
    drop: tuple[str, ...] = ()
    ports: tuple[int, ...] = (PORT,)  # what the samplers watch


@dataclass(slots=True)
class Run:
    """What one scenario observed: its findings and the whole timeline."""

    scenario: Scenario
    findings: list[str]
    events: list[Event]
    client_ip: str
    server_ip: str
    delay_s: float
    samples: list[tuple[float, Role, SocketSample]]  # what ss said when the script asked


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    lessons: str,
    shows: str,
    *,
    delay_s: float = 0.05,
    drop: Sequence[str] = (),
    ports: Sequence[int] = (PORT,),
) -> Callable[[Callable[[Lab], Awaitable[list[str]]]], Callable[[Lab], Awaitable[list[str]]]]:
    def register(
        script: Callable[[Lab], Awaitable[list[str]]],
    ) -> Callable[[Lab], Awaitable[list[str]]]:
        SCENARIOS[name] = Scenario(name, lessons, shows, script, delay_s, tuple(drop), tuple(ports))
        return script

    return register


@dataclass
class Lab:
    """A scenario's world. `say` narrates; `sample` asks both kernels now."""

    net: LabNetwork
    bus: Bus
    timeline: Timeline
    samplers: dict[Role, SocketSampler]
    say: Callable[[str], None]
    leaked: list[socket.socket] = field(default_factory=list)
    tracers: dict[socket.socket, Tracer] = field(default_factory=dict)
    opened: dict[socket.socket, float] = field(default_factory=dict)  # connected or accepted
    samples: list[tuple[float, Role, SocketSample]] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def server_url(self) -> str:
        return f"http://{self.net.server_ip}:{PORT}"

    async def sample(self) -> dict[Role, list[SocketSample]]:
        """Both kernels now; what ss said is kept (`Run.samples`) beside the events."""
        client, server = await asyncio.gather(
            self.samplers[Role.CLIENT].sample_now(), self.samplers[Role.SERVER].sample_now()
        )
        now = time.time()
        self.samples.extend((now, Role.CLIENT, sample) for sample in client)
        self.samples.extend((now, Role.SERVER, sample) for sample in server)
        return {Role.CLIENT: client, Role.SERVER: server}

    async def settle(self, round_trips: float = 2) -> None:
        """Wait for segments in flight to land, then take a sample."""
        await asyncio.sleep(round_trips * 2 * self.net.delay_s + 0.05)
        await self.sample()

    @contextlib.asynccontextmanager
    async def server(
        self, limits: HTTPLimits | None = None, **config: Any
    ) -> AsyncIterator[Server]:
        """The lab's real server in the server's namespace (`config`: ServerConfig's
        fields; no TLS listeners unless asked)."""
        settings = ServerConfig(
            host=self.net.server_ip,
            port=PORT,
            limits=limits or HTTPLimits(),
            **{"toy_tls_port": None, "real_tls_port": None, **config},
        )
        async with Server(settings, self.bus, make_listen_socket=self.net.listen_socket) as server:
            yield server

    def client(self, http_version: str = "1.1", cafile: Path | None = None) -> HTTPClient:
        return HTTPClient(
            self.bus,
            http_version=http_version,
            make_socket=self.net.make_client_socket,
            cafile=cafile,
        )

    def listen(self, backlog: int) -> socket.socket:
        """A bare listening socket in the server's namespace: an application of our own."""
        sock = self.net.listen_socket(PORT)
        sock.listen(backlog)
        sock.setblocking(False)
        self.leaked.append(sock)
        Tracer(self.bus, Role.SERVER).emit(
            Name.LISTENER_STARTED, host=self.net.server_ip, port=PORT, backlog=backlog
        )
        return sock

    async def connect(self, *, keepalive_s: int | None = None) -> socket.socket:
        """A bare client socket in the client's namespace, connected to the server."""
        sock = self.net.make_client_socket(socket.AF_INET)
        sock.setblocking(False)
        if keepalive_s is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, keepalive_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, keepalive_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        self.leaked.append(sock)
        started = time.perf_counter()
        await asyncio.get_running_loop().sock_connect(sock, (self.net.server_ip, PORT))
        self.tracer(Role.CLIENT, sock).emit(
            Name.CONNECT_COMPLETED, transport="tcp", lookup_s=0.0,
            duration_s=time.perf_counter() - started,
        )  # fmt: skip
        self.opened[sock] = started
        return sock

    async def accept(self, listener: socket.socket) -> socket.socket:
        conn, _ = await asyncio.get_running_loop().sock_accept(listener)
        conn.setblocking(False)
        self.leaked.append(conn)
        self.tracer(Role.SERVER, conn).emit(Name.CONNECTION_ACCEPTED, transport="tcp")
        self.opened[conn] = time.perf_counter()
        return conn

    def tracer(self, role: Role, sock: socket.socket) -> Tracer:
        """Events for one bare socket, named once: after a close it has no addresses."""
        if sock not in self.tracers:
            self.tracers[sock] = Tracer(
                self.bus,
                role,
                next(self.ids),
                format_address(sock.getsockname()),
                format_address(sock.getpeername()),
            )
        return self.tracers[sock]

    def close_all(self) -> None:
        """Close what the scenario's own applications left open, and say so: a connection
        opened in the events is closed in them too (the metrics' active count returns)."""
        for sock in self.leaked:
            if sock in self.opened:
                tracer = self.tracers[sock]
                tracer.emit(
                    Name.CONNECTION_CLOSED, transport="tcp", protocol="none",
                    closed_by=tracer.role.value, reason="scenario_ended", requests=0,
                    lifetime_s=time.perf_counter() - self.opened[sock],
                    bytes_received=0, bytes_sent=0,  # (plain sockets: not counted)
                )  # fmt: skip
            sock.close()
        self.leaked.clear()
        self.opened.clear()

    # What was observed.
    def segments(
        self, role: Role | None = None, flags: str | None = None, *, dropped: bool = False
    ) -> list[Event]:
        name = Name.WIRE_SEGMENT_DROPPED if dropped else Name.WIRE_SEGMENT_FORWARDED
        return [
            e
            for e in self.timeline.named(name, role)
            if flags is None or e.attrs.get("flags") == flags
        ]

    def states_seen(self, role: Role) -> set[str]:
        return {
            str(e.attrs.get("to")) for e in self.timeline.named(Name.KERNEL_STATE_CHANGED, role)
        }


def peak_states(events: Sequence[Event], role: Role) -> Counter[str]:
    """The most sockets seen at once in each state on one side, replaying its transitions."""
    current: dict[tuple[str | None, str | None], str] = {}
    peak: Counter[str] = Counter()
    for event in events:
        if event.name is not Name.KERNEL_STATE_CHANGED or event.role is not role:
            continue
        key = (event.local, event.remote)
        to = str(event.attrs.get("to"))
        if to == "closed":
            current.pop(key, None)
        else:
            current[key] = to
        for state, count in Counter(current.values()).items():
            peak[state] = max(peak[state], count)
    return peak


def listen_queues(events: Sequence[Event], port: int = PORT) -> list[tuple[int, int]]:
    """The server's accept queue (length, limit) at each sample, as ss reported it."""
    return [
        (queue["current"], queue["limit"])
        for e in events
        if e.name is Name.KERNEL_SAMPLE_TAKEN
        and e.role is Role.SERVER
        and (queue := e.attrs.get("listen_queues", {}).get(str(port)))
    ]


def upper(states: Sequence[str] | set[str]) -> str:
    return ", ".join(sorted(s.upper() for s in states if s != "closed")) or "none"


async def _send_request(sock: socket.socket, request: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, request)


async def _read_to_eof(sock: socket.socket, timeout_s: float = 5.0) -> bytes:
    loop = asyncio.get_running_loop()
    chunks = []
    async with asyncio.timeout(timeout_s):
        while chunk := await loop.sock_recv(sock, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _request(lab: Lab, target: str = "/", version: str = "1.0") -> bytes:
    return f"GET {target} HTTP/{version}\r\nHost: {lab.net.server_ip}\r\n\r\n".encode()


# ---- the scenarios ---------------------------------------------------------------------


@scenario("handshake", "L1 L2 L3", "three-way handshake, opening states, random ISNs")
async def handshake(lab: Lab) -> list[str]:
    async with lab.server():
        lab.say("The client opens three TCP connections, one after another, one GET each.")
        for _ in range(3):
            async with lab.client() as client:
                await client.get(lab.server_url + "/")
            await lab.settle()
    findings = []
    syns = lab.segments(Role.CLIENT, "SYN")
    synacks = lab.segments(Role.SERVER, "SYN,ACK")
    for syn in syns:
        synack = next((s for s in synacks if s.remote == syn.local), None)
        third = next(
            (
                s
                for s in lab.segments(Role.CLIENT)
                if s.local == syn.local and s.attrs.get("flags") == "ACK"
            ),
            None,
        )
        if synack is None or third is None:
            findings.append(f"{syn.local}: handshake incomplete on the wire")
            continue
        x, y = syn.attrs["seq"], synack.attrs["seq"]
        findings.append(
            f"{syn.local}: SYN seq={x}; SYN-ACK seq={y} ack={synack.attrs['ack']} "
            f"(x+1: {synack.attrs['ack'] == x + 1}); ACK ack={third.attrs['ack']} "
            f"(y+1: {third.attrs['ack'] == y + 1})"
        )
    isns = [s.attrs["seq"] for s in syns]
    findings.append(
        f"client ISNs {isns}: {'all different' if len(set(isns)) == len(isns) else 'REPEATED'}"
    )
    findings.append(
        f"kernel states seen: client {upper(lab.states_seen(Role.CLIENT))}; "
        f"server {upper(lab.states_seen(Role.SERVER))}"
    )
    return findings


@scenario("http10-vs-11", "L11", "N requests: N handshakes and N closes, or one of each")
async def http10_vs_11(lab: Lab, count: int = 3) -> list[str]:
    findings = []
    async with lab.server():
        for version in ("1.0", "1.1"):
            mark = len(lab.timeline.events)
            lab.say(f"HTTP/{version}: {count} GETs.")
            async with lab.client(version) as client:
                for _ in range(count):
                    await client.get(lab.server_url + "/")
            await lab.settle()
            part = lab.timeline.events[mark:]
            syns = sum(
                1
                for e in part
                if e.name is Name.WIRE_SEGMENT_FORWARDED and e.attrs.get("flags") == "SYN"
            )
            fins = sum(
                1
                for e in part
                if e.name is Name.WIRE_SEGMENT_FORWARDED and "FIN" in str(e.attrs.get("flags"))
            )
            findings.append(
                f"HTTP/{version}: {count} requests, {syns} handshake(s) (SYN), {fins} FIN(s)"
            )
    return findings


@scenario("close", "L6 L7", "four-way close: FIN_WAIT_1/2, CLOSE_WAIT, LAST_ACK, TIME_WAIT")
async def close(lab: Lab) -> list[str]:
    async with lab.server():
        sock = await lab.connect()
        lab.say("HTTP/1.0 GET: the server answers and closes first (FIN).")
        await _send_request(sock, _request(lab))
        await _read_to_eof(sock)
        lab.tracer(Role.CLIENT, sock).emit(Name.EOF_RECEIVED)
        # Asked at known moments, not only by the periodic samples: the server's FIN is
        # not yet acknowledged (FIN_WAIT_1 for half a round trip more), the client's
        # CLOSE_WAIT lasts until it closes, then LAST_ACK for one round trip.
        await lab.sample()
        lab.say("The client has read EOF but waits 0.3 s before closing: CLOSE_WAIT.")
        await asyncio.sleep(0.3)
        sock.close()
        lab.tracer(Role.CLIENT, sock).emit(Name.FIN_SENT)
        await lab.sample()
        await lab.settle()
    return [
        f"client saw {upper(lab.states_seen(Role.CLIENT))}",
        f"server saw {upper(lab.states_seen(Role.SERVER))}",
    ]


@scenario("half-close", "L6", "the client shuts down its side; the server still answers")
async def half_close(lab: Lab) -> list[str]:
    async with lab.server():
        sock = await lab.connect()
        lab.say("The client sends GET /delay?ms=400, then shutdown(SHUT_WR): FIN, still reading.")
        await _send_request(sock, _request(lab, "/delay?ms=400", "1.1"))
        sock.shutdown(socket.SHUT_WR)
        lab.tracer(Role.CLIENT, sock).emit(Name.FIN_SENT)
        response = await _read_to_eof(sock)
        lab.tracer(Role.CLIENT, sock).emit(
            Name.RESPONSE_RECEIVED,
            bytes=len(response),
            status=response[:15].decode(errors="replace"),
        )
        sock.close()
        await lab.settle()
    client_fin = lab.segments(Role.CLIENT)
    first_fin = next((e for e in client_fin if "FIN" in str(e.attrs.get("flags"))), None)
    data_after = [
        e
        for e in lab.segments(Role.SERVER)
        if first_fin is not None and e.ts > first_fin.ts and e.attrs.get("payload_bytes")
    ]
    status_line = response.split(b"\r\n", 1)[0].decode(errors="replace")
    return [
        f"server segments with data after the client's FIN: {len(data_after)} "
        f"({sum(int(e.attrs['payload_bytes']) for e in data_after)} bytes)",
        f"response read by the half-closed client: {status_line}",
        f"client saw {upper(lab.states_seen(Role.CLIENT))}",
        f"server saw {upper(lab.states_seen(Role.SERVER))}",
    ]


def _time_wait_sides(lab: Lab, mark: int) -> list[str]:
    return [
        f"{e.role.value} {e.local} (timer {e.attrs.get('timer_left_s')} s)"
        for e in lab.timeline.events[mark:]
        if e.name is Name.KERNEL_STATE_CHANGED and e.attrs.get("to") == "time_wait"
    ]


@scenario("time-wait", "L8", "TIME_WAIT lands on whoever closed first")
async def time_wait(lab: Lab) -> list[str]:
    findings = []
    async with lab.server():
        mark = len(lab.timeline.events)
        lab.say("HTTP/1.0: the server closes first.")
        async with lab.client("1.0") as client:
            await client.get(lab.server_url + "/")
        await lab.settle()
        findings.append(f"server closed first -> TIME_WAIT on: {_time_wait_sides(lab, mark)}")
        mark = len(lab.timeline.events)
        lab.say("HTTP/1.1 keep-alive: the client is done and closes first.")
        async with lab.client("1.1") as client:
            await client.get(lab.server_url + "/")
        await lab.settle()
        findings.append(f"client closed first -> TIME_WAIT on: {_time_wait_sides(lab, mark)}")
    return findings


@scenario("close-wait", "L9", "a handler that never closes: CLOSE_WAIT piles up")
async def close_wait(lab: Lab, count: int = 3) -> list[str]:
    listener = lab.listen(backlog=16)
    loop = asyncio.get_running_loop()

    async def leaky_handler() -> None:
        # Reads a request, answers, reads EOF... and never calls close(): the bug.
        while True:
            conn = await lab.accept(listener)
            await loop.sock_recv(conn, 65536)
            await loop.sock_sendall(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

    handler = asyncio.create_task(leaky_handler())
    try:
        lab.say(f"{count} clients: GET, read the answer, close. The server never closes.")
        for _ in range(count):
            async with lab.client() as client:
                await client.get(lab.server_url + "/")
        await lab.settle()
        samples = await lab.sample()
    finally:
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handler
        lab.close_all()
    counts = {role: Counter(s.state for s in samples[role]) for role in (Role.CLIENT, Role.SERVER)}
    return [
        f"server: {counts[Role.SERVER]['close_wait']} in CLOSE_WAIT (the application's bug)",
        f"client: {counts[Role.CLIENT]['fin_wait2']} in FIN_WAIT_2 (waiting for FINs that "
        "never come; the kernel gives up after tcp_fin_timeout)",
    ]


@scenario("simultaneous-close", "L7", "both sides close at once: CLOSING on both", delay_s=0.1)
async def simultaneous_close(lab: Lab) -> list[str]:
    listener = lab.listen(backlog=4)
    accepted = asyncio.create_task(lab.accept(listener))
    client = await lab.connect()
    server = await accepted
    await lab.settle(1)
    lab.say("Both sides call shutdown(SHUT_WR) at the same moment: the FINs cross.")
    for role, sock in ((Role.CLIENT, client), (Role.SERVER, server)):
        sock.shutdown(socket.SHUT_WR)
        lab.tracer(role, sock).emit(Name.FIN_SENT)
    # Each FIN lands one delay later, before its ACK does: CLOSING from then until the
    # peer's ACK arrives another delay on. Ask both kernels in the middle of that window.
    await asyncio.sleep(1.5 * lab.net.delay_s)
    await lab.sample()
    await lab.settle()
    lab.close_all()
    return [
        f"client saw {upper(lab.states_seen(Role.CLIENT))}",
        f"server saw {upper(lab.states_seen(Role.SERVER))}",
    ]


@scenario(
    "lost-ack",
    "L5 L4",
    "the third segment dropped: SYN_RECV and SYN-ACK retransmission",
    delay_s=0.01,
    drop=("client:ack:1-2",),
)
async def lost_ack(lab: Lab) -> list[str]:
    listener = lab.listen(backlog=4)
    lab.say("The wire drops the client's first two pure ACKs (the handshake's third segment).")
    accepted = asyncio.create_task(lab.accept(listener))
    await lab.connect()
    lab.say("The client's connect() returned; the server's accept() waits...")
    async with asyncio.timeout(10):
        await accepted
    await lab.settle()
    lab.close_all()
    synacks = lab.segments(Role.SERVER, "SYN,ACK")
    times = [e.attrs.get("sent_ts", e.ts) for e in synacks]
    gaps = [f"{b - a:.1f} s" for a, b in itertools.pairwise(times)]
    return [
        f"SYN-ACK sent {len(synacks)} times, gaps {', '.join(gaps) or '-'} (exponential backoff)",
        f"client ACKs dropped by the wire: {len(lab.segments(Role.CLIENT, dropped=True))}",
        f"server saw {upper(lab.states_seen(Role.SERVER))}",
    ]


@scenario("accept-queue", "L4 L2", "a server that stops accepting: the accept queue fills")
async def accept_queue(lab: Lab, clients: int = 4, backlog: int = 1) -> list[str]:
    listener = lab.listen(backlog=backlog)
    lab.say(f"A server with backlog {backlog} that does not call accept(); {clients} clients.")
    connects = []
    for _ in range(clients):
        connects.append(asyncio.create_task(lab.connect()))
        await asyncio.sleep(0.3)
    await lab.sample()
    lab.say("Now the server accepts: the queue drains, retransmitted SYNs get answers.")
    for _ in range(clients):
        async with asyncio.timeout(10):
            await lab.accept(listener)
    async with asyncio.timeout(10):
        await asyncio.gather(*connects)
    await lab.settle()
    lab.close_all()
    queues = listen_queues(lab.timeline.events)
    peak_queue = max((current for current, _limit in queues), default=0)
    syns = lab.segments(Role.CLIENT, "SYN")
    return [
        f"accept queue peak {peak_queue} (limit {backlog}; Linux admits backlog + 1)",
        f"client SYNs: {len(syns)} for {clients} connections "
        f"({sum(1 for e in syns if e.attrs.get('retransmission'))} retransmitted)",
        f"client saw {upper(lab.states_seen(Role.CLIENT))}",
    ]


async def _flood(lab: Lab, count: int, rate_per_s: float, seed: int) -> None:
    rng = random.Random(seed)  # a round of its own: new ports and ISNs, not a replay
    for i in range(count):
        source = f"10.77.0.{100 + i % 100}"
        packet = syn_packet(
            source, rng.randrange(20000, 60000), lab.net.server_ip, PORT, rng.getrandbits(32)
        )
        lab.net.inject(packet, toward=Role.SERVER)
        await asyncio.sleep(1 / rate_per_s)


async def _syncookies_sent(lab: Lab) -> int | None:
    """The server kernel's own count (nstat: TcpExtSyncookiesSent); None without nstat."""
    try:
        # -s: do not update nstat's history file, which is the host's, not the lab's.
        out = await lab.net.run(Role.SERVER, "nstat", "-s", "-az", "TcpExtSyncookiesSent")
    except (OSError, RuntimeError):
        return None
    for line in out.splitlines():
        if line.startswith("TcpExtSyncookiesSent"):
            return int(line.split()[1])
    return None


async def _timed_connect(lab: Lab, timeout_s: float) -> float | None:
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            await lab.connect()
    except TimeoutError:
        return None
    return time.monotonic() - started


@scenario("syn-flood", "L4", "spoofed SYNs inside the lab: SYN_RECV, syncookies off vs on")
async def syn_flood(lab: Lab, flood: int = 64, backlog: int = 16) -> list[str]:
    findings = []
    await lab.net.sysctl(Role.SERVER, "net.ipv4.tcp_synack_retries", "1")
    for round_number, cookies in enumerate(("0", "1"), start=1):
        # A fresh listener per round: closing the last one dropped its half-open queue.
        listener = lab.listen(backlog=backlog)
        await lab.net.sysctl(Role.SERVER, "net.ipv4.tcp_syncookies", cookies)
        cookies_before = await _syncookies_sent(lab)
        lab.say(f"syncookies={cookies}: {flood} SYNs from spoofed 10.77.0.x, 200 per second.")
        started = time.time()
        await _flood(lab, flood, 200, seed=round_number)
        await lab.sample()
        # Half-open sockets this round made (the last round's may linger until their
        # SYN-ACK retries run out).
        syn_recv = sum(
            1
            for e in lab.timeline.named(Name.KERNEL_STATE_CHANGED, Role.SERVER)
            if e.attrs.get("to") == "syn_recv" and e.ts >= started
        )
        took = await _timed_connect(lab, timeout_s=1.5)
        served = f"connected in {took * 1000:.0f} ms" if took is not None else "NOT served in 1.5 s"
        cookies_after = await _syncookies_sent(lab)
        sent = (
            "?"
            if cookies_before is None or cookies_after is None
            else cookies_after - cookies_before
        )
        findings.append(
            f"syncookies={cookies}: {syn_recv} new in SYN_RECV (backlog {backlog}); "
            f"{sent} syncookies sent; the real client {served}"
        )
        lab.leaked.remove(listener)
        listener.close()
    lab.close_all()
    spoofed = [e for e in lab.segments(Role.CLIENT) if e.attrs.get("injected")]
    nowhere = [e for e in lab.segments(Role.SERVER, dropped=True) if e.attrs["reason"] == "no_host"]
    findings.append(
        f"{len(spoofed)} spoofed SYNs (not drawn); {len(nowhere)} SYN-ACKs to those addresses "
        "went nowhere (dropped by the wire: no such host)"
    )
    return findings


@scenario("keepalive", "L10", "TCP keepalive probes on an idle connection")
async def keepalive(lab: Lab) -> list[str]:
    async with lab.server(HTTPLimits(keep_alive_timeout_s=30.0)):
        lab.say("An idle HTTP/1.1 connection with TCP keepalive after 1 s idle, every 1 s.")
        sock = await lab.connect(keepalive_s=1)
        await _send_request(sock, _request(lab, "/", "1.1"))
        await asyncio.get_running_loop().sock_recv(sock, 65536)
        for _ in range(7):  # 3.5 s idle; ss -o shows the keepalive timer counting down
            await asyncio.sleep(0.5)
            await lab.sample()
        lab.close_all()
        await lab.settle()
    probes = keepalive_probes(lab.segments(Role.CLIENT))
    left = [
        f"{sample.timer_left_s:.2f}"
        for _ts, role, sample in lab.samples
        if role is Role.CLIENT and sample.state == "established" and sample.timer == "keepalive"
    ]
    gaps = [
        f"{b.attrs['sent_ts'] - a.attrs['sent_ts']:.1f} s" for a, b in itertools.pairwise(probes)
    ]
    return [
        f"keepalive probes from the client: {len(probes)}, {', '.join(gaps) or '-'} apart "
        "(each re-sends the last byte's seq with no data; the server ACKs it)",
        f"ss -o on the client: timer:(keepalive, ...) with {', '.join(left) or 'none'} s left",
    ]


def keepalive_probes(segments: Sequence[Event]) -> list[Event]:
    """The segments the wire marked as keepalive probes (seq one below the next byte)."""
    return [e for e in segments if e.attrs.get("keepalive")]


TOY_TLS_PORT: Final = 8443
REAL_TLS_PORT: Final = 8444


@scenario(
    "tls",
    "L13 L14",
    "plain HTTP, toy TLS, real TLS on one wire: what the handshake costs in round trips",
    delay_s=0.025,
    ports=(PORT, TOY_TLS_PORT, REAL_TLS_PORT),
)
async def tls(lab: Lab) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="handshake-lab-certs-") as directory:
        lab.say(f"A lab CA and a server certificate for {lab.net.server_ip}, made for this run.")
        certs = Path(directory)
        await asyncio.to_thread(make_lab_certificates, certs, (lab.net.server_ip,))
        async with lab.server(
            toy_tls_port=TOY_TLS_PORT, real_tls_port=REAL_TLS_PORT, certs_dir=certs
        ):
            for scheme, port in (
                ("http", PORT),
                ("toytls", TOY_TLS_PORT),
                ("https", REAL_TLS_PORT),
            ):
                lab.say(f"GET {scheme}://{lab.net.server_ip}:{port}/ on a new connection.")
                async with lab.client(cafile=certs / "ca.pem") as client:
                    await client.get(f"{scheme}://{lab.net.server_ip}:{port}/")
                await lab.settle()
    rtt = 2 * lab.net.delay_s
    findings = []
    for scheme, port in (("http", PORT), ("toytls", TOY_TLS_PORT), ("https", REAL_TLS_PORT)):
        waited = request_wait_s(lab.timeline.events, port)
        findings.append(
            f"{scheme:<6} the request left {waited * 1000:.0f} ms = {waited / rtt:.1f} RTT "
            "after the SYN"
            if waited is not None
            else f"{scheme:<6} no request seen on the wire"
        )
    findings.append(
        "TCP costs 1 RTT; TLS 1.3 (Python's ssl) adds 1; the toy TLS, like TLS 1.2, adds 2 "
        "(its client waits for the server's Finished). SSLKEYLOGFILE=FILE with --pcap lets "
        "Wireshark decrypt the https part"
    )
    return findings


def request_wait_s(events: Sequence[Event], port: int) -> float | None:
    """From the client's SYN to the segment that carried its request, to server `port`:
    the round trips the handshakes (TCP, then TLS) cost before HTTP could start."""
    suffix = f":{port}"
    sent = next(
        (
            e
            for e in events
            if e.name is Name.REQUEST_SENT
            and e.role is Role.CLIENT
            and str(e.remote).endswith(suffix)
        ),
        None,
    )
    if sent is None:
        return None
    to_port = [
        e
        for e in events
        if e.name is Name.WIRE_SEGMENT_FORWARDED
        and e.role is Role.CLIENT
        and str(e.remote).endswith(suffix)
        and e.local == sent.local
    ]
    syn = next((e for e in to_port if e.attrs["flags"] == "SYN"), None)
    # The request is the first data the client sent after its application handed it over.
    carrier = next(
        (e for e in to_port if e.attrs["payload_bytes"] and e.attrs["sent_ts"] >= sent.ts), None
    )
    if syn is None or carrier is None:
        return None
    return float(carrier.attrs["sent_ts"] - syn.attrs["sent_ts"])


# ---- running one ----------------------------------------------------------------------


async def run_scenario(
    name: str,
    *,
    say: Callable[[str], None] = print,
    delay_s: float | None = None,
    jitter_s: float = 0.0,
    loss: float = 0.0,
    drop: Sequence[str] = (),
    seed: int | None = None,
    pcap: Path | None = None,
    bus: Bus | None = None,
) -> Run:
    """Set up the lab network, run the scenario, tear everything down; return what was seen.

    `delay_s` replaces the scenario's own delay; `drop` rules come after its own; `jitter_s`,
    `loss` and `seed` go to the wire as they are (see `LabNetwork`).
    """
    chosen = SCENARIOS[name]
    bus = bus or Bus()
    timeline = Timeline()
    unsubscribe = bus.subscribe(timeline)  # (a caller's bus outlives the run)
    try:
        delay = chosen.delay_s if delay_s is None else delay_s
        async with LabNetwork(
            bus,
            delay_s=delay,
            jitter_s=jitter_s,
            loss=loss,
            drop=[*chosen.drop, *drop],
            seed=seed,
            pcap=pcap,
        ) as net:
            samplers = {
                role: SocketSampler(
                    bus,
                    chosen.ports,
                    interval_s=SAMPLE_INTERVAL_S,
                    cpu_budget=SAMPLE_BUDGET,
                    netns=net.client_ns if role is Role.CLIENT else net.server_ns,
                    role=role,
                )
                for role in (Role.CLIENT, Role.SERVER)
            }
            lab = Lab(net, bus, timeline, samplers, say)
            async with samplers[Role.CLIENT], samplers[Role.SERVER]:
                try:
                    findings = await chosen.script(lab)
                    # What is still on the wire lands before the lab goes (what does not is
                    # reported dropped, "lab_stopped").
                    await asyncio.sleep(net.delay_s + net.wire.jitter_s + 0.02)
                finally:
                    lab.close_all()
        return Run(
            chosen,
            findings,
            list(timeline.events),
            net.client_ip,
            net.server_ip,
            delay,
            lab.samples,
        )
    finally:
        unsubscribe()
