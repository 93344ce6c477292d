"""The cache's hot paths keep every guarantee of the slow ones they shortcut: the allocator's
lowest-word hint and 30-page words, PagedCache.alloc without alloc_n, K/V written through
16-byte elements, and a view's per-layer write that checks only that it is the checked step."""

from __future__ import annotations

import random

import pytest
import torch
from test_bad_input_cache import Untouched

from astrai.errors import BadTensor, DoubleFree
from astrai.inference.allocator import PageAllocator, join_words, was_free
from astrai.inference.cache import PagedCache
from astrai.inference.observer import Observer

# ---- allocator ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n_pages", [1, 29, 30, 31, 60, 61, 130])
def test_allocator_keeps_its_lowest_word_hint_through_any_mix_of_calls(n_pages):
    """alloc, free (shared pages too), release and snapshot/restore in random order: always
    the lowest free page, and problems() (which checks _low against the summary) stays []."""
    alloc, rng = PageAllocator(n_pages), random.Random(n_pages)
    free, refs = set(range(n_pages)), [0] * n_pages
    saved = None
    for _ in range(40 * n_pages):
        op = rng.random()
        held = [p for p in range(n_pages) if refs[p]]
        if op < 0.45:
            page = alloc.alloc()
            assert page == (min(free) if free else -1)
            if page >= 0:
                free.remove(page)
                refs[page] = 1
        elif op < 0.55 and held:  # a second holder (the cache's inc_ref), then one free
            page = rng.choice(held)
            alloc.refs[page] += 1
            assert alloc.free(page) == refs[page]
        elif op < 0.85 and held:
            page = rng.choice(held)
            assert alloc.free(page) == 0
            refs[page] = 0
            free.add(page)
        elif op < 0.9 and held:  # refs dropped elsewhere (a cached page given back)
            page = rng.choice(held)
            alloc.refs[page] = refs[page] = 0
            alloc.release(page)
            free.add(page)
        elif op < 0.95:
            saved = (alloc.snapshot(), set(free), list(refs))
        elif saved is not None:
            alloc.restore(saved[0])
            free, refs = set(saved[1]), list(saved[2])
        assert alloc.problems() == []
        assert alloc.n_free == len(free) and alloc.free_mask == sum(1 << p for p in free)
        assert all(alloc.is_free(p) == (p in free) for p in range(n_pages))
    for page in [p for p in range(n_pages) if not refs[p]][:3]:
        with pytest.raises(DoubleFree):
            alloc.free(page)
    assert alloc.problems() == [] and alloc.n_free == len(free)


def test_a_full_pool_takes_nothing_and_frees_in_any_order():
    alloc = PageAllocator(95)
    assert [alloc.alloc() for _ in range(95)] == list(range(95))
    assert alloc.alloc() == -1 and alloc.n_free == 0 and alloc.problems() == []
    for page in (94, 3, 60, 31, 30):
        alloc.free(page)
    assert [alloc.alloc() for _ in range(6)] == [3, 30, 31, 60, 94, -1]


def test_alloc_is_one_call():
    assert PageAllocator.alloc is PageAllocator._take


def test_a_corrupted_hint_is_named():
    alloc = PageAllocator(100)
    alloc.alloc()
    alloc._low = 2
    assert alloc.problems() == ["_low is word 2; the lowest with a free page is 0"]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64, 1000])
def test_join_words_is_or_of_each_word_at_its_place(n):
    rng = random.Random(n)
    words = [rng.getrandbits(30) for _ in range(n)]
    want = 0
    for w, word in enumerate(words):
        want |= word << (30 * w)
    assert join_words(words) == want


def test_was_free_reads_the_snapshot_not_the_allocator_now():
    alloc = PageAllocator(70)
    taken = [alloc.alloc() for _ in range(40)]
    alloc.free(taken[7])
    saved = alloc.snapshot()
    mask = alloc.free_mask
    alloc.alloc()  # takes page 7 again: the snapshot must still say it was free
    assert [was_free(saved, p) for p in range(70)] == [bool(mask >> p & 1) for p in range(70)]


# ---- PagedCache.alloc: alloc_n(1) without the list ---------------------------------------------


class Events(Observer):
    def __init__(self):
        self.seen = []

    def on_alloc(self, page, owner):
        self.seen.append(("alloc", page, owner))

    def on_evict(self, page):
        self.seen.append(("evict", page))


class Owner:
    def __init__(self):
        self.page_table = []


def _with_cached_pages():
    cache = PagedCache(1, 4, 2, 1, 2)
    pages = cache.alloc_n(4)
    cache.record_prefix(pages[:2], [1, 2, 3, 4])
    for p in pages:
        cache.free(p)  # 0 and 1 stay cached, 2 and 3 are free
    cache.alloc_n(2)  # the free ones
    cache.observer = Events()
    return cache


def test_alloc_takes_what_alloc_n_of_one_takes_evictions_and_events_included():
    one, n = _with_cached_pages(), _with_cached_pages()
    a, b = Owner(), Owner()
    got_one = [one.alloc(owner=a) for _ in range(3)]
    got_n = [(n.alloc_n(1, owner=b) or [-1])[0] for _ in range(3)]
    assert got_one == got_n == [0, 1, -1]  # the LRU cached page first, then none
    assert one.observer.seen == [("evict", 0, ), ("alloc", 0, a), ("evict", 1), ("alloc", 1, a)]
    assert a.page_table == b.page_table == [0, 1]
    assert one.refs == n.refs and one.free_mask == n.free_mask
    one.check()


def test_alloc_inside_a_failed_step_gives_the_evicted_page_its_kv_back():
    cache = _with_cached_pages()
    cache.kv._k_store[:, 0] = 5.0
    with pytest.raises(RuntimeError), cache.atomic():
        page = cache.alloc()
        cache.kv._k_store[:, page] = -1.0  # the new owner writes over the cached prefix
        raise RuntimeError("the step fails")
    assert (cache.kv._k_store[:, 0] == 5.0).all() and cache.lookup_prefix([1, 2, 3]) == [0]
    cache.check()


def test_alloc_with_a_bad_owner_takes_nothing():
    cache = PagedCache(1, 4, 2, 1, 2)
    with pytest.raises(TypeError):
        cache.alloc(owner=object())
    assert cache.n_free == 4


# ---- K/V through 16-byte elements --------------------------------------------------------------

H, D, PS = 2, 8, 4  # 32 bytes a head in float32, 16 in bfloat16: both go through complex128


def wide_cache(dtype=torch.float32, layers=2, n_pages=8):
    cache = PagedCache(layers, n_pages, PS, H, D, dtype=dtype)
    cache.alloc_n(n_pages)
    cache.kv.wide_from = 1  # every write through the wide store, however small
    g = torch.Generator().manual_seed(0)
    for t in (cache._k_store, cache._v_store):
        t.copy_(torch.randn(t.shape, generator=g).to(dtype))
    return cache


def reference(cache, layer, table, start, k, v, lengths=None):
    """The live pages after a per-token write (the spec), on copies (padding goes to the null
    page, which holds nothing anyone reads)."""
    ks, vs = cache.k_cache.clone(), cache.v_cache.clone()
    rows = table.tolist()
    for b, row in enumerate(rows):
        s = start if isinstance(start, int) else int(start[b])
        for t in range(k.shape[1]):
            if lengths is not None and t >= int(lengths[b]):
                continue
            page = row[(s + t) // PS]
            if page >= 0:
                ks[layer, page, (s + t) % PS] = k[b, t]
                vs[layer, page, (s + t) % PS] = v[b, t]
    return ks, vs


class Counting:
    def __init__(self, store):
        self.calls, self.real = 0, store.write_slots

    def __call__(self, *args):
        self.calls += 1
        return self.real(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_wide_writes_equal_the_per_token_spec(dtype):
    cache = wide_cache(dtype)
    wide = cache.kv._wide
    assert wide is not None and wide.dtype == torch.complex128
    narrow, through = Counting(cache.kv), Counting(wide)
    cache.kv.write_slots, wide.write_slots = narrow, through
    table = torch.tensor([[3, 0, -1], [5, 1, 6]])
    g = torch.Generator().manual_seed(1)
    for layer, start, lengths in ((0, 0, None), (1, torch.tensor([2, 5]), torch.tensor([3, 1]))):
        k, v = (torch.randn(2, 4, H, D, generator=g).to(dtype) for _ in "kv")
        want = reference(cache, layer, table, start, k, v, lengths)
        cache.write(layer, table, start, k, v, lengths)
        assert torch.equal(cache.k_cache, want[0]) and torch.equal(cache.v_cache, want[1])
    assert through.calls == 2 and narrow.calls == 0


def test_wide_writes_keep_every_bit():
    """complex128 moves bytes: NaN payloads, -0.0, infinities and subnormals arrive as sent."""
    cache, plain = wide_cache(), wide_cache()
    plain.kv._wide = None  # the float32 loop, for comparison
    bits = torch.tensor([0x7FC01234, 0xFF800001, 0x80000000, 0x7F800000, 0x00000001, 0x3F800000],
                        dtype=torch.int64).to(torch.int32)
    k = bits.repeat(H * D * 4 // 6 + 1)[: H * D * 4].view(torch.float32).view(1, 4, H, D)
    table = torch.tensor([[2]])
    for c in (cache, plain):
        c.write(0, table, 0, k, k.flip(-1))
    assert torch.equal(cache._k_store.view(torch.int32), plain._k_store.view(torch.int32))
    assert torch.equal(cache._v_store.view(torch.int32), plain._v_store.view(torch.int32))
    assert torch.equal(cache.k_cache[0, 2].view(torch.int32), k[0].view(torch.int32))


@pytest.mark.parametrize("make", ["transposed", "offset", "strided_last"])
def test_inputs_the_wide_store_cannot_take_still_write_right(make):
    """A k or v that cannot be seen in 16-byte elements (an offset inside one, a last dim that
    is not contiguous) goes the float32 way; one that can (a transposed layout) goes wide."""
    cache = wide_cache()
    g = torch.Generator().manual_seed(2)
    if make == "transposed":
        k = torch.randn(2, H, 4, D, generator=g).transpose(1, 2)
    elif make == "offset":
        k = torch.randn(2, 4, H, D + 1, generator=g)[..., 1:]
    else:
        k = torch.randn(2, 4, H, 2 * D, generator=g)[..., ::2]
    v = torch.randn(2, 4, H, D, generator=g)
    table = torch.tensor([[0, 1], [2, 3]])
    want = reference(cache, 0, table, 0, k, v)
    cache.write(0, table, 0, k, v)
    assert torch.equal(cache.k_cache, want[0]) and torch.equal(cache.v_cache, want[1])


def test_the_unchecked_write_refuses_another_dtype_instead_of_reading_its_bytes():
    cache = wide_cache()
    slots = cache.slot_index(torch.tensor([[0]]), 0, PS)
    k = torch.ones(1, PS, H, D, dtype=torch.float64)  # as many bytes as the rows hold: viewable
    with Untouched(cache), pytest.raises(RuntimeError, match="dtype"):
        cache.write_slots(0, slots, k, k)


def test_small_writes_and_odd_heads_stay_narrow():
    cache = PagedCache(1, 8, PS, H, D)
    cache.alloc_n(8)
    assert cache.kv.wide_from == 16 * 1024 // (H * D * 4)
    narrow, through = Counting(cache.kv), Counting(cache.kv._wide)
    cache.kv.write_slots, cache.kv._wide.write_slots = narrow, through
    cache.write(0, torch.tensor([[0]]), 0, torch.ones(1, 2, H, D), torch.ones(1, 2, H, D))
    assert (narrow.calls, through.calls) == (1, 0)
    assert PagedCache(1, 2, PS, 2, 3).kv._wide is None  # 12 bytes a head: no 16-byte view
    assert PagedCache(1, 2, PS, 1, 1, dtype=torch.float64).kv._wide is None  # 8 bytes a head


# ---- the view: checked once per step, then only "is this the checked step?" --------------------


def bound(cache, table=None):
    table = torch.tensor([[0, 1], [2, 3]]) if table is None else table
    return cache.bind(table, 2 * PS)


def test_after_a_checked_step_no_layer_checks_again(monkeypatch):
    cache = wide_cache(layers=4)
    view = bound(cache)
    start, lengths = torch.tensor([1, 0]), torch.tensor([3, 2])
    calls = []
    for name in ("check_kv", "check_table", "slot_index"):
        real = getattr(cache.checked, name)
        monkeypatch.setattr(cache.checked, name,
                            lambda *a, _r=real, _n=name, **kw: (calls.append(_n), _r(*a, **kw))[1])
    for layer in range(4):
        view.write(layer, start, *(torch.randn(2, 3, H, D) for _ in "kv"), lengths)
    assert sorted(calls) == ["check_kv", "check_table", "slot_index"]


@pytest.mark.parametrize("bad", ["v float64", "k int", "v on meta", "v list", "k shape",
                                 "v 3d", "v other batch"])
def test_a_bad_k_or_v_after_a_checked_step_is_still_refused(bad):
    cache = wide_cache()
    view = bound(cache)
    k, v = torch.randn(2, 3, H, D), torch.randn(2, 3, H, D)
    view.write(0, 0, k, v)  # the checked step
    k2, v2 = {
        "v float64": (k, v.double()),
        "k int": (k.int(), v),
        "v on meta": (k, torch.empty(v.shape, device="meta")),
        "v list": (k, v.tolist()),
        "k shape": (torch.randn(2, 3, D, H), v),  # as many elements, another shape
        "v 3d": (k, v.reshape(6, H, D)),
        "v other batch": (k, torch.randn(1, 3, H, D)),
    }[bad]
    with Untouched(cache), pytest.raises(BadTensor):
        view.write(1, 0, k2, v2)
    view.write(1, 0, k, v)  # and the step goes on


def test_an_equal_int_position_is_the_same_step():
    cache = wide_cache(n_pages=200)
    view = cache.bind(torch.arange(200).view(2, 100), 100 * PS)
    calls = []
    real = cache.checked.slot_index
    cache.checked.slot_index = lambda *a: (calls.append(a), real(*a))[1]
    k = torch.ones(2, 1, H, D)
    for layer in range(2):
        view.write(layer, int("300"), k * layer, k)  # equal, not the same int object
    assert len(calls) == 1
    assert (cache.k_cache[1, 300 // PS, 0] == 1).all() and (cache.k_cache[0, 75, 0] == 0).all()


def test_positions_made_under_inference_mode_are_followed_when_changed_in_place():
    """Such tensors keep no version, so no write can be skipped past as 'the same step'."""
    cache = wide_cache()
    view = bound(cache)
    k = torch.ones(2, 1, H, D)
    with torch.inference_mode():
        start = torch.tensor([0, 0])
        view.write(0, start, k, k)
        start += 5  # page 1 / page 3, slot 1
        view.write(0, start, k * 3, k)
    assert (cache.k_cache[0, 0, 0] == 1).all() and (cache.k_cache[0, 1, 1] == 3).all()
    assert (cache.k_cache[0, 3, 1] == 3).all()


def test_a_tensor_subclass_is_checked_in_full_every_layer_and_written():
    cache = wide_cache()
    view = bound(cache)
    k = torch.nn.Parameter(torch.randn(2, 3, H, D), requires_grad=False)
    for layer in range(2):
        view.write(layer, 0, k, k)
    assert torch.equal(cache.k_cache[1, 0, :3], k[0]) and torch.equal(cache.k_cache[1, 2, :3],
                                                                      k[1])


def test_the_bench_baseline_keeps_the_allocator_contract():
    from bench.bench_cache import DequeAllocator

    a = DequeAllocator(2)
    assert [a.alloc(), a.alloc(), a.alloc()] == [0, 1, -1]
    a.refs[0] += 1
    assert a.free(0) == 1 and a.free(0) == 0 and a.alloc() == 0
    with pytest.raises(DoubleFree):
        a.free(1) or a.free(1)
