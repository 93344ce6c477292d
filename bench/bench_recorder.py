"""Recorder memory: a trace of N small requests, peak resident memory and time.

    python bench/bench_recorder.py [N]      (default 3000)

Each request has an 8-token prompt and 4 new tokens; four arrive per step, into a pool of 32
pages of 8 slots, so requests keep coming and going and the status of every request ever
submitted is part of each event's state.
"""

from __future__ import annotations

import resource
import sys
import time

from astrai.trace import record
from astrai.workload import parse_workload


def workload(n: int) -> dict:
    return {
        "name": f"many{n}",
        "cache": {"n_pages": 32, "page_size": 8},
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "head_dim": 8,
                  "d_ff": 16},
        "scheduler": {"max_batch": 8},
        "request": [{"name": f"r{i}", "prompt_len": 8, "max_new_tokens": 4, "arrival": i // 4}
                    for i in range(n)],
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    wl = parse_workload(workload(n))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    trace = record(wl)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{n} requests: {len(trace.events)} events, {seconds:.1f} s, "
          f"peak RSS {peak / 1024:.0f} MiB ({(peak - base) / 1024:.0f} MiB over the start)")


if __name__ == "__main__":
    main()
