"""Which trace a scene replays: a shipped workload, a workload .toml, or a saved trace .json."""

from __future__ import annotations

import os

from astrai.trace import Trace, load_trace, recorded


def load(spec: str | None = None) -> Trace:
    """The trace to replay: `spec`, else $ASTRAI_WORKLOAD, else 'seed'.

    A name or .toml path is recorded (once: astrai.trace.store keeps the run for every scene,
    cut and process that shows it); a .json is loaded (load_trace refuses it if the engine
    source changed since it was recorded: its code lines would no longer match)."""
    spec = spec or os.environ.get("ASTRAI_WORKLOAD", "").strip() or "seed"
    if spec.endswith(".json"):
        return load_trace(spec)  # refuses a stale trace: its code lines would not match
    return recorded(spec)
