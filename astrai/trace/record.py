"""Run a workload with a Recorder attached and return its Trace."""

from __future__ import annotations

import contextlib

from astrai.errors import AstraiError, TraceFormatError, WorkloadError
from astrai.models import is_name
from astrai.trace.capture import Capture
from astrai.trace.format import VERSION, Trace
from astrai.trace.recorder import LineTracer, Recorder, source_digests
from astrai.workload import (
    MAX_STEPS,
    Workload,
    build,
    load_workload,
    parse_workload,
    run_workload,
    text_log,
)


def record(workload: Workload | str, device: str | None = None, lines: bool = True,
           capture: bool = False, max_steps: int = MAX_STEPS, progress=None) -> Trace:
    """Build the workload's cache, model and scheduler, run it to the end, and record it.

    capture=True also keeps the tensors a slot-level scene shows (slot indices, gather
    indices, layer 0's attention on decode steps: see astrai.trace.capture) in `captures`.
    A run needing more than max_steps steps is stopped with a WorkloadError; progress, if
    given, is called with the scheduler after every step.
    """
    wl = load_workload(workload) if isinstance(workload, str) else workload
    tracer = LineTracer() if lines else None
    with tracer or contextlib.nullcontext():
        cache, model, scheduler = build(wl, device)  # traced too: the init event shows it
        with Recorder(cache, scheduler, lines=lines, tracer=tracer, text=text_log(wl)) as rec:
            with Capture(cache, model, rec) if capture else contextlib.nullcontext() as cap:
                outputs = run_workload(wl, scheduler, max_steps, progress)
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
    return Trace(VERSION, wl.to_json(), geometry, rec.events, outputs, source_digests(),
                 cap.records if capture else [])


def steps_of(trace: Trace) -> int:
    """How many scheduler steps the trace holds (its last event's step + 1)."""
    return trace.events[-1].step + 1 if trace.events else 0


def run_limit(trace: Trace) -> int:
    """The most steps a run derived from a trace may take: one per four events it holds (every
    step records at least its four phases), and never fewer than its own steps. A second run
    may need more steps than the first (prefix caching off waits for pages more), but never
    more work than the file's own size pays for."""
    return max(steps_of(trace), len(trace.events) // 4)


def rerun(workload: Workload, limit: int) -> Trace:
    """A comparison run of `workload` (no line tracing), refused by name if it needs more than
    `limit` steps (see `run_limit`); recorded once and shared (astrai.trace.store)."""
    from astrai.trace.store import recorded  # the store records through this module

    try:
        return recorded(workload, lines=False, max_steps=limit)
    except WorkloadError as e:
        if "not done after" not in str(e):
            raise
        raise TraceFormatError(f"{workload.name}: the comparison run needs more than {limit} "
                               "steps, the most this trace's events allow") from None


def workload_of(trace: Trace, purpose: str) -> Workload:
    """The workload a trace carries, to run again for `purpose`: a trace is data, so one that
    names a checkpoint folder is refused (re-running it would read a path the file chose); a
    named model (astrai.models) is loaded from the model cache, as its workload file would."""
    name = trace.workload.get("name", "?")
    model = trace.workload.get("model")
    if isinstance(model, dict) and "checkpoint" in model and not is_name(model["checkpoint"]):
        raise TraceFormatError(
            f"trace of {name!r} names a checkpoint folder; {purpose} never reads a path a "
            "trace names: run its workload .toml instead")
    try:
        return parse_workload(trace.workload, f"trace of {name!r}")
    except AstraiError as e:
        raise TraceFormatError(f"trace's workload cannot be run again for {purpose}: {e}") \
            from None
