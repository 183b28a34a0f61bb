"""`handshake-lab bench latency`: the model, and a small matrix run for real (sanity and
structure, never speeds)."""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import sys
from typing import TYPE_CHECKING

import pytest

from bench.latency import (
    MODES,
    TRANSPORTS,
    Cell,
    apply_model,
    model_rtts,
    parse_rtts,
    percentile,
    run_matrix,
)
from tests.integration.test_cli import run

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("mode", "transport", "cold", "warm"),
    [
        ("http1.0", "tcp", 2, 2),  # SYN/SYN-ACK, then request/response: every time
        ("http1.0", "tls1.3", 3, 3),  # + 1 for TLS 1.3
        ("http1.0", "tls1.2", 4, 4),  # + 2 for TLS 1.2's full handshake
        ("http1.0", "toy-rsa", 4, 4),  # the toy waits for the server's Finished, like 1.2
        ("keep-alive", "tcp", 2, 1),  # the connection is paid for once
        ("keep-alive", "toy-ecdhe", 4, 1),
        ("websocket", "tcp", 3, 1),  # + the upgrade; then a message is one round trip
        ("websocket", "tls1.3", 4, 1),
    ],
)
def test_the_model_counts_round_trips(mode: str, transport: str, cold: int, warm: int) -> None:
    assert model_rtts(mode, TRANSPORTS[transport], cold=True) == cold
    assert model_rtts(mode, TRANSPORTS[transport], cold=False) == warm


def test_the_prediction_adds_round_trips_to_the_loopback_twin() -> None:
    loopback = Cell(
        "keep-alive", "tcp", 0.0, cold_samples_s=[0.002], warm_samples_s=[0.001, 0.003, 0.002]
    )
    far = Cell(
        "keep-alive",
        "tcp",
        0.05,
        cold_samples_s=[0.2],
        warm_samples_s=[0.06],
        model_cold_rtts=2,
        model_warm_rtts=1,
    )
    far.wake_s = 0.0003  # each end wakes once per round trip
    lonely = Cell("websocket", "tcp", 0.05, cold_samples_s=[0.2], warm_samples_s=[0.06])
    apply_model([loopback, far, lonely])
    round_trip = 0.05 + 2 * 0.0003
    assert far.predicted_cold_s == pytest.approx(2 * round_trip + 0.002)
    assert far.predicted_warm_s == pytest.approx(1 * round_trip + 0.002)  # the twin's median
    assert far.summary()["warm_ratio"] == pytest.approx(0.06 / (round_trip + 0.002))
    assert loopback.predicted_warm_s is None  # a loopback cell is its own twin: no test
    assert lonely.predicted_warm_s is None  # no twin, no model
    assert lonely.summary()["warm_ratio"] is None


def test_percentiles_are_nearest_rank_measured_values() -> None:
    values = [0.005, 0.001, 0.004, 0.002, 0.003]
    assert percentile(values, 0.5) == 0.003
    assert percentile(values, 0.99) == 0.005
    assert percentile([7.0], 0.95) == 7.0
    twenty = [float(n) for n in range(1, 21)]
    assert percentile(twenty, 0.95) == 19.0  # rank ceil(0.95 * 20) = 19, not the maximum
    hundred = [float(n) for n in range(1, 101)]
    assert percentile(hundred, 0.95) == 95.0
    assert percentile(hundred, 0.99) == 99.0


@pytest.mark.parametrize(
    ("text", "rtts"),
    [("0", [0.0]), ("0,10ms,50ms", [0.0, 0.01, 0.05]), ("0.02s", [0.02]), ("20", [0.02])],
)
def test_rtts_read_as_the_help_says(text: str, rtts: list[float]) -> None:
    assert parse_rtts(text) == pytest.approx(rtts)


async def test_a_loopback_matrix_has_every_cell_and_counts_connections() -> None:
    requests, warmup = 3, 1
    cells = await run_matrix([0.0], MODES, list(TRANSPORTS), requests, warmup, colds=2)
    assert {(c.mode, c.transport) for c in cells} == {(m, t) for m in MODES for t in TRANSPORTS}
    for cell in cells:
        assert len(cell.warm_samples_s) == requests
        assert len(cell.cold_samples_s) == 2
        assert all(value > 0 for value in cell.cold_samples_s)
        assert all(value > 0 for value in cell.warm_samples_s)
        # From the server's own metrics: one connection per request for HTTP/1.0, one in
        # all for keep-alive and the WebSocket.
        expected = 1 + warmup + requests if cell.mode == "http1.0" else 1
        assert cell.connections == expected, (cell.mode, cell.transport)
        assert cell.predicted_warm_s is None  # no model test on loopback


async def test_more_warm_requests_than_the_servers_default_cap_stay_on_one_connection() -> None:
    (cell,) = await run_matrix([0.0], ["keep-alive"], ["tcp"], 120, 0)
    assert cell.connections == 1  # a warm sample never pays for a new connection


@pytest.mark.netlab
@pytest.mark.usefixtures("lab_possible")
async def test_with_a_round_trip_http10_pays_for_a_connection_every_time() -> None:
    rtt = 0.02
    cells = await run_matrix([rtt], ["http1.0", "keep-alive"], ["tcp", "tls1.3"], 5, 1)
    far = {(c.mode, c.transport): c for c in cells if c.rtt_s == rtt}
    near = {(c.mode, c.transport): c for c in cells if c.rtt_s == 0}
    for key, cell in far.items():
        # The round trips, read off the measurements (what distance added, in RTTs), are
        # the model's count: a wrong count in model_rtts, or a lost round trip, fails here.
        added_warm = (cell.warm_median_s - near[key].warm_median_s) / rtt
        added_cold = (cell.cold_s - near[key].cold_s) / rtt
        assert round(added_warm) == cell.model_warm_rtts, key
        assert round(added_cold) == cell.model_cold_rtts, key
        expected = 1 + 1 + 5 if cell.mode == "http1.0" else 1
        assert cell.connections == expected, key
    for transport in ("tcp", "tls1.3"):
        http10, keepalive = far[("http1.0", transport)], far[("keep-alive", transport)]
        assert http10.warm_median_s - keepalive.warm_median_s >= rtt


async def test_the_command_writes_the_table_json_csv_and_plots(tmp_path: Path) -> None:
    code, out, err = await run(
        "bench", "latency", "--rtt", "0", "--requests", "3", "--warmup", "1", "--cold", "2",
        "--modes", "keep-alive,websocket", "--transports", "tcp,toy-ecdhe",
        "--out", str(tmp_path), timeout_s=120,
    )  # fmt: skip
    assert code == 0, err
    assert "keep-alive  tcp" in out
    assert "4/4" in err  # the progress bar finished
    check_files(tmp_path, cells=4, colds=2, requests=3)


def check_files(out: Path, *, cells: int, colds: int, requests: int) -> None:
    (document,) = out.glob("latency-*.json")
    assert len(json.loads(document.read_text())["cells"]) == cells
    (table,) = out.glob("latency-*.csv")
    with table.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == cells * (colds + requests)
    assert {r["kind"] for r in rows} == {"cold", "warm"}
    plots = sorted(p.name.split("-")[-1] for p in out.glob("latency-*.png"))
    assert plots == ["mode.png", "model.png"]
    assert all(p.stat().st_size > 10_000 for p in out.glob("latency-*.png"))


async def test_bad_arguments_are_refused() -> None:
    code, _, err = await run("bench", "latency", "--rtt", "fast")
    assert code == 2
    assert "not a round-trip time" in err
    code, _, err = await run("bench", "latency", "--modes", "http2")
    assert code == 2
    assert "choose from http1.0, keep-alive, websocket" in err


async def test_ctrl_c_keeps_the_cells_measured_so_far(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "handshake_lab", "bench", "latency", "--rtt", "0",
        "--requests", "300", "--warmup", "0", "--cold", "1", "--no-plots",
        "--modes", "keep-alive,http1.0", "--transports", "tcp,tls1.3", "--out", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    async with asyncio.timeout(60):
        while not (await process.stderr.readline()).startswith(b"2/4"):
            pass  # two cells done (plain progress lines: stderr is not a terminal)
        process.send_signal(signal.SIGINT)
        out, err = await process.communicate()
    assert process.returncode == 130, err.decode()
    assert b"interrupted; writing the cells measured so far" in err
    assert b"keep-alive  tcp" in out
    check_partial(tmp_path)


def check_partial(out: Path) -> None:
    (document,) = out.glob("latency-*.json")
    saved = json.loads(document.read_text())
    assert saved["complete"] is False
    assert saved["stopped"] == "interrupted"
    assert 2 <= len(saved["cells"]) < 4
