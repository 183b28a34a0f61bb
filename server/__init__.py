"""The lab's asyncio HTTP server: HTTP/1.0, HTTP/1.1 keep-alive, with telemetry."""

from server.app import App, Request, Response
from server.config import HTTPLimits, ServerConfig
from server.lifecycle import Server, serve_until_signalled

__all__ = [
    "App",
    "HTTPLimits",
    "Request",
    "Response",
    "Server",
    "ServerConfig",
    "serve_until_signalled",
]
