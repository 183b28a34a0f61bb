"""Re-record the sample captures in this folder (as root): `python tests/data/wire/capture.py`.

- http10.pcap: one HTTP/1.0 request over the lab wire (10 ms one-way), from SYN to the
  last ACK of the close; the server closes first.
- synack_retransmitted.pcap: the client's third handshake ACK dropped (rule client:ack:1),
  so the server resends its SYN-ACK after about 1 s; the client then ACKs it.

The unit tests decode these real kernel-made packets (checksums and all) without root.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from netlab.network import LabNetwork
from telemetry.bus import Bus
from telemetry.events import Event, Name

HERE = Path(__file__).parent
PORT = 8080


async def http10() -> None:
    async with LabNetwork(Bus(), delay_s=0.01, pcap=HERE / "http10.pcap") as lab:

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, sock=lab.listen_socket(PORT))
        sock = lab.make_client_socket(socket.AF_INET)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (lab.server_ip, PORT))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET / HTTP/1.0\r\nhost: 10.77.0.2\r\n\r\n")
        await reader.read()
        writer.close()
        await asyncio.sleep(0.1)
        server.close()


async def synack_retransmitted() -> None:
    bus = Bus()
    resent = asyncio.Event()

    def watch(event: Event) -> None:
        if event.name is Name.WIRE_SEGMENT_FORWARDED and event.attrs["retransmission"]:
            resent.set()

    bus.subscribe(watch)
    path = HERE / "synack_retransmitted.pcap"
    async with LabNetwork(bus, drop=["client:ack:1"], pcap=path) as lab:
        listener = lab.listen_socket(PORT)
        listener.listen()
        sock = lab.make_client_socket(socket.AF_INET)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (lab.server_ip, PORT))
        await asyncio.wait_for(resent.wait(), 5)
        await asyncio.sleep(0.05)
        sock.close()
        listener.close()


if __name__ == "__main__":
    asyncio.run(http10())
    asyncio.run(synack_retransmitted())
