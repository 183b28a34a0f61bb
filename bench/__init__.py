"""Benchmarks of issue 2: server throughput under wrk, client latency against nginx.

Run from the repository root with the project's venv:

    .venv/bin/python -m bench.server_throughput --help
    .venv/bin/python -m bench.client_latency --help
    .venv/bin/python -m bench.profile_server --help

`docs/benchmarks.md` explains the method and holds the results.
"""
