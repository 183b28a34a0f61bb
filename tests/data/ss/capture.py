"""Capture the `ss -tanoiH` outputs in this directory, for real (needs root and iproute2).

Each scenario runs in a network namespace of its own (made and deleted here), so its
output holds only the sockets the scenario made, all on port 8080:

    sudo .venv/bin/python tests/data/ss/capture.py            # every scenario
    sudo .venv/bin/python tests/data/ss/capture.py syn_recv   # one

How each state is held long enough to be seen (nothing here sends outside its namespace):
- SYN-SENT: connect to 10.99.0.1, an address on the veth's subnet that nobody holds (no
  ARP answer, so the SYN goes nowhere; a blackhole route would fail connect() at once),
  and a second client of a listener whose accept queue is full (the kernel drops its SYN).
- SYN-RECV: a hand-made SYN (raw socket) from 10.99.0.1, an address on the veth's subnet
  that nobody holds, so the SYN-ACK goes nowhere and is retransmitted.
- FIN-WAIT-1, LAST-ACK: a FIN queued behind data the peer does not read (zero window, so
  the persist timer runs); FIN-WAIT-2/CLOSE-WAIT: a shutdown() the peer never answers.
- CLOSING: both ends' FINs queued behind unread data, then one end reads: it gets the
  peer's FIN while its own is still unacknowledged.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from netlab.segments import syn_packet

HERE = Path(__file__).resolve().parent
PORT = 8080
NETNS = "hlss-capture"
FILTER = f"( sport = :{PORT} or dport = :{PORT} )"


def ss(*flags: str) -> str:
    return subprocess.run(["ss", *flags, FILTER], check=True, capture_output=True, text=True).stdout


def save(name: str, text: str) -> None:
    (HERE / f"{name}.txt").write_text(text)
    print(f"--- {name}.txt\n{text}", end="")


def listener(
    host: str = "127.0.0.1", backlog: int = 8, family: int = socket.AF_INET
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, PORT))
    sock.listen(backlog)
    return sock


def connect(host: str = "127.0.0.1", family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.connect((host, PORT))
    return sock


def fill(sock: socket.socket) -> int:
    """Write until the peer's receive window and our send buffer are full."""
    sock.setblocking(False)
    sent = 0
    try:
        while True:
            sent += sock.send(bytes(65536))
    except BlockingIOError:
        pass
    sock.setblocking(True)
    return sent


def drain(sock: socket.socket, seconds: float) -> None:
    sock.settimeout(0.05)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if not sock.recv(1 << 20):
                return
        except TimeoutError:
            pass


def listen_estab() -> None:
    server = listener(backlog=4)
    clients = [connect() for _ in range(3)]
    clients[0].setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    clients[1].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # Recv-Q on the server's end
    accepted, _ = server.accept()  # one accepted, two left in the accept queue
    accepted.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    time.sleep(0.2)
    save("listen_estab", ss("-tanoiH"))
    save("with_header", ss("-tanoi"))  # what -H leaves out


def syn_sent() -> None:
    far = socket.socket()
    far.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        far.connect(("10.99.0.1", PORT))  # nobody answers ARP: the SYN goes nowhere
    server = listener(backlog=0)  # an accept queue of one
    first = connect()
    late = socket.socket()
    late.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        late.connect(("127.0.0.1", PORT))  # the queue is full: the kernel drops the SYN
    time.sleep(1.5)  # one SYN retransmission (after 1 s)
    save("syn_sent", ss("-tanoiH"))
    del server, first


def syn_recv() -> None:
    server = listener("10.99.0.2")
    src, dst, sport = "10.99.0.1", "10.99.0.2", 40000
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.sendto(syn_packet(src, sport, dst, PORT, 12345), (dst, 0))
    time.sleep(1.5)  # one SYN-ACK retransmission
    save("syn_recv", ss("-tanoiH"))
    del server


def closing_states() -> None:
    server = listener()
    # FIN-WAIT-2 / CLOSE-WAIT: the client shuts down, the server never closes.
    half = connect()
    half_peer, _ = server.accept()
    half.shutdown(socket.SHUT_WR)
    # FIN-WAIT-1: the client's FIN waits behind data the server does not read.
    stuck = connect()
    stuck_peer, _ = server.accept()
    fill(stuck)
    stuck.shutdown(socket.SHUT_WR)
    # LAST-ACK: the server's FIN (after the client's) waits behind unread data.
    last = connect()
    last_peer, _ = server.accept()
    last.shutdown(socket.SHUT_WR)
    time.sleep(0.1)
    fill(last_peer)
    last_peer.close()  # CLOSE-WAIT -> LAST-ACK, its FIN queued
    # FIN-WAIT-2 orphaned: the client closed (not just shut down): the fin timeout runs.
    orphan = connect()
    orphan_peer, _ = server.accept()
    orphan.close()
    time.sleep(0.3)
    save("closing_states", ss("-tanoiH"))
    del half_peer, stuck_peer, orphan_peer


def closing() -> None:
    server = listener()
    a = connect()
    b, _ = server.accept()
    fill(a)
    fill(b)
    a.shutdown(socket.SHUT_WR)
    b.shutdown(socket.SHUT_WR)
    drain(a, 1.0)  # a reads b's data and FIN while its own FIN is still unacknowledged
    time.sleep(0.2)
    save("closing", ss("-tanoiH"))
    del b


def time_wait() -> None:
    server = listener()
    for i in range(3):
        client = connect()
        peer, _ = server.accept()
        # The first: the server closes first (HTTP/1.0): TIME-WAIT on the server's end.
        # The others: the client closes first: TIME-WAIT on the client's end.
        first, second = (peer, client) if i == 0 else (client, peer)
        first.close()
        time.sleep(0.05)
        second.close()
    time.sleep(0.2)
    save("time_wait", ss("-tanoiH"))


def ipv6() -> None:
    server = listener("::1", family=socket.AF_INET6)
    client = connect("::1", family=socket.AF_INET6)
    peer, _ = server.accept()
    # A dual-stack listener on :: sees IPv4 peers as ::ffff:127.0.0.1.
    dual = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    dual.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    dual.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")  # ss shows %lo
    dual.bind(("::", PORT + 1))
    dual.listen(8)
    v4 = socket.create_connection(("127.0.0.1", PORT + 1))
    v4_peer, _ = dual.accept()
    time.sleep(0.1)
    filter_ = (
        f"( sport = :{PORT} or dport = :{PORT} or sport = :{PORT + 1} or dport = :{PORT + 1} )"
    )
    text = subprocess.run(
        ["ss", "-tanoiH", filter_], check=True, capture_output=True, text=True
    ).stdout
    save("ipv6", text)
    del client, peer, v4, v4_peer


SCENARIOS = {
    f.__name__: f
    for f in (listen_estab, syn_sent, syn_recv, closing_states, closing, time_wait, ipv6)
}


def main() -> None:
    names = sys.argv[1:] or list(SCENARIOS)
    if os.environ.get("HLSS_INSIDE") == "1":
        SCENARIOS[names[0]]()
        return
    for name in names:
        subprocess.run(["ip", "netns", "add", NETNS], check=True)
        try:
            for argv in (
                ["link", "set", "lo", "up"],
                ["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                ["addr", "add", "10.99.0.2/24", "dev", "v0"],
                ["link", "set", "v0", "up"],
                ["link", "set", "v1", "up"],
            ):
                subprocess.run(["ip", "-n", NETNS, *argv], check=True)
            subprocess.run(
                ["ip", "netns", "exec", NETNS, sys.executable, __file__, name],
                check=True,
                env={**os.environ, "HLSS_INSIDE": "1"},
            )
        finally:
            subprocess.run(["ip", "netns", "del", NETNS], check=True)


if __name__ == "__main__":
    main()
