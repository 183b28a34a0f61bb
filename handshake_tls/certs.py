"""The lab's certificates: a CA, and server certificates signed by it (RSA and ECDSA keys).

`handshake-lab certs` writes them into a directory; the server makes them on first start
when none exist, and the client trusts the lab CA by default. Files (PEM):

    ca.pem, ca.key                    the lab CA (EC P-256), valid 10 years
    server-rsa.pem, server-rsa.key    server certificate with an RSA-2048 key (for `rsa`)
    server-ec.pem, server-ec.key      server certificate with an EC P-256 key

Keys are written readable by the owner only. Nothing here is secret beyond the lab.
"""

from __future__ import annotations

import datetime
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from handshake_tls import crypto

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cryptography import x509

DEFAULT_NAMES: Final = ("localhost", "127.0.0.1", "::1", "server")  # "server": compose
DEFAULT_DIR: Final = Path.home() / ".local" / "share" / "handshake-lab" / "certs"
CA_DAYS: Final = 3650
SERVER_DAYS: Final = 825  # what browsers accept for a server certificate
KEY_TYPES: Final = ("rsa", "ec")


@dataclass(frozen=True, slots=True)
class LabFiles:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    def certificate(self, key_type: str) -> Path:
        return self.directory / f"server-{key_type}.pem"

    def key(self, key_type: str) -> Path:
        return self.directory / f"server-{key_type}.key"

    def complete(self) -> bool:
        return all(
            path.exists()
            for path in (
                self.ca,
                self.ca_key,
                *(self.certificate(k) for k in KEY_TYPES),
                *(self.key(k) for k in KEY_TYPES),
            )
        )


def make_lab_certificates(
    directory: Path,
    names: Sequence[str] = DEFAULT_NAMES,
    *,
    now: datetime.datetime | None = None,
    server_days: int = SERVER_DAYS,
) -> LabFiles:
    """A fresh lab CA and one server certificate per key type for `names`, in `directory`.

    Raises:
        ValueError: no names.
        OSError: the directory cannot be written.
    """
    if not names:
        raise ValueError("a server certificate needs at least one name")
    now = now or datetime.datetime.now(datetime.UTC)
    files = LabFiles(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = crypto.new_private_key("ec")
    ca = crypto.make_ca(ca_key, "handshake-lab CA", now, CA_DAYS)
    _write(files.ca_key, crypto.private_key_pem(ca_key), secret=True)
    _write(files.ca, crypto.certificate_pem(ca))
    for key_type in KEY_TYPES:
        key = crypto.new_private_key(key_type)
        cert = crypto.make_server_certificate(ca, ca_key, key, names, now, server_days)
        _write(files.key(key_type), crypto.private_key_pem(key), secret=True)
        _write(files.certificate(key_type), crypto.certificate_pem(cert))
    return files


def ensure_lab_certificates(directory: Path) -> tuple[LabFiles, bool]:
    """The lab's files in `directory`, made first if any is missing. Returns (files, made)."""
    files = LabFiles(directory)
    if files.complete():
        return files, False
    return make_lab_certificates(directory), True


def trusted_ca(cafile: Path | None) -> x509.Certificate:
    """The CA a client trusts: `cafile`, or the lab's.

    Raises:
        OSError: the file cannot be read (its message says how to make one).
        ValueError: it is not a PEM certificate.
    """
    path = cafile or (DEFAULT_DIR / "ca.pem")
    try:
        return crypto.load_certificate_pem(path.read_bytes())
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot read the CA to trust, {path}: {exc.strerror} "
            "(handshake-lab certs makes one; --cafile names another)",
        ) from None


def real_tls_client_context(cafile: Path | None) -> ssl.SSLContext:
    """Python's TLS for a client trusting `cafile`, or the lab CA; honours SSLKEYLOGFILE.

    Raises:
        OSError: the CA cannot be read or is not a certificate (ssl.SSLError is an OSError).
    """
    path = cafile or (DEFAULT_DIR / "ca.pem")
    try:
        return ssl.create_default_context(cafile=str(path))
    except OSError as exc:
        raise OSError(exc.errno, f"cannot load the CA to trust, {path}: {exc}") from None


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    # Written whole under a temporary name, then renamed: no half-written key is ever read.
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)
    temporary.replace(path)
