"""netlab.rules: the drop-rule grammar (good and bad rules, with their messages) and counting."""

from __future__ import annotations

import pytest

from netlab.rules import DropRule, DropRules
from netlab.segments import Segment, TCPFlags
from telemetry.events import Role

F = TCPFlags


def seg(flags: TCPFlags, payload: bytes = b"") -> Segment:
    return Segment("10.77.0.1", "10.77.0.2", 40000, 8080, 1, 1, flags, 100, payload, 0)


SYN = seg(F.SYN)
SYN_ACK = seg(F.SYN | F.ACK)
ACK = seg(F.ACK)
PSH_ACK_EMPTY = seg(F.PSH | F.ACK)
DATA = seg(F.PSH | F.ACK, b"GET /")
FIN = seg(F.FIN | F.ACK)
RST = seg(F.RST | F.ACK)


@pytest.mark.parametrize(
    ("text", "side", "kind", "first", "last"),
    [
        ("client:ack:1", Role.CLIENT, "ack", 1, 1),
        ("client:ack", Role.CLIENT, "ack", 1, 1),
        ("server:fin", Role.SERVER, "fin", 1, 1),
        ("server:syn-ack:2-3", Role.SERVER, "syn-ack", 2, 3),
        ("client:data:2-", Role.CLIENT, "data", 2, None),
        ("server:any:*", Role.SERVER, "any", 1, None),
        (" Client:SYN:4 ", Role.CLIENT, "syn", 4, 4),
        ("server:rst:1-1", Role.SERVER, "rst", 1, 1),
    ],
)
def test_good_rules(text: str, side: Role, kind: str, first: int, last: int | None) -> None:
    rule = DropRule.parse(text)
    assert (rule.side, rule.kind, rule.first, rule.last) == (side, kind, first, last)
    assert str(rule) == text.strip()  # the reason in events names the rule as written


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("client", "expected SIDE:KIND\\[:WHICH\\], e.g. 'client:ack:1'"),
        ("client:ack:1:2", "expected SIDE:KIND"),
        ("client::1", "expected SIDE:KIND"),
        ("middle:ack", "side 'middle' is not 'client' or 'server'"),
        ("client:ackk", "kind 'ackk' is not one of syn, syn-ack, ack, fin, rst, data, any"),
        ("client:ack:first", "which 'first' is not N, N-M, N- or \\*"),
        ("client:ack:-2", "which '-2' is not N, N-M, N- or \\*"),
        ("client:ack:0", "which '0' must count from 1 upwards"),
        ("client:ack:3-2", "which '3-2' must count from 1 upwards"),
    ],
)
def test_bad_rules(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DropRule.parse(text)


@pytest.mark.parametrize(
    ("kind", "matching"),
    [
        ("syn", [SYN]),
        ("syn-ack", [SYN_ACK]),
        ("ack", [ACK, PSH_ACK_EMPTY]),
        ("fin", [FIN]),
        ("rst", [RST]),
        ("data", [DATA]),
        ("any", [SYN, SYN_ACK, ACK, PSH_ACK_EMPTY, DATA, FIN, RST]),
    ],
)
def test_kinds(kind: str, matching: list[Segment]) -> None:
    rule = DropRule.parse(f"client:{kind}:*")
    every = [SYN, SYN_ACK, ACK, PSH_ACK_EMPTY, DATA, FIN, RST]
    assert [s for s in every if rule.matches(Role.CLIENT, s)] == matching
    assert not any(rule.matches(Role.SERVER, s) for s in every)  # the sender's side only


def test_first_pure_ack_only() -> None:
    rules = DropRules(["client:ack:1"])
    sent = [SYN, ACK, DATA, ACK, ACK]
    dropped = [rules.check(Role.CLIENT, s) is not None for s in sent]
    assert dropped == [False, True, False, False, False]
    assert rules.counts == [3]


def test_ranges_count_only_matching_segments_of_that_side() -> None:
    rules = DropRules(["server:fin:2-3"])
    verdicts = []
    for side, segment in [
        (Role.SERVER, FIN),  # 1: kept
        (Role.CLIENT, FIN),  # the client's: not counted
        (Role.SERVER, ACK),  # not a FIN: not counted
        (Role.SERVER, FIN),  # 2: dropped
        (Role.SERVER, FIN),  # 3: dropped
        (Role.SERVER, FIN),  # 4: kept
    ]:
        verdicts.append(rules.check(side, segment) is not None)
    assert verdicts == [False, False, False, True, True, False]


def test_open_range_and_star() -> None:
    later = DropRules(["client:data:2-"])
    assert [later.check(Role.CLIENT, DATA) is not None for _ in range(4)] == [
        False,
        True,
        True,
        True,
    ]
    every = DropRules(["client:syn:*"])
    assert all(every.check(Role.CLIENT, SYN) is not None for _ in range(5))


def test_each_rule_counts_on_its_own_and_the_first_dropping_rule_is_named() -> None:
    rules = DropRules(["client:any:2", "client:ack:1"])
    first = rules.check(Role.CLIENT, ACK)  # any #1 (kept by it), ack #1 (dropped)
    assert first is not None
    assert str(first) == "client:ack:1"
    second = rules.check(Role.CLIENT, ACK)  # any #2: dropped; ack #2: kept
    assert second is not None
    assert str(second) == "client:any:2"
    assert rules.check(Role.CLIENT, ACK) is None
    assert rules.counts == [3, 3]


def test_rules_given_as_objects_and_their_canonical_text() -> None:
    rule = DropRule(Role.SERVER, "syn-ack", 2, None)
    assert str(rule) == "server:syn-ack:2-"
    assert str(DropRule(Role.CLIENT, "ack", 1, None)) == "client:ack:*"
    assert str(DropRule(Role.CLIENT, "ack", 2, 4)) == "client:ack:2-4"
    assert str(DropRule(Role.CLIENT, "ack")) == "client:ack:1"
    rules = DropRules([rule, "client:ack"])
    assert bool(rules)
    assert not DropRules()
    assert [str(r) for r in rules.rules] == ["server:syn-ack:2-", "client:ack"]
