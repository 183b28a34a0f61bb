"""Files for looking at toy-TLS connections afterwards: a key log and a recording.

A recording is JSON lines, one per chunk of bytes: {"conn": N, "from": "client" or
"server", "data": base64}. Both files are appended to, a line at a time, and flushed, so
that a connection cut short still leaves what it sent.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


class LineFile:
    """Appends whole lines to a file, flushed each time."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")

    def __call__(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Recorder(LineFile):
    def for_connection(self, conn_id: int) -> Callable[[str, bytes], None]:
        def record(sender: str, data: bytes) -> None:
            chunk = {"conn": conn_id, "from": sender, "data": base64.b64encode(data).decode()}
            self(json.dumps(chunk))

        return record


def read_recording(text: str) -> dict[int, list[tuple[str, bytes]]]:
    """Connection -> its chunks, in order.

    Raises:
        ValueError: a line that is not a recording's.
    """
    connections: dict[int, list[tuple[str, bytes]]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            chunk = json.loads(line)
            sender = chunk["from"]
            if sender not in ("client", "server"):
                raise ValueError(sender)
            entry = (sender, base64.b64decode(chunk["data"], validate=True))
            connections.setdefault(int(chunk["conn"]), []).append(entry)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"line {number} is not a toy-TLS recording line ({exc})") from None
    return connections
