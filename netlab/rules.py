"""Targeted drops: which segments the wire throws away on purpose, written as short rules.

Theory of operation: a rule reads `SIDE:KIND[:WHICH]`, for example `client:ack:1` ("drop
the client's first pure ACK", the third segment of the handshake: lesson L5) or
`server:fin` ("drop the server's first FIN"):

- SIDE is the sender: `client` or `server`.
- KIND is what the segment is:
  `syn` (SYN without ACK), `syn-ack`, `ack` (a pure ACK: only ACK set, no payload; PSH
  alone does not count as more), `fin` (FIN set), `rst` (RST set), `data` (any payload),
  `any` (every segment).
- WHICH counts the segments of that SIDE and KIND across the whole wire, from 1:
  `1` (the default: the first), `3`, `2-4` (the second to the fourth), `2-` (the second
  and every later one), `*` (all).

Each rule counts on its own, so `client:ack:1` and `client:any:5` both see every segment.
Rules are pure: `DropRules.check(side, segment)` says which rule (if any) drops it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from netlab.segments import Segment, TCPFlags
from telemetry.events import Role

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = ["KINDS", "DropRule", "DropRules", "parse_rules"]


def _is_syn(seg: Segment) -> bool:
    return seg.flags & (TCPFlags.SYN | TCPFlags.ACK) == TCPFlags.SYN


def _is_syn_ack(seg: Segment) -> bool:
    return seg.flags & (TCPFlags.SYN | TCPFlags.ACK) == TCPFlags.SYN | TCPFlags.ACK


KINDS: Final[dict[str, Callable[[Segment], bool]]] = {
    "syn": _is_syn,
    "syn-ack": _is_syn_ack,
    "ack": lambda seg: seg.is_pure_ack,
    "fin": lambda seg: bool(seg.flags & TCPFlags.FIN),
    "rst": lambda seg: bool(seg.flags & TCPFlags.RST),
    "data": lambda seg: bool(seg.payload),
    "any": lambda seg: True,
}

_WHICH = re.compile(r"^(?:(\*)|(\d+)(?:(-)(\d+)?)?)$")


@dataclass(frozen=True, slots=True)
class DropRule:
    """One rule. `first` and `last` count from 1; `last` None means no end."""

    side: Role
    kind: str
    first: int = 1
    last: int | None = 1
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> DropRule:
        """Parse `SIDE:KIND[:WHICH]`.

        Raises:
            ValueError: with what is wrong and what would be right.
        """
        parts = text.strip().lower().split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(
                f"drop rule {text!r}: expected SIDE:KIND[:WHICH], e.g. 'client:ack:1' or "
                "'server:fin'"
            )
        side_text, kind = parts[0], parts[1]
        try:
            side = Role(side_text)
        except ValueError:
            raise ValueError(
                f"drop rule {text!r}: side {side_text!r} is not 'client' or 'server' "
                "(the side that sends the segment)"
            ) from None
        if kind not in KINDS:
            raise ValueError(f"drop rule {text!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
        first: int = 1
        last: int | None = 1
        if len(parts) == 3:
            match = _WHICH.match(parts[2])
            if match is None:
                raise ValueError(
                    f"drop rule {text!r}: which {parts[2]!r} is not N, N-M, N- or * "
                    "(counting from 1)"
                )
            star, start, dash, end = match.groups()
            if star:
                first, last = 1, None
            else:
                first = int(start)
                last = (int(end) if end else None) if dash else first
            if first < 1 or (last is not None and last < first):
                raise ValueError(
                    f"drop rule {text!r}: which {parts[2]!r} must count from 1 upwards"
                )
        return cls(side, kind, first, last, text.strip())

    def matches(self, side: Role, seg: Segment) -> bool:
        """Whether the segment is of this rule's side and kind (whatever the count)."""
        return side is self.side and bool(KINDS[self.kind](seg))

    def selects(self, n: int) -> bool:
        """Whether the n-th matching segment (from 1) is dropped."""
        return n >= self.first and (self.last is None or n <= self.last)

    def __str__(self) -> str:
        return self.text or self._canonical()

    def _canonical(self) -> str:
        if self.last is None:
            which = "*" if self.first == 1 else f"{self.first}-"
        else:
            which = str(self.first) if self.last == self.first else f"{self.first}-{self.last}"
        return f"{self.side}:{self.kind}:{which}"


def parse_rules(rules: Iterable[DropRule | str]) -> list[DropRule]:
    return [r if isinstance(r, DropRule) else DropRule.parse(r) for r in rules]


class DropRules:
    """A set of rules with their counts. `check` is called once per segment, in send order."""

    def __init__(self, rules: Sequence[DropRule | str] = ()) -> None:
        self.rules = parse_rules(rules)
        self.counts = [0] * len(self.rules)  # matching segments seen, per rule

    def check(self, side: Role, seg: Segment) -> DropRule | None:
        """The first rule that drops this segment, or None. Every matching rule counts it."""
        dropping = None
        for i, rule in enumerate(self.rules):
            if rule.matches(side, seg):
                self.counts[i] += 1
                if dropping is None and rule.selects(self.counts[i]):
                    dropping = rule
        return dropping

    def __bool__(self) -> bool:
        return bool(self.rules)
