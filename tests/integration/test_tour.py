"""`handshake-lab demo`, the guided tour, run as a learner runs it: the real command, its
output read for what each lesson must have shown, its JSON log checked against its own
metrics, and its pauses driven through stdin."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from typing import TYPE_CHECKING

import pytest

from client.client import HTTPClient
from tests.conftest import require_tool
from tests.helpers import spawned
from tests.integration.test_cli import COMMAND, run
from tour.cli import LESSONS, LOOPBACK

if TYPE_CHECKING:
    from asyncio.subprocess import Process
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

pytestmark = pytest.mark.integration

COUNT = 2
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


@pytest.fixture(scope="module")
def tour_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One whole tour (every loopback lesson) with its JSON log; shared by the tests below."""
    require_tool("ss")
    directory = tmp_path_factory.mktemp("tour")
    log = directory / "events.jsonl"
    code, out, err = asyncio.run(
        run(
            "demo", "--count", str(COUNT), "--certs-dir", str(directory / "certs"),
            "--log-file", str(log), timeout_s=60,
        )
    )  # fmt: skip
    assert code == 0, err + out
    return out, log


def lesson_text(out: str, name: str, *, raw: bool = False) -> str:
    """The output of one lesson, from its header to the next one's (or the ending), with
    its runs of white space made one space (findings are wrapped at any word) unless raw."""
    titles = [LESSONS[n].title for n in (lesson.name for lesson in LOOPBACK)]
    start = out.index(LESSONS[name].title)
    ends = [out.find(t, start + 1) for t in titles] + [out.find("What the tour left behind")]
    text = out[start : min(e for e in ends if e > start)]
    return text if raw else " ".join(text.split())


def test_every_loopback_lesson_runs_in_order_with_its_ladder(tour_run: tuple[str, Path]) -> None:
    out, _ = tour_run
    positions = [out.index(f"/{len(LOOPBACK)}: {lesson.title}") for lesson in LOOPBACK]
    assert positions == sorted(positions)
    for lesson in LOOPBACK:
        text = lesson_text(out, lesson.name)
        assert "Look at:" in text
        assert "(no wire: not observed)" in text, f"{lesson.name} drew no ladder"


def test_http_counts_handshakes_and_says_who_closed_first(tour_run: tuple[str, Path]) -> None:
    text = lesson_text(tour_run[0], "http")
    assert f"{COUNT} requests, {COUNT} TCP connection(s), so {COUNT} three-way" in text
    assert f"{COUNT} requests, 1 TCP connection(s), so 1 three-way" in text
    assert f"The server closed {COUNT} connection(s) first" in text
    assert "The client closed 1 connection(s) first" in text
    assert len(re.findall(r"connection #\d+ reused", text)) == COUNT - 1
    assert f"{COUNT - 1} handshake(s) saved" in text


def test_websocket_pushes_and_closes(tour_run: tuple[str, Path]) -> None:
    text = lesson_text(tour_run[0], "websocket")
    found = re.search(
        r"Sec-WebSocket-Key (\S+) -> 101 Switching Protocols, Sec-WebSocket-Accept (\S+) "
        r"\(expected (\S+?):",
        text,
    )
    assert found is not None
    key, accept, expected = found.groups()
    assert (
        accept
        == expected
        == base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    )
    pushed = re.search(r"(\d+) pushed by the server", text)
    assert pushed is not None
    assert int(pushed.group(1)) >= COUNT
    assert "the client sent Close first on 2 of 2, and 2 closing handshake(s) completed" in text
    assert "the server sent FIN first on 2 of 2" in text
    assert f"{COUNT} message(s) echoed on /ws/echo" in text
    # The ladder draws the frames on both sides.
    assert "ws message received" in text
    assert "ws Close sent" in text


def test_toy_tls_shows_both_key_exchanges_step_by_step(tour_run: tuple[str, Path]) -> None:
    text = lesson_text(tour_run[0], "toy-tls")
    rsa, ecdhe = text.split("key exchange ecdhe: ", 1)
    assert "-> ClientKeyExchange: premaster secret C" in rsa
    assert "ServerKeyExchange" not in rsa
    assert "<- ServerKeyExchange: X25519 share" in ecdhe
    randoms = re.findall(r"client random A = ([0-9a-f]{64})", text)
    assert len(randoms) == 2
    assert randoms[0] != randoms[1]
    assert "rsa key" in rsa
    assert "ec key" in ecdhe
    # Both ends' steps in the ladder, before the request.
    assert text.index("tls ClientHello") < text.index("http.request.sent")
    assert re.search(r"rsa: [\d.]+ ms\. The client made the premaster", text)
    assert re.search(r"ecdhe: [\d.]+ ms\. Each side sent an ephemeral X25519 share", text)


def test_real_tls_compares_versions_and_who_finished_first(tour_run: tuple[str, Path]) -> None:
    text = lesson_text(tour_run[0], "real-tls")
    assert len(re.findall(r"TLSv1\.3, TLS_\w+ +connect", text)) == COUNT
    assert len(re.findall(r"TLSv1\.2, ECDHE-\S+ +connect", text)) == COUNT
    # TLS 1.3: the client is done a flight before the server; TLS 1.2: the server is.
    assert "TLSv1.3: the client's handshake completed first" in text
    assert "TLSv1.2: the server's handshake completed first" in text
    assert re.search(r"median connect time .*TCP [\d.]+ ms.*TLSv1\.3 [\d.]+ ms.*TLSv1\.2", text)


def test_kernel_states_put_time_wait_on_whoever_closed_first(tour_run: tuple[str, Path]) -> None:
    text = lesson_text(tour_run[0], "kernel")
    assert re.search(r"HTTP/1\.0: TIME_WAIT on the server's socket .* as it sent FIN first", text)
    assert re.search(r"keep-alive: TIME_WAIT on the client's socket .* as it sent FIN first", text)
    # The kept-alive connection was held open for ss to see: ESTABLISHED in both state
    # columns of the ladder (the client's right after the time, the server's after the notes).
    port = re.search(r"keep-alive: TIME_WAIT on the client's socket 127\.0\.0\.1:(\d+)", text)
    assert port is not None
    rows = lesson_text(tour_run[0], "kernel", raw=True).splitlines()
    tagged = [row for row in rows if f"[:{port.group(1)}]" in row]
    assert any(re.match(r"\s+[\d.]+  ESTABLISHED ", row) for row in tagged)
    assert any(re.search(r"\s{20}ESTABLISHED\s+\[:", row) for row in tagged)


def test_the_log_and_the_metrics_tell_the_same_story(tour_run: tuple[str, Path]) -> None:
    out, log = tour_run
    records = [json.loads(line) for line in log.read_text().splitlines()]
    accepted = sum(
        1 for r in records if r["event"] == "tcp.connection.accepted" and r["role"] == "server"
    )
    opened = sum(
        float(m.group(1))
        for m in re.finditer(
            r'handshake_lab_connections_opened_total\{role="server",transport="[^"]+"\} (\S+)', out
        )
    )
    assert accepted > 0
    assert opened == accepted
    ending = out[out.index("What the tour left behind") :]
    assert re.search(r"http://127\.0\.0\.1:\d+/metrics", ending)
    assert "docker compose up" in ending
    assert "http://localhost:3000" in ending


async def test_step_pauses_with_the_metrics_live_and_q_stops(tmp_path: Path) -> None:
    async with tour_process(tmp_path, "--step") as process:
        assert process.stdout is not None
        assert process.stdin is not None
        async with asyncio.timeout(30):
            first = (await process.stdout.readline()).decode()
        metrics_url = re.search(r"(http://127\.0\.0\.1:\d+/metrics)", first)
        assert metrics_url is not None
        await read_until(process, b"[Enter: lesson 1")
        await send(process, b"\n")
        await read_until(process, b"[Enter: lesson 2")
        # Paused after the first lesson: the server and its metrics still answer.
        async with HTTPClient() as client:
            scraped = (await client.get(metrics_url.group(1))).body.decode()
        opened = re.search(
            r'connections_opened_total\{role="server",transport="tcp"\} (\S+)', scraped
        )
        assert opened is not None
        assert float(opened.group(1)) == COUNT + 1  # the http lesson's connections
        await send(process, b"q\n")
        async with asyncio.timeout(30):
            rest = await process.stdout.read()
        assert await process.wait() == 0
    assert b"Lesson 2/" not in rest
    assert b"What the tour left behind" in rest


async def test_step_goes_on_without_pausing_when_stdin_ends(tmp_path: Path) -> None:
    async with tour_process(tmp_path, "--step", "--lesson", "http", "--lesson", "kernel") as p:
        assert p.stdin is not None
        assert p.stdout is not None
        p.stdin.close()
        async with asyncio.timeout(60):
            out = (await p.stdout.read()).decode()
        assert await p.wait() == 0
    assert "Lesson 1/2" in out
    assert "Lesson 2/2" in out


async def test_step_takes_lines_that_arrive_together(tmp_path: Path) -> None:
    # Two Enters in one write, and the pipe left open: both lessons run, no waiting for EOF.
    async with tour_process(tmp_path, "--step", "--lesson", "http", "--lesson", "kernel") as p:
        await send(p, b"\n\n")
        await read_until(p, b"What the tour left behind")
        assert p.stdin is not None
        p.stdin.close()
        async with asyncio.timeout(30):
            assert await p.wait() == 0


async def test_list_and_a_bad_lesson_name() -> None:
    code, out, _ = await run("demo", "--list")
    assert code == 0
    for name, lesson in LESSONS.items():
        assert re.search(rf"^{re.escape(name)} .*{re.escape(lesson.title)}$", out, re.M)
    code, _, err = await run("demo", "--lesson", "no-such-lesson")
    assert code == 2
    assert "invalid choice" in err


@pytest.mark.usefixtures("lab_possible")
async def test_a_wire_lesson_draws_the_real_segments(tmp_path: Path) -> None:
    code, out, err = await run(
        "demo",
        "--lesson",
        "handshake",
        "--lesson",
        "close",
        "--certs-dir",
        str(tmp_path),
        timeout_s=60,
    )
    assert code == 0, err
    assert "On the wire: three-way handshake" in out
    assert re.search(r"SYN seq=\d+; SYN-ACK seq=\d+ ack=\d+ \(x\+1: True\)", out)
    assert "As root, `handshake-lab demo --lab`" not in out  # it ran a wire lesson
    assert "failed" not in err  # every sink took every event (the metrics too)


# ---- driving a tour through its stdin ----------------------------------------------------


def tour_process(tmp_path: Path, *args: str) -> AbstractAsyncContextManager[Process]:
    """The tour with its stdin and stdout piped to the test; killed if still running."""
    return spawned(
        *COMMAND, "demo", "--count", str(COUNT), "--certs-dir", str(tmp_path), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def read_until(process: asyncio.subprocess.Process, marker: bytes) -> bytes:
    assert process.stdout is not None
    async with asyncio.timeout(30):
        return await process.stdout.readuntil(marker)


async def send(process: asyncio.subprocess.Process, data: bytes) -> None:
    assert process.stdin is not None
    process.stdin.write(data)
    await process.stdin.drain()
