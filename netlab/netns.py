"""Network namespaces and TUN devices: making them, working inside them, and removing them.

Theory of operation: each lab has two named network namespaces, `hlab-<pid>-<n>-c` (the
client) and `hlab-<pid>-<n>-s` (the server), made with `ip netns add` (which bind-mounts
them under /run/netns). The owning process's PID in the name is what makes cleanup safe:
a lab deletes, when it starts, every `hlab-<pid>-*` namespace whose process is gone (a
crashed or SIGKILLed lab), and never touches a living process's namespaces. Two labs never
clash: the PID and a per-process counter make the names unique, and since every lab has
namespaces of its own, all of them may use the same addresses inside.

Python 3.11 has no `os.setns`, so libc's setns(2) is called through ctypes, and only on
threads of our own: setns moves only the calling thread, so no other code ever runs in the
wrong namespace (pool threads are never used for this). `in_namespace` does one call on a
fresh thread that ends with it; a `NamespaceThread` stays in its namespace and serves calls
until closed, because starting a thread costs ~0.3 ms here and a socket per HTTP/1.0
request must not add that to the connect time the lab measures (a call costs ~30 µs).
What a function makes there keeps its namespace for good: a socket created in the client
namespace connects from it even when the main thread's event loop drives it, and a TUN
device created there lives there.

TUN devices are not persistent: a device exists while its file descriptor is open, so
closing the fds (or the process dying) removes them. Deleting a namespace is what
`ip netns delete` does, umount2(MNT_DETACH) and unlink, done here directly so that it
is quick and works even while the event loop is being torn down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import itertools
import os
import queue
import re
import shutil
import struct
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "NS_DIR",
    "PREFIX",
    "NamespaceThread",
    "NetnsError",
    "communicate",
    "create_namespace",
    "delete_namespace",
    "in_namespace",
    "ip",
    "lab_unavailable_reason",
    "list_namespaces",
    "make_tun",
    "new_namespace_names",
    "open_tun",
    "sweep_stale",
]

T = TypeVar("T")

NS_DIR: Final = Path("/run/netns")
PREFIX: Final = "hlab-"
CLONE_NEWNET: Final = 0x40000000
MNT_DETACH: Final = 2
TUNSETIFF: Final = 0x400454CA
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
_NAME = re.compile(r"^hlab-(\d+)-(\d+)-[cs]$")
_counter = itertools.count(1)
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NetnsError(RuntimeError):
    """A namespace or device could not be made or configured."""


def lab_unavailable_reason() -> str | None:
    """Why the lab network cannot run here, as one sentence; None when it can."""
    if os.geteuid() != 0:
        return (
            "the lab network needs root: it makes network namespaces and TUN devices "
            "(run as root, e.g. with sudo)"
        )
    if not os.path.exists("/proc/self/ns/net"):
        return "the lab network needs a kernel with network namespaces (CONFIG_NET_NS)"
    if not os.path.exists("/dev/net/tun"):
        return "the lab network needs /dev/net/tun (the kernel's TUN driver), which is missing"
    if shutil.which("ip") is None:
        return "the lab network needs the `ip` command (Debian package iproute2)"
    return None


def new_namespace_names() -> tuple[str, str]:
    """(client, server) namespace names, unique among all labs on this machine."""
    n = next(_counter)
    return f"{PREFIX}{os.getpid()}-{n}-c", f"{PREFIX}{os.getpid()}-{n}-s"


def _enter(ns: str) -> None:
    """Move the calling thread into network namespace `ns`."""
    with open(NS_DIR / ns, "rb") as handle:
        if _libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise NetnsError(f"setns into {ns}: {os.strerror(code)}")


def in_namespace(ns: str, fn: Callable[[], T]) -> T:
    """Call `fn` on a short-lived thread that has entered network namespace `ns`."""
    result: Future[T] = Future()

    def enter_and_call() -> None:
        try:
            _enter(ns)
            result.set_result(fn())
        except BaseException as exc:  # handed to the caller's thread
            result.set_exception(exc)

    thread = threading.Thread(target=enter_and_call, name=f"netns-{ns}")
    thread.start()
    thread.join()
    return result.result()


class NamespaceThread:
    """A thread that lives in network namespace `ns` and runs the functions given to `call`.

    A daemon thread, so a process that never closes it can still exit; while it lives it
    keeps the namespace alive (the kernel frees it after `close`)."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        entered: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._serve, args=(entered,), name=f"netns-{ns}", daemon=True
        )
        self._thread.start()
        entered.result()  # raises if setns failed (and the thread has ended)

    def _serve(self, entered: Future[None]) -> None:
        try:
            _enter(self.ns)
        except BaseException as exc:
            entered.set_exception(exc)
            return
        entered.set_result(None)
        while (item := self._queue.get()) is not None:
            result, fn = item
            try:
                result.set_result(fn())
            except BaseException as exc:  # handed to the caller's thread
                result.set_exception(exc)

    def call(self, fn: Callable[[], T]) -> T:
        if not self._thread.is_alive():
            raise NetnsError(f"the thread for namespace {self.ns} has been closed")
        result: Future[T] = Future()
        self._queue.put((result, fn))
        return result.result()

    def close(self) -> None:
        """End the thread (after the calls already queued). Safe to call twice."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=5)


def open_tun(ns: str, name: str) -> int:
    """Create TUN device `name` inside `ns` (no packet-info header) and return its
    non-blocking fd; the device lives as long as the fd."""
    return in_namespace(ns, lambda: make_tun(name))


def make_tun(name: str) -> int:
    """Create TUN device `name` in the calling thread's namespace; its non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except BaseException:
        os.close(fd)
        raise
    return fd


async def ip(*args: str) -> str:
    """Run `ip ARGS...`; its stdout, or NetnsError with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        "ip",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await communicate(proc)
    if proc.returncode != 0:
        command = " ".join(("ip", *args))
        raise NetnsError(f"`{command}` failed: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def communicate(proc: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    """`proc.communicate()`, but a cancelled caller does not leave the child running: an
    `ip netns add` finishing after our cleanup would leave a namespace behind."""
    try:
        return await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise


async def create_namespace(name: str) -> None:
    await ip("netns", "add", name)


def delete_namespace(name: str) -> bool:
    """Remove a named namespace as `ip netns delete` does; True if it was there.

    The kernel frees the namespace itself once nothing (no process, socket or fd) refers
    to it any more."""
    path = NS_DIR / name
    if not os.path.lexists(path):
        return False
    if _libc.umount2(str(path).encode(), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not mounted (half made)
            raise NetnsError(f"umount {path}: {os.strerror(code)}")
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    """Named namespaces under /run/netns whose names start with `prefix`."""
    try:
        return sorted(p.name for p in NS_DIR.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def _process_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # A zombie (killed, not yet reaped) holds nothing any more: its lab is dead too.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def sweep_stale() -> list[str]:
    """Delete every lab namespace whose owning process is gone; the names deleted."""
    swept = []
    for name in list_namespaces():
        match = _NAME.match(name)
        if match and not _process_alive(int(match.group(1))) and delete_namespace(name):
            swept.append(name)
    return swept
