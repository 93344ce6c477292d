"""Contiguous vs paged K/V memory: the same requests held by a DenseKVCache and a PagedCache.

Four real runs of the same requests and model:

1. paged: the `Scheduler` on a PagedCache, recorded, with only the batch bound limiting
   admission (a pool of at least max_batch * ceil(max_len / page_size) pages, and no prefix
   sharing, so every page a request holds is its own). A request holds ceil(length / page_size)
   pages; its only waste is the unused tail of its last page.
2. contiguous, the same batch bound: `DenseBatcher(static=False)` with max_batch rows of max_len
   slots (the longest any of the requests may grow to). Both runs then admit the same requests
   at the same steps (checked: `same_moments`), so at every step both hold the same requests at
   the same lengths, and a contiguous request reserves a whole row however short it is.
3. and 4. one fixed memory budget, the paged pool of the workload (n_pages * page_size slots),
   every request arriving at once and no batch bound but memory: the Scheduler on that pool
   (pages allocated as requests grow), and `DenseBatcher(static=False)` with as many max_len rows
   as the budget holds; what does not fit waits in its queue.

    from astrai.compare import memory
    m = memory.compare(workload="traffic")
    m.dense_fit, m.paged_fit, m.dense_reserved_bytes, m.paged_reserved_bytes
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from astrai.compare.batching import max_len_of, one_thread
from astrai.compare.once import once
from astrai.compare.static import DenseBatcher, StepRecord
from astrai.errors import RequestTooLarge
from astrai.inference.cache import pages_for
from astrai.trace import Trace, recorded
from astrai.workload import Workload, build, load_workload, run_workload

__all__ = ["Held", "Moment", "Budgeted", "MemoryComparison", "TokenBytes", "compare", "burst"]


@dataclass(frozen=True)
class TokenBytes:
    """What one token's K and V take in the cache, factor by factor (the slot of both caches)."""

    n_layers: int
    n_kv_heads: int
    head_dim: int
    dtype: str  # the cache's dtype, e.g. "float32"
    dtype_bytes: int  # bytes of one number in it

    @property
    def total(self) -> int:
        """layers x 2 (a key and a value) x KV heads x head size x bytes of the dtype."""
        return self.n_layers * 2 * self.n_kv_heads * self.head_dim * self.dtype_bytes


@dataclass(frozen=True)
class Held:
    """One request at one step, in both runs 1 and 2."""

    task: str
    used: int  # tokens with K/V in the cache (same in both runs)
    dense_reserved: int  # slots its DenseKVCache row reserves (max_len)
    paged_reserved: int  # slots of the pages its page table holds (pages * page_size)
    pages: tuple[int, ...]  # those pages (physical ids)

    @property
    def paged_waste(self) -> int:
        """The unused tail of its last page: the only slots a paged request reserves unused."""
        return self.paged_reserved - self.used


@dataclass(frozen=True)
class Moment:
    step: int
    held: tuple[Held, ...]  # in batch-slot order (the dense run's rows)

    @property
    def used(self) -> int:
        return sum(h.used for h in self.held)

    @property
    def dense_reserved(self) -> int:
        return sum(h.dense_reserved for h in self.held)

    @property
    def paged_reserved(self) -> int:
        return sum(h.paged_reserved for h in self.held)


@dataclass(frozen=True)
class Budgeted:
    """One step of a run on the fixed budget: who held memory after it, and who waited."""

    step: int
    held: tuple[str, ...]
    queue: tuple[str, ...]
    reserved: int  # slots reserved by the held requests (rows, or their pages)


@dataclass
class MemoryComparison:
    """Figures of the runs, and the per-step records the scene draws.

    Geometry (both caches): slot_bytes (K and V of one token, all layers, in the dtype),
    token_bytes (its factors, read from the contiguous run's real tensors and equal to the paged
    run's recorded geometry), page_size, max_len (a dense row's slots).
    Runs 1 and 2 (same moments):
      moments                per step, every request held: used, dense and paged reservation
      moment                 the step shown on the card: the first with the most tokens held
      used_bytes             bytes of K/V the requests held at `moment` (same in both runs)
      dense_reserved_bytes   bytes their DenseKVCache rows reserved at `moment` (run 2)
      paged_reserved_bytes   bytes their pages reserved at `moment` (run 1)
      same_moments           runs 1 and 2 held the same requests at the same lengths every step
                             (always: compare() raises otherwise)
    Runs 3 and 4 (one budget, all requests at once):
      budget_bytes           the budget: the workload's paged pool, n_pages * page_size slots
      dense_rows             max_len rows the budget holds (run 4's DenseKVCache batch)
      dense_fit, paged_fit   most requests held at once: contiguous (run 4), paged (run 3)
      dense_budget, paged_budget   per step: held, queue, reserved slots
      dense_budget_steps, paged_budget_steps   steps until every request was done
    outputs_equal: every run gave every request the same output tokens.
    """

    workload: str
    slot_bytes: int
    token_bytes: TokenBytes
    page_size: int
    max_len: int
    moments: list[Moment]
    moment: int
    used_bytes: int
    dense_reserved_bytes: int
    paged_reserved_bytes: int
    same_moments: bool
    budget_bytes: int
    dense_rows: int
    dense_fit: int
    paged_fit: int
    dense_budget: list[Budgeted]
    paged_budget: list[Budgeted]
    dense_budget_steps: int
    paged_budget_steps: int
    outputs_equal: bool
    trace: Trace = field(repr=False)  # run 1
    budget_trace: Trace = field(repr=False)
    dense_records: list[StepRecord] = field(repr=False)
    dense_budget_records: list[StepRecord] = field(repr=False)

    @property
    def budget_slots(self) -> int:
        return self.budget_bytes // self.slot_bytes


def burst(wl: Workload) -> Workload:
    """The same requests all arriving at step 0, with no batch bound but memory."""
    reqs = tuple(dataclasses.replace(r, arrival=0, after=None) for r in wl.requests)
    return dataclasses.replace(wl, name=f"{wl.name}-burst", requests=reqs,
                               max_batch=len(reqs))


def _step_states(trace: Trace) -> list[dict]:
    last: dict[int, dict] = {}
    for ev in trace.events:
        last[ev.step] = ev.state
    return [last[s] for s in range(1 + max(last))]


def compare(workload: Workload | str = "traffic") -> MemoryComparison:
    wl = load_workload(workload) if isinstance(workload, str) else workload
    with one_thread():
        return _compare(wl)


@once
def _compare(wl: Workload) -> MemoryComparison:
    max_len = max_len_of(wl)
    ps = wl.page_size

    # 1 and 2: the same moments. Admission bounded by max_batch alone in both runs.
    pool = max(wl.n_pages, wl.max_batch * pages_for(max_len, ps))
    trace = recorded(dataclasses.replace(wl, n_pages=pool, prefix_caching=False), lines=False)
    _, model, _ = build(wl)
    dense = DenseBatcher(model, wl.max_batch, max_len, static=False,
                         temperature=wl.temperature, seed=wl.seed)
    dense_out = run_workload(wl, dense)
    slot_bytes = dense.row_bytes // max_len
    token_bytes = _token_bytes(dense, trace)
    if token_bytes.total != slot_bytes:  # pragma: no cover - both read the same cache tensors
        raise AssertionError(f"a row's bytes per token ({slot_bytes}) are not the product of "
                             f"its factors ({token_bytes})")
    paged_states = _step_states(trace)
    moments, same = [], len(paged_states) == len(dense.records)
    for rec, st in zip(dense.records, paged_states):
        held = []
        for row in rec.rows:
            if row.task is None:
                continue
            pages = tuple(st["page_tables"].get(row.task, ()))
            same &= st["lengths"].get(row.task) == row.length
            held.append(Held(row.task, row.length, max_len, len(pages) * ps, pages))
        same &= {h.task for h in held} == set(st["page_tables"])
        moments.append(Moment(rec.step, tuple(held)))
    if not same:  # pragma: no cover - both runs admit by the batch bound alone
        raise AssertionError("the paged and contiguous runs held different requests")
    moment = max(moments, key=lambda m: (m.used, -m.step))

    # 3 and 4: one budget.
    budget_slots = wl.n_pages * ps
    rows = budget_slots // max_len
    if rows < 1:
        raise RequestTooLarge(
            f"a budget of {budget_slots} slots holds no contiguous row of max_len={max_len}"
        )
    bwl = burst(wl)
    budget_trace = recorded(bwl, lines=False)
    paged_budget = [
        Budgeted(s, tuple(st["page_tables"]), tuple(st["queue"]),
                 sum(len(t) for t in st["page_tables"].values()) * ps)
        for s, st in enumerate(_step_states(budget_trace))
    ]
    _, model, _ = build(bwl)
    dense_b = DenseBatcher(model, rows, max_len, static=False, temperature=wl.temperature,
                           seed=wl.seed)
    dense_b_out = run_workload(bwl, dense_b)
    dense_budget = [
        Budgeted(rec.step, tuple(r.task for r in rec.rows if r.task), rec.queue,
                 max_len * sum(1 for r in rec.rows if r.task))
        for rec in dense_b.records
    ]
    outputs = [trace.outputs, dense_out, budget_trace.outputs, dense_b_out]
    return MemoryComparison(
        workload=wl.name,
        slot_bytes=slot_bytes,
        token_bytes=token_bytes,
        page_size=ps,
        max_len=max_len,
        moments=moments,
        moment=moment.step,
        used_bytes=moment.used * slot_bytes,
        dense_reserved_bytes=moment.dense_reserved * slot_bytes,
        paged_reserved_bytes=moment.paged_reserved * slot_bytes,
        same_moments=same,
        budget_bytes=budget_slots * slot_bytes,
        dense_rows=rows,
        dense_fit=max(len(b.held) for b in dense_budget),
        paged_fit=max(len(b.held) for b in paged_budget),
        dense_budget=dense_budget,
        paged_budget=paged_budget,
        dense_budget_steps=dense_b.step_count,
        paged_budget_steps=len(paged_budget),
        outputs_equal=all(o == outputs[0] for o in outputs),
        trace=trace,
        budget_trace=budget_trace,
        dense_records=dense.records,
        dense_budget_records=dense_b.records,
    )


def _token_bytes(dense: DenseBatcher, trace: Trace) -> TokenBytes:
    """The factors of one token's K/V in the contiguous run's cache, checked against the paged
    run's recorded geometry: both caches hold the same model's keys and values."""
    c = dense.cache
    tb = TokenBytes(c.n_layers, c.n_kv_heads, c.head_dim, str(c.k_cache.dtype).removeprefix(
        "torch."), c.k_cache.element_size())
    geo = trace.geometry
    recorded_as = (geo.get("n_layers"), geo.get("n_kv_heads"), geo.get("head_dim"),
                   geo.get("dtype"))
    if recorded_as != (tb.n_layers, tb.n_kv_heads, tb.head_dim, tb.dtype):
        raise AssertionError(f"the paged run recorded {recorded_as}, the contiguous cache "
                             f"holds {tb}")  # pragma: no cover - one model, one dtype
    return tb


def pages_reserved(used: int, page_size: int) -> int:
    """Slots of the pages a request of `used` tokens holds (for tests and captions)."""
    return pages_for(used, page_size) * page_size
