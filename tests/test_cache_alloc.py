"""PagedCache allocator: construction, lowest-free order, alloc/alloc_n/free/inc_ref and errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from astrai.errors import (
    CacheError,
    DoubleFree,
    IntegrityError,
    PageNotAllocated,
    PageOutOfRange,
)
from astrai.inference.cache import PagedCache, pages_for
from astrai.inference.observer import Observer

SIZES = [1, 2, 63, 64, 65, 127, 128, 129, 130, 4096]


def full_mask(n: int) -> int:
    return (1 << n) - 1


# ---- construction ----------------------------------------------------------------------------


def test_shapes_dtype_and_fresh_state():
    cache = PagedCache(3, 10, 4, 2, 8, dtype=torch.bfloat16)
    for t in (cache.k_cache, cache.v_cache):
        assert tuple(t.shape) == (3, 10, 4, 2, 8)
        assert t.dtype == torch.bfloat16
        assert t.device.type == "cpu"
        assert not t.any()
    assert cache.k_cache.data_ptr() != cache.v_cache.data_ptr()
    assert cache.free_mask == full_mask(10)
    assert cache.refs == (0,) * 10
    assert cache.cached_pages == ()
    assert (cache.n_free, cache.n_cached, cache.n_used, cache.n_available) == (10, 0, 0, 10)
    assert (cache.n_layers, cache.n_pages, cache.page_size) == (3, 10, 4)
    assert (cache.n_kv_heads, cache.head_dim) == (2, 8)
    assert "n_pages=10" in repr(cache)
    cache.check()


def test_k_and_v_are_independent_storage():
    cache = PagedCache(2, 5, 3, 1, 2)
    cache.k_cache[1, 4] = 7.0
    assert not cache.v_cache.any()
    assert cache.k_cache[1, 4].eq(7.0).all() and cache.k_cache[0].eq(0).all()
    assert cache.k_cache[1, :4].eq(0).all()


ARGS = ("n_layers", "n_pages", "page_size", "n_kv_heads", "head_dim")


@pytest.mark.parametrize("name", ARGS)
@pytest.mark.parametrize("bad", [0, -1, 1.0, 2.5, "4", None, True, False, np.float64(3.0)])
def test_constructor_rejects_non_positive_or_non_int_sizes(name, bad):
    kwargs = {"n_layers": 1, "n_pages": 4, "page_size": 2, "n_kv_heads": 1, "head_dim": 2}
    kwargs[name] = bad
    with pytest.raises(ValueError):
        PagedCache(**kwargs)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_constructor_rejects_non_float_dtype(dtype):
    with pytest.raises(ValueError):
        PagedCache(1, 4, 2, 1, 2, dtype=dtype)


def test_pages_for():
    assert [pages_for(n, 4) for n in range(10)] == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    cache = PagedCache(1, 4, 3, 1, 1)
    assert [cache.pages_for(n) for n in (0, 1, 3, 4, 6, 7)] == [0, 1, 1, 2, 2, 3]


# ---- lowest-free order -----------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_alloc_takes_pages_in_order_then_minus_one(n, new_cache, unchanged):
    cache = new_cache(n)
    got = [cache.alloc() for _ in range(n)]
    assert got == list(range(n))
    assert cache.free_mask == 0
    assert cache.refs == (1,) * n
    assert (cache.n_free, cache.n_used, cache.n_available) == (0, n, 0)
    cache.check()
    with unchanged(cache):
        assert cache.alloc() == -1
        assert cache.alloc() == -1


@pytest.mark.parametrize("n", SIZES)
def test_alloc_refills_holes_lowest_first(n, new_cache):
    rng = random.Random(n)
    cache = new_cache(n)
    for _ in range(n):
        cache.alloc()
    holes = rng.sample(range(n), max(1, n // 3))
    for p in holes:  # freed in random order
        cache.free(p)
    assert cache.free_mask == sum(1 << p for p in holes)
    assert cache.n_free == len(holes)
    cache.check()
    assert [cache.alloc() for _ in holes] == sorted(holes)
    assert cache.alloc() == -1
    cache.check()


@pytest.mark.parametrize(
    "n, holes",
    [
        (65, [64, 63, 0]),
        (128, [127, 64, 63]),
        (130, [129, 128, 127, 64, 63]),
        (130, [129, 65]),
        (4096, [4095, 4032, 4031, 64, 63, 1]),
        (4096, [4095]),
    ],
)
def test_lowest_free_across_word_boundaries(n, holes, new_cache):
    cache = new_cache(n)
    cache.alloc_n(n)
    for p in holes:
        cache.free(p)
    for expect in sorted(holes):
        assert cache.alloc() == expect
        cache.check()
    assert cache.alloc() == -1


def test_alloc_interleaved_with_free_always_lowest(new_cache):
    rng = random.Random(7)
    n = 200
    cache = new_cache(n)
    used: set[int] = set()
    for _ in range(2000):
        if used and (len(used) == n or rng.random() < 0.45):
            p = rng.choice(sorted(used))
            cache.free(p)
            used.remove(p)
        else:
            expect = min(set(range(n)) - used)
            assert cache.alloc() == expect
            used.add(expect)
    assert cache.free_mask == sum(1 << p for p in range(n) if p not in used)
    assert cache.n_used == len(used)
    cache.check()


def test_free_whole_pool_returns_to_fresh_state(new_cache):
    cache = new_cache(130)
    pages = cache.alloc_n(130)
    for p in reversed(pages):
        cache.free(p)
    assert cache.free_mask == full_mask(130)
    assert cache.refs == (0,) * 130
    assert cache.n_free == cache.n_available == 130
    assert cache.alloc_n(3) == [0, 1, 2]


# ---- alloc_n ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5, 64, 65, 130])
def test_alloc_n_takes_lowest_pages(n, new_cache):
    cache = new_cache(130)
    cache.alloc_n(3)
    cache.free(1)
    got = cache.alloc_n(n)
    assert got == ([1] + list(range(3, 3 + n - 1)) if n <= 128 else [])
    cache.check()


def test_alloc_n_zero_is_empty_and_changes_nothing(new_cache, unchanged):
    cache = new_cache(4)
    cache.alloc()
    with unchanged(cache):
        assert cache.alloc_n(0) == []
    cache.alloc_n(3)
    with unchanged(cache):  # also on a full pool
        assert cache.alloc_n(0) == []


@pytest.mark.parametrize("bad", [-1, -5])
def test_alloc_n_negative_raises_value_error(bad, new_cache, unchanged):
    cache = new_cache(4)
    cache.alloc()
    with unchanged(cache), pytest.raises(ValueError):
        cache.alloc_n(bad)


@pytest.mark.parametrize("bad", [1.0, "2", None])
def test_alloc_n_non_int_raises_type_error(bad, new_cache, unchanged):
    cache = new_cache(4)
    with unchanged(cache), pytest.raises(TypeError):
        cache.alloc_n(bad)


def test_alloc_n_accepts_numpy_int(new_cache):
    cache = new_cache(4)
    assert cache.alloc_n(np.int64(2)) == [0, 1]


def test_alloc_n_all_or_nothing_on_free_pages(new_cache, unchanged):
    cache = new_cache(70)
    cache.alloc_n(60)
    with unchanged(cache):
        assert cache.alloc_n(11) == []
        assert cache.alloc_n(1000) == []
    assert cache.alloc_n(10) == list(range(60, 70))
    with unchanged(cache):
        assert cache.alloc_n(1) == []
    cache.check()


def test_alloc_n_all_or_nothing_never_evicts(new_cache, unchanged):
    cache = new_cache(6, page_size=2)
    prompt = [1, 2, 3, 4, 5, 6]
    pages = cache.alloc_n(3)
    assert cache.record_prefix(pages, prompt) == pages
    for p in pages:
        cache.free(p)  # all three cached now
    cache.alloc_n(2)  # 1 free page left + 3 cached = 4 available
    assert cache.n_available == 4
    with unchanged(cache, prompt):
        assert cache.alloc_n(5) == []
    assert cache.lookup_prefix(prompt) == pages
    # Exactly what is available: the free page first, then evictions in LRU order.
    assert cache.alloc_n(4) == [5, 0, 1, 2]
    assert cache.cached_pages == () and cache.lookup_prefix(prompt) == []
    cache.check()


class Owner:
    def __init__(self, *pages):
        self.page_table = list(pages)


def test_alloc_n_appends_to_the_owners_table(new_cache, unchanged):
    cache = new_cache(5)
    owner = Owner(99)
    assert cache.alloc_n(3, owner=owner) == [0, 1, 2]
    assert owner.page_table == [99, 0, 1, 2]
    with unchanged(cache):
        assert cache.alloc_n(3, owner=owner) == []
    assert owner.page_table == [99, 0, 1, 2]
    cache.inc_ref(1, owner=owner)
    assert owner.page_table == [99, 0, 1, 2, 1] and cache.refcount(1) == 2


def test_an_owner_without_a_table_is_refused_before_anything_moves(new_cache, unchanged):
    cache = new_cache(5)
    with unchanged(cache), pytest.raises(TypeError, match="page_table"):
        cache.alloc_n(2, owner="A")
    with unchanged(cache), pytest.raises(TypeError, match="page_table"):
        cache.inc_ref(0, owner=object())


# ---- free / inc_ref --------------------------------------------------------------------------


def test_free_drops_one_reference_at_a_time(new_cache):
    cache = new_cache(4)
    p = cache.alloc()
    cache.inc_ref(p)
    cache.inc_ref(p)
    assert cache.refs[p] == 3 and cache.refcount(p) == 3
    cache.free(p)
    cache.free(p)
    assert cache.refs[p] == 1
    assert not cache.free_mask & 1
    assert cache.n_used == 1
    cache.free(p)
    assert cache.refs[p] == 0
    assert cache.free_mask & 1
    assert cache.n_used == 0 and cache.n_free == 4
    cache.check()


def test_inc_ref_keeps_page_out_of_the_pool(new_cache):
    cache = new_cache(2)
    a = cache.alloc()
    cache.inc_ref(a)
    cache.free(a)
    assert cache.alloc() == 1
    assert cache.alloc() == -1  # page 0 still held by the second reference


def test_double_free_raises_and_changes_nothing(new_cache, unchanged):
    cache = new_cache(70)
    cache.alloc_n(66)
    cache.free(65)
    cache.free(3)
    for p in (3, 65):
        with unchanged(cache), pytest.raises(DoubleFree):
            cache.free(p)
        with unchanged(cache), pytest.raises(PageNotAllocated):
            cache.free(p)  # DoubleFree is a PageNotAllocated
        with unchanged(cache), pytest.raises(CacheError):
            cache.free(p)


def test_free_of_never_allocated_page_raises(new_cache, unchanged):
    cache = new_cache(70)
    cache.alloc()
    for p in (1, 63, 64, 69):
        with unchanged(cache), pytest.raises(PageNotAllocated):
            cache.free(p)


def test_inc_ref_of_free_page_raises(new_cache, unchanged):
    cache = new_cache(70)
    cache.alloc_n(2)
    cache.free(0)
    for p in (0, 2, 64, 69):
        with unchanged(cache), pytest.raises(PageNotAllocated):
            cache.inc_ref(p)


OPS = {
    "free": lambda c, p: c.free(p),
    "inc_ref": lambda c, p: c.inc_ref(p),
    "refcount": lambda c, p: c.refcount(p),
    "record_prefix": lambda c, p: c.record_prefix([p], [1] * c.page_size),
}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("bad", [-1, -65, 70, 71, 10**9, np.int64(-1), np.int32(70)])
def test_out_of_range_page_raises(op, bad, new_cache, unchanged):
    cache = new_cache(70)
    cache.alloc_n(70)
    cache.free(5)
    with unchanged(cache), pytest.raises(PageOutOfRange):
        OPS[op](cache, bad)
    with unchanged(cache), pytest.raises(IndexError):
        OPS[op](cache, bad)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("bad", [1.0, np.float64(1.0), "1", None, True, False, [1], (1,)])
def test_non_int_page_raises_type_error(op, bad, new_cache, unchanged):
    cache = new_cache(4)
    cache.alloc_n(3)
    cache.inc_ref(1)
    with unchanged(cache), pytest.raises(TypeError):
        OPS[op](cache, bad)


@pytest.mark.parametrize("cast", [np.int64, np.int32, np.uint8, np.int16, int])
def test_numpy_ints_accepted(cast, new_cache):
    cache = new_cache(70)
    cache.alloc_n(70)
    p = cast(66)
    cache.inc_ref(p)
    assert cache.refs[66] == 2
    cache.free(p)
    cache.free(p)
    assert cache.free_mask == 1 << 66
    assert cache.alloc() == 66
    cache.check()


def test_zero_dim_int_tensor_accepted_float_tensor_rejected(new_cache, unchanged):
    cache = new_cache(4)
    cache.alloc_n(2)
    cache.free(torch.tensor(1))
    assert cache.refs == (1, 0, 0, 0)
    with unchanged(cache), pytest.raises(TypeError):
        cache.free(torch.tensor(0.0))


# ---- views and counts ------------------------------------------------------------------------


def test_views_are_snapshots_not_handles(new_cache):
    cache = new_cache(3)
    cache.alloc()
    refs = cache.refs
    assert isinstance(refs, tuple) and isinstance(cache.cached_pages, tuple)
    assert isinstance(cache.free_mask, int)
    with pytest.raises(TypeError):
        refs[0] = 5  # type: ignore[index]
    cache.alloc()
    assert refs == (1, 0, 0)  # the old snapshot did not move
    assert cache.refs == (1, 1, 0)


def test_counts_add_up_through_a_mixed_history(new_cache):
    rng = random.Random(3)
    cache = new_cache(100, page_size=1)
    for _ in range(300):
        r = rng.random()
        used = [p for p in range(100) if cache.refs[p]]
        if r < 0.4:
            cache.alloc()
        elif r < 0.7 and used:
            cache.free(rng.choice(used))
        elif r < 0.8 and used:
            cache.inc_ref(rng.choice(used))
        elif used:
            p = rng.choice(used)
            if not cache.is_recorded(p):
                cache.record_prefix([p], [p])
        refs = cache.refs
        cached = set(cache.cached_pages)
        free = {p for p in range(100) if cache.free_mask >> p & 1}
        assert cache.n_free == len(free)
        assert cache.n_cached == len(cached)
        assert cache.n_used == sum(1 for r in refs if r > 0)
        assert cache.n_available == cache.n_free + cache.n_cached
        assert cache.n_free + cache.n_cached + cache.n_used == 100
        assert all(refs[p] == 0 for p in free | cached)
        assert not free & cached
        cache.check()


# ---- check() detects corruption ----------------------------------------------------------------


def _corruptions():
    def bit_on_used_page(c):
        c.allocator._words[0] |= 1

    def lost_bit(c):
        c.allocator._words[1] &= ~(1 << 3)

    def negative_ref(c):
        c._refs[80] = -1

    def summary_drift(c):
        c.allocator._summary &= ~(1 << 1)

    def summary_past_end(c):
        c.allocator._summary |= 1 << 5

    def count_drift(c):
        c.allocator.n_free += 1

    def cached_without_entry(c):
        c.prefix._lru[2] = None
        c._refs[2] = 0

    return [
        bit_on_used_page,
        lost_bit,
        negative_ref,
        summary_drift,
        summary_past_end,
        count_drift,
        cached_without_entry,
    ]


@pytest.mark.parametrize("corrupt", _corruptions(), ids=lambda f: f.__name__)
def test_check_detects_corruption(corrupt, new_cache):
    cache = new_cache(130)
    cache.alloc_n(10)
    cache.check()
    corrupt(cache)
    with pytest.raises(IntegrityError):
        cache.check()


# ---- observer (allocation side) --------------------------------------------------------------


class Recorder(Observer):
    def __init__(self):
        self.events = []

    def on_alloc(self, page, owner=None):
        self.events.append(("alloc", page))

    def on_free(self, page, refs, owner=None):
        self.events.append(("free", page, refs))

    def on_cache(self, page):
        self.events.append(("cache", page))

    def on_evict(self, page):
        self.events.append(("evict", page))

    def on_share(self, page, owner, revived):
        self.events.append(("share", page, revived))

    def on_record(self, pages, owner=None):
        self.events.append(("record", list(pages)))


def test_observer_sees_alloc_free_share(new_cache):
    cache = new_cache(3)
    rec = cache.observer = Recorder()
    a = cache.alloc()
    b, c = cache.alloc_n(2)
    cache.alloc()  # -1: no event
    cache.alloc_n(2)  # []: no event
    cache.inc_ref(b)
    cache.free(b)
    cache.free(b)
    cache.free(a)
    with pytest.raises(DoubleFree):
        cache.free(a)  # an error: no event
    with pytest.raises(PageNotAllocated):
        cache.inc_ref(a)
    assert rec.events == [
        ("alloc", 0),
        ("alloc", 1),
        ("alloc", 2),
        ("share", 1, False),
        ("free", 1, 1),
        ("free", 1, 0),
        ("free", 0, 0),
    ]
    assert cache.free_mask == 0b011  # refs 0 and recording no prefix: free again
    assert (a, b, c) == (0, 1, 2)


def test_observer_is_optional_and_does_not_change_results(new_cache):
    plain, watched = new_cache(70), new_cache(70)
    watched.observer = Recorder()
    for cache in (plain, watched):
        cache.alloc_n(66)
        for p in (65, 3, 64):
            cache.free(p)
        cache.alloc()
    assert plain.refs == watched.refs and plain.free_mask == watched.free_mask
