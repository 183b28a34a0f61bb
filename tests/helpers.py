"""Helpers for tests: raw sockets, metric samples."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of a metric's samples matching `labels` (0 when there are none)."""
    total = 0.0
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


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
