"""TinyModel: a small, real decoder-only transformer that reads and writes K/V through a cache view.

Pre-norm blocks (RMSNorm), grouped-query attention with rotary position embeddings applied by
absolute position, a SiLU-gated MLP and an output head (untied unless tied_head): the Llama
architecture. Weights are random but seeded, so two models with the same config are identical;
astrai.checkpoint fills them from a Llama checkpoint instead.

`forward(tokens, start_pos, view, lengths)` runs one step against a cache view (a `CacheView`
from `PagedCache.bind`, or a `DenseKVCache` view): it writes every layer's K/V and attends over the
gathered K/V. `forward_dense(tokens)` is the same model over whole sequences with no cache, the
reference the cached path is tested against.

forward() never syncs with the device: masks are built with tensor ops only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ModelConfig", "TinyModel", "next_tokens"]


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 16
    d_ff: int = 128
    rope_theta: float = 10000.0
    seed: int = 0
    norm_eps: float = 1e-6  # RMSNorm epsilon (a checkpoint's rms_norm_eps)
    tied_head: bool = False  # output head shares the embedding matrix (tie_word_embeddings)
    # Llama 3's rotary frequency scaling (rope_type "llama3"); rope_factor 1.0 means none.
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_pos: int = 8192

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "d_model",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "head_dim",
            "d_ff",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"ModelConfig.n_heads ({self.n_heads}) must be a multiple of "
                f"n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim must be even for rotary, got {self.head_dim}")
        theta = self.rope_theta
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0:
            raise ValueError(f"ModelConfig.rope_theta must be a positive number, got {theta!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"ModelConfig.seed must be an int, got {self.seed!r}")
        if not -2**63 <= self.seed < 2**64:  # what torch's generator takes
            raise ValueError(f"ModelConfig.seed must fit in 64 bits, got {str(self.seed)[:40]}")
        eps = self.norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"ModelConfig.norm_eps must be a number in (0, 1), got {eps!r}")
        for name in ("rope_factor", "rope_low_freq_factor", "rope_high_freq_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"ModelConfig.{name} must be a positive number, got {value!r}")
        if not self.rope_high_freq_factor > self.rope_low_freq_factor:
            raise ValueError("ModelConfig.rope_high_freq_factor must be above "
                             "rope_low_freq_factor")
        pos = self.rope_original_max_pos
        if isinstance(pos, bool) or not isinstance(pos, int) or pos <= 0:
            raise ValueError(f"ModelConfig.rope_original_max_pos must be a positive int, "
                             f"got {pos!r}")
        if not isinstance(self.tied_head, bool):
            raise TypeError(f"ModelConfig.tied_head must be true or false, got {self.tied_head!r}")


class _RMSNorm(torch.nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half rotary embedding. x [B, S, H, D]; cos, sin [B, S, 1, D/2] float32."""
    half = x.shape[-1] // 2
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:]
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.to(x.dtype)


class TinyModel(torch.nn.Module):
    def __init__(
        self,
        config: ModelConfig | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        init: bool = True,
    ):
        """init=False leaves the weights uninitialised, made directly on device in dtype: for
        a loader that fills them (astrai.checkpoint), so a large model is never drawn at
        random first."""
        super().__init__()
        config = ModelConfig() if config is None else config
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type, got {dtype}")
        self.config = config
        c = config
        self.n_rep = c.n_heads // c.n_kv_heads

        # Every weight from one CPU generator, in a fixed order: same seed, same model anywhere.
        gen = torch.Generator(device="cpu")
        gen.manual_seed(c.seed)

        def param(*shape: int, std: float) -> torch.nn.Parameter:
            if not init:
                w = torch.empty(*shape, device=device, dtype=dtype)
            else:
                w = torch.randn(*shape, generator=gen, dtype=torch.float32) * std
            return torch.nn.Parameter(w, requires_grad=False)

        def norm() -> _RMSNorm:
            return _RMSNorm(d, c.norm_eps)

        d, hd = c.d_model, c.head_dim
        self.embed = param(c.vocab_size, d, std=1.0)
        self.layers = torch.nn.ModuleList()
        for _ in range(c.n_layers):
            layer = torch.nn.Module()
            layer.attn_norm = norm()
            layer.wq = param(c.n_heads * hd, d, std=d**-0.5)
            layer.wk = param(c.n_kv_heads * hd, d, std=d**-0.5)
            layer.wv = param(c.n_kv_heads * hd, d, std=d**-0.5)
            layer.wo = param(d, c.n_heads * hd, std=(c.n_heads * hd) ** -0.5)
            layer.mlp_norm = norm()
            layer.w_gate = param(c.d_ff, d, std=d**-0.5)
            layer.w_up = param(c.d_ff, d, std=d**-0.5)
            layer.w_down = param(d, c.d_ff, std=c.d_ff**-0.5)
            self.layers.append(layer)
        self.final_norm = norm()
        if c.tied_head:
            self.head = self.embed  # one matrix, two names (as tie_word_embeddings does)
        else:
            # Untied head, scaled up a little so the next-token distribution is not flat.
            self.head = param(c.vocab_size, d, std=2.0 * d**-0.5)

        self.register_buffer("inv_freq", self._inv_freq("cpu"), persistent=False)
        self.to(device=device, dtype=dtype)
        # Optional observer of each layer's attention in forward(), for recorders only:
        # probe(layer_id, q, k, v, mask, out) with the tensors handed to SDPA and its output.
        self.attn_probe = None

    def _inv_freq(self, device) -> torch.Tensor:
        c = self.config
        exps = torch.arange(0, c.head_dim, 2, dtype=torch.float64) / c.head_dim
        inv = 1.0 / (c.rope_theta**exps)
        if c.rope_factor != 1.0:
            inv = _llama3_scaling(inv, c)
        return inv.to(device=device, dtype=torch.float32)

    def _apply(self, fn, *args, **kwargs):
        # .to()/.cuda()/.half() move the rotary frequencies but never lower them below fp32.
        out = super()._apply(fn, *args, **kwargs)
        self.inv_freq = self._inv_freq(self.inv_freq.device)
        return out

    # ---- info ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    def kv_geometry(self) -> tuple[int, int, int]:
        """(n_layers, n_kv_heads, head_dim): what a PagedCache / DenseKVCache must be built with."""
        c = self.config
        return c.n_layers, c.n_kv_heads, c.head_dim

    # ---- pieces ----------------------------------------------------------------------------

    def _rotary(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, S, 1, D/2] (float32) for absolute positions pos [B, S]."""
        angles = pos.to(torch.float32).unsqueeze(-1) * self.inv_freq
        return angles.cos().unsqueeze(2), angles.sin().unsqueeze(2)

    def _qkv(self, layer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        c = self.config
        b, s, _ = h.shape
        x = layer.attn_norm(h)
        q = F.linear(x, layer.wq).view(b, s, c.n_heads, c.head_dim)
        k = F.linear(x, layer.wk).view(b, s, c.n_kv_heads, c.head_dim)
        v = F.linear(x, layer.wv).view(b, s, c.n_kv_heads, c.head_dim)
        return _rope(q, cos, sin), _rope(k, cos, sin), v

    def _mlp(self, layer, h: torch.Tensor) -> torch.Tensor:
        x = layer.mlp_norm(h)
        return F.linear(F.silu(F.linear(x, layer.w_gate)) * F.linear(x, layer.w_up), layer.w_down)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.final_norm(h), self.head).float()

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            raise ValueError(
                f"tokens must be an int tensor [B, S], got {getattr(tokens, 'shape', tokens)!r}"
            )
        if tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be int64 (or int32), got {tokens.dtype}")
        if tokens.shape[1] == 0:
            raise ValueError("tokens must hold at least one position (S >= 1)")

    # ---- forward passes --------------------------------------------------------------------

    @torch.no_grad()
    def forward(
        self,
        tokens: torch.Tensor,
        start_pos: int | torch.Tensor,
        view,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, S, vocab] (float32) for one step through a cache view.

        Token t of row b sits at position start_pos[b] + t (start_pos: int or [B] int tensor).
        lengths[b] (optional) is how many of row b's S tokens are real (right padding); without
        it, view.lengths (each row's total length after this step) bounds the keys if set, else
        every token is real. A query at position p attends to keys at positions <= p and below
        its row's end; padded queries give finite garbage and never touch real rows.
        """
        self._check_tokens(tokens)
        c = self.config
        dev = self.device
        b, s = tokens.shape
        t = torch.arange(s, device=dev)
        if isinstance(start_pos, torch.Tensor):
            if start_pos.shape != (b,):
                raise ValueError(f"start_pos tensor must be [B={b}], got {tuple(start_pos.shape)}")
            start = start_pos.to(dev, torch.int64)
            pos = start.view(b, 1) + t  # [B, S]
        else:
            if isinstance(start_pos, bool) or not isinstance(start_pos, int) or start_pos < 0:
                raise ValueError(
                    f"start_pos must be an int >= 0 or a [B] tensor, got {start_pos!r}"
                )
            start = torch.full((b,), start_pos, device=dev, dtype=torch.int64)
            pos = (t + start_pos).expand(b, s)
        if lengths is not None:
            if lengths.shape != (b,):
                raise ValueError(f"lengths must be [B={b}], got {tuple(lengths.shape)}")
            row_end = start + lengths.to(dev, torch.int64)
        elif getattr(view, "lengths", None) is not None:
            row_end = view.lengths.to(dev, torch.int64).view(b)
        else:
            row_end = start + s

        total_len = view.total_len
        j = torch.arange(total_len, device=dev)
        # [B, S, T]: causal by absolute position, never past the row's own end (garbage), and
        # key 0 always on so no query row is ever fully masked (no NaN even for empty rows).
        allowed = (j <= pos.unsqueeze(-1)) & (j < row_end.view(b, 1, 1))
        allowed |= j == 0
        # GQA without copying K/V: the n_rep query heads that share a KV head are folded into
        # the query-length axis, so q is [B, Hkv, n_rep * S, D] against K/V [B, Hkv, T, D].
        mask = allowed.unsqueeze(1).unsqueeze(1).expand(b, 1, self.n_rep, s, total_len)
        mask = mask.reshape(b, 1, self.n_rep * s, total_len)

        cos, sin = self._rotary(pos)
        h = F.embedding(tokens, self.embed)
        for layer_id, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, h, cos, sin)
            view.write(layer_id, start_pos, k, v, lengths)
            k_all, v_all = view.gather(layer_id)  # [B, T, Hkv, D], valid until next gather
            qg = q.view(b, s, c.n_kv_heads, self.n_rep, c.head_dim).permute(0, 2, 3, 1, 4)
            qg = qg.reshape(b, c.n_kv_heads, self.n_rep * s, c.head_dim)
            kt = k_all.transpose(1, 2).to(q.dtype)
            vt = v_all.transpose(1, 2).to(q.dtype)
            o = F.scaled_dot_product_attention(qg, kt, vt, attn_mask=mask)
            if self.attn_probe is not None:
                self.attn_probe(layer_id, qg, kt, vt, mask, o)
            o = o.view(b, c.n_kv_heads, self.n_rep, s, c.head_dim).permute(0, 3, 1, 2, 4)
            h = h + F.linear(o.reshape(b, s, c.n_heads * c.head_dim), layer.wo)
            h = h + self._mlp(layer, h)
        return self._logits(h)

    @torch.no_grad()
    def forward_dense(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, S, vocab] (float32) over whole sequences from position 0, no cache.

        Plain causal attention with K/V heads repeated to the query heads: the reference.
        """
        self._check_tokens(tokens)
        c = self.config
        b, s = tokens.shape
        pos = torch.arange(s, device=self.device).expand(b, s)
        cos, sin = self._rotary(pos)
        h = F.embedding(tokens, self.embed)
        for layer in self.layers:
            q, k, v = self._qkv(layer, h, cos, sin)
            k = k.repeat_interleave(self.n_rep, dim=2)
            v = v.repeat_interleave(self.n_rep, dim=2)
            o = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            )
            h = h + F.linear(o.transpose(1, 2).reshape(b, s, c.n_heads * c.head_dim), layer.wo)
            h = h + self._mlp(layer, h)
        return self._logits(h)


def _llama3_scaling(inv_freq: torch.Tensor, c: ModelConfig) -> torch.Tensor:
    """Llama 3's long-context rope: wavelengths longer than original_max / low_freq_factor are
    stretched by rope_factor, shorter than original_max / high_freq_factor kept, and the band
    between blended smoothly."""
    wavelen = 2 * math.pi / inv_freq
    low_wavelen = c.rope_original_max_pos / c.rope_low_freq_factor
    high_wavelen = c.rope_original_max_pos / c.rope_high_freq_factor
    scaled = torch.where(wavelen > low_wavelen, inv_freq / c.rope_factor, inv_freq)
    smooth = (c.rope_original_max_pos / wavelen - c.rope_low_freq_factor) / (
        c.rope_high_freq_factor - c.rope_low_freq_factor)
    blended = (1 - smooth) * scaled / c.rope_factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled)


def next_tokens(
    logits_last: torch.Tensor,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token per row, [B] int64, from logits [B, vocab].

    temperature == 0: greedy (argmax). Otherwise a sample from softmax(logits / temperature),
    drawn with `generator` (which must live on the logits' device) for reproducibility. Sampling
    uses the exponential-race trick, argmax(p / E) with E ~ Exp(1), which draws exactly from p
    without torch.multinomial's host-device sync (it checks the distribution with .item()).
    """
    if logits_last.dim() != 2:
        raise ValueError(f"logits_last must be [B, vocab], got {tuple(logits_last.shape)}")
    temperature = float(temperature)
    if not temperature >= 0.0 or math.isinf(temperature):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if temperature == 0.0:
        return logits_last.argmax(dim=-1)
    # Shifted so the largest logit is exactly 0, and divided by a temperature no smaller than
    # float32's tiniest normal: 0 / T stays 0 and the rest go to -inf at worst, so softmax is
    # finite (one-hot on the argmax) for every finite T > 0 instead of NaN from inf - inf.
    logits = logits_last.float()
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    probs = torch.softmax(shifted / max(temperature, torch.finfo(torch.float32).tiny), dim=-1)
    race = torch.empty_like(probs).exponential_(1.0, generator=generator)
    # An exact 0 from exponential_ would make 0/0 = NaN win the argmax for a zero-probability
    # token; clamping keeps p / E finite (p <= 1) and zero for p == 0.
    race.clamp_min_(torch.finfo(torch.float32).tiny)
    return (probs / race).argmax(dim=-1)
