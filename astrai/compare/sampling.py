"""Parallel sampling vs independent requests: the same prompt and seeds, two real runs.

- group: the workload as written, recorded with `astrai.trace.record`: a request with n > 1
  is prefilled once and its samples share the prompt's pages, copying a shared page only when
  they write into it.
- independent: the same workload with every such request replaced by n requests of n = 1,
  named as its samples (A, A.1, A.2), with the same prompt, limit and arrival, recorded too.
  A task's generator is seeded by its name, so each request draws what its sample drew.

Every figure is counted from the events the engine emitted, never worked out by formula:

    from astrai.compare import sampling
    c = sampling.compare(workload="sampling")
    c.pages_allocated, c.prompt_tokens_computed, c.peak_pages, c.copies
    c.independent_pages_allocated, c.independent_prompt_tokens_computed,
    c.independent_peak_pages, c.outputs_equal, c.sample_equal
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from astrai.inference.phases import StepPhase
from astrai.trace import Trace, recorded
from astrai.trace.events import Alloc, Copy, Fork, Share, Write
from astrai.workload import Workload, load_workload, parse_workload

__all__ = ["RunFigures", "SamplingComparison", "compare", "figures", "independent"]


@dataclass(frozen=True)
class RunFigures:
    """What one run did, counted from its trace.

    allocated        pages handed out by alloc (`alloc` events: prompts, copies and growth)
    computed_tokens  prompt tokens the prefills computed (each prefill `write` row's `n`)
    peak_pages       the most pages in use at once (refs > 0 in an event's recorded state)
    forks            samples that shared a parent's pages (`fork` events)
    shared           pages shared, by forks and prefix hits (`share` events)
    copies           copy-on-write copies (`copy` events)
    copied_slots     slots those copies moved (sum of `copy.slots`, each in every layer)
    steps            scheduler steps the run took (the last event's step + 1)
    """

    allocated: int
    computed_tokens: int
    peak_pages: int
    forks: int
    shared: int
    copies: int
    copied_slots: int
    steps: int


def figures(trace: Trace) -> RunFigures:
    """Count a run's figures from its events (see RunFigures)."""
    allocated = computed = peak = forks = shared = copies = slots = 0
    for ev in trace.events:
        if isinstance(ev, Alloc):
            allocated += 1
        elif isinstance(ev, Write) and ev.phase == StepPhase.PREFILL:
            computed += sum(row["n"] for row in ev.rows)
        elif isinstance(ev, Fork):
            forks += 1
        elif isinstance(ev, Share):
            shared += 1
        elif isinstance(ev, Copy):
            copies += 1
            slots += ev.slots
        peak = max(peak, sum(1 for r in ev.state["refs"] if r > 0))
    steps = trace.events[-1].step + 1 if trace.events else 0
    return RunFigures(allocated, computed, peak, forks, shared, copies, slots, steps)


def independent(wl: Workload) -> Workload:
    """The workload with each request of n samples made n requests of one, named as the
    samples are (the first keeps the request's name), in the same order."""
    requests = tuple(
        dataclasses.replace(req, name=name, n=1)
        for req in wl.requests for name in req.sample_names
    )
    return dataclasses.replace(wl, requests=requests)


@dataclass
class SamplingComparison:
    """Figures of both runs, for the parallel-sampling scene's end card.

    From the group run (`trace`, the workload as written):
      pages_allocated, prompt_tokens_computed, peak_pages, forks, pages_shared, copies,
      copied_slots, steps          (RunFigures of that trace)
    From the independent run (`independent_trace`, a second real run):
      independent_pages_allocated, independent_prompt_tokens_computed,
      independent_peak_pages, independent_steps
    Both:
      sample_equal    sample name -> whether its tokens equal the independent request's
      outputs_equal   every sample equals its independent request, token for token
    """

    workload: str
    samples: list[str]
    pages_allocated: int
    prompt_tokens_computed: int
    peak_pages: int
    forks: int
    pages_shared: int
    copies: int
    copied_slots: int
    steps: int
    independent_pages_allocated: int
    independent_prompt_tokens_computed: int
    independent_peak_pages: int
    independent_steps: int
    sample_equal: dict[str, bool]
    outputs_equal: bool
    trace: Trace = field(repr=False)
    independent_trace: Trace = field(repr=False)

    @property
    def outputs(self) -> dict[str, list[int]]:
        return self.trace.outputs

    @property
    def independent_outputs(self) -> dict[str, list[int]]:
        return self.independent_trace.outputs

    @property
    def texts(self) -> dict[str, str]:
        """Every sample's output as text (the group run's trace)."""
        return self.trace.output_texts

    @property
    def independent_texts(self) -> dict[str, str]:
        return self.independent_trace.output_texts


def compare(workload: Workload | str = "sampling",
            trace: Trace | None = None) -> SamplingComparison:
    """Run `workload` with its samples as groups and as independent requests; count both.

    `trace`: the group run, already recorded (a scene passes the trace it replays); its own
    workload is then the one run again as independent requests.
    """
    if trace is None:
        wl = load_workload(workload) if isinstance(workload, str) else workload
        trace = recorded(wl)
    else:
        wl = parse_workload(trace.workload, f"trace of {trace.workload.get('name', '?')}")
    other = recorded(independent(wl), lines=False)
    group, alone = figures(trace), figures(other)
    samples = [name for req in wl.requests if req.n > 1 for name in req.sample_names]
    equal = {name: trace.outputs.get(name) == other.outputs.get(name)
             for name in trace.outputs}
    return SamplingComparison(
        workload=wl.name,
        samples=samples,
        pages_allocated=group.allocated,
        prompt_tokens_computed=group.computed_tokens,
        peak_pages=group.peak_pages,
        forks=group.forks,
        pages_shared=group.shared,
        copies=group.copies,
        copied_slots=group.copied_slots,
        steps=group.steps,
        independent_pages_allocated=alone.allocated,
        independent_prompt_tokens_computed=alone.computed_tokens,
        independent_peak_pages=alone.peak_pages,
        independent_steps=alone.steps,
        sample_equal=equal,
        outputs_equal=all(equal.values()) and set(trace.outputs) == set(other.outputs),
        trace=trace,
        independent_trace=other,
    )
