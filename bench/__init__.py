"""Benchmarks of issue 2: server throughput under wrk, client latency against nginx.

Run from the repository root with the project's venv:

    .venv/bin/python -m bench.server_throughput --help   # our server vs uvicorn, under wrk
    .venv/bin/python -m bench.client_latency --help      # our client vs aiohttp and httpx
    .venv/bin/python -m bench.profile_server --help      # py-spy profile of our server
    .venv/bin/python -m bench.hot_paths --help           # µs per hot-path operation

Helpers: `common` (processes, pinning, /proc readings), `wrk` (running wrk), `body`,
`asgi_app` (the uvicorn app) and `h11_hello` (a bare asyncio + h11 server).
`docs/benchmarks.md` explains the method and holds the results.
"""
