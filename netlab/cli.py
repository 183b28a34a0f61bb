"""`handshake-lab lab SCENARIO`: run one lesson in the lab network and draw its ladder."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

from netlab import ladder
from netlab.netns import lab_unavailable_reason
from netlab.scenarios import SCENARIOS, run_scenario
from telemetry.events import Name, Role
from telemetry.jsonlog import event_to_dict

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from netlab.scenarios import Run
    from telemetry.events import Event


MAX_DELAY_S: Final = 5.0


def add_lab_arguments(parser: argparse.ArgumentParser) -> None:
    names = ", ".join(SCENARIOS)
    parser.add_argument(
        "scenario",
        nargs="?",
        choices=[*SCENARIOS, "list"],
        metavar="SCENARIO",
        help=f"one of: {names}; or `list` to describe them",
    )
    parser.add_argument(
        "--delay-ms",
        type=float,
        metavar="MS",
        help="the wire's one-way delay (default: the scenario's own, e.g. 50 ms)",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="write the timeline (every event, findings) as JSON to FILE ('-' for stdout) "
        "instead of drawing the ladder",
    )
    parser.add_argument(
        "--pcap",
        metavar="FILE",
        type=Path,
        help="write every segment the wire forwarded to FILE (open it in Wireshark or with "
        "tshark -r)",
    )


def run_lab(args: argparse.Namespace) -> int:
    if args.scenario in (None, "list"):
        for item in SCENARIOS.values():
            print(f"{item.name:<20} {item.lessons:<10} {item.shows}")
        return 0
    reason = lab_unavailable_reason()
    if reason is not None:
        print(
            f"handshake-lab lab: {reason}\n"
            "The lab network needs root (network namespaces and TUN devices). Without it, "
            "`handshake-lab client get URL --trace` draws the ladder from the application's "
            "events and the kernel's socket states, without wire segments.",
            file=sys.stderr,
        )
        return 2
    to_stdout = args.json == "-"
    out = sys.stderr if to_stdout else sys.stdout

    def say(text: str) -> None:
        print(f"-- {text}", file=out, flush=True)

    delay_s = None if args.delay_ms is None else args.delay_ms / 1000
    if delay_s is not None and not 0 <= delay_s <= MAX_DELAY_S:
        print(
            f"handshake-lab lab: --delay-ms must be 0 to {MAX_DELAY_S * 1000:.0f}", file=sys.stderr
        )
        return 2
    try:
        run = asyncio.run(_run(args.scenario, say, delay_s, args.pcap))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("handshake-lab lab: interrupted; the lab network was removed", file=sys.stderr)
        return 130
    if args.json:
        document = json.dumps(timeline_document(run), indent=1)
        if to_stdout:
            print(document)
        else:
            Path(args.json).write_text(document + "\n", encoding="utf-8")
            print(f"timeline written to {args.json}", file=out)
    else:
        print(draw(run), file=out)
    if args.pcap:
        print(f"segments written to {args.pcap} (tshark -r {args.pcap})", file=out)
    return 0


async def _run(
    name: str, say: Callable[[str], None], delay_s: float | None, pcap: Path | None
) -> Run:
    # SIGTERM cancels the run like Ctrl-C does, so the namespaces are removed either way.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_scenario(name, say=say, delay_s=delay_s, pcap=pcap)


def draw(run: Run) -> str:
    lab_events = [e for e in run.events if _in_lab_view(e, run)]
    drawn = ladder.render(
        lab_events,
        client=f"client {run.client_ip}",
        server=f"server {run.server_ip}",
        footer=run.findings,
    )
    legend = (
        f"(t: when a segment left its sender, which it reaches {run.delay_s * 1000:g} ms later; "
        "a state: when ss saw it, in that side's namespace)"
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
    }
