"""`handshake-lab demo`: the guided tour, lesson after lesson, on one loopback server."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Final

from prometheus_client import generate_latest

from handshake_tls.certs import DEFAULT_DIR
from netlab.netns import lab_unavailable_reason
from server.config import ServerConfig
from server.lifecycle import Server
from telemetry.setup import Telemetry
from tour import keep_alive, kernel, tls, websocket, wire
from tour.tour import RULE, WIDTH, Tour

if TYPE_CHECKING:
    import argparse

    from telemetry.metrics import Metrics
    from tour.tour import Lesson

LOOPBACK: Final = [keep_alive.LESSON, websocket.LESSON, tls.TOY, tls.REAL, kernel.LESSON]
LESSONS: Final = {lesson.name: lesson for lesson in [*LOOPBACK, *wire.LESSONS]}
# The metric families the ending shows a few lines of (the server's side).
SHOWN_METRICS: Final = (
    "handshake_lab_connections_opened_total",
    "handshake_lab_connections_closed_total",
    "handshake_lab_tls_handshakes_total",
    "handshake_lab_ws_messages_total",
)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    loopback = ", ".join(lesson.name for lesson in LOOPBACK)
    on_wire = ", ".join(lesson.name for lesson in wire.LESSONS)
    parser.add_argument(
        "--lesson",
        action="append",
        choices=list(LESSONS),
        metavar="NAME",
        help=f"run only this lesson (repeatable): {loopback}; or, as root, one of the wire "
        f"lessons: {on_wire} (default: every loopback lesson, in that order)",
    )
    parser.add_argument(
        "--lab",
        action="store_true",
        help="as root: after the loopback lessons, run the wire lessons too, in the lab "
        "network (two namespaces joined by the lab's wire: real segments with seq/ack)",
    )
    parser.add_argument(
        "--step",
        action="store_true",
        help="pause before each lesson until Enter (q stops); the metrics stay live meanwhile",
    )
    parser.add_argument("--list", action="store_true", help="list the lessons and stop")
    parser.add_argument(
        "--count",
        type=int,
        default=3,
        metavar="N",
        help="requests or messages per step (default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="server port on 127.0.0.1 (default: any free port)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve this run's Prometheus metrics on 127.0.0.1:PORT (default: any free port)",
    )
    parser.add_argument(
        "--log-file", metavar="PATH", help="append every event to PATH as one JSON line each"
    )
    parser.add_argument(
        "--certs-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"the lab's certificates, made there when missing (default: {DEFAULT_DIR})",
    )


def chosen_lessons(args: argparse.Namespace) -> list[Lesson]:
    """The lessons to run, in the syllabus's order (--lesson picks, --lab adds every wire
    lesson)."""
    if args.lesson:
        named = [lesson for name, lesson in LESSONS.items() if name in args.lesson]
        return [*named, *(w for w in wire.LESSONS if args.lab and w not in named)]
    return [*LOOPBACK, *(wire.LESSONS if args.lab else [])]


def run_demo(args: argparse.Namespace) -> int:
    if args.list:
        for lesson in LESSONS.values():
            where = "wire, root" if lesson.needs_root else "loopback"
            print(f"{lesson.name:<20} {lesson.syllabus:<10} {where:<10} {lesson.title}")
        return 0
    if args.count < 1:
        return _fail("--count must be at least 1")
    lessons = chosen_lessons(args)
    reason = lab_unavailable_reason() if any(lesson.needs_root for lesson in lessons) else None
    if reason is not None:
        return _fail(f"the wire lessons cannot run: {reason}; the loopback lessons need no root")
    telemetry = Telemetry()
    try:
        if args.log_file:
            telemetry.open_log("json", args.log_file, "debug")
        metrics = telemetry.enable_metrics()
        metrics_url = f"http://127.0.0.1:{telemetry.serve_metrics('127.0.0.1', args.metrics_port)}"
    except OSError as exc:
        telemetry.close()
        return _fail(f"cannot start the telemetry: {exc}")
    try:
        return asyncio.run(run_tour(args, lessons, telemetry, metrics, metrics_url))
    except KeyboardInterrupt:
        return _fail("stopped (Ctrl-C)", 130)
    except OSError as exc:
        return _fail(f"cannot start the server: {exc}")
    finally:
        telemetry.close()


def _fail(message: str, status: int = 2) -> int:
    print(f"handshake-lab demo: {message}", file=sys.stderr)
    return status


async def run_tour(
    args: argparse.Namespace,
    lessons: list[Lesson],
    telemetry: Telemetry,
    metrics: Metrics,
    metrics_url: str,
) -> int:
    certs = args.certs_dir or DEFAULT_DIR
    config = ServerConfig(port=args.port, toy_tls_port=0, real_tls_port=0, certs_dir=certs)
    failed: list[str] = []
    async with Server(config, telemetry.bus) as server:
        tour = Tour(telemetry.bus, server, sys.stdout, args.count, certs / "ca.pem")
        tour.say(
            f"handshake-lab demo: the server listens on {tour.http} (HTTP, WebSocket), "
            f"{tour.toytls} (toy TLS) and {tour.https} (real TLS), loopback only; "
            f"metrics of this run at {metrics_url}/metrics"
        )
        tour.say(f"lessons: {', '.join(lesson.name for lesson in lessons)}")
        pausing = args.step
        stdin = StdinLines()
        for number, lesson in enumerate(lessons, 1):
            if pausing:
                answer = await stdin.ask(
                    f"\n[Enter: lesson {number}, {lesson.name}; q: stop here] "
                )
                if answer is None:  # stdin closed: go on without pausing
                    pausing = False
                elif answer.strip().lower() in ("q", "quit"):
                    break
            introduce(tour, lesson, number, len(lessons))
            try:
                findings = await lesson.run(tour)
            except Exception as exc:  # a lesson that fails says why; the others still run
                failed.append(lesson.name)
                tour.say(f"!! the {lesson.name} lesson failed: {exc!r} (traceback on stderr)")
                traceback.print_exc()
                continue
            for finding in findings:
                tour.say(
                    textwrap.fill(finding, WIDTH, initial_indent="=> ", subsequent_indent="   ")
                )
    ending(tour, metrics, metrics_url, ran_wire=any(lesson.needs_root for lesson in lessons))
    if failed:
        tour.say(f"\n{len(failed)} lesson(s) failed: {', '.join(failed)}")
        return 1
    return 0


def introduce(tour: Tour, lesson: Lesson, number: int, total: int) -> None:
    tour.say(f"\n{'=' * WIDTH}\nLesson {number}/{total}: {lesson.title}")
    tour.say(f"({lesson.name}; the syllabus's {lesson.syllabus})\n{'=' * WIDTH}")
    tour.paragraph(lesson.explain)
    tour.paragraph(f"Look at: {lesson.look_at}")


def ending(tour: Tour, metrics: Metrics, metrics_url: str, *, ran_wire: bool) -> None:
    tour.say(f"\n{RULE}\nWhat the tour left behind\n{RULE}")
    tour.say(f"Every event above was also counted as a Prometheus metric ({metrics_url}/metrics")
    tour.say("while the tour ran; this process now stops). The server's side, for example:")
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(SHOWN_METRICS) and 'role="server"' in line:
            tour.say(f"  {line}")
    tour.paragraph(
        "To keep watching: `handshake-lab server` (metrics on http://127.0.0.1:9464/metrics) "
        "and, in another terminal, `handshake-lab client load` (a steady mix of every kind of "
        "traffic; its metrics on :9465). The dashboard: `docker compose up --build`, then "
        "http://localhost:3000 (Grafana, with Prometheus on :9090)."
    )
    if not ran_wire:
        tour.paragraph(
            "As root, `handshake-lab demo --lab` adds the wire lessons: the real segments of "
            "each TCP lesson, with their seq/ack (`handshake-lab demo --list` lists them)."
        )


class StdinLines:
    """Lines from stdin, read without blocking the loop (the server and the metrics go on
    answering while the tour waits). One read may bring several lines (a pipe): they are
    kept for the next pauses."""

    def __init__(self) -> None:
        self.buffer = b""
        try:
            self.fd: int | None = sys.stdin.fileno() if sys.stdin is not None else None
        except (OSError, ValueError):  # closed (`<&-`) or not a real file
            self.fd = None

    async def ask(self, prompt: str) -> str | None:
        """The next line after printing `prompt`; None once stdin has ended."""
        print(prompt, end="", flush=True)
        while b"\n" not in self.buffer and self.fd is not None:
            await self._fill(self.fd)
        line, newline, self.buffer = self.buffer.partition(b"\n")
        return line.decode(errors="replace") if newline or line else None

    async def _fill(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)

        try:
            loop.add_reader(fd, wake)
        except (OSError, ValueError):  # a regular file: reading it never blocks
            pass
        else:
            try:
                await readable
            finally:
                loop.remove_reader(fd)
        data = os.read(fd, 4096)
        if not data:
            self.fd = None
        self.buffer += data
