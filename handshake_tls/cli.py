"""`handshake-lab certs` (the lab CA and server certificates) and `handshake-lab tls
decrypt` (a recorded toy-TLS connection, read afterwards)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from handshake_tls import crypto
from handshake_tls.certs import (
    DEFAULT_DIR,
    DEFAULT_NAMES,
    KEY_TYPES,
    SERVER_DAYS,
    LabFiles,
    make_lab_certificates,
)
from handshake_tls.decrypt import CannotDecrypt, Plaintext, decrypt_recording, parse_keylog
from handshake_tls.errors import RemoteProtocolError
from handshake_tls.record import ContentType
from handshake_tls.recording import read_recording
from handshake_tls.wire import HandshakeType, split_message

if TYPE_CHECKING:
    import argparse


def add_certs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help="where the files go (default: %(default)s)",
    )
    parser.add_argument(
        "--name",
        action="append",
        metavar="NAME",
        help="a DNS name or IP address the server certificate names; repeatable "
        f"(default: {', '.join(DEFAULT_NAMES)})",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=SERVER_DAYS,
        help="server certificates' validity in days (default: %(default)s)",
    )
    parser.add_argument(
        "--force", action="store_true", help="make new ones even if the directory has them"
    )


def run_certs(args: argparse.Namespace) -> int:
    files = LabFiles(args.dir)
    if args.days < 1:
        print("handshake-lab certs: --days must be at least 1", file=sys.stderr)
        return 2
    if files.complete() and not args.force:
        print(f"handshake-lab certs: {args.dir} has the lab's files already (--force remakes them)")
    else:
        try:
            files = make_lab_certificates(
                args.dir, args.name or DEFAULT_NAMES, server_days=args.days
            )
        except OSError as exc:
            print(f"handshake-lab certs: cannot write {args.dir}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"handshake-lab certs: made a lab CA and server certificates in {args.dir}")
    ca = crypto.load_certificate_pem(files.ca.read_bytes())
    print(f"  CA      {files.ca}  {ca.subject.rfc4514_string()}")
    for key_type in KEY_TYPES:
        cert = crypto.load_certificate_pem(files.certificate(key_type).read_bytes())
        info = crypto.describe(cert)
        print(
            f"  {key_type:<7} {files.certificate(key_type)}  names {', '.join(info.names)}; "
            f"valid to {info.not_after:%Y-%m-%d}; SHA-256 {info.fingerprint_sha256[:16]}..."
        )
    print(f"Other clients trust the lab with its CA, e.g. curl --cacert {files.ca}")
    return 0


def add_decrypt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", type=Path, help="a file written by client get --record")
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--keylog", type=Path, help="the key log (client get --keylog)")
    keys.add_argument(
        "--server-key",
        type=Path,
        metavar="KEY",
        help="the server's private key alone (PEM): enough for rsa, useless for ecdhe",
    )


def run_decrypt(args: argparse.Namespace) -> int:
    try:
        connections = read_recording(args.recording.read_text())
        keylog = parse_keylog(args.keylog.read_text()) if args.keylog else None
        server_key = (
            crypto.load_private_key_pem(args.server_key.read_bytes()) if args.server_key else None
        )
    except (OSError, ValueError) as exc:
        print(f"handshake-lab tls decrypt: {exc}", file=sys.stderr)
        return 2
    failures = 0
    for conn_id, chunks in connections.items():
        print(f"connection #{conn_id}:")
        try:
            records = decrypt_recording(chunks, keylog=keylog, server_key=server_key)
        except CannotDecrypt as exc:
            print(f"  cannot decrypt: {exc}")
            failures += 1
            continue
        except RemoteProtocolError as exc:
            print(f"  cannot read it: {exc}")
            failures += 1
            continue
        for record in records:
            print(f"  {record.sender:>6} {_describe(record)}")
    return 1 if failures else 0


def _describe(record: Plaintext) -> str:
    data = record.data
    if record.content_type is ContentType.HANDSHAKE:
        names = []
        while (split := split_message(data)) is not None:
            msg_type, _body, used = split
            names.append(_message_name(msg_type))
            data = data[used:]
        return f"handshake        {', '.join(names)} ({len(record.data)} bytes)"
    if record.content_type is ContentType.ALERT:
        code = data[1] if len(data) == 2 else -1
        return f"alert            {'close_notify' if code == 0 else f'code {code}'}"
    return f"application data {_show(data)}"


def _message_name(msg_type: int) -> str:
    try:
        return HandshakeType(msg_type).name.title().replace("_", "")
    except ValueError:
        return f"type {msg_type}"


def _show(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    if data and sum(ch.isprintable() or ch in "\r\n" for ch in text) / len(text) > 0.9:
        shown = text.replace("\r", "").replace("\n", " | ")
        return shown if len(shown) < 240 else shown[:237] + "..."
    return f"{len(data)} bytes: {data[:24].hex()}{'...' if len(data) > 24 else ''}"
