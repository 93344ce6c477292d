"""The tiny model under the scheduler: tokens per second, prefix caching on and off, and the share
of step time spent outside the model, beside the same model on a dense preallocated KV cache.

    python bench/bench_scheduler.py [--quick] [--device cuda] [--strict]

The dense baseline runs the same requests in static batches of max_batch: one padded prefill,
then decode until the batch's longest request is done. Everything runs in one process, one
thread, the variants interleaved, so the ratios are comparable even on a noisy machine: each
"vs dense" is the median over repeats of that repeat's ratio. The target (a PASS/FAIL line,
--strict exits 1 on a FAIL): each paged run makes >= 0.9x the dense baseline's tokens per second.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's astrai

from astrai.compare.dense import DenseKVCache  # noqa: E402
from astrai.inference.cache import PagedCache  # noqa: E402
from astrai.inference.scheduler import Scheduler, Task  # noqa: E402
from astrai.model import ModelConfig, TinyModel, next_tokens  # noqa: E402
from bench.targets import report  # noqa: E402


class Timed:
    """The model, with the time spent inside its forward added up."""

    def __init__(self, model: TinyModel):
        self.model, self.config, self.seconds = model, model.config, 0.0

    def __call__(self, *args):
        t0 = time.perf_counter()
        out = self.model(*args)
        if out.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        return out


def requests(n: int, vocab: int, seed: int = 0) -> list[tuple[str, list[int], int]]:
    rng = random.Random(seed)
    system = [rng.randrange(vocab) for _ in range(96)]  # shared by half the requests
    out = []
    for i in range(n):
        own = [rng.randrange(vocab) for _ in range(rng.randint(16, 160))]
        prompt = system + own if i % 2 else own
        out.append((f"r{i}", prompt, rng.randint(16, 48)))
    return out


def run_paged(model, reqs, prefix_caching, page_size, device, max_batch):
    cfg = model.config
    total = sum(len(p) + n for _, p, n in reqs)
    cache = PagedCache(cfg.n_layers, total // page_size + 64, page_size, cfg.n_kv_heads,
                       cfg.head_dim, device=device)
    timed = Timed(model)
    sched = Scheduler(cache, timed, max_batch=max_batch, prefix_caching=prefix_caching)
    for name, prompt, n in reqs:
        sched.submit(Task(name, prompt, n))
    t0 = time.perf_counter()
    sched.run()
    wall = time.perf_counter() - t0
    tokens = sum(len(t.output) for t in sched.tasks.values())
    return tokens, wall, timed.seconds, {n: t.output for n, t in sched.tasks.items()}


def run_dense(model, reqs, device, max_batch):
    cfg = model.config
    timed = Timed(model)
    outputs, tokens = {}, 0
    t0 = time.perf_counter()
    for i in range(0, len(reqs), max_batch):
        batch = reqs[i : i + max_batch]
        b = len(batch)
        lens = [len(p) for _, p, _ in batch]
        max_len = max(lens) + max(n for _, _, n in batch)  # rows decode in lockstep
        cache = DenseKVCache(cfg.n_layers, b, max_len, cfg.n_kv_heads, cfg.head_dim,
                             device=device)
        toks = torch.zeros(b, max(lens), dtype=torch.int64)
        for r, (_, p, _) in enumerate(batch):
            toks[r, : len(p)] = torch.tensor(p)
        n_tok = torch.tensor(lens, device=device)
        logits = timed(toks.to(device), 0, cache.bind(max(lens), n_tok), n_tok)
        nxt = next_tokens(logits[torch.arange(b, device=device), n_tok - 1])
        outs = [[] for _ in range(b)]
        pos = n_tok.clone()
        for step in range(max(n for _, _, n in batch)):
            for r in range(b):
                if step < batch[r][2]:
                    outs[r].append(int(nxt[r]))
            if step + 1 == max(n for _, _, n in batch):
                break
            view = cache.bind(int(pos.max()) + 1, pos + 1)
            logits = timed(nxt.view(b, 1), pos, view, torch.ones(b, dtype=torch.int64,
                                                                  device=device))
            nxt = next_tokens(logits[:, 0])
            pos += 1
        for r, (name, _, n) in enumerate(batch):
            outputs[name] = outs[r]
            tokens += n
    wall = time.perf_counter() - t0
    return tokens, wall, timed.seconds, outputs


TARGET = 0.9  # paged tok/s over dense tok/s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests and repeats")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the target fails")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = TinyModel(ModelConfig(), device=args.device)
    n_req, repeats = (16, 3) if args.quick else (48, 9)
    reqs = requests(n_req, model.config.vocab_size)
    max_batch, page_size = 16, 16
    runs = {
        "paged, prefix cache on": lambda: run_paged(model, reqs, True, page_size, args.device,
                                                    max_batch),
        "paged, prefix cache off": lambda: run_paged(model, reqs, False, page_size,
                                                     args.device, max_batch),
        "dense static batches": lambda: run_dense(model, reqs, args.device, max_batch),
    }
    dense = "dense static batches"
    results = {name: [] for name in runs}
    outputs = {}
    for fn in runs.values():  # warm-up
        fn()
    items = list(runs.items())
    for r in range(repeats):  # interleaved, order rotating, so noise hits every variant alike
        for name, fn in items[r % len(items):] + items[: r % len(items)]:
            tokens, wall, inside, out = fn()
            results[name].append((tokens, wall, inside))
            outputs[name] = out
    print(f"tiny model {model.config}, {n_req} requests (half share a 96-token prefix), "
          f"max_batch {max_batch}, page_size {page_size}, {args.device}, 1 thread, "
          f"median of {repeats}")
    print(f"{'run':26s} {'tokens':>7s} {'wall s':>8s} {'tok/s':>8s} {'in model':>9s} "
          f"{'outside':>8s} {'vs dense':>9s}")
    ratios = {}
    for name, res in results.items():
        tokens = res[0][0]
        wall = statistics.median(r[1] for r in res)
        inside = statistics.median(r[2] / r[1] for r in res)
        # tok/s over dense's in the same repeat (tokens are equal: wall times compare)
        ratios[name] = statistics.median(d[1] / r[1] for r, d in zip(res, results[dense]))
        print(f"{name:26s} {tokens:7d} {wall:8.3f} {tokens / wall:8.0f} {inside:8.0%} "
              f"{1 - inside:8.0%} {ratios[name]:8.2f}x")
    on, off, dense_out = (outputs[name] for name in runs)
    print(f"outputs identical: prefix cache on vs off {on == off}, paged vs dense "
          f"{on == dense_out}")
    ok = report([(f"{name}: tok/s >= {TARGET}x dense (got {ratio:.2f}x)", ratio >= TARGET)
                 for name, ratio in ratios.items() if name != dense])
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
