"""K/V write and gather through page tables, against a per-token Python reference."""

from __future__ import annotations

import random

import pytest
import torch

from astrai.inference.cache import PagedCache
from astrai.inference.observer import Observer

DTYPES = [torch.float32, torch.bfloat16]
H, D, LAYERS = 2, 3, 3


# ---- reference -------------------------------------------------------------------------------


def ref_write(store, layer, table, start, k, lengths=None):
    """Per-token write into a CPU copy of k_cache: the spec, one token at a time."""
    ps = store.shape[2]
    table, k = table.cpu().tolist(), k.cpu()
    for b in range(len(table)):
        s = start if isinstance(start, int) else int(start[b])
        for t in range(k.shape[1]):
            if lengths is not None and t >= int(lengths[b]):
                continue  # padding
            pos = s + t
            if pos // ps >= len(table[b]) or table[b][pos // ps] < 0:
                continue  # past the table or at a -1 entry: dropped
            store[layer, table[b][pos // ps], pos % ps] = k[b, t]


def ref_gather(store, layer, table, total_len):
    """Expected [B, total_len, H, D] and a mask of the positions that hold a live page."""
    ps = store.shape[2]
    table = table.cpu().tolist()
    out = torch.zeros(len(table), total_len, *store.shape[3:], dtype=store.dtype)
    live = torch.zeros(len(table), total_len, dtype=torch.bool)
    for b, row in enumerate(table):
        for pos in range(total_len):
            page = row[pos // ps]
            if page >= 0:
                out[b, pos] = store[layer, page, pos % ps]
                live[b, pos] = True
    return out, live


def assert_gather(cache, layer, table, total_len, k, v):
    assert k.shape == v.shape == (table.shape[0], total_len, cache.n_kv_heads, cache.head_dim)
    assert k.dtype == v.dtype == cache.dtype and k.device == v.device == cache.k_cache.device
    for got, store in ((k, cache.k_cache), (v, cache.v_cache)):
        want, live = ref_gather(store.cpu(), layer, table, total_len)
        got = got.cpu()
        assert live.any()
        assert torch.equal(got[live], want[live])


def fill_random(cache, seed=0):
    g = torch.Generator().manual_seed(seed)
    for t in (cache.k_cache, cache.v_cache):
        t.copy_(torch.randn(t.shape, generator=g).to(cache.dtype))


def randn(g, *shape, dtype, device):
    return torch.randn(shape, generator=g).to(dtype).to(device)


class Case:
    """A random batch: scattered pages, per-row start positions and lengths, -1 padding."""

    def __init__(self, seed, device, dtype, ps=None, holes=False, spare=5):
        rng = random.Random(seed)
        self.g = torch.Generator().manual_seed(seed)
        self.ps = ps = ps or rng.choice([1, 3, 4, 8])
        self.B = B = rng.randint(1, 4)
        self.S = S = rng.randint(1, 3 * ps + 2)
        self.start = [rng.randint(0, 2 * ps + 1) for _ in range(B)]
        self.lengths = [rng.randint(0, S) for _ in range(B)]
        self.lengths[rng.randrange(B)] = S  # at least one full row
        need = [max(1, -(-(s + n) // ps)) for s, n in zip(self.start, self.lengths)]
        max_pages = max(need) + rng.randint(0, 1)
        n_pages = sum(need) + spare  # spare pages are in no table: they must never change
        perm = iter(rng.sample(range(n_pages), n_pages))
        rows = []
        for b in range(B):
            row = [next(perm) for _ in range(need[b])] + [-1] * (max_pages - need[b])
            if holes and need[b] > 1:
                row[rng.randrange(need[b])] = -1
            rows.append(row)
        self.cache = PagedCache(LAYERS, n_pages, ps, H, D, device=device, dtype=dtype)
        self.cache.alloc_n(n_pages)  # tables may name only pages in use
        fill_random(self.cache, seed + 1)
        self.table = torch.tensor(rows, dtype=rng.choice([torch.int64, torch.int32]), device=device)
        self.device, self.dtype = device, dtype
        self.total_len = max(s + n for s, n in zip(self.start, self.lengths))

    def start_t(self):
        return torch.tensor(self.start, device=self.device)

    def lengths_t(self):
        return torch.tensor(self.lengths, device=self.device)

    def kv(self, S=None):
        S = S or self.S
        shape = (self.B, S, H, D)
        return (randn(self.g, *shape, dtype=self.dtype, device=self.device) for _ in "kv")


def snapshot(cache):
    return cache.k_cache.cpu().clone(), cache.v_cache.cpu().clone()


# ---- write / gather ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("holes", [False, True])
def test_write_with_per_row_start_and_lengths(seed, dtype, holes, device):
    c = Case(seed, device, dtype, holes=holes)
    k, v = c.kv()
    ref_k, ref_v = snapshot(c.cache)
    layer = seed % LAYERS
    c.cache.write(layer, c.table, c.start_t(), k, v, lengths=c.lengths_t())
    ref_write(ref_k, layer, c.table, c.start, k, c.lengths)
    ref_write(ref_v, layer, c.table, c.start, v, c.lengths)
    # Equal everywhere: the real tokens landed, and padding/-1 entries touched no live page.
    assert torch.equal(c.cache.k_cache.cpu(), ref_k)
    assert torch.equal(c.cache.v_cache.cpu(), ref_v)
    k_out, v_out = c.cache.gather(layer, c.table, c.total_len)
    assert_gather(c.cache, layer, c.table, c.total_len, k_out, v_out)
    # Every real token reads back where it was written (unless it fell on a -1 hole).
    rows = c.table.cpu().tolist()
    for b in range(c.B):
        for t in range(c.lengths[b]):
            pos = c.start[b] + t
            if rows[b][pos // c.ps] >= 0:
                assert torch.equal(k_out[b, pos].cpu(), k[b, t].cpu())
                assert torch.equal(v_out[b, pos].cpu(), v[b, t].cpu())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_write_int_start_without_lengths(seed, dtype, device):
    c = Case(seed + 100, device, dtype)
    start = min(c.start)
    k, v = c.kv()
    ref_k, ref_v = snapshot(c.cache)
    c.cache.write(1, c.table, start, k, v)
    ref_write(ref_k, 1, c.table, start, k)
    ref_write(ref_v, 1, c.table, start, v)
    assert torch.equal(c.cache.k_cache.cpu(), ref_k)
    assert torch.equal(c.cache.v_cache.cpu(), ref_v)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_decode_steps_cross_page_boundaries(seed, dtype, device):
    """One token per row per step, rows at different lengths, for several pages' worth."""
    c = Case(seed + 200, device, dtype, ps=3, spare=8)
    ref_k, ref_v = snapshot(c.cache)
    pos = list(c.start)
    limit = c.table.shape[1] * c.ps
    for _ in range(7):
        k, v = c.kv(S=1)
        start = torch.tensor(pos, device=device)
        c.cache.write(0, c.table, start, k, v)
        ref_write(ref_k, 0, c.table, pos, k)
        ref_write(ref_v, 0, c.table, pos, v)
        pos = [min(p + 1, limit - 1) for p in pos]  # rows stop at the table's last slot
    assert torch.equal(c.cache.k_cache.cpu(), ref_k)
    assert torch.equal(c.cache.v_cache.cpu(), ref_v)
    total = min(max(pos), limit)
    assert_gather(c.cache, 0, c.table, total, *c.cache.gather(0, c.table, total))


@pytest.mark.parametrize("dtype", DTYPES)
def test_realistic_geometry(dtype, device):
    """page_size 64, 4 heads of 128: a prefill of 130 tokens into scattered pages, then decode."""
    g = torch.Generator().manual_seed(0)
    cache = PagedCache(2, 20, 64, 4, 128, device=device, dtype=dtype)
    cache.alloc_n(20)
    fill_random(cache, 3)
    table = torch.tensor(
        [[17, 3, 11, -1], [0, 19, -1, -1], [5, 8, 2, 14]], device=device, dtype=torch.int64
    )
    lengths = torch.tensor([130, 70, 129], device=device)
    k, v = (randn(g, 3, 130, 4, 128, dtype=dtype, device=device) for _ in "kv")
    ref_k, ref_v = snapshot(cache)
    cache.write(1, table, 0, k, v, lengths=lengths)
    ref_write(ref_k, 1, table, 0, k, lengths.tolist())
    ref_write(ref_v, 1, table, 0, v, lengths.tolist())
    k1, v1 = (randn(g, 3, 1, 4, 128, dtype=dtype, device=device) for _ in "kv")
    cache.write(1, table, lengths, k1, v1)
    ref_write(ref_k, 1, table, lengths.tolist(), k1)
    ref_write(ref_v, 1, table, lengths.tolist(), v1)
    assert torch.equal(cache.k_cache.cpu(), ref_k)
    assert torch.equal(cache.v_cache.cpu(), ref_v)
    assert_gather(cache, 1, table, 131, *cache.gather(1, table, 131))


def test_non_contiguous_input(device):
    c = Case(7, device, torch.float32)
    k = torch.randn(c.B, H, c.S, D, generator=c.g).to(device).transpose(1, 2)
    v = torch.randn(c.B, D, c.S, H, generator=c.g).to(device).permute(0, 2, 3, 1)
    assert not k.is_contiguous() and not v.is_contiguous()
    ref_k, ref_v = snapshot(c.cache)
    c.cache.write(0, c.table, c.start_t(), k, v, lengths=c.lengths_t())
    ref_write(ref_k, 0, c.table, c.start, k, c.lengths)
    ref_write(ref_v, 0, c.table, c.start, v, c.lengths)
    assert torch.equal(c.cache.k_cache.cpu(), ref_k)
    assert torch.equal(c.cache.v_cache.cpu(), ref_v)


def test_all_padding_writes_nothing(device):
    c = Case(11, device, torch.float32)
    k, v = c.kv()
    before = snapshot(c.cache)
    c.cache.write(
        0, c.table, c.start_t(), k, v, lengths=torch.zeros(c.B, dtype=torch.int64, device=device)
    )
    minus = torch.full_like(c.table, -1)
    c.cache.write(1, minus, c.start_t(), k, v)
    after = snapshot(c.cache)
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])


def test_gather_buffer_growth_and_reuse(device):
    c = Case(5, device, torch.float32, ps=4)
    big = torch.tensor([[0, 1, 2, 3]] * 4, device=device)
    small = c.table[:1]
    for table, total in ((small, 1), (big, 16), (small, c.ps), (big, 13), (small, 2)):
        k, v = c.cache.gather(2, table, total)
        assert_gather(c.cache, 2, table, total, k.clone(), v.clone())


# ---- CacheView -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_view_write_and_gather_every_layer(seed, dtype, device):
    c = Case(seed + 300, device, dtype, holes=seed % 2 == 1)
    view = c.cache.bind(c.table, c.total_len, c.lengths_t())
    start, lengths = c.start_t(), c.lengths_t()
    ref_k, ref_v = snapshot(c.cache)
    same_k, same_v = c.kv()
    for layer in range(LAYERS):
        # Layers 0 and 1 get the same K/V, layer 2 its own: all through one slot index.
        k, v = (same_k, same_v) if layer < 2 else c.kv()
        view.write(layer, start, k, v, lengths)
        ref_write(ref_k, layer, c.table, c.start, k, c.lengths)
        ref_write(ref_v, layer, c.table, c.start, v, c.lengths)
    assert torch.equal(c.cache.k_cache.cpu(), ref_k)
    assert torch.equal(c.cache.v_cache.cpu(), ref_v)
    results = []
    for layer in range(LAYERS):
        k, v = view.gather(layer)
        assert_gather(c.cache, layer, c.table, c.total_len, k, v)
        results.append((k.clone(), v.clone()))
        direct = c.cache.gather(layer, c.table, c.total_len)
        assert torch.equal(direct[0], results[-1][0]) and torch.equal(direct[1], results[-1][1])
    # Where this step wrote, layers 0 and 1 read back the same K/V (and layer 2 its own).
    rows = c.table.cpu().tolist()
    written = torch.zeros(c.B, c.total_len, dtype=torch.bool)
    for b in range(c.B):
        for t in range(c.lengths[b]):
            pos = c.start[b] + t
            written[b, pos] = rows[b][pos // c.ps] >= 0
    written = written.to(device)
    assert written.any()
    assert torch.equal(results[0][0][written], results[1][0][written])
    assert torch.equal(results[0][1][written], results[1][1][written])
    assert not torch.equal(results[0][0][written], results[2][0][written])


def test_view_computes_the_slot_index_once_per_step(monkeypatch, device):
    c = Case(3, device, torch.float32)
    calls = []
    real = c.cache.checked.slot_index

    def counting(*args, **kw):
        calls.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(c.cache.checked, "slot_index", counting)
    view = c.cache.bind(c.table, c.total_len)
    start, lengths = c.start_t(), c.lengths_t()
    k, v = c.kv()
    for layer in range(LAYERS):
        view.write(layer, start, k, v, lengths)
    assert len(calls) == 1
    # New positions (a new tensor, or a different int) mean a new index.
    view.write(0, c.start_t(), k, v, lengths)
    assert len(calls) == 2
    view.write(0, 1, k, v, lengths)
    view.write(1, 1, k, v, lengths)
    assert len(calls) == 3
    view.write(1, 2, k, v, lengths)
    assert len(calls) == 4


def test_view_positions_change_between_layers(device):
    """A cached slot index must not leak into a write with other positions."""
    c = Case(4, device, torch.float32, ps=4)
    c.start = [0] * c.B
    view = c.cache.bind(c.table, c.total_len)
    ref_k, ref_v = snapshot(c.cache)
    steps = [
        (0, 0, None),
        (1, 1, None),
        (2, c.start_t(), c.lengths_t()),
        (0, 2, c.lengths_t()),
        (1, torch.tensor([1] * c.B, device=device), None),
        (2, 1, None),
    ]
    for layer, start, lengths in steps:
        k, v = c.kv(S=2)
        view.write(layer, start, k, v, lengths)
        s = start.tolist() if isinstance(start, torch.Tensor) else start
        n = None if lengths is None else lengths.tolist()
        ref_write(ref_k, layer, c.table, s, k, n)
        ref_write(ref_v, layer, c.table, s, v, n)
        assert torch.equal(c.cache.k_cache.cpu(), ref_k)
        assert torch.equal(c.cache.v_cache.cpu(), ref_v)


# ---- errors ----------------------------------------------------------------------------------


def _bad_writes(c):
    B, S = c.B, c.S
    ok = torch.zeros(B, S, H, D, dtype=c.dtype, device=c.device)
    return {
        "heads": (torch.zeros(B, S, H + 1, D, dtype=c.dtype, device=c.device), ok),
        "head_dim": (ok, torch.zeros(B, S, H, D + 1, dtype=c.dtype, device=c.device)),
        "batch": (torch.zeros(B + 1, S, H, D, dtype=c.dtype, device=c.device),) * 2,
        "3d": (ok[0], ok[0]),
        "k_ne_v": (ok, ok[:, :1]),
    }


@pytest.mark.parametrize("which", ["heads", "head_dim", "batch", "3d", "k_ne_v"])
def test_write_rejects_wrong_kv_shape(which, device):
    c = Case(1, device, torch.float32)
    k, v = _bad_writes(c)[which]
    before = snapshot(c.cache)
    with pytest.raises(ValueError):
        c.cache.write(0, c.table, 0, k, v)
    view = c.cache.bind(c.table, c.total_len)
    with pytest.raises(ValueError):
        view.write(0, 0, k, v)
    after = snapshot(c.cache)
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool, torch.int16])
def test_page_table_dtype_rejected(dtype, device):
    c = Case(2, device, torch.float32)
    table = c.table.to(dtype)
    k, v = c.kv()
    before = snapshot(c.cache)
    with pytest.raises(ValueError):
        c.cache.write(0, table, 0, k, v)
    with pytest.raises(ValueError):
        c.cache.gather(0, table, 1)
    with pytest.raises(ValueError):
        c.cache.bind(table, 1)
    after = snapshot(c.cache)
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])


def test_page_table_must_be_2d(device):
    c = Case(2, device, torch.float32)
    k, v = c.kv()
    with pytest.raises(ValueError):
        c.cache.write(0, c.table[0], 0, k[:1], v[:1])
    with pytest.raises(ValueError):
        c.cache.gather(0, c.table[None], 1)


def test_total_len_beyond_the_table(device):
    c = Case(6, device, torch.float32)
    cols = c.table.shape[1]
    for bad in (cols * c.ps + 1, cols * c.ps + c.ps, 0, -3):
        with pytest.raises(ValueError):
            c.cache.gather(0, c.table, bad)
        with pytest.raises(ValueError):
            c.cache.bind(c.table, bad)
    c.cache.gather(0, c.table, cols * c.ps)  # the exact fit is fine


def test_negative_int_start_rejected(device):
    c = Case(6, device, torch.float32)
    k, v = c.kv()
    before = snapshot(c.cache)
    with pytest.raises(ValueError):
        c.cache.write(0, c.table, -1, k, v)
    after = snapshot(c.cache)
    assert torch.equal(after[0], before[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_page_table_on_wrong_device():
    c = Case(6, "cuda", torch.float32)
    k, v = c.kv()
    with pytest.raises(ValueError):
        c.cache.write(0, c.table.cpu(), 0, k, v)
    with pytest.raises(ValueError):
        c.cache.gather(0, c.table.cpu(), 1)


SPELLINGS = ["cpu", torch.device("cpu"), "cpu:0"]
if torch.cuda.is_available():
    SPELLINGS += ["cuda", "cuda:0", torch.device("cuda")]


@pytest.mark.parametrize("spelling", SPELLINGS, ids=str)
def test_any_device_spelling_accepts_tables_made_on_it(spelling):
    """PagedCache(device="cuda") must take a table built with device="cuda" (i.e. cuda:0)."""
    cache = PagedCache(1, 4, 2, H, D, device=spelling)
    cache.alloc_n(4)
    dev = torch.device(spelling)
    table = torch.tensor([[1, 2]], device=dev)
    k = torch.ones(1, 3, H, D, device=dev)
    cache.write(0, table, 0, k, k)
    out, _ = cache.gather(0, table, 3)
    assert out.eq(1).all()
    assert cache.k_cache.device == table.device


# ---- observer --------------------------------------------------------------------------------


class Recorder(Observer):
    def __init__(self):
        self.events = []

    def on_write(self, layer_id, page_table, start_pos, n_tokens, lengths, owners, *moved):
        self.events.append(("write", layer_id, page_table, start_pos, n_tokens, lengths))

    def on_gather(self, layer_id, index, total_len, owners, *moved):
        self.events.append(("gather", layer_id, index.tolist(), total_len))


def test_observer_sees_writes_and_gathers(device):
    cache = PagedCache(2, 6, 2, H, D, device=device)
    cache.alloc_n(6)
    rec = cache.observer = Recorder()
    table = torch.tensor([[4, -1], [1, 0]], device=device)
    lengths = torch.tensor([1, 3], device=device)
    k = torch.ones(2, 3, H, D, device=device)
    cache.write(1, table, 0, k, k, lengths)
    view = cache.bind(table, 3)
    start = torch.tensor([1, 3], device=device)
    view.write(0, start, k[:, :1], k[:, :1])
    cache.gather(1, table, 3)
    view.gather(0)
    with pytest.raises(ValueError):
        cache.write(0, table, 0, k[:, :, :1], k)  # an error: no event
    assert [e[:2] for e in rec.events] == [("write", 1), ("write", 0), ("gather", 1), ("gather", 0)]
    w1, w0, g1, g0 = rec.events
    assert w1[2] is table and w1[3] == 0 and w1[4] == 3 and w1[5] is lengths
    # A view writes through its own frozen copy of the table it was bound with.
    assert torch.equal(w0[2], table) and w0[3] is start and w0[4] == 1 and w0[5] is None
    assert g1 == ("gather", 1, [4, 6, 1, 0], 3)  # -1 is routed to the null page, 6
    assert g0 == ("gather", 0, [4, 6, 1, 0], 3)
