"""TinyModel through the paged cache (and the dense baseline) against plain causal attention."""

from __future__ import annotations

import random

import pytest
import torch

from astrai.compare.dense import DenseKVCache
from astrai.inference.cache import PagedCache, pages_for
from astrai.model import ModelConfig, TinyModel, next_tokens

ATOL = 1e-4
HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def model() -> TinyModel:
    return TinyModel(ModelConfig())


def rand_tokens(n: int, seed: int, vocab: int = 256) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g).tolist()


# ---- backends: something with bind(total_len, lengths) -> a view -------------------------------


class Paged:
    """A real PagedCache with scattered, shuffled pages; rows needing fewer pages get -1 pads."""

    def __init__(self, model, caps, page_size=4, seed=0, device="cpu", dtype=torch.float32):
        n_layers, h, d = model.kv_geometry()
        need = [pages_for(c, page_size) for c in caps]
        max_pages = max(need) + 1  # one spare column: always some -1 padding in the table
        n_pages = sum(need) + 5
        self.cache = PagedCache(n_layers, n_pages, page_size, h, d, device=device, dtype=dtype)
        pages = self.cache.alloc_n(n_pages)
        random.Random(seed).shuffle(pages)
        table = [[pages.pop() for _ in range(n)] + [-1] * (max_pages - n) for n in need]
        self.table = torch.tensor(table, dtype=torch.int64, device=device)

    def bind(self, total_len, lengths=None):
        return self.cache.bind(self.table, total_len, lengths)


class Dense:
    def __init__(self, model, caps, device="cpu", dtype=torch.float32, **_):
        n_layers, h, d = model.kv_geometry()
        self.cache = DenseKVCache(n_layers, len(caps), max(caps), h, d, device=device, dtype=dtype)

    def bind(self, total_len, lengths=None):
        return self.cache.bind(total_len, lengths)


BACKENDS = {"paged": Paged, "dense": Dense}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request):
    return BACKENDS[request.param]


class Recorder:
    """Wraps a view and keeps a copy of every K written."""

    def __init__(self, view):
        self.view, self.k = view, []
        self.total_len, self.lengths = view.total_len, view.lengths

    def write(self, layer_id, start_pos, k, v, lengths=None):
        self.k.append((layer_id, k.clone()))
        self.view.write(layer_id, start_pos, k, v, lengths)

    def gather(self, layer_id):
        return self.view.gather(layer_id)


def run_schedule(model, store, rows, steps, int_start=False, device="cpu", atol=ATOL):
    """Feed rows (full token lists) in steps (per-row chunk sizes); check against forward_dense.

    Each step runs all rows in one batch: row b's chunk starts where it stopped last time, is
    right padded with random junk to the step's longest chunk and masked with lengths.
    """
    batch = len(rows)
    ref = [model.forward_dense(torch.tensor([r], device=device))[0] for r in rows]
    pos = [0] * batch
    junk = rand_tokens(10_000, seed=99)
    for i, sizes in enumerate(steps):
        s = max(sizes)
        tok = [
            rows[b][pos[b] : pos[b] + sizes[b]] + junk[i * 50 + b : i * 50 + b + s - sizes[b]]
            for b in range(batch)
        ]
        tokens = torch.tensor(tok, device=device)
        lengths = torch.tensor(sizes, device=device)
        ends = [p + n for p, n in zip(pos, sizes)]
        total = max(ends)
        if int_start:
            assert len(set(pos)) == 1
            start = pos[0]
        else:
            start = torch.tensor(pos, device=device)
        padded = any(n < s for n in sizes)
        view = store.bind(total, torch.tensor(ends, device=device))
        out = model(tokens, start, view, lengths if padded else None)
        assert out.shape == (batch, s, model.config.vocab_size)
        assert torch.isfinite(out).all(), "padding must never produce NaN/inf"
        for b in range(batch):
            want = ref[b][pos[b] : ends[b]]
            got = out[b, : sizes[b]]
            torch.testing.assert_close(got.float().cpu(), want.float().cpu(), atol=atol, rtol=0)
        pos = ends
    return pos


# ---- cached forward == dense forward -------------------------------------------------------


@pytest.mark.parametrize("int_start", [True, False])
def test_prefill_in_one_go(model, backend, int_start):
    row = rand_tokens(19, seed=1)
    run_schedule(model, backend(model, [19]), [row], [[19]], int_start=int_start)


@pytest.mark.parametrize("int_start", [True, False])
def test_prefill_in_chunks(model, backend, int_start):
    row = rand_tokens(22, seed=2)
    steps = [[5], [1], [7], [6], [3]]
    run_schedule(model, backend(model, [22]), [row], steps, int_start=int_start)


@pytest.mark.parametrize("int_start", [True, False])
def test_prefill_then_decode(model, backend, int_start):
    row = rand_tokens(7 + 20, seed=3)
    steps = [[7]] + [[1]] * 20
    run_schedule(model, backend(model, [27]), [row], steps, int_start=int_start)


def test_ragged_batch_then_mixed_steps_then_decode(model, backend):
    # Right-padded prefill of rows of different lengths, a mixed step (different starts, S > 1,
    # padding), then decode with each row at its own position.
    lens = [11, 3, 8, 1]
    steps = [lens, [3, 1, 2, 3]] + [[1, 1, 1, 1]] * 5
    caps = [sum(s[b] for s in steps) for b in range(4)]
    rows = [rand_tokens(c, seed=10 + b) for b, c in enumerate(caps)]
    run_schedule(model, backend(model, caps), rows, steps)


def test_rows_idle_in_some_steps(model, backend):
    # Rows with 0 real tokens in a step (length 0, even at position 0) stay finite and harmless.
    steps = [[5, 0, 3], [0, 2, 1], [1, 1, 0], [2, 0, 4], [1, 1, 1]]
    caps = [sum(s[b] for s in steps) for b in range(3)]
    rows = [rand_tokens(c, seed=20 + b) for b, c in enumerate(caps)]
    run_schedule(model, backend(model, caps), rows, steps)


def test_padding_never_influences_real_rows(model, backend):
    lens = [6, 2, 4]
    rows = [rand_tokens(n, seed=30 + b) for b, n in enumerate(lens)]
    outs = []
    for junk_seed in (1, 2):
        junk = rand_tokens(18, seed=junk_seed)
        tok = torch.tensor([r + junk[b * 6 : b * 6 + 6 - len(r)] for b, r in enumerate(rows)])
        lengths = torch.tensor(lens)
        store = backend(model, [6, 6, 6])
        outs.append(model(tok, 0, store.bind(6, lengths), lengths))
    for b, n in enumerate(lens):
        torch.testing.assert_close(outs[0][b, :n], outs[1][b, :n], atol=1e-6, rtol=0)


def test_paged_rows_prefilled_apart_then_decoded_together(model):
    # Continuous batching: each row is prefilled on its own (B=1, its own page-table row), then
    # all decode in one batch at different start positions through the shared pool.
    prompts = [9, 2, 5]
    n_dec = 6
    rows = [rand_tokens(n + n_dec, seed=40 + b) for b, n in enumerate(prompts)]
    caps = [n + n_dec for n in prompts]
    store = Paged(model, caps, page_size=4, seed=7)
    ref = [model.forward_dense(torch.tensor([r]))[0] for r in rows]
    for b, n in enumerate(prompts):
        view = store.cache.bind(store.table[b : b + 1], n)
        out = model(torch.tensor([rows[b][:n]]), 0, view)
        torch.testing.assert_close(out[0], ref[b][:n], atol=ATOL, rtol=0)
    pos = list(prompts)
    for _ in range(n_dec):
        tok = torch.tensor([[rows[b][pos[b]]] for b in range(3)])
        ends = torch.tensor(pos) + 1
        view = store.bind(max(pos) + 1, ends)
        out = model(tok, torch.tensor(pos), view)
        for b in range(3):
            torch.testing.assert_close(out[b, 0], ref[b][pos[b]], atol=ATOL, rtol=0)
        pos = [p + 1 for p in pos]


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(n_heads=4, n_kv_heads=4),  # plain multi-head
        ModelConfig(n_heads=4, n_kv_heads=1),  # multi-query
        ModelConfig(n_layers=3, n_heads=6, n_kv_heads=3, head_dim=8, d_model=48, seed=5),
    ],
)
def test_other_geometries(cfg, backend):
    m = TinyModel(cfg)
    lens = [7, 3]
    steps = [lens, [2, 4], [1, 1], [1, 1]]
    caps = [sum(s[b] for s in steps) for b in range(2)]
    rows = [rand_tokens(c, seed=50 + b) for b, c in enumerate(caps)]
    run_schedule(m, backend(m, caps), rows, steps)


# ---- generation ----------------------------------------------------------------------------


def greedy_dense(model, prompt, n):
    seq = torch.tensor([prompt])
    for _ in range(n):
        nxt = next_tokens(model.forward_dense(seq)[:, -1])
        seq = torch.cat([seq, nxt[:, None]], dim=1)
    return seq[0, len(prompt) :].tolist()


def greedy_cached(model, store, prompts, n):
    """Ragged prefill of all prompts in one batch, then n - 1 batched decode steps."""
    lens = torch.tensor([len(p) for p in prompts])
    s = int(lens.max())
    tok = torch.tensor([p + [0] * (s - len(p)) for p in prompts])
    logits = model(tok, 0, store.bind(s, lens), lens)
    nxt = next_tokens(logits[torch.arange(len(prompts)), lens - 1])
    out = [nxt]
    pos = lens.clone()
    for _ in range(n - 1):
        view = store.bind(int(pos.max()) + 1, pos + 1)
        nxt = next_tokens(model(nxt[:, None], pos, view)[:, 0])
        out.append(nxt)
        pos = pos + 1
    return torch.stack(out, dim=1).tolist()


def test_greedy_generation_matches_dense(model, backend):
    n = 32
    prompts = [rand_tokens(n_p, seed=60 + b) for b, n_p in enumerate([6, 2, 9])]
    store = backend(model, [len(p) + n for p in prompts])
    got = greedy_cached(model, store, prompts, n)
    for b, p in enumerate(prompts):
        want = greedy_dense(model, p, n)
        assert got[b] == want
        assert len(set(want)) >= 8, f"greedy decoding is degenerate: {want}"


def test_next_tokens():
    logits = torch.randn(5, 256, generator=torch.Generator().manual_seed(0))
    assert torch.equal(next_tokens(logits), logits.argmax(-1))
    assert next_tokens(logits).dtype == torch.int64
    a = next_tokens(logits, 1.0, torch.Generator().manual_seed(3))
    b = next_tokens(logits, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (5,) and a.dtype == torch.int64
    # The samples follow softmax(logits / T) (so T > 0 really samples: argmax would give
    # [1, 0, 0, 0]). 20,000 draws: a frequency is within 0.0036 (one standard deviation) of
    # its probability; 0.02 is over 5 of them, so no CPU's draws land outside by chance.
    small = torch.tensor([[2.0, 1.0, 0.0, -9.0]]).expand(20_000, 4)
    draws = next_tokens(small, 2.0, torch.Generator().manual_seed(5))
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    torch.testing.assert_close(freq, torch.softmax(small[0] / 2.0, -1), atol=0.02, rtol=0)
    with pytest.raises(ValueError):
        next_tokens(logits, -1.0)
    with pytest.raises(ValueError):
        next_tokens(logits[0])


# ---- model properties ----------------------------------------------------------------------


def test_determinism():
    a, b, c = (
        TinyModel(ModelConfig(seed=0)),
        TinyModel(ModelConfig(seed=0)),
        TinyModel(ModelConfig(seed=1)),
    )
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(not torch.equal(sa[k], sc[k]) for k in sa if "norm" not in k)
    tok = torch.tensor([rand_tokens(12, seed=5)])
    assert torch.equal(a.forward_dense(tok), b.forward_dense(tok))
    assert not torch.allclose(a.forward_dense(tok), c.forward_dense(tok))


def test_gqa_writes_kv_heads_only(model):
    cfg = model.config
    assert cfg.n_kv_heads < cfg.n_heads
    assert model.kv_geometry() == (cfg.n_layers, cfg.n_kv_heads, cfg.head_dim)
    store = Paged(model, [8])
    rec = Recorder(store.bind(8))
    model(torch.tensor([rand_tokens(8, seed=6)]), 0, rec)
    assert [layer for layer, _ in rec.k] == list(range(cfg.n_layers))
    for _, k in rec.k:
        assert k.shape == (1, 8, cfg.n_kv_heads, cfg.head_dim)
    # The KV heads are distinct (not one head copied), so the grouping is really exercised.
    k0 = rec.k[0][1]
    assert not torch.allclose(k0[:, :, 0], k0[:, :, 1])


def test_k_depends_on_position_not_batch_layout(model):
    row = rand_tokens(6, seed=7)
    alone = Recorder(Paged(model, [6]).bind(6))
    model(torch.tensor([row]), 0, alone)
    # The same row as the last of a ragged batch, behind junk rows of other lengths.
    other = [rand_tokens(9, seed=8), rand_tokens(3, seed=9) + [0] * 6]
    lengths = torch.tensor([9, 3, 6])
    batched = Recorder(Paged(model, [9, 3, 6], seed=3).bind(9, lengths))
    model(torch.tensor(other + [row + [1, 2, 3]]), 0, batched, lengths)
    for (la, ka), (lb, kb) in zip(alone.k, batched.k):
        assert la == lb
        torch.testing.assert_close(kb[2, :6], ka[0], atol=1e-5, rtol=0)
    # Layer-0 K is a function of (token, position) only.
    x = [5, 9, 7]
    y = [3, 9, 2]
    rx, ry = Recorder(Paged(model, [3]).bind(3)), Recorder(Paged(model, [3]).bind(3))
    model(torch.tensor([x]), 0, rx)
    model(torch.tensor([y]), 0, ry)
    torch.testing.assert_close(rx.k[0][1][0, 1], ry.k[0][1][0, 1], atol=1e-6, rtol=0)
    assert not torch.allclose(rx.k[0][1][0, 0], ry.k[0][1][0, 0])


def test_config_validation():
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(n_heads=4, n_kv_heads=3)
    for field in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff"):
        with pytest.raises(ValueError, match=field):
            ModelConfig(**{field: 0})
    with pytest.raises(ValueError, match="head_dim"):
        ModelConfig(head_dim=15)
    with pytest.raises(ValueError, match="rope_theta"):
        ModelConfig(rope_theta=0.0)
    with pytest.raises(TypeError, match="seed"):
        ModelConfig(seed=1.5)


# ---- DenseKVCache ------------------------------------------------------------------------------


def test_dense_cache_write_gather():
    c = DenseKVCache(2, 3, 6, 2, 4)
    assert c.k_cache.shape == (2, 3, 6, 2, 4)
    k = torch.randn(3, 2, 2, 4)
    v = torch.randn(3, 2, 2, 4)
    start = torch.tensor([0, 3, 5])  # row 2's second token would fall past max_len
    view = c.bind(6, torch.tensor([2, 5, 6]))
    view.write(1, start, k, v, torch.tensor([2, 2, 1]))
    kg, vg = view.gather(1)
    assert kg.shape == vg.shape == (3, 6, 2, 4)
    torch.testing.assert_close(kg[0, 0:2], k[0])
    torch.testing.assert_close(vg[1, 3:5], v[1])
    torch.testing.assert_close(kg[2, 5], k[2, 0])
    assert c.k_cache[0].abs().sum() == 0  # other layers untouched
    # int start with the padded tail sticking out past max_len: real tokens still land.
    view = c.bind(6)
    view.write(0, 4, k, v, torch.tensor([2, 2, 2]))
    torch.testing.assert_close(c.k_cache[0, :, 4:6], k)
    k3 = torch.randn(3, 3, 2, 4)
    view.write(0, 4, k3, k3, torch.tensor([2, 1, 2]))
    torch.testing.assert_close(c.k_cache[0, [0, 2], 4:6], k3[[0, 2], :2])
    torch.testing.assert_close(c.k_cache[0, 1, 4], k3[1, 0])
    torch.testing.assert_close(c.k_cache[0, 1, 5], k[1, 1])  # row 1's padding went to scratch
    with pytest.raises(ValueError):
        view.write(0, 0, torch.randn(2, 1, 2, 4), torch.randn(2, 1, 2, 4))
    with pytest.raises(ValueError):
        c.bind(7)
    with pytest.raises(ValueError):
        DenseKVCache(2, 0, 6, 2, 4)


# ---- other devices and dtypes --------------------------------------------------------------


def _low_precision_atol(dtype):
    return ATOL if dtype == torch.float32 else 0.1  # logits have std ~2


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_bf16_cpu(kind):
    m = TinyModel(ModelConfig(), dtype=torch.bfloat16)
    assert m.inv_freq.dtype == torch.float32
    lens = [7, 3]
    steps = [lens, [2, 4], [1, 1], [1, 1]]
    caps = [sum(s[b] for s in steps) for b in range(2)]
    rows = [rand_tokens(c, seed=70 + b) for b, c in enumerate(caps)]
    store = BACKENDS[kind](m, caps, dtype=torch.bfloat16)
    run_schedule(m, store, rows, steps, atol=_low_precision_atol(torch.bfloat16))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_cuda(kind, dtype):
    cpu = TinyModel(ModelConfig())
    m = TinyModel(ModelConfig(), device="cuda", dtype=dtype)
    assert m.embed.device.type == "cuda" and m.embed.dtype == dtype
    # Same seed, same weights whatever the device.
    torch.testing.assert_close(m.embed.float().cpu(), cpu.embed, atol=1e-2, rtol=1e-2)
    lens = [11, 3, 8, 1]
    steps = [lens, [3, 1, 2, 3], [0, 1, 1, 1]] + [[1, 1, 1, 1]] * 4
    caps = [sum(s[b] for s in steps) for b in range(4)]
    rows = [rand_tokens(c, seed=80 + b) for b, c in enumerate(caps)]
    store = BACKENDS[kind](m, caps, device="cuda", dtype=dtype)
    atol = 1e-3 if dtype == torch.float32 else 0.25  # TF32/bf16 kernels
    run_schedule(m, store, rows, steps, device="cuda", atol=atol)


@needs_cuda
@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_cuda_forward_never_syncs(kind):
    m = TinyModel(ModelConfig(), device="cuda", dtype=torch.bfloat16)
    store = BACKENDS[kind](m, [16, 16], device="cuda", dtype=torch.bfloat16)
    tok = torch.randint(0, 256, (2, 5), device="cuda")
    lengths = torch.tensor([5, 3], device="cuda")
    pos = torch.tensor([5, 3], device="cuda")
    step = torch.randint(0, 256, (2, 1), device="cuda")
    view0 = store.bind(5, lengths)
    view1 = store.bind(6, pos + 1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        m(tok, 0, view0, lengths)
        logits = m(step, pos, view1)
        nxt = next_tokens(logits[:, -1])
        gen = torch.Generator(device="cuda").manual_seed(0)
        next_tokens(logits[:, -1], 0.8, gen)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert nxt.shape == (2,) and nxt.device.type == "cuda"
    assert torch.isfinite(logits).all()
