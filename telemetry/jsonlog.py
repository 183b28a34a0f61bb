"""Log sinks: one JSON object per line, or one readable line per event.

JSON keys: `ts`, `level`, `event`, `role`, `conn_id`, `local`, `remote`, then the
event's own fields (named with their unit: `duration_s`, `bytes`). Lines are written
whole; `close()` flushes, so a graceful shutdown loses nothing.
"""

from __future__ import annotations

import json
import time
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, Final, TextIO

from telemetry.events import Level

if TYPE_CHECKING:
    from collections.abc import Callable

    from telemetry.events import Event

LEVELS: Final = tuple(level.value for level in Level)  # least to most severe


def event_to_dict(event: Event) -> dict[str, Any]:
    record: dict[str, Any] = {
        "ts": round(event.ts, 6),
        "level": event.level.value,
        "event": event.name.value,
        "role": event.role.value,
        "conn_id": event.conn_id,
    }
    if event.local is not None:
        record["local"] = event.local
    if event.remote is not None:
        record["remote"] = event.remote
    record.update(event.attrs)
    return record


class LogSink:
    """Writes events to a text stream, as JSON lines or as readable text.

    Args:
        stream: where lines go (a file, stderr).
        fmt: "json" or "text".
        flush_each: flush after every line (for a terminal); otherwise the stream's
            own buffering applies and `close()` flushes.
        level: the least level written; "debug" adds the per-message events
            (WebSocket messages, pings), which metrics count either way.
    """

    def __init__(
        self,
        stream: TextIO,
        fmt: str = "json",
        *,
        flush_each: bool = False,
        level: str = "info",
    ) -> None:
        if fmt not in ("json", "text"):
            raise ValueError(f"unknown log format {fmt!r} (json or text)")
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r} ({', '.join(LEVELS)})")
        self.stream = stream
        self.fmt = fmt
        self.flush_each = flush_each
        self.skipped = frozenset(LEVELS[: LEVELS.index(level)])
        self.lines = 0

    def __call__(self, event: Event) -> None:
        if event.level in self.skipped:
            return
        line = format_json(event) if self.fmt == "json" else format_text(event)
        self.stream.write(line)
        self.lines += 1
        if self.flush_each:
            self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def _make_encoder() -> Callable[[dict[str, Any]], str]:
    """JSONEncoder.encode builds a C encoder on every call; build it once (when the C
    accelerator is there) for the same output: ASCII, ", " and ": ", str() as default."""
    if c_make_encoder is None:  # pragma: no cover (pure-Python json)
        return json.JSONEncoder(default=str).encode
    encoder = c_make_encoder(
        None, str, encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    return lambda obj: "".join(encoder(obj, 0))


_encode = _make_encoder()


def format_json(event: Event) -> str:
    """One JSON line, the same object as `event_to_dict`, built without the dict.

    The fixed fields are enum values and formatted socket addresses, which need no
    escaping; the event's own fields go through the JSON encoder. This sink runs for
    every event, so it is written for speed (a test checks it against `event_to_dict`).
    """
    conn_id = "null" if event.conn_id is None else event.conn_id
    line = (
        # (StrEnum members format as their values; `.value` would cost a descriptor call.)
        f'{{"ts": {event.ts:.6f}, "level": "{event.level}", "event": "{event.name}", '
        f'"role": "{event.role}", "conn_id": {conn_id}'
    )
    if event.local is not None:
        line += f', "local": "{event.local}"'
    if event.remote is not None:
        line += f', "remote": "{event.remote}"'
    if event.attrs:
        return line + ", " + _encode(event.attrs)[1:] + "\n"
    return line + "}\n"


def format_text(event: Event) -> str:
    """`01:02:03.456789 server #3 tcp.connection.accepted 127.0.0.1:5555 transport=tcp`"""
    clock = time.strftime("%H:%M:%S", time.localtime(event.ts)) + f"{event.ts % 1:.6f}"[1:]
    conn = f"#{event.conn_id}" if event.conn_id is not None else "-"
    fields = " ".join(f"{key}={_short(value)}" for key, value in event.attrs.items())
    peer = f" {event.remote}" if event.remote else ""
    if event.local and event.layer in ("kernel", "wire"):  # no conn_id: both ends say which
        peer = f" {event.local} -> {event.remote}"
    return (
        f"{clock} {event.role.value:6} {conn:>5} {event.name.value}{peer} {fields}".rstrip() + "\n"
    )


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return repr(text) if " " in text else text
