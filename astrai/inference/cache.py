"""PagedCache: K/V storage in fixed-size pages, handed out from a free bitmask.

Every page is exactly one of three kinds: free (its bit is set in the mask), in use (refs > 0),
and cached (refs == 0, but it still holds a recorded prompt prefix and can be revived by a lookup
hit; the least recently used one is evicted when no free page is left).

K/V live in `k_cache`/`v_cache` [n_layers, n_pages, page_size, n_kv_heads, head_dim]. Page tables
are int tensors [B, max_pages] padded with -1; storage has one extra "null" page behind the live
ones, and every -1 entry (and every padded token) is routed there, so padding never reads or writes
a live page and no host-device sync is needed to find it.

Page tables are checked before anything is written: every entry must be -1 or a page some
owner holds (0..n_pages-1 with refs > 0), so a write never lands on a free page, on a cached
prefix page (refs 0) or outside the pool. The check reads the table's ids on the host. Tables
the scheduler builds are host tensors handed to `bind`, which checks them there and copies them
to the device once, so the CUDA hot path gains no host sync. A table already on the GPU handed
to `bind`, `write` or `gather` costs one sync the first time it is seen; the cache remembers
the last table it checked (by identity and in-place version) until a page is released, so a
view's per-layer writes and reads re-check nothing. K and V are both checked (type, shape,
dtype, device) before either is written. `write_slots`/`gather_pages` take indices made by
`slot_index`/`gather_index`, which did the checking; they are the unchecked fast path (only
the layer id is checked there: -1 would name the last layer).

A row may not name one page twice (the second logical page would overwrite the first), and
every real token of a write must land inside the table: a position below 0 or past the
table's last slot is refused, whether given as an int or a tensor (a tensor's values are read
on the host: free for a host tensor, which is what the scheduler hands in, one sync on CUDA).
`bind` checks a table once and keeps its own copy, so editing the caller's tensor afterwards
(even through a numpy view, which bumps no version) cannot redirect a write; a view refuses to
read or write once any page was released after it was bound, since a released page may belong
to another request by then (`StaleView`).
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch

from astrai.errors import (
    BadCount,
    BadPageTable,
    BadTensor,
    CacheTooLarge,
    DoubleFree,
    IntegrityError,
    LayerOutOfRange,
    PageNotAllocated,
    PageOutOfRange,
    PrefixConflict,
    SharedPage,
    StaleView,
)
from astrai.memory import available_bytes

_WORD = 64  # pages per word of the free bitmask


class CacheListener:
    """Observer of every state change; subclass and override what you need.

    Hooks run after the change is complete, so a listener always sees a consistent cache
    (an evicted page is announced once it belongs to its new owner). The cache never depends
    on what a listener does.
    """

    def on_alloc(self, page: int) -> None: ...
    def on_free(self, page: int, refs: int) -> None: ...  # refs left after the drop
    def on_release(self, page: int) -> None: ...  # refs hit 0: the page's bit is set again
    def on_cache(self, page: int) -> None: ...  # refs hit 0 on a recorded page: kept, evictable
    def on_evict(self, page: int) -> None: ...  # LRU cached page dropped so alloc can reuse it
    def on_share(self, page: int, revived: bool) -> None: ...  # inc_ref; revived: was cached
    def on_record(self, pages: list[int]) -> None: ...  # pages newly recorded as a prefix
    def on_write(self, layer_id: int, page_table, start_pos, n_tokens: int, lengths) -> None: ...
    def on_gather(self, layer_id: int, index, total_len: int) -> None: ...  # index: [B * cols]
    def on_copy(self, src: int, dst: int, n_slots: int) -> None: ...  # copy_page, once copied


class _Entry(NamedTuple):
    """A recorded prefix page. `parent` is the uid of the page before it (0 for the first)."""

    key: int
    parent: int
    tokens: tuple
    uid: int


def require_sizes(dtype: torch.dtype, **sizes: int) -> None:
    """ValueError naming the first size that is not a positive int, or a non-float dtype."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating type, got {dtype}")


def require_kv(k: torch.Tensor, v: torch.Tensor, batch: int, n_kv_heads: int, head_dim: int,
               dtype: torch.dtype | None = None, device: torch.device | None = None):
    """BadTensor (a ValueError) unless k and v are both tensors [batch, S, n_kv_heads,
    head_dim] of the given dtype and device: both are checked before either is written."""
    for name, x in (("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise BadTensor(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if dtype is not None and x.dtype != dtype:
            raise BadTensor(f"{name} is {x.dtype}; the cache holds {dtype}")
        if device is not None and x.device != device:
            raise BadTensor(f"{name} is on {x.device}; the cache is on {device}")
    want = (batch, k.shape[1] if k.dim() == 4 else -1, n_kv_heads, head_dim)
    if k.dim() != 4 or tuple(k.shape) != want or k.shape != v.shape:
        raise BadTensor(
            f"k and v must both be [B={batch}, S, {n_kv_heads}, {head_dim}], "
            f"got {tuple(k.shape)} and {tuple(v.shape)}"
        )


def store_bytes(n_layers: int, n_pages: int, page_size: int, n_kv_heads: int, head_dim: int,
                dtype: torch.dtype) -> int:
    """Bytes a PagedCache allocates: K and V of every page plus the null page, and the
    allocator's own lists (a refcount and a share of the bitmask per page)."""
    kv = 2 * n_layers * (n_pages + 1) * page_size * n_kv_heads * head_dim * dtype.itemsize
    return kv + 16 * n_pages


def pages_for(n_tokens: int, page_size: int) -> int:
    """How many pages hold n_tokens: ceil(n_tokens / page_size)."""
    return (n_tokens + page_size - 1) // page_size


class PagedCache:
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
        need = store_bytes(n_layers, n_pages, page_size, n_kv_heads, head_dim, dtype)
        have = _available(self.device)
        if have is not None and need > have:
            raise CacheTooLarge(
                f"PagedCache(n_pages={n_pages}, page_size={page_size}, ...) needs "
                f"{need / 2**20:.0f} MiB; {self.device} has {have / 2**20:.0f} MiB available"
            )

        # Storage has page n_pages as the null page; k_cache/v_cache hide it.
        shape = (n_layers, n_pages + 1, page_size, n_kv_heads, head_dim)
        self._k_store = torch.zeros(shape, device=self.device, dtype=dtype)
        self._v_store = torch.zeros(shape, device=self.device, dtype=dtype)
        # The device tensors report ("cuda" -> "cuda:0"), so page tables made on it compare equal.
        self.device = self._k_store.device
        self.k_cache = self._k_store[:, :n_pages]
        self.v_cache = self._v_store[:, :n_pages]
        # Per-layer views made once: [pages, page_size, H, D] to gather, [slots, H, D] to write.
        self._k_pages = self._k_store.unbind(0)
        self._v_pages = self._v_store.unbind(0)
        flat = (n_layers, (n_pages + 1) * page_size, n_kv_heads, head_dim)
        self._k_slots = self._k_store.view(flat).unbind(0)
        self._v_slots = self._v_store.view(flat).unbind(0)
        self._null_page = n_pages
        self._gather_k = torch.empty(0, device=self.device, dtype=dtype)
        self._gather_v = torch.empty(0, device=self.device, dtype=dtype)

        # Free bitmask in 64-page words plus a summary mask of the words that have a free page,
        # so the lowest free page is found in O(1) whatever the pool size.
        n_words = pages_for(n_pages, _WORD)
        self._words = [(1 << _WORD) - 1] * n_words
        if n_pages % _WORD:
            self._words[-1] = (1 << (n_pages % _WORD)) - 1
        self._summary = (1 << n_words) - 1
        self._n_free = n_pages
        self._refs = [0] * n_pages

        # Prefix cache: key -> page, page -> entry, and the cached pages oldest-first.
        self._page_of_key: dict[int, int] = {}
        self._entries: dict[int, _Entry] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._next_uid = 1
        self._uids: set[int] = set()  # uids of the entries held now
        self._evicted = -1
        self._releases = 0  # pages whose refs fell to 0: a checked table may name one now
        self._checked: tuple | None = None  # (table, its version, _releases) last checked

        self.listener: CacheListener | None = None

    def __repr__(self) -> str:
        return (
            f"PagedCache(n_layers={self.n_layers}, n_pages={self.n_pages}, "
            f"page_size={self.page_size}, n_kv_heads={self.n_kv_heads}, "
            f"head_dim={self.head_dim}, device={self.device}, dtype={self.dtype})"
        )

    # ---- read-only views -------------------------------------------------------------------

    @property
    def free_mask(self) -> int:
        """Bit i set <=> page i is free."""
        mask = 0
        for w, word in enumerate(self._words):
            mask |= word << (w * _WORD)
        return mask

    @property
    def refs(self) -> tuple[int, ...]:
        return tuple(self._refs)

    def refcount(self, idx: int) -> int:
        return self._refs[self._page_id(idx)]

    @property
    def cached_pages(self) -> tuple[int, ...]:
        """Pages with refs 0 still holding a recorded prefix, least recently used first."""
        return tuple(self._lru)

    @property
    def n_free(self) -> int:
        return self._n_free

    @property
    def n_cached(self) -> int:
        return len(self._lru)

    @property
    def n_used(self) -> int:
        return self.n_pages - self._n_free - len(self._lru)

    @property
    def n_available(self) -> int:
        """Pages alloc() can still hand out: free ones, then evicted cached ones."""
        return self._n_free + len(self._lru)

    def pages_for(self, n_tokens: int) -> int:
        return pages_for(n_tokens, self.page_size)

    # ---- allocation ------------------------------------------------------------------------

    def alloc(self) -> int:
        """Take the lowest free page (refs = 1); evict the LRU cached page if none; else -1."""
        idx = self._take()
        if idx >= 0:
            self._refs[idx] = 1
            if self.listener is not None:
                self._announce_alloc(idx)
        return idx

    def _take(self) -> int:
        summary = self._summary
        if summary:
            w = (summary & -summary).bit_length() - 1  # lowest word with a free page
            word = self._words[w]
            lsb = word & -word  # its lowest set bit is the lowest free page
            word ^= lsb  # clear it: the page is taken
            self._words[w] = word
            if not word:
                self._summary = summary ^ (1 << w)
            self._n_free -= 1
            return w * _WORD + lsb.bit_length() - 1
        if self._lru:
            return self._evict_lru()
        return -1

    def alloc_n(self, n: int, out: list[int] | None = None) -> list[int]:
        """n pages or none: [] (with nothing allocated or evicted) when n cannot be had.

        With `out` (an owner's page table), each page is appended to it as it is taken, so a
        listener sees the table grow page by page.
        """
        if isinstance(n, bool):  # True would allocate a page
            raise BadCount(f"alloc_n needs an int count, got {n!r}")
        n = operator.index(n)
        if n < 0:
            raise BadCount(f"alloc_n needs n >= 0, got {n}")
        if out is not None and not isinstance(out, list):
            raise TypeError(f"alloc_n: out must be a list, got {type(out).__name__}")
        if n > self._n_free + len(self._lru):
            return []
        pages = []
        for _ in range(n):
            idx = self._take()
            self._refs[idx] = 1
            pages.append(idx)
            if out is not None:
                out.append(idx)
            if self.listener is not None:
                self._announce_alloc(idx)
        return pages

    def _announce_alloc(self, idx: int) -> None:
        if self._evicted == idx:
            self._evicted = -1
            self.listener.on_evict(idx)
        self.listener.on_alloc(idx)

    def free(self, idx: int) -> None:
        """Drop one reference; at 0 the page's bit is set again, or it stays cached if recorded."""
        idx = self._page_id(idx)
        refs = self._refs[idx]
        if refs <= 0:
            state = "cached" if idx in self._lru else "free"
            raise DoubleFree(f"free({idx}): page {idx} holds no reference (it is {state})")
        refs -= 1
        self._refs[idx] = refs
        cached = False
        if refs == 0:
            self._releases += 1
            if idx in self._entries:
                self._lru[idx] = None  # most recently used end
                cached = True
            else:
                self._set_free(idx)
        listener = self.listener
        if listener is not None:  # called once the state is whole again
            listener.on_free(idx, refs)
            if cached:
                listener.on_cache(idx)
            elif refs == 0:
                listener.on_release(idx)

    def _set_free(self, idx: int) -> None:
        """Set the page's bit again (and its word's summary bit): the page is free."""
        w = idx // _WORD
        self._words[w] |= 1 << (idx % _WORD)
        self._summary |= 1 << w
        self._n_free += 1

    def inc_ref(self, idx: int) -> None:
        """Add a reference to an in-use page, or revive a cached one (refs 0 -> 1)."""
        idx = self._page_id(idx)
        revived = self._refs[idx] == 0
        if revived:
            if idx not in self._lru:
                raise PageNotAllocated(f"inc_ref({idx}): page {idx} is free, not allocated")
            del self._lru[idx]
        self._refs[idx] += 1
        if self.listener is not None:
            self.listener.on_share(idx, revived)

    def _page_id(self, idx) -> int:
        if type(idx) is not int:  # the common case skips the slower checks
            if isinstance(idx, bool) or not hasattr(type(idx), "__index__"):
                raise TypeError(f"page id must be an int, got {type(idx).__name__}")
            idx = operator.index(idx)
        if not 0 <= idx < self.n_pages:
            raise PageOutOfRange(f"page id {idx} is outside 0..{self.n_pages - 1}")
        return idx

    def _evict_lru(self) -> int:
        idx, _ = self._lru.popitem(last=False)
        entry = self._entries.pop(idx)
        del self._page_of_key[entry.key]
        self._uids.discard(entry.uid)
        # Announced once the page is fully taken, so listeners see a whole state.
        self._evicted = idx if self.listener is not None else -1
        return idx

    # ---- prefix cache ----------------------------------------------------------------------

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

    def prefix_keys(self, token_ids: Sequence[int]) -> list[int]:
        """The chained key of each full page of token_ids (what lookup and record compare).

        Page i's key hashes page i-1's key with page i's tokens, so equal tokens after another
        earlier page (or at another position) get another key. Changes nothing."""
        return [key for key, _ in self._chunks(token_ids)]

    def prefix_key(self, idx: int) -> int | None:
        """The key a recorded page is indexed under; None if the page records no prefix."""
        entry = self._entries.get(self._page_id(idx))
        return entry.key if entry is not None else None

    def lookup_prefix(self, token_ids: Sequence[int]) -> list[int]:
        """Physical pages of the longest recorded full-page prefix of token_ids. Changes nothing.

        Each hit is verified against the stored tokens and the identity of the page before it,
        so a hash collision can only cause a miss, never a wrong page.
        """
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

    def record_prefix(self, pages: Sequence[int], token_ids: Sequence[int]) -> list[int]:
        """Record the full pages of a prompt (pages[i] holds tokens i*ps..(i+1)*ps-1).

        Pages whose content is already recorded (on this page or another) are skipped. Returns
        the pages newly recorded.
        """
        chunks = list(self._chunks(token_ids))[: len(pages)]
        pages = [self._page_id(p) for p in pages[: len(chunks)]]
        for page in pages:
            if self._refs[page] == 0:
                raise PageNotAllocated(f"record_prefix: page {page} is not allocated")
        plan: list[tuple[int, _Entry]] = []
        planned: dict[int, _Entry] = {}
        stale: list[int] = []
        parent = 0
        uid = self._next_uid
        for page, (key, tokens) in zip(pages, chunks):
            known = self._page_of_key.get(key)
            if known is not None or key in planned:
                entry = self._entries[known] if known is not None else planned[key]
                orphan = known is not None and entry.parent and entry.parent not in self._uids
                if orphan:
                    # Its parent page was evicted, so no lookup can reach it: replace it.
                    stale.append(known)
                elif entry.tokens != tokens or entry.parent != parent:
                    break  # a hash collision: stop indexing here, never overwrite
                else:
                    parent = entry.uid
                    continue
            if (page in self._entries and page not in stale) or any(page == p for p, _ in plan):
                raise PrefixConflict(
                    f"record_prefix: page {page} already records another prefix page"
                )
            entry = _Entry(key, parent, tokens, uid)
            plan.append((page, entry))
            planned[key] = entry
            parent = uid
            uid += 1
        # Only now mutate, so a raise above leaves the cache unchanged.
        for page in stale:
            self._forget(page)
        for page, entry in plan:
            self._entries[page] = entry
            self._page_of_key[entry.key] = page
            self._uids.add(entry.uid)
        self._next_uid = uid
        recorded = [page for page, _ in plan]
        if recorded and self.listener is not None:
            self.listener.on_record(recorded)
        return recorded

    def clear_prefix_cache(self) -> None:
        """Forget every recorded prefix; cached pages become free."""
        for idx in list(self._entries):
            self._forget(idx)

    def _forget(self, idx: int) -> None:
        """Drop a page's prefix entry; a cached page goes back to the free mask."""
        entry = self._entries.pop(idx)
        del self._page_of_key[entry.key]
        self._uids.discard(entry.uid)
        if idx in self._lru:
            del self._lru[idx]
            self._set_free(idx)
            if self.listener is not None:
                self.listener.on_evict(idx)
                self.listener.on_release(idx)

    def is_recorded(self, idx: int) -> bool:
        return idx in self._entries

    # ---- integrity -------------------------------------------------------------------------

    def check(self) -> None:
        """Raise IntegrityError unless mask, refs, counts, cache maps and LRU all agree."""
        n = self.n_pages
        mask = self.free_mask
        problems = []
        if mask >> n:
            problems.append(f"mask has bits above page {n - 1}")
        free = {i for i in range(n) if mask >> i & 1}
        if len(free) != self._n_free:
            problems.append(f"n_free {self._n_free} != {len(free)} set bits")
        for w, word in enumerate(self._words):
            if bool(word) != bool(self._summary >> w & 1):
                problems.append(f"summary bit {w} disagrees with word {w}")
        if self._summary >> len(self._words):
            problems.append("summary has bits past the last word")
        cached = set(self._lru)
        used = {i for i in range(n) if self._refs[i] > 0}
        if any(r < 0 for r in self._refs):
            problems.append("negative refcount")
        if free & cached or free & used or cached & used:
            problems.append("a page is in two states")
        if len(free) + len(cached) + len(used) != n:
            problems.append(f"free {len(free)} + cached {len(cached)} + used {len(used)} != {n}")
        if cached - set(self._entries):
            problems.append(f"cached pages {sorted(cached - set(self._entries))} have no entry")
        if free & set(self._entries):
            problems.append(f"free pages {sorted(free & set(self._entries))} hold an entry")
        if {p: e.key for p, e in self._entries.items()} != {
            p: k for k, p in self._page_of_key.items()
        }:
            problems.append("key map and entries disagree")
        uids = [e.uid for e in self._entries.values()]
        if len(set(uids)) != len(uids) or set(uids) != self._uids:
            problems.append("entry uids duplicated or out of step with the uid set")
        if problems:
            raise IntegrityError("; ".join(problems))

    # ---- K/V -------------------------------------------------------------------------------

    def _check_table(self, page_table: torch.Tensor, device: torch.device | None = None) -> None:
        """BadPageTable for a table of the wrong kind; PageOutOfRange / PageNotAllocated for
        an entry other than -1 and a page in use. See the module doc for what it costs."""
        if not isinstance(page_table, torch.Tensor):
            raise BadPageTable(f"page_table must be a tensor, got {type(page_table).__name__}")
        if page_table.dim() != 2:
            raise BadPageTable(
                f"page_table must be [B, max_pages], got {tuple(page_table.shape)}"
            )
        if page_table.device != (device or self.device):
            raise BadPageTable(
                f"page_table is on {page_table.device}, the cache on {self.device}"
            )
        if page_table.dtype not in (torch.int64, torch.int32):
            raise BadPageTable(f"page_table must be int32 or int64, got {page_table.dtype}")
        if page_table.numel() == 0:
            raise BadPageTable(f"page_table is empty: {tuple(page_table.shape)}")
        seen = self._checked
        if seen is not None and seen[0] is page_table and seen[1:3] == (
            _version(page_table), self._releases
        ) and (seen[3] is None or torch.equal(seen[3], page_table)):
            return  # a host table is compared too: an edit through numpy bumps no version
        rows = page_table.tolist()  # the one host read (a sync on CUDA)
        flat = [p for row in rows for p in row]
        ids = set(flat)
        ids.discard(-1)
        if len(ids) != len(flat) - flat.count(-1):  # a page named twice: shared, or a bug
            for b, row in enumerate(rows):
                held = [p for p in row if p != -1]
                if len(set(held)) != len(held):
                    twice = next(p for p in held if held.count(p) > 1)
                    raise BadPageTable(f"page_table row {b} names page {twice} twice: one "
                                       "page would hold two positions' K/V")
        self.require_held(ids, "page_table")
        self._remember(page_table)

    def require_held(self, pages, what: str) -> None:
        """PageOutOfRange / PageNotAllocated unless every page is in use (refs > 0)."""
        refs, n = self._refs, self.n_pages
        bad = [p for p in pages if not 0 <= p < n or refs[p] <= 0]
        for p in sorted(bad)[:1]:  # name the lowest
            if not 0 <= p < n:
                raise PageOutOfRange(f"{what} names page {p}: entries must be -1 or 0..{n - 1}")
            if refs[p] <= 0:
                state = "cached" if p in self._lru else "free"
                raise PageNotAllocated(
                    f"{what} names page {p}, which is {state} (refs 0): K/V go only to pages "
                    "in use"
                )

    def _remember(self, page_table: torch.Tensor, owned: bool = False) -> None:
        """Note a checked table. A caller's host table keeps a copy to compare with, since
        numpy can edit it in place unseen; a table the cache owns (a view's) needs none."""
        copy = None if owned or page_table.device.type != "cpu" else page_table.clone()
        self._checked = (page_table, _version(page_table), self._releases, copy)

    def _layer(self, layer_id) -> int:
        if type(layer_id) is not int:
            if isinstance(layer_id, bool) or not hasattr(type(layer_id), "__index__"):
                raise LayerOutOfRange(f"layer_id must be an int, got {layer_id!r}")
            layer_id = operator.index(layer_id)
        if not 0 <= layer_id < self.n_layers:
            raise LayerOutOfRange(f"layer_id {layer_id} is outside 0..{self.n_layers - 1}")
        return layer_id

    def _check_kv(self, k: torch.Tensor, v: torch.Tensor, batch: int) -> None:
        require_kv(k, v, batch, self.n_kv_heads, self.head_dim, self.dtype, self.device)

    def _check_positions(self, start_pos, lengths, batch: int, n_tokens: int = 0,
                         max_pages: int | None = None) -> None:
        """BadTensor unless start_pos and lengths are ints / integer tensors of B values, every
        position is >= 0 and every real token (t < lengths[b]) lands inside the table: a write
        past it would be dropped silently. Values of a tensor are read on the host (one sync
        for a CUDA tensor; the scheduler hands host tensors)."""
        for name, x in (("start_pos", start_pos), ("lengths", lengths)):
            if isinstance(x, torch.Tensor):
                if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
                    raise BadTensor(f"{name} must be an integer tensor, got {x.dtype}")
                if x.numel() != batch:
                    raise BadTensor(f"{name} must hold {batch} values, got {tuple(x.shape)}")
            elif x is not None and (isinstance(x, bool) or not isinstance(x, int)
                                    or name == "lengths"):
                raise BadTensor(f"{name} must be an int or a tensor, got {type(x).__name__}")
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 0:
            raise BadCount(f"n_tokens must be an int >= 0, got {n_tokens!r}")
        if max_pages is None:
            return
        starts = (start_pos.reshape(-1).tolist() if isinstance(start_pos, torch.Tensor)
                  else [start_pos] * batch)
        counts = lengths.reshape(-1).tolist() if lengths is not None else [n_tokens] * batch
        room = max_pages * self.page_size
        for b, (start, count) in enumerate(zip(starts, counts)):
            if start < 0:
                raise BadTensor(f"start_pos[{b}] is {start}: positions must be >= 0")
            if count < 0:
                raise BadTensor(f"lengths[{b}] is {count}: must be >= 0")
            real = min(count, n_tokens)
            if real and start + real > room:
                raise BadTensor(
                    f"start_pos[{b}] {start} with {real} tokens reaches position "
                    f"{start + real - 1}, past the page_table's {room} slots"
                )

    def slot_index(
        self,
        page_table: torch.Tensor,
        start_pos: int | torch.Tensor,
        n_tokens: int,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flat storage slot of token t of row b: page * page_size + offset, shape [B * n_tokens].

        Token t sits at position start_pos[b] + t. Tokens with t >= lengths[b] (padding, which
        may run past the table) or at a -1 entry go to the null page; a real token past the
        table is refused. Computed once per step and shared by all layers.
        """
        self._check_table(page_table)
        ps, batch, max_pages = self.page_size, page_table.shape[0], page_table.shape[1]
        self._check_positions(start_pos, lengths, batch, n_tokens, max_pages)
        t = torch.arange(n_tokens, device=self.device)
        if isinstance(start_pos, torch.Tensor):
            pos = start_pos.to(self.device, torch.int64).view(batch, 1) + t
        else:
            pos = (t + start_pos).expand(batch, n_tokens)
        col = torch.div(pos, ps, rounding_mode="floor")
        phys = page_table.gather(1, col.clamp(0, max_pages - 1)).long()
        valid = (col < max_pages) & (phys >= 0) & (pos >= 0)
        if lengths is not None:
            valid &= t < lengths.to(self.device).view(batch, 1)
        page = torch.where(valid, phys, self._null_page)
        return (page * ps + pos.remainder(ps)).reshape(-1)

    def write(
        self,
        layer_id: int,
        page_table: torch.Tensor,
        start_pos: int | torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        lengths: torch.Tensor | None = None,
    ) -> None:
        """Write k, v [B, S, H, D]: token t of row b to the slot of position start_pos[b] + t.

        lengths[b] (optional) is how many of row b's S tokens are real; the rest are padding and
        are never written to a live page.
        """
        self._check_table(page_table)
        self._layer(layer_id)
        self._check_kv(k, v, page_table.shape[0])
        slots = self.slot_index(page_table, start_pos, k.shape[1], lengths)
        self.write_slots(layer_id, slots, k, v)
        if self.listener is not None:
            self.listener.on_write(layer_id, page_table, start_pos, k.shape[1], lengths)

    def write_slots(self, layer_id: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Write with a precomputed slot_index(): one index_copy_ for K and one for V."""
        layer_id = self._layer(layer_id)
        n = slots.shape[0]
        self._k_slots[layer_id].index_copy_(0, slots, k.reshape(n, self.n_kv_heads, self.head_dim))
        self._v_slots[layer_id].index_copy_(0, slots, v.reshape(n, self.n_kv_heads, self.head_dim))

    def copy_page(self, src: int, dst: int, n_slots: int) -> None:
        """Copy the first n_slots slots of page src into page dst, K and V of every layer: the
        copy half of copy-on-write (the scheduler then points its table at dst and drops src).

        Both pages must be in use and dst held by one owner only (refs 1): copying into a page
        someone else reads would be a write into a shared page. Checked before anything moves.
        """
        src, dst = self._page_id(src), self._page_id(dst)
        self.require_held((src, dst), "copy_page")
        if src == dst:
            raise SharedPage(f"copy_page: source and destination are both page {src}")
        if self._refs[dst] != 1:
            raise SharedPage(f"copy_page: destination page {dst} has {self._refs[dst]} holders; "
                             "a copy may only go to a page held by one")
        if isinstance(n_slots, bool) or not isinstance(n_slots, int) \
                or not 0 <= n_slots <= self.page_size:
            raise BadCount(f"copy_page: n_slots must be an int in 0..{self.page_size}, "
                           f"got {n_slots!r}")
        # One strided copy per tensor covers every layer: [n_layers, n_slots, H, D].
        self._k_store[:, dst, :n_slots].copy_(self._k_store[:, src, :n_slots])
        self._v_store[:, dst, :n_slots].copy_(self._v_store[:, src, :n_slots])
        if self.listener is not None:
            self.listener.on_copy(src, dst, n_slots)

    def gather_index(self, page_table: torch.Tensor, total_len: int) -> torch.Tensor:
        """The page ids to gather for total_len tokens, -1 replaced by the null page, flat."""
        self._check_table(page_table)
        if isinstance(total_len, bool) or not isinstance(total_len, int):
            raise ValueError(f"total_len must be an int, got {type(total_len).__name__}")
        n_cols = self.pages_for(total_len)
        if total_len <= 0 or n_cols > page_table.shape[1]:
            raise ValueError(
                f"total_len {total_len} needs {n_cols} pages; page_table has {page_table.shape[1]}"
            )
        cols = page_table[:, :n_cols]
        return torch.where(cols < 0, self._null_page, cols).long().reshape(-1)

    def gather(self, layer_id: int, page_table: torch.Tensor, total_len: int):
        """K and V [B, total_len, H, D] in logical order.

        The results are views of buffers this cache reuses: they hold until the next gather.
        """
        return self.gather_pages(layer_id, self.gather_index(page_table, total_len), total_len)

    def gather_pages(self, layer_id: int, index: torch.Tensor, total_len: int):
        """gather() with a precomputed gather_index()."""
        layer_id = self._layer(layer_id)
        n = index.shape[0]
        ps, h, d = self.page_size, self.n_kv_heads, self.head_dim
        need = n * ps * h * d
        if self._gather_k.numel() < need:
            self._gather_k = torch.empty(need, device=self.device, dtype=self.dtype)
            self._gather_v = torch.empty(need, device=self.device, dtype=self.dtype)
        k_out = self._gather_k[:need].view(n, ps, h, d)
        v_out = self._gather_v[:need].view(n, ps, h, d)
        torch.index_select(self._k_pages[layer_id], 0, index, out=k_out)
        torch.index_select(self._v_pages[layer_id], 0, index, out=v_out)
        batch = n // self.pages_for(total_len)
        k = k_out.view(batch, -1, h, d)[:, :total_len]
        v = v_out.view(batch, -1, h, d)[:, :total_len]
        if self.listener is not None:
            self.listener.on_gather(layer_id, index, total_len)
        return k, v

    def bind(
        self,
        page_table: torch.Tensor,
        total_len: int,
        lengths: torch.Tensor | None = None,
    ) -> CacheView:
        """A view of this batch. A host (CPU) table is checked on the host and copied to the
        cache's device here, so binding costs no host-device sync (see the module doc)."""
        return CacheView(self, self.device_table(page_table), total_len, lengths)

    def device_table(self, page_table: torch.Tensor) -> torch.Tensor:
        """The table checked, then copied (to the cache's device): the copy is what a view
        uses, so editing the caller's table afterwards (even through numpy, which bumps no
        version) cannot redirect a write."""
        if isinstance(page_table, torch.Tensor) and page_table.device.type == "cpu":
            self._check_table(page_table, page_table.device)
            frozen = page_table.to(self.device, copy=True)
        else:
            self._check_table(page_table)
            frozen = page_table.clone()
        self._remember(frozen, owned=True)  # the copy holds what was checked
        return frozen


class CacheView:
    """A cache bound to one batch's page table and length: what an attention layer sees.

    total_len is the longest row's length after this step's write (a Python int: it sizes the
    gathered K/V); lengths, optional [B], is each row's own, for the attention mask.
    """

    def __init__(
        self,
        cache: PagedCache,
        page_table: torch.Tensor,
        total_len: int,
        lengths: torch.Tensor | None = None,
    ):
        self.cache = cache
        self.page_table = page_table
        self.total_len = total_len
        self.lengths = lengths
        self._index = cache.gather_index(page_table, total_len)  # shared by all layers
        self._slot_key: tuple | None = None
        self._slots: torch.Tensor | None = None
        # A page released since binding may belong to someone else now (refs > 0 again, so
        # the table check alone would pass): the view refuses to touch K/V from then on.
        self._bound = cache._releases

    def _stale(self) -> None:
        cache = self.cache
        cache._check_table(self.page_table)  # names a page nobody holds, if there is one
        raise StaleView(
            f"this CacheView was bound before {cache._releases - self._bound} page "
            "release(s); its pages may belong to another owner now: bind the table again"
        )
    def write(
        self,
        layer_id: int,
        start_pos: int | torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        lengths: torch.Tensor | None = None,
    ) -> None:
        cache = self.cache
        if cache._releases != self._bound:
            self._stale()
        cache._check_kv(k, v, self.page_table.shape[0])
        # The slot index depends only on positions, so compute it once per step, not per layer.
        key = slot_key(start_pos, k.shape[1], lengths, cache._releases)  # released: re-check
        if self._slot_key is None or not same_key(self._slot_key, key):
            self._slots = cache.slot_index(self.page_table, start_pos, k.shape[1], lengths)
            self._slot_key = key
        cache.write_slots(layer_id, self._slots, k, v)
        if cache.listener is not None:
            cache.listener.on_write(layer_id, self.page_table, start_pos, k.shape[1], lengths)

    def gather(self, layer_id: int):
        if self.cache._releases != self._bound:
            self._stale()
        return self.cache.gather_pages(layer_id, self._index, self.total_len)


def _available(device: torch.device) -> int | None:
    if device.type == "cuda" and not torch.cuda.is_available():
        return None  # torch itself refuses the device
    try:
        return available_bytes(device)
    except (RuntimeError, ValueError):
        return None


def _version(x) -> object:
    """A tensor's in-place version (`sp += 4` bumps it); a fresh object, never equal, for
    tensors that keep none (made under inference_mode)."""
    try:
        return x._version
    except RuntimeError:
        return object()


def slot_key(start_pos, n_tokens: int, lengths, *extra) -> tuple:
    """What a write's slot index depends on, for same_key: tensors with their versions."""
    return (start_pos, _version(start_pos) if isinstance(start_pos, torch.Tensor) else None,
            n_tokens, lengths, _version(lengths) if isinstance(lengths, torch.Tensor) else None,
            *extra)


def same_key(a: tuple, b: tuple) -> bool:
    """Whether two slot_key()s name the same write positions.

    Tensors compare by identity (the view keeps them alive, so an id cannot be reused) and by
    version, so one changed in place is a new key; a tensor never equals a non-tensor."""
    for x, y in zip(a, b):
        if x is y:
            continue
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor) or x != y:
            return False
    return True
