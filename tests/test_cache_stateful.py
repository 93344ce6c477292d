"""Random operation sequences on a PagedCache, checked step by step against a plain model.

The model keeps refs, the free set, the LRU list of cached pages and the recorded prefixes keyed
by their full token prefix (no hashing), with the uid of the page before each one, so that a
prefix whose earlier page was evicted and recorded again no longer links to the old later pages.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from astrai.errors import DoubleFree, PageNotAllocated, PageOutOfRange, PrefixConflict
from astrai.inference.cache import PagedCache

PAGE_SIZE = 2
# Prompts mostly cut from a few shared stems (so prefixes recur and branch), plus random ones.
STEMS = [[0, 1, 0, 1, 2, 2, 1, 0, 1], [0, 1, 0, 1, 1, 1, 2, 0], [2, 2, 0, 0, 1, 1, 2, 2, 1]]
tokens_st = st.one_of(
    st.builds(
        lambda stem, cut, tail: stem[:cut] + tail,
        st.sampled_from(STEMS),
        st.integers(0, 9),
        st.lists(st.integers(0, 2), max_size=3),
    ),
    st.lists(st.integers(0, 2), max_size=4 * PAGE_SIZE + 1),
)


class Owner(NamedTuple):
    page_table: list[int]


class Entry(NamedTuple):
    prefix: tuple  # every token up to the end of this page
    uid: int
    parent: int  # uid of the previous page's entry, 0 for the first page


class Model:
    def __init__(self, n: int):
        self.n = n
        self.refs = [0] * n
        self.lru: list[int] = []  # cached pages, oldest first
        self.entries: dict[int, Entry] = {}  # page -> entry
        self.page_of: dict[tuple, int] = {}  # full prefix -> page
        self.next_uid = 1

    # -- derived
    @property
    def free(self) -> set[int]:
        return {p for p in range(self.n) if self.refs[p] == 0 and p not in self.lru}

    @property
    def used(self) -> list[int]:
        return [p for p in range(self.n) if self.refs[p] > 0]

    def mask(self) -> int:
        return sum(1 << p for p in self.free)

    # -- operations (the spec)
    def alloc(self) -> int:
        free = self.free
        if free:
            page = min(free)
        elif self.lru:
            page = self.lru.pop(0)
            entry = self.entries.pop(page)
            del self.page_of[entry.prefix]
        else:
            return -1
        self.refs[page] = 1
        return page

    def alloc_n(self, k: int) -> list[int]:
        if k > len(self.free) + len(self.lru):
            return []
        return [self.alloc() for _ in range(k)]

    def free_page(self, page: int) -> None:
        self.refs[page] -= 1
        if self.refs[page] == 0 and page in self.entries:
            self.lru.append(page)

    def inc_ref(self, page: int) -> None:
        if self.refs[page] == 0:
            self.lru.remove(page)
        self.refs[page] += 1

    def chunks(self, tokens) -> list[tuple]:
        return [tuple(tokens[: (i + 1) * PAGE_SIZE]) for i in range(len(tokens) // PAGE_SIZE)]

    def lookup(self, tokens) -> list[int]:
        pages, parent = [], 0
        for prefix in self.chunks(tokens):
            page = self.page_of.get(prefix)
            if page is None or self.entries[page].parent != parent:
                break
            pages.append(page)
            parent = self.entries[page].uid
        return pages

    def record(self, pages, tokens):
        """The recorded pages, or the exception type the call must raise (changing nothing)."""
        prefixes = self.chunks(tokens)[: len(pages)]
        pages = list(pages[: len(prefixes)])
        if any(self.refs[p] == 0 for p in pages):
            return PageNotAllocated
        plan: dict[tuple, tuple[int, Entry]] = {}
        parent, uid = 0, self.next_uid
        live = {e.uid for e in self.entries.values()}
        stale: list[int] = []
        for page, prefix in zip(pages, prefixes):
            known = self.page_of.get(prefix)
            if known is not None or prefix in plan:
                entry = self.entries[known] if known is not None else plan[prefix][1]
                if known is not None and entry.parent and entry.parent not in live:
                    stale.append(known)  # its parent page was evicted: unreachable, replaced
                elif entry.parent != parent:
                    break
                else:
                    parent = entry.uid
                    continue
            if (page in self.entries and page not in stale) or any(
                    page == p for p, _ in plan.values()):
                return PrefixConflict
            plan[prefix] = (page, Entry(prefix, uid, parent))
            parent = uid
            uid += 1
        for page in stale:  # forgotten: a cached one goes back to the free pages
            del self.page_of[self.entries.pop(page).prefix]
            if page in self.lru:
                self.lru.remove(page)
        for prefix, (page, entry) in plan.items():
            self.entries[page] = entry
            self.page_of[prefix] = page
        self.next_uid = uid
        return [page for page, _ in plan.values()]

    def clear(self) -> None:
        self.lru.clear()
        self.entries.clear()
        self.page_of.clear()


class CacheMachine(RuleBasedStateMachine):
    @initialize(n=st.sampled_from([1, 2, 3, 5, 8, 65, 130]))
    def setup(self, n):
        self.cache = PagedCache(1, n, PAGE_SIZE, 1, 1)
        self.model = Model(n)

    def snapshot(self):
        c = self.cache
        recorded = tuple(p for p in range(c.n_pages) if c.is_recorded(p))
        return (c.free_mask, c.refs, c.cached_pages, c.n_free, c.n_cached, c.n_used, recorded)

    # ---- allocation

    @rule()
    def alloc(self):
        assert self.cache.alloc() == self.model.alloc()

    @rule(k=st.one_of(st.integers(0, 6), st.integers(0, 131)), use_out=st.booleans())
    def alloc_n(self, k, use_out):
        expect = self.model.alloc_n(k)
        if use_out:
            owner = Owner([-7])
            assert self.cache.alloc_n(k, owner=owner) == expect
            assert owner.page_table == [-7] + expect
        else:
            assert self.cache.alloc_n(k) == expect

    @precondition(lambda self: self.model.used)
    @rule(data=st.data(), numpy=st.booleans())
    def free(self, data, numpy):
        page = data.draw(st.sampled_from(self.model.used))
        self.cache.free(np.int64(page) if numpy else page)
        self.model.free_page(page)

    @precondition(lambda self: self.model.used)
    @rule(data=st.data())
    def free_many(self, data):
        """Drop one reference from each of several pages, in a random order (sequences ending)."""
        pages = data.draw(st.permutations(self.model.used))
        for page in pages[: data.draw(st.integers(1, len(pages)))]:
            self.cache.free(page)
            self.model.free_page(page)

    @precondition(lambda self: self.model.used or self.model.lru)
    @rule(data=st.data())
    def inc_ref(self, data):
        page = data.draw(st.sampled_from(self.model.used + self.model.lru))
        self.cache.inc_ref(page)
        self.model.inc_ref(page)

    # ---- prefix cache

    @rule(tokens=tokens_st)
    def lookup(self, tokens):
        assert self.cache.lookup_prefix(tokens) == self.model.lookup(tokens)

    @precondition(lambda self: self.model.used)
    @rule(data=st.data(), tokens=tokens_st)
    def record_random_pages(self, data, tokens):
        """Any in-use pages, possibly repeated or already recorded: often a PrefixConflict."""
        pages = data.draw(st.lists(st.sampled_from(self.model.used), max_size=5))
        self._record(pages, tokens)

    @rule(tokens=tokens_st, finish=st.booleans())
    def admit_sequence(self, tokens, finish):
        """What the scheduler does: share the hit pages, allocate the rest, record the prompt;
        with `finish`, the request also ends at once and drops its pages (last page first)."""
        hits = self.cache.lookup_prefix(tokens)
        assert hits == self.model.lookup(tokens)
        need = self.cache.pages_for(len(tokens)) - len(hits)
        revived = sum(1 for p in hits if self.model.refs[p] == 0)
        if need > self.cache.n_available - revived:
            return
        for p in hits:
            self.cache.inc_ref(p)
            self.model.inc_ref(p)
        rest = self.cache.alloc_n(need)
        assert rest == self.model.alloc_n(need)
        self._record(hits + rest, tokens)
        if finish:
            for page in reversed(hits + rest):
                self.cache.free(page)
                self.model.free_page(page)

    def _record(self, pages, tokens):
        before = self.snapshot()
        expect = self.model.record(pages, tokens)
        if isinstance(expect, type):
            with pytest.raises(expect):
                self.cache.record_prefix(pages, tokens)
            assert self.snapshot() == before
        else:
            assert self.cache.record_prefix(pages, tokens) == expect

    @rule()
    def clear_prefix_cache(self):
        self.cache.clear_prefix_cache()
        self.model.clear()

    # ---- errors: each must raise and change nothing

    @precondition(lambda self: self.model.free or self.model.lru)
    @rule(data=st.data())
    def double_free(self, data):
        page = data.draw(st.sampled_from(sorted(self.model.free) + self.model.lru))
        before = self.snapshot()
        with pytest.raises(DoubleFree):
            self.cache.free(page)
        assert self.snapshot() == before

    @precondition(lambda self: self.model.free)
    @rule(data=st.data())
    def inc_ref_free_page(self, data):
        page = data.draw(st.sampled_from(sorted(self.model.free)))
        before = self.snapshot()
        with pytest.raises(PageNotAllocated):
            self.cache.inc_ref(page)
        assert self.snapshot() == before

    @precondition(lambda self: self.model.free or self.model.lru)
    @rule(data=st.data(), tokens=tokens_st)
    def record_unreferenced_page(self, data, tokens):
        page = data.draw(st.sampled_from(sorted(self.model.free) + self.model.lru))
        tokens = [0] * PAGE_SIZE + tokens
        before = self.snapshot()
        with pytest.raises(PageNotAllocated):
            self.cache.record_prefix([page], tokens)
        assert self.snapshot() == before

    @rule(
        op=st.sampled_from(["free", "inc_ref"]),
        page=st.one_of(st.integers(max_value=-1), st.integers(min_value=130)),
    )
    def out_of_range(self, op, page):
        before = self.snapshot()
        with pytest.raises(PageOutOfRange):
            getattr(self.cache, op)(page)
        assert self.snapshot() == before

    @rule(
        op=st.sampled_from(["free", "inc_ref"]),
        page=st.sampled_from([0.0, "0", None, True, (0,)]),
    )
    def wrong_type(self, op, page):
        before = self.snapshot()
        with pytest.raises(TypeError):
            getattr(self.cache, op)(page)
        assert self.snapshot() == before

    @rule(k=st.integers(max_value=-1))
    def alloc_n_negative(self, k):
        before = self.snapshot()
        with pytest.raises(ValueError):
            self.cache.alloc_n(k)
        assert self.snapshot() == before

    # ---- after every step

    @invariant()
    def agrees_with_model(self):
        c, m = self.cache, self.model
        c.check()
        assert c.refs == tuple(m.refs)
        assert c.free_mask == m.mask()
        assert c.cached_pages == tuple(m.lru)
        assert c.n_free == len(m.free)
        assert c.n_cached == len(m.lru)
        assert c.n_used == len(m.used)
        assert c.n_available == len(m.free) + len(m.lru)
        assert {p for p in range(m.n) if c.is_recorded(p)} == set(m.entries)


CacheMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCacheMachine = CacheMachine.TestCase
