"""`--explain`: the toy-TLS handshake told step by step, as the client's events arrive."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TextIO

from handshake_tls import FOR_LEARNING_ONLY
from telemetry.events import Name, Role

if TYPE_CHECKING:
    from telemetry.events import Event


class HandshakeExplainer:
    """A bus sink: prints the client's TLS events as a lesson, with the time of each step."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._started = 0.0

    def __call__(self, event: Event) -> None:
        if event.role is not Role.CLIENT or event.layer != "tls":
            return
        now = time.perf_counter()
        if event.name is Name.TLS_HANDSHAKE_STARTED:
            self._started = now
            self._say(
                0.0,
                f"toy TLS handshake with {event.remote} (connection #{event.conn_id}); "
                f"{FOR_LEARNING_ONLY}",
            )
            return
        elapsed_ms = (now - self._started) * 1000
        a = event.attrs
        match event.name:
            case Name.TLS_HANDSHAKE_STEP:
                for line in _step_lines(a):
                    self._say(elapsed_ms, line)
                    elapsed_ms = -1.0  # the time once per step
            case Name.TLS_HANDSHAKE_COMPLETED:
                self._say(
                    elapsed_ms,
                    f"handshake complete: {a['suite']}, key exchange {a['key_exchange']}, "
                    f"{a['duration_s'] * 1000:.3f} ms; from here every record is sealed",
                )
            case Name.TLS_HANDSHAKE_FAILED:
                self._say(elapsed_ms, f"handshake FAILED ({a['kind']}): {a['reason']}")
            case _:
                self._say(elapsed_ms, f"{event.name.value}: {a}")

    def _say(self, elapsed_ms: float, text: str) -> None:
        clock = f"{elapsed_ms:8.3f} ms" if elapsed_ms >= 0 else " " * 11
        self.stream.write(f"  tls {clock}  {text}\n")
        self.stream.flush()


def _step_lines(a: dict[str, Any]) -> list[str]:
    step = a["step"]
    if step == "client_hello":
        return [
            f"-> ClientHello: client random A = {a['client_random']}",
            f"   offers {', '.join(a['suites'])}; key exchange {a['key_exchange']}; "
            f"server name {a['server_name']}",
        ]
    if step == "server_hello":
        return [f"<- ServerHello: server random B = {a['server_random']}; chose {a['suite']}"]
    if step == "certificate":
        return [
            f"<- Certificate: {a['subject']}, issued by {a['issuer']}",
            f"   valid {a['not_before'][:10]} to {a['not_after'][:10]}; names "
            f"{', '.join(a['names'])}; {a['key_type']} key",
            f"   SHA-256 fingerprint {a['fingerprint_sha256']}",
            "   verified: signed by the CA we trust, valid today, names the server we asked for",
        ]
    if step == "server_key_exchange":
        return [f"<- ServerKeyExchange: X25519 share {a['share'][:16]}...; signature verified"]
    if step == "client_key_exchange":
        if "premaster_bytes" in a:
            return [
                f"-> ClientKeyExchange: premaster secret C, {a['premaster_bytes']} random bytes, "
                f"encrypted with {a['encrypted_with']}: {a['encrypted_bytes']} bytes"
            ]
        return [f"-> ClientKeyExchange: our X25519 share {a['share'][:16]}..."]
    if step == "keys":
        return [
            "   keys from HKDF-SHA256(secret, A, B); SHA-256 fingerprints: "
            f"master {a['master_fingerprint']}, client write "
            f"{a['client_write_key_fingerprint']}, server write {a['server_write_key_fingerprint']}"
        ]
    if step == "finished":
        if a.get("sent"):
            return ["-> Finished (sealed): HMAC over every handshake message so far"]
        return ["<- Finished (sealed): the server's HMAC matches our transcript"]
    return [f"   {step}: {a}"]  # pragma: no cover (every step is named above)
