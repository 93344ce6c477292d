"""The prefix cache on vs off: the same requests, the same model, two real runs.

- on: the workload as written (prefix caching on), recorded with `astrai.trace.record`.
- off: the same workload with `prefix_caching = false`, recorded too (without line tracing).

Every figure is counted from the events the engine emitted, never worked out by formula:

    from astrai.compare import prefix
    c = prefix.compare(workload="prefix")
    c.prompt_tokens_cached, c.prompt_tokens_computed, c.pages_shared, c.pages_allocated
    c.off_prompt_tokens_computed, c.off_pages_allocated, c.outputs_equal
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from astrai.trace import Trace, recorded
from astrai.trace.events import Alloc, Evict, Share, Write
from astrai.trace.record import rerun, run_limit, workload_of
from astrai.workload import MAX_STEPS, Workload, load_workload

__all__ = ["PrefixComparison", "RunFigures", "compare", "figures"]


@dataclass(frozen=True)
class RunFigures:
    """What one run did, counted from its trace.

    cached_tokens    prompt tokens whose K/V came from prefix-cache hits: over the prefill write
                     events, each row's `start` (the prefill begins past the shared pages)
    computed_tokens  prompt tokens the prefill computed: each prefill write row's `n`
    shared           prefix hits taken: `share` events (inc_ref on a recorded page)
    revived          of those, pages revived from the cache (`share` with revived)
    allocated        pages handed out by alloc (`alloc` events, prompt and decode growth)
    evicted          cached pages evicted to make room (`evict` events)
    steps            scheduler steps the run took (the last event's step + 1)
    """

    cached_tokens: int
    computed_tokens: int
    shared: int
    revived: int
    allocated: int
    evicted: int
    steps: int


def figures(trace: Trace) -> RunFigures:
    """Count a run's figures from its events (see RunFigures)."""
    cached = computed = shared = revived = allocated = evicted = 0
    for ev in trace.events:
        if isinstance(ev, Write) and ev.phase == "prefill":
            cached += sum(row["start"] for row in ev.rows)
            computed += sum(row["n"] for row in ev.rows)
        elif isinstance(ev, Share):
            shared += 1
            revived += bool(ev.revived)
        elif isinstance(ev, Alloc):
            allocated += 1
        elif isinstance(ev, Evict):
            evicted += 1
    steps = trace.events[-1].step + 1 if trace.events else 0
    return RunFigures(cached, computed, shared, revived, allocated, evicted, steps)


@dataclass
class PrefixComparison:
    """Figures of both runs. The promo's closing card reads these names: keep them.

    From the run with the prefix cache on (`trace`):
      prompt_tokens_cached      prompt tokens served from the cache (RunFigures.cached_tokens)
      prompt_tokens_computed    prompt tokens the prefills computed (RunFigures.computed_tokens)
      pages_shared              prefix hits: pages shared or revived (`share` events)
      pages_revived             of those, revived from cached (refs 0 -> 1)
      pages_allocated           pages allocated (`alloc` events)
      pages_evicted             cached pages evicted (`evict` events)
    From the run with it off (`off_trace`, a second real run):
      off_prompt_tokens_computed, off_pages_allocated, off_prompt_tokens_cached,
      off_pages_shared          the same counts there (the last two are 0 when nothing is shared)
    Both:
      outputs_equal             every request generated the same tokens in both runs
      pages_saved               off_pages_allocated - pages_allocated
      prefill_tokens_saved      off_prompt_tokens_computed - prompt_tokens_computed
    """

    workload: str
    prompt_tokens_cached: int
    prompt_tokens_computed: int
    pages_shared: int
    pages_revived: int
    pages_allocated: int
    pages_evicted: int
    off_prompt_tokens_computed: int
    off_pages_allocated: int
    off_prompt_tokens_cached: int
    off_pages_shared: int
    outputs_equal: bool
    trace: Trace = field(repr=False)
    off_trace: Trace = field(repr=False)

    @property
    def outputs(self) -> dict[str, list[int]]:
        return self.trace.outputs

    @property
    def off_outputs(self) -> dict[str, list[int]]:
        return self.off_trace.outputs

    @property
    def pages_saved(self) -> int:
        return self.off_pages_allocated - self.pages_allocated

    @property
    def prefill_tokens_saved(self) -> int:
        return self.off_prompt_tokens_computed - self.prompt_tokens_computed


def compare(workload: Workload | str = "prefix", trace: Trace | None = None) -> PrefixComparison:
    """Run `workload` with the prefix cache on and off and count what each run did.

    `trace`: the run with it on, already recorded (a scene passes the trace it replays); its
    own workload is then the one run again with the cache off.
    """
    limit = MAX_STEPS
    if trace is None:
        wl = load_workload(workload) if isinstance(workload, str) else workload
        wl = dataclasses.replace(wl, prefix_caching=True)
        trace = recorded(wl)
    else:
        # A trace is data: its workload runs again only if it names no checkpoint folder (no
        # path a file chose is read; a named model is), and for no more steps than the
        # trace's size allows.
        wl = workload_of(trace, "a scene's comparison run")
        limit = run_limit(trace)
    off_trace = rerun(dataclasses.replace(wl, prefix_caching=False), limit)
    on, off = figures(trace), figures(off_trace)
    return PrefixComparison(
        workload=wl.name,
        prompt_tokens_cached=on.cached_tokens,
        prompt_tokens_computed=on.computed_tokens,
        pages_shared=on.shared,
        pages_revived=on.revived,
        pages_allocated=on.allocated,
        pages_evicted=on.evicted,
        off_prompt_tokens_computed=off.computed_tokens,
        off_pages_allocated=off.allocated,
        off_prompt_tokens_cached=off.cached_tokens,
        off_pages_shared=off.shared,
        outputs_equal=trace.outputs == off_trace.outputs,
        trace=trace,
        off_trace=off_trace,
    )
