"""The page at /ws-demo: a browser opens two WebSockets to this server and shows them.

The ticker's messages arrive with no request from the page (server push); the echo
comes back on the same connection the page sent on. The counts are also kept on
`document.body.dataset` (ticks, echoes, ...), which is what the browser test reads.
"""

from __future__ import annotations

from typing import Final

WS_DEMO_PAGE: Final = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>handshake-lab: WebSocket</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2em; max-width: 60em; }
  section { border: 1px solid #ccc; border-radius: 6px; padding: 0 1em 1em; margin: 1em 0; }
  ol { font-family: ui-monospace, monospace; font-size: 13px; max-height: 16em; overflow: auto; }
  .status { color: #555; }
</style>
</head>
<body>
<h1>WebSocket: one TCP connection, both directions</h1>
<p>Each box is one WebSocket: one HTTP request that became a long-lived, full-duplex
connection (<code>101 Switching Protocols</code>). Watch the server's event log as it runs.</p>
<section>
  <h2>/ws/ticker: the server pushes</h2>
  <p class="status" id="ticker-status">connecting...</p>
  <ol id="ticker"></ol>
</section>
<section>
  <h2>/ws/echo: what you send comes back</h2>
  <form id="echo-form">
    <input id="echo-input" value="hello from the browser" size="40">
    <button>send</button>
  </form>
  <p class="status" id="echo-status">connecting...</p>
  <ol id="echo"></ol>
</section>
<script>
"use strict";
const base = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
const interval = new URLSearchParams(location.search).get("interval_ms") || "500";
const data = document.body.dataset;
data.ticks = "0";
data.echoes = "0";

function show(list, text) {
  const item = document.createElement("li");
  item.textContent = new Date().toISOString().slice(11, 23) + "  " + text;
  document.getElementById(list).appendChild(item);
}

function watch(socket, name) {
  const status = document.getElementById(name + "-status");
  socket.onopen = () => {
    status.textContent = "open, extensions: " + (socket.extensions || "none");
    data[name + "Extensions"] = socket.extensions;
  };
  socket.onclose = (event) => {
    status.textContent = "closed: code " + event.code + " " + event.reason;
    data[name + "Close"] = String(event.code);
  };
  socket.onerror = () => { data[name + "Error"] = "1"; };
}

const ticker = new WebSocket(base + "/ws/ticker?interval_ms=" + interval);
watch(ticker, "ticker");
ticker.onmessage = (event) => {
  const tick = JSON.parse(event.data);
  data.ticks = String(tick.tick);
  show("ticker", "tick " + tick.tick + " (every " + tick.interval_ms + " ms, unasked)");
};

const echo = new WebSocket(base + "/ws/echo");
const input = document.getElementById("echo-input");
watch(echo, "echo");
echo.addEventListener("open", () => {
  echo.send(input.value);
  show("echo", "sent: " + input.value);
});
echo.onmessage = (event) => {
  data.echoes = String(Number(data.echoes) + 1);
  data.lastEcho = event.data;
  show("echo", "back: " + event.data);
};
document.getElementById("echo-form").onsubmit = (event) => {
  event.preventDefault();
  echo.send(input.value);
  show("echo", "sent: " + input.value);
};
</script>
</body>
</html>
"""
