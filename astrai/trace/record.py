"""Run a workload with a Recorder attached and return its Trace."""

from __future__ import annotations

import contextlib

from astrai.trace.format import VERSION, Trace
from astrai.trace.recorder import LineTracer, Recorder, source_digests
from astrai.workload import Workload, build, load_workload, run_workload


def record(workload: Workload | str, device: str | None = None, lines: bool = True) -> Trace:
    """Build the workload's cache, model and scheduler, run it to the end, and record it."""
    wl = load_workload(workload) if isinstance(workload, str) else workload
    tracer = LineTracer() if lines else None
    with tracer or contextlib.nullcontext():
        cache, model, scheduler = build(wl, device)  # traced too: the init event shows it
        with Recorder(cache, scheduler, lines=lines, tracer=tracer) as rec:
            rec.on_phase(0, "init")
            outputs = run_workload(wl, scheduler)
    geometry = {
        "n_layers": cache.n_layers,
        "n_pages": cache.n_pages,
        "page_size": cache.page_size,
        "n_kv_heads": cache.n_kv_heads,
        "head_dim": cache.head_dim,
        "device": str(cache.device),
        "dtype": str(cache.dtype).removeprefix("torch."),
        "k_cache_bytes": cache.k_cache.numel() * cache.k_cache.element_size(),
    }
    return Trace(VERSION, wl.to_json(), geometry, rec.events, outputs, source_digests())
