"""CheckedKV: the cache's K/V API (write, gather, bind a batch's view), each call checked before
the store (`KVStore`, kv.py) moves anything.

Page tables are checked before anything is written: every entry must be -1 or a page some
owner holds (0..n_pages-1 with refs > 0), so a write never lands on a free page, on a cached
prefix page (refs 0) or outside the pool. The check reads the table's ids on the host. Tables
the scheduler builds are host tensors handed to `bind`, which checks them there and copies them
to the device once, so the CUDA hot path gains no host sync. A table already on the GPU handed
to `bind`, `write` or `gather` costs one sync the first time it is seen; the last table checked
is remembered (by identity and in-place version) until a page is released, so a view's
per-layer writes and reads re-check nothing. K and V are both checked (type, shape, dtype,
device) before either is written: a view checks them, the table and the positions at a step's
first write, and at each later layer only that it is the same step (see `CacheView`).
`write_slots`/`gather_pages` take indices made by `slot_index`/`gather_index`, which did the
checking; they are the unchecked fast path (only the layer id is checked there: -1 would name
the last layer).

A row may not name one page twice (the second logical page would overwrite the first), and
every real token of a write must land inside the table: a position below 0 or past the
table's last slot is refused, whether given as an int or a tensor (a tensor's values are read
on the host: free for a host tensor, which is what the scheduler hands in, one sync on CUDA).
`bind` checks a table once and keeps its own copy, so editing the caller's tensor afterwards
(even through a numpy view, which bumps no version) cannot redirect a write; a view refuses to
read or write once any page was released after it was bound, since a released page may belong
to another request by then (`StaleView`): `releases` counts those releases.

The cache composes one of these (`PagedCache.checked`): it bumps `releases` when a page's refs
fall to 0 and calls `forget` when it puts its pages back (restore). This class reads the
cache's refcounts and prefix index and tells the cache's observer what moved.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from astrai.errors import BadPageTable, LayerOutOfRange, PageNotAllocated, PageOutOfRange
from astrai.inference.checks import check_positions, require_kv, version
from astrai.inference.kv import CacheView
from astrai.inference.observer import Observer
from astrai.inference.state import Stateful

if TYPE_CHECKING:
    from astrai.inference.cache import PagedCache


class CheckedKV(Stateful):
    FIXED = ("cache", "kv", "_refs", "n_layers", "n_pages", "page_size", "n_kv_heads",
             "head_dim", "device", "dtype")
    # Nothing a step must put back: restore() calls forget(), which makes everything checked
    # before it be checked again.
    VOLATILE = ("releases", "_checked")

    def __init__(self, cache: PagedCache):
        self.cache, self.kv = cache, cache.kv
        self._refs = cache.allocator.refs  # the same list (restore refills it in place)
        self.n_layers, self.n_pages, self.page_size = cache.n_layers, cache.n_pages, \
            cache.page_size
        self.n_kv_heads, self.head_dim = cache.n_kv_heads, cache.head_dim
        self.device, self.dtype = cache.device, cache.dtype
        self.releases = 0  # pages whose refs fell to 0: a checked table may name one now
        self._checked: tuple | None = None  # (table, its version, releases, copy) last checked

    @property
    def observer(self) -> Observer:
        """The cache's observer (the cache holds the one observer of all its parts)."""
        return self.cache.observer

    def forget(self) -> None:
        """The cache's pages were put back (restore): every table is checked again."""
        self.releases += 1
        self._checked = None

    # ---- checks ----------------------------------------------------------------------------

    def check_table(self, page_table: torch.Tensor, device: torch.device | None = None,
                    remember: bool = True) -> None:
        """BadPageTable for a table of the wrong kind; PageOutOfRange / PageNotAllocated for
        an entry other than -1 and a page in use. See the module doc for what it costs.
        remember=False: the caller remembers what it keeps (bind: its own copy)."""
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
            version(page_table), self.releases
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
        if remember:
            self._remember(page_table)

    def require_held(self, pages, what: str) -> None:
        """PageOutOfRange / PageNotAllocated unless every page is in use (refs > 0)."""
        refs, n = self._refs, self.n_pages
        bad = [p for p in pages if not 0 <= p < n or refs[p] <= 0]
        for p in sorted(bad)[:1]:  # name the lowest
            if not 0 <= p < n:
                raise PageOutOfRange(f"{what} names page {p}: entries must be -1 or 0..{n - 1}")
            if refs[p] <= 0:
                state = "cached" if self.cache.prefix.is_cached(p) else "free"
                raise PageNotAllocated(
                    f"{what} names page {p}, which is {state} (refs 0): K/V go only to pages "
                    "in use"
                )

    def _remember(self, page_table: torch.Tensor, owned: bool = False) -> None:
        """Note a checked table. A caller's host table keeps a copy to compare with, since
        numpy can edit it in place unseen; a table the cache owns (a view's) needs none."""
        copy = None if owned or page_table.device.type != "cpu" else page_table.clone()
        self._checked = (page_table, version(page_table), self.releases, copy)

    def layer(self, layer_id) -> int:
        """layer_id as an int in 0..n_layers-1, else LayerOutOfRange."""
        if type(layer_id) is not int:
            if isinstance(layer_id, bool) or not hasattr(type(layer_id), "__index__"):
                raise LayerOutOfRange(f"layer_id must be an int, got {layer_id!r}")
            layer_id = operator.index(layer_id)
        if not 0 <= layer_id < self.n_layers:
            raise LayerOutOfRange(f"layer_id {layer_id} is outside 0..{self.n_layers - 1}")
        return layer_id

    def check_kv(self, k: torch.Tensor, v: torch.Tensor, batch: int) -> None:
        require_kv(k, v, batch, self.n_kv_heads, self.head_dim, self.dtype, self.device)

    # ---- the K/V API -----------------------------------------------------------------------

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
        self.check_table(page_table)
        check_positions(start_pos, lengths, page_table.shape[0], self.page_size, n_tokens,
                        page_table.shape[1])
        slots = self.kv.slot_index(page_table, start_pos, n_tokens, lengths)
        self.cache.observer.on_slots(page_table, start_pos, n_tokens, lengths, slots)
        return slots

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
        self.check_table(page_table)
        self.layer(layer_id)
        self.check_kv(k, v, page_table.shape[0])
        slots = self.slot_index(page_table, start_pos, k.shape[1], lengths)
        self.write_slots(layer_id, slots, k, v)
        self.cache.observer.on_write(layer_id, page_table, start_pos, k.shape[1], lengths,
                                     None, slots, k, v)

    def write_slots(self, layer_id: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Write with a precomputed slot_index(): one index_copy_ for K and one for V."""
        # An int in range goes straight on; anything else is converted or named by layer().
        if type(layer_id) is not int or not 0 <= layer_id < self.n_layers:
            layer_id = self.layer(layer_id)
        self.kv.write(layer_id, slots, k, v)

    def gather_index(self, page_table: torch.Tensor, total_len: int) -> torch.Tensor:
        """The page ids to gather for total_len tokens, -1 replaced by the null page, flat."""
        self.check_table(page_table)
        if isinstance(total_len, bool) or not isinstance(total_len, int):
            raise ValueError(f"total_len must be an int, got {type(total_len).__name__}")
        n_cols = self.cache.pages_for(total_len)
        if total_len <= 0 or n_cols > page_table.shape[1]:
            raise ValueError(
                f"total_len {total_len} needs {n_cols} pages; page_table has {page_table.shape[1]}"
            )
        return self.kv.gather_index(page_table, n_cols)

    def gather(self, layer_id: int, page_table: torch.Tensor, total_len: int):
        """K and V [B, total_len, H, D] in logical order.

        The results are views of buffers the store reuses: they hold until the next gather.
        """
        return self.gather_pages(layer_id, self.gather_index(page_table, total_len), total_len)

    def gather_pages(self, layer_id: int, index: torch.Tensor, total_len: int, owners=None):
        """gather() with a precomputed gather_index()."""
        k, v = self.kv.gather_pages(self.layer(layer_id), index, total_len)
        self.cache.observer.on_gather(layer_id, index, total_len, owners, k, v)
        return k, v

    def bind(
        self,
        page_table: torch.Tensor,
        total_len: int,
        lengths: torch.Tensor | None = None,
        owners: Sequence | None = None,
    ) -> CacheView:
        """A view of this batch (owners: who each row of the table belongs to, for observers).
        A host (CPU) table is checked on the host and copied to the cache's device here, so
        binding costs no host-device sync (see the module doc)."""
        return CacheView(self, self.device_table(page_table), total_len, lengths, owners)

    def device_table(self, page_table: torch.Tensor) -> torch.Tensor:
        """The table checked, then copied (to the cache's device): the copy is what a view
        uses, so editing the caller's table afterwards (even through numpy, which bumps no
        version) cannot redirect a write."""
        if isinstance(page_table, torch.Tensor) and page_table.device.type == "cpu":
            self.check_table(page_table, page_table.device, remember=False)
            frozen = page_table.to(self.device, copy=True)
        else:
            self.check_table(page_table, remember=False)
            frozen = page_table.clone()
        self._remember(frozen, owned=True)  # the copy holds what was checked
        return frozen
