"""The real model (SmolLM2-135M-Instruct) decoding through the paged cache beside the dense one.

    python bench/bench_model.py [--quick] [--device cuda] [--strict]

At batch 1 and 8, the same real prompts are prefilled into a PagedCache + Scheduler and into a
DenseBatcher (contiguous rows); then their decode steps run side by side, one paged step and
one dense step in turn (the order alternating), so machine noise hits both alike. tok/s is the
batch over the median step time; the target (a PASS/FAIL line, --strict exits 1 on a FAIL):
paged decode makes >= 0.95x the dense tok/s at each batch. One thread. Skipped, saying why,
where the model is not installed (`make setup` installs it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's astrai

from astrai.chat import chat_prompt  # noqa: E402
from astrai.checkpoint import load_checkpoint  # noqa: E402
from astrai.compare.static import DenseBatcher  # noqa: E402
from astrai.inference.cache import PagedCache, pages_for  # noqa: E402
from astrai.inference.scheduler import Scheduler, Task  # noqa: E402
from astrai.models.store import check  # noqa: E402
from astrai.text import load_tokenizer  # noqa: E402
from bench.targets import report  # noqa: E402

NAME = "smollm2-135m-instruct"
TARGET = 0.95  # paged decode tok/s over dense decode tok/s
PAGE_SIZE = 16
QUESTIONS = ["What is the capital of France?", "Why is the sky blue?",
             "Write a haiku about autumn.", "How do plants make food?",
             "What is a prime number?", "Name three colours of the rainbow.",
             "How far away is the Moon?", "What does a cache do in a computer?"]


def prompts(batch: int) -> list[list[int]]:
    tok = load_tokenizer(NAME)
    return [tok.encode(chat_prompt(NAME, [{"role": "user", "content": q}]))
            for q in QUESTIONS[:batch]]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def engines(model, batch: int, steps: int, device: str):
    """A paged scheduler and a dense batcher, each holding the batch's prompts prefilled."""
    c = model.config
    ps = prompts(batch)
    longest = max(map(len, ps)) + steps + 2
    cache = PagedCache(c.n_layers, batch * pages_for(longest, PAGE_SIZE), PAGE_SIZE,
                       c.n_kv_heads, c.head_dim, device=device, dtype=model.dtype)
    paged = Scheduler(cache, model, max_batch=batch, prefix_caching=False)
    dense = DenseBatcher(model, rows=batch, max_len=longest)
    for engine in (paged, dense):
        for i, p in enumerate(ps):
            engine.submit(Task(f"r{i}", p, steps + 2))
        engine.step()  # the prefill, not timed
    return paged, dense


def timed_step(engine, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    engine.step()
    sync(device)
    return time.perf_counter() - t0


def decode(model, batch: int, steps: int, device: str) -> dict:
    paged, dense = engines(model, batch, steps, device)
    times = {"paged": [], "dense": []}
    ratios = []
    for i in range(steps):
        pair = [("paged", paged), ("dense", dense)]
        if i % 2:
            pair.reverse()
        step = {name: timed_step(engine, device) for name, engine in pair}
        for name, s in step.items():
            times[name].append(s)
        ratios.append(step["dense"] / step["paged"])  # paged tok/s over dense tok/s
    same = all(paged.tasks[n].output == dense.tasks[n].output for n in paged.tasks)
    return {"paged": statistics.median(times["paged"]),
            "dense": statistics.median(times["dense"]),
            "ratio": statistics.median(ratios), "same": same}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer decode steps")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = ap.parse_args(argv)
    problem = check(NAME)
    if problem is not None:
        print(f"real model: skipped, {NAME} is not installed ({problem}); make setup")
        return 0
    torch.set_num_threads(1)
    model = load_checkpoint(NAME, args.device)
    steps = 8 if args.quick else 24
    print(f"{NAME} in {str(model.dtype)[6:]} on {args.device}, 1 thread: decode steps timed "
          f"side by side, paged (page_size {PAGE_SIZE}) vs dense rows, median of {steps}")
    print(f"{'batch':>5s} {'paged tok/s':>12s} {'dense tok/s':>12s} {'paged/dense':>12s} "
          f"{'same tokens':>12s}")
    results = {}
    for batch in (1, 8):
        r = decode(model, batch, steps, args.device)
        results[batch] = r
        print(f"{batch:5d} {batch / r['paged']:12.1f} {batch / r['dense']:12.1f} "
              f"{r['ratio']:11.2f}x {str(r['same']):>12s}")
    ok = report([(f"real model decode, batch {batch}: paged tok/s >= {TARGET}x dense "
                  f"(got {r['ratio']:.2f}x)", r["ratio"] >= TARGET)
                 for batch, r in results.items()])
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
