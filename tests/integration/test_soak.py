"""`handshake-lab bench soak`, small: every behaviour (well-behaved, vanishing, half-closing,
stalling) against a real server process, then SIGTERM under load; every check must hold.
The full soak (20,000 connections a round) is a benchmark: docs/reliability.md."""

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
    failed = [c for c in results["checks"] if not c["ok"]]
    assert code == 0, (failed, err[-2000:])
    names = {c["name"] for c in results["checks"]}
    assert any("file descriptor" in n for n in names)
    assert any("1001" in n for n in names)
    assert len(results["checks"]) == 10
    for round_ in results["rounds"]:
        assert set(round_["by_behaviour"]) == set(MIX), "every behaviour ran"
    assert out.count("ok   ") == 10
