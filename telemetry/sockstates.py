"""The kernel's view of the lab's sockets, sampled with `ss` (iproute2).

Theory of operation: every `interval_s` the sampler runs `ss -tanoiH` filtered to the lab's
ports (as source or destination port, so both ends of a loopback connection show), parses
its output into `SocketSample`s, and compares them with the previous sample, socket by
socket (a socket is its 4-tuple: local and remote address). Each difference is one
`kernel.state.changed` event, `from` and `to` in node_exporter's state names, `closed`
standing for "no socket" (new in this sample, or gone from it). After the changes comes
one `kernel.sample.taken` (debug) with the counts by role and state, the listen queues,
and what the sample cost, from which `Metrics` sets its gauges; so metrics, logs and the
timeline hear the kernel on the same bus as the application.

What a sample cannot see: a state that lasts less than the interval (a socket may go from
ESTABLISHED to TIME_WAIT between samples, reported as one change), and a 4-tuple reused
within one interval. A 4-tuple seen again in a state its old socket cannot reach (TIME_WAIT
then ESTABLISHED) is reported as the old socket closing and a new one appearing.

Cost: `ss` walks every TCP socket of the namespace, so a sample costs more the more sockets
there are (~3 ms with none, ~30 ms with 14,000 in TIME_WAIT, docs/benchmarks.md). `Pacer`
keeps the sampler within a CPU budget: after a sample that cost `c` seconds of CPU (ss's
own, from the reaped child's rusage, plus this process's while the sample ran: an upper
bound, since the process may do other work meanwhile), the next starts no sooner
than `c / cpu_budget` after this one began. `ss` runs as a child process the loop awaits; large
outputs are parsed in a worker thread and their events emitted in slices, so the event
loop keeps serving while the kernel is sampled.

The parsing (`parse_ss`), the diffing (`SocketTracker`) and the pacing (`Pacer`) are pure;
only `sample_ss` and `SocketSampler` touch processes and the loop.
"""

from __future__ import annotations

import asyncio
import functools
import re
import resource
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Self

from telemetry.events import Event, Level, Name, Role

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Sequence
    from types import TracebackType

    from telemetry.bus import Bus

# node_exporter's names (node_tcp_connection_states{state=...}) for the states `ss` prints.
STATE_NAMES: Final = {
    "ESTAB": "established",
    "SYN-SENT": "syn_sent",
    "SYN-RECV": "syn_recv",
    "FIN-WAIT-1": "fin_wait1",
    "FIN-WAIT-2": "fin_wait2",
    "TIME-WAIT": "time_wait",
    "CLOSE-WAIT": "close_wait",
    "LAST-ACK": "last_ack",
    "CLOSING": "closing",
    "LISTEN": "listen",
}
# The states the gauge always has a series for (zero when no socket is in it).
TCP_STATES: Final = tuple(STATE_NAMES.values())
CLOSED: Final = "closed"  # no socket: the `from` of a new one, the `to` of a gone one
UNKNOWN: Final = "unknown"  # the `from` of a socket already there at the first sample

# RFC 9293 §3.3.2: the states each state can reach, directly or through states a sample
# may miss. A 4-tuple found in a state its previous one cannot reach is a new socket.
_CLOSING: Final = frozenset(
    {"fin_wait1", "fin_wait2", "closing", "time_wait", "close_wait", "last_ack"}
)
_LATER: Final[dict[str, frozenset[str]]] = {
    "syn_sent": _CLOSING | {"established", "syn_recv"},  # syn_recv: a simultaneous open
    "syn_recv": _CLOSING | {"established"},
    "established": _CLOSING,
    "fin_wait1": frozenset({"fin_wait2", "closing", "time_wait"}),
    "fin_wait2": frozenset({"time_wait"}),
    "closing": frozenset({"time_wait"}),
    "close_wait": frozenset({"last_ack"}),
    "last_ack": frozenset(),
    "time_wait": frozenset(),
    "listen": frozenset(),
}

# Outputs larger than this are parsed in a worker thread (a thread hop costs ~0.1 ms;
# parsing 64 KiB, ~400 sockets, ~1 ms) and their events emitted in slices of this many.
THREAD_PARSE_BYTES: Final = 64 * 1024
EMIT_SLICE: Final = 500
SS_TIMEOUT_S: Final = 10.0
MAX_FAILURES: Final = 4  # failed ss runs in a row (with backoff between) before giving up

_RTT = re.compile(r"\brtt:(\d+(?:\.\d+)?)/")
_CWND = re.compile(r"\bcwnd:(\d+)")
_RETRANS = re.compile(r"\bretrans:\d+/(\d+)")
_TIME = re.compile(r"(?:(\d+)min)?(?:(\d+)(?:sec|\.))?(?:(\d+)ms)?")


@dataclass(frozen=True, slots=True)
class SocketSample:
    """One TCP socket as `ss -tanoi` saw it.

    `state` is node_exporter's name for it ("established", "time_wait", ...); a state ss
    prints that node_exporter has no name for is lower-cased with '-' as '_'. For a
    LISTEN socket `recv_q` is the accept queue's length and `send_q` its limit (the
    backlog). `timer` is ss's timer name ("on": retransmission, "keepalive", "timewait",
    "persist": zero-window probes) and `retransmits` the count ss shows with it (for
    keepalive, the probes sent). `interface` is the device the socket is bound to or the
    scope of its address (ss's `%lo`), not part of `local`.
    """

    state: str
    local: str
    remote: str
    recv_q: int
    send_q: int
    timer: str | None = None
    timer_left_s: float | None = None
    retransmits: int | None = None
    rtt_ms: float | None = None
    cwnd: int | None = None
    retrans_total: int | None = None  # -i "retrans:now/total": retransmissions ever
    interface: str | None = None

    @property
    def local_port(self) -> int:
        return _port(self.local)

    @property
    def remote_port(self) -> int:
        return _port(self.remote)

    @property
    def key(self) -> tuple[str, str]:
        return (self.local, self.remote)


def _port(address: str) -> int:
    port = address.rpartition(":")[2]
    return int(port) if port.isdigit() else 0  # "*" (a listener's peer): no port


def state_name(ss_state: str) -> str:
    """`ESTAB` → `established`; a state we do not know is kept, in the same spelling."""
    return STATE_NAMES.get(ss_state) or ss_state.lower().replace("-", "_")


def parse_time_s(text: str) -> float | None:
    """ss's timer format (iproute2 `print_ms_timer`) in seconds: `119min`, `59sec`, `528ms`,
    and `1.520ms`, which is 1 s and 520 ms (seconds, a dot, then milliseconds)."""
    match = _TIME.fullmatch(text)
    if match is None:
        return None
    minutes, seconds, millis = (int(group) if group else 0 for group in match.groups())
    return minutes * 60 + seconds + millis / 1000


def _address(text: str) -> tuple[str, str | None] | None:
    """`[::1]%lo:8080` → (`[::1]:8080`, `lo`); None when it is not an address with a port."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not (port.isdigit() or port == "*"):
        return None
    if "%" not in host:
        return text, None
    if host.startswith("[") and "%" in host.partition("]")[0]:  # [fe80::1%eth0]
        inside, _, rest = host[1:].partition("]")
        addr, _, interface = inside.partition("%")
        return f"[{addr}]{rest}:{port}", interface
    host, _, interface = host.partition("%")
    return f"{host}:{port}", interface


def _timer(fields: Sequence[str]) -> tuple[str | None, float | None, int | None]:
    """`timer:(timewait,59sec,0)` among a line's trailing fields → name, seconds left, count."""
    for field in fields:
        if field.startswith("timer:("):
            return _timer_field(field)
    return None, None, None


@functools.lru_cache(maxsize=1024)  # thousands of TIME_WAITs share a few hundred timer fields
def _timer_field(field: str) -> tuple[str | None, float | None, int | None]:
    parts = field[7:-1].split(",") if field.endswith(")") else ()
    if len(parts) != 3:
        return None, None, None
    name, left, count = parts
    return name or None, parse_time_s(left), int(count) if count.isdigit() else None


def _info(line: str) -> tuple[float | None, int | None, int | None]:
    """rtt (ms), cwnd and total retransmissions from an `ss -i` continuation line."""
    rtt = _RTT.search(line)
    cwnd = _CWND.search(line)
    retrans = _RETRANS.search(line)
    return (
        float(rtt.group(1)) if rtt else None,
        int(cwnd.group(1)) if cwnd else None,
        int(retrans.group(1)) if retrans else None,
    )


def parse_ss(text: str) -> list[SocketSample]:
    """The sockets in the output of `ss -tanoiH` (`-i` puts each socket's TCP info on a
    continuation line starting with a tab).

    Lines that are not a socket are skipped: empty ones, a header (when -H was not
    honoured), and any line cut short or with fields that do not parse. A state ss prints
    that we do not know is kept (see `state_name`). Pure: no I/O.
    """
    samples: list[SocketSample] = []
    append = samples.append
    pending: tuple[str, str, str, int, int, str | None, str | None, list[str]] | None = None
    info: str | None = None

    def flush() -> None:
        assert pending is not None
        state, local, remote, recv_q, send_q, iface_l, _iface_r, rest = pending
        timer, left, count = _timer(rest) if rest else (None, None, None)
        rtt, cwnd, retrans = _info(info) if info else (None, None, None)
        append(
            SocketSample(
                state,
                local,
                remote,
                recv_q,
                send_q,
                timer,
                left,
                count,
                rtt,
                cwnd,
                retrans,
                iface_l,
            )
        )

    for line in text.splitlines():
        if line[:1] in ("\t", " "):  # the -i continuation of the socket above (or blank)
            if pending is not None and not line.isspace():
                info = line
            continue
        if pending is not None:
            flush()
            pending = info = None
        fields = line.split()
        if len(fields) < 5:
            continue
        recv_q, send_q = fields[1], fields[2]
        if not (recv_q.isdigit() and send_q.isdigit()):
            continue  # a header line ("State Recv-Q ..."), or garbage
        local = _address(fields[3])
        remote = _address(fields[4])
        if local is None or remote is None:
            continue
        pending = (
            state_name(fields[0]),
            local[0],
            remote[0],
            int(recv_q),
            int(send_q),
            local[1],
            remote[1],
            fields[5:],
        )
    if pending is not None:
        flush()
    return samples


def ss_argv(ports: Collection[int], *, netns: str | None = None) -> list[str]:
    """`ss` with the flags we parse, filtered in the kernel to `ports` at either end."""
    terms = " or ".join(f"sport = :{port} or dport = :{port}" for port in sorted(set(ports)))
    return ["ss", *(("-N", netns) if netns else ()), "-tanoiH", f"( {terms} )"]


def _children_cpu_s() -> float:
    """CPU used so far by this process's reaped children (the ss runs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


# The loop thread's CPU for each fork/exec of ss, for the sampler to bill (run_ss is a
# plain function others call too, so it reports through this list rather than a result).
_spawn_cpu: list[float] = []


async def run_ss(ports: Collection[int], *, netns: str | None = None) -> str:
    """The output of `ss` for `ports`; the loop runs on while ss does.

    Raises:
        FileNotFoundError: ss is not installed (not on PATH).
        SamplerError: ss failed (an unknown namespace, say) or did not answer in time.
    """
    spawn_started = time.thread_time()
    process = await asyncio.create_subprocess_exec(
        *ss_argv(ports, netns=netns),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _spawn_cpu.append(time.thread_time() - spawn_started)
    try:
        async with asyncio.timeout(SS_TIMEOUT_S):
            out, err = await process.communicate()
    except TimeoutError:
        raise SamplerError(
            f"ss did not answer within {SS_TIMEOUT_S:g} s", kind="ss_timeout"
        ) from None
    finally:
        if process.returncode is None:  # timed out or cancelled: no ss left behind
            process.kill()
            await asyncio.shield(process.wait())
    status = process.returncode
    if status is not None and status < 0:  # (communicate() returned: never None here)
        raise SamplerError(f"ss was killed by {_signal_name(-status)}", kind="ss_killed")
    if status != 0:
        message = err.decode(errors="replace").strip().splitlines()
        raise SamplerError(f"ss exited with status {status}: {message[0] if message else ''}")
    return out.decode(errors="replace")


def _signal_name(number: int) -> str:
    """SIGKILL for 9; real-time signals have no name in the enum: "signal 35"."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


async def sample_ss(ports: Collection[int], *, netns: str | None = None) -> list[SocketSample]:
    """The sockets with one of `ports` at either end, now (in namespace `netns` if given).

    Raises:
        FileNotFoundError: ss is not installed.
        SamplerError: ss failed or hung.
    """
    text = await run_ss(ports, netns=netns)
    if len(text) > THREAD_PARSE_BYTES:
        return await asyncio.to_thread(parse_ss, text)
    return parse_ss(text)


class SamplerError(Exception):
    """ss ran but gave no sample; `kind` says how (ss_killed, ss_timeout, ss_failed)."""

    def __init__(self, message: str, *, kind: str = "ss_failed") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class StateChange:
    """One socket's change between two samples. `sample` is the socket as it is now; for a
    socket that is gone (`to` is "closed"), the socket as it was last seen."""

    role: Role
    from_state: str
    to_state: str
    sample: SocketSample

    def attrs(self) -> dict[str, Any]:
        """The `kernel.state.changed` event's fields (of a gone socket ss said nothing: its
        queues and timer are None)."""
        s = self.sample
        if self.to_state == CLOSED:
            return {"from": self.from_state, "to": CLOSED, "recv_q": None, "send_q": None,
                    "timer": None, "timer_left_s": None, "retransmits": None,
                    "rtt_ms": None, "cwnd": None}  # fmt: skip
        return {"from": self.from_state, "to": self.to_state, "recv_q": s.recv_q,
                "send_q": s.send_q, "timer": s.timer, "timer_left_s": s.timer_left_s,
                "retransmits": s.retransmits, "rtt_ms": s.rtt_ms, "cwnd": s.cwnd}  # fmt: skip


class SocketTracker:
    """The sockets of the last sample, and what changed since the one before. Pure.

    Args:
        ports: the lab's listening ports.
        role: None: a socket whose local port is one of `ports` is the server's, any other
            the client's (both ends on one host); given: every socket is that side's (a
            network namespace that holds one side only).
    """

    def __init__(self, ports: Collection[int], role: Role | None = None) -> None:
        self.ports = frozenset(ports)
        self.role = role
        self.roles: tuple[Role, ...] = (role,) if role else (Role.SERVER, Role.CLIENT)
        self.sockets: dict[tuple[str, str], SocketSample] = {}
        self.first = True  # no sample yet: what the first one finds was there before

    def role_of(self, sample: SocketSample) -> Role:
        if self.role is not None:
            return self.role
        return Role.SERVER if sample.local_port in self.ports else Role.CLIENT

    def update(self, samples: Iterable[SocketSample]) -> list[StateChange]:
        """Take a new sample; returns the changes, the new or changed sockets in the
        sample's order, then the gone ones."""
        before = self.sockets
        after: dict[tuple[str, str], SocketSample] = {}
        changes: list[StateChange] = []
        for sample in samples:
            key = (sample.local, sample.remote)
            after[key] = sample
            old = before.get(key)
            if old is None:
                origin = UNKNOWN if self.first else CLOSED
                changes.append(StateChange(self.role_of(sample), origin, sample.state, sample))
            elif old.state != sample.state:
                role = self.role_of(sample)
                reachable = _LATER.get(old.state)
                if reachable is not None and sample.state not in reachable:
                    # The 4-tuple was reused: the old socket closed, a new one appeared.
                    changes.append(StateChange(role, old.state, CLOSED, old))
                    changes.append(StateChange(role, CLOSED, sample.state, sample))
                else:
                    changes.append(StateChange(role, old.state, sample.state, sample))
        for key, old in before.items():
            if key not in after:
                changes.append(StateChange(self.role_of(old), old.state, CLOSED, old))
        self.sockets = after
        self.first = False
        return changes

    def counts(self) -> dict[str, dict[str, int]]:
        """Sockets by role and state: every role this tracker covers, every state of
        `TCP_STATES` (zero when none); states outside those are not counted."""
        counts = {str(role): dict.fromkeys(TCP_STATES, 0) for role in self.roles}
        for sample in self.sockets.values():
            by_state = counts.get(self.role_of(sample))
            if by_state is not None and sample.state in by_state:
                by_state[sample.state] += 1
        return counts

    def listen_queues(self) -> dict[str, dict[str, int]]:
        """Per lab port with a listening socket: the accept queue's length and limit
        (summed over its listening sockets, IPv4 and IPv6)."""
        queues: dict[str, dict[str, int]] = {}
        for sample in self.sockets.values():
            if sample.state == "listen" and sample.local_port in self.ports:
                queue = queues.setdefault(str(sample.local_port), {"current": 0, "limit": 0})
                queue["current"] += sample.recv_q
                queue["limit"] += sample.send_q
        return queues


class Pacer:
    """When to take the next sample, so sampling stays within a CPU budget. Pure: the
    caller passes the clock's readings.

    After a sample that cost `c` seconds, the next one is due `max(interval_s, c /
    cpu_budget)` after this one began: over any run of samples, the time spent sampling
    is at most `cpu_budget` of the time elapsed.
    """

    def __init__(self, interval_s: float, cpu_budget: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        if not 0 < cpu_budget <= 1:
            raise ValueError(f"cpu_budget is a fraction of one core, in (0, 1], not {cpu_budget}")
        self.interval_s = interval_s
        self.cpu_budget = cpu_budget
        self.achieved_interval_s: float | None = None  # between the last two starts
        self.next_due: float | None = None  # None: now
        self.samples = 0
        self.spent_s = 0.0
        self._started: float | None = None

    def period_s(self, cost_s: float) -> float:
        return max(self.interval_s, cost_s / self.cpu_budget)

    def start(self, now: float) -> None:
        if self._started is not None:
            self.achieved_interval_s = now - self._started
        self._started = now

    def finish(self, now: float, cpu_s: float | None = None) -> float:
        """The sample begun at `start` ended at `now` having used `cpu_s` of CPU (when the
        caller could measure it; else its wall time stands for it); returns its cost."""
        assert self._started is not None, "finish() before start()"
        cost = now - self._started if cpu_s is None else cpu_s
        self.samples += 1
        self.spent_s += cost
        self.next_due = self._started + self.period_s(cost)
        return cost

    def delay_s(self, now: float) -> float:
        """How long to wait from `now` until the next sample is due."""
        return 0.0 if self.next_due is None else max(0.0, self.next_due - now)


UNAVAILABLE_WHAT_IS_LOST: Final = (
    "no kernel socket states: the lab shows the application's events but not the "
    "kernel's (LISTEN queues, SYN_RECV, FIN_WAIT, TIME_WAIT and their timers); "
    "install iproute2 to see them"
)


class SocketSampler:
    """Samples the kernel's sockets on `ports` every `interval_s` (stretched to stay within
    `cpu_budget` of a core) and emits what changed on `bus`. `async with` starts and stops
    it; `sample_now()` takes one sample at once.

    When ss is missing or fails, `kernel.sampler.unavailable` is emitted once (warning)
    and sampling stops; whoever runs the sampler goes on.
    """

    def __init__(
        self,
        bus: Bus,
        ports: Collection[int],
        *,
        interval_s: float = 0.1,
        cpu_budget: float = 0.02,
        netns: str | None = None,
        role: Role | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.bus = bus
        self.ports = sorted(set(ports))
        self.netns = netns
        self.tracker = SocketTracker(self.ports, role)
        self.pacer = Pacer(interval_s, cpu_budget)
        # The role our own events (sample taken, unavailable) carry: the side watched, the
        # server's when both are.
        self.role = role or Role.SERVER
        self.unavailable: str | None = None  # why, once ss failed
        self.failures = 0  # failed runs in a row
        self._clock = clock
        # With the real clock, a sample's cost is the CPU it used; a test's clock decides.
        self.measure_cpu = clock is time.perf_counter
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def achieved_interval_s(self) -> float:
        """The time between the last two samples' starts (the configured interval until
        two samples were taken)."""
        achieved = self.pacer.achieved_interval_s
        return self.pacer.interval_s if achieved is None else achieved

    def start(self) -> None:
        """Start sampling in a background task (the first sample at once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ss-sampler")

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop sampling and wait until the background task has ended."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # a sampler must never take its owner's shutdown down
                print(f"handshake-lab: the kernel sampler had failed: {exc!r}", file=sys.stderr)

    async def _run(self) -> None:
        while self.unavailable is None:
            delay = self.pacer.delay_s(self._clock())
            if delay > 0:
                await asyncio.sleep(delay)
                continue  # a sample_now() meanwhile moved the next one later: look again
            if self.bus.active:
                await self.sample_now()
            else:  # nobody listens: skip ss, keep the schedule
                self.pacer.next_due = self._clock() + self.pacer.interval_s

    async def sample_now(self) -> list[SocketSample]:
        """Take one sample now, emit its changes and counts like the periodic ones; the
        sockets seen ([] when ss is unavailable)."""
        async with self._lock:
            if self.unavailable is not None:
                return []
            self.pacer.start(self._clock())
            # The cost is CPU, the sampler's own: ss's (rusage of the reaped child; two
            # samplers in one process may bill each other's, an upper bound), forking it,
            # parsing and emitting. Waiting is free, and so is the server's work meanwhile.
            children_start = _children_cpu_s()
            _spawn_cpu.clear()
            try:
                text = await run_ss(self.ports, netns=self.netns)
            except FileNotFoundError:
                self._give_up(
                    f"ss (iproute2) is not installed or not on PATH: {UNAVAILABLE_WHAT_IS_LOST}"
                )
                return []
            except (SamplerError, OSError) as exc:
                # Maybe passing (no file descriptor left, fork refused, a slow kernel): try
                # again later, and give up only when it keeps failing.
                self.failures += 1
                self._emit_failure(exc)
                self.pacer.finish(self._clock(), None)
                self.pacer.next_due = self._clock() + self.pacer.interval_s * 2**self.failures
                if self.failures >= MAX_FAILURES:
                    self._give_up(
                        f"ss failed {self.failures} times in a row, last: {exc}: "
                        "no kernel socket states from now on"
                    )
                return []
            self.failures = 0
            ts = time.time()  # ss has answered: each state it reports held during its run
            own_start = time.thread_time()
            if len(text) > THREAD_PARSE_BYTES:
                samples, changes, worker_cpu = await asyncio.to_thread(self._digest_timed, text)
            else:
                samples, changes = self._digest(text)
                worker_cpu = 0.0
            await self._emit_changes(changes, ts)
            cpu = (
                _children_cpu_s()
                - children_start
                + sum(_spawn_cpu)
                + worker_cpu
                + time.thread_time()
                - own_start
            )
            cost = self.pacer.finish(self._clock(), cpu if self.measure_cpu else None)
            self._emit_sample(len(samples), len(changes), cost, ts)
            return samples

    def _digest(self, text: str) -> tuple[list[SocketSample], list[StateChange]]:
        samples = parse_ss(text)
        return samples, self.tracker.update(samples)

    def _digest_timed(self, text: str) -> tuple[list[SocketSample], list[StateChange], float]:
        started = time.thread_time()  # the worker thread's own CPU
        samples, changes = self._digest(text)
        return samples, changes, time.thread_time() - started

    async def _emit_changes(self, changes: Sequence[StateChange], ts: float) -> None:
        bus = self.bus
        for index, change in enumerate(changes):
            if index and index % EMIT_SLICE == 0:
                await asyncio.sleep(0)  # thousands of TIME_WAITs: let the loop serve between
            sample = change.sample
            bus.emit(
                Event(
                    name=Name.KERNEL_STATE_CHANGED,
                    role=change.role,
                    ts=ts,
                    local=sample.local,
                    remote=sample.remote,
                    attrs=change.attrs(),
                )
            )

    def _emit_sample(self, sockets: int, changes: int, cost_s: float, ts: float) -> None:
        self.bus.emit(
            Event(
                name=Name.KERNEL_SAMPLE_TAKEN,
                role=self.role,
                ts=ts,
                level=Level.DEBUG,
                attrs={
                    "sockets": self.tracker.counts(),
                    "listen_queues": self.tracker.listen_queues(),
                    "sockets_total": sockets,
                    "changes": changes,
                    "cpu_s": cost_s,
                    "interval_s": self.pacer.achieved_interval_s,
                    "next_in_s": self.pacer.period_s(cost_s),
                },
            )
        )

    def _emit_failure(self, exc: OSError | SamplerError) -> None:
        self._warn(
            Name.KERNEL_SAMPLE_FAILED,
            kind=exc.kind if isinstance(exc, SamplerError) else "ss_failed",
            reason=str(exc),
            failures=self.failures,
            lost="this sample: the changes until the next one are seen merged",
        )

    def _give_up(self, reason: str) -> None:
        self.unavailable = reason
        self._warn(Name.KERNEL_SAMPLER_UNAVAILABLE, reason=reason)

    def _warn(self, name: Name, **attrs: object) -> None:
        attrs["netns"] = self.netns
        self.bus.emit(Event(name, self.role, time.time(), level=Level.WARNING, attrs=attrs))
