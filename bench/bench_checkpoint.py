"""A real-size Llama layer through the loader and the scheduler, on this machine.

    python bench/bench_checkpoint.py [--layers 2] [--quick] [--device cuda]

Builds a random model with TinyLlama-1.1B's width (d_model 2048, 32 heads, 4 KV heads, d_ff 5632,
vocab 32000) but only a few layers, saves it as a checkpoint (safetensors), then times: loading
it, and greedy decoding through PagedCache + Scheduler at batch 1 and 4. The per-layer decode
cost and the head's cost are measured separately (runs with 1 and with `--layers` layers), so a
full-depth model's step time can be estimated as head + n_layers x layer: the figure the README
quotes for what runs on a CPU. One thread, medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from astrai.checkpoint import load_checkpoint, model_bytes, save_checkpoint
from astrai.inference.cache import PagedCache
from astrai.inference.scheduler import Scheduler, Task
from astrai.model import ModelConfig, TinyModel

WIDTH = dict(vocab_size=32000, d_model=2048, n_heads=32, n_kv_heads=4, head_dim=64, d_ff=5632)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def decode_step_seconds(model, batch: int, device: str, steps: int) -> float:
    """Median seconds of one decode step (batch requests, 64-token prompts, 128-slot pages)."""
    c = model.config
    cache = PagedCache(c.n_layers, 8 * batch, 128, c.n_kv_heads, c.head_dim,
                       device=device, dtype=model.dtype)
    sched = Scheduler(cache, model, max_batch=batch, prefix_caching=False)
    for i in range(batch):
        sched.submit(Task(f"r{i}", [(7 * i + j) % c.vocab_size for j in range(64)], steps + 2))
    sched.step()  # prefill
    times = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        sched.step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps = 3 if args.quick else 8
    per = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n_layers in sorted({1, args.layers}):
            cfg = ModelConfig(n_layers=n_layers, **WIDTH)
            path = Path(tmp) / f"l{n_layers}"
            save_checkpoint(TinyModel(cfg), path, dtype=torch.bfloat16)
            dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
            t0 = time.perf_counter()
            model = load_checkpoint(path, args.device, dtype)
            sync(args.device)
            load_s = time.perf_counter() - t0
            gib = model_bytes(cfg, dtype) / 2**30
            row = {b: decode_step_seconds(model, b, args.device, steps) for b in (1, 4)}
            per[n_layers] = row
            print(f"{n_layers} layer(s): {gib:.2f} GiB in {str(dtype)[6:]}, loaded in "
                  f"{load_s:.2f} s ({gib / load_s:.2f} GiB/s); decode step "
                  + ", ".join(f"batch {b}: {s * 1e3:.0f} ms" for b, s in row.items()))
            del model
    if args.layers > 1:
        lo, hi = per[1], per[args.layers]
        for b in (1, 4):
            layer = (hi[b] - lo[b]) / (args.layers - 1)
            head = lo[b] - layer
            full = head + 22 * layer
            print(f"batch {b}: {layer * 1e3:.0f} ms a layer, {head * 1e3:.0f} ms embed+head+"
                  f"scheduler; estimated 22-layer step {full * 1e3:.0f} ms = "
                  f"{b / full:.1f} tokens/s")


if __name__ == "__main__":
    main()
