"""The in-memory timeline: every event kept in order, for tests and terminal views."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from telemetry.events import Event, Name, Role


class Timeline:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def named(self, name: Name, role: Role | None = None) -> list[Event]:
        return [e for e in self.events if e.name is name and (role is None or e.role is role)]

    def count(self, name: Name, role: Role | None = None) -> int:
        return len(self.named(name, role))

    def for_connection(self, role: Role, conn_id: int) -> list[Event]:
        return [e for e in self.events if e.role is role and e.conn_id == conn_id]

    def clear(self) -> None:
        self.events.clear()
