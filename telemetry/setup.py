"""Wiring the sinks from command-line options: logs, metrics endpoint, timeline."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, TextIO

from prometheus_client import CollectorRegistry, start_http_server

from telemetry.bus import Bus
from telemetry.jsonlog import LEVELS, LogSink
from telemetry.metrics import Metrics

if TYPE_CHECKING:
    import argparse
    import threading
    from wsgiref.simple_server import WSGIServer


def add_telemetry_arguments(parser: argparse.ArgumentParser, *, metrics_port: int) -> None:
    group = parser.add_argument_group("telemetry")
    group.add_argument(
        "--log-format",
        choices=["auto", "json", "text", "off"],
        default="auto",
        help="event log format: one JSON object per line, or readable text; "
        "auto = text on a terminal, JSON otherwise (default: %(default)s)",
    )
    group.add_argument(
        "--log-file", metavar="PATH", help="append the event log to PATH instead of stderr"
    )
    group.add_argument(
        "--log-level",
        choices=LEVELS,
        default="info",
        help="the least level logged; debug adds an event per WebSocket message and ping "
        "(metrics count them at any level) (default: %(default)s)",
    )
    group.add_argument(
        "--metrics-port",
        type=int,
        default=metrics_port,
        metavar="PORT",
        help="serve Prometheus metrics on this port at /metrics; 0 turns metrics off "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address of the metrics endpoint (default: %(default)s, loopback only)",
    )


class Telemetry:
    """A bus with the sinks the options asked for. `close()` flushes and stops them."""

    def __init__(self, bus: Bus | None = None) -> None:
        self.bus = bus or Bus()
        self.metrics: Metrics | None = None
        self.log: LogSink | None = None
        self._log_file: TextIO | None = None
        self._metrics_server: tuple[WSGIServer, threading.Thread] | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Telemetry:
        telemetry = cls()
        telemetry.open_log(args.log_format, args.log_file, args.log_level)
        if args.metrics_port:
            telemetry.enable_metrics()
            telemetry.serve_metrics(args.metrics_host, args.metrics_port)
        return telemetry

    def open_log(self, fmt: str, path: str | None = None, level: str = "info") -> None:
        if fmt == "off":
            return
        if path:
            self._log_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
            stream: TextIO = self._log_file
        else:
            stream = sys.stderr
        interactive = stream.isatty()
        if fmt == "auto":
            fmt = "text" if interactive else "json"
        self.log = LogSink(stream, fmt, flush_each=interactive, level=level)
        self.bus.subscribe(self.log)

    def enable_metrics(self, registry: CollectorRegistry | None = None) -> Metrics:
        self.metrics = Metrics(registry or CollectorRegistry())
        self.bus.subscribe(self.metrics.observe)
        return self.metrics

    def serve_metrics(self, host: str, port: int) -> int:
        """Start the /metrics endpoint (a thread of prometheus-client); returns its port."""
        assert self.metrics is not None
        server, thread = start_http_server(port, addr=host, registry=self.metrics.registry)
        self._metrics_server = (server, thread)
        return int(server.server_address[1])

    async def flush_log_every(self, interval_s: float) -> None:
        """Flush the log every `interval_s` until cancelled: a file log is then never more
        than that behind (for `tail -f`), and a write per line is not paid for it."""
        while True:
            await asyncio.sleep(interval_s)
            if self.log is not None:
                with contextlib.suppress(OSError):  # a full disk: the next flush may pass
                    self.log.flush()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._metrics_server is not None:
            server, thread = self._metrics_server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._metrics_server = None
