"""`handshake-lab client get URL`: requests with a timing breakdown, like `curl -w`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from client.client import HTTPClient, RequestError
from client.explain import HandshakeExplainer
from client.trace import trace
from handshake_tls import FOR_LEARNING_ONLY
from handshake_tls.certs import DEFAULT_DIR
from handshake_tls.recording import LineFile, Recorder
from handshake_tls.wire import KeyExchange
from telemetry.setup import Telemetry, add_telemetry_arguments

if TYPE_CHECKING:
    import argparse

    from client.http_conn import Headers
    from client.pool import Response


def add_get_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        help="an http:// URL, e.g. http://127.0.0.1:8080/, or toytls://127.0.0.1:8443/ "
        "for the same over the toy TLS",
    )
    version = parser.add_mutually_exclusive_group()
    version.add_argument(
        "--http1.0",
        dest="http_version",
        action="store_const",
        const="1.0",
        help="HTTP/1.0: a new TCP connection for every request",
    )
    version.add_argument(
        "--http1.1",
        dest="http_version",
        action="store_const",
        const="1.1",
        help="HTTP/1.1 keep-alive: one connection, reused (the default)",
    )
    parser.set_defaults(http_version="1.1")
    parser.add_argument(
        "--count",
        "-n",
        type=int,
        default=1,
        metavar="N",
        help="send the request N times, one after another (default: 1)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.0,
        metavar="S",
        help="wait S seconds between requests, e.g. to outlast the server's "
        "keep-alive timeout (default: 0)",
    )
    parser.add_argument(
        "-X",
        "--request",
        dest="method",
        default=None,
        metavar="METHOD",
        help="the method (default: GET, or POST with -d)",
    )
    parser.add_argument("-d", "--data", default=None, help="request body (sets POST unless -X)")
    add_header_argument(parser, "add a request header; repeatable")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per request instead of text"
    )
    parser.add_argument("--body", action="store_true", help="print each response body too")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="afterwards, draw the ladder of what happened: the application's events and "
        "the kernel's socket states (sampled with ss, both ends when the server is on this "
        "machine); wire segments need the lab network (handshake-lab lab, as root)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="give up on connecting or on a response after S seconds (default: 30)",
    )
    tls = add_tls_arguments(parser, "TLS (https:// and toytls:// URLs)")
    tls.add_argument(
        "--keylog",
        type=Path,
        metavar="FILE",
        help="append each connection's keys to FILE (for handshake-lab tls decrypt)",
    )
    tls.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="append every byte each connection sends and receives to FILE",
    )
    tls.add_argument(
        "--explain",
        action="store_true",
        help="print each step of the toy-TLS handshake as it happens, with its time",
    )
    add_telemetry_arguments(parser, metrics_port=0)
    parser.set_defaults(log_format="off")


def add_tls_arguments(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """--kx and --cafile, the same for both client commands."""
    tls = parser.add_argument_group(title)
    tls.add_argument(
        "--kx",
        choices=[kx.name.lower() for kx in KeyExchange],
        default="ecdhe",
        help="toy TLS key exchange: rsa (premaster encrypted to the certificate's key) or "
        f"ecdhe (ephemeral X25519, signed: forward secrecy); the toy TLS is {FOR_LEARNING_ONLY} "
        "(default: %(default)s)",
    )
    tls.add_argument(
        "--cafile",
        type=Path,
        default=None,
        help=f"the CA the server must be signed by (default: the lab's, {DEFAULT_DIR}/ca.pem)",
    )
    return tls


def add_header_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'", help=help_text
    )


def parse_headers(raw: list[str]) -> Headers:
    headers: Headers = []
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header must look like 'Name: value', got {item!r}")
        headers.append((name.strip().encode(), value.strip().encode()))
    return headers


def response_record(response: Response) -> dict[str, object]:
    t = response.timings
    return {
        "index": response.index,
        "conn_id": response.conn_id,
        "connection": "reused" if response.reused else "new",
        "retried": response.retried,
        "status": response.status,
        "http_version": response.http_version,
        "lookup_s": round(t.lookup_s, 6),
        "connect_s": round(t.connect_s, 6),
        "first_byte_s": round(t.first_byte_s, 6),
        "transfer_s": round(t.transfer_s, 6),
        "total_s": round(t.total_s, 6),
        "bytes": len(response.body),
        "local": response.local,
        "remote": response.remote,
    }


def format_response(
    number: int, method: str, target: str, http_version: str, response: Response
) -> str:
    t = response.timings
    how = "reused" if response.reused else "new"
    retried = " (retried: the idle connection had been closed)" if response.retried else ""
    ms = 1000.0
    return (
        f"#{number} {method} {target} HTTP/{http_version} -> HTTP/{response.http_version} "
        f"{response.status} {response.reason}  connection #{response.conn_id} {how}{retried}  "
        f"{response.local} -> {response.remote}\n"
        f"   lookup {t.lookup_s * ms:.3f} ms  connect {t.connect_s * ms:.3f} ms  "
        f"first byte {t.first_byte_s * ms:.3f} ms  transfer {t.transfer_s * ms:.3f} ms  "
        f"total {t.total_s * ms:.3f} ms  {len(response.body)} B"
    )


async def run_get_async(args: argparse.Namespace, telemetry: Telemetry) -> int:
    keylog = LineFile(args.keylog) if args.keylog else None
    recorder = Recorder(args.record) if args.record else None
    try:
        return await _run_get(args, telemetry, keylog, recorder)
    finally:
        for file in (keylog, recorder):
            if file is not None:
                file.close()


async def _run_get(
    args: argparse.Namespace,
    telemetry: Telemetry,
    keylog: LineFile | None,
    recorder: Recorder | None,
) -> int:
    if args.trace:
        async with trace(telemetry.bus, args.url, sys.stdout):
            return await _requests(args, telemetry, keylog, recorder)
    return await _requests(args, telemetry, keylog, recorder)


async def _requests(
    args: argparse.Namespace,
    telemetry: Telemetry,
    keylog: LineFile | None,
    recorder: Recorder | None,
) -> int:
    method = (args.method or ("POST" if args.data is not None else "GET")).upper()
    body = args.data.encode() if args.data is not None else b""
    headers = parse_headers(args.header)
    responses = 0
    async with HTTPClient(
        telemetry.bus,
        http_version=args.http_version,
        timeout_s=args.timeout,
        cafile=args.cafile,
        key_exchange=KeyExchange[args.kx.upper()],
        tls_keylog=keylog,
        tls_record=recorder.for_connection if recorder else None,
    ) as client:
        for number in range(1, args.count + 1):
            if number > 1 and args.interval:
                await asyncio.sleep(args.interval)
            try:
                response = await client.request(method, args.url, headers, body)
            except RequestError as error:
                print(
                    f"handshake-lab client: request #{number} failed ({error.kind}): {error}",
                    file=sys.stderr,
                )
                return 1
            responses += 1
            if args.json:
                print(json.dumps(response_record(response)), flush=True)
            else:
                target = args.url.split("/", 3)[3] if args.url.count("/") >= 3 else ""
                print(
                    format_response(number, method, "/" + target, args.http_version, response),
                    flush=True,
                )
            if args.body:
                sys.stdout.buffer.write(response.body)
                sys.stdout.flush()
    if not args.json:
        opened = client.connections_opened
        print(
            f"=> {responses} request(s) over {opened} TCP connection(s): "
            f"{opened} three-way handshake(s)"
            + (
                " (HTTP/1.0: one connection per request)"
                if args.http_version == "1.0"
                else " (HTTP/1.1 keep-alive: the connection was reused)"
                if opened < responses
                else ""
            )
        )
    return 0


def run_get(args: argparse.Namespace) -> int:
    if args.count < 1:
        print("handshake-lab client: --count must be at least 1", file=sys.stderr)
        return 2
    try:
        parse_headers(args.header)
        telemetry = Telemetry.from_args(args)
    except (ValueError, OSError) as exc:
        print(f"handshake-lab client: {exc}", file=sys.stderr)
        return 2
    if args.explain:
        telemetry.bus.subscribe(HandshakeExplainer(sys.stdout))
    try:
        return asyncio.run(run_get_async(args, telemetry))
    except ValueError as exc:  # a URL we cannot use
        print(f"handshake-lab client: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # --keylog or --record cannot be written
        print(f"handshake-lab client: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    finally:
        telemetry.close()
