"""A step's state cannot be mixed up: nested atomic() blocks, snapshots bound to their cache,
and copies refused onto pages a prefix hit would read."""

from __future__ import annotations

import pytest
import torch

from astrai.errors import BadSnapshot, SharedPage
from astrai.inference.cache import PagedCache
from astrai.inference.scheduler import Scheduler, Task
from astrai.model import ModelConfig, TinyModel

PS, H, D = 2, 1, 2


class Owner:
    def __init__(self):
        self.page_table: list[int] = []


def state(cache: PagedCache) -> tuple:
    """What the cache holds: its pages' states, and the K/V of every page not free (a free
    page's K/V are read by no one, so an undone step need not put them back)."""
    recorded = tuple(p for p in range(cache.n_pages) if cache.is_recorded(p))
    kept = [p for p in range(cache.n_pages) if not cache.free_mask >> p & 1]
    return (cache.free_mask, cache.refs, cache.cached_pages, recorded,
            cache.k_cache[:, kept].clone(), cache.v_cache[:, kept].clone())


def same(a: tuple, b: tuple) -> bool:
    return a[:4] == b[:4] and torch.equal(a[4], b[4]) and torch.equal(a[5], b[5])


def fill(cache: PagedCache, pages: list[int], value: float) -> None:
    """Write `value` into every slot of `pages` (one row, from position 0)."""
    table = torch.tensor([pages])
    k = torch.full((1, len(pages) * PS, H, D), value)
    cache.write(0, table, 0, k, -k)


def cached_prefix(cache: PagedCache, tokens: list[int], value: float) -> list[int]:
    """Pages holding `tokens`' K/V (all `value`), recorded and then let go: cached."""
    owner = Owner()
    pages = cache.alloc_n(len(tokens) // PS, owner=owner)
    fill(cache, pages, value)
    assert cache.record_prefix(pages, tokens) == pages
    for p in reversed(pages):
        cache.free(p, owner=owner)
    assert set(cache.cached_pages) == set(pages)
    return pages


# ---- (a) nested atomic(): the outer snapshot survives the inner one ----------------------------


def test_an_outer_block_that_raises_puts_back_the_kv_an_inner_completed_block_evicted():
    cache = PagedCache(1, 4, PS, H, D)
    prompt = [1, 2, 3, 4]
    pages = cached_prefix(cache, prompt, 5.0)
    before = state(cache)
    with pytest.raises(RuntimeError), cache.atomic():
        with cache.atomic():  # a step inside: it takes every page, the cached ones evicted
            got = cache.alloc_n(4, owner=Owner())
            fill(cache, got, -1.0)
        assert cache.lookup_prefix(prompt) == []
        raise RuntimeError("the outer block fails")
    assert cache.lookup_prefix(prompt) == pages
    assert same(state(cache), before)  # the prefix's K/V are its tokens' again
    cache.check()


def test_an_inner_block_that_raises_leaves_the_outer_one_keeping_its_own_pages():
    cache = PagedCache(1, 4, PS, H, D)
    prompt = [1, 2, 3, 4]
    cached_prefix(cache, prompt, 5.0)
    before = state(cache)
    with pytest.raises(RuntimeError), cache.atomic():
        owner = Owner()
        first = cache.alloc_n(3, owner=owner)  # two free pages, then one cached page evicted
        fill(cache, first, -1.0)
        with pytest.raises(KeyError), cache.atomic():
            fill(cache, cache.alloc_n(1, owner=Owner()), -2.0)  # the other cached page
            raise KeyError("the inner block fails")
        fill(cache, cache.alloc_n(1, owner=Owner()), -3.0)  # taken again after the undo
        raise RuntimeError("then the outer one")
    assert same(state(cache), before)
    cache.check()


def test_a_block_around_a_scheduler_step_puts_back_what_the_step_evicted():
    """The issue's run: an outer block around Scheduler.step(), whose own atomic step evicts
    a cached prompt's pages for another request; the outer block raises."""
    cfg = ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
                      head_dim=8, d_ff=16, seed=3)
    cache = PagedCache(1, 4, 4, 1, 8)
    sched = Scheduler(cache, TinyModel(cfg), max_batch=2)
    prompt = [1, 2, 3, 4, 5, 6, 7, 8]
    sched.submit(Task("a", prompt, 1))
    sched.run()
    pages = cache.lookup_prefix(prompt)
    assert len(pages) == 2 and set(cache.cached_pages) == set(pages)
    before = state(cache)
    sched.submit(Task("b", list(range(9, 24)), 1))  # 15 tokens: every page, evicting a's
    with pytest.raises(RuntimeError), cache.atomic():
        sched.step()
        assert cache.lookup_prefix(prompt) == []
        raise RuntimeError("the outer block fails")
    assert cache.lookup_prefix(prompt) == pages
    assert same(state(cache), before)


# ---- (b) a snapshot belongs to its cache --------------------------------------------------------


@pytest.mark.parametrize("n_pages", [4, 2], ids=["same size", "fewer pages"])
def test_a_snapshot_of_another_cache_is_refused_and_changes_nothing(n_pages):
    cache, other = PagedCache(1, 4, PS, H, D), PagedCache(1, n_pages, PS, H, D)
    snap = other.snapshot()
    other.alloc_n(1)
    held = cache.alloc_n(3, owner=Owner())
    fill(cache, held, 2.0)
    before = state(cache)
    with pytest.raises(BadSnapshot, match="another cache"):
        cache.restore(snap)
    assert same(state(cache), before)
    cache.check()
    other.restore(snap)  # its own cache takes it
    assert other.n_free == n_pages


def test_a_snapshot_already_restored_or_closed_is_refused():
    cache = PagedCache(1, 4, PS, H, D)
    snap = cache.snapshot()
    cache.alloc_n(2)
    cache.restore(snap)
    cache.alloc_n(1)
    before = state(cache)
    with pytest.raises(BadSnapshot, match="closed"):
        cache.restore(snap)
    with cache.atomic() as done:
        pass
    with pytest.raises(BadSnapshot, match="closed"):
        cache.restore(done)
    assert same(state(cache), before)


def test_restoring_an_outer_snapshot_closes_the_inner_ones():
    cache = PagedCache(1, 4, PS, H, D)
    outer = cache.snapshot()
    inner = cache.snapshot()
    cache.alloc_n(2)
    cache.restore(outer)
    assert cache.n_free == 4
    with pytest.raises(BadSnapshot, match="closed"):
        cache.restore(inner)


# ---- (c) no copy onto a page the prefix index serves --------------------------------------------


def test_copy_page_onto_a_recorded_page_is_refused_and_changes_nothing():
    cache = PagedCache(1, 4, PS, H, D)
    owner = Owner()
    src, dst = cache.alloc_n(2, owner=owner)
    fill(cache, [src, dst], 1.0)
    cache.record_prefix([dst], [7, 8])  # dst: refs 1, recorded
    fill(cache, [src], 9.0)
    before = state(cache)
    with pytest.raises(SharedPage, match="records a prefix"):
        cache.copy_page(src, dst, PS, owner=owner)
    assert same(state(cache), before)
    assert cache.lookup_prefix([7, 8]) == [dst]
