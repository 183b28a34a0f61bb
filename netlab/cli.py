"""`handshake-lab lab SCENARIO`: run one lesson in the lab network and draw its ladder."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from netlab import ladder
from netlab.netns import lab_unavailable_reason
from netlab.rules import parse_rules
from netlab.scenarios import SCENARIOS, run_scenario
from telemetry.events import Name, Role
from telemetry.jsonlog import event_to_dict

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from netlab.scenarios import Run
    from telemetry.events import Event


MAX_DELAY_S: Final = 5.0
# The exit status of a run a signal stopped: 128 + the signal's number, as shells report it.
STOPPING_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def add_lab_arguments(parser: argparse.ArgumentParser) -> None:
    names = ", ".join(SCENARIOS)
    parser.add_argument(
        "scenario",
        nargs="?",
        choices=[*SCENARIOS, "list"],
        metavar="SCENARIO",
        help=f"one of: {names}; or `list` to describe them",
    )
    wire = parser.add_argument_group("the wire")
    wire.add_argument(
        "--delay-ms",
        type=float,
        metavar="MS",
        help="one-way delay (default: the scenario's own, e.g. 50 ms)",
    )
    wire.add_argument(
        "--jitter-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="add up to ± MS to each packet's delay, never reordering (default: 0)",
    )
    wire.add_argument(
        "--loss",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="drop this fraction of packets at random, e.g. 0.05 (default: 0)",
    )
    wire.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="RULE",
        help="drop chosen segments, SIDE:KIND[:WHICH], e.g. server:fin:1 (the server's first "
        "FIN) or client:ack:1-2; SIDE client|server, KIND syn|syn-ack|ack|fin|rst|data|any, "
        "WHICH N, N-M, N- or * (default: 1); repeatable, after the scenario's own",
    )
    wire.add_argument("--seed", type=int, metavar="N", help="seed the random loss and jitter")
    output = parser.add_argument_group("output")
    output.add_argument(
        "--json",
        metavar="FILE",
        help="write the timeline (every event, ss's samples, the findings) as JSON to FILE "
        "('-' for stdout) instead of drawing the ladder",
    )
    output.add_argument(
        "--pcap",
        metavar="FILE",
        type=Path,
        help="write every packet the wire forwarded to FILE (Wireshark, tshark -r); with real "
        "TLS and SSLKEYLOGFILE set, Wireshark decrypts it",
    )


def run_lab(args: argparse.Namespace) -> int:
    if args.scenario in (None, "list"):
        for item in SCENARIOS.values():
            print(f"{item.name:<20} {item.lessons:<10} {item.shows}")
        return 0
    reason = lab_unavailable_reason()
    if reason is not None:
        return _fail(
            f"{reason}\nThe lab network needs root (network namespaces and TUN devices). "
            "Without it, `handshake-lab client get URL --trace` draws the ladder from the "
            "application's events and the kernel's socket states, without wire segments."
        )
    problem = _check_wire_options(args)
    if problem is not None:
        return _fail(problem)
    to_stdout = args.json == "-"
    out = sys.stderr if to_stdout else sys.stdout
    with contextlib.ExitStack() as files:
        try:
            # Both files are opened before the lab starts: a bad path must not cost a run.
            json_file = (
                files.enter_context(open(args.json, "w", encoding="utf-8"))
                if args.json and not to_stdout
                else None
            )
            if args.pcap:
                args.pcap.open("wb").close()
        except OSError as exc:
            return _fail(f"cannot write {exc.filename}: {exc.strerror}")

        def say(text: str) -> None:
            print(f"-- {text}", file=out, flush=True)

        stopped_by: list[signal.Signals] = []
        try:
            run = asyncio.run(_run(args, say, stopped_by))
        except (KeyboardInterrupt, asyncio.CancelledError):
            signum = stopped_by[0] if stopped_by else signal.SIGINT
            return _fail(f"stopped ({signum.name}); the lab network was removed", 128 + signum)
        except (OSError, TimeoutError, RuntimeError) as exc:
            return _fail(
                f"the {args.scenario} scenario failed ({exc!r}); the lab network was removed", 1
            )
        if args.json:
            document = json.dumps(timeline_document(run), indent=1)
            print(document, file=json_file or sys.stdout)
            if json_file is not None:
                print(f"timeline written to {args.json}", file=out)
        else:
            print(draw(run), file=out)
    if args.pcap:
        print(f"packets written to {args.pcap} (tshark -r {args.pcap})", file=out)
    return 0


def _fail(message: str, status: int = 2) -> int:
    print(f"handshake-lab lab: {message}", file=sys.stderr)
    return status


def _check_wire_options(args: argparse.Namespace) -> str | None:
    if args.delay_ms is not None and not 0 <= args.delay_ms / 1000 <= MAX_DELAY_S:
        return f"--delay-ms must be 0 to {MAX_DELAY_S * 1000:.0f}"
    if not 0 <= args.jitter_ms / 1000 <= MAX_DELAY_S:
        return f"--jitter-ms must be 0 to {MAX_DELAY_S * 1000:.0f}"
    if not 0 <= args.loss < 1:
        return "--loss is a fraction of packets: at least 0, below 1 (e.g. 0.05)"
    for rule in args.drop:
        try:
            parse_rules([rule])
        except ValueError as exc:
            return f"--drop: {exc}"
    return None


async def _run(
    args: argparse.Namespace, say: Callable[[str], None], stopped_by: list[signal.Signals]
) -> Run:
    # A signal cancels the run as Ctrl-C does, so the namespaces are removed either way.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def stop(signum: signal.Signals) -> None:
        stopped_by.append(signum)
        task.cancel()

    for signum in STOPPING_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    return await run_scenario(
        args.scenario,
        say=say,
        delay_s=None if args.delay_ms is None else args.delay_ms / 1000,
        jitter_s=args.jitter_ms / 1000,
        loss=args.loss,
        drop=args.drop,
        seed=args.seed,
        pcap=args.pcap,
    )


def draw(run: Run) -> str:
    lab_events = [e for e in run.events if _in_lab_view(e, run)]
    drawn = ladder.render(
        lab_events,
        client=f"client {run.client_ip}",
        server=f"server {run.server_ip}",
        footer=run.findings,
    )
    legend = (
        f"(t: when a segment left its sender; it arrives {run.delay_s * 1000:g} ms or a little "
        "more later. A state: when ss in that side's namespace had seen it)"
    )
    return f"{drawn}\n{legend}"


def _in_lab_view(event: Event, run: Run) -> bool:
    """Leave out what would bury the lesson: segments from spoofed (flood) addresses."""
    if event.name not in ladder.WIRE_EVENTS and event.name is not Name.KERNEL_STATE_CHANGED:
        return True
    client_side = event.local if event.role is Role.CLIENT else event.remote
    return (
        client_side is None
        or client_side.startswith(f"{run.client_ip}:")
        or (event.attrs.get("to") == "listen")
    )


def timeline_document(run: Run) -> dict[str, object]:
    return {
        "scenario": run.scenario.name,
        "lessons": run.scenario.lessons,
        "delay_s": run.delay_s,
        "client": run.client_ip,
        "server": run.server_ip,
        "findings": run.findings,
        "events": [event_to_dict(e) for e in run.events],
        # What ss said each time the scenario asked (timers live here: they change no state).
        "samples": [
            {"ts": round(ts, 6), "role": role.value, **dataclasses.asdict(sample)}
            for ts, role, sample in run.samples
        ],
    }
