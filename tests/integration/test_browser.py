"""A real browser against our server: headless Chromium loads /ws-demo and runs its WebSockets.

The page opens /ws/ticker (the server pushes, unasked) and /ws/echo (it sends one message
and gets it back), and keeps its counts on `document.body.dataset`. The test drives
Chromium over the DevTools protocol (a WebSocket too, with the `websockets` library), reads
those counts, closes the browser and checks that the server saw the same from its side.

Every figure asserted comes from the page (what it sends, what it reports) or from the test
itself, never from a previous run. Everything listens on 127.0.0.1. The browser test skips
without Chromium (and fails in CI, where it must be installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from server.ws_demo import WS_DEMO_PAGE
from telemetry.events import Level, Name, Role
from tests.conftest import require_tool
from tests.helpers import sample, wait_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from websockets.asyncio.client import ClientConnection

    from tests.conftest import RunningServer

pytestmark = [pytest.mark.integration, pytest.mark.peer]

ECHO_TEXT: Final = "hello from the browser"  # the value of the page's input, sent on open
INTERVAL_MS: Final = 100  # the ticker's period, passed on in the page's query string
MIN_TICKS: Final = 3  # enough to tell "pushed on a schedule" from "one reply"
START_TIMEOUT_S: Final = 10.0  # Chromium prints its DevTools address (well under 1 s here)
CALL_TIMEOUT_S: Final = 5.0  # one DevTools command
PAGE_TIMEOUT_S: Final = 10.0  # the page's ticks and echo (about 0.5 s here)
EXIT_TIMEOUT_S: Final = 5.0  # Chromium exits once asked to
DRAIN_TIMEOUT_S: Final = 5.0  # the server reports every connection closed

DEVTOOLS_LINE: Final = re.compile(
    r"DevTools listening on (ws://127\.0\.0\.1:\d+/devtools/browser/\S+)"
)


# --- Chromium ------------------------------------------------------------------------------


@dataclass
class Chromium:
    """A headless Chromium started for one test, and its DevTools endpoint."""

    process: asyncio.subprocess.Process
    devtools_url: str  # ws://127.0.0.1:PORT/devtools/browser/<id>
    log: list[str] = field(default_factory=list)  # its stderr, for failure messages

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log[-lines:])


async def devtools_address(process: asyncio.subprocess.Process, log: list[str]) -> str:
    """Read Chromium's stderr up to the line that names its DevTools WebSocket."""
    assert process.stderr is not None
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            async for raw in process.stderr:
                line = raw.decode(errors="replace").rstrip()
                log.append(line)
                match = DEVTOOLS_LINE.search(line)
                if match:
                    return match.group(1)
    except TimeoutError:
        tail = "\n".join(log[-30:])
        raise AssertionError(
            f"Chromium named no DevTools address within {START_TIMEOUT_S} s:\n{tail}"
        ) from None
    status = await process.wait()
    tail = "\n".join(log[-30:])
    raise AssertionError(f"Chromium exited ({status}) before naming its DevTools address:\n{tail}")


async def keep_reading(process: asyncio.subprocess.Process, log: list[str]) -> None:
    """Read the rest of stderr, so that a chatty Chromium never blocks on a full pipe."""
    assert process.stderr is not None
    async for raw in process.stderr:
        log.append(raw.decode(errors="replace").rstrip())


async def stop(process: asyncio.subprocess.Process) -> None:
    """End Chromium (if the test has not) and every helper process it started."""
    if process.returncode is None:
        process.terminate()  # on SIGTERM Chromium shuts down in order, helpers included
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(EXIT_TIMEOUT_S):
                await process.wait()
    # Its zygotes, renderers and network service share the process group that
    # start_new_session gave it: a helper left behind (or all of them, if Chromium hangs)
    # ends here. Only processes of that group get the signal.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[Chromium]:
    """A headless Chromium with a fresh profile and a DevTools port of its own choosing."""
    path = require_tool("chromium")
    profile = tmp_path / "profile"
    home = tmp_path / "home"  # its caches and crash reports too stay out of the real $HOME
    profile.mkdir()
    home.mkdir()
    argv = [
        path,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-proxy-server",  # the page and its WebSockets go straight to 127.0.0.1
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "about:blank",
    ]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: see stop()
        env={**os.environ, "HOME": str(home)},
    )
    log: list[str] = []
    reader: asyncio.Task[None] | None = None
    try:
        url = await devtools_address(process, log)
        reader = asyncio.create_task(keep_reading(process, log))
        yield Chromium(process, url, log)
    finally:
        await stop(process)
        if reader is not None:
            # stderr ends when the last process holding it does; do not wait for a straggler.
            await asyncio.wait({reader}, timeout=2)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


class DevTools:
    """Just enough of the Chrome DevTools Protocol: one command at a time, events skipped."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self._ids = itertools.count(1)

    async def call(
        self, method: str, session_id: str | None = None, **params: Any
    ) -> dict[str, Any]:
        command_id = next(self._ids)
        command: dict[str, Any] = {"id": command_id, "method": method, "params": params}
        if session_id is not None:
            command["sessionId"] = session_id  # a page attached with flatten=True
        await self.connection.send(json.dumps(command))
        async with asyncio.timeout(CALL_TIMEOUT_S):
            while True:
                reply: dict[str, Any] = json.loads(await self.connection.recv())
                if reply.get("id") == command_id:
                    break
        assert "error" not in reply, f"DevTools {method} failed: {reply['error']}"
        result: dict[str, Any] = reply["result"]
        return result

    async def page_data(self, session_id: str) -> dict[str, str]:
        """The page's `document.body.dataset` (empty before the page has a body)."""
        reply = await self.call(
            "Runtime.evaluate",
            session_id,
            expression="JSON.stringify(document.body ? document.body.dataset : {})",
            returnByValue=True,
        )
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        data: dict[str, str] = json.loads(reply["result"]["value"])
        return data


async def wait_for_page(devtools: DevTools, session_id: str, chromium: Chromium) -> dict[str, str]:
    """Poll the page until it has MIN_TICKS ticks and an echo; its dataset then."""
    data: dict[str, str] = {}
    try:
        async with asyncio.timeout(PAGE_TIMEOUT_S):
            while True:
                data = await devtools.page_data(session_id)
                ended = {k: v for k, v in data.items() if k.endswith(("Error", "Close"))}
                assert not ended, f"a WebSocket of the page failed or closed early: {data}"
                if int(data.get("ticks", "0")) >= MIN_TICKS and int(data.get("echoes", "0")) >= 1:
                    return data
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(
            f"not within {PAGE_TIMEOUT_S} s: {MIN_TICKS} ticks and an echo; the page has "
            f"{data}\nChromium's log:\n{chromium.log_tail()}"
        ) from None


# --- helpers -------------------------------------------------------------------------------


# --- tests ---------------------------------------------------------------------------------


async def test_chromium_receives_pushed_ticks_and_an_echo(
    loopback_server: RunningServer, chromium: Chromium
) -> None:
    running = loopback_server
    timeline = running.observed.timeline
    registry = running.observed.metrics.registry
    page_url = f"{running.url}/ws-demo?interval_ms={INTERVAL_MS}"

    async with connect(chromium.devtools_url, max_size=None, proxy=None) as connection:
        devtools = DevTools(connection)
        target = await devtools.call("Target.createTarget", url="about:blank")
        attached = await devtools.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        session_id: str = attached["sessionId"]
        navigated = await devtools.call("Page.navigate", session_id, url=page_url)
        assert "errorText" not in navigated, f"{page_url}: {navigated['errorText']}"
        seen = await wait_for_page(devtools, session_id, chromium)
        # Close the browser in order, as a user would; the reply may not make it out.
        with contextlib.suppress(ConnectionClosed):
            await devtools.call("Browser.close")
    try:
        async with asyncio.timeout(EXIT_TIMEOUT_S):
            await chromium.process.wait()
    except TimeoutError:
        raise AssertionError(
            f"Chromium still runs {EXIT_TIMEOUT_S} s after Browser.close"
        ) from None

    # 1. The page: pushed ticks, its one message echoed, compression negotiated. Chromium
    #    offers permessage-deflate and our server accepts it.
    ticks = int(seen["ticks"])
    assert ticks >= MIN_TICKS
    assert seen["echoes"] == "1", seen  # it sends once, on open
    assert seen["lastEcho"] == ECHO_TEXT
    assert seen["echoExtensions"].startswith("permessage-deflate"), seen
    assert seen["tickerExtensions"].startswith("permessage-deflate"), seen

    # 2. The server agrees: both upgrades, from the page's origin, with deflate; the page's
    #    text came in on the echo connection (and nothing on the ticker's); it sent at least
    #    as many messages as the page counted.
    accepted = {e.attrs["path"]: e for e in timeline.named(Name.WS_UPGRADE_ACCEPTED, Role.SERVER)}
    assert sorted(accepted) == ["/ws/echo", "/ws/ticker"]
    assert timeline.count(Name.WS_UPGRADE_ACCEPTED, Role.SERVER) == 2
    for upgrade in accepted.values():
        assert upgrade.attrs["origin"] == running.url  # a browser sends the page's origin
        assert upgrade.attrs["extensions"] == "permessage-deflate"
    echo_conn = accepted["/ws/echo"].conn_id
    received = timeline.named(Name.WS_MESSAGE_RECEIVED, Role.SERVER)
    assert [(e.conn_id, e.attrs["type"], e.attrs["bytes"]) for e in received] == [
        (echo_conn, "text", len(ECHO_TEXT.encode()))
    ]
    # Negotiated and used: Chromium compresses every message once deflate is on.
    assert received[0].attrs["compressed"] is True
    messages_sent = sample(
        registry, "handshake_lab_ws_messages_total", role="server", direction="sent"
    )
    assert messages_sent >= ticks + 1

    # 3. Closed: both WebSockets reported, nothing left open on the server.
    active = "handshake_lab_ws_connections_active"
    await wait_until(
        lambda: (
            sample(registry, active, role="server") == 0
            and timeline.count(Name.WS_CONNECTION_CLOSED, Role.SERVER) == 2
            and running.server.open_connections == 0
        ),
        "the browser's WebSockets and connections closed on the server",
        DRAIN_TIMEOUT_S,
    )
    closed = {
        e.attrs["path"]: e.attrs for e in timeline.named(Name.WS_CONNECTION_CLOSED, Role.SERVER)
    }
    assert sorted(closed) == ["/ws/echo", "/ws/ticker"]
    # How a browser ends a page's WebSockets: the HTML standard has it start the closing
    # handshake with 1001 "going away" when the page goes, and Chromium does that for
    # Browser.close (also on SIGTERM, and even when only its main process is SIGKILLed:
    # the network service still sends the Close). Only when every Chromium process dies
    # at once does no Close frame come, and the server reports 1006. This test closes the
    # browser in order, so it is 1001, from the client, on both.
    for path, attrs in closed.items():
        assert (attrs["code"], attrs["closed_by"]) == (1001, "client"), (path, attrs)
    assert closed["/ws/echo"]["messages_received"] == 1
    assert closed["/ws/echo"]["messages_sent"] == 1
    assert closed["/ws/ticker"]["messages_sent"] >= ticks
    assert (
        sample(
            registry,
            "handshake_lab_ws_closes_total",
            role="server",
            closed_by="client",
            code="1001",
        )
        == 2
    )
    # A browser that follows the RFC gives the server nothing to warn about.
    problems = [
        (e.name.value, e.conn_id, e.attrs)
        for e in timeline.events
        if e.level in (Level.WARNING, Level.ERROR)
    ]
    assert problems == []


async def test_ws_demo_page_is_html(loopback_server: RunningServer) -> None:
    async with httpx.AsyncClient(
        base_url=loopback_server.url, trust_env=False, timeout=CALL_TIMEOUT_S
    ) as client:
        response = await client.get("/ws-demo")
    assert response.status_code == 200
    media_type = response.headers["content-type"].split(";")[0].strip()
    assert media_type == "text/html"
    assert response.charset_encoding == "utf-8"  # the page's <meta charset> says so too
    assert response.content == WS_DEMO_PAGE
