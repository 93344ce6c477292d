"""Random operation sequences on a PagedCache, checked step by step against a plain model
(CacheMachine), and the engine API interleaved at random, atomic blocks nested, against the
invariants (EngineMachine, below).

The model keeps refs, the free set, the LRU list of cached pages and the recorded prefixes keyed
by their full token prefix (no hashing), with the uid of the page before each one, so that a
prefix whose earlier page was evicted and recorded again no longer links to the old later pages.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from astrai.errors import (
    BadSnapshot,
    DoubleFree,
    PageNotAllocated,
    PageOutOfRange,
    PrefixConflict,
    SharedPage,
)
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
    derandomize=True,  # the same cases on every machine and run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCacheMachine = CacheMachine.TestCase


# ---- the engine API in random interleavings, atomic blocks nested inside -----------------------
#
# Requests admitted as the scheduler admits them (prefix hits shared, the rest allocated, K/V
# written, the prompt recorded), forked, extended (copy-on-write of a shared last page) and
# finished, in any order, some of it inside atomic() blocks, nested, that fail or complete. The
# K/V of token position i of a sequence is a function of the sequence up to i (as a model's are),
# so after every step each request's pages must still hold its own tokens' K/V, and each recorded
# prefix page the K/V of the tokens it was recorded for.


def kv_of(tokens) -> float:
    """The K (V is its negative) a model would compute at the last of `tokens`: exact in fp32."""
    return float(zlib.crc32(bytes(tokens)) % 4096 + 1)


class Request:
    def __init__(self, tokens):
        self.tokens = list(tokens)
        self.page_table: list[int] = []


class Boom(Exception):
    """What a failing atomic block raises."""


class EngineMachine(RuleBasedStateMachine):
    @initialize(n=st.sampled_from([3, 5, 8]))
    def setup(self, n):
        self.cache = PagedCache(1, n, PAGE_SIZE, 1, 1)
        self.requests: list[Request] = []
        self.recorded: dict[int, tuple] = {}  # page -> the tokens up to its end, when recorded

    # -- the operations, each also usable inside a block

    def _write(self, req: Request, start: int) -> None:
        n = len(req.tokens) - start
        if n <= 0:
            return
        k = torch.tensor([kv_of(req.tokens[: i + 1]) for i in range(start, len(req.tokens))])
        k = k.view(1, n, 1, 1)
        self.cache.write(0, torch.tensor([req.page_table]), start, k, -k)

    def _admit(self, data) -> None:
        tokens = data.draw(tokens_st)
        cache = self.cache
        if not tokens:
            return
        hits = cache.lookup_prefix(tokens)
        need = cache.pages_for(len(tokens)) - len(hits)
        revived = sum(1 for p in hits if cache.refcount(p) == 0)
        if need > cache.n_available - revived:
            return
        req = Request(tokens)
        for p in hits:
            cache.inc_ref(p, owner=req)
        cache.alloc_n(need, owner=req)
        self.requests.append(req)
        self._write(req, len(hits) * PAGE_SIZE)
        for page in cache.record_prefix(req.page_table, tokens, owner=req):
            end = (req.page_table.index(page) + 1) * PAGE_SIZE
            self.recorded[page] = tuple(tokens[:end])

    def _finish(self, data) -> None:
        if self.requests:
            req = self.requests.pop(data.draw(st.integers(0, len(self.requests) - 1)))
            for page in reversed(req.page_table):
                self.cache.free(page, owner=req)

    def _fork(self, data) -> None:
        if self.requests:
            parent = data.draw(st.sampled_from(self.requests))
            sample = Request(parent.tokens)
            for page in parent.page_table:
                self.cache.inc_ref(page, owner=sample)
            self.requests.append(sample)

    def _extend(self, data) -> None:
        """One more token: a new page at a page boundary, else copy-on-write of a shared one."""
        if not self.requests:
            return
        req, cache = data.draw(st.sampled_from(self.requests)), self.cache
        pos = len(req.tokens)
        col = pos // PAGE_SIZE
        if col == len(req.page_table):
            if not cache.n_available:
                return
            cache.alloc_n(1, owner=req)
        elif cache.refcount(req.page_table[col]) > 1:
            if not cache.n_available:
                return
            src = req.page_table[col]
            (dst,) = cache.alloc_n(1)
            cache.copy_page(src, dst, pos % PAGE_SIZE, owner=req)
            req.page_table[col] = dst
            cache.free(src, owner=req)
        req.tokens.append(data.draw(st.integers(0, 2)))
        self._write(req, pos)

    def _block(self, data, depth: int = 0) -> None:
        """Some operations inside atomic(), blocks nested among them; a failing block leaves
        the cache (and the requests: a scheduler's part) as they were."""
        saved = ([(r, list(r.tokens), list(r.page_table)) for r in self.requests],
                 list(self.requests), dict(self.recorded))
        ops = OPS if depth < 2 else OPS[:-1]
        try:
            with self.cache.atomic():
                for _ in range(data.draw(st.integers(0, 4))):
                    op = data.draw(st.sampled_from(ops))
                    if op == "_block":
                        self._block(data, depth + 1)
                    else:
                        getattr(self, op)(data)
                if data.draw(st.booleans()):
                    raise Boom
        except Boom:
            for req, tokens, table in saved[0]:
                req.tokens[:], req.page_table[:] = tokens, table
            self.requests[:] = saved[1]
            self.recorded = saved[2]

    # -- rules

    @rule(data=st.data())
    def admit(self, data):
        self._admit(data)

    @rule(data=st.data())
    def finish(self, data):
        self._finish(data)

    @rule(data=st.data())
    def fork(self, data):
        self._fork(data)

    @rule(data=st.data())
    def extend(self, data):
        self._extend(data)

    @rule(data=st.data())
    def block(self, data):
        self._block(data)

    @rule(n=st.sampled_from([2, 3, 5, 8]))
    def restore_a_snapshot_of_another_cache(self, n):
        snap = PagedCache(1, n, PAGE_SIZE, 1, 1).snapshot()
        before = self._state()
        with pytest.raises(BadSnapshot):
            self.cache.restore(snap)
        assert self._equal(self._state(), before)

    @precondition(lambda self: any(self.cache.refcount(p) == 1 for p in self.recorded
                                   if self.cache.is_recorded(p)))
    @rule(data=st.data())
    def copy_onto_a_recorded_page(self, data):
        cache = self.cache
        dst = data.draw(st.sampled_from([p for p in sorted(self.recorded)
                                         if cache.is_recorded(p) and cache.refcount(p) == 1]))
        held = [p for p in range(cache.n_pages) if cache.refcount(p) and p != dst]
        src = data.draw(st.sampled_from(held)) if held else dst
        before = self._state()
        with pytest.raises(SharedPage):
            cache.copy_page(src, dst, PAGE_SIZE)
        assert self._equal(self._state(), before)

    def _state(self):
        c = self.cache
        return (c.free_mask, c.refs, c.cached_pages, c.k_cache.clone(), c.v_cache.clone())

    @staticmethod
    def _equal(a, b) -> bool:
        return a[:3] == b[:3] and torch.equal(a[3], b[3]) and torch.equal(a[4], b[4])

    # -- the invariants

    @invariant()
    def refs_are_the_tables_naming_a_page(self):
        c = self.cache
        c.check()
        named = [0] * c.n_pages
        for req in self.requests:
            for page in req.page_table:
                named[page] += 1
        assert list(c.refs) == named

    @invariant()
    def free_iff_no_refs_and_not_cached(self):
        c = self.cache
        cached = set(c.cached_pages)
        for p in range(c.n_pages):
            assert bool(c.free_mask >> p & 1) == (c.refcount(p) == 0 and p not in cached)

    @invariant()
    def every_page_holds_what_its_tokens_computed(self):
        c = self.cache
        k = c.k_cache[0, :, :, 0, 0].tolist()  # [pages, slots]
        v = c.v_cache[0, :, :, 0, 0].tolist()
        for req in self.requests:
            for pos in range(len(req.tokens)):
                page = req.page_table[pos // PAGE_SIZE]
                want = kv_of(req.tokens[: pos + 1])
                assert (k[page][pos % PAGE_SIZE], v[page][pos % PAGE_SIZE]) == (want, -want)
        for page in range(c.n_pages):
            if c.is_recorded(page):
                tokens = self.recorded[page]
                start = len(tokens) - PAGE_SIZE
                assert k[page] == [kv_of(tokens[: start + s + 1]) for s in range(PAGE_SIZE)]


OPS = ["_admit", "_finish", "_fork", "_extend", "_block"]

EngineMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,  # the same cases on every machine and run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestEngineMachine = EngineMachine.TestCase
