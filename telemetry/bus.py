"""The bus: emitters publish events, sinks subscribe.

Delivery is synchronous and in order, so every sink sees every event in the same order
and nothing sits in a queue that a crash could lose. A sink that raises is reported once
on stderr and kept: one broken sink must not take a connection down, nor starve the others.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from telemetry.events import Event, Level, Name, Role

Sink = Callable[[Event], None]


class Bus:
    def __init__(self) -> None:
        self._sinks: list[Sink] = []
        self._failed: set[int] = set()
        self.sink_errors = 0

    @property
    def active(self) -> bool:
        """False when nobody listens: emitters skip building events altogether."""
        return bool(self._sinks)

    def subscribe(self, sink: Sink) -> Callable[[], None]:
        """Add a sink; returns the function that removes it again."""
        self._sinks.append(sink)
        return lambda: self._sinks.remove(sink)

    def emit(self, event: Event) -> None:
        for sink in self._sinks:
            try:
                sink(event)
            except Exception as exc:  # a sink is outside our control; keep the others going
                self.sink_errors += 1
                if id(sink) not in self._failed:
                    self._failed.add(id(sink))
                    print(
                        f"handshake-lab: telemetry sink {sink!r} failed: {exc!r}", file=sys.stderr
                    )


class Tracer:
    """Emits events for one role, and for one connection once `bind()` names it."""

    __slots__ = ("bus", "conn_id", "local", "remote", "role")

    def __init__(
        self,
        bus: Bus,
        role: Role,
        conn_id: int | None = None,
        local: str | None = None,
        remote: str | None = None,
    ) -> None:
        self.bus = bus
        self.role = role
        self.conn_id = conn_id
        self.local = local
        self.remote = remote

    def bind(self, conn_id: int, local: str | None, remote: str | None) -> Tracer:
        return Tracer(self.bus, self.role, conn_id, local, remote)

    def emit(self, name: Name, level: Level = Level.INFO, **attrs: Any) -> None:
        if not self.bus._sinks:
            return
        self.bus.emit(
            Event(
                name=name,
                role=self.role,
                ts=time.time(),
                conn_id=self.conn_id,
                local=self.local,
                remote=self.remote,
                level=level,
                attrs=attrs,
            )
        )
