"""The events both HTTP cores (server and client) return for the peer's bytes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class BodyReceived:
    data: bytes


@dataclass(frozen=True, slots=True)
class NeedData:
    """Nothing more to say until more bytes (or the peer's FIN) arrive."""


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer sent FIN between messages: it closed first."""


NEED_DATA: Final = NeedData()
