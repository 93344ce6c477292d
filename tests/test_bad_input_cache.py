"""Misuse of the cache's K/V API: a named error, and neither K/V nor allocator state changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import cache_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astrai.errors import (
    BadPageTable,
    BadTensor,
    CacheError,
    PageNotAllocated,
    PageOutOfRange,
)
from astrai.inference.cache import PagedCache

H, D, PS, N = 2, 3, 4, 6


def make(device="cpu", dtype=torch.float32, held=(0, 1, 2, 3)):
    cache = PagedCache(2, N, PS, H, D, device=device, dtype=dtype)
    pages = cache.alloc_n(N)
    for p in pages:
        if p not in held:
            cache.free(p)
    g = torch.Generator().manual_seed(0)
    for t in (cache._k_store, cache._v_store):
        t.copy_(torch.randn(t.shape, generator=g).to(dtype))
    return cache


def kv(B=1, S=PS, device="cpu", dtype=torch.float32):
    return torch.ones(B, S, H, D, device=device, dtype=dtype), \
        torch.full((B, S, H, D), 2.0, device=device, dtype=dtype)


class Untouched:
    """K/V storage (null page included), allocator state and check() all as before."""

    def __init__(self, cache):
        self.cache = cache

    def __enter__(self):
        self.k = self.cache._k_store.clone()
        self.v = self.cache._v_store.clone()
        self.state = cache_state(self.cache)
        return self

    def __exit__(self, *exc):
        assert torch.equal(self.cache._k_store, self.k)
        assert torch.equal(self.cache._v_store, self.v)
        assert cache_state(self.cache) == self.state
        self.cache.check()


def every_way(cache, table, total_len=PS, k=None, v=None, start=0):
    """Each API that takes a table: direct write, gather, bind + view write."""
    if k is None:
        k, v = kv(table.shape[0], device=cache.device, dtype=cache.dtype)
    yield lambda: cache.write(0, table, start, k, v)
    yield lambda: cache.gather(0, table, total_len)
    yield lambda: cache.bind(table, total_len)
    yield lambda: cache.slot_index(table, start, k.shape[1])


# ---- 3. page-table ids -----------------------------------------------------------------------

@pytest.mark.parametrize("bad", [2**62, -(2**62), N, N + 1, -2, 2**31 - 1])
def test_out_of_range_ids_are_refused_and_write_nothing(bad, device):
    cache = make(device)
    table = torch.tensor([[bad]], device=device)
    for call in every_way(cache, table):
        with Untouched(cache), pytest.raises(PageOutOfRange, match=f"page {bad}"):
            call()


def test_the_huge_id_from_the_report_no_longer_lands_on_page_0():
    cache = make()
    with Untouched(cache), pytest.raises(PageOutOfRange):
        cache.bind(torch.tensor([[2**62]]), 4).write(0, 0, *kv())


@pytest.mark.parametrize("page", [4, 5])  # free, then cached (refs 0)
def test_tables_naming_pages_nobody_holds_are_refused(page, device):
    cache = make(device)
    tokens = list(range(PS))
    cache.record_prefix([1], tokens)
    if page == 5:  # make page 5 a cached prefix page: hold, record, release
        cache.inc_ref(1)
        cache.free(1)
        cache.free(1)  # page 1 is now cached, refs 0
        page = 1
    table = torch.tensor([[0, page]], device=device)
    for call in every_way(cache, table, 2 * PS):
        with Untouched(cache), pytest.raises(PageNotAllocated, match=f"page {page}"):
            call()
    # The prefix hit still serves the K/V it recorded.
    assert cache.lookup_prefix(tokens) == ([1] if page == 1 else [1])


def test_a_view_whose_page_was_released_refuses_to_write(device):
    cache = make(device)
    table = torch.tensor([[0, 1]], device=device)
    view = cache.bind(table, 2 * PS)
    k, v = kv(device=device)
    view.write(0, 0, k, v)  # fine while held
    cache.free(1)
    with Untouched(cache), pytest.raises(PageNotAllocated, match="page 1"):
        view.write(1, 0, k, v)  # same positions: the cached slot index must not bypass it


def test_host_tables_bind_to_the_cache_device(device):
    """The scheduler's path: a CPU table is checked on the host and copied over by bind."""
    cache = make(device)
    host = torch.tensor([[0, 1], [2, -1]])
    view = cache.bind(host, 2 * PS)
    assert view.page_table.device == cache.device
    k, v = kv(2, 2 * PS, device=device)
    view.write(0, 0, k, v)
    got_k, got_v = view.gather(0)
    assert got_k.eq(1).all() and got_v[0].eq(2).all()
    with pytest.raises(PageNotAllocated):
        cache.bind(torch.tensor([[0, 4]]), 2 * PS)


def test_a_table_changed_in_place_is_checked_again(device):
    cache = make(device)
    table = torch.tensor([[0, 1]], device=device)
    k, v = kv(device=device)
    cache.write(0, table, 0, k, v)
    table[0, 1] = 5  # a free page, in place: same tensor, new version
    with Untouched(cache), pytest.raises(PageNotAllocated):
        cache.write(0, table, 0, k, v)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.lists(st.integers(-3, N + 2) | st.sampled_from([2**40, -(2**40)]),
                              min_size=1, max_size=3), min_size=1, max_size=3),
       start=st.integers(0, 2 * PS))
def test_any_table_writes_only_held_pages_or_nothing(rows, start):
    """Random tables: either refused by name with nothing changed, or every page written is
    one in use, and pages not in use (and their K/V) never change."""
    cache = make(held=(0, 1, 2))
    width = max(map(len, rows))
    table = torch.tensor([r + [-1] * (width - len(r)) for r in rows])
    k, v = kv(len(rows), 2, dtype=torch.float32)
    k_before, v_before = cache._k_store.clone(), cache._v_store.clone()
    state = cache_state(cache)
    try:
        cache.write(0, table, start, k, v)
    except CacheError as e:
        twice = any(len({p for p in r if p != -1}) < len([p for p in r if p != -1])
                    for r in rows)
        past = start + 2 > width * PS
        assert isinstance(e, (PageOutOfRange, PageNotAllocated)) or (
            isinstance(e, BadPageTable) and twice) or (isinstance(e, BadTensor) and past)
        assert torch.equal(cache._k_store, k_before) and torch.equal(cache._v_store, v_before)
    else:
        assert all(p == -1 or (0 <= p < N and cache.refcount(p) > 0) for r in rows for p in r)
        for p in range(N):
            if cache.refcount(p) == 0:
                assert torch.equal(cache.k_cache[:, p], k_before[:, p])
                assert torch.equal(cache.v_cache[:, p], v_before[:, p])
    assert cache_state(cache) == state
    cache.check()


# ---- 3. K and V checked together -----------------------------------------------------------

def _bad_kv(device):
    k, v = kv(device=device)
    return {
        "v float64": (k, v.double()),
        "k float64": (k.double(), v),
        "k int": (k.long(), v),
        "numpy k": (k.cpu().numpy(), v),
        "numpy v": (k, v.cpu().numpy()),
        "list v": (k, v.tolist()),
        "v shape": (k, v[:, :2]),
        "v on meta": (k, torch.empty(v.shape, device="meta")),
    }


@pytest.mark.parametrize("which", list(_bad_kv("cpu")))
def test_bad_k_or_v_writes_nothing(which, device):
    cache = make(device)
    k, v = _bad_kv(device)[which]
    table = torch.tensor([[0]], device=device)
    view = cache.bind(table, PS)
    for call in (lambda: cache.write(0, table, 0, k, v), lambda: view.write(0, 0, k, v)):
        with Untouched(cache), pytest.raises(BadTensor):
            call()


@pytest.mark.parametrize("start,lengths", [
    (torch.tensor([0.5]), None), (torch.tensor([True]), None), (True, None),
    (np.int64(0), None), (0, torch.tensor([1.0])), (0, [1]), (torch.tensor([0, 0]), None),
])
def test_bad_positions_write_nothing(start, lengths, device):
    cache = make(device)
    table = torch.tensor([[0]], device=device)
    k, v = kv(S=1, device=device)
    with Untouched(cache), pytest.raises(BadTensor):
        cache.write(0, table, start, k, v, lengths)


@pytest.mark.parametrize("table", [np.array([[0]]), [[0]], torch.zeros(1, 0, dtype=torch.long)])
def test_tables_of_the_wrong_kind(table):
    cache = make()
    with Untouched(cache), pytest.raises(BadPageTable):
        cache.gather(0, table, 1)


# ---- 3. the view's slot index follows in-place changes ----------------------------------------

def test_start_pos_changed_in_place_moves_the_write(device):
    cache = make(device)
    view = cache.bind(torch.tensor([[0, 1]], device=device), 2 * PS)
    sp = torch.tensor([0], device=device)
    k, v = kv(S=1, device=device)
    view.write(0, sp, k, v)
    sp += 4  # the same tensor object, now naming position 4 (page 1, slot 0)
    view.write(0, sp, k * 3, v * 3)
    assert cache.k_cache[0, 0, 0].eq(1).all()  # position 0 kept the first write
    assert cache.k_cache[0, 1, 0].eq(3).all()  # position 4 got the second


def test_lengths_changed_in_place_are_honoured(device):
    cache = make(device)
    view = cache.bind(torch.tensor([[0]], device=device), PS)
    lengths = torch.tensor([1], device=device)
    k, v = kv(S=2, device=device)
    view.write(0, 0, k * 0 + 5, v)
    lengths_before = cache.k_cache[0, 0, 1].clone()
    view.write(0, 0, k * 0 + 6, v, lengths)
    assert cache.k_cache[0, 0, 0].eq(6).all() and torch.equal(cache.k_cache[0, 0, 1],
                                                             lengths_before)
    lengths += 1
    view.write(0, 0, k * 0 + 7, v, lengths)
    assert cache.k_cache[0, 0, :2].eq(7).all()


# ---- 3. alloc_n with a bad `out` -------------------------------------------------------------

@pytest.mark.parametrize("out", [(), "", 0, {}, frozenset()])
def test_alloc_n_with_a_bad_out_takes_nothing(out):
    cache = make(held=())
    with Untouched(cache), pytest.raises(TypeError):
        cache.alloc_n(2, out=out)
    assert cache.n_free == N


# ---- 3. where the check runs: once per forward, on the host ------------------------------------

def test_the_scheduler_hands_host_tables_and_each_forward_checks_once(monkeypatch, device):
    """The check reads ids on the host; the scheduler's tables are host tensors, checked in
    bind, so a CUDA run gains no sync: no layer's write or gather checks again."""
    from astrai.inference.scheduler import Scheduler, Task
    from astrai.model import ModelConfig, TinyModel

    cfg = ModelConfig(vocab_size=32, d_model=16, n_layers=3, n_heads=2, n_kv_heads=1,
                      head_dim=8, d_ff=16)
    cache = PagedCache(cfg.n_layers, 8, 4, 1, 8, device=device)
    sched = Scheduler(cache, TinyModel(cfg, device=device))
    checks, binds, forwards = [], [], []
    real_held, real_bind = cache.checked.require_held, cache.bind

    def held(pages, what):
        checks.append(what)
        return real_held(pages, what)

    def bind(table, *a, **k):
        binds.append(table.device.type)
        forwards.append(len(checks))
        return real_bind(table, *a, **k)

    monkeypatch.setattr(cache.checked, "require_held", held)
    monkeypatch.setattr(cache, "bind", bind)
    sched.submit(Task("a", [1, 2, 3, 4, 5], 4))
    sched.submit(Task("b", [6, 7], 3))
    sched.run()
    assert binds and set(binds) == {"cpu"}
    # One check per forward (its bind), none for the 3 layers' writes and gathers.
    assert len(checks) == len(binds)
    assert forwards == list(range(len(binds)))
