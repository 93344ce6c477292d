"""PrefixIndex: which pages hold which full-page prompt prefix, and the LRU of cached ones.

Each full page of a prompt gets a chained key: page i's key hashes page i-1's key with page
i's tokens, so equal tokens after another earlier page get another key (vLLM's and
nano-vllm's block hashes). A recorded page keeps its entry (key, parent, tokens, uid) while
anyone holds it and after: once its last holder lets go it is *cached* - parked in the LRU,
evictable, and revived by a lookup hit. Hits are verified against the stored tokens and the
identity of the page before, so a hash collision can only cause a miss, never a wrong page.

It knows nothing of free bits or refcounts: the cache composing it says when a page's last
holder lets go (`park`), when a cached page is wanted again (`revive`) and takes the LRU page
when no free one is left (`evict_lru`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch

from astrai.errors import PrefixConflict
from astrai.inference.state import Stateful


class Entry(NamedTuple):
    """A recorded prefix page. `parent` is the uid of the page before it (0 for the first)."""

    key: int
    parent: int
    tokens: tuple
    uid: int


class PrefixIndex(Stateful):
    STATE = ("_page_of_key", "_entries", "_lru", "_next_uid", "_uids")
    FIXED = ("page_size",)

    def __init__(self, page_size: int):
        self.page_size = page_size
        self._page_of_key: dict[int, int] = {}  # key -> page
        self._entries: dict[int, Entry] = {}  # page -> its entry
        self._lru: OrderedDict[int, None] = OrderedDict()  # cached pages, oldest first
        self._next_uid = 1
        self._uids: set[int] = set()  # uids of the entries held now

    # ---- what is recorded ------------------------------------------------------------------

    def __contains__(self, page: int) -> bool:
        return page in self._entries

    @property
    def cached_pages(self) -> tuple[int, ...]:
        return tuple(self._lru)

    @property
    def n_cached(self) -> int:
        return len(self._lru)

    def is_cached(self, page: int) -> bool:
        return page in self._lru

    def key_of(self, page: int) -> int | None:
        entry = self._entries.get(page)
        return entry.key if entry is not None else None

    def _chunks(self, token_ids) -> Iterable[tuple[int, tuple]]:
        """(key, tokens) of each full page; each key chains the previous page's key."""
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.tolist()
        ps = self.page_size
        key = 0
        for i in range(len(token_ids) // ps):
            tokens = tuple(token_ids[i * ps : (i + 1) * ps])
            key = hash((key, tokens))
            yield key, tokens

    def keys(self, token_ids: Sequence[int]) -> list[int]:
        return [key for key, _ in self._chunks(token_ids)]

    def lookup_prefix(self, token_ids: Sequence[int]) -> list[int]:
        """Pages of the longest recorded full-page prefix of token_ids. Changes nothing."""
        pages: list[int] = []
        parent = 0
        for key, tokens in self._chunks(token_ids):
            page = self._page_of_key.get(key)
            if page is None:
                break
            entry = self._entries[page]
            if entry.tokens != tokens or entry.parent != parent:
                break
            pages.append(page)
            parent = entry.uid
        return pages

    def record_prefix(self, pages: Sequence[int], token_ids: Sequence[int]
                      ) -> tuple[list[int], list[int]]:
        """Record the full pages of a prompt (pages[i] holds tokens i*ps..(i+1)*ps-1); pages
        whose content is already recorded (on this page or another) are skipped. Returns the
        pages newly recorded, and the cached pages whose entries were replaced (orphaned by
        their parent's eviction, no lookup could reach them): the caller frees those."""
        chunks = list(self._chunks(token_ids))[: len(pages)]
        plan: list[tuple[int, Entry]] = []
        planned: dict[int, Entry] = {}
        stale: list[int] = []
        parent = 0
        uid = self._next_uid
        for page, (key, tokens) in zip(pages, chunks):
            known = self._page_of_key.get(key)
            if known is not None or key in planned:
                entry = self._entries[known] if known is not None else planned[key]
                if known is not None and entry.parent and entry.parent not in self._uids:
                    stale.append(known)  # its parent page was evicted: replace it
                elif entry.tokens != tokens or entry.parent != parent:
                    break  # a hash collision: stop indexing here, never overwrite
                else:
                    parent = entry.uid
                    continue
            if (page in self._entries and page not in stale) or any(page == p for p, _ in plan):
                raise PrefixConflict(
                    f"record_prefix: page {page} already records another prefix page"
                )
            entry = Entry(key, parent, tokens, uid)
            plan.append((page, entry))
            planned[key] = entry
            parent = uid
            uid += 1
        # Only now mutate, so a raise above leaves the index unchanged.
        dropped = [page for page in stale if self.forget(page)]
        for page, entry in plan:
            self._entries[page] = entry
            self._page_of_key[entry.key] = page
            self._uids.add(entry.uid)
        self._next_uid = uid
        return [page for page, _ in plan], dropped

    # ---- the LRU of cached pages -----------------------------------------------------------

    def park(self, page: int) -> bool:
        """The page's last holder let go: keep it cached (most recently used) if it records a
        prefix. False if it records none (the caller frees it)."""
        if page not in self._entries:
            return False
        self._lru[page] = None
        return True

    def revive(self, page: int) -> None:
        """A cached page is held again: it leaves the LRU (KeyError if it is not cached)."""
        del self._lru[page]

    def evict_lru(self) -> int:
        """Drop the least recently used cached page's entry and hand the page over; -1 if
        nothing is cached."""
        if not self._lru:
            return -1
        idx, _ = self._lru.popitem(last=False)
        entry = self._entries.pop(idx)
        del self._page_of_key[entry.key]
        self._uids.discard(entry.uid)
        return idx

    def forget(self, page: int) -> bool:
        """Drop a page's entry; True if it was cached (the caller frees it)."""
        entry = self._entries.pop(page)
        del self._page_of_key[entry.key]
        self._uids.discard(entry.uid)
        if page in self._lru:
            del self._lru[page]
            return True
        return False

    def recorded(self) -> list[int]:
        return list(self._entries)

    def problems(self) -> list[str]:
        problems = []
        cached = set(self._lru)
        if cached - set(self._entries):
            problems.append(f"cached pages {sorted(cached - set(self._entries))} have no entry")
        if {p: e.key for p, e in self._entries.items()} != {
            p: k for k, p in self._page_of_key.items()
        }:
            problems.append("key map and entries disagree")
        uids = [e.uid for e in self._entries.values()]
        if len(set(uids)) != len(uids) or set(uids) != self._uids:
            problems.append("entry uids duplicated or out of step with the uid set")
        return problems
