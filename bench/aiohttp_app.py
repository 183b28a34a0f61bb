"""aiohttp.web serving the response our `/` route sends, for the throughput comparison.

The same body as ours and uvicorn's (`bench/body.py`), the same Content-Type; aiohttp adds
its own Date and Server (`Python/3.x aiohttp/3.x`, longer than ours: the benchmark records
each server's head size). No access log (aiohttp logs none unless logging is configured).
Runs on asyncio's default loop (no uvloop here), with aiohttp's C HTTP parser.

    .venv/bin/python -m bench.aiohttp_app --port 8000 [--certfile CERT --keyfile KEY]
"""

from __future__ import annotations

import argparse
import ssl
import sys
from typing import TYPE_CHECKING, Final

from aiohttp import web

from bench.body import BODY, CONTENT_TYPE
from bench.common import HOST

if TYPE_CHECKING:
    from collections.abc import Sequence

HEADERS: Final = {"Content-Type": CONTENT_TYPE.decode()}


async def index(request: web.Request) -> web.Response:
    return web.Response(body=BODY, headers=HEADERS)


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/{path:.*}", index)  # any path, as the ASGI app answers any
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aiohttp_app", description=__doc__)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--keyfile", help="and this key")
    args = parser.parse_args(argv)
    context = None
    if args.certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.certfile, args.keyfile)
    web.run_app(
        make_app(),
        host=args.host,
        port=args.port,
        ssl_context=context,
        access_log=None,
        print=None,
        shutdown_timeout=5.0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
