"""Toy TLS against real TLS (Python's ssl, OpenSSL underneath): handshakes and records.

Both ends run in this process, in one event loop, on 127.0.0.1, one connection at a time,
so each figure is the CPU of both sides plus loopback:

- handshakes: connect, handshake, close; for toy rsa, toy ecdhe, real TLS 1.3 and 1.2
  (ECDHE with the lab's EC certificate; toy rsa uses the RSA one);
- records: one connection, the server writes `--mib` MiB in 64 KiB writes, the client
  reads it all; toy (AES-128-GCM) against real TLS 1.3 (whatever OpenSSL picks);
- HTTP: our server's toy-TLS and real-TLS listeners, our client, keep-alive GETs of
  `/bytes` returning `--mib` MiB each (the handshake not timed).

Goals (issue 4): a toy handshake within 1.5x of a real TLS 1.3 one; toy record encryption
within 2x of real TLS for 1 MiB of responses.

    .venv/bin/python -m bench.tls_handshake                 # ~1 minute
    .venv/bin/python -m bench.tls_handshake --handshakes 50 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import HOST, log, start_results, write_json
from client.client import HTTPClient
from handshake_lab.transport import TCPStream
from handshake_tls.certs import make_lab_certificates
from handshake_tls.connection import ClientConnection, ServerConnection, ServerIdentity
from handshake_tls.crypto import (
    certificate_der,
    load_certificate_pem,
    load_private_key_pem,
)
from handshake_tls.stream import ToyTLSStream
from handshake_tls.wire import KeyExchange
from server.config import ServerConfig
from server.lifecycle import Server
from telemetry.bus import Bus, Tracer
from telemetry.events import Role

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from handshake_tls.certs import LabFiles

CHUNK = 64 * 1024


class Toy:
    def __init__(self, files: LabFiles) -> None:
        self.ca = load_certificate_pem(files.ca.read_bytes())
        self.identities = {
            kind: ServerIdentity(
                (certificate_der(load_certificate_pem(files.certificate(kind).read_bytes())),),
                load_private_key_pem(files.key(kind).read_bytes()),
            )
            for kind in ("rsa", "ec")
        }
        self.tracer = Tracer(Bus(), Role.SERVER)  # no sinks: telemetry costs nothing here

    async def serve(self, payload_mib: int = 0) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            stream = ToyTLSStream(TCPStream(reader, writer), ServerConnection(self.identities))
            try:
                await stream.open(self.tracer, 10)
                for _ in range(payload_mib * 16):
                    await stream.send_all(bytes(CHUNK))
                await stream.send_eof()
                while await stream.receive_some():
                    pass
            finally:
                await stream.aclose()

        return await asyncio.start_server(handle, HOST, 0)

    async def connect(self, port: int, kx: KeyExchange) -> ToyTLSStream:
        reader, writer = await asyncio.open_connection(HOST, port)
        stream = ToyTLSStream(TCPStream(reader, writer), ClientConnection(self.ca, HOST, kx))
        await stream.open(Tracer(Bus(), Role.CLIENT), 10)
        return stream


def real_contexts(
    files: LabFiles, version: ssl.TLSVersion
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.certificate("ec"), files.key("ec"))
    server.minimum_version = server.maximum_version = version
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(files.ca)
    client.minimum_version = client.maximum_version = version
    return server, client


async def real_serve(context: ssl.SSLContext, payload_mib: int = 0) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(payload_mib * 16):
            writer.write(bytes(CHUNK))
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, HOST, 0, ssl=context)


async def timed(action: Callable[[], Awaitable[None]], n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await action()
        times.append(time.perf_counter() - started)
    return times


async def handshake_rows(files: LabFiles, n: int) -> dict[str, list[float]]:
    toy = Toy(files)
    rows: dict[str, list[float]] = {}
    server = await toy.serve()
    port = server.sockets[0].getsockname()[1]
    for kx in KeyExchange:

        async def toy_once(kx: KeyExchange = kx) -> None:
            stream = await toy.connect(port, kx)
            await stream.send_eof()
            await stream.aclose()

        rows[f"toy {kx.name.lower()}"] = await timed(toy_once, n)
    server.close()
    await server.wait_closed()
    for name, version in (
        ("real TLS 1.3", ssl.TLSVersion.TLSv1_3),
        ("real TLS 1.2", ssl.TLSVersion.TLSv1_2),
    ):
        server_ctx, client_ctx = real_contexts(files, version)
        real = await real_serve(server_ctx)
        real_port = real.sockets[0].getsockname()[1]

        async def real_once(ctx: ssl.SSLContext = client_ctx, p: int = real_port) -> None:
            _reader, writer = await asyncio.open_connection(HOST, p, ssl=ctx, server_hostname=HOST)
            writer.close()
            await writer.wait_closed()

        rows[name] = await timed(real_once, n)
        real.close()
        await real.wait_closed()
    return rows


async def record_rows(files: LabFiles, mib: int, n: int) -> dict[str, list[float]]:
    toy = Toy(files)
    server = await toy.serve(mib)
    port = server.sockets[0].getsockname()[1]

    async def toy_once() -> None:
        stream = await toy.connect(port, KeyExchange.ECDHE)
        started = time.perf_counter()
        got = 0
        while data := await stream.receive_some():
            got += len(data)
        assert got == mib << 20, got
        toy_times.append(time.perf_counter() - started)
        await stream.send_eof()
        await stream.aclose()

    toy_times: list[float] = []
    await timed(toy_once, n)
    server.close()
    await server.wait_closed()
    server_ctx, client_ctx = real_contexts(files, ssl.TLSVersion.TLSv1_3)
    real = await real_serve(server_ctx, mib)
    real_port = real.sockets[0].getsockname()[1]

    async def real_once() -> None:
        reader, writer = await asyncio.open_connection(
            HOST, real_port, ssl=client_ctx, server_hostname=HOST
        )
        started = time.perf_counter()
        got = 0
        while data := await reader.read(CHUNK):
            got += len(data)
        assert got == mib << 20, got
        real_times.append(time.perf_counter() - started)
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()

    real_times: list[float] = []
    await timed(real_once, n)
    real.close()
    await real.wait_closed()
    return {f"toy {mib} MiB": toy_times, f"real TLS 1.3 {mib} MiB": real_times}


async def http_rows(files: LabFiles, mib: int, n: int) -> dict[str, list[float]]:
    """Our server and client: keep-alive GETs of /bytes (mib MiB) over toy and real TLS."""
    config = ServerConfig(
        host=HOST, port=0, toy_tls_port=0, real_tls_port=0, certs_dir=files.directory
    )
    rows: dict[str, list[float]] = {}
    async with Server(config) as server:
        for name, url in (
            (f"toy HTTP {mib} MiB", f"toytls://{HOST}:{server.toy_tls_port}"),
            (f"real TLS HTTP {mib} MiB", f"https://localhost:{server.real_tls_port}"),
        ):
            async with HTTPClient(cafile=files.ca) as client:
                target = f"{url}/bytes?n={mib << 20}"
                await client.get(target)  # the handshake, outside the timing

                async def once(client: HTTPClient = client, target: str = target) -> None:
                    response = await client.get(target)
                    assert len(response.body) == mib << 20

                rows[name] = await timed(once, n)
                assert client.connections_opened == 1  # keep-alive throughout
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tls_handshake",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--handshakes", type=int, default=300, help="per row and round")
    parser.add_argument("--mib", type=int, default=1, help="MiB per record-layer transfer")
    parser.add_argument("--transfers", type=int, default=30, help="per row and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    args = parser.parse_args()
    results: dict[str, Any] = start_results(
        "tls_handshake", args, "client and server in one process", {"out"}
    )
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        files = make_lab_certificates(Path(tmp))
        for number in range(1, args.rounds + 1):
            log(f"round {number}: handshakes")
            rows = asyncio.run(handshake_rows(files, args.handshakes))
            log(f"round {number}: records")
            rows |= asyncio.run(record_rows(files, args.mib, args.transfers))
            log(f"round {number}: HTTP over our listeners")
            rows |= asyncio.run(http_rows(files, args.mib, args.transfers))
            medians = {name: statistics.median(times) for name, times in rows.items()}
            for name, median in medians.items():
                log(f"  {name:<22} median {median * 1000:8.3f} ms")
            rounds.append(medians)
    names = list(rounds[0])
    summary = {name: statistics.median(r[name] for r in rounds) for name in names}
    ratios = {
        "toy ecdhe / real TLS 1.3 (goal <= 1.5)": [
            r["toy ecdhe"] / r["real TLS 1.3"] for r in rounds
        ],
        "toy rsa / real TLS 1.3": [r["toy rsa"] / r["real TLS 1.3"] for r in rounds],
        f"toy / real TLS 1.3, {args.mib} MiB of records": [
            r[f"toy {args.mib} MiB"] / r[f"real TLS 1.3 {args.mib} MiB"] for r in rounds
        ],
        f"toy / real TLS, {args.mib} MiB keep-alive responses (goal <= 2)": [
            r[f"toy HTTP {args.mib} MiB"] / r[f"real TLS HTTP {args.mib} MiB"] for r in rounds
        ],
    }
    print("| row | median ms (median of rounds) | per second |")
    print("| --- | --- | --- |")
    for name, median in summary.items():
        print(f"| {name} | {median * 1000:.3f} | {1 / median:.0f} |")
    print("\n| ratio (time, same round) | median | per round |")
    print("| --- | --- | --- |")
    for name, values in ratios.items():
        per_round = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {name} | {statistics.median(values):.2f} | {per_round} |")
    results |= {"rounds": rounds, "summary_s": summary, "ratios": ratios}
    print(f"\nRaw results: {write_json(args.out, 'tls_handshake', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
