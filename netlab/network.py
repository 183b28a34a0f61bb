"""`LabNetwork`: two namespaces, a TUN device in each, and the wire between them.

Theory of operation: `async with LabNetwork(bus, delay_s=0.02) as lab:` is a checklist.
On entry: refuse with a clear reason if the lab cannot run here; delete what crashed labs
left behind; make the client and server namespaces; create the TUN device `wire0` inside
each (the fd is ours: the device lives as long as it does); give the client 10.77.0.1/24
and the server 10.77.0.2/24, turn IPv6 off on the devices (its router solicitations would
be noise on the wire), bring the devices and loopback up; start the wire. Each namespace
routes the /24 into its TUN device, so whatever the client sends to 10.77.0.2 comes out of
the client's device, crosses the wire, and goes into the server's.

On exit, whatever happened inside (an exception, a cancellation, Ctrl-C under
`asyncio.run`) and however far entry got: stop the wire, close the TUN fds (the devices
vanish), close the pcap, delete both namespaces. An atexit hook deletes namespaces a
process leaves behind without exiting its `async with`; a SIGKILLed process leaves them
to the next lab's sweep (names carry the owner's PID, see `netlab.netns`).

Sockets for the lab come from `socket()`, `make_client_socket()` and `listen_socket()`,
made inside the right namespace; the lab's HTTP server and client take them
(`Server(listen_socket=...)`, `open_tcp_stream(make_socket=...)`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, Self

from netlab import netns
from netlab.pcap import PcapWriter
from netlab.rules import parse_rules
from netlab.wire import Wire
from telemetry.events import Role

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from netlab.rules import DropRule
    from telemetry.bus import Bus

__all__ = ["CLIENT_IP", "DEVICE", "SERVER_IP", "LabCommandError", "LabNetwork", "LabUnavailable"]

CLIENT_IP: Final = "10.77.0.1"
SERVER_IP: Final = "10.77.0.2"
PREFIX_LEN: Final = 24
DEVICE: Final = "wire0"  # the same name in both namespaces: each has its own devices
# `LabNetwork.socket` shadows the module inside the class body: name what we need here.
Socket = socket.socket
AF_INET: Final = socket.AF_INET
SOCK_STREAM: Final = socket.SOCK_STREAM
_SYSCTL_KEY = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_-]+)+$")

# Namespaces made by this process and not yet deleted, for the atexit hook.
_live_namespaces: set[str] = set()


@atexit.register
def _delete_leftovers() -> None:
    for name in list(_live_namespaces):
        with contextlib.suppress(OSError):
            netns.delete_namespace(name)
        _live_namespaces.discard(name)


class LabUnavailable(RuntimeError):
    """The lab network cannot run on this machine (not root, no TUN, no `ip`)."""


class LabCommandError(RuntimeError):
    """A command run inside a namespace failed; the message holds its stderr."""


class LabNetwork:
    """Client and server namespaces joined by the lab's wire. Use `async with`."""

    def __init__(
        self,
        bus: Bus,
        *,
        delay_s: float = 0.0,
        jitter_s: float = 0.0,
        loss: float = 0.0,
        drop: Sequence[DropRule | str] = (),
        pcap: Path | None = None,
        seed: int | None = None,
        precise: bool = False,
    ) -> None:
        if delay_s < 0 or jitter_s < 0:
            raise ValueError("delay_s and jitter_s must not be negative")
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss is a probability from 0 to 1, not {loss}")
        self.bus = bus
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.loss = loss
        self.drop = parse_rules(drop)  # bad rules fail here, before anything is made
        self.precise = precise  # see Wire: spin to each packet's moment (for measuring)
        self.pcap_path = pcap
        self.seed = seed
        self.client_ns = ""
        self.server_ns = ""
        self.client_ip = CLIENT_IP
        self.server_ip = SERVER_IP
        self.device = DEVICE
        self._fds: dict[Role, int] = {}
        self._threads: dict[Role, netns.NamespaceThread] = {}
        self._pcap_file: BinaryIO | None = None
        self._wire: Wire | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        reason = netns.lab_unavailable_reason()
        if reason is not None:
            raise LabUnavailable(reason)
        netns.sweep_stale()
        self.client_ns, self.server_ns = netns.new_namespace_names()
        try:
            await self._build()
        except BaseException:
            self._teardown()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._teardown()

    async def _build(self) -> None:
        for side, ns, address in (
            (Role.CLIENT, self.client_ns, self.client_ip),
            (Role.SERVER, self.server_ns, self.server_ip),
        ):
            _live_namespaces.add(ns)
            await netns.create_namespace(ns)
            thread = self._threads[side] = netns.NamespaceThread(ns)
            self._fds[side] = thread.call(functools.partial(netns.make_tun, self.device))
            # IPv6 off before the link comes up, so no router solicitation is ever sent.
            self._write_sysctl(side, f"net.ipv6.conf.{self.device}.disable_ipv6", "1")
            await netns.ip("-n", ns, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", self.device)
            await netns.ip("-n", ns, "link", "set", self.device, "up")
            await netns.ip("-n", ns, "link", "set", "lo", "up")
        if self.pcap_path is not None:
            self._pcap_file = await asyncio.to_thread(self.pcap_path.open, "wb")
        self._wire = Wire(
            self.bus,
            self._fds,
            {Role.CLIENT: self.client_ip, Role.SERVER: self.server_ip},
            delay_s=self.delay_s,
            jitter_s=self.jitter_s,
            loss=self.loss,
            rules=self.drop,
            pcap=PcapWriter(self._pcap_file) if self._pcap_file is not None else None,
            seed=self.seed,
            precise=self.precise,
        )
        self._wire.start()

    def _teardown(self) -> None:
        """Undo whatever `_build` got done, in reverse; never raises for what is missing.

        Synchronous on purpose: nothing here waits, so a cancellation cannot cut it short."""
        if self._wire is not None:
            self._wire.stop()
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        for thread in self._threads.values():
            thread.close()  # it holds its namespace alive while it runs
        self._threads.clear()
        if self._pcap_file is not None:
            self._pcap_file.close()
            self._pcap_file = None
        for ns in (self.client_ns, self.server_ns):
            if ns:
                with contextlib.suppress(FileNotFoundError):
                    netns.delete_namespace(ns)
                _live_namespaces.discard(ns)

    # -- the wire ------------------------------------------------------------------------

    @property
    def wire(self) -> Wire:
        if self._wire is None:
            raise RuntimeError("the lab network is not running (use `async with`)")
        return self._wire

    def namespace(self, side: Role) -> str:
        return self.client_ns if side is Role.CLIENT else self.server_ns

    def ip_of(self, side: Role) -> str:
        return self.client_ip if side is Role.CLIENT else self.server_ip

    def inject(self, packet: bytes, toward: Role) -> None:
        """Write a raw IPv4 packet into `toward`'s TUN device, as if it came off the wire
        (e.g. SYNs from spoofed 10.77.0.x addresses into the server)."""
        self.wire.inject(packet, toward)

    # -- sockets -------------------------------------------------------------------------

    def socket(self, side: Role, family: int = AF_INET, type: int = SOCK_STREAM) -> Socket:
        """A new socket that belongs to `side`'s namespace for good."""
        self._require_running()
        # A TCP socket says so in `proto`, as getaddrinfo's do: asyncio turns Nagle off
        # (TCP_NODELAY) only on sockets whose proto is IPPROTO_TCP, and the lab must
        # behave like an ordinary connection.
        proto = socket.IPPROTO_TCP if type == SOCK_STREAM else 0
        return self._threads[side].call(lambda: Socket(family, type, proto))

    def make_client_socket(self, family: int) -> Socket:
        """A `SocketFactory` for `open_tcp_stream` / `HTTPClient(make_socket=...)`."""
        return self.socket(Role.CLIENT, family)

    def listen_socket(self, port: int) -> Socket:
        """A TCP socket bound to server_ip:port in the server's namespace, not yet listening
        (`asyncio.start_server(sock=...)` calls listen with its backlog)."""
        sock = self.socket(Role.SERVER)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.server_ip, port))
        except BaseException:
            sock.close()
            raise
        return sock

    # -- commands and settings inside a namespace ----------------------------------------

    async def run(self, side: Role, *argv: str) -> str:
        """Run a command inside `side`'s namespace (`ip netns exec`); its stdout.

        Raises:
            LabCommandError: it exited non-zero (the message holds its stderr).
        """
        self._require_running()
        proc = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            self.namespace(side),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await netns.communicate(proc)  # kills the command if we are cancelled
        if proc.returncode != 0:
            raise LabCommandError(
                f"{' '.join(argv)} in {side} namespace exited {proc.returncode}: "
                f"{err.decode(errors='replace').strip()}"
            )
        return out.decode(errors="replace")

    async def sysctl(self, side: Role, key: str, value: str) -> None:
        """Set a per-namespace sysctl, e.g. `net.ipv4.tcp_syncookies` = `"0"`."""
        self._require_running()
        self._write_sysctl(side, key, value)

    def read_sysctl(self, side: Role, key: str) -> str:
        self._require_running()
        path = _sysctl_path(key)
        return self._threads[side].call(path.read_text).strip()

    def _write_sysctl(self, side: Role, key: str, value: str) -> None:
        # /proc/sys/net is resolved per thread's namespace, so a write from the thread in
        # side's namespace sets that namespace's value; no subprocess needed.
        path = _sysctl_path(key)
        self._threads[side].call(lambda: path.write_text(f"{value}\n"))

    def _require_running(self) -> None:
        if not self._fds:
            raise RuntimeError("the lab network is not running (use `async with`)")


def _sysctl_path(key: str) -> Path:
    if not _SYSCTL_KEY.match(key):
        raise ValueError(f"{key!r} is not a sysctl key like net.ipv4.tcp_syncookies")
    return Path("/proc/sys", *key.split("."))
