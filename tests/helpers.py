"""Helpers for tests: raw sockets, raw WebSocket frames, metric samples, child processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from prometheus_client import CollectorRegistry


@contextlib.asynccontextmanager
async def spawned(*argv: str, **streams: Any) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child process (`streams`: stdin=, stdout=, stderr= as for asyncio), killed and
    reaped on leaving if it is still running."""
    process = await asyncio.create_subprocess_exec(*argv, **streams)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of a metric's samples matching `labels` (0 when there are none)."""
    total = 0.0
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 3.0) -> None:
    """Poll `predicate` until true, for at most `timeout_s`; fail saying `what` it waited for."""
    try:
        async with asyncio.timeout(timeout_s):
            # A poll, not an Event: our Server and the peers expose no event to wait on.
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s} s: {what}") from None


async def raw_exchange(
    port: int, data: bytes, *, read_timeout_s: float = 5.0, half_close: bool = False
) -> bytes:
    """Send raw bytes to 127.0.0.1:port, read until the server closes, return all of it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.write_eof()
        async with asyncio.timeout(read_timeout_s):
            return await reader.read(-1)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def status_of(response: bytes) -> int:
    """The status code of the first response in `response`."""
    line = response.split(b"\r\n", 1)[0]
    return int(line.split()[1])


# WebSocket opcodes (RFC 6455 §5.2).
CONTINUATION: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA


def ws_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    declared: int | None = None,
) -> bytes:
    """One frame as RFC 6455 §5.2 lays it out; `declared` lies about the length."""
    length = len(payload) if declared is None else declared
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def read_ws_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked frame from a server: (opcode, payload)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


def close_code_of(payload: bytes) -> int:
    """The code in a Close frame's payload (RFC 6455 §5.5.1); 1005 when there is none."""
    return struct.unpack("!H", payload[:2])[0] if payload else 1005
