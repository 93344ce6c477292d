"""Prefix cache: record/lookup, cached pages, LRU eviction, collisions and errors."""

from __future__ import annotations

import builtins
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import astrai.inference.prefix as cache_mod
from astrai.errors import DoubleFree, PageNotAllocated, PageOutOfRange, PrefixConflict
from astrai.inference.cache import PagedCache
from astrai.inference.observer import Observer

PS = 4


def prompt(*chunks: int, tail: int = 0) -> list[int]:
    """Full pages whose tokens are all `chunk` (so different chunks never share tokens)."""
    toks = [c for c in chunks for _ in range(PS)]
    return toks + [999] * tail


def alloc_record(cache: PagedCache, tokens: list[int]) -> list[int]:
    pages = cache.alloc_n(cache.pages_for(len(tokens)))
    assert pages
    cache.record_prefix(pages, tokens)
    return pages


# ---- record / lookup -------------------------------------------------------------------------


def test_lookup_on_empty_cache(new_cache):
    cache = new_cache(8, PS)
    assert cache.lookup_prefix(prompt(1, 2, 3)) == []
    assert cache.lookup_prefix([]) == []


def test_longest_full_page_prefix(new_cache):
    cache = new_cache(8, PS)
    toks = list(range(100, 114))  # 3 full pages + 2 tokens
    pages = cache.alloc_n(4)
    assert cache.record_prefix(pages, toks) == pages[:3]
    assert not cache.is_recorded(pages[3])  # the partial last page is never recorded
    assert cache.lookup_prefix(toks) == pages[:3]
    assert cache.lookup_prefix(toks + [5] * 10) == pages[:3]
    assert cache.lookup_prefix(toks[:12]) == pages[:3]
    assert cache.lookup_prefix(toks[:11]) == pages[:2]  # the third page is not full here
    assert cache.lookup_prefix(toks[:8]) == pages[:2]
    assert cache.lookup_prefix(toks[:7]) == pages[:1]
    assert cache.lookup_prefix(toks[:3]) == []
    changed = list(toks)
    changed[9] = -5  # a token of page 2
    assert cache.lookup_prefix(changed) == pages[:2]
    changed[0] = -5  # and of page 0: nothing matches any more
    assert cache.lookup_prefix(changed) == []
    cache.check()


def test_record_shorter_page_list_or_shorter_tokens(new_cache):
    cache = new_cache(8, PS)
    pages = cache.alloc_n(3)
    assert cache.record_prefix(pages[:2], prompt(1, 2, 3)) == pages[:2]
    assert cache.lookup_prefix(prompt(1, 2, 3)) == pages[:2]
    other = cache.alloc_n(3)
    assert cache.record_prefix(other, prompt(7, tail=3)) == other[:1]
    assert not cache.is_recorded(other[1]) and not cache.is_recorded(other[2])


def test_tokens_as_tensor(new_cache):
    cache = new_cache(8, PS)
    toks = prompt(1, 2)
    pages = cache.alloc_n(2)
    assert cache.record_prefix(pages, torch.tensor(toks)) == pages
    assert cache.lookup_prefix(torch.tensor(toks)) == pages
    assert cache.lookup_prefix(toks) == pages


def test_same_tokens_elsewhere_never_match(new_cache):
    cache = new_cache(16, PS)
    ab = alloc_record(cache, prompt(1, 2))
    # Page B's tokens, but at position 0: no match.
    assert cache.lookup_prefix(prompt(2)) == []
    # Page B's tokens at position 1 after another first page: no match for either.
    assert cache.lookup_prefix(prompt(3, 2)) == []
    # At position 2 after A, A: only the A page matches.
    assert cache.lookup_prefix(prompt(1, 1, 2)) == ab[:1]
    # Recording B after C makes new pages, it does not reuse ab[1].
    cb = alloc_record(cache, prompt(3, 2))
    assert cache.lookup_prefix(prompt(3, 2)) == cb
    assert cache.lookup_prefix(prompt(1, 2)) == ab
    assert set(cb).isdisjoint(ab)


def test_same_page_content_at_two_positions(new_cache):
    cache = new_cache(8, PS)
    aa = alloc_record(cache, prompt(1, 1, 1))
    assert len(set(aa)) == 3
    assert cache.lookup_prefix(prompt(1, 1, 1, 1)) == aa
    assert cache.lookup_prefix(prompt(1, 1)) == aa[:2]


def test_shared_prefix_is_deduplicated(new_cache):
    cache = new_cache(16, PS)
    ab = alloc_record(cache, prompt(1, 2))
    # Same first two pages on other physical pages: only the new third page is recorded.
    other = cache.alloc_n(3)
    assert cache.record_prefix(other, prompt(1, 2, 3)) == [other[2]]
    assert not cache.is_recorded(other[0]) and not cache.is_recorded(other[1])
    assert cache.lookup_prefix(prompt(1, 2, 3)) == ab + [other[2]]
    # Re-recording exactly what is there records nothing.
    assert cache.record_prefix(ab, prompt(1, 2)) == []
    # Branching after the shared first page.
    branch = cache.alloc_n(2)
    assert cache.record_prefix([ab[0], branch[1]], prompt(1, 4)) == [branch[1]]
    assert cache.lookup_prefix(prompt(1, 4)) == [ab[0], branch[1]]
    assert cache.lookup_prefix(prompt(1, 2, 3)) == ab + [other[2]]
    cache.check()


def test_lookup_changes_nothing(new_cache, unchanged):
    cache = new_cache(8, PS)
    a = alloc_record(cache, prompt(1))
    b = alloc_record(cache, prompt(2))
    cache.free(a[0])
    cache.free(b[0])
    with unchanged(cache):
        for _ in range(3):
            assert cache.lookup_prefix(prompt(1)) == a
            assert cache.lookup_prefix(prompt(2)) == b
    assert cache.cached_pages == (a[0], b[0])  # a lookup does not refresh LRU order


# ---- cached pages and revival ------------------------------------------------------------------


def test_recorded_page_becomes_cached_at_zero_refs(new_cache):
    cache = new_cache(8, PS)
    pages = cache.alloc_n(3)  # 0, 1, 2
    cache.record_prefix(pages, prompt(1, 2, tail=1))  # page 2 is partial
    cache.inc_ref(0)
    for p in pages:
        cache.free(p)
    assert cache.cached_pages == (1,)  # page 0 still held, page 2 not recorded
    assert cache.free_mask >> 2 & 1 and not cache.free_mask & 0b11
    cache.free(0)
    assert cache.cached_pages == (1, 0)
    assert (cache.n_free, cache.n_cached, cache.n_used, cache.n_available) == (6, 2, 0, 8)
    assert cache.refs[:3] == (0, 0, 0)
    # A cached page still serves lookups.
    assert cache.lookup_prefix(prompt(1, 2)) == [0, 1]
    cache.check()


def test_revival_by_inc_ref(new_cache):
    cache = new_cache(4, PS)
    pages = alloc_record(cache, prompt(1, 2))
    for p in pages:
        cache.free(p)
    hits = cache.lookup_prefix(prompt(1, 2, 3))
    assert hits == pages
    for p in hits:
        cache.inc_ref(p)
    assert cache.cached_pages == ()
    assert cache.refs[: len(pages)] == (1, 1)
    assert cache.n_used == 2 and cache.n_available == 2
    # Revived pages are in use again: they are neither handed out nor evicted.
    assert cache.alloc_n(2) == [2, 3]
    assert cache.alloc() == -1
    assert cache.lookup_prefix(prompt(1, 2)) == pages
    cache.check()


def test_free_of_cached_page_is_double_free(new_cache, unchanged):
    cache = new_cache(4, PS)
    (p,) = alloc_record(cache, prompt(1))
    cache.free(p)
    with unchanged(cache, prompt(1)), pytest.raises(DoubleFree):
        cache.free(p)


# ---- LRU eviction ----------------------------------------------------------------------------


def test_lru_evicts_least_recently_cached_first(new_cache):
    cache = new_cache(6, PS)
    x = alloc_record(cache, prompt(1))
    y = alloc_record(cache, prompt(2))
    z = alloc_record(cache, prompt(3))
    cache.alloc_n(3)  # pool full
    for pages in (y, x, z):  # cached order: y, x, z
        cache.free(pages[0])
    assert cache.cached_pages == (y[0], x[0], z[0])
    assert cache.n_free == 0 and cache.n_available == 3
    assert cache.alloc() == y[0]
    assert cache.lookup_prefix(prompt(2)) == []
    assert not cache.is_recorded(y[0])
    assert cache.lookup_prefix(prompt(1)) == x
    assert cache.alloc() == x[0]
    assert cache.lookup_prefix(prompt(1)) == []
    assert cache.lookup_prefix(prompt(3)) == z
    assert cache.alloc() == z[0]
    assert cache.alloc() == -1
    assert cache.refs == (1,) * 6
    cache.check()


def test_free_pages_are_used_before_any_eviction(new_cache):
    cache = new_cache(130, PS)
    x = alloc_record(cache, prompt(1))
    cache.free(x[0])
    got = cache.alloc_n(129)
    assert x[0] not in got
    assert cache.lookup_prefix(prompt(1)) == x
    assert cache.alloc() == x[0]


def test_revived_page_moves_to_most_recent(new_cache):
    cache = new_cache(3, PS)
    a = alloc_record(cache, prompt(1))[0]
    b = alloc_record(cache, prompt(2))[0]
    cache.alloc()
    cache.free(a)
    cache.free(b)
    assert cache.cached_pages == (a, b)
    cache.inc_ref(a)
    cache.free(a)
    assert cache.cached_pages == (b, a)
    assert cache.alloc() == b
    assert cache.lookup_prefix(prompt(1)) == [a]


def test_referenced_recorded_page_is_never_evicted(new_cache, unchanged):
    cache = new_cache(4, PS)
    held = alloc_record(cache, prompt(1, 2))
    shared = alloc_record(cache, prompt(3))
    cache.inc_ref(shared[0])
    cache.free(shared[0])  # still one ref
    cache.alloc()
    with unchanged(cache, prompt(1, 2), prompt(3)):
        assert cache.alloc() == -1
        assert cache.alloc_n(1) == []
    assert cache.lookup_prefix(prompt(1, 2)) == held
    cache.free(held[1])
    assert cache.alloc() == held[1]
    assert cache.lookup_prefix(prompt(1, 2)) == held[:1]


def test_eviction_of_a_parent_cuts_the_chain(new_cache):
    cache = new_cache(3, PS)
    pages = alloc_record(cache, prompt(1, 2, 3))
    for p in pages:
        cache.free(p)  # cached in order 0, 1, 2: the first page is the oldest
    assert cache.alloc() == pages[0]
    # The child pages are still cached, but without their first page nothing matches.
    assert cache.lookup_prefix(prompt(1, 2, 3)) == []
    assert cache.lookup_prefix(prompt(2, 3)) == []
    cache.check()


# ---- errors ------------------------------------------------------------------------------------


def test_record_prefix_of_free_page_raises(new_cache, unchanged):
    cache = new_cache(70, PS)
    cache.alloc_n(3)
    cache.free(1)
    with unchanged(cache, prompt(1, 2, 3)), pytest.raises(PageNotAllocated):
        cache.record_prefix([0, 1, 2], prompt(1, 2, 3))
    with unchanged(cache, prompt(1)), pytest.raises(PageNotAllocated):
        cache.record_prefix([65], prompt(1))


def test_record_prefix_of_cached_page_raises(new_cache, unchanged):
    cache = new_cache(4, PS)
    (p,) = alloc_record(cache, prompt(1))
    cache.free(p)
    with unchanged(cache, prompt(1), prompt(2)), pytest.raises(PageNotAllocated):
        cache.record_prefix([p], prompt(2))


def test_record_prefix_out_of_range_raises(new_cache, unchanged):
    cache = new_cache(4, PS)
    cache.alloc_n(2)
    with unchanged(cache, prompt(1, 2)), pytest.raises(PageOutOfRange):
        cache.record_prefix([0, 4], prompt(1, 2))
    with unchanged(cache, prompt(1, 2)), pytest.raises(PageOutOfRange):
        cache.record_prefix([-1, 0], prompt(1, 2))


def test_prefix_conflict(new_cache, unchanged):
    cache = new_cache(8, PS)
    (p,) = alloc_record(cache, prompt(1))
    q = cache.alloc()
    # p already holds page "1" at position 0; recording "2" there is a conflict.
    with unchanged(cache, prompt(1), prompt(2)), pytest.raises(PrefixConflict):
        cache.record_prefix([p], prompt(2))
    # Same, in second position, after a page that would be newly recorded: nothing recorded.
    with unchanged(cache, prompt(1), prompt(3, 2)), pytest.raises(PrefixConflict):
        cache.record_prefix([q, p], prompt(3, 2))
    assert not cache.is_recorded(q)
    # The same page twice in one call.
    with unchanged(cache, prompt(4, 5)), pytest.raises(PrefixConflict):
        cache.record_prefix([q, q], prompt(4, 5))
    assert cache.lookup_prefix(prompt(1)) == [p]


def test_clear_prefix_cache(new_cache):
    cache = new_cache(6, PS)
    a = alloc_record(cache, prompt(1, 2))
    b = alloc_record(cache, prompt(3))
    for p in a:
        cache.free(p)
    assert cache.n_cached == 2
    cache.clear_prefix_cache()
    assert cache.cached_pages == () and cache.n_cached == 0
    assert cache.free_mask == 0b111011  # a's pages free again, b still in use
    assert cache.refs == (0, 0, 1, 0, 0, 0)
    assert cache.lookup_prefix(prompt(1, 2)) == []
    assert cache.lookup_prefix(prompt(3)) == []
    assert not any(cache.is_recorded(p) for p in range(6))
    cache.check()
    cache.free(b[0])  # no longer recorded: straight back to the pool
    assert cache.cached_pages == () and cache.n_free == 6
    # Recording works again afterwards.
    c = alloc_record(cache, prompt(3))
    assert cache.lookup_prefix(prompt(3)) == c


# ---- hash collisions ---------------------------------------------------------------------------


def test_total_collision_never_returns_wrong_page(new_cache, monkeypatch):
    monkeypatch.setattr(cache_mod, "hash", lambda _: 42, raising=False)
    cache = new_cache(16, PS)
    x = alloc_record(cache, prompt(1, 2))
    # With every key equal, only the first page can be indexed; nothing is ever overwritten.
    assert cache.lookup_prefix(prompt(1, 2)) == x[:1]
    assert cache.lookup_prefix(prompt(2)) == []
    assert cache.lookup_prefix(prompt(3, 2)) == []
    y = cache.alloc_n(2)
    assert cache.record_prefix(y, prompt(3, 2)) == []
    assert cache.lookup_prefix(prompt(3, 2)) == []
    assert cache.lookup_prefix(prompt(1, 2)) == x[:1]
    # Same tokens as the first page but at position 1: key collides and tokens match, still a miss.
    assert cache.lookup_prefix(prompt(1, 1)) == x[:1]
    cache.check()


def test_collision_in_record_stops_recording(new_cache, monkeypatch):
    """A colliding page stops record_prefix: later pages must not chain to the other page."""
    real_hash = builtins.hash
    # Every first page gets key 1, so page "2" at position 0 collides with page "1".
    monkeypatch.setattr(cache_mod, "hash", lambda x: 1 if x[0] == 0 else real_hash(x), False)
    cache = new_cache(8, PS)
    (a,) = alloc_record(cache, prompt(1))
    x = cache.alloc_n(2)
    assert cache.record_prefix(x, prompt(2, 3)) == []
    assert not cache.is_recorded(x[1])
    # x[1] holds "3" computed after "2": it must never be served after "1".
    assert cache.lookup_prefix(prompt(1, 3)) == [a]
    assert cache.lookup_prefix(prompt(2, 3)) == []
    cache.check()


@settings(max_examples=40, deadline=None)
@given(
    prompts=st.lists(st.lists(st.integers(0, 2), min_size=2, max_size=10), min_size=1, max_size=12),
    buckets=st.sampled_from([1, 2, 3, 5, 8, 16, 64]),
)
def test_colliding_hashes_only_cause_misses(prompts, buckets):
    """With keys squeezed into a few buckets, every hit must still hold exactly those tokens."""
    real_hash = builtins.hash
    old = cache_mod.__dict__.get("hash")
    cache_mod.hash = lambda x: real_hash(x) % buckets
    try:
        ps = 2
        cache = PagedCache(1, 64, ps, 1, 1)
        content: dict[int, tuple] = {}  # page -> the full token prefix it ends
        for toks in prompts:
            hits = cache.lookup_prefix(toks)
            for i, page in enumerate(hits):
                assert content[page] == tuple(toks[: (i + 1) * ps])
            for p in hits:
                cache.inc_ref(p)
            rest = cache.alloc_n(cache.pages_for(len(toks)) - len(hits))
            pages = hits + rest
            for i, page in enumerate(rest, start=len(hits)):
                content[page] = tuple(toks[: (i + 1) * ps])
            cache.record_prefix(pages, toks)
            cache.check()
            for p in pages:
                cache.free(p)
        # Also every splice of one prompt's start and another's end, at the same position:
        # a page recorded after a colliding one must not be served behind the other prompt.
        probes = list(prompts)
        for a in prompts:
            for b in prompts:
                probes += [a[:cut] + b[cut:] for cut in range(ps, min(len(a), len(b)), ps)]
        for toks in probes:
            for i, page in enumerate(cache.lookup_prefix(toks)):
                assert content[page] == tuple(toks[: (i + 1) * ps])
    finally:
        if old is None:
            del cache_mod.hash
        else:
            cache_mod.hash = old


def test_without_collisions_every_recorded_prompt_hits_fully():
    """Control for the collision test: the real hash serves all full pages back."""
    rng = random.Random(0)
    cache = PagedCache(1, 400, 2, 1, 1)
    prompts = [[rng.randrange(3) for _ in range(rng.randrange(2, 12))] for _ in range(30)]
    for toks in prompts:
        hits = cache.lookup_prefix(toks)
        for p in hits:
            cache.inc_ref(p)
        pages = hits + cache.alloc_n(cache.pages_for(len(toks)) - len(hits))
        cache.record_prefix(pages, toks)
    for toks in prompts:
        assert len(cache.lookup_prefix(toks)) == len(toks) // 2


# ---- observer (prefix side) --------------------------------------------------------------------


class Recorder(Observer):
    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            events = object.__getattribute__(self, "events")
            # owners (None here: no scheduler) are left out of what is noted
            return lambda *args: events.append((name[3:], *(a for a in args if a is not None)))
        return object.__getattribute__(self, name)


def test_observer_sees_record_cache_share_evict_in_order(new_cache):
    cache = new_cache(3, PS)
    rec = cache.observer = Recorder()
    pages = cache.alloc_n(2)
    assert cache.record_prefix(pages, prompt(1, 2, tail=1)) == pages
    cache.record_prefix(pages, prompt(1, 2))  # nothing new: no on_record
    cache.free(1)
    cache.free(0)
    cache.inc_ref(0)  # revived
    cache.inc_ref(0)  # shared
    cache.alloc()  # the free page 2
    cache.alloc()  # evicts 1
    assert cache.record_prefix([1], prompt(9)) == [1]  # evicted page 1 holds new tokens now
    with pytest.raises(PrefixConflict):
        cache.record_prefix([1], prompt(8))  # an error: no event
    assert rec.events[-1] == ("record", [1])
    rec.events.clear()
    cache.free(2)
    cache.free(0)
    cache.free(0)
    cache.free(1)
    cache.clear_prefix_cache()
    assert rec.events == [
        ("free", 2, 0),
        ("free", 0, 1),
        ("free", 0, 0),
        ("cache", 0),
        ("free", 1, 0),
        ("cache", 1),
        ("evict", 0),
        ("evict", 1),
    ]


def test_observer_event_sequence(new_cache):
    cache = new_cache(3, PS)
    rec = cache.observer = Recorder()
    pages = cache.alloc_n(2)
    cache.record_prefix(pages, prompt(1, 2, tail=1))
    cache.record_prefix(pages, prompt(1, 2))
    cache.free(1)
    cache.free(0)
    cache.inc_ref(0)
    cache.inc_ref(0)
    cache.alloc()
    cache.alloc()
    assert rec.events == [
        ("alloc", 0),
        ("alloc", 1),
        ("record", [0, 1]),
        ("free", 1, 0),
        ("cache", 1),
        ("free", 0, 0),
        ("cache", 0),
        ("share", 0, True),
        ("share", 0, False),
        ("alloc", 2),
        ("evict", 1),
        ("alloc", 1),
    ]


def test_orphaned_page_is_replaced_when_its_prefix_is_recorded_again(new_cache):
    """A cached page whose parent was evicted can never be hit; re-recording replaces it."""
    cache = new_cache(n_pages=4, page_size=2)
    tokens = [1, 2, 3, 4]
    first = cache.alloc_n(2)
    assert cache.record_prefix(first, tokens) == first
    for page in first:  # head first: the head is the least recently used
        cache.free(page)
    for page in cache.alloc_n(3):  # two free pages, then evicts the head only
        cache.free(page)
    assert cache.cached_pages == (first[1],) and cache.lookup_prefix(tokens) == []
    again = cache.alloc_n(2)
    assert first[1] not in again
    assert cache.record_prefix(again, tokens) == again  # both pages, not only the head
    assert cache.lookup_prefix(tokens) == again
    assert not cache.is_recorded(first[1]) and first[1] not in cache.cached_pages
    assert cache.free_mask >> first[1] & 1  # the orphan went back to the free mask
    cache.check()
