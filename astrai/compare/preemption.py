"""A tight pool vs one big enough never to preempt: the same requests, two real runs.

- tight: the workload as written, recorded with `astrai.trace.record`; its pool runs dry and the
  scheduler preempts.
- big: the same workload with a pool of as many pages as all requests together can ever hold
  (so nothing can wait for a page or be preempted), recorded too; refused if it preempted.

Every figure is counted from the events the engine emitted:

    from astrai.compare import preemption
    c = preemption.compare(workload="preemption")
    c.preempted, c.outputs_equal, c.recomputed_tokens, c.extra_steps
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from astrai.errors import AstraiError
from astrai.inference.cache import pages_for
from astrai.inference.phases import StepPhase
from astrai.trace import Trace, recorded
from astrai.trace.events import Admit, Finish, Preempt, Wait, Write
from astrai.trace.record import rerun, run_limit, workload_of
from astrai.workload import MAX_STEPS, Workload, load_workload

__all__ = ["PreemptionComparison", "Readmission", "compare", "readmissions"]


@dataclass(frozen=True)
class Readmission:
    """One preemption and the prefill that recomputed it, read from the tight run's events.

    task        the request preempted (the `preempt` event's task)
    step        the step it was preempted in
    needed_by   whose next token found the pool dry (`preempt.needed_by`)
    generated   output tokens it had when preempted (`preempt.generated`)
    n_tokens    its prompt + generated tokens then (`preempt.n_tokens`)
    admit_step  the step it was admitted again (its next `admit`)
    recomputed  tokens the readmission prefill computed for it (that `write` row's `n`)
    cached      tokens served from prefix-cache hits at readmission (the row's `start`)
    """

    task: str
    step: int
    needed_by: str | None
    generated: int
    n_tokens: int
    admit_step: int
    recomputed: int
    cached: int


def readmissions(trace: Trace) -> list[Readmission]:
    """Each preemption in the trace with the readmission prefill that followed it."""
    out = []
    events = trace.events
    for i, ev in enumerate(events):
        if not isinstance(ev, Preempt):
            continue
        name = ev.task
        admit = next(j for j in range(i + 1, len(events))
                     if isinstance(events[j], Admit) and events[j].task == name)
        write = next(events[j] for j in range(admit + 1, len(events))
                     if isinstance(events[j], Write) and events[j].phase == StepPhase.PREFILL
                     and any(r["task"] == name for r in events[j].rows))
        row = next(r for r in write.rows if r["task"] == name)
        out.append(Readmission(name, ev.step, ev.needed_by, ev.generated,
                               ev.n_tokens, events[admit].step, row["n"], row["start"]))
    return out


def _steps(trace: Trace) -> int:
    return trace.events[-1].step + 1 if trace.events else 0


def _finished(trace: Trace) -> dict[str, int]:
    return {ev.task: ev.step for ev in trace.events if isinstance(ev, Finish)}


class PoolTooSmall(AstraiError):
    """The 'big' pool of a preemption comparison still preempted (it should never)."""


@dataclass
class PreemptionComparison:
    """Figures of both runs. The promo's closing card reads these names: keep them.

    From the tight run (`trace`, the workload as written):
      preempted          names of the requests preempted, in order of first preemption
      preemptions        how many preempt events (a request can be preempted more than once)
      readmissions       each preemption with its recompute (see Readmission)
      recomputed_tokens  tokens recomputed by readmission prefills (sum of Readmission.recomputed)
      steps              steps the run took
      finished           request -> the step its last token came out (`finish` events)
      outputs            every request's output tokens
    From the big-pool run (`big_trace`, a second real run, no preemption):
      big_n_pages        its pool size (pages all requests can hold at once)
      big_steps          steps it took
      big_finished       request -> the step its last token came out there
      big_outputs        every request's output tokens
      texts, big_texts   every text request's output as text, in each run (its trace's own)
    Both:
      outputs_equal      every request's tokens are the same in both runs, token for token
      extra_steps        steps - big_steps: what preempting cost in time
    """

    workload: str
    n_pages: int
    preempted: list[str]
    preemptions: int
    readmissions: list[Readmission]
    recomputed_tokens: int
    steps: int
    big_n_pages: int
    big_steps: int
    extra_steps: int
    outputs_equal: bool
    finished: dict[str, int]
    big_finished: dict[str, int]
    outputs: dict[str, list[int]] = field(repr=False)
    big_outputs: dict[str, list[int]] = field(repr=False)
    trace: Trace = field(repr=False)
    big_trace: Trace = field(repr=False)

    @property
    def texts(self) -> dict[str, str]:
        return self.trace.output_texts

    @property
    def big_texts(self) -> dict[str, str]:
        return self.big_trace.output_texts


def compare(workload: Workload | str = "preemption",
            trace: Trace | None = None) -> PreemptionComparison:
    """Run `workload` on its own pool and on one that never preempts; count what each did.

    `trace`: the tight run, already recorded (a scene passes the trace it replays)."""
    limit = MAX_STEPS
    if trace is None:
        wl = load_workload(workload) if isinstance(workload, str) else workload
        trace = recorded(wl)
    else:
        # A trace is data: its workload runs again only if it names no checkpoint folder (no
        # path a file chose is read; a named model is), and for no more steps than the
        # trace's size allows.
        wl = workload_of(trace, "a scene's comparison run")
        limit = run_limit(trace)
    # Room for every request at its longest at once (the last output token needs no K/V).
    big = sum(pages_for(len(r.prompt) + r.max_new_tokens - 1, wl.page_size)
              for r in wl.requests)
    big_trace = rerun(dataclasses.replace(wl, n_pages=max(big, wl.n_pages)), limit)
    if any(isinstance(ev, (Preempt, Wait)) for ev in big_trace.events):
        raise PoolTooSmall(f"{wl.name}: a pool of {big} pages still made a request wait")
    readmits = readmissions(trace)
    preempted = list(dict.fromkeys(r.task for r in readmits))
    steps, big_steps = _steps(trace), _steps(big_trace)
    return PreemptionComparison(
        workload=wl.name,
        n_pages=wl.n_pages,
        preempted=preempted,
        preemptions=len(readmits),
        readmissions=readmits,
        recomputed_tokens=sum(r.recomputed for r in readmits),
        steps=steps,
        big_n_pages=max(big, wl.n_pages),
        big_steps=big_steps,
        extra_steps=steps - big_steps,
        outputs_equal=trace.outputs == big_trace.outputs,
        finished=_finished(trace),
        big_finished=_finished(big_trace),
        outputs=trace.outputs,
        big_outputs=big_trace.outputs,
        trace=trace,
        big_trace=big_trace,
    )
