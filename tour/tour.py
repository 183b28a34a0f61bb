"""What every lesson gets (`Tour`: the running server, the bus, where to write) and what a
lesson is (`Lesson`: a name, what it explains, what to look at, and the code that shows it).
"""

from __future__ import annotations

import contextlib
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path
    from typing import TextIO

    from server.lifecycle import Server
    from telemetry.bus import Bus
    from telemetry.timeline import Timeline

WIDTH: Final = 90
RULE: Final = "-" * WIDTH


@dataclass(slots=True)
class Tour:
    """The lab as the lessons find it: one server on loopback (plain, toy TLS, real TLS),
    one bus (the same events the JSON log and the metrics get), and the terminal."""

    bus: Bus
    server: Server
    out: TextIO
    count: int  # requests or messages per step
    cafile: Path  # the lab CA that signed the server's certificates
    notes: dict[str, float] = field(default_factory=dict)  # figures a later lesson compares

    @contextlib.contextmanager
    def recording(self, timeline: Timeline) -> Iterator[Timeline]:
        """Every event on the bus goes to `timeline` too, while the block runs."""
        unsubscribe = self.bus.subscribe(timeline)
        try:
            yield timeline
        finally:
            unsubscribe()

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def paragraph(self, text: str, indent: str = "") -> None:
        self.say(textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent))

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    @property
    def toytls(self) -> str:
        return f"toytls://127.0.0.1:{self.server.toy_tls_port}"

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.server.real_tls_port}"


@dataclass(frozen=True, slots=True)
class Lesson:
    name: str  # what --lesson takes
    title: str
    syllabus: str  # the lessons of DESIGN.md it shows, "L11 L12"
    explain: str  # what happens, before it happens
    look_at: str  # what to notice in the output
    # Runs the lesson, printing as it goes (its own lines, then the ladder); returns the
    # findings: sentences computed from the events, never from what was meant to happen.
    run: Callable[[Tour], Awaitable[list[str]]]
    needs_root: bool = False
