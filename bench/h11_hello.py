"""A bare asyncio + h11 hello-world server: the ceiling for a pure-Python h11 server.

Two styles, for context in the throughput benchmark:
- `protocol`: an `asyncio.Protocol`, the way uvicorn's h11 implementation is built;
- `streams`: `asyncio.start_server` with a reader/writer per connection, the way our
  server is built.
Both answer every request with the body of our `/` route, keep-alive as h11 allows it.

    python -m bench.h11_hello --port 8000 --style protocol
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from email.utils import formatdate
from typing import Final

import h11

from bench.body import BODY, CONTENT_TYPE
from bench.common import HOST

_date: tuple[int, bytes] = (0, b"")
BODY_LENGTH: Final = b"%d" % len(BODY)


def _headers() -> list[tuple[bytes, bytes]]:
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, formatdate(second, usegmt=True).encode())
    return [
        (b"server", b"h11-hello"),
        (b"date", _date[1]),
        (b"content-type", CONTENT_TYPE),
        (b"content-length", BODY_LENGTH),
    ]


def _response(conn: h11.Connection) -> bytes:
    return (
        conn.send(h11.Response(status_code=200, headers=_headers()))
        + conn.send(h11.Data(data=BODY))
        + conn.send(h11.EndOfMessage())
    )


class HelloProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.conn = h11.Connection(h11.SERVER)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self._handle_events()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self._handle_events()
        return False  # let asyncio close the transport

    def _handle_events(self) -> None:
        transport = self.transport
        assert transport is not None
        conn = self.conn
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                transport.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if type(event) is h11.EndOfMessage:
                transport.write(_response(conn))
                if conn.our_state is h11.MUST_CLOSE:
                    transport.close()
                    return
                conn.start_next_cycle()
            elif type(event) is h11.ConnectionClosed:
                transport.close()
                return


async def handle_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif type(event) is h11.EndOfMessage:
                writer.write(_response(conn))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
            elif type(event) is h11.ConnectionClosed:
                return
    except (h11.RemoteProtocolError, ConnectionError):
        return
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve(port: int, style: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server: asyncio.Server
    if style == "protocol":
        server = await loop.create_server(HelloProtocol, HOST, port, backlog=511)
    else:
        server = await asyncio.start_server(handle_stream, HOST, port, backlog=511)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.h11_hello", description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1")
    parser.add_argument("--style", choices=["protocol", "streams"], default="protocol")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.style))


if __name__ == "__main__":
    main()
