"""`handshake-lab lab` and `client get --trace` as a user runs them: real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from typing import TYPE_CHECKING

import pytest

from handshake_lab.cli import main
from netlab import ladder
from netlab.netns import list_namespaces
from netlab.scenarios import SCENARIOS
from tests.conftest import require_tool
from tests.integration.test_cli import run, server_process

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

COMMAND = [sys.executable, "-m", "handshake_lab"]


async def test_lab_list_names_every_scenario_and_its_lessons() -> None:
    code, out, _ = await run("lab", "list")
    assert code == 0
    for item in SCENARIOS.values():
        assert re.search(rf"^{re.escape(item.name)}\s+{re.escape(item.lessons)}", out, re.M)


def test_without_the_lab_network_it_says_why_and_what_works_instead(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Being root cannot be undone inside one test process; the check it depends on can.
    monkeypatch.setattr("netlab.cli.lab_unavailable_reason", lambda: "not root (uid 1000)")
    assert main(["lab", "handshake"]) == 2
    err = capsys.readouterr().err
    assert "not root (uid 1000)" in err
    assert "client get URL --trace" in err


@pytest.mark.parametrize(
    ("option", "complaint"),
    [
        (["--delay-ms", "-5"], "--delay-ms must be"),
        (["--jitter-ms", "99999"], "--jitter-ms must be"),
        (["--loss", "1.5"], "--loss is a fraction"),
        (["--drop", "client:ackk"], "--drop: drop rule 'client:ackk': kind 'ackk' is not"),
    ],
)
@pytest.mark.usefixtures("lab_possible")
async def test_bad_wire_options_are_refused_before_anything_runs(
    option: list[str], complaint: str
) -> None:
    code, out, err = await run("lab", "close", *option)
    assert code == 2
    assert complaint in err
    assert not out


@pytest.mark.netlab
@pytest.mark.parametrize("option", ["--json", "--pcap"])
@pytest.mark.usefixtures("lab_possible")
async def test_an_unwritable_output_is_refused_before_the_run(option: str) -> None:
    code, out, err = await run("lab", "close", option, "/nonexistent/dir/out")
    assert code == 2
    assert "cannot write /nonexistent/dir/out: No such file or directory" in err
    assert "--" not in out  # no narration: the scenario never started


@pytest.mark.netlab
@pytest.mark.usefixtures("lab_possible")
async def test_wire_options_reach_the_wire() -> None:
    code, out, err = await run(
        "lab", "close", "--drop", "server:fin:1", "--delay-ms", "20", "--json", "-",
        timeout_s=60,
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(out)
    assert document["delay_s"] == 0.02
    dropped = [e for e in document["events"] if e["event"] == "wire.segment.dropped"]
    assert [(e["flags"], e["reason"]) for e in dropped][:1] == [("FIN,ACK", "rule:server:fin:1")]
    resent = [
        e
        for e in document["events"]
        if e["event"] == "wire.segment.forwarded" and e["role"] == "server" and "FIN" in e["flags"]
    ]
    assert resent[0]["retransmission"]  # the server's kernel sent its FIN again
    assert document["samples"]
    assert {"ts", "role", "state", "timer"} <= set(document["samples"][0])


@pytest.mark.netlab
@pytest.mark.usefixtures("lab_possible")
async def test_lab_close_draws_the_ladder_and_writes_the_pcap(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    pcap = tmp_path / "close.pcap"
    code, out, err = await run("lab", "close", "--pcap", str(pcap), timeout_s=60)
    assert code == 0, err
    assert "── SYN seq=" in out  # the client's SYN, left to right
    assert "◀─ SYN,ACK seq=" in out
    assert re.search(r"TIME_WAIT\s+.*timewait timer", out)  # the server's column
    assert "=> server saw" in out
    reader = await asyncio.create_subprocess_exec(
        tshark, "-r", str(pcap), "-T", "fields", "-e", "tcp.flags.str",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    frames = (await reader.communicate())[0].decode().split()
    assert reader.returncode == 0
    arrows = [line for line in out.splitlines() if "──" in line and ("▶" in line or "◀" in line)]
    assert len(frames) == len(arrows)


@pytest.mark.netlab
@pytest.mark.usefixtures("lab_possible")
async def test_lab_json_holds_the_timeline() -> None:
    code, out, err = await run("lab", "handshake", "--json", "-", timeout_s=60)
    assert code == 0, err
    document = json.loads(out)
    assert document["scenario"] == "handshake"
    names = {e["event"] for e in document["events"]}
    assert {"wire.segment.forwarded", "kernel.state.changed", "http.request.sent"} <= names
    syns = [e for e in document["events"] if e.get("flags") == "SYN"]
    assert len(syns) == 3
    assert document["findings"]
    assert "-- The client opens" in err  # the narration goes to stderr when JSON is on stdout


@pytest.mark.netlab
@pytest.mark.usefixtures("lab_possible")
async def test_sigterm_stops_a_scenario_and_removes_its_namespaces() -> None:
    process = await asyncio.create_subprocess_exec(
        *COMMAND, "lab", "lost-ack", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        await process.stdout.readline()  # the first narration: the lab is up
        mine = [ns for ns in list_namespaces() if ns.split("-")[1] == str(process.pid)]
        assert len(mine) == 2
        process.send_signal(signal.SIGTERM)
        _, err = await process.communicate()
    assert process.returncode == 128 + signal.SIGTERM
    assert b"stopped (SIGTERM); the lab network was removed" in err
    assert not [ns for ns in list_namespaces() if ns.split("-")[1] == str(process.pid)]


async def test_client_trace_draws_kernel_states_without_the_wire() -> None:
    require_tool("ss")
    async with server_process() as server:
        code, out, err = await run(
            "client", "get", server.url + "/health", "--http1.0", "-n", "2", "--trace"
        )
    assert code == 0, err
    assert "no wire: not observed" in out
    assert "no wire segments" in out
    # HTTP/1.0: the server closed first, so ss saw its sockets in TIME_WAIT (server column).
    waits = [line for line in out.splitlines() if "TIME_WAIT" in line]
    assert len(waits) >= 2
    assert all(line.index("TIME_WAIT") > 60 for line in waits)
    # Without the wire, the application's notes stand beside their side's column.
    connect = next(line for line in out.splitlines() if "connect() returns" in line)
    assert connect.index("connect() returns") == 8 + 2 + ladder.STATE_WIDTH + 1


@pytest.mark.netlab
@pytest.mark.usefixtures("lab_possible")
async def test_the_tls_scenarios_pcap_opens_with_the_key_log(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    pcap, keys = tmp_path / "tls.pcap", tmp_path / "keys.txt"
    process = await asyncio.create_subprocess_exec(
        *COMMAND, "lab", "tls", "--pcap", str(pcap),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SSLKEYLOGFILE": str(keys)},
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "https" in out.decode()

    async def requests_seen(*options: str) -> list[str]:
        reader = await asyncio.create_subprocess_exec(
            tshark, "-r", str(pcap), *options, "-Y", "http.request",
            "-T", "fields", "-e", "tcp.dstport",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        found = (await reader.communicate())[0].decode().split()
        assert reader.returncode == 0
        return found

    # Without the keys only the plain request reads as HTTP; with them, the real TLS one too.
    assert await requests_seen() == ["8080"]
    assert sorted(await requests_seen("-o", f"tls.keylog_file:{keys}")) == ["8080", "8444"]


async def test_client_trace_matches_a_dual_stack_servers_sockets(tmp_path: Path) -> None:
    """A server bound to :: sees IPv4 clients as [::ffff:127.0.0.1]: still ours."""
    require_tool("ss")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "http.server", "--bind", "::", str(port),
        cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(10):
            while True:  # ready when it accepts
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
        code, out, err = await run(
            "client", "get", f"http://127.0.0.1:{port}/", "--http1.0", "--trace"
        )
    finally:
        server.terminate()
        await server.wait()
    assert code == 0, err
    # http.server closes first: its end goes to TIME_WAIT, drawn in the server's column.
    waits = [line for line in out.splitlines() if "TIME_WAIT" in line]
    assert waits
    assert all(line.index("TIME_WAIT") > 60 for line in waits)
    assert "LISTEN on :" in out
    assert "no LISTEN socket" not in out
