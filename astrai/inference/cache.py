"""PagedCache: K/V storage in fixed-size pages, handed out from a free bitmask.

It holds the page policy; its parts, each a short class of its own, do the rest:
- `PageAllocator` (allocator.py): the free bitmask and a refcount per page, lowest free first;
- `PrefixIndex` (prefix.py): chained keys of recorded full prompt pages, the LRU of cached ones;
- `KVStore` (kv.py): the K/V tensors, slot and gather indices, and `CacheView`, a batch's view;
- `CheckedKV` (checked.py): the K/V API (write, gather, bind a batch's view), which checks every
  table, position and tensor handed in before the store moves anything. The cache holds one
  (`checked`), tells it when a page is released, and offers its calls as its own.

Every page is exactly one of three kinds: free (its bit is set in the mask), in use (refs > 0),
and cached (refs == 0, but it still holds a recorded prompt prefix and can be revived by a lookup
hit; the least recently used one is evicted when no free page is left).

Pages go to an owner: `alloc_n(n, owner=task)` and `inc_ref(page, owner=task)` append each page
to `owner.page_table` as it is taken (nano-vllm's block manager fills `seq.block_table` the same
way), `free(page, owner=task)` is told who lets go. The cache reads nothing else of an owner; it
passes it to its observer (astrai.inference.observer), which hears every change once it is whole.

`atomic()` runs a block (a scheduler step) that either completes or leaves the cache as it was;
blocks nest (astrai.inference.snapshot).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from contextlib import contextmanager

import torch

from astrai.errors import (
    BadCount,
    DoubleFree,
    IntegrityError,
    PageNotAllocated,
    PageOutOfRange,
    SharedPage,
)
from astrai.inference.allocator import PageAllocator
from astrai.inference.checked import CheckedKV
from astrai.inference.checks import require_room, require_sizes
from astrai.inference.kv import CacheView, KVStore
from astrai.inference.observer import NO_OBSERVER, Observer
from astrai.inference.prefix import PrefixIndex
from astrai.inference.snapshot import Snapshot, Snapshots
from astrai.inference.state import Stateful

__all__ = ["CacheView", "Observer", "PagedCache", "pages_for", "store_bytes"]


def store_bytes(n_layers: int, n_pages: int, page_size: int, n_kv_heads: int, head_dim: int,
                dtype: torch.dtype) -> int:
    """Bytes a PagedCache allocates: K and V of every page plus the null page, and the
    allocator's own lists (per page a refcount, its word and bit, and a share of the bitmask)."""
    kv = 2 * n_layers * (n_pages + 1) * page_size * n_kv_heads * head_dim * dtype.itemsize
    return kv + 32 * n_pages


def pages_for(n_tokens: int, page_size: int) -> int:
    """How many pages hold n_tokens: ceil(n_tokens / page_size)."""
    return (n_tokens + page_size - 1) // page_size


class PagedCache(Stateful):
    # Fields fixed at construction, and the ones a step changes (restore() puts the parts'
    # STATE back and has `checked` check every table again). A test holds every field of an
    # instance to these lists, so none escapes restore().
    FIXED = ("n_layers", "n_pages", "page_size", "n_kv_heads", "head_dim", "device", "dtype",
             "kv", "k_cache", "v_cache", "_k_store", "_v_store", "allocator", "prefix", "_refs",
             "checked", "observer")
    STATE = ()  # its parts' STATE is what a step changes
    VOLATILE = ("_snapshots",)

    def __init__(
        self,
        n_layers: int,
        n_pages: int,
        page_size: int,
        n_kv_heads: int,
        head_dim: int,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        require_sizes(dtype, n_layers=n_layers, n_pages=n_pages, page_size=page_size,
                      n_kv_heads=n_kv_heads, head_dim=head_dim)
        self.n_layers, self.n_pages, self.page_size = n_layers, n_pages, page_size
        self.n_kv_heads, self.head_dim = n_kv_heads, head_dim
        self.device, self.dtype = torch.device(device), dtype
        # Sized before any tensor or list exists: n_pages=2**40 is refused, not attempted.
        require_room(store_bytes(n_layers, n_pages, page_size, n_kv_heads, head_dim, dtype),
                     self.device, f"PagedCache(n_pages={n_pages}, page_size={page_size}, ...)")
        self.kv = KVStore(n_layers, n_pages, page_size, n_kv_heads, head_dim, self.device, dtype)
        self.device = self.kv.device  # "cuda" -> "cuda:0", as the tensors report it
        self.k_cache, self.v_cache = self.kv.k_cache, self.kv.v_cache  # the null page hidden
        self._k_store, self._v_store = self.kv._k_store, self.kv._v_store
        self.allocator = PageAllocator(n_pages)
        self.prefix = PrefixIndex(page_size)
        self._refs = self.allocator.refs  # the same list (restore refills it in place)
        self.checked = CheckedKV(self)
        self._snapshots = Snapshots()  # open while their atomic() blocks run
        self.observer: Observer = NO_OBSERVER

    def __repr__(self) -> str:
        return (f"PagedCache(n_layers={self.n_layers}, n_pages={self.n_pages}, "
                f"page_size={self.page_size}, n_kv_heads={self.n_kv_heads}, "
                f"head_dim={self.head_dim}, device={self.device}, dtype={self.dtype})")

    # ---- read-only views -------------------------------------------------------------------

    @property
    def free_mask(self) -> int:
        """Bit i set <=> page i is free."""
        return self.allocator.free_mask

    @property
    def refs(self) -> tuple[int, ...]:
        return tuple(self._refs)

    def refcount(self, idx: int) -> int:
        return self._refs[self._page_id(idx)]

    @property
    def cached_pages(self) -> tuple[int, ...]:
        """Pages with refs 0 still holding a recorded prefix, least recently used first."""
        return self.prefix.cached_pages

    @property
    def n_free(self) -> int:
        return self.allocator.n_free

    @property
    def n_cached(self) -> int:
        return self.prefix.n_cached

    @property
    def n_used(self) -> int:
        return self.n_pages - self.allocator.n_free - self.prefix.n_cached

    @property
    def n_available(self) -> int:
        """Pages alloc() can still hand out: free ones, then evicted cached ones."""
        return self.allocator.n_free + self.prefix.n_cached

    def pages_for(self, n_tokens: int) -> int:
        return pages_for(n_tokens, self.page_size)

    # ---- allocation ------------------------------------------------------------------------

    def alloc(self, owner=None) -> int:
        """Take the lowest free page (refs = 1); evict the LRU cached page if none; else -1."""
        # alloc_n(1, owner) without the count's checks and the list: the one-page hot path
        table = None if owner is None else _table_of(owner)
        if not self.allocator.n_free and not self.prefix.n_cached:
            return -1
        return self._give(owner, table)

    def alloc_n(self, n: int, owner=None) -> list[int]:
        """n pages or none: [] (with nothing allocated or evicted) when n cannot be had.

        Each page is the lowest free one, else the least recently used cached one (evicted).
        With an owner, each page is appended to owner.page_table as it is taken."""
        if isinstance(n, bool):  # True would allocate a page
            raise BadCount(f"alloc_n needs an int count, got {n!r}")
        n = operator.index(n)
        if n < 0:
            raise BadCount(f"alloc_n needs n >= 0, got {n}")
        table = _table_of(owner)
        if n > self.allocator.n_free + self.prefix.n_cached:
            return []
        pages = []  # a loop, not a comprehension: its frame would show up in traces
        for _ in range(n):
            pages.append(self._give(owner, table))
        return pages

    def _give(self, owner, table: list | None) -> int:
        """One page to `owner` (its `table`): the lowest free one, else the LRU cached one
        evicted. The caller made sure one of the two is there."""
        idx = self.allocator.alloc()
        evicted = idx < 0
        if evicted:
            idx = self._evict_lru()
        if self._snapshots.open:
            self._snapshots.keep(idx, self.kv)
        if table is not None:
            table.append(idx)
        if evicted:
            self.observer.on_evict(idx)
        self.observer.on_alloc(idx, owner)
        return idx

    def _evict_lru(self) -> int:
        """No page is free: the least recently used cached page changes hands (refs 1)."""
        idx = self.prefix.evict_lru()
        self._refs[idx] = 1
        return idx

    def free(self, idx: int, owner=None) -> None:
        """Drop one reference (owner: who lets go); at 0 the page's bit is set again, or it
        stays cached if it records a prefix."""
        if type(idx) is not int or not 0 <= idx < self.n_pages:  # else an int in range: fine
            idx = self._page_id(idx)
        refs = self._refs[idx]
        if refs <= 0:
            state = "cached" if self.prefix.is_cached(idx) else "free"
            raise DoubleFree(f"free({idx}): page {idx} holds no reference (it is {state})")
        refs -= 1
        self._refs[idx] = refs
        cached = False
        if refs == 0:
            self.checked.releases += 1  # a table checked before may name this page
            cached = self.prefix.park(idx)  # recorded: kept, most recently used
            if not cached:
                self.allocator.release(idx)  # its bit is set: free again
        self.observer.on_free(idx, refs, owner)
        if cached:
            self.observer.on_cache(idx)

    def inc_ref(self, idx: int, owner=None) -> None:
        """Add a reference to an in-use page, or revive a cached one (refs 0 -> 1); with an
        owner, the page is appended to owner.page_table."""
        idx = self._page_id(idx)
        table = _table_of(owner)
        revived = self._refs[idx] == 0
        if revived:
            if not self.prefix.is_cached(idx):
                raise PageNotAllocated(f"inc_ref({idx}): page {idx} is free, not allocated")
            self.prefix.revive(idx)
        self._refs[idx] += 1
        if table is not None:
            table.append(idx)
        self.observer.on_share(idx, owner, revived)

    def _page_id(self, idx) -> int:
        if type(idx) is not int:  # the common case skips the slower checks
            if isinstance(idx, bool) or not hasattr(type(idx), "__index__"):
                raise TypeError(f"page id must be an int, got {type(idx).__name__}")
            idx = operator.index(idx)
        if not 0 <= idx < self.n_pages:
            raise PageOutOfRange(f"page id {idx} is outside 0..{self.n_pages - 1}")
        return idx

    # ---- prefix cache ----------------------------------------------------------------------

    def prefix_keys(self, token_ids: Sequence[int]) -> list[int]:
        """The chained key of each full page of token_ids (what lookup and record compare).

        Page i's key hashes page i-1's key with page i's tokens, so equal tokens after another
        earlier page (or at another position) get another key. Changes nothing."""
        return self.prefix.keys(token_ids)

    def prefix_key(self, idx: int) -> int | None:
        """The key a recorded page is indexed under; None if the page records no prefix."""
        return self.prefix.key_of(self._page_id(idx))

    def lookup_prefix(self, token_ids: Sequence[int]) -> list[int]:
        """Physical pages of the longest recorded full-page prefix of token_ids. Changes nothing.

        Each hit is verified against the stored tokens and the identity of the page before it,
        so a hash collision can only cause a miss, never a wrong page.
        """
        return self.prefix.lookup_prefix(token_ids)

    def record_prefix(self, pages: Sequence[int], token_ids: Sequence[int],
                      owner=None) -> list[int]:
        """Record the full pages of a prompt (pages[i] holds tokens i*ps..(i+1)*ps-1).

        Pages whose content is already recorded (on this page or another) are skipped. Returns
        the pages newly recorded.
        """
        n_full = len(token_ids) // self.page_size
        pages = [self._page_id(p) for p in pages[:n_full]]
        for page in pages:
            if self._refs[page] == 0:
                raise PageNotAllocated(f"record_prefix: page {page} is not allocated")
        recorded, dropped = self.prefix.record_prefix(pages, token_ids)
        for page in dropped:  # cached, but replaced: back to the free mask
            self.allocator.release(page)
            self.observer.on_evict(page)
        if recorded:
            self.observer.on_record(recorded, owner)
        return recorded

    def clear_prefix_cache(self) -> None:
        """Forget every recorded prefix; cached pages become free."""
        for page in self.prefix.recorded():
            if self.prefix.forget(page):
                self.allocator.release(page)
                self.observer.on_evict(page)

    def is_recorded(self, idx: int) -> bool:
        return idx in self.prefix

    # ---- integrity -------------------------------------------------------------------------

    def check(self) -> None:
        """Raise IntegrityError unless mask, refs, counts, cache maps and LRU all agree."""
        n = self.n_pages
        problems = self.allocator.problems() + self.prefix.problems()
        mask = self.free_mask
        free = {i for i in range(n) if mask >> i & 1}
        cached = set(self.prefix.cached_pages)
        used = {i for i in range(n) if self._refs[i] > 0}
        if free & cached or free & used or cached & used:
            problems.append("a page is in two states")
        if len(free) + len(cached) + len(used) != n:
            problems.append(f"free {len(free)} + cached {len(cached)} + used {len(used)} != {n}")
        recorded = set(self.prefix.recorded())
        if free & recorded:
            problems.append(f"free pages {sorted(free & recorded)} hold an entry")
        if problems:
            raise IntegrityError("; ".join(problems))

    # ---- atomic steps ----------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Save what a step can change, and keep the K/V of pages taken from someone until the
        snapshot is restored or its block ends (astrai.inference.snapshot: blocks nest)."""
        return self._snapshots.take(self)

    def restore(self, snap: Snapshot) -> None:
        """Put the cache back as `snapshot` found it, K/V of the pages taken since included.
        BadSnapshot, changing nothing, for a snapshot of another cache or one no longer open;
        snapshots opened after this one close with it."""
        self._snapshots.opened(snap, self)
        self.allocator.restore(snap.allocator)
        self.prefix.restore(snap.prefix)
        for page, kv in snap.kept.items():
            self.kv.put_page(page, kv)
        self.checked.forget()  # tables checked since are checked again
        self._snapshots.close(snap)

    @contextmanager
    def atomic(self):
        """Run a block that either completes or, if anything escapes it, leaves the cache as
        it was before (the scheduler runs each step so: astrai.inference.undo)."""
        snap = self.snapshot()
        try:
            yield snap
        except BaseException:
            if self._snapshots.is_open(snap):  # else the block restored it (or an outer one)
                self.restore(snap)
            raise
        finally:
            self._snapshots.close(snap)

    # ---- K/V: the checked API of `checked` (astrai.inference.checked), offered here ---------

    def slot_index(self, page_table: torch.Tensor, start_pos: int | torch.Tensor, n_tokens: int,
                   lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Flat storage slot of each token: see `CheckedKV.slot_index`."""
        return self.checked.slot_index(page_table, start_pos, n_tokens, lengths)

    def write(self, layer_id: int, page_table: torch.Tensor, start_pos: int | torch.Tensor,
              k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        """Write k, v [B, S, H, D] through a table: see `CheckedKV.write`."""
        self.checked.write(layer_id, page_table, start_pos, k, v, lengths)

    def write_slots(self, layer_id: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Write with a precomputed slot_index(): see `CheckedKV.write_slots`."""
        self.checked.write_slots(layer_id, slots, k, v)

    def gather_index(self, page_table: torch.Tensor, total_len: int) -> torch.Tensor:
        """The page ids to gather for total_len tokens: see `CheckedKV.gather_index`."""
        return self.checked.gather_index(page_table, total_len)

    def gather(self, layer_id: int, page_table: torch.Tensor, total_len: int):
        """K and V [B, total_len, H, D] in logical order: see `CheckedKV.gather`."""
        return self.checked.gather(layer_id, page_table, total_len)

    def gather_pages(self, layer_id: int, index: torch.Tensor, total_len: int, owners=None):
        """gather() with a precomputed gather_index(): see `CheckedKV.gather_pages`."""
        return self.checked.gather_pages(layer_id, index, total_len, owners)

    def bind(self, page_table: torch.Tensor, total_len: int, lengths: torch.Tensor | None = None,
             owners: Sequence | None = None) -> CacheView:
        """A view of one batch, what an attention layer sees: see `CheckedKV.bind`."""
        return self.checked.bind(page_table, total_len, lengths, owners)

    def copy_page(self, src: int, dst: int, n_slots: int, owner=None) -> None:
        """Copy the first n_slots slots of page src into page dst, K and V of every layer: the
        copy half of copy-on-write (the scheduler then points its table at dst and drops src).

        Both pages must be in use and dst held by one owner only (refs 1) and recording no
        prefix: copying into a page someone else reads, now or at a later prefix hit, would be
        a write into a shared page. Checked before anything moves.
        """
        src, dst = self._page_id(src), self._page_id(dst)
        self.checked.require_held((src, dst), "copy_page")
        if src == dst:
            raise SharedPage(f"copy_page: source and destination are both page {src}")
        if self._refs[dst] != 1:
            raise SharedPage(f"copy_page: destination page {dst} has {self._refs[dst]} holders; "
                             "a copy may only go to a page held by one")
        if dst in self.prefix:  # a later prefix hit would read the copy as its tokens' K/V
            raise SharedPage(f"copy_page: destination page {dst} records a prefix; a copy may "
                             "only go to a page no prefix hit reads")
        if isinstance(n_slots, bool) or not isinstance(n_slots, int) \
                or not 0 <= n_slots <= self.page_size:
            raise BadCount(f"copy_page: n_slots must be an int in 0..{self.page_size}, "
                           f"got {n_slots!r}")
        self.kv.copy_page(src, dst, n_slots)
        self.observer.on_copy(src, dst, n_slots, owner)


def _table_of(owner) -> list | None:
    """The page table pages given to `owner` go to (None without an owner)."""
    if owner is None:
        return None
    table = getattr(owner, "page_table", None)
    if not isinstance(table, list):
        raise TypeError(f"an owner of pages needs a page_table list, got {type(owner).__name__}")
    return table

