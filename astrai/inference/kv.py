"""KVStore: the K/V tensors of every page, and the three moves on them: write tokens to their
slots, gather a batch's pages in logical order, copy a page's filled slots.

K/V live in `k_cache`/`v_cache` [n_layers, n_pages, page_size, n_kv_heads, head_dim]. Storage
has one extra "null" page behind the live ones; every -1 table entry (and every padded token)
is routed there, so padding never reads or writes a live page and no host-device sync is
needed to find it.

The store checks nothing about who holds a page: `PagedCache` checks tables, positions and
tensors before it calls in (once per table and step, see its module doc). Indices made by
`slot_index`/`gather_index` are what `write_slots`/`gather_pages` take.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from astrai.errors import StaleView
from astrai.inference.checks import same_key, slot_key

if TYPE_CHECKING:
    from astrai.inference.cache import PagedCache


class KVStore:
    def __init__(self, n_layers: int, n_pages: int, page_size: int, n_kv_heads: int,
                 head_dim: int, device: torch.device, dtype: torch.dtype):
        self.page_size, self.n_kv_heads, self.head_dim = page_size, n_kv_heads, head_dim
        shape = (n_layers, n_pages + 1, page_size, n_kv_heads, head_dim)
        self._k_store = torch.zeros(shape, device=device, dtype=dtype)
        self._v_store = torch.zeros(shape, device=device, dtype=dtype)
        # The device tensors report ("cuda" -> "cuda:0"), so page tables made on it compare equal.
        self.device, self.dtype = self._k_store.device, dtype
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

    def slot_index(self, page_table: torch.Tensor, start_pos, n_tokens: int,
                   lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Flat storage slot of token t of row b: page * page_size + offset, [B * n_tokens].

        Token t sits at position start_pos[b] + t; tokens with t >= lengths[b] (padding) or at
        a -1 entry go to the null page."""
        ps, batch, max_pages = self.page_size, page_table.shape[0], page_table.shape[1]
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

    def write_slots(self, layer_id: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """One index_copy_ for K and one for V into the layer's slots."""
        n = slots.shape[0]
        self._k_slots[layer_id].index_copy_(0, slots, k.reshape(n, self.n_kv_heads, self.head_dim))
        self._v_slots[layer_id].index_copy_(0, slots, v.reshape(n, self.n_kv_heads, self.head_dim))

    def gather_index(self, page_table: torch.Tensor, n_cols: int) -> torch.Tensor:
        """The first n_cols page ids of each row, -1 replaced by the null page, flat."""
        cols = page_table[:, :n_cols]
        return torch.where(cols < 0, self._null_page, cols).long().reshape(-1)

    def gather_pages(self, layer_id: int, index: torch.Tensor, total_len: int):
        """K and V [B, total_len, H, D] of the pages `index` names, in its order: views of
        buffers the store reuses, valid until the next gather."""
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
        batch = n // -(-total_len // ps)
        k = k_out.view(batch, -1, h, d)[:, :total_len]
        v = v_out.view(batch, -1, h, d)[:, :total_len]
        return k, v

    def copy_page(self, src: int, dst: int, n_slots: int) -> None:
        """Copy slots 0..n_slots-1 of page src into page dst, K and V of every layer."""
        # One strided copy per tensor covers every layer: [n_layers, n_slots, H, D].
        self._k_store[:, dst, :n_slots].copy_(self._k_store[:, src, :n_slots])
        self._v_store[:, dst, :n_slots].copy_(self._v_store[:, src, :n_slots])

    def page(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of one page's K and V, every layer (what an undone step puts back)."""
        return self._k_store[:, idx].clone(), self._v_store[:, idx].clone()

    def put_page(self, idx: int, kv: tuple[torch.Tensor, torch.Tensor]) -> None:
        self._k_store[:, idx].copy_(kv[0])
        self._v_store[:, idx].copy_(kv[1])


class CacheView:
    """A cache bound to one batch's page table and length: what an attention layer sees.

    total_len is the longest row's length after this step's write (a Python int: it sizes the
    gathered K/V); lengths, optional [B], is each row's own, for the attention mask; owners,
    optional, who each row belongs to (handed to the cache's observer).
    """

    def __init__(
        self,
        cache: PagedCache,
        page_table: torch.Tensor,
        total_len: int,
        lengths: torch.Tensor | None = None,
        owners: Sequence | None = None,
    ):
        self.cache = cache
        self.page_table = page_table
        self.total_len = total_len
        self.lengths = lengths
        self.owners = owners
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
        cache.observer.on_write(layer_id, self.page_table, start_pos, k.shape[1], lengths,
                                self.owners)

    def gather(self, layer_id: int):
        if self.cache._releases != self._bound:
            self._stale()
        return self.cache.gather_pages(layer_id, self._index, self.total_len, self.owners)
