"""The wire lessons (`--lab`, root): each scenario of netlab/scenarios.py as a lesson, in the
lab network, where every real segment is seen with its seq/ack."""

from __future__ import annotations

from typing import TYPE_CHECKING

from netlab.cli import draw
from netlab.scenarios import SCENARIOS, Scenario, run_scenario
from tour.tour import Lesson

if TYPE_CHECKING:
    from tour.tour import Tour

LOOK_AT = (
    "the arrows: every segment that crossed the wire, with its flags and seq/ack (a SYN "
    "shows its ISN, later numbers are relative, as in Wireshark); the state columns: what "
    "ss saw in each side's own namespace; the notes: what the application did."
)


def lesson(scenario: Scenario) -> Lesson:
    async def run(tour: Tour) -> list[str]:
        def say(text: str) -> None:
            tour.say(f"-- {text}")

        result = await run_scenario(scenario.name, say=say, bus=tour.bus)
        tour.say(draw(result))  # its findings are the ladder's footer
        return []

    return Lesson(
        name=scenario.name,
        title=f"On the wire: {scenario.shows}",
        syllabus=scenario.lessons,
        explain=f"In the lab network: the client and the server in two network namespaces, "
        f"joined by the lab's own wire ({scenario.delay_s * 1000:g} ms each way), so the "
        f"segments can be seen and delayed or dropped. {scenario.shows[0].upper()}"
        f"{scenario.shows[1:]}.",
        look_at=LOOK_AT,
        run=run,
        needs_root=True,
    )


LESSONS = [lesson(s) for s in SCENARIOS.values()]
