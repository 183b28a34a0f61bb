"""`handshake-lab certs`: make the lab CA and server certificates."""

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
