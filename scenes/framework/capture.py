"""A run's captured tensors as the story of one prefill and one decode step, slot by slot.

A trace recorded with `capture=True` (astrai.trace.capture) holds, per forward, the flat slots
the real `slot_index` call returned, the page index `gather_pages` read and, on decode steps,
layer 0's attention scores and weights. `plan_capture` picks the two steps a slot-level scene
tells (a batched prefill with a padded row, a decode step whose table reads out of physical
order) and refuses a run too big to draw every slot; `load_captured` gets such a trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from astrai.errors import TraceFormatError, WorkloadError
from astrai.inference.phases import StepPhase
from astrai.trace import Trace, load_trace, recorded
from astrai.trace.events import Alloc, Arrive, Event, Free, Gather, Retire, Write
from astrai.trace.recorder import source_digests
from scenes.framework.words import dims, shape

# What fits the slot-level view (every slot drawn, every token a cell).
MAX_ROWS, MAX_TOKENS, MAX_SLOTS, MAX_KEYS = 3, 10, 28, 12

@dataclass
class Step:
    """One forward's captured write and gather (and attention, on the decode step)."""

    step: int
    phase: str
    rows: list[str]  # row b of the batch is this request (from the write event)
    slots: dict
    write: dict
    gather: dict
    write_event: int  # index of the trace's write event of this step
    gather_event: int
    attention: dict | None = None


@dataclass
class Plan:
    geometry: dict
    names: list[str]  # requests in order of arrival (their colours)
    prefill: Step
    decode: Step
    between: list[Event] = field(default_factory=list)  # page events between the two
    row: int = 0  # the decode row whose attention is shown
    head: int = 0

    @property
    def page_size(self) -> int:
        return self.geometry["page_size"]

    @property
    def null(self) -> int:
        return self.prefill.slots["null_page"]


def _steps(trace: Trace) -> list[Step]:
    by_key: dict[tuple, dict] = {}
    for rec in trace.captures:
        # capture records (astrai.trace.capture) are plain dicts, named by their own kinds
        by_key.setdefault((rec["step"], rec["phase"]), {}).setdefault(rec.get("kind"), rec)
    steps = []
    for i, ev in enumerate(trace.events):
        if not isinstance(ev, Write):
            continue
        got = by_key.get((ev.step, ev.phase), {})
        gathers = [j for j, e in enumerate(trace.events) if isinstance(e, Gather)
                   and (e.step, e.phase) == (ev.step, ev.phase)]
        if {"slots", "write", "gather"} <= set(got) and gathers:
            steps.append(Step(ev.step, ev.phase, [r["task"] for r in ev.rows],
                              got["slots"], got["write"], got["gather"], i, gathers[0],
                              got.get("attention")))
    return steps


def _scattered(step: Step, ps: int, row: int) -> bool:
    cols = -(-step.gather["total_len"] // ps)
    pages = step.gather["index"][row * cols:(row + 1) * cols]
    return pages != sorted(pages)


def plan_capture(trace: Trace, head: int = 0) -> Plan:
    """Pick the story's two steps from a captured trace: the first prefill (one with a padded
    row if there is one) and the first decode step after it with attention captured (one whose
    page table reads out of physical order if there is one)."""
    if not trace.captures:
        raise TraceFormatError(
            "this scene needs a trace recorded with capture=True "
            "(python -m astrai.trace WORKLOAD --capture -o FILE)")
    ps = trace.geometry["page_size"]
    steps = _steps(trace)
    prefills = [s for s in steps if s.phase == StepPhase.PREFILL]
    if not prefills:
        raise WorkloadError("the run has no captured prefill step to show")
    padded = [s for s in prefills if any(n < s.slots["n_tokens"] for n in s.slots["lengths"])]
    prefill = (padded or prefills)[0]
    decodes = [s for s in steps if s.phase == StepPhase.DECODE and s.attention is not None
               and s.step > prefill.step]
    if not decodes:
        raise WorkloadError("the run has no captured decode step after its prefill to show")
    scattered = [(s, b) for s in decodes for b in range(len(s.rows)) if _scattered(s, ps, b)]
    decode, row = scattered[0] if scattered else (decodes[0], 0)
    between = [ev for ev in trace.events[prefill.gather_event + 1:decode.write_event]
               if isinstance(ev, (Free, Alloc, Retire))]
    names = [ev.task for ev in trace.events if isinstance(ev, Arrive)]
    p = Plan(trace.geometry, names, prefill, decode, between, row, head)
    _check_fits(p)
    return p


def _check_fits(p: Plan) -> None:
    ps, null = p.page_size, p.null
    problems = []
    for s in (p.prefill, p.decode):
        if len(s.rows) > MAX_ROWS:
            problems.append(f"step {s.step} has {len(s.rows)} rows (at most {MAX_ROWS})")
        if s.slots["n_tokens"] > MAX_TOKENS:
            problems.append(f"step {s.step} writes {s.slots['n_tokens']} tokens a row "
                            f"(at most {MAX_TOKENS})")
    if (null + 1) * ps > MAX_SLOTS:
        problems.append(f"{(null + 1) * ps} storage slots (at most {MAX_SLOTS})")
    if p.decode.gather["total_len"] > MAX_KEYS:
        problems.append(f"{p.decode.gather['total_len']} keys (at most {MAX_KEYS})")
    if not 0 <= p.head < p.decode.attention["n_heads"]:
        problems.append(f"head {p.head} of {p.decode.attention['n_heads']}")
    if problems:
        raise WorkloadError("too big to show slot by slot: " + "; ".join(problems))


def load_captured(spec: str) -> Trace:
    """A workload recorded with capture on (kept: astrai.trace.store), or a saved .json trace
    (refused if stale)."""
    if spec.endswith(".json"):
        trace = load_trace(spec)
        stale = sorted(f for f, d in trace.source.items() if source_digests().get(f) != d)
        if stale:
            raise TraceFormatError(f"{spec} was recorded from another version of "
                                   f"{', '.join(stale)}; record it again")
        return trace
    return recorded(spec, capture=True)


def ran_lines(trace: Trace, fn: str, step: Step | None) -> list[int]:
    """Lines `fn` ran in this step (any step if None), from the trace's code frames."""
    for ev in trace.events:
        if step is not None and (ev.step, ev.phase) != (step.step, step.phase):
            continue
        for fr in ev.returned + ev.code:
            if fr["fn"] == fn:
                return fr["ran"]
    return []


# ---- what each call's code panel says above it: the real shapes of that call ----------------


def slot_index_call(s: Step) -> str:
    """The shapes of the step's real slot_index call, as its panel shows them."""
    sl = s.slots
    return (f"slot_index(page_table {shape(sl['page_table'])}, start_pos "
            f"{shape(sl['start_pos'])}, n_tokens={sl['n_tokens']}, lengths "
            f"{shape(sl['lengths'])}) → slots {shape(sl['slots'])}")


def write_call(s: Step) -> str:
    """The shapes of the step's real write_slots call."""
    w = s.write
    return (f"write_slots: k {dims(w['k_shape'])} → reshape {dims(w['rows_shape'])} → "
            f"index_copy_ at slots {dims(w['slots_shape'])} into {dims(w['store_shape'])}")


def store_call(p: Plan) -> str:
    """The K/V store's shapes: the cache's pages, and the store with its null page."""
    geo, store = p.geometry, p.prefill.write["store_shape"]
    kc = [geo["n_layers"], p.null, p.page_size, geo["n_kv_heads"], geo["head_dim"]]
    # Short enough for a caption line with a real model's 30 layers in it.
    return (f"k_cache {dims(kc)}; with null page {p.null}, per layer {dims(store)} "
            "= slots, heads, dims")


def index_call(s: Step) -> str:
    g = s.gather
    return (f"gather_index(page_table {shape(s.slots['page_table'])}, total_len="
            f"{g['total_len']}) → index {dims(g['index'])}")


def select_call(s: Step) -> str:
    g = s.gather
    return (f"gather_pages: index {dims([len(g['index'])])} → index_select → "
            f"{dims(g['pages_shape'])} → view {dims(g['view_shape'])}")


def cut_call(s: Step) -> str:
    g = s.gather
    return f"view {dims(g['view_shape'])} → [:, :{g['total_len']}] → k {dims(g['k_shape'])}"


def attend_call(s: Step) -> str:
    a = s.attention
    return (f"scaled_dot_product_attention(q {dims(a['q_shape'])}, k {dims(a['k_shape'])}, v, "
            f"mask) → {dims(a['out_shape'])}")
