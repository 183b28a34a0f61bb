"""handshake-lab: watch connections happen. The CLI and what server and client share."""

__all__ = ["__version__"]
__version__ = "0.1.0"
