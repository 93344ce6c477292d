"""DenseKVCache: one contiguous, preallocated K/V slab per batch slot, the baseline to beat.

K/V live in `k_cache`/`v_cache` [n_layers, batch, max_len, n_kv_heads, head_dim]: row b of a
batch is slot b, and position p of that row is index p. `bind(total_len, lengths)` returns a view
with the same write/gather interface a model sees through `PagedCache.bind`, so the same model
code runs on either cache.

Storage has one extra scratch position per row (index max_len), hidden from k_cache/v_cache:
padded tokens and positions past max_len are routed there by the indexed write, so no host-device
sync is needed to drop them.
"""

from __future__ import annotations

import torch

from astrai.inference.checks import require_kv, require_sizes, same_key, slot_key


class DenseKVCache:
    def __init__(
        self,
        n_layers: int,
        batch: int,
        max_len: int,
        n_kv_heads: int,
        head_dim: int,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        require_sizes(dtype, n_layers=n_layers, batch=batch, max_len=max_len,
                      n_kv_heads=n_kv_heads, head_dim=head_dim)
        self.n_layers, self.batch, self.max_len = n_layers, batch, max_len
        self.n_kv_heads, self.head_dim = n_kv_heads, head_dim
        self.device, self.dtype = torch.device(device), dtype

        shape = (n_layers, batch, max_len + 1, n_kv_heads, head_dim)
        self._k_store = torch.zeros(shape, device=self.device, dtype=dtype)
        self._v_store = torch.zeros(shape, device=self.device, dtype=dtype)
        self.k_cache = self._k_store[:, :, :max_len]
        self.v_cache = self._v_store[:, :, :max_len]
        self.device = self._k_store.device  # "cuda" -> "cuda:0", as tensors made on it report
        # Per-layer views made once: [B, max_len + 1, H, D] to slice, [B * (max_len + 1), H, D]
        # to index_copy_ into.
        self._k_rows = self._k_store.unbind(0)
        self._v_rows = self._v_store.unbind(0)
        flat = (n_layers, batch * (max_len + 1), n_kv_heads, head_dim)
        self._k_flat = self._k_store.view(flat).unbind(0)
        self._v_flat = self._v_store.view(flat).unbind(0)

    def __repr__(self) -> str:
        return (
            f"DenseKVCache(n_layers={self.n_layers}, batch={self.batch}, max_len={self.max_len}, "
            f"n_kv_heads={self.n_kv_heads}, head_dim={self.head_dim}, device={self.device}, "
            f"dtype={self.dtype})"
        )

    def _check_kv(self, k: torch.Tensor, v: torch.Tensor) -> None:
        require_kv(k, v, self.batch, self.n_kv_heads, self.head_dim)

    def slot_index(
        self,
        start_pos: int | torch.Tensor,
        n_tokens: int,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flat storage index of token t of row b, shape [B * n_tokens].

        Token t sits at position start_pos[b] + t. Tokens with t >= lengths[b] or a position
        outside 0..max_len-1 go to the row's scratch position.
        """
        row_len = self.max_len + 1
        t = torch.arange(n_tokens, device=self.device)
        if isinstance(start_pos, torch.Tensor):
            pos = start_pos.to(self.device, torch.int64).view(self.batch, 1) + t
        else:
            if start_pos < 0:
                raise ValueError(f"start_pos must be >= 0, got {start_pos}")
            pos = (t + start_pos).expand(self.batch, n_tokens)
        valid = (pos >= 0) & (pos < self.max_len)
        if lengths is not None:
            valid &= t < lengths.to(self.device).view(self.batch, 1)
        pos = torch.where(valid, pos, self.max_len)
        rows = torch.arange(self.batch, device=self.device).view(self.batch, 1) * row_len
        return (rows + pos).reshape(-1)

    def write(
        self,
        layer_id: int,
        start_pos: int | torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        lengths: torch.Tensor | None = None,
    ) -> None:
        """Write k, v [B, S, H, D]: token t of row b to position start_pos[b] + t of slot b.

        With an int start_pos and the tokens inside max_len this is one slice copy (padded tokens
        land past their row's length, where positions hold garbage anyway); otherwise one
        index_copy_ per tensor through slot_index().
        """
        self._check_kv(k, v)
        s = k.shape[1]
        if not isinstance(start_pos, torch.Tensor) and 0 <= start_pos <= self.max_len - s:
            self._k_rows[layer_id][:, start_pos : start_pos + s] = k
            self._v_rows[layer_id][:, start_pos : start_pos + s] = v
            return
        self.write_slots(layer_id, self.slot_index(start_pos, s, lengths), k, v)

    def write_slots(self, layer_id: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Write with a precomputed slot_index()."""
        n = slots.shape[0]
        h, d = self.n_kv_heads, self.head_dim
        self._k_flat[layer_id].index_copy_(0, slots, k.reshape(n, h, d))
        self._v_flat[layer_id].index_copy_(0, slots, v.reshape(n, h, d))

    def gather(self, layer_id: int, total_len: int):
        """K and V [B, total_len, H, D]: views straight into the storage, no copy."""
        return self._k_rows[layer_id][:, :total_len], self._v_rows[layer_id][:, :total_len]

    def bind(self, total_len: int, lengths: torch.Tensor | None = None) -> DenseView:
        return DenseView(self, total_len, lengths)


class DenseView:
    """A DenseKVCache bound to one step's length: the same interface as CacheView.

    total_len is the longest row's length after this step's write (a Python int); lengths,
    optional [B], is each row's own, for the attention mask.
    """

    def __init__(self, cache: DenseKVCache, total_len: int, lengths: torch.Tensor | None = None):
        if isinstance(total_len, bool) or not isinstance(total_len, int):
            raise TypeError(f"total_len must be an int, got {type(total_len).__name__}")
        if not 0 < total_len <= cache.max_len:
            raise ValueError(f"total_len must be in 1..{cache.max_len}, got {total_len}")
        self.cache = cache
        self.total_len = total_len
        self.lengths = lengths
        self._slot_key: tuple | None = None
        self._slots: torch.Tensor | None = None

    def write(
        self,
        layer_id: int,
        start_pos: int | torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        lengths: torch.Tensor | None = None,
    ) -> None:
        cache = self.cache
        if not isinstance(start_pos, torch.Tensor) and 0 <= start_pos <= cache.max_len - k.shape[1]:
            cache.write(layer_id, start_pos, k, v, lengths)
            return
        cache._check_kv(k, v)
        # The index depends only on positions: compute it once per step, not once per layer.
        key = slot_key(start_pos, k.shape[1], lengths)
        if self._slot_key is None or not same_key(self._slot_key, key):
            self._slots = cache.slot_index(start_pos, k.shape[1], lengths)
            self._slot_key = key
        cache.write_slots(layer_id, self._slots, k, v)

    def gather(self, layer_id: int):
        return self.cache.gather(layer_id, self.total_len)

