"""KVStore: the K/V tensors of every page, and the three moves on them: write tokens to their
slots, gather a batch's pages in logical order, copy a page's filled slots.

K/V live in `k_cache`/`v_cache` [n_layers, n_pages, page_size, n_kv_heads, head_dim]. Storage
has one extra "null" page behind the live ones; every -1 table entry (and every padded token)
is routed there, so padding never reads or writes a live page and no host-device sync is
needed to find it.

The store checks nothing about who holds a page: `CheckedKV` (checked.py) checks tables,
positions and tensors before it calls in (once per table and step, see its module doc).
Indices made by `slot_index`/`gather_index` are what `write_slots`/`gather_pages` take.

`write` is `write_slots` through the widest element it can use. On the CPU, index_copy_ moves
one element per step of a scalar loop, so a float32 write runs at a fifth of copy_'s speed
whatever the rows' size; seen as complex128 (16 bytes a step, the same bytes), the same write is
as fast as copy_. The store keeps a second KVStore over the same storage in that element
(`_wide`) and writes through it when the bytes are many enough to pay for the two views.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from astrai.errors import StaleView
from astrai.inference.checks import same_key, slot_key

if TYPE_CHECKING:
    from astrai.inference.checked import CheckedKV


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
        self.slot_shape = flat[1:]  # one layer's rows a flat slot index points into
        self._null_page = n_pages
        self._gather_k = torch.empty(0, device=self.device, dtype=dtype)
        self._gather_v = torch.empty(0, device=self.device, dtype=dtype)
        self._wide = self._widened()
        # From how many rows a write goes through _wide: below, the two extra views cost more
        # than the narrow loop saves (measured: about even at 8 KiB a tensor, ahead from 16).
        row_bytes = n_kv_heads * head_dim * dtype.itemsize
        self.wide_from = -(-_WIDE_BYTES // row_bytes)

    def _widened(self) -> KVStore | None:
        """This store's slots seen in 16-byte elements, for `write`; None where that gains
        nothing or cannot be: off the CPU (its index_copy_ is no scalar loop), or a head whose
        bytes are no multiple of 16."""
        unit = torch.complex128
        size = self.dtype.itemsize
        if self.device.type != "cpu" or size >= unit.itemsize \
                or self.head_dim * size % unit.itemsize:
            return None
        wide = KVStore.__new__(KVStore)  # only write_slots runs on it: the fields it reads
        wide.n_kv_heads, wide.head_dim = self.n_kv_heads, self.head_dim * size // unit.itemsize
        wide.dtype, wide.device, wide._wide = unit, self.device, None
        wide._k_slots = tuple(t.view(unit) for t in self._k_slots)
        wide._v_slots = tuple(t.view(unit) for t in self._v_slots)
        return wide

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
        inside = col.clamp(0, max_pages - 1)
        phys = page_table.gather(1, inside).long()
        valid = (inside == col) & (phys >= 0)  # clamping changed nothing: 0 <= pos < the table's
        if lengths is not None:
            valid &= t < lengths.to(self.device).view(batch, 1)
        page = torch.where(valid, phys, self._null_page)
        return (page * ps + pos.remainder(ps)).reshape(-1)

    def write(self, layer_id: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """write_slots, through the 16-byte store when the write is big enough and k and v can
        be seen so (their own dtype, last dim contiguous, 16-byte aligned): the same bytes."""
        wide = self._wide
        if wide is not None and slots.shape[0] >= self.wide_from:
            kw, vw = _in(wide.dtype, k, self.dtype), _in(wide.dtype, v, self.dtype)
            if kw is not None and vw is not None:
                wide.write_slots(layer_id, slots, kw, vw)
                return
        self.write_slots(layer_id, slots, k, v)

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


_WIDE_BYTES = 16 << 10  # per tensor: from here a write goes through the 16-byte elements


def _in(unit: torch.dtype, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """x seen in `unit` elements (a view: the same bytes), or None if it cannot be."""
    if x.dtype is not dtype:
        return None  # the narrow path names the mismatch, as it always did
    try:
        w = x.view(unit)
    except RuntimeError:  # last dim not contiguous, or an offset inside a 16-byte element
        return None
    return None if w.data_ptr() % unit.itemsize else w


class CacheView:
    """A cache bound to one batch's page table and length: what an attention layer sees.

    total_len is the longest row's length after this step's write (a Python int: it sizes the
    gathered K/V); lengths, optional [B], is each row's own, for the attention mask; owners,
    optional, who each row belongs to (handed to the cache's observer). `cache` is the cache's
    checked K/V API (`PagedCache.checked`), which the view writes and gathers through.

    A step writes every layer with the same positions and K/V of one shape. The first write
    checks everything (k and v, the table, the positions) and computes the slot index; each
    later layer only confirms that it is that same step - the same position objects, unchanged
    in place, and k, v tensors of the checked shape, dtype and device - and writes. Anything
    else is checked in full again.
    """

    def __init__(
        self,
        cache: CheckedKV,
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
        # The checked step the per-layer path compares with: positions (and their in-place
        # versions, None for an int) and the shape of k and v. _NONE matches no argument.
        self._start, self._start_v, self._lens, self._lens_v = _NONE, None, _NONE, None
        self._shape: torch.Size | None = None
        self._n_tokens = 0
        self._dtype, self._device = cache.dtype, cache.device
        # A page released since binding may belong to someone else now (refs > 0 again, so
        # the table check alone would pass): the view refuses to touch K/V from then on.
        self._bound = cache.releases

    def _stale(self) -> None:
        cache = self.cache
        cache.check_table(self.page_table)  # names a page nobody holds, if there is one
        raise StaleView(
            f"this CacheView was bound before {cache.releases - self._bound} page "
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
        if cache.releases != self._bound:
            self._stale()
        start, shape, dtype, device = self._start, self._shape, self._dtype, self._device
        if not (
            (start_pos is start
             or (type(start_pos) is int and type(start) is int and start_pos == start))
            and lengths is self._lens
            and (self._start_v is None or start_pos._version == self._start_v)
            and (self._lens_v is None or lengths._version == self._lens_v)
            and type(k) is Tensor and type(v) is Tensor
            and k.shape == shape and v.shape == shape
            and k.dtype is dtype and v.dtype is dtype
            and k.device == device and v.device == device
        ):
            self._check_step(start_pos, k, v, lengths)  # not this step's: checked in full
        cache.write_slots(layer_id, self._slots, k, v)
        cache.observer.on_write(layer_id, self.page_table, start_pos, self._n_tokens, lengths,
                                self.owners, self._slots, k, v)

    def _check_step(self, start_pos, k, v, lengths) -> None:
        """A write that is not the checked step's: check k and v, and (new positions) compute
        the slot index, which checks the table and positions; then remember the step."""
        cache = self.cache
        cache.check_kv(k, v, self.page_table.shape[0])
        n_tokens = k.shape[1]
        # The slot index depends only on positions, so compute it once per step, not per layer.
        key = slot_key(start_pos, n_tokens, lengths)
        if self._slot_key is None or not same_key(self._slot_key, key):
            self._slots = cache.slot_index(self.page_table, start_pos, n_tokens, lengths)
            self._slot_key = key
        # Tensors made under inference_mode keep no version: such positions are checked (and
        # their index computed) on every write, as an in-place change could not be seen.
        start_v, lens_v = key[1], key[4]
        unversioned = (isinstance(start_pos, Tensor) and type(start_v) is not int) or (
            isinstance(lengths, Tensor) and type(lens_v) is not int)
        self._start = _NONE if unversioned else start_pos
        self._lens = _NONE if unversioned else lengths
        self._start_v, self._lens_v = start_v, lens_v
        self._shape, self._n_tokens = k.shape, n_tokens

    def gather(self, layer_id: int):
        if self.cache.releases != self._bound:
            self._stale()
        return self.cache.gather_pages(layer_id, self._index, self.total_len, self.owners)


_NONE = object()  # a start or lengths no argument is
