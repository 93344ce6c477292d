"""Contiguous vs paged memory: every figure compare() reports is what a real run held.

Reservations and bytes are recomputed here from the trace states, the dense runner's records and
the real caches' tensors; the fit on one budget from each budget run's own per-step holders.
"""

from __future__ import annotations

import pytest
import torch

from astrai.checkpoint import kv_bytes_per_token
from astrai.compare import memory
from astrai.compare.batching import max_len_of
from astrai.inference.cache import PagedCache
from astrai.workload import load_workload


@pytest.fixture(scope="module")
def m():
    return memory.compare(workload="traffic")


def _states(trace):
    last = {}
    for ev in trace.events:
        last[ev.step] = ev.state
    return [last[s] for s in sorted(last)]


def test_bytes_come_from_the_real_caches(m):
    wl = load_workload("traffic")
    cfg = wl.model
    paged = PagedCache(cfg.n_layers, wl.n_pages, wl.page_size, cfg.n_kv_heads, cfg.head_dim)
    page_bytes = paged.k_cache[:, 0].nbytes + paged.v_cache[:, 0].nbytes
    assert m.slot_bytes * wl.page_size == page_bytes
    assert m.budget_bytes == paged.k_cache.nbytes + paged.v_cache.nbytes
    assert m.max_len == max_len_of(wl) == max(len(r.prompt) + r.max_new_tokens - 1
                                              for r in wl.requests)


def test_a_tokens_bytes_are_the_models_keys_and_values(m):
    """One slot: a key and a value of every KV head in every layer, in the cache's dtype; the
    factors are the model's own and the product is what the caches reserve a token."""
    cfg = load_workload("traffic").model
    tb = m.token_bytes
    assert (tb.n_layers, tb.n_kv_heads, tb.head_dim) == (cfg.n_layers, cfg.n_kv_heads,
                                                         cfg.head_dim)
    assert tb.dtype == m.trace.geometry["dtype"]
    assert tb.dtype_bytes == torch.empty((), dtype=getattr(torch, tb.dtype)).element_size()
    assert m.slot_bytes == tb.total == tb.n_layers * 2 * tb.n_kv_heads * tb.head_dim * \
        tb.dtype_bytes
    assert m.slot_bytes == kv_bytes_per_token(cfg, getattr(torch, tb.dtype))


def test_same_moments_hold_the_same_requests(m):
    assert m.same_moments and m.outputs_equal
    states = _states(m.trace)
    assert len(states) == len(m.moments) == len(m.dense_records)
    ps = m.page_size
    for moment, st, rec in zip(m.moments, states, m.dense_records):
        assert {h.task for h in moment.held} == set(st["page_tables"])
        rows = {r.task: r.length for r in rec.rows if r.task}
        for h in moment.held:
            assert h.used == st["lengths"][h.task] == rows[h.task]
            assert h.pages == tuple(st["page_tables"][h.task])
            assert h.paged_reserved == len(st["page_tables"][h.task]) * ps
            assert h.dense_reserved == m.max_len
            assert 0 <= h.paged_waste < ps  # only the last page's tail is unused
    shown = m.moments[m.moment]
    assert shown.used == max(x.used for x in m.moments)
    assert m.used_bytes == shown.used * m.slot_bytes
    assert m.dense_reserved_bytes == len(shown.held) * m.max_len * m.slot_bytes
    assert m.paged_reserved_bytes == sum(
        len(t) for t in states[m.moment]["page_tables"].values()) * ps * m.slot_bytes
    assert m.used_bytes <= m.paged_reserved_bytes < m.dense_reserved_bytes


def test_one_budget_each_allocator_really_ran(m):
    # contiguous: rows of max_len within the budget, a real DenseKVCache of that many rows
    assert m.dense_rows == m.budget_bytes // (m.max_len * m.slot_bytes)
    assert all(r.task is None or r.length <= m.max_len
               for rec in m.dense_budget_records for r in rec.rows)
    assert all(len(rec.rows) == m.dense_rows for rec in m.dense_budget_records)
    held = [sum(1 for r in rec.rows if r.task) for rec in m.dense_budget_records]
    assert m.dense_fit == max(held) <= m.dense_rows
    assert m.dense_budget_records[0].queue  # what did not fit waited
    # paged: the Scheduler on the budget's pages; its holders per step from the trace
    states = _states(m.budget_trace)
    assert m.budget_trace.geometry["n_pages"] * m.page_size * m.slot_bytes == m.budget_bytes
    assert m.paged_fit == max(len(st["page_tables"]) for st in states)
    for b, st in zip(m.paged_budget, states):
        assert set(b.held) == set(st["page_tables"]) and list(b.queue) == st["queue"]
        assert b.reserved <= m.budget_slots
    assert m.paged_budget_steps == len(states)
    assert m.dense_budget_steps == len(m.dense_budget_records)
    assert m.paged_fit > m.dense_fit  # the point of the scene, from the two runs


def test_burst_keeps_requests_and_drops_arrivals():
    wl = load_workload("traffic")
    b = memory.burst(wl)
    assert [r.prompt for r in b.requests] == [r.prompt for r in wl.requests]
    assert all(r.arrival == 0 and r.after is None for r in b.requests)
    assert b.max_batch == len(wl.requests)
