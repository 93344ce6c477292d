"""Second round: nothing a caller does, and no failed step, corrupts K/V without a named error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bad_input_cache import PS, Untouched, kv, make

from astrai.errors import (
    BadCount,
    BadPageTable,
    BadTensor,
    CacheTooLarge,
    LayerOutOfRange,
    PageNotAllocated,
    StaleView,
)
from astrai.inference import checks as checks_module
from astrai.inference.cache import PagedCache
from astrai.inference.scheduler import Scheduler, Task
from astrai.model import ModelConfig, TinyModel, next_tokens

SMALL = ModelConfig(vocab_size=64, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1,
                    head_dim=8, d_ff=32, seed=3)
MODEL = TinyModel(SMALL)


class FailsAfterWriting:
    """The real model, raising on one forward after every layer wrote its K/V."""

    def __init__(self, at: int):
        self.config, self.calls, self.at = SMALL, 0, at

    def __call__(self, *args):
        self.calls += 1
        out = MODEL(*args)
        if self.calls == self.at:
            raise RuntimeError("forward failed after writing K/V")
        return out


A = list(range(1, 9))  # two full pages of 4
B = list(range(30, 46))  # four pages of other tokens: it must evict A's cached pages


def run_c(cache) -> list[int]:
    sched = Scheduler(cache, MODEL, max_batch=2)
    sched.submit(Task("C", list(A), 6))  # A's prompt again: a prefix hit on A's first page
    return sched.run()["C"]


def test_a_failed_step_that_overwrote_evicted_prefix_pages_leaves_no_wrong_hit():
    """A's prompt pages are cached; B's prefill evicts them, writes its own K/V there and the
    model fails. A later request with A's prompt hits the restored entry: its tokens must be
    those of a run that never saw B."""
    want = run_c(PagedCache(SMALL.n_layers, 4, 4, SMALL.n_kv_heads, SMALL.head_dim))
    cache = PagedCache(SMALL.n_layers, 4, 4, SMALL.n_kv_heads, SMALL.head_dim)
    sched = Scheduler(cache, FailsAfterWriting(at=2), max_batch=1)
    sched.submit(Task("A", list(A), 1))
    sched.step()  # A's prefill: both pages recorded
    sched.step()  # A retires: its pages are cached (refs 0)
    assert cache.n_cached == 2
    k_before = cache.k_cache[:, :2].clone()
    sched.submit(Task("B", list(B), 1))
    with pytest.raises(RuntimeError, match="after writing"):
        sched.step()  # B took A's two pages and wrote them before the failure
    cache.check()
    assert cache.lookup_prefix(A[:-1]) == [0]  # the entry is back, and so is its K/V
    assert torch.equal(cache.k_cache[:, :2], k_before)  # (free pages 2, 3 may hold B's)
    assert run_c(cache) == want


def test_without_a_failure_the_step_keeps_no_copies():
    cache = PagedCache(SMALL.n_layers, 4, 4, SMALL.n_kv_heads, SMALL.head_dim)
    sched = Scheduler(cache, MODEL)
    sched.submit(Task("A", list(A), 3))
    sched.run()
    assert "_take" not in vars(cache)  # the copying wrapper lives only while a step runs


# ---- views and tables --------------------------------------------------------------------------

def test_a_view_bound_before_its_page_went_to_another_owner_refuses(device):
    cache = make(device)
    view = cache.bind(torch.tensor([[0, 1]]), 2 * PS)
    k, v = kv(device=device)
    view.write(0, 0, k, v)
    cache.free(1)
    assert cache.alloc() == 1  # the lowest free page: page 1 has a new owner (refs 1)
    with Untouched(cache):
        with pytest.raises(StaleView, match="bind the table again"):
            view.write(0, 0, k, v)
        with pytest.raises(StaleView):
            view.gather(0)
    fresh = cache.bind(torch.tensor([[0, 1]]), 2 * PS)  # a new binding is fine
    fresh.write(0, 0, k, v)


def test_a_host_table_edited_through_numpy_after_bind_cannot_redirect_a_write():
    cache = make(held=(0, 1, 2, 3))
    cache.record_prefix([3], list(range(PS)))
    cache.free(3)  # page 3: a cached prefix page (refs 0)
    table = torch.tensor([[0, 1]])
    view = cache.bind(table, 2 * PS)
    table.numpy()[0, 1] = 3  # no version bump: torch cannot see this edit
    k, v = kv(S=2 * PS)
    page3 = cache.k_cache[:, 3].clone()
    view.write(0, 0, k, v)
    assert torch.equal(cache.k_cache[:, 3], page3)  # the view wrote through its own copy
    assert cache.k_cache[0, 1].eq(1).all()


def test_a_host_table_edited_through_numpy_after_a_direct_write_is_checked_again():
    cache = make(held=(0, 1, 2, 3))
    cache.record_prefix([3], list(range(PS)))
    cache.free(3)
    table = torch.tensor([[0, 1]])
    k, v = kv(S=2 * PS)
    cache.write(0, table, 0, k, v)
    table.numpy()[0, 1] = 3
    k, v = kv(S=2 * PS)
    with Untouched(cache), pytest.raises(PageNotAllocated, match="page 3"):
        cache.write(0, table, 0, k, v)


@pytest.mark.parametrize("rows", [[[0, 0]], [[1, -1, 1]], [[0, 1], [2, 2]]])
def test_a_page_twice_in_one_row_is_refused(rows, device):
    cache = make(device)
    table = torch.tensor(rows, device=device)
    k, v = kv(len(rows), device=device)
    for call in (lambda: cache.write(0, table, 0, k, v), lambda: cache.gather(0, table, PS),
                 lambda: cache.bind(table, PS), lambda: cache.slot_index(table, 0, PS)):
        with Untouched(cache), pytest.raises(BadPageTable, match="twice"):
            call()


def test_one_page_in_two_rows_is_sharing_and_allowed():
    cache = make()
    view = cache.bind(torch.tensor([[0, 1], [0, 2]]), 2 * PS)
    k, v = kv(2, device="cpu")
    view.write(0, torch.tensor([PS, PS]), k, v)  # both rows past the shared page
    assert view.gather(0)[0].shape == (2, 2 * PS, 2, 3)


# ---- positions --------------------------------------------------------------------------------

@pytest.mark.parametrize("start,words", [
    ([-1], "start_pos[0] is -1"),
    ([2 * PS], "past the page_table"),
    ([PS + 1], "past the page_table"),  # the last token of 4 would land past the table
    ([10**12], "past the page_table"),
])
def test_tensor_positions_outside_the_table_are_refused(start, words, device):
    cache = make(device)
    table = torch.tensor([[0, 1]], device=device)
    k, v = kv(device=device)
    sp = torch.tensor(start, device=device)
    view = cache.bind(table, 2 * PS)
    for call in (lambda: cache.write(0, table, sp, k, v), lambda: view.write(0, sp, k, v)):
        with Untouched(cache), pytest.raises(BadTensor, match=words.replace("[", r"\[")):
            call()


def test_int_positions_past_the_table_are_refused_too():
    cache = make()
    k, v = kv()
    with Untouched(cache), pytest.raises(BadTensor, match="past the page_table"):
        cache.write(0, torch.tensor([[0]]), 1, k, v)


def test_padding_past_the_table_is_fine_only_real_tokens_count():
    cache = make()
    k, v = kv(S=PS)
    cache.write(0, torch.tensor([[0]]), torch.tensor([2]), k, v, torch.tensor([2]))
    assert cache.k_cache[0, 0, 2:].eq(1).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(starts=st.lists(st.integers(-3, 3 * PS), min_size=2, max_size=2),
       lengths=st.lists(st.integers(0, 3), min_size=2, max_size=2))
def test_any_positions_write_inside_the_table_or_nothing(starts, lengths):
    cache = make()
    table = torch.tensor([[0, 1], [2, -1]])
    k, v = kv(2, 3)
    before = cache._k_store.clone()
    try:
        cache.write(0, table, torch.tensor(starts), k, v, torch.tensor(lengths))
    except BadTensor:
        assert torch.equal(cache._k_store, before)
        assert any(s < 0 or (n and s + n > 2 * PS) for s, n in zip(starts, lengths))
        return
    for s, n in zip(starts, lengths):
        assert s >= 0 and (n == 0 or s + n <= 2 * PS)
    assert torch.equal(cache._k_store[:, 3:6], before[:, 3:6])  # pages in no table: untouched


# ---- layers and counts ------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [-1, 2, 10**9, True, 1.0, "0", None])
def test_layer_ids_outside_the_layers_are_refused(layer, device):
    cache = make(device)  # 2 layers
    table = torch.tensor([[0]], device=device)
    k, v = kv(device=device)
    view = cache.bind(table, PS)
    slots = cache.slot_index(table, 0, PS)
    index = cache.gather_index(table, PS)
    for call in (lambda: cache.write(layer, table, 0, k, v), lambda: view.write(layer, 0, k, v),
                 lambda: cache.gather(layer, table, PS), lambda: view.gather(layer),
                 lambda: cache.write_slots(layer, slots, k, v),
                 lambda: cache.gather_pages(layer, index, PS)):
        with Untouched(cache), pytest.raises(LayerOutOfRange, match="layer_id"):
            call()


def test_numpy_layer_ids_are_ints():
    cache = make()
    cache.write(np.int64(1), torch.tensor([[0]]), 0, *kv())
    assert cache.k_cache[1, 0].eq(1).all()


@pytest.mark.parametrize("n", [True, False])
def test_bools_are_not_counts(n):
    cache = make(held=())
    with Untouched(cache), pytest.raises(BadCount, match="int"):
        cache.alloc_n(n)
    with pytest.raises(BadCount, match="n_tokens"):
        make().slot_index(torch.tensor([[0]]), 0, n)


def test_a_pool_bigger_than_memory_is_refused_before_allocating():
    with pytest.raises(CacheTooLarge, match="n_pages=1099511627776"):
        PagedCache(2, 2**40, 16, 4, 64)


def test_the_cache_size_is_checked_against_available_memory(monkeypatch):
    monkeypatch.setattr(checks_module, "available_bytes", lambda device: 1000)
    with pytest.raises(CacheTooLarge, match="MiB"):
        PagedCache(1, 8, 4, 1, 8)


# ---- sampling --------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [1e-300, 5e-324, 1e-45, 1e-38, 1e-30, 1e-8])
def test_tiny_temperatures_sample_the_argmax_not_nan(t):
    logits = torch.tensor([[0.0, 3.0, 1.0, -2.0], [1e30, -1e30, 0.0, 5.0]])
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert next_tokens(logits, t, gen).tolist() == [1, 0]


@settings(max_examples=80, deadline=None)
@given(t=st.floats(min_value=5e-324, max_value=1e308, allow_nan=False, allow_infinity=False),
       scale=st.sampled_from([1.0, 1e4, 1e30]))
def test_every_finite_temperature_samples_a_real_token(t, scale):
    logits = torch.randn(3, 16, generator=torch.Generator().manual_seed(1)) * scale
    got = next_tokens(logits, t, torch.Generator().manual_seed(2))
    assert got.shape == (3,) and all(0 <= x < 16 for x in got.tolist())
    if t < 1e-30:
        assert got.tolist() == logits.argmax(-1).tolist()


def test_a_scheduler_at_1e_300_runs_greedy():
    def run(temperature):
        cache = PagedCache(SMALL.n_layers, 8, 4, SMALL.n_kv_heads, SMALL.head_dim)
        sched = Scheduler(cache, MODEL, temperature=temperature)
        sched.submit(Task("a", list(A), 5))
        return sched.run()["a"]

    assert run(1e-300) == run(0.0)
    assert math.isfinite(1e-300)


@pytest.mark.parametrize("fail_at", [2, 3, 5, 8, 13])
def test_a_failed_step_leaves_the_kv_of_every_held_or_cached_page_as_it_was(fail_at):
    """On a pool tight enough to preempt and evict: whatever forward fails after writing, the
    K/V every holder had written (positions below its length) and every cached prefix page
    are back, bit for bit. (Slots past a holder's length may hold the failed step's K/V: the
    next write there comes first.)"""
    from test_bad_input_scheduler import Flaky, requests, scheduler

    sched = scheduler(Flaky({fail_at}, "after"))
    pending, failures = list(requests()), 0
    while pending or not sched.idle:
        for req in [r for r in pending if int(r[0][1:]) <= sched.step_count]:
            pending.remove(req)
            sched.submit(Task(req[0], list(req[1]), req[2]))
        cache = sched.cache
        ps = cache.page_size
        kept = [(p, s) for p in cache.cached_pages for s in range(ps)] + [
            (t.page_table[pos // ps], pos % ps) for t in sched.running for pos in range(t.length)]
        pages = torch.tensor([p for p, _ in kept], dtype=torch.long)
        slots = torch.tensor([s for _, s in kept], dtype=torch.long)
        before = (cache.k_cache[:, pages, slots].clone(), cache.v_cache[:, pages, slots].clone())
        try:
            sched.step()
        except RuntimeError:
            failures += 1
            assert torch.equal(cache.k_cache[:, pages, slots], before[0])
            assert torch.equal(cache.v_cache[:, pages, slots], before[1])
    assert failures == 1
