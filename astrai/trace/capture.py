"""Capture: the tensors a slot-level scene shows, taken from the real calls while a run records.

Off unless asked for (`record(workload, capture=True)`), so ordinary traces stay small. While
active it listens to the cache beside the recorder (observer hooks: astrai.inference.observer)
and sets the model's `attn_probe`:

- "slots":  each `slot_index` call: its page_table, start_pos, n_tokens, lengths and the flat
            slots it returned ([B * n_tokens]: page * page_size + offset, padding in the null
            page).
- "write":  each write of one layer: the shapes of slots, k and the slot store it wrote.
- "gather": each gather of that layer: the page index it read (null page included),
            total_len, and the shapes of the page buffer, of its [B, pages * page_size] view
            and of the K it returned (the view cut to total_len).
- "attention": that layer's attention on decode steps (by default): per row and query head,
            the scores q.k / sqrt(head_dim) against every gathered key, the mask, and the
            softmax weights SDPA applied (`max_err` = max |weights @ V - SDPA output|, which
            shows that they are the weights the model used).

Every record carries the step and phase it happened in; the trace's write and gather events of
the same step and phase name the rows.
"""

from __future__ import annotations

import math

import torch

from astrai.inference.observer import Observer, Observers
from astrai.inference.phases import StepPhase

CAPTURE_KINDS = ("slots", "write", "gather", "attention")


def _ints(x) -> list:
    return x.tolist() if isinstance(x, torch.Tensor) else x


class Capture(Observer):
    """`with Capture(cache, model, recorder):` around a recorded run; records in .records."""

    def __init__(self, cache, model, recorder, layer: int = 0,
                 attention_phases: tuple[str, ...] = (StepPhase.DECODE,)):
        if not 0 <= layer < cache.n_layers:
            raise ValueError(f"layer must be in 0..{cache.n_layers - 1}, got {layer}")
        self.cache, self.model, self.recorder = cache, model, recorder
        self.layer = layer
        self.attention_phases = tuple(attention_phases)
        self.records: list[dict] = []
        self._outer = None

    def __enter__(self) -> Capture:
        self._outer = self.cache.observer  # the recorder: it keeps hearing everything first
        self.cache.observer = Observers(self._outer, self)
        self.model.attn_probe = self._attend
        return self

    def __exit__(self, *exc) -> None:
        self.cache.observer = self._outer
        self.model.attn_probe = None

    def _add(self, kind: str, **fields) -> None:
        rec = self.recorder
        self.records.append({"kind": kind, "step": rec.step, "phase": rec.phase, **fields})

    # ---- the cache's hooks -----------------------------------------------------------------

    def on_slots(self, page_table, start_pos, n_tokens, lengths, slots) -> None:
        self._add("slots", page_table=page_table.tolist(), n_tokens=n_tokens,
                  start_pos=_ints(start_pos),
                  lengths=None if lengths is None else lengths.tolist(),
                  slots=slots.tolist(), null_page=self.cache.n_pages)

    def on_write(self, layer_id, page_table, start_pos, n_tokens, lengths, owners,
                 slots, k, v) -> None:
        if layer_id == self.layer:
            cache = self.cache
            n = slots.shape[0]
            self._add("write", layer=layer_id, slots_shape=list(slots.shape),
                      k_shape=list(k.shape), rows_shape=[n, cache.n_kv_heads, cache.head_dim],
                      store_shape=list(cache.kv.slot_shape))

    def on_gather(self, layer_id, index, total_len, owners, k, v) -> None:
        if layer_id == self.layer:
            cache = self.cache
            n, ps, h, d = index.shape[0], cache.page_size, cache.n_kv_heads, cache.head_dim
            batch = k.shape[0]
            self._add("gather", layer=layer_id, index=index.tolist(), total_len=total_len,
                      null_page=cache.n_pages, pages_shape=[n, ps, h, d],
                      view_shape=[batch, n // batch * ps, h, d], k_shape=list(k.shape))

    def _attend(self, layer_id, q, k, v, mask, out) -> None:
        """q [B, Hkv, n_rep * S, D] (query heads folded per KV head), k/v [B, Hkv, T, D],
        mask [B, 1, n_rep * S, T] (True = may attend), out: SDPA's result, like q."""
        if layer_id != self.layer or self.recorder.phase not in self.attention_phases:
            return
        b, hkv, rs, d = q.shape
        n_rep = self.model.n_rep
        s, t = rs // n_rep, k.shape[2]
        q32, k32, v32 = q.float(), k.float(), v.float()
        scores = q32 @ k32.transpose(-1, -2) / math.sqrt(d)  # SDPA's default scale
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        err = (weights @ v32 - out.float()).abs().max().item()
        # Unfold to query heads: head h = kv * n_rep + r, as the model's q.view lays them out.
        def heads(x):
            return x.view(b, hkv * n_rep, s, t)
        self._add("attention", layer=layer_id, n_heads=hkv * n_rep, n_kv_heads=hkv,
                  total_len=t, q_shape=list(q.shape), k_shape=list(k.shape),
                  out_shape=list(out.shape), scores=heads(scores).tolist(),
                  weights=heads(weights).tolist(),
                  allowed=mask[:, 0].view(b, n_rep, s, t)[:, 0].tolist(), max_err=err)
