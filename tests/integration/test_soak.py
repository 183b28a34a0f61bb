"""`handshake-lab bench soak`, small: every behaviour (well-behaved, vanishing, half-closing,
stalling) against a real server process, then SIGTERM under load; every check must hold but
memory's, which is measured and reported (at 500 connections a round, RSS moves more than
the margin with the allocator alone: the full soak, 20,000 a round, is the benchmark in
docs/reliability.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from bench.soak import MIX
from tests.integration.test_cli import run

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


async def test_a_small_soak_loses_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    code, out, err = await run(
        "bench", "soak", "--connections", "500", "--rounds", "2", "--concurrency", "32",
        "--shutdown", "--out", str(tmp_path), timeout_s=120,
    )  # fmt: skip
    results = json.loads((tmp_path / "soak.json").read_text())
    checks = {c["name"]: c for c in results["checks"]}
    memory = [name for name in checks if name.startswith("memory bounded")]
    assert len(memory) == 1, "two rounds: memory is measured"
    failed = [c for name, c in checks.items() if not c["ok"] and name not in memory]
    assert not failed, (failed, err[-2000:])
    assert code == (0 if checks[memory[0]]["ok"] else 1)  # the exit status says it all
    for name in ("no file descriptor leaked", "the signal came under load"):
        assert name in checks
    assert any("1001" in name for name in checks)
    assert len(checks) == 11
    for round_ in results["rounds"]:
        assert set(round_["by_behaviour"]) == set(MIX), "every behaviour ran"
    assert out.count("ok   ") + out.count("FAIL ") == 11
