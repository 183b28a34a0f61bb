"""The `handshake-lab` command as a user runs it: real processes, signals, logs, metrics."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import signal
import socket
import sys
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from client.client import HTTPClient
from client.ws import connect
from handshake_lab.ws_handshake import GUID
from handshake_tls import FOR_LEARNING_ONLY
from handshake_tls.recording import read_recording
from tests.conftest import require_tool
from tests.helpers import raw_exchange, status_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.integration

COMMAND = [sys.executable, "-m", "handshake_lab"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def run(*args: str, timeout_s: float = 20.0) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *COMMAND, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(timeout_s):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class ServerProcess:
    def __init__(self, process: asyncio.subprocess.Process, port: int, metrics_port: int) -> None:
        self.process = process
        self.port = port
        self.metrics_port = metrics_port
        self.url = f"http://127.0.0.1:{port}"
        # Its stderr (the log, by default) is read as it comes: a full pipe would block the
        # server mid-write and hang the test.
        self._stderr: list[bytes] = []
        self.draining = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.read(65536):
            self._stderr.append(chunk)

    async def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, keyed `name{label=value,...}` (labels sorted)."""
        async with HTTPClient() as client:
            response = await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(response.body.decode()):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}"] = s.value
        return samples

    async def stop(self, timeout_s: float = 15.0) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout_s):
            await self.process.wait()
            await self.draining
        assert self.process.returncode is not None
        return self.process.returncode, b"".join(self._stderr).decode()


@contextlib.asynccontextmanager
async def server_process(*extra: str) -> AsyncIterator[ServerProcess]:
    port, metrics_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        *COMMAND, "server", "--port", str(port), "--metrics-port", str(metrics_port),
        *(() if "--toy-tls-port" in extra else ("--no-toy-tls",)),
        *(() if "--real-tls-port" in extra else ("--no-real-tls",)),
        # The kernel sampler's events would arrive between a scrape and a count at any
        # moment; its own tests (test_sockstates.py) turn it on.
        *(() if "--ss-interval" in extra else ("--ss-interval", "0")),
        *extra,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    server: ServerProcess | None = None
    try:
        async with asyncio.timeout(15):
            while b"listening on" not in await process.stderr.readline():
                assert process.returncode is None, "the server exited at start"
        server = ServerProcess(process, port, metrics_port)
        yield server
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if server is not None:
            await server.draining  # ends at the pipe's end


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f"{k}={v}" for k, v in labels.items()]
    return sum(
        value
        for key, value in samples.items()
        if key.split("{", 1)[0] == name and all(w in key for w in wanted)
    )


async def test_log_and_metrics_count_the_same_events_and_sigterm_exits_0(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    # debug: every event is logged (at info the per-message ones are left out of the log)
    logging = ("--log-format", "json", "--log-file", str(log), "--log-level", "debug")
    async with server_process(*logging) as server:
        async with HTTPClient(http_version="1.0") as client:
            for _ in range(3):
                await client.get(f"{server.url}/health")
        async with HTTPClient() as client:
            for _ in range(3):
                await client.get(f"{server.url}/health")
        assert status_of(await raw_exchange(server.port, b"BAD\r\n\r\n")) == 400
        async with await connect(f"ws://127.0.0.1:{server.port}/ws/echo") as ws:
            await ws.send("over a WebSocket")
            assert await ws.receive() is not None
        # Connections close asynchronously; wait until the metrics see them all closed.
        async with asyncio.timeout(5):
            while True:
                samples = await server.metrics()
                if total(samples, "handshake_lab_connections_active", role="server") == 0:
                    break
                await asyncio.sleep(0.05)
        code, err = await server.stop()
    assert code == 0, err
    records = [json.loads(line) for line in log.read_text().splitlines()]
    by_event = Counter(r["event"] for r in records if r["event"] not in ("app.shutdown.started",))
    # Everything up to the scrape was counted by the metrics exactly as often as it was logged.
    for event, count in by_event.items():
        if event.startswith("app.shutdown") or event == "tcp.listener.stopped":
            continue
        assert total(samples, "handshake_lab_events_total", event=event) == count, event
    opened = total(samples, "handshake_lab_connections_opened_total")
    assert opened == total(samples, "handshake_lab_connections_closed_total") == 3 + 1 + 1 + 1
    # HTTP/1.0 (3), the bad request, the WebSocket (RFC 6455 §7.1.1: server closes TCP first)
    assert total(samples, "handshake_lab_connections_closed_total", closed_by="server") == 3 + 1 + 1
    assert total(samples, "handshake_lab_requests_per_connection_count") == 6
    assert total(samples, "handshake_lab_requests_per_connection_sum") == 3 + 3 + 1
    assert total(samples, "handshake_lab_ws_messages_total", direction="received") == 1
    version_10 = total(
        samples, "http_server_request_duration_seconds_count", network_protocol_version="1.0"
    )
    assert version_10 == 3
    assert total(samples, "handshake_lab_errors_total", kind="bad_request") == 1
    assert {"app.shutdown.started", "app.shutdown.completed"} <= {r["event"] for r in records}
    for record in records:
        assert {"ts", "level", "event", "role", "conn_id"} <= record.keys()


async def test_a_log_file_is_flushed_while_the_server_runs(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    async with server_process("--log-format", "json", "--log-file", str(log)) as server:
        async with HTTPClient() as client:
            await client.get(f"{server.url}/health")
        # Not written at each line (that costs a syscall per event), but within a second
        # or two, so `tail -f` follows a running server.
        for _ in range(50):
            if b'"http.response.sent"' in log.read_bytes():
                break
            await asyncio.sleep(0.1)
        assert b'"http.response.sent"' in log.read_bytes()
        assert server.process.returncode is None


async def test_sigterm_lets_the_request_in_flight_finish() -> None:
    async with server_process("--log-format", "off", "--shutdown-timeout", "5") as server:
        async with HTTPClient() as client:
            in_flight = asyncio.create_task(client.get(f"{server.url}/delay?ms=600"))
            await asyncio.sleep(0.2)
            stopping = asyncio.create_task(server.stop())
            response = await in_flight
        code, _ = await stopping
    assert response.status == 200
    assert response.body == b"slept 600 ms\n"
    assert code == 0


async def test_a_second_signal_cuts_the_drain_short_and_the_log_is_whole(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    async with server_process(
        "--log-format", "json", "--log-file", str(log), "--shutdown-timeout", "30"
    ) as server:  # fmt: skip
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /delay?ms=10000 HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        server.process.send_signal(signal.SIGTERM)  # drain: up to 30 s for that request
        await asyncio.sleep(0.3)
        assert server.process.returncode is None
        server.process.send_signal(signal.SIGINT)  # Ctrl-C again: now
        async with asyncio.timeout(5):
            code = await server.process.wait()
        elapsed = loop.time() - started
        writer.close()
    assert code == 0
    assert elapsed < 3
    records = [json.loads(line) for line in log.read_text().splitlines()]
    (completed,) = [r for r in records if r["event"] == "app.shutdown.completed"]
    assert completed["cancelled"] == 1


async def test_shutdown_timeout_bounds_the_exit() -> None:
    async with server_process("--log-format", "off", "--shutdown-timeout", "0.3") as server:
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /delay?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        code, _ = await server.stop()
        elapsed = loop.time() - started
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert code == 0
    assert elapsed < 3.0  # far below the 5 s the request wanted


async def test_client_get_prints_a_timing_breakdown() -> None:
    async with server_process("--log-format", "off") as server:
        code, out, err = await run("client", "get", "--count", "3", f"{server.url}/health")
        code10, out10, _ = await run("client", "get", "--http1.0", "-n", "2", f"{server.url}/")
        await server.stop()
    assert code == 0, err
    lines = out.splitlines()
    assert "connection #" in lines[0]
    assert " new " in lines[0]
    assert " reused " in lines[2]
    assert all(
        word in lines[1] for word in ("lookup", "connect", "first byte", "transfer", "total")
    )
    assert "3 request(s) over 1 TCP connection(s)" in lines[-1]
    assert code10 == 0
    assert "2 request(s) over 2 TCP connection(s)" in out10.splitlines()[-1]


async def test_client_json_is_one_object_per_request() -> None:
    async with server_process("--log-format", "off") as server:
        code, out, _ = await run(
            "client", "get", "--json", "-n", "2", "-X", "POST", "-d", "hi",
            "-H", "Content-Type: text/x-lab", f"{server.url}/echo",
        )  # fmt: skip
        await server.stop()
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["connection"] for r in records] == ["new", "reused"]
    assert all(r["status"] == 200 and r["bytes"] == 2 for r in records)
    assert all(r["total_s"] >= r["first_byte_s"] >= r["connect_s"] for r in records)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["client", "get", "ftp://x/"], "not an http://, https:// or toytls:// URL"),
        (["client", "get", "-H", "nocolon", "http://127.0.0.1:1/"], "Name: value"),
        (["client", "get", "--count", "0", "http://127.0.0.1:1/"], "--count"),
    ],
)
async def test_client_usage_errors_exit_2_with_a_message(args: list[str], message: str) -> None:
    code, _, err = await run(*args)
    assert code == 2
    assert message in err


async def run_with_input(stdin: bytes, *args: str, timeout_s: float = 20.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *COMMAND, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(timeout_s):
        out, err = await process.communicate(stdin)
    assert process.returncode == 0, err.decode()
    return process.returncode, out.decode()


async def test_client_ws_shows_the_handshake_and_the_echo_as_json() -> None:
    async with server_process("--log-format", "off") as server:
        url = f"ws://127.0.0.1:{server.port}/ws/echo"
        code, out, err = await run(
            "client", "ws", url, "--send", "hello", "--send", "wörld", "--json"
        )
        await server.stop()
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    handshake = records[0]
    assert handshake["event"] == "handshake"
    assert len(base64.b64decode(handshake["key"])) == 16
    # RFC 6455 §4.2.2, computed here, independently of the code under test.
    expected = base64.b64encode(hashlib.sha1(handshake["key"].encode() + GUID).digest()).decode()
    assert handshake["expected_accept"] == handshake["accept"] == expected
    assert handshake["status"] == 101
    messages = [(r["direction"], r["data"]) for r in records if r["event"] == "message"]
    assert messages == [
        ("sent", "hello"), ("received", "hello"), ("sent", "wörld"), ("received", "wörld")
    ]  # fmt: skip
    closed = records[-1]
    assert (closed["event"], closed["code"], closed["closed_by"]) == ("closed", 1000, "client")
    assert closed["tcp_closed_by"] == "server"


async def test_client_ws_text_mode_explains_the_accept_value_and_reads_pushes() -> None:
    async with server_process("--log-format", "off") as server:
        url = f"ws://127.0.0.1:{server.port}/ws/ticker?interval_ms=20"
        code, out, err = await run("client", "ws", url, "--receive", "3")
        await server.stop()
    assert code == 0, err
    assert GUID.decode() in out
    assert "Sec-WebSocket-Accept matches" in out
    ticks = [
        json.loads(line[line.index("{") :])["tick"]
        for line in out.splitlines()
        if line.startswith("<-")
    ]
    assert ticks == [1, 2, 3]
    assert "0 message(s) sent, 3 received" in out


async def test_client_ws_interactive_sends_stdin_lines() -> None:
    async with server_process("--log-format", "off") as server:
        url = f"ws://127.0.0.1:{server.port}/ws/echo"
        _, out = await run_with_input(b"first line\n/ping\nsecond line\n", "client", "ws", url)
        await server.stop()
    sent = [line for line in out.splitlines() if line.startswith("->")]
    received = [line for line in out.splitlines() if line.startswith("<-")]
    assert [line.endswith(("first line", "second line")) for line in sent] == [True, True]
    assert [line.endswith(("first line", "second line")) for line in received] == [True, True]
    assert "ping -> pong" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ftp://127.0.0.1:1/ws/echo"], 2, "ws://, wss://"),
        (["--close-code", "1006", "ws://127.0.0.1:1/"], 2, "--close-code"),
        (["--count", "-1", "ws://127.0.0.1:1/"], 2, "--count"),
        (["--close-code", "1014", "ws://127.0.0.1:1/"], 2, "--close-code"),
        (["ws://127.0.0.1:0/"], 2, "port 0"),
    ],
)
async def test_client_ws_usage_errors(args: list[str], code: int, message: str) -> None:
    status, _, err = await run("client", "ws", *args)
    assert status == code
    assert message in err


async def test_client_ws_interactive_refuses_close_codes_that_may_not_be_sent() -> None:
    async with server_process("--log-format", "off") as server:
        url = f"ws://127.0.0.1:{server.port}/ws/echo"
        _, out = await run_with_input(
            b"/close 70000\n/close 1006\n/close 4001 bye\n", "client", "ws", url
        )
        await server.stop()
    assert out.count("a Close code must be 1000-1003, 1007-1013 or 3000-4999") == 2
    assert "we sent Close first, code 4001 (bye)" in out


async def test_client_ws_with_stdin_from_dev_null_closes_at_once() -> None:
    async with server_process("--log-format", "off") as server:
        process = await asyncio.create_subprocess_exec(
            *COMMAND, "client", "ws", f"ws://127.0.0.1:{server.port}/ws/echo",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(10):
            out, err = await process.communicate()
        await server.stop()
    assert process.returncode == 0, err.decode()
    assert "WebSocket closed: we sent Close first, code 1000" in out.decode()


async def test_client_ws_interactive_ends_when_the_server_closes_first() -> None:
    async with server_process("--log-format", "off", "--ws-idle-timeout", "0.3") as server:
        process = await asyncio.create_subprocess_exec(
            *COMMAND, "client", "ws", f"ws://127.0.0.1:{server.port}/ws/echo",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(10):  # stdin stays open: only the server can end it
            out, err = await process.communicate()
        await server.stop()
    assert process.returncode == 0, err.decode()
    assert "the server sent Close first, code 1000 (idle for 0.3 s)" in out.decode()


async def test_client_ws_scripted_receive_fails_when_messages_do_not_come() -> None:
    async with server_process("--log-format", "off") as server:
        url = f"ws://127.0.0.1:{server.port}/ws/echo"  # echoes, never pushes
        code, out, _ = await run("client", "ws", url, "--receive", "2", "--timeout", "0.5")
        await server.stop()
    assert code == 1
    assert "timed out after 0.5 s" in out


async def test_client_ws_reports_an_answer_that_is_not_http() -> None:
    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(not_http, "127.0.0.1", 0)
    try:
        port = listener.sockets[0].getsockname()[1]
        code, out, err = await run("client", "ws", f"ws://127.0.0.1:{port}/caf\u00e9 x")
    finally:
        listener.close()
        await listener.wait_closed()
    assert code == 1, err
    assert "> GET /caf%C3%A9%20x HTTP/1.1" in out  # RFC 9112 §3.2: an ASCII target
    assert "* upgrade failed" in out
    assert "Traceback" not in err


async def test_client_ws_reports_a_refused_upgrade() -> None:
    async with server_process("--log-format", "off") as server:
        code, out, _ = await run("client", "ws", f"ws://127.0.0.1:{server.port}/health")
        await server.stop()
    assert code == 1
    assert "< HTTP/1.1 200 OK" in out
    assert "upgrade failed: the server answered 200" in out


async def test_client_reports_a_refused_connection() -> None:
    code, _, err = await run("client", "get", f"http://127.0.0.1:{free_port()}/")
    assert code == 1
    assert "refused" in err


async def test_server_reports_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await run("server", "--port", str(port), "--metrics-port", "0")
    assert code == 2
    assert "cannot listen" in err


async def test_help_explains_every_command() -> None:
    for args in (
        ["--help"],
        ["server", "--help"],
        ["client", "get", "--help"],
        ["client", "ws", "--help"],
        ["certs", "--help"],
        ["demo", "--help"],
    ):
        code, out, _ = await run(*args)
        assert code == 0
        assert "usage: handshake-lab" in out
    # The toy TLS says what it is wherever it can be reached.
    for args in (["--help"], ["server", "--help"], ["client", "get", "--help"],
                 ["client", "ws", "--help"], ["client", "load", "--help"],
                 ["tls", "decrypt", "--help"]):  # fmt: skip
        _, out, _ = await run(*args)
        assert FOR_LEARNING_ONLY in " ".join(out.split()), args
    _, server_help, _ = await run("server", "--help")
    assert "--keep-alive-timeout" in server_help
    assert "0.0.0.0" in server_help  # says what exposing the server means
    assert "--ws-ping-interval" in server_help


async def test_version() -> None:
    code, out, _ = await run("--version")
    assert code == 0
    assert out.startswith("handshake-lab ")


async def test_certs_makes_a_ca_and_server_certificates_openssl_accepts(tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    directory = tmp_path / "certs"
    code, out, err = await run("certs", "--dir", str(directory), "--name", "lab.test")
    assert code == 0, err
    assert "names lab.test" in out
    for key_type in ("rsa", "ec"):
        check = await asyncio.create_subprocess_exec(
            openssl, "verify", "-CAfile", str(directory / "ca.pem"),
            "-verify_hostname", "lab.test", str(directory / f"server-{key_type}.pem"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        verdict, _ = await check.communicate()
        assert check.returncode == 0, verdict.decode()
        assert verdict.decode().strip().endswith(": OK")
    first = (directory / "ca.pem").read_bytes()
    code, out, _ = await run("certs", "--dir", str(directory))
    assert (code, (directory / "ca.pem").read_bytes()) == (0, first)
    assert "already" in out
    code, _, _ = await run("certs", "--dir", str(directory), "--force")
    assert code == 0
    assert (directory / "ca.pem").read_bytes() != first


async def test_client_get_over_the_toy_tls_of_a_server_process(tmp_path: Path) -> None:
    tls_port = free_port()
    certs = tmp_path / "certs"
    async with server_process(
        "--toy-tls-port", str(tls_port), "--certs-dir", str(certs), "--log-format", "off"
    ) as server:
        url = f"toytls://127.0.0.1:{tls_port}/health"
        code, out, err = await run(
            "client", "get", "--http1.0", "--count", "2", "--kx", "rsa",
            "--cafile", str(certs / "ca.pem"), url,
        )  # fmt: skip
        samples = await server.metrics()
        await server.stop()
    assert code == 0, err
    assert out.count(" 200 OK") == 2
    assert "2 request(s) over 2 TCP connection(s)" in out
    assert total(samples, "handshake_lab_tls_handshakes_total", result="completed") == 2
    assert total(samples, "handshake_lab_tls_handshakes_total", key_exchange="rsa") == 2


@pytest.mark.parametrize("kx", ["rsa", "ecdhe"])
async def test_client_get_explain_tells_the_toy_tls_handshake(tmp_path: Path, kx: str) -> None:
    tls_port = free_port()
    certs = tmp_path / "certs"
    async with server_process(
        "--toy-tls-port", str(tls_port), "--certs-dir", str(certs), "--log-format", "off"
    ) as server:
        code, out, err = await run(
            "client", "get", "--explain", "--kx", kx, "--cafile", str(certs / "ca.pem"),
            f"toytls://localhost:{tls_port}/health",
        )  # fmt: skip
        await server.stop()
    assert code == 0, err
    lines = [line.split("ms", 1)[-1].strip() for line in out.splitlines() if "tls" in line]
    order = ["-> ClientHello", "<- ServerHello", "<- Certificate", "-> ClientKeyExchange",
             "-> Finished", "<- Finished", "handshake complete"]  # fmt: skip
    if kx == "ecdhe":
        order.insert(3, "<- ServerKeyExchange")
    seen = [step for step in order if any(line.startswith(step) for line in lines)]
    assert seen == order
    assert "verified: signed by the CA we trust" in out
    assert FOR_LEARNING_ONLY in out
    assert ("premaster secret C, 48 random bytes" in out) is (kx == "rsa")
    assert " 200 OK" in out


async def test_tls_decrypt_shows_forward_secrecy(tmp_path: Path) -> None:
    tls_port = free_port()
    certs = tmp_path / "certs"
    async with server_process(
        "--toy-tls-port", str(tls_port), "--certs-dir", str(certs), "--log-format", "off"
    ) as server:
        for kx in ("rsa", "ecdhe"):
            code, _, err = await run(
                "client", "get", "--kx", kx, "-d", "hush-42", "--cafile", str(certs / "ca.pem"),
                "--record", str(tmp_path / f"{kx}.jsonl"), "--keylog", str(tmp_path / f"{kx}.log"),
                f"toytls://127.0.0.1:{tls_port}/echo",
            )  # fmt: skip
            assert code == 0, err
        await server.stop()
    [chunks] = read_recording((tmp_path / "rsa.jsonl").read_text()).values()
    assert b"hush-42" not in b"".join(data for _, data in chunks)  # on the wire: sealed
    server_key = str(certs / "server-rsa.key")
    # rsa: the server's key alone opens the recording (the premaster was encrypted to it).
    code, out, _ = await run(
        "tls", "decrypt", str(tmp_path / "rsa.jsonl"), "--server-key", server_key
    )
    assert code == 0
    assert "ClientKeyExchange" in out
    assert "application data POST /echo" in out
    assert "hush-42" in out
    # ecdhe: the same key opens nothing; the key log does.
    code, out, _ = await run(
        "tls", "decrypt", str(tmp_path / "ecdhe.jsonl"), "--server-key", server_key
    )
    assert code == 1
    assert "forward secrecy" in out
    assert "hush-42" not in out
    code, out, _ = await run(
        "tls", "decrypt", str(tmp_path / "ecdhe.jsonl"), "--keylog", str(tmp_path / "ecdhe.log")
    )
    assert code == 0
    assert "hush-42" in out
    # Another connection's keys open nothing.
    code, out, _ = await run(
        "tls", "decrypt", str(tmp_path / "ecdhe.jsonl"), "--keylog", str(tmp_path / "rsa.log")
    )
    assert code == 1
    assert "cannot decrypt" in out
