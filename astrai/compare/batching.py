"""Continuous vs static batching: the same requests, the same model, two real runs.

- continuous: the paged `Scheduler` on the workload as written, recorded (`astrai.trace.record`);
  what each batch slot did per step is read from the trace's write events.
- static: `DenseBatcher(static=True)` (astrai/compare/static.py) with max_batch rows: a batch
  is admitted only when the previous one has completely finished.

    from astrai.compare import batching
    c = batching.compare(workload="traffic")
    c.continuous_steps, c.static_steps, c.outputs_equal

Wall times are measured around each run: the continuous one again without a recorder (so
recording costs are not counted), both `repeats` times interleaved, the median kept; all runs use
one torch thread. They vary from run to run, unlike everything else here.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field

import torch

from astrai.compare.once import once
from astrai.compare.static import GEN, IDLE, PROMPT, DenseBatcher, StepRecord
from astrai.inference.phases import StepPhase
from astrai.trace import Trace, recorded
from astrai.trace.events import Admit, Preempt, Retire, Write
from astrai.workload import Workload, build, load_workload, run_workload

__all__ = ["Cell", "BatchingComparison", "compare", "slot_grid", "pool_use", "GEN", "IDLE",
           "PROMPT"]


@dataclass(frozen=True)
class Cell:
    """One batch slot in one step: who held it and what it did."""

    task: str | None  # None: no request in the slot
    kind: str  # PROMPT (prompt prefilled, first token out), GEN (one token out), IDLE
    n: int  # tokens whose K/V the step wrote for it


@dataclass
class BatchingComparison:
    """Figures of both runs, and the per-step records the scene draws.

    From the continuous run (paged Scheduler, recorded):
      continuous_steps             scheduler steps until every request was done
      continuous_tokens            output tokens generated (all requests)
      continuous_tokens_per_step   continuous_tokens / continuous_steps
      continuous_wall_s            measured seconds of an unrecorded run of the same workload
                                   (median of `repeats`, one thread)
      continuous_grid              [step][slot] Cells, slots assigned at admission (lowest free)
      continuous_pool              [step] (pages in use, cached, free) after the step
      trace                        the recorded trace
    From the static run (DenseBatcher, static=True, max_batch rows):
      static_steps, static_tokens, static_tokens_per_step, static_wall_s (measured as the
                                   continuous one)
      static_grid                  [step][row] Cells, from the run's own records
      static_records               the runner's StepRecords (rows, queue, admitted)
    Both:
      outputs_equal                every request's output tokens are the same in both runs
      max_batch, max_len           batch bound; the dense rows' length (longest request)
    """

    workload: str
    max_batch: int
    max_len: int
    continuous_steps: int
    static_steps: int
    continuous_tokens: int
    static_tokens: int
    continuous_tokens_per_step: float
    static_tokens_per_step: float
    continuous_wall_s: float
    static_wall_s: float
    outputs_equal: bool
    continuous_grid: list[list[Cell]]
    static_grid: list[list[Cell]]
    continuous_pool: list[tuple[int, int, int]]
    trace: Trace
    continuous_outputs: dict[str, list[int]] = field(repr=False)
    static_outputs: dict[str, list[int]] = field(repr=False)
    static_records: list[StepRecord] = field(repr=False)

    @property
    def tokens_generated(self) -> tuple[list[int], list[int]]:
        """Tokens generated in each step (one per PROMPT or GEN cell): continuous, static."""
        return ([sum(c.kind != IDLE for c in row) for row in self.continuous_grid],
                [sum(c.kind != IDLE for c in row) for row in self.static_grid])


def slot_grid(trace: Trace, n_slots: int) -> list[list[Cell]]:
    """What each of the n_slots batch slots did per step of a recorded Scheduler run.

    A request takes the lowest free slot when it is admitted and gives it back when it retires
    (or is preempted); the scheduler has no slot numbers of its own, so this placement is only
    where the grid draws it. What a slot did comes from the step's write events: a prefill row
    wrote the prompt, a decode row one token.
    """
    steps = 1 + max(ev.step for ev in trace.events)
    grid = [[Cell(None, IDLE, 0) for _ in range(n_slots)] for _ in range(steps)]
    slot_of: dict[str, int] = {}
    for ev in trace.events:
        if isinstance(ev, Admit):
            taken = set(slot_of.values())
            slot_of[ev.task] = min(s for s in range(n_slots) if s not in taken)
        elif isinstance(ev, (Retire, Preempt)):
            slot_of.pop(ev.task, None)
        elif isinstance(ev, Write):
            what = PROMPT if ev.phase == StepPhase.PREFILL else GEN
            for row in ev.rows:
                grid[ev.step][slot_of[row["task"]]] = Cell(row["task"], what, row["n"])
    # A slot held by a request that wrote nothing this step (none in a plain run) shows idle
    # but keeps its holder.
    return grid


def pool_use(trace: Trace) -> list[tuple[int, int, int]]:
    """(pages in use, cached, free) after each step, from the last event of the step."""
    n_pages = trace.geometry["n_pages"]
    last: dict[int, dict] = {}
    for ev in trace.events:
        last[ev.step] = ev.state
    out = []
    for step in range(1 + max(last)):
        st = last[step]
        used = sum(1 for r in st["refs"] if r > 0)
        cached = len(st["cached"])
        free = bin(st["free_mask"]).count("1")
        assert used + cached + free == n_pages, "every page is exactly one of the three kinds"
        out.append((used, cached, free))
    return out


def max_len_of(wl: Workload) -> int:
    """A dense row's length: the longest any request of the workload may grow to."""
    return max(len(r.prompt) + r.max_new_tokens - 1 for r in wl.requests)


@contextlib.contextmanager
def one_thread():
    """Torch on one thread while the runs go: the tiny model gains nothing from a second one,
    and on a shared machine a second thread only stalls (which also makes wall times noisy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _timed(makers, wl: Workload, repeats: int):
    """Run each runner `repeats` times, interleaved; per runner: (median wall seconds, outputs,
    last runner). Every repeat must give the same outputs: they are the same run again."""
    walls: list[list[float]] = [[] for _ in makers]
    last: list = [None] * len(makers)
    for _ in range(repeats):
        for i, make in enumerate(makers):
            runner = make()
            t0 = time.perf_counter()
            out = run_workload(wl, runner)
            walls[i].append(time.perf_counter() - t0)
            if last[i] is not None and out != last[i][0]:
                raise AssertionError("a repeated run gave other outputs")
            last[i] = (out, runner)
    return [(statistics.median(w), out, runner) for w, (out, runner) in zip(walls, last)]


def compare(workload: Workload | str = "traffic", repeats: int = 1) -> BatchingComparison:
    wl = load_workload(workload) if isinstance(workload, str) else workload
    with one_thread():
        return _compare(wl, repeats)


@once
def _compare(wl: Workload, repeats: int) -> BatchingComparison:
    trace = recorded(wl, lines=False)

    max_len = max_len_of(wl)
    _, model, _ = build(wl)

    def continuous():
        return build(wl)[2]

    def static_runner():
        return DenseBatcher(model, wl.max_batch, max_len, static=True,
                            temperature=wl.temperature, seed=wl.seed)

    (continuous_wall, plain, _), (static_wall, static_out, static) = _timed(
        [continuous, static_runner], wl, repeats)
    if plain != trace.outputs:  # pragma: no cover - the recorder never changes a run
        raise AssertionError("an unrecorded run gave other outputs than the recorded one")

    static_grid = [[Cell(u.task, u.kind, u.n) for u in rec.rows] for rec in static.records]
    steps = 1 + max(ev.step for ev in trace.events)
    tokens = sum(len(o) for o in trace.outputs.values())
    static_tokens = sum(len(o) for o in static_out.values())
    return BatchingComparison(
        workload=wl.name,
        max_batch=wl.max_batch,
        max_len=max_len,
        continuous_steps=steps,
        static_steps=static.step_count,
        continuous_tokens=tokens,
        static_tokens=static_tokens,
        continuous_tokens_per_step=tokens / steps,
        static_tokens_per_step=static_tokens / static.step_count,
        continuous_wall_s=continuous_wall,
        static_wall_s=static_wall,
        outputs_equal=static_out == trace.outputs,
        continuous_grid=slot_grid(trace, wl.max_batch),
        static_grid=static_grid,
        continuous_pool=pool_use(trace),
        trace=trace,
        continuous_outputs=trace.outputs,
        static_outputs=static_out,
        static_records=static.records,
    )
