"""A toy TLS you can read, watch and attack (not TLS: see handshake_tls/README.md)."""
