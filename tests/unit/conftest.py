"""Fixtures for the unit tests."""

from __future__ import annotations

import pytest

from handshake_tls import crypto
from handshake_tls.connection import ServerIdentity
from tests.unit.test_tls_handshake import NOW, Lab


@pytest.fixture(scope="session")
def lab() -> Lab:
    ca_key = crypto.new_private_key("ec")
    ca = crypto.make_ca(ca_key, "test CA", NOW, 30)
    identities = {}
    for key_type in ("rsa", "ec"):
        key = crypto.new_private_key(key_type)
        cert = crypto.make_server_certificate(ca, ca_key, key, ["localhost"], NOW, 10)
        identities[key_type] = ServerIdentity((crypto.certificate_der(cert),), key)
    return Lab(ca, identities)
