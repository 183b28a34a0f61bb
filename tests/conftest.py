"""Shared fixtures: a fresh telemetry bus per test and a real server on 127.0.0.1:0."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import CollectorRegistry

from netlab.netns import lab_unavailable_reason
from server.config import HTTPLimits, ServerConfig
from server.lifecycle import Server
from telemetry.bus import Bus
from telemetry.metrics import Metrics
from telemetry.timeline import Timeline

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

IN_CI = os.environ.get("CI") == "true"


def require_tool(name: str) -> str:
    """The path of a system tool; skip (or, in CI, fail) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (the test command installs it when run as root)"
        if IN_CI:
            pytest.fail(f"in CI every tool must be present: {message}")
        pytest.skip(message)
    return path


@pytest.fixture
def lab_possible() -> None:
    """Skip a test of the real lab network (namespaces, TUN) where it cannot run; in CI,
    where the test command runs as root, fail instead."""
    reason = lab_unavailable_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"in CI the lab network must run: {reason}")
        pytest.skip(reason)


@dataclass
class Observed:
    """A bus with a timeline and metrics on a fresh registry."""

    bus: Bus
    timeline: Timeline
    metrics: Metrics


@pytest.fixture
def observed() -> Observed:
    bus = Bus()
    timeline = Timeline()
    bus.subscribe(timeline)
    metrics = Metrics(CollectorRegistry())
    bus.subscribe(metrics.observe)
    return Observed(bus, timeline, metrics)


@dataclass
class RunningServer:
    server: Server
    observed: Observed

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port


def make_config(**settings: Any) -> ServerConfig:
    """A loopback config on a free port; keywords override HTTPLimits or ServerConfig fields."""
    limit_names = set(HTTPLimits.__dataclass_fields__)
    limits = {k: v for k, v in settings.items() if k in limit_names}
    rest = {k: v for k, v in settings.items() if k not in limit_names}
    return ServerConfig(host="127.0.0.1", port=0, limits=HTTPLimits(**limits), **rest)


@pytest.fixture
def server_limits() -> dict[str, float]:
    """Override in a test module (or with parametrize) to change the server's limits."""
    return {}


@pytest.fixture
async def loopback_server(
    observed: Observed, server_limits: dict[str, float]
) -> AsyncIterator[RunningServer]:
    server = Server(make_config(**server_limits), observed.bus)
    await server.start()
    try:
        yield RunningServer(server, observed)
    finally:
        await server.shutdown(timeout_s=5)


@pytest.fixture
async def tls_server(observed: Observed, tmp_path: Path) -> AsyncIterator[Server]:
    """A server with its toy-TLS and real-TLS listeners too (ports 0), certificates in
    `tmp_path / "certs"`."""
    config = make_config(toy_tls_port=0, real_tls_port=0, certs_dir=tmp_path / "certs")
    server = Server(config, observed.bus)
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown(timeout_s=5)
