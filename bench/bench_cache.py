#!/usr/bin/env python
"""PagedCache micro-benchmarks: K/V gather and write against copy_ and naive loops; allocator.

    python bench/bench_cache.py            # full run (about 35 s on 2 cores, 5 GB RAM)
    python bench/bench_cache.py --quick    # smaller sizes, fewer repeats
    python bench/bench_cache.py --device cuda
    python bench/bench_cache.py --strict   # exit status 1 if a target line says FAIL

Every timing is the median of repeated samples, and the variants compared in a table are
interleaved inside the same loop (their order rotating per sample) so machine noise hits them
alike. Every source and destination tensor is filled before timing: an untouched torch.empty
reads the shared zero page and would make copy_ look about twice as fast as it really is.

Geometry: n_kv_heads=4, head_dim=128, page_size=64, float32, one layer. Page tables are random
scattered permutations of the pool. "copy_" copies exactly the bytes the variant moves (K and V).

The targets at the end (report_targets) are each a ratio of two variants of one table, so both
sides of a ratio were timed in the same loop: the allocator against a deque free list, a view's
per-layer write against the store's own slot write, the prefill write against the naive page
loop and copy_, the decode gather against copy_.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astrai.errors import DoubleFree  # noqa: E402
from astrai.inference.allocator import PageAllocator  # noqa: E402
from astrai.inference.cache import PagedCache, pages_for  # noqa: E402
from bench.targets import report  # noqa: E402

H, D, PS = 4, 128, 64
DTYPE = torch.float32
MiB = 1 << 20
TOKEN_BYTES = H * D * DTYPE.itemsize  # one token of K (or of V)


# ---- timing ------------------------------------------------------------------------------------


def steady_malloc() -> bool:
    """Keep freed memory in the heap (glibc: no trimming, no mmap for big blocks).

    The naive loops allocate their outputs on every call. With glibc's defaults, whether those
    allocations page-fault fresh memory depends on history (big blocks are mmapped, the heap is
    trimmed), which made the same naive call measure 4 ms in one table and 29 ms in another.
    With this, allocation is warm for everyone: the naive timings are a lower bound.
    """
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_trim_threshold, 1 << 30) and libc.mallopt(m_mmap_max, 0))
    except (OSError, AttributeError):
        return False


class Clock:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def once(self, fn: Callable[[], object]) -> float:
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def compare(
        self,
        variants: dict[str, Callable[[], object]],
        budget_s: float,
        min_reps: int = 5,
        max_reps: int = 41,
        sample_s: float = 2e-3,
    ) -> dict[str, float]:
        """Median seconds per call of each variant, all interleaved in one loop.

        Calls shorter than sample_s are repeated inside a sample (`inner`) so timer overhead
        and jitter do not dominate.
        """
        for fn in variants.values():  # warm up: allocations, caches, lazy init
            fn()
            fn()
        est = {k: max(self.once(fn), 1e-7) for k, fn in variants.items()}
        inner = {k: max(1, int(sample_s / t)) for k, t in est.items()}
        per_rep = sum(est[k] * inner[k] for k in variants)
        reps = max(min_reps, min(max_reps, int(budget_s / per_rep)))
        samples: dict[str, list[float]] = {k: [] for k in variants}
        items = list(variants.items())
        for r in range(reps):
            r %= len(items)
            for name, fn in items[r:] + items[:r]:
                n = inner[name]
                self.sync()
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                self.sync()
                samples[name].append((time.perf_counter() - t0) / n)
        return {k: statistics.median(v) for k, v in samples.items()}


def fmt_t(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def fmt_b(n: int) -> str:
    return f"{n / MiB:.2f} MiB" if n < 10 * MiB else f"{n / MiB:.0f} MiB"


def table(title: str, header: list[str], rows: list[list[str]], note: str = "") -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.rjust(w) for h, w in zip(header, widths))
    print(f"\n== {title}")
    if note:
        print(note)
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


# ---- setup helpers -------------------------------------------------------------------------------


def filled(*shape, device) -> torch.Tensor:
    return torch.empty(shape, device=device, dtype=DTYPE).uniform_(-1, 1)


def make_cache(n_pages: int, device) -> PagedCache:
    cache = PagedCache(1, n_pages, PS, H, D, device=device, dtype=DTYPE)
    cache.alloc_n(n_pages)  # tables may name only pages in use
    cache.k_cache.uniform_(-1, 1)
    cache.v_cache.uniform_(-1, 1)
    return cache


def scattered_table(cache: PagedCache, batch: int, cols: int, gen: torch.Generator):
    perm = torch.randperm(cache.n_pages, generator=gen)[: batch * cols]
    return perm.view(batch, cols).to(cache.device)


def naive_gather(cache: PagedCache, layer: int, table: torch.Tensor, total_len: int):
    """Python loop over the page columns: index the pages of each column, then concatenate."""
    kl, vl = cache.k_cache[layer], cache.v_cache[layer]
    cols = pages_for(total_len, cache.page_size)
    ks = [kl[table[:, c]] for c in range(cols)]
    vs = [vl[table[:, c]] for c in range(cols)]
    return torch.cat(ks, 1)[:, :total_len], torch.cat(vs, 1)[:, :total_len]


def naive_write(cache: PagedCache, layer: int, rows: list[list[int]], start: int, k, v):
    """Python loop over each row's pages, copying the page's slice of K and V."""
    kl, vl, ps = cache.k_cache[layer], cache.v_cache[layer], cache.page_size
    S = k.shape[1]
    for b, row in enumerate(rows):
        pos = start
        while pos < start + S:
            page, off = row[pos // ps], pos % ps
            n = min(ps - off, start + S - pos)
            t = pos - start
            kl[page, off : off + n].copy_(k[b, t : t + n])
            vl[page, off : off + n].copy_(v[b, t : t + n])
            pos += n


def naive_decode_write(cache: PagedCache, layer: int, rows, positions: list[int], k, v):
    """Python loop over tokens: page = table[b, pos // ps], slot = pos % ps."""
    kl, vl, ps = cache.k_cache[layer], cache.v_cache[layer], cache.page_size
    for b, pos in enumerate(positions):
        page = rows[b][pos // ps]
        kl[page, pos % ps].copy_(k[b, 0])
        vl[page, pos % ps].copy_(v[b, 0])


# ---- sections ------------------------------------------------------------------------------------


def bench_decode_gather(clock, device, quick, results):
    batches = (1, 8) if quick else (1, 8, 32)
    lengths = (128, 1024) if quick else (128, 1024, 4096)
    gen = torch.Generator().manual_seed(0)
    cache = make_cache(max(batches) * pages_for(max(lengths), PS) + 64, device)
    rows = []
    for B in batches:
        for L in lengths:
            tbl = scattered_table(cache, B, pages_for(L, PS), gen)
            view = cache.bind(tbl, L)
            src = [filled(B, L, H, D, device=device) for _ in "kv"]
            dst = [filled(B, L, H, D, device=device) for _ in "kv"]
            # Correctness first: the three ways agree.
            g = [t.clone() for t in cache.gather(0, tbl, L)]
            n = naive_gather(cache, 0, tbl, L)
            assert all(torch.equal(a, b) for a, b in zip(g, n)), "gather != naive"

            def copy(src=src, dst=dst):
                dst[0].copy_(src[0])
                dst[1].copy_(src[1])

            t = clock.compare(
                {
                    "gather": lambda tbl=tbl, L=L: cache.gather(0, tbl, L),
                    "view": lambda view=view: view.gather(0),
                    "copy": copy,
                    "naive": lambda tbl=tbl, L=L: naive_gather(cache, 0, tbl, L),
                },
                budget_s=1.0 if quick else 3.0,
            )
            payload = 2 * B * L * TOKEN_BYTES
            results["decode_gather"].append((B, L, payload, t))
            rows.append(
                [
                    str(B),
                    str(L),
                    fmt_b(payload),
                    fmt_t(t["gather"]),
                    fmt_t(t["view"]),
                    fmt_t(t["copy"]),
                    fmt_t(t["naive"]),
                    f"{t['copy'] / t['gather']:.2f}x",
                    f"{t['copy'] / t['view']:.2f}x",
                    f"{payload / t['view'] / 1e9:.1f}",
                    f"{t['naive'] / t['gather']:.1f}x",
                ]
            )
            del view, src, dst, g, n
            gc.collect()
    table(
        "decode gather: one layer, K and V [B, len, 4, 128] fp32 from scattered pages",
        [
            "B",
            "len",
            "K+V",
            "cache.gather",
            "view.gather",
            "copy_",
            "naive",
            "copy/gather",
            "copy/view",
            "view GB/s",
            "naive/gather",
        ],
        rows,
        "copy/x = speed relative to a plain copy_ of the same bytes (1.00x = as fast); "
        "naive/gather = speed-up over the per-column loop",
    )


def bench_prefill(clock, device, quick, results):
    batches = (1, 8)
    seqs = (128, 1024)
    gen = torch.Generator().manual_seed(1)
    cache = make_cache(max(batches) * pages_for(max(seqs), PS) + 64, device)
    wrows, grows = [], []
    for B in batches:
        for S in seqs:
            tbl = scattered_table(cache, B, pages_for(S, PS), gen)
            host = tbl.tolist()
            k, v = filled(B, S, H, D, device=device), filled(B, S, H, D, device=device)
            dst = [filled(B, S, H, D, device=device) for _ in "kv"]

            def copy(k=k, v=v, dst=dst):
                dst[0].copy_(k)
                dst[1].copy_(v)

            view = cache.bind(tbl, S)
            view.write(0, 0, k, v)  # the step's first write: checks, slot index
            gk, gv = cache.gather(0, tbl, S)
            assert torch.equal(gk, k) and torch.equal(gv, v), "write/gather round trip"
            tw = clock.compare(
                {
                    "view": lambda view=view, k=k, v=v: view.write(0, 0, k, v),
                    "step": lambda tbl=tbl, S=S, k=k, v=v: cache.bind(tbl, S).write(0, 0, k, v),
                    "write": lambda tbl=tbl, k=k, v=v: cache.write(0, tbl, 0, k, v),
                    "copy": copy,
                    "naive": lambda host=host, k=k, v=v: naive_write(cache, 0, host, 0, k, v),
                },
                budget_s=0.5 if quick else 1.5,
            )
            tg = clock.compare(
                {
                    "gather": lambda tbl=tbl, S=S: cache.gather(0, tbl, S),
                    "copy": copy,
                    "naive": lambda tbl=tbl, S=S: naive_gather(cache, 0, tbl, S),
                },
                budget_s=0.5 if quick else 1.5,
            )
            payload = 2 * B * S * TOKEN_BYTES
            results["prefill_write"].append((B, S, payload, tw))
            results["prefill_gather"].append((B, S, payload, tg))
            wrows.append(
                [
                    str(B),
                    str(S),
                    fmt_b(payload),
                    fmt_t(tw["view"]),
                    fmt_t(tw["step"]),
                    fmt_t(tw["write"]),
                    fmt_t(tw["copy"]),
                    fmt_t(tw["naive"]),
                    f"{tw['copy'] / tw['view']:.2f}x",
                    f"{tw['naive'] / tw['view']:.2f}x",
                    f"{tw['naive'] / tw['step']:.2f}x",
                    f"{payload / tw['view'] / 1e9:.1f}",
                ]
            )
            grows.append(
                [
                    str(B),
                    str(S),
                    fmt_b(payload),
                    fmt_t(tg["gather"]),
                    fmt_t(tg["copy"]),
                    fmt_t(tg["naive"]),
                    f"{tg['copy'] / tg['gather']:.2f}x",
                    f"{payload / tg['gather'] / 1e9:.1f}",
                    f"{tg['naive'] / tg['gather']:.1f}x",
                ]
            )
            del view
    table(
        "prefill write: K and V [B, S, 4, 128] fp32 into scattered pages from position 0",
        ["B", "S", "K+V", "view.write/layer", "bind+write", "cache.write", "copy_", "naive",
         "copy/view", "naive/view", "naive/bind+write", "GB/s"],
        wrows,
        "view.write = a layer's write through a bound view (what the model calls per layer); "
        "bind+write = a whole\nstep's once-only work too (bind, checks, slot index) with one "
        "layer; cache.write = the checked one-shot call;\nnaive = Python loop over each row's "
        "pages, one slice copy_ per page for K and for V",
    )
    table(
        "prefill gather: the same pages read back",
        ["B", "S", "K+V", "gather", "copy_", "naive", "copy/gather", "GB/s", "naive/gather"],
        grows,
    )


def bench_decode_write(clock, device, quick, results):
    batches = (1, 8, 32)
    gen = torch.Generator().manual_seed(2)
    rng = random.Random(2)
    max_len = 4096
    cols = pages_for(max_len, PS)
    cache = make_cache(max(batches) * cols + 64, device)
    rows = []
    for B in batches:
        tbl = scattered_table(cache, B, cols, gen)
        host = tbl.tolist()
        positions = [rng.randrange(max_len) for _ in range(B)]
        start = torch.tensor(positions, device=device)
        view = cache.bind(tbl, max_len)
        k, v = filled(B, 1, H, D, device=device), filled(B, 1, H, D, device=device)
        dst = [filled(B, 1, H, D, device=device) for _ in "kv"]
        slots = cache.slot_index(tbl, start, 1)
        view.write(0, start, k, v)  # the step's first write: checks, slot index

        def copy(k=k, v=v, dst=dst):
            dst[0].copy_(k)
            dst[1].copy_(v)

        t = clock.compare(
            {
                "view": lambda view=view, start=start, k=k, v=v: view.write(0, start, k, v),
                "kernel": lambda slots=slots, k=k, v=v: cache.kv.write(0, slots, k, v),
                "narrow": lambda slots=slots, k=k, v=v: cache.kv.write_slots(0, slots, k, v),
                "index": lambda tbl=tbl, start=start: cache.slot_index(tbl, start, 1),
                "write": lambda tbl=tbl, start=start, k=k, v=v: cache.write(0, tbl, start, k, v),
                "naive": lambda host=host, positions=positions, k=k, v=v: naive_decode_write(
                    cache, 0, host, positions, k, v
                ),
                "copy": copy,
            },
            budget_s=0.5 if quick else 1.5,
        )
        g = cache.gather(0, tbl, max_len)[0]
        assert all(torch.equal(g[b, p], k[b, 0]) for b, p in enumerate(positions))
        results["decode_write"].append((B, t))
        rows.append(
            [
                str(B),
                fmt_t(t["view"]),
                fmt_t(t["kernel"]),
                fmt_t(t["narrow"]),
                fmt_t(t["index"]),
                fmt_t(t["write"]),
                fmt_t(t["naive"]),
                fmt_t(t["copy"]),
                f"{t['view'] / t['kernel']:.2f}x",
                f"{t['naive'] / t['view']:.1f}x",
                fmt_t(t["index"] + 32 * t["view"]),
            ]
        )
    table(
        "decode write: one token per row, per-row positions, K and V [B, 1, 4, 128] fp32",
        [
            "B",
            "view.write/layer",
            "KVStore.write",
            "write_slots fp32",
            "slot_index/step",
            "cache.write",
            "naive",
            "copy_",
            "view/kernel",
            "naive/view",
            "step of 32 layers",
        ],
        rows,
        "KVStore.write = the store's own slot write of a precomputed index (the kernel: "
        "write_slots, in 16-byte\nelements from 16 KiB a tensor); write_slots fp32 = the same "
        "in float32 elements; view.write reuses the\nslot index computed once per step "
        "(slot_index, timed apart); cache.write recomputes it on every call",
    )


class DequeAllocator:
    """nano-vllm's free list: a deque of free page ids, popleft to take, append to give back,
    with PageAllocator's contract (a refcount per page, -1 when none is free, DoubleFree) and
    written as tightly. Hands pages out oldest-freed first, not lowest first."""

    def __init__(self, n_pages: int):
        self._free = deque(range(n_pages))
        self.refs = [0] * n_pages

    def alloc(self) -> int:
        free = self._free
        if not free:
            return -1
        idx = free.popleft()
        self.refs[idx] = 1
        return idx

    def free(self, idx: int) -> int:
        refs = self.refs
        left = refs[idx] - 1
        if left:
            if left < 0:
                raise DoubleFree(f"free({idx}): page {idx} holds no reference")
            refs[idx] = left
            return left
        refs[idx] = 0
        self._free.append(idx)
        return 0


def bench_alloc(clock, quick, results):
    sizes = (64, 4096, 65536)
    n_pairs = 2000  # per call: short calls, many interleaved samples
    rows = []
    for n in sizes:
        rng = random.Random(n)
        holes = rng.sample(range(n), n // 2)  # half full, random holes: the same in each
        cache = PagedCache(1, n, 1, 1, 1)
        allocator, free_list = PageAllocator(n), DequeAllocator(n)
        cache.alloc_n(n)
        for a in (allocator, free_list):
            for _ in range(n):
                a.alloc()
        for p in holes:
            cache.free(p)
            allocator.free(p)
            free_list.free(p)
        cache.check()

        def pairs(alloc, free):
            def run():
                for _ in range(n_pairs):
                    free(alloc())

            return run

        variants = {
            "allocator": pairs(allocator.alloc, allocator.free),
            "deque": pairs(free_list.alloc, free_list.free),
            "cache": pairs(cache.alloc, cache.free),
        }
        batches = [b for b in (16, 256) if b <= n // 2]
        for b in batches:

            def batch(b=b, alloc_n=cache.alloc_n, free=cache.free):
                for _ in range(max(1, n_pairs // b)):
                    for p in alloc_n(b):
                        free(p)

            variants[f"batch{b}"] = batch
        t = clock.compare(variants, budget_s=1.0 if quick else 3.0, min_reps=9, max_reps=101)
        cache.check()
        assert allocator.problems() == [], allocator.problems()
        rate = {k: n_pairs / t[k] for k in ("allocator", "deque", "cache")}
        results["alloc"].append((n, rate))
        row = [str(n)] + [f"{rate[k] / 1e6:.2f} M/s" for k in ("allocator", "deque", "cache")]
        row += [f"{rate[k] / rate['deque']:.2f}x" for k in ("allocator", "cache")]
        for b in (16, 256):
            key = f"batch{b}"
            if key in t:
                per_page = t[key] / (max(1, n_pairs // b) * b)
                row.append(f"{1 / per_page / 1e6:.2f} M pages/s")
            else:
                row.append("-")
        rows.append(row)
    table(
        "allocator: alloc+free pairs/s, pool half full with random holes (CPU, Python)",
        [
            "pages",
            "PageAllocator",
            "deque",
            "PagedCache",
            "alloc/deque",
            "cache/deque",
            "cache alloc_n(16)",
            "cache alloc_n(256)",
        ],
        rows,
        "PageAllocator: the free bitmask itself, lowest free first; deque: nano-vllm's free "
        "list, same contract;\nPagedCache.alloc+free adds page-id checks, the prefix index and "
        "the observer; alloc_n(b) + b frees, per page",
    )


# ---- targets -----------------------------------------------------------------------------------


def report_targets(results) -> bool:
    """Each target is a ratio of two things timed side by side, interleaved, in this run."""
    checks, info = [], []
    dg = results["decode_gather"]
    for B, L, _payload, t in dg:
        if B == 32 and L == 4096:
            r = min(t["copy"] / t["gather"], t["copy"] / t["view"])
            checks.append((f"decode gather B=32 len=4096 >= 0.8x copy_ (got {r:.2f}x)", r >= 0.8))
    big = [
        (B, L, min(t["copy"] / t["gather"], t["copy"] / t["view"])) for B, L, p, t in dg if p >= MiB
    ]
    if big:
        worst = min(big, key=lambda x: x[2])
        info.append(f"decode gather vs copy_ for payloads >= 1 MiB: worst {worst[2]:.2f}x at "
                    f"B={worst[0]} len={worst[1]}")
    for B, t in results["decode_write"]:
        r = t["view"] / t["kernel"]
        checks.append((f"decode write B={B}: view.write per layer <= 1.25x its slot-write kernel "
                       f"(got {r:.2f}x: {fmt_t(t['view'])} vs {fmt_t(t['kernel'])})", r <= 1.25))
    for B, S, payload, t in results["prefill_write"]:
        r = t["naive"] / t["view"]
        checks.append((f"prefill write B={B} S={S}: >= 1.0x the naive page loop (got {r:.2f}x)",
                       r >= 1.0))
        if payload >= 4 * MiB:
            r = t["copy"] / t["view"]
            checks.append((f"prefill write B={B} S={S} ({fmt_b(payload)}): >= 0.5x copy_ "
                           f"(got {r:.2f}x)", r >= 0.5))
        info.append(f"prefill B={B} S={S}: bind + first write (the step's once-only work) "
                    f"{t['naive'] / t['step']:.2f}x the naive loop; cache.write "
                    f"{t['naive'] / t['write']:.2f}x")
    for n, rate in results["alloc"]:
        r = rate["allocator"] / rate["deque"]
        if n in (4096, 65536):
            checks.append((f"PageAllocator alloc+free at {n} pages >= 0.5x a deque free list "
                           f"(got {r:.2f}x: {rate['allocator'] / 1e6:.2f} vs "
                           f"{rate['deque'] / 1e6:.2f} M pairs/s)", r >= 0.5))
        info.append(f"PagedCache.alloc+free at {n} pages: {rate['cache'] / 1e6:.2f} M pairs/s, "
                    f"{rate['cache'] / rate['deque']:.2f}x the deque")
    return report(checks, info)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    ap.add_argument("--device", default="cpu", help="device for the gather/write parts")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    ap.add_argument(
        "--steady-malloc",
        action="store_true",
        help="keep freed memory for reuse, so the naive loops' fresh outputs stop page-faulting\n"
        "(their best case; by default they run as such code runs, with glibc's defaults)",
    )
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device available", file=sys.stderr)
        return 2
    steady = args.steady_malloc and steady_malloc()
    clock = Clock(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"PagedCache benchmark: torch {torch.__version__}, device {device} ({name}), "
        f"threads {torch.get_num_threads()}, {'quick' if args.quick else 'full'} run"
    )
    print(f"geometry: n_kv_heads={H}, head_dim={D}, page_size={PS}, {DTYPE}; medians, interleaved")
    print(
        "malloc: "
        + (
            "freed memory kept for reuse (mallopt), so naive loops pay no repeated page faults"
            if steady
            else "glibc defaults: naive loops page-fault their fresh outputs, as such code does"
        )
    )
    results = {
        k: [] for k in ("decode_gather", "prefill_write", "prefill_gather", "decode_write", "alloc")
    }
    t0 = time.perf_counter()
    bench_decode_gather(clock, device, args.quick, results)
    gc.collect()
    bench_prefill(clock, device, args.quick, results)
    gc.collect()
    bench_decode_write(clock, device, args.quick, results)
    gc.collect()
    bench_alloc(Clock(torch.device("cpu")), args.quick, results)
    ok = report_targets(results)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
