"""The three parts PagedCache composes, each on its own: the page allocator (free bits,
refcounts, lowest free first), the prefix index (chained keys, LRU of cached pages) and the K/V
store (slot write, page gather, page copy); and the snapshot an atomic step restores from."""

from __future__ import annotations

import random
from collections import deque

import pytest
import torch

from astrai.errors import DoubleFree, PrefixConflict
from astrai.inference.allocator import PageAllocator
from astrai.inference.cache import PagedCache
from astrai.inference.kv import KVStore
from astrai.inference.prefix import PrefixIndex
from astrai.inference.state import undeclared

# ---- allocator -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_pages", [1, 63, 64, 65, 200, 4096])
def test_allocator_hands_out_the_lowest_free_page_every_time(n_pages):
    alloc, rng = PageAllocator(n_pages), random.Random(n_pages)
    free, held = set(range(n_pages)), []
    # the whole-pool checks are O(pages): every step on small pools, every 61st on big ones
    every = 1 if n_pages <= 256 else 61
    for i in range(3 * n_pages):
        if free and (rng.random() < 0.6 or len(free) == n_pages):
            page = alloc.alloc()
            assert page == min(free) and alloc.refs[page] == 1
            free.remove(page)
            held.append(page)
        else:
            page = held.pop(rng.randrange(len(held)))
            assert alloc.free(page) == 0
            free.add(page)
        assert alloc.n_free == len(free)
        if i % every == 0:
            assert alloc.problems() == []
            assert alloc.free_mask == sum(1 << p for p in free)
    assert alloc.problems() == [] and alloc.free_mask == sum(1 << p for p in free)
    while free:
        assert alloc.alloc() == min(free)
        free.remove(min(free))
    assert alloc.alloc() == -1 and alloc.n_free == 0


def test_allocator_counts_holders_and_refuses_a_double_free():
    alloc = PageAllocator(4)
    page = alloc.alloc()
    alloc.refs[page] += 1  # a second holder (the cache's inc_ref)
    assert alloc.free(page) == 1 and not alloc.is_free(page)
    assert alloc.free(page) == 0 and alloc.is_free(page)
    with pytest.raises(DoubleFree):
        alloc.free(page)
    assert alloc.refs[page] == 0 and alloc.n_free == 4 and alloc.problems() == []


def test_allocator_problems_name_a_corrupted_mask():
    alloc = PageAllocator(70)
    alloc.alloc()
    alloc._words[0] |= 1  # page 0 is held but its bit says free
    assert alloc.problems() == ["n_free 69 != 70 set bits", "a free page has holders"]


def test_allocator_matches_a_deque_free_list_when_freed_in_order():
    """Freeing lowest-first, both hand pages out in the same order (the bench's baseline)."""
    alloc, free_list = PageAllocator(130), deque(range(130))
    for _ in range(3):
        taken = [alloc.alloc() for _ in range(100)]
        assert taken == [free_list.popleft() for _ in range(100)]
        for p in sorted(taken):
            alloc.free(p)
        free_list = deque(sorted([*free_list, *taken]))


# ---- prefix index ----------------------------------------------------------------------------


def test_prefix_index_records_looks_up_parks_revives_and_evicts_oldest_first():
    index = PrefixIndex(page_size=2)
    tokens = [1, 2, 3, 4, 5]
    assert index.record_prefix([7, 3], tokens) == ([7, 3], [])
    assert index.lookup_prefix(tokens) == [7, 3] and index.lookup_prefix([1, 2, 9, 9]) == [7]
    assert index.keys(tokens) == [index.key_of(7), index.key_of(3)]
    assert index.record_prefix([5, 6], tokens) == ([], [])  # already recorded elsewhere
    assert index.park(3) and index.park(7) and not index.park(9)
    assert index.cached_pages == (3, 7)
    index.revive(3)
    assert index.cached_pages == (7,)
    assert index.evict_lru() == 7 and index.evict_lru() == -1
    assert index.lookup_prefix(tokens) == []  # the head is gone: nothing reachable
    assert index.problems() == []


def test_prefix_index_replaces_an_orphan_and_hands_back_the_cached_page():
    index = PrefixIndex(page_size=2)
    assert index.record_prefix([0, 1], [1, 2, 3, 4])[0] == [0, 1]
    index.park(1)  # page 1 cached; then its parent page 0 is forgotten
    index.forget(0)
    # the same tokens again: page 1's entry is an orphan, replaced, and page 1 handed back
    assert index.record_prefix([4, 5], [1, 2, 3, 4]) == ([4, 5], [1])
    assert index.lookup_prefix([1, 2, 3, 4]) == [4, 5] and index.cached_pages == ()
    assert index.problems() == []


def test_prefix_index_refuses_a_page_recorded_twice_and_changes_nothing():
    index = PrefixIndex(page_size=2)
    index.record_prefix([0], [1, 2])
    before = index.snapshot()
    with pytest.raises(PrefixConflict):
        index.record_prefix([0], [3, 4])
    assert index.snapshot() == before


# ---- K/V store -------------------------------------------------------------------------------


def test_kv_store_writes_slots_gathers_pages_and_copies_a_page():
    store = KVStore(2, 4, 3, 1, 2, torch.device("cpu"), torch.float32)
    table = torch.tensor([[2, 0]])
    k = torch.arange(5 * 2, dtype=torch.float32).view(1, 5, 1, 2)
    slots = store.slot_index(table, 0, 5)
    assert slots.tolist() == [6, 7, 8, 0, 1]  # page 2 slots 0-2, then page 0 slots 0-1
    store.write_slots(1, slots, k, -k)
    got_k, got_v = store.gather_pages(1, store.gather_index(table, 2), 5)
    assert torch.equal(got_k, k) and torch.equal(got_v, -k)
    store.copy_page(2, 3, 2)
    assert torch.equal(store.k_cache[:, 3, :2], store.k_cache[:, 2, :2])
    assert not store.k_cache[:, 3, 2].any()  # slot 2 was not copied
    # -1 and padding go to the null page, behind the live ones
    assert store.slot_index(torch.tensor([[-1]]), 0, 1).tolist() == [4 * 3]


# ---- snapshot / restore ----------------------------------------------------------------------


def test_every_field_of_every_part_is_declared():
    cache = PagedCache(1, 8, 4, 1, 2)
    for part in (cache, cache.allocator, cache.prefix, cache.checked):
        assert undeclared(part) == [], type(part).__name__


def test_a_field_added_without_declaring_it_is_caught():
    class Grown(PageAllocator):
        def __init__(self, n_pages):
            super().__init__(n_pages)
            self.reserved = []  # a new field a step would change

    assert undeclared(Grown(4)) == ["reserved"]


def test_restore_puts_back_every_declared_field_and_the_kv_of_pages_taken_from_others():
    cache = PagedCache(1, 4, 2, 1, 2)
    a, b = cache.alloc_n(2)
    cache.record_prefix([a], [1, 2])
    cache.kv._k_store[:, a] = 5.0
    cache.free(a)  # cached now
    refs = cache._refs
    before = [part.snapshot() for part in (cache.allocator, cache.prefix)]
    with pytest.raises(RuntimeError), cache.atomic():
        got = cache.alloc_n(3)  # the free pages 2 and 3, then cached page a, evicted
        assert a in got
        cache.kv._k_store[:, a] = -1.0  # the new owner writes over it
        cache.free(b)
        raise RuntimeError("the step fails")
    assert [part.snapshot() for part in (cache.allocator, cache.prefix)] == before
    assert cache._refs is refs  # refilled in place: the alias the cache reads still holds
    assert (cache.kv._k_store[:, a] == 5.0).all()  # the cached prefix's K/V is back
    assert cache.lookup_prefix([1, 2, 3]) == [a]
    cache.check()


def test_every_field_of_the_scheduler_is_declared_and_a_new_task_field_is_saved():
    from dataclasses import dataclass, field

    from astrai.inference.scheduler import Scheduler, Task
    from astrai.inference.undo import task_state
    from astrai.model import ModelConfig, TinyModel

    cfg = ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
                      head_dim=8, d_ff=16, seed=1)
    assert undeclared(Scheduler(PagedCache(1, 8, 4, 1, 8), TinyModel(cfg))) == []

    @dataclass(eq=False)
    class Tagged(Task):
        tags: list = field(default_factory=list)  # a field nobody listed anywhere

    saved = task_state(Tagged("A", [1, 2, 3], 2))
    assert "tags" in saved and not set(saved) & set(Task.FIXED)
    assert {"status", "page_table", "output", "length", "cached_len", "preemptions"} <= set(saved)
