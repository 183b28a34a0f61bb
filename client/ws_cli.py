"""`handshake-lab client ws URL`: a WebSocket from the terminal, with the handshake shown.

Scripted: `--send TEXT` (repeatable) sends messages and waits for as many replies,
`--receive N` waits for N messages (a ticker's pushes), `--count N` times N echo round
trips. Interactive otherwise: each line on stdin is a message (`/ping`, `/close [code
[reason]]` are commands), and what arrives is printed as it arrives.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import stat
import statistics
import sys
import time
from typing import TYPE_CHECKING, Any

from client.__main__ import add_header_argument, add_tls_arguments, parse_headers
from client.ws import UpgradeFailed, URLError, WebSocketClient, connect
from handshake_lab.transport import TransportError
from handshake_lab.ws_conn import WSLimits, WSState, sendable_close_code
from handshake_lab.ws_handshake import GUID
from handshake_lab.ws_session import ConnectionClosed
from handshake_tls.wire import KeyExchange
from telemetry.events import Role
from telemetry.setup import Telemetry, add_telemetry_arguments

CLOSE_CODES_HELP = "a Close code must be 1000-1003, 1007-1013 or 3000-4999 (RFC 6455 §7.4)"

if TYPE_CHECKING:
    import argparse

    from client.ws import Handshake


def add_ws_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        help="a ws:// URL, e.g. ws://127.0.0.1:8080/ws/echo, or ws+toytls://127.0.0.1:8443/"
        "ws/echo over the toy TLS",
    )
    parser.add_argument(
        "--send",
        action="append",
        default=[],
        metavar="TEXT",
        help="send TEXT as a message, then wait for a reply; repeatable",
    )
    parser.add_argument(
        "--receive",
        type=int,
        default=None,
        metavar="N",
        help="wait for N messages (default with --send: one per message sent)",
    )
    parser.add_argument(
        "--count",
        "-n",
        type=int,
        default=0,
        metavar="N",
        help="echo timing: send a message N times, each after the previous one came "
        "back, and report the round trips (median, p99, messages/s)",
    )
    parser.add_argument(
        "--size", type=int, default=16, metavar="BYTES", help="message size for --count"
    )
    parser.add_argument("--binary", action="store_true", help="send binary messages, not text")
    parser.add_argument(
        "--fragment",
        type=int,
        default=0,
        metavar="BYTES",
        help="split each message sent into frames of BYTES (fragmentation, RFC 6455 §5.4)",
    )
    parser.add_argument("--ping", action="store_true", help="send a ping first; show its RTT")
    parser.add_argument(
        "--close-code", type=int, default=1000, help="our Close frame's code (default: 1000)"
    )
    parser.add_argument("--close-reason", default="", help="our Close frame's reason")
    parser.add_argument("--no-deflate", action="store_true", help="do not offer permessage-deflate")
    add_header_argument(
        parser, "add a header to the upgrade request (e.g. 'Origin: http://lab'); repeatable"
    )
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per line instead of text"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="give up on connecting, on the upgrade, or on an awaited message after S "
        "seconds (default: %(default)s)",
    )
    add_tls_arguments(parser, "TLS (wss:// and ws+toytls:// URLs)")
    add_telemetry_arguments(parser, metrics_port=0)
    parser.set_defaults(log_format="off")


class Printer:
    """Everything the command shows, as text for a person or JSON lines for a program."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.started = time.perf_counter()

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def out(self, text: str, **record: Any) -> None:
        if self.as_json:
            print(json.dumps(record), flush=True)
        else:
            print(text, flush=True)

    def handshake(self, handshake: Handshake) -> None:
        ms = 1000.0
        if self.as_json:
            self.out(
                "",
                event="handshake",
                url=handshake.url,
                local=handshake.local,
                remote=handshake.remote,
                connect_s=round(handshake.connect_s, 6),
                upgrade_s=round(handshake.upgrade_s, 6),
                key=handshake.key,
                expected_accept=handshake.expected_accept,
                status=handshake.status,
                accept=handshake.accept,
                extensions=handshake.extensions,
            )
            return
        lines = [
            f"* TCP connected in {handshake.connect_s * ms:.3f} ms "
            f"({handshake.local} -> {handshake.remote}): the three-way handshake",
            f"> GET {handshake.path} HTTP/1.1",
        ]
        for name, value in handshake.request_headers:
            note = "   <- 16 random bytes, base64" if name == b"sec-websocket-key" else ""
            lines.append(f"> {name.decode()}: {value.decode('latin-1')}{note}")
        lines += [
            f"* expecting Sec-WebSocket-Accept: {handshake.expected_accept}",
            f'*   = base64(SHA-1(key + "{GUID.decode()}"))  (RFC 6455 §4.2.2)',
        ]
        if handshake.status:
            lines.append(f"< HTTP/1.1 {handshake.status} {handshake.reason}")
            lines += [
                f"< {name.decode('latin-1')}: {value.decode('latin-1')}"
                for name, value in handshake.response_headers
            ]
        self.out("\n".join(lines))

    def upgraded(self, handshake: Handshake) -> None:
        if self.as_json:
            return
        self.out(
            "* Sec-WebSocket-Accept matches: the server speaks WebSocket "
            f"(upgrade: {handshake.upgrade_s * 1000:.3f} ms, one round trip)\n"
            f"* extensions: {handshake.extensions or 'none'}\n"
            "* from here the same TCP connection carries WebSocket frames, both ways"
        )

    def message(self, direction: str, data: str | bytes, frames: int = 1) -> None:
        kind = "text" if isinstance(data, str) else "binary"
        size = len(data.encode()) if isinstance(data, str) else len(data)
        shown = data if isinstance(data, str) else base64.b64encode(data).decode()
        if self.as_json:
            self.out(
                "",
                event="message",
                direction=direction,
                t_ms=round(self.elapsed_ms(), 3),
                type=kind,
                bytes=size,
                frames=frames,
                data=shown,
            )
            return
        arrow = "->" if direction == "sent" else "<-"
        frames_note = f", {frames} frames" if frames > 1 else ""
        text = shown if len(shown) <= 200 else shown[:200] + "..."
        self.out(f"{arrow} {self.elapsed_ms():10.3f} ms  {kind} {size} B{frames_note}  {text}")


async def run_ws_async(args: argparse.Namespace, telemetry: Telemetry) -> int:
    printer = Printer(args.json)
    try:
        client = await connect(
            args.url,
            bus=telemetry.bus,
            # --timeout bounds the wait for the server's Close too (never more than 5 s)
            limits=WSLimits(idle_timeout_s=0, close_timeout_s=min(args.timeout, 5.0)),
            offer_deflate=not args.no_deflate,
            timeout_s=args.timeout,
            extra_headers=parse_headers(args.header),
            cafile=args.cafile,
            key_exchange=KeyExchange[args.kx.upper()],
        )
    except UpgradeFailed as error:
        printer.handshake(error.handshake)
        body = error.body.decode("utf-8", "replace").strip()
        printer.out(
            f"* upgrade failed: {error}" + (f"\n  {body}" if body else ""),
            event="upgrade_failed",
            kind=error.kind,
            reason=str(error),
            body=body,
        )
        return 1
    except TransportError as error:
        printer.out(
            f"* connection failed ({error.kind}): {error}",
            event="failed",
            kind=error.kind,
            reason=str(error),
        )
        return 1
    printer.handshake(client.handshake)
    printer.upgraded(client.handshake)
    printer.started = time.perf_counter()
    status = 0
    try:
        if args.ping:
            await _ping(client, printer, args.timeout)
        if args.count:
            await _echo_timing(client, printer, args)
        elif args.send or args.receive is not None:
            await _scripted(client, printer, args)
        else:
            await _interactive(client, printer, args)
    except (TimeoutError, ConnectionClosed, TransportError) as error:
        what = f"timed out after {args.timeout} s" if isinstance(error, TimeoutError) else error
        printer.out(f"* {what}", event="error", reason=str(what))
        status = 1
    finally:
        await client.close(args.close_code, args.close_reason)
    _closed(client, printer)
    return status


async def _ping(client: WebSocketClient, printer: Printer, timeout_s: float) -> None:
    pong = await client.ping()
    async with asyncio.timeout(timeout_s):
        rtt_ms = await pong * 1000
    printer.out(f"* ping -> pong in {rtt_ms:.3f} ms", event="ping", rtt_ms=round(rtt_ms, 3))


async def _receive(client: WebSocketClient, printer: Printer, timeout_s: float) -> None:
    """One awaited message, printed. Raises ConnectionClosed if the connection ends first."""
    async with asyncio.timeout(timeout_s):
        message = await client.receive()
    if message is None:
        raise ConnectionClosed(client.core.close_code, "closed before the awaited message")
    printer.message("received", message.data, message.frames)


async def _scripted(client: WebSocketClient, printer: Printer, args: argparse.Namespace) -> None:
    for text in args.send:
        data: str | bytes = text.encode() if args.binary else text
        await client.send(data, fragment_bytes=args.fragment)
        printer.message("sent", data, client.core.last_message_frames)
        if args.receive is None:
            await _receive(client, printer, args.timeout)
    for _ in range(args.receive or 0):
        await _receive(client, printer, args.timeout)


async def _echo_timing(client: WebSocketClient, printer: Printer, args: argparse.Namespace) -> None:
    payload: str | bytes = b"x" * args.size if args.binary else "x" * args.size
    rtts: list[float] = []
    started = time.perf_counter()
    for _ in range(args.count):
        sent = time.perf_counter()
        await client.send(payload, fragment_bytes=args.fragment)
        async with asyncio.timeout(args.timeout):
            message = await client.receive()
        if message is None:
            raise ConnectionClosed(client.core.close_code, client.core.close_reason)
        rtts.append(time.perf_counter() - sent)
    total = time.perf_counter() - started
    rtts.sort()
    summary = {
        "messages": len(rtts),
        "median_ms": round(statistics.median(rtts) * 1000, 4),
        "p99_ms": round(rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] * 1000, 4),
        "min_ms": round(rtts[0] * 1000, 4),
        "max_ms": round(rtts[-1] * 1000, 4),
        "messages_per_s": round(len(rtts) / total, 1),
    }
    printer.out(
        f"* {summary['messages']} echo round trips of {args.size} B on one connection: "
        f"median {summary['median_ms']} ms, p99 {summary['p99_ms']} ms, "
        f"min {summary['min_ms']} ms, max {summary['max_ms']} ms; "
        f"{summary['messages_per_s']} messages/s",
        event="echo_timing",
        **summary,
    )


async def _interactive(client: WebSocketClient, printer: Printer, args: argparse.Namespace) -> None:
    if not args.json and sys.stdin.isatty():
        printer.out("* type a line to send it; /ping, /close [code [reason]]; Ctrl-D closes")
    printing = asyncio.create_task(_print_incoming(client, printer))
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    reading = asyncio.create_task(_read_stdin(lines))
    closed = asyncio.ensure_future(client.wait_closed())
    try:
        while True:
            # A line, or the server closing first (idle timeout, shutdown): whichever comes.
            next_line = asyncio.ensure_future(lines.get())
            await asyncio.wait({next_line, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not next_line.done():
                next_line.cancel()
                break
            line = next_line.result()
            if line is None or client.core.state is not WSState.OPEN:
                break
            if line.startswith("/ping"):
                await _ping(client, printer, args.timeout)
            elif line.startswith("/close"):
                code, reason = _close_command(line, args)
                if code is None:
                    printer.out(f"* {reason}", event="error", reason=reason)
                    continue
                await client.close(code, reason)
                break
            else:
                text = line[1:] if line.startswith("//") else line
                data: str | bytes = text.encode() if args.binary else text
                await client.send(data, fragment_bytes=args.fragment)
                printer.message("sent", data, client.core.last_message_frames)
        if client.core.state is WSState.OPEN:
            await client.close(args.close_code, args.close_reason)
        await client.wait_closed()
        await printing  # (ends once the pump has delivered the last message)
    finally:
        for task in (reading, printing, closed):
            task.cancel()
        await asyncio.gather(reading, printing, closed, return_exceptions=True)


def _close_command(line: str, args: argparse.Namespace) -> tuple[int | None, str]:
    """`/close [code [reason]]` as (code, reason), or (None, what is wrong)."""
    parts = line.split(maxsplit=2)
    if len(parts) < 2:
        return args.close_code, args.close_reason
    if not parts[1].isdigit() or not sendable_close_code(int(parts[1])):
        return None, f"/close {parts[1]}: {CLOSE_CODES_HELP}"
    return int(parts[1]), parts[2] if len(parts) > 2 else ""


async def _print_incoming(client: WebSocketClient, printer: Printer) -> None:
    while (message := await client.receive()) is not None:
        printer.message("received", message.data, message.frames)


async def _read_stdin(lines: asyncio.Queue[str | None]) -> None:
    """Put stdin's lines on `lines`, then None; without blocking the loop where stdin is a
    pipe or a terminal."""
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()):
        # A file, or /dev/null: epoll cannot wait on those, and reading them never blocks.
        for line in sys.stdin.read().splitlines():
            lines.put_nowait(line)
        lines.put_nowait(None)
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while data := await reader.readline():
        lines.put_nowait(data.decode("utf-8", "replace").rstrip("\r\n"))
    lines.put_nowait(None)


def _closed(client: WebSocketClient, printer: Printer) -> None:
    core = client.core
    closing = client.session.closing
    who = "we" if core.closed_by == "local" else "the server"
    tcp_first = "the server" if closing.closed_by is Role.SERVER else "we"
    printer.out(
        f"* WebSocket closed: {who} sent Close first, code {core.close_code}"
        + (f" ({core.close_reason})" if core.close_reason else "")
        + f"\n* TCP: {tcp_first} sent FIN first"
        + (" (RFC 6455 §7.1.1: the server closes TCP first)" if tcp_first == "the server" else "")
        + f"; {core.messages_sent} message(s) sent, {core.messages_received} received",
        event="closed",
        code=core.close_code,
        reason=core.close_reason,
        closed_by="client" if core.closed_by == "local" else "server",
        tcp_closed_by=(closing.closed_by or Role.CLIENT).value,
        messages_sent=core.messages_sent,
        messages_received=core.messages_received,
    )


def run_ws(args: argparse.Namespace) -> int:
    problems = [
        f"--{name} must be at least {low}"
        for name, value, low in (
            ("count", args.count, 0),
            ("size", args.size, 0),
            ("fragment", args.fragment, 0),
            ("receive", args.receive or 0, 0),
        )
        if value < low
    ]
    if not sendable_close_code(args.close_code):
        problems.append(f"--close-code {args.close_code}: {CLOSE_CODES_HELP}")
    try:
        parse_headers(args.header)
        telemetry = Telemetry.from_args(args)
    except (ValueError, OSError) as exc:
        problems.append(str(exc))
    if problems:
        for problem in problems:
            print(f"handshake-lab client ws: {problem}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run_ws_async(args, telemetry))
    except URLError as exc:
        print(f"handshake-lab client ws: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        with contextlib.suppress(Exception):
            telemetry.close()
