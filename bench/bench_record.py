"""Recording the storyboard from an empty trace store: what a cold build pays before it draws.

    python bench/bench_record.py [--texts]

Records, into a fresh temporary store, every run the storyboard's scenes and comparisons record
(each scene's traced run, write_gather's with captures, and the comparisons' second runs), the
way a build does, and prints each one's wall and CPU seconds, the totals and the peak resident
memory. The real model is loaded once for all of them. --texts also prints every request's
prompt and answer as text, and each story's key numbers.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time


def _timed(label: str, fn, rows: list):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    rows.append((label, time.perf_counter() - wall, time.process_time() - cpu))
    print(f"{label:34s} {rows[-1][1]:7.1f} s wall {rows[-1][2]:7.1f} s CPU", flush=True)
    return out


def _story(name: str, trace) -> str:
    """The numbers the story turns on, counted from the trace's events."""
    kinds: dict[str, int] = {}
    for ev in trace.events:
        kinds[ev.kind] = kinds.get(ev.kind, 0) + 1
    peak = max(sum(1 for r in ev.state["refs"] if r) for ev in trace.events)
    shared = sum(len(ev.hits) for ev in trace.events if ev.kind == "admit")
    return (f"{name}: {trace.geometry['n_pages']} pages of {trace.geometry['page_size']}, "
            f"peak {peak} in use, {1 + trace.events[-1].step} steps, "
            f"{kinds.get('preempt', 0)} preemptions, {shared} prefix hits, "
            f"{kinds.get('evict', 0)} evictions, {kinds.get('copy', 0)} copies")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="traces-") as folder:
        os.environ["ASTRAI_TRACE_CACHE"] = folder  # an empty store: everything is recorded
        run("--texts" in sys.argv[1:])


def run(texts: bool) -> None:
    from astrai.compare import batching, memory, preemption, prefix, sampling
    from astrai.text import load_tokenizer
    from astrai.trace import recorded

    rows: list = []
    traces = {}
    for name in ("seed", "prefix", "sampling", "traffic", "preemption", "write_gather"):
        capture = name == "write_gather"
        traces[name] = _timed(f"{name} (scene)", lambda n=name, c=capture: recorded(n, capture=c),
                              rows)
    _timed("prefix cache off", lambda: prefix.compare(trace=traces["prefix"]), rows)
    _timed("preemption, pool never dry", lambda: preemption.compare(trace=traces["preemption"]),
           rows)
    _timed("sampling, independent requests", lambda: sampling.compare(trace=traces["sampling"]),
           rows)
    _timed("traffic, static batching (1 run)", lambda: batching.compare("traffic", repeats=1),
           rows)
    _timed("traffic, memory (paged + dense)", lambda: memory.compare("traffic"), rows)
    wall, cpu = sum(r[1] for r in rows), sum(r[2] for r in rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'total':34s} {wall:7.1f} s wall {cpu:7.1f} s CPU; peak RSS {peak:.0f} MiB")
    if texts:
        for name, trace in traces.items():
            print("\n" + _story(name, trace))
            wl = trace.workload
            tok = load_tokenizer(wl["model"].get("checkpoint"))
            for r in wl["request"]:
                asked = r.get("chat") or r.get("prompt_text")
                print(f"  {r['name']} ({len(r['prompt'])} tokens) asks: {asked!r}")
            for task, out in trace.outputs.items():
                print(f"  {task} answers: {tok.decode(out)!r}")


if __name__ == "__main__":
    main()
