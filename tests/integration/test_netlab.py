"""The lab network for real (root): namespaces, the TUN wire, its events, pcap and cleanup.

Every test is bounded in time; delays are small and asserted only as lower bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from handshake_lab.transport import TransportError, open_tcp_stream
from handshake_tls.certs import make_lab_certificates
from netlab import netns
from netlab.network import LabCommandError, LabNetwork, LabUnavailable
from netlab.pcap import PcapWriter, read_pcap
from netlab.segments import decode_packet, flag_names, syn_packet, tcp_packet
from netlab.wire import Wire
from telemetry.bus import Bus
from telemetry.events import Event, Name, Role
from tests.conftest import require_tool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

T = TypeVar("T")

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PORT = 8080


def needs_root(test: T) -> T:
    """A test of the real lab network: marked `netlab`, skipped (failed in CI) without it."""
    return pytest.mark.netlab(pytest.mark.usefixtures("lab_possible")(test))  # type: ignore[return-value]


class Watch:
    """Every event on a bus, and a way to wait until one of them satisfies a predicate."""

    def __init__(self, bus: Bus) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def wire(self, name: Name = Name.WIRE_SEGMENT_FORWARDED) -> list[Event]:
        return [e for e in self.events if e.name is name]

    def segments(self, role: Role, flags: str) -> list[Event]:
        return [e for e in self.wire() if e.role is role and e.attrs["flags"] == flags]

    async def until(self, done: Callable[[], bool], timeout_s: float = 3.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not done():
                self._changed.clear()
                await self._changed.wait()


async def connect(lab: LabNetwork, port: int = PORT) -> socket.socket:
    sock = lab.make_client_socket(socket.AF_INET)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (lab.server_ip, port))
    return sock


@contextlib.asynccontextmanager
async def http10_server(lab: LabNetwork) -> AsyncIterator[asyncio.Server]:
    """Reads one request head, answers it and closes first (as an HTTP/1.0 server does)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, sock=lab.listen_socket(PORT))
    try:
        yield server
    finally:
        server.close()


async def http10_exchange(lab: LabNetwork) -> bytes:
    sock = await connect(lab)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET / HTTP/1.0\r\nhost: 10.77.0.2\r\n\r\n")
    answer = await reader.read()
    writer.close()
    return answer


def our_namespaces() -> set[str]:
    return {n for n in netns.list_namespaces() if n.startswith(f"hlab-{os.getpid()}-")}


def ip_netns_list() -> str:
    return subprocess.run(
        ["ip", "netns", "list"], check=True, capture_output=True, text=True
    ).stdout


def open_tun_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == "/dev/net/tun":
                count += 1
    return count


def assert_gone(names: tuple[str, str]) -> None:
    listed = ip_netns_list()
    for name in names:
        assert name not in listed
        assert not (netns.NS_DIR / name).exists()
    # and no thread of ours still sits in (and so keeps alive) a deleted namespace
    assert not [t for t in threading.enumerate() if t.name.startswith("netns-hlab-")]


# -- the handshake, seen on the wire ------------------------------------------------------


@needs_root
async def test_connect_takes_a_round_trip_and_the_wire_sees_the_handshake() -> None:
    bus = Bus()
    watch = Watch(bus)
    delay = 0.02
    async with LabNetwork(bus, delay_s=delay) as lab, http10_server(lab):
        stream, timings = await open_tcp_stream(
            lab.server_ip, PORT, make_socket=lab.make_client_socket, timeout_s=3
        )
        # SYN there, SYN-ACK back: connect() returns after one round trip (lower bound only).
        assert timings.connect_s >= 2 * delay - 0.001
        await stream.send_all(b"GET / HTTP/1.0\r\nhost: 10.77.0.2\r\n\r\n")
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
        await stream.aclose()
        assert answer.startswith(b"HTTP/1.1 200 OK")
        await watch.until(lambda: len(watch.segments(Role.CLIENT, "ACK")) >= 2)

    syn, synack, ack = watch.wire()[:3]
    assert (syn.role, syn.attrs["flags"]) == (Role.CLIENT, "SYN")
    assert (synack.role, synack.attrs["flags"]) == (Role.SERVER, "SYN,ACK")
    assert (ack.role, ack.attrs["flags"]) == (Role.CLIENT, "ACK")
    client_isn, server_isn = syn.attrs["seq"], synack.attrs["seq"]
    assert synack.attrs["ack"] == (client_isn + 1) % 2**32
    assert ack.attrs["ack"] == (server_isn + 1) % 2**32
    assert syn.attrs["ack"] is None
    assert (syn.attrs["rel_seq"], synack.attrs["rel_seq"], synack.attrs["rel_ack"]) == (0, 0, 1)
    assert (ack.attrs["rel_seq"], ack.attrs["rel_ack"]) == (1, 1)
    assert syn.local == synack.remote
    assert syn.local is not None
    assert syn.local.startswith("10.77.0.1:")
    assert syn.remote == synack.local == f"10.77.0.2:{PORT}"
    assert syn.conn_id is None
    for event in (syn, synack, ack):
        assert event.attrs["delay_s"] == pytest.approx(delay, abs=1e-6)
        assert event.ts - event.attrs["sent_ts"] >= delay - 0.001
        assert event.attrs["retransmission"] is False
        assert event.attrs["payload_bytes"] == 0
        assert 0 < event.attrs["window"] < 65536
    previews = [e.attrs["preview"] for e in watch.wire() if e.attrs["payload_bytes"]]
    assert previews == ["GET / HTTP/1.0", "HTTP/1.1 200 OK"]
    assert not watch.wire(Name.WIRE_SEGMENT_DROPPED)


@needs_root
async def test_a_tun_device_that_fails_is_reported_with_what_is_lost() -> None:
    bus = Bus()
    watch = Watch(bus)
    async with LabNetwork(bus, delay_s=0.005) as lab, http10_server(lab):
        namespaces = (lab.client_ns, lab.server_ns)
        # The server's device deleted under the wire: reading it fails (EBADFD), and so
        # does delivering the client's SYN to it.
        await netns.ip("-n", lab.server_ns, "link", "del", lab.device)
        await watch.until(lambda: bool(watch.wire(Name.WIRE_DEVICE_FAILED)))
        with pytest.raises(TransportError):
            await open_tcp_stream(
                lab.server_ip, PORT, make_socket=lab.make_client_socket, timeout_s=0.5
            )
        await watch.until(lambda: len(watch.wire(Name.WIRE_DEVICE_FAILED)) == 2)
    read, write = watch.wire(Name.WIRE_DEVICE_FAILED)
    assert (read.role, read.attrs["kind"], write.attrs["kind"]) == (
        Role.SERVER,
        "tun_read_failed",
        "tun_write_failed",
    )
    assert "from now on" in read.attrs["lost"]
    # Every SYN the wire read is accounted for: dropped, with why.
    dropped = watch.wire(Name.WIRE_SEGMENT_DROPPED)
    assert dropped
    assert all(e.attrs["reason"].startswith("write_error:") for e in dropped)
    assert {e.attrs["flags"] for e in dropped} == {"SYN"}
    assert not set(namespaces) & set(netns.list_namespaces())  # and the lab still tore down


@needs_root
async def test_dropped_third_ack_makes_the_server_resend_its_syn_ack() -> None:
    bus = Bus()
    watch = Watch(bus)
    async with LabNetwork(bus, drop=["client:ack:1"]) as lab:
        listener = lab.listen_socket(PORT)
        listener.listen()
        # The client sends nothing after connecting: data would carry the ACK again.
        sock = await connect(lab)
        await watch.until(lambda: bool(watch.wire(Name.WIRE_SEGMENT_DROPPED)))
        syn_recv = await lab.run(Role.SERVER, "ss", "-tanH", "state", "syn-recv")
        assert f"10.77.0.2:{PORT}" in syn_recv  # L5: the server waits in SYN_RECV
        await watch.until(lambda: len(watch.segments(Role.SERVER, "SYN,ACK")) >= 2, 4.0)
        sock.close()
        listener.close()
        assert lab.wire.dropped == {"rule:client:ack:1": 1}

    (dropped,) = watch.wire(Name.WIRE_SEGMENT_DROPPED)
    assert dropped.role is Role.CLIENT
    assert (dropped.attrs["flags"], dropped.attrs["reason"]) == ("ACK", "rule:client:ack:1")
    assert "delay_s" not in dropped.attrs
    first, second = watch.segments(Role.SERVER, "SYN,ACK")[:2]
    assert first.attrs["seq"] == second.attrs["seq"]
    assert (first.attrs["retransmission"], second.attrs["retransmission"]) == (False, True)
    assert second.ts - first.ts >= 0.5  # the kernel's initial retransmission timeout (~1 s)


@needs_root
async def test_seeded_random_loss_drops_some_and_tcp_delivers_everything() -> None:
    bus = Bus()
    watch = Watch(bus)
    loss, seed = 0.1, 5
    # The first draws decide the handshake: with this seed it survives (no 1 s SYN timeout).
    first_draws = random.Random(seed)
    assert all(first_draws.random() >= loss for _ in range(3))
    payload = os.urandom(150_000)
    async with LabNetwork(bus, delay_s=0.002, loss=loss, seed=seed) as lab:

        async def digest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read()
            writer.write(hashlib.sha256(data).digest())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(digest, sock=lab.listen_socket(PORT))
        async with asyncio.timeout(8):
            reader, writer = await asyncio.open_connection(sock=await connect(lab))
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            answer = await reader.read()
        writer.close()
        server.close()
        dropped = dict(lab.wire.dropped)

    assert answer == hashlib.sha256(payload).digest()
    assert dropped.get("loss", 0) > 0
    lost = [e for e in watch.wire(Name.WIRE_SEGMENT_DROPPED) if e.attrs["reason"] == "loss"]
    assert len(lost) == dropped["loss"]
    assert any(e.attrs["retransmission"] for e in watch.wire())


@needs_root
async def test_jitter_never_reorders_a_direction() -> None:
    bus = Bus()
    watch = Watch(bus)
    async with LabNetwork(bus, delay_s=0.004, jitter_s=0.004, seed=7) as lab:
        listener = lab.listen_socket(PORT)
        listener.listen()
        sock = await connect(lab)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        for i in range(30):
            await loop.sock_sendall(sock, b"%02d" % i)
            await asyncio.sleep(0.0005)
        await watch.until(
            lambda: (
                sum(e.attrs["payload_bytes"] for e in watch.segments(Role.CLIENT, "PSH,ACK")) >= 60
            )
        )
        sock.close()
        listener.close()
    data = watch.segments(Role.CLIENT, "PSH,ACK")
    rel = [e.attrs["rel_seq"] for e in data]
    assert rel == sorted(rel)
    delays = {e.attrs["delay_s"] for e in data}
    assert len(delays) > 1  # jitter applied
    assert all(d >= 0 for d in delays)


# -- pcap ---------------------------------------------------------------------------------


@needs_root
async def test_pcap_read_back_with_tshark_matches_the_events(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    bus = Bus()
    watch = Watch(bus)
    pcap = tmp_path / "run.pcap"
    async with LabNetwork(bus, delay_s=0.005, pcap=pcap) as lab, http10_server(lab):
        assert (await http10_exchange(lab)).startswith(b"HTTP/1.1 200 OK")
        await watch.until(lambda: len(watch.segments(Role.SERVER, "ACK")) >= 2)
        forwarded = lab.wire.forwarded
    proc = await asyncio.create_subprocess_exec(
        tshark,
        "-r",
        str(pcap),
        "-T",
        "fields",
        "-E",
        "separator=/t",
        *("-e", "frame.time_epoch", "-e", "ip.src", "-e", "tcp.srcport", "-e", "tcp.flags"),
        *("-e", "tcp.seq_raw", "-e", "tcp.seq", "-e", "tcp.ack_raw", "-e", "tcp.len"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    rows = [line.split("\t") for line in out.decode().splitlines()]
    events = watch.wire()
    assert len(rows) == len(events) == forwarded
    for row, event in zip(rows, events, strict=True):
        epoch, src, sport, flags, seq_raw, rel_seq, ack_raw, length = row
        assert float(epoch) == pytest.approx(event.ts, abs=2e-6)
        assert f"{src}:{sport}" == event.local
        assert flag_names(int(flags, 16)) == event.attrs["flags"]
        assert int(seq_raw) == event.attrs["seq"]
        assert int(rel_seq) == event.attrs["rel_seq"]
        assert int(length) == event.attrs["payload_bytes"]
        if event.attrs["ack"] is not None:
            assert int(ack_raw) == event.attrs["ack"]


# -- sockets, commands, sysctls, injection ----------------------------------------------


@needs_root
async def test_run_sysctl_and_namespaces_apart() -> None:
    async with LabNetwork(Bus()) as lab:
        await lab.sysctl(Role.SERVER, "net.ipv4.tcp_fin_timeout", "7")
        assert (await lab.run(Role.SERVER, "sysctl", "-n", "net.ipv4.tcp_fin_timeout")) == "7\n"
        assert lab.read_sysctl(Role.SERVER, "net.ipv4.tcp_fin_timeout") == "7"
        assert lab.read_sysctl(Role.CLIENT, "net.ipv4.tcp_fin_timeout") != "7"
        client_addr = await lab.run(Role.CLIENT, "ip", "-br", "addr", "show", "wire0")
        assert "10.77.0.1/24" in client_addr
        with pytest.raises(LabCommandError, match="exited 1"):
            await lab.run(Role.CLIENT, "ip", "link", "show", "no-such-device")
        with pytest.raises(ValueError, match="not a sysctl key"):
            await lab.sysctl(Role.CLIENT, "../../etc/passwd", "x")
        udp = lab.socket(Role.CLIENT, socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((lab.client_ip, 0))  # only the client namespace has 10.77.0.1
        udp.close()
        wrong = lab.socket(Role.SERVER, socket.AF_INET, socket.SOCK_DGRAM)
        with wrong, pytest.raises(OSError, match="Cannot assign"):
            wrong.bind((lab.client_ip, 0))


@needs_root
async def test_injected_syn_from_a_spoofed_address() -> None:
    bus = Bus()
    watch = Watch(bus)
    async with LabNetwork(bus) as lab:
        listener = lab.listen_socket(PORT)
        listener.listen()
        lab.inject(syn_packet("10.77.0.50", 40000, lab.server_ip, PORT, 12345), Role.SERVER)
        await watch.until(lambda: bool(watch.wire(Name.WIRE_SEGMENT_DROPPED)))
        listener.close()
    (injected,) = watch.wire()
    assert injected.role is Role.CLIENT
    assert (injected.local, injected.remote) == ("10.77.0.50:40000", f"10.77.0.2:{PORT}")
    assert (injected.attrs["flags"], injected.attrs["injected"]) == ("SYN", True)
    (answer,) = watch.wire(Name.WIRE_SEGMENT_DROPPED)
    assert (answer.role, answer.attrs["flags"], answer.attrs["reason"]) == (
        Role.SERVER,
        "SYN,ACK",
        "no_host",
    )
    assert answer.attrs["ack"] == 12346
    assert answer.attrs["rel_ack"] == 1


async def test_bad_settings_fail_before_anything_is_made() -> None:
    with pytest.raises(ValueError, match="kind 'synack' is not one of"):
        LabNetwork(Bus(), drop=["server:synack"])
    with pytest.raises(ValueError, match="probability"):
        LabNetwork(Bus(), loss=1.5)
    lab = LabNetwork(Bus())
    with pytest.raises(RuntimeError, match="not running"):
        lab.make_client_socket(socket.AF_INET)


def test_unavailable_reason_names_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = netns.lab_unavailable_reason()
    assert reason is not None
    assert "needs root" in reason

    async def enter() -> None:
        async with LabNetwork(Bus()):
            pass

    with pytest.raises(LabUnavailable, match="needs root"):
        asyncio.run(enter())


# -- two at once, and cleanup whatever happens ------------------------------------------


@needs_root
async def test_two_labs_at_once() -> None:
    async with LabNetwork(Bus(), delay_s=0.003) as one, LabNetwork(Bus()) as two:
        assert {one.client_ns, one.server_ns}.isdisjoint({two.client_ns, two.server_ns})
        async with http10_server(one), http10_server(two):
            answers = await asyncio.gather(http10_exchange(one), http10_exchange(two))
        assert all(a.startswith(b"HTTP/1.1 200 OK") for a in answers)
        assert one.wire.forwarded > 0
        assert two.wire.forwarded > 0
    assert not our_namespaces()


@needs_root
async def test_cleanup_after_exit_exception_and_cancellation() -> None:
    tun_fds = open_tun_fds()
    async with LabNetwork(Bus()) as lab:
        names = (lab.client_ns, lab.server_ns)
        assert all(name in ip_netns_list() for name in names)
        assert "wire0" in await lab.run(Role.CLIENT, "ip", "-o", "link")
        assert open_tun_fds() == tun_fds + 2
    assert_gone(names)
    assert open_tun_fds() == tun_fds  # the devices went with their fds

    async def fail_inside() -> None:
        nonlocal names
        async with LabNetwork(Bus()) as lab:
            names = (lab.client_ns, lab.server_ns)
            _ = 1 / 0

    with pytest.raises(ZeroDivisionError):
        await fail_inside()
    assert_gone(names)
    assert open_tun_fds() == tun_fds

    entered = asyncio.Event()

    async def hold() -> None:
        async with LabNetwork(Bus(), delay_s=0.01) as held:
            nonlocal names
            names = (held.client_ns, held.server_ns)
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(hold())
    await asyncio.wait_for(entered.wait(), 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_gone(names)
    assert open_tun_fds() == tun_fds
    assert not our_namespaces()


HOLDER = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from netlab.network import LabNetwork
from telemetry.bus import Bus

async def main():
    async with LabNetwork(Bus(), delay_s=0.01) as lab:
        print(lab.client_ns, lab.server_ns, flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


async def start_holder() -> tuple[asyncio.subprocess.Process, tuple[str, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER.format(repo=str(REPO)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 10)
    client_ns, server_ns = line.decode().split()
    return proc, (client_ns, server_ns)


@needs_root
async def test_a_killed_lab_is_swept_by_the_next_and_a_living_one_is_not() -> None:
    proc, names = await start_holder()
    try:
        # A lab starting beside a living one sweeps nothing of it, and both run.
        async with LabNetwork(Bus()) as lab, http10_server(lab):
            assert all(name in ip_netns_list() for name in names)
            assert (await http10_exchange(lab)).startswith(b"HTTP/1.1 200 OK")
        proc.kill()  # SIGKILL: no cleanup can run
        await proc.wait()
        assert all(name in ip_netns_list() for name in names)  # left behind...
        async with LabNetwork(Bus()):
            pass
        assert_gone(names)  # ...and swept by the next lab
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@needs_root
async def test_ctrl_c_cleans_up() -> None:
    proc, names = await start_holder()
    try:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            await proc.wait()
        assert_gone(names)  # asyncio.run cancelled the task: __aexit__ ran, no sweep needed
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@needs_root
async def test_wireshark_decrypts_real_tls_from_the_pcap_with_the_key_log(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    files = make_lab_certificates(tmp_path / "certs", ["localhost"])
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(files.certificate("rsa"), files.key("rsa"))
    client_tls = ssl.create_default_context(cafile=str(files.ca))
    keylog = tmp_path / "keys.txt"
    client_tls.keylog_filename = str(keylog)  # what SSLKEYLOGFILE sets
    pcap = tmp_path / "tls.pcap"
    bus = Bus()
    watch = Watch(bus)
    served = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ssl.SSLError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsecret\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        writer.transport.abort()  # closed by now, or never will be cleanly: don't leak it
        served.set()

    async with LabNetwork(bus, delay_s=0.002, pcap=pcap) as lab:
        server = await asyncio.start_server(handle, sock=lab.listen_socket(8443), ssl=server_tls)
        reader, writer = await asyncio.open_connection(
            sock=await connect(lab, 8443), ssl=client_tls, server_hostname="localhost"
        )
        writer.write(b"GET /private HTTP/1.1\r\nhost: localhost\r\n\r\n")
        answer = await reader.readuntil(b"secret\n")
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        await asyncio.wait_for(served.wait(), 3)
        server.close()
    assert answer.startswith(b"HTTP/1.1 200 OK")
    # On the wire the request is ciphertext: no event shows it.
    assert not any("GET" in (e.attrs["preview"] or "") for e in watch.wire())
    proc = await asyncio.create_subprocess_exec(
        tshark,
        "-r",
        str(pcap),
        "-o",
        f"tls.keylog_file:{keylog}",
        "-d",
        "tcp.port==8443,tls",
        "-Y",
        "http",
        "-T",
        "fields",
        "-e",
        "http.request.uri",
        "-e",
        "http.response.code",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["/private", "200"]


# -- the wire alone, without root: SOCK_SEQPACKET pairs stand in for the TUN devices ------
# (like a TUN fd, a seqpacket socket gives one whole packet per read)


class FakeDevices:
    """Two socket pairs: the wire holds one end of each, the test plays the hosts."""

    def __init__(self) -> None:
        self.pairs = {
            side: socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for side in Role
        }
        for wire_end, host_end in self.pairs.values():
            wire_end.setblocking(False)
            host_end.setblocking(False)

    @property
    def fds(self) -> dict[Role, int]:
        return {side: pair[0].fileno() for side, pair in self.pairs.items()}

    def send(self, side: Role, packet: bytes) -> None:
        """`side`'s host sends a packet (it comes out of side's device)."""
        self.pairs[side][1].send(packet)

    async def receive(self, side: Role, count: int, timeout_s: float = 2.0) -> list[bytes]:
        """The next `count` packets delivered to `side`'s host."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            return [await loop.sock_recv(self.pairs[side][1], 65535) for _ in range(count)]

    def close(self) -> None:
        for pair in self.pairs.values():
            for end in pair:
                end.close()


@pytest.fixture
def devices() -> Iterator[FakeDevices]:
    made = FakeDevices()
    yield made
    made.close()


HOSTS = {Role.CLIENT: "10.77.0.1", Role.SERVER: "10.77.0.2"}


def data_packet(seq: int, payload: bytes = b"x", dst: str = "10.77.0.2") -> bytes:
    return tcp_packet("10.77.0.1", 40000, dst, 8080, seq, ack=1, payload=payload)


async def test_wire_delays_in_order_and_reports_each_segment(devices: FakeDevices) -> None:
    bus = Bus()
    watch = Watch(bus)
    out = io.BytesIO()
    wire = Wire(bus, devices.fds, HOSTS, delay_s=0.01, jitter_s=0.01, seed=3, pcap=PcapWriter(out))
    wire.start()
    try:
        sent = [syn_packet("10.77.0.1", 40000, "10.77.0.2", 8080, 100)]
        sent += [data_packet(101 + i, b"GET /%d HTTP/1.0\r\n" % i) for i in range(20)]
        started = time.monotonic()
        for packet in sent:
            devices.send(Role.CLIENT, packet)
        received = await devices.receive(Role.SERVER, len(sent))
        took = time.monotonic() - started
    finally:
        wire.stop()
    assert received == sent  # every packet, none reordered by the jitter
    assert took >= 0.0  # (no upper bound: a busy machine may be slow)
    events = watch.wire()
    assert len(events) == len(sent) == wire.forwarded == wire.forwarded_segments
    assert [e.attrs["rel_seq"] for e in events] == list(range(len(sent)))
    assert events[1].attrs["preview"] == "GET /0 HTTP/1.0"
    assert len({e.attrs["delay_s"] for e in events}) > 1
    assert all(0 <= e.attrs["delay_s"] <= 0.02 + 0.01 for e in events)
    assert all(e.ts - e.attrs["sent_ts"] >= e.attrs["delay_s"] - 0.001 for e in events)
    assert [p for _, p in read_pcap(out.getvalue())] == sent


async def test_wire_drops_by_rule_loss_and_unknown_host(devices: FakeDevices) -> None:
    bus = Bus()
    watch = Watch(bus)
    loss, seed = 0.5, 11
    wire = Wire(bus, devices.fds, HOSTS, loss=loss, seed=seed, rules=["client:data:2"])
    wire.start()
    try:
        devices.send(Role.CLIENT, data_packet(1, dst="10.77.0.9"))  # nobody there
        packets = [data_packet(1 + i) for i in range(40)]
        for packet in packets:
            devices.send(Role.CLIENT, packet)
        await watch.until(
            lambda: len(watch.events) == 41 and sum(wire.dropped.values()) + wire.forwarded == 41
        )
    finally:
        wire.stop()
    # The loss draws are the seed's: the rule's packet and the no_host one take none.
    draws = random.Random(seed)
    lost = sum(1 for _ in range(39) if draws.random() < loss)
    assert wire.dropped == {"no_host": 1, "rule:client:data:2": 1, "loss": lost}
    reasons = [e.attrs["reason"] for e in watch.wire(Name.WIRE_SEGMENT_DROPPED)]
    assert reasons[0] == "no_host"
    assert reasons.count("rule:client:data:2") == 1
    assert wire.forwarded == 39 - lost
    received = await devices.receive(Role.SERVER, wire.forwarded)
    assert all(p in packets for p in received)


async def test_wire_ignores_what_is_not_ipv4(devices: FakeDevices) -> None:
    bus = Bus()
    watch = Watch(bus)
    wire = Wire(bus, devices.fds, HOSTS)
    wire.start()
    try:
        devices.send(Role.CLIENT, b"\x60" + b"\0" * 47)  # an IPv6 router solicitation, say
        devices.send(Role.CLIENT, syn_packet("10.77.0.1", 2, "10.77.0.2", 1, 0)[:30])  # cut
        devices.send(Role.SERVER, syn_packet("10.77.0.2", 1, "10.77.0.1", 2, 0))
        (delivered,) = await devices.receive(Role.CLIENT, 1)
    finally:
        wire.stop()
        wire.stop()  # twice is fine
    assert decode_packet(delivered).src == "10.77.0.2"
    assert wire.dropped == {"not_ipv4": 1, "malformed": 1}
    assert [e.role for e in watch.events] == [Role.SERVER]
