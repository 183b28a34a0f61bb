"""The lab's asyncio HTTP client: HTTP/1.0 and HTTP/1.1 keep-alive, with timings."""

from client.client import IDEMPOTENT_METHODS, HTTPClient, RequestError
from client.pool import Response, Timings

__all__ = ["IDEMPOTENT_METHODS", "HTTPClient", "RequestError", "Response", "Timings"]
