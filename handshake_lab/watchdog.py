"""Deadlines on one task's awaits, with one timer for the task's whole life.

`asyncio.timeout()` schedules and cancels a timer around every await: an object and two
heap operations per read, a measurable share of a keep-alive request on loopback. A
connection's deadlines mostly move later (each request pushes the idle deadline on), so
the `Watchdog` moves its timer only when a deadline comes *earlier* than the armed one;
when the timer fires before the current deadline, it re-arms itself for it.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

T = TypeVar("T")


class Watchdog:
    """Cancel the owning task's await when its deadline passes (loop time)."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._deadline: float | None = None  # of the await in progress, if any
        self._expired = False

    async def wait(self, coro: Coroutine[Any, Any, T], deadline: float) -> T:
        """Await `coro`; raise TimeoutError if it has not finished by `deadline`."""
        if self._task is None:
            self._task = asyncio.current_task()
        self._deadline = deadline
        if deadline < self._armed_at:
            self._arm(deadline)
        try:
            return await coro
        except asyncio.CancelledError:
            assert self._task is not None
            if self._expired:
                self._expired = False
                # Ours, and nobody else's too: it was a timeout.
                if self._task.uncancel() == 0:
                    raise TimeoutError from None
            raise
        finally:
            self._deadline = None

    def move(self, deadline: float) -> None:
        """Change the deadline of the await in progress (e.g. to now, at shutdown)."""
        if self._deadline is None:
            return
        self._deadline = deadline
        if deadline < self._armed_at:
            self._arm(deadline)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed_at = math.inf

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(when, self._fire)
        self._armed_at = when

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        if self._deadline is None or self._task is None:
            return
        if self._loop.time() < self._deadline:
            self._arm(self._deadline)
            return
        self._expired = True
        self._task.cancel()
