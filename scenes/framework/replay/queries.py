"""Questions a story asks of a recorded run's events, answered from the events alone."""

from __future__ import annotations

from astrai.inference.phases import StepPhase
from astrai.trace.events import Admit, Event, Free, Write


def admit_of(events: list[Event], task: str, before: int) -> Admit | None:
    """The last admission of `task` before event `before`."""
    return next((e for e in reversed(events[:before])
                 if isinstance(e, Admit) and e.task == task), None)


def prefill_row(events: list[Event], task: str, after: int) -> dict | None:
    """`task`'s row of the first prefill write from event `after` on."""
    for e in events[after:]:
        if isinstance(e, Write) and e.phase == StepPhase.PREFILL:
            for row in e.rows:
                if row["task"] == task:
                    return row
    return None


def released_by(events: list[Event], page: int, before: int) -> Free | None:
    """The free event that last dropped `page` to refs 0 before event `before`."""
    for e in reversed(events[:before]):
        if isinstance(e, Free) and e.page == page and e.refs == 0:
            return e
    return None


def same_prompt_as(workload: dict, task: str) -> str | None:
    """The first other request of the recorded workload whose prompt is `task`'s, token for
    token (a question asked again)."""
    prompts = {r.get("name"): r.get("prompt") for r in workload.get("request", [])}
    mine = prompts.get(task)
    return next((name for name, theirs in prompts.items()
                 if name != task and mine is not None and theirs == mine), None)
