"""Which trace a scene replays: a shipped workload, a workload .toml, or a saved trace .json."""

from __future__ import annotations

import os

from astrai.errors import TraceFormatError
from astrai.trace import Trace, load_trace, record
from astrai.trace.recorder import source_digests


def load(spec: str | None = None) -> Trace:
    """The trace to replay: `spec`, else $ASTRAI_WORKLOAD, else 'seed'.

    A name or .toml path is recorded now; a .json is loaded and refused if the engine source
    changed since it was recorded (its code lines would no longer match)."""
    spec = spec or os.environ.get("ASTRAI_WORKLOAD", "").strip() or "seed"
    if spec.endswith(".json"):
        trace = load_trace(spec)
        stale = sorted(f for f, digest in trace.source.items()
                       if source_digests().get(f) != digest)
        if stale:
            # Code panels show today's source at the trace's line numbers: refuse, don't lie.
            raise TraceFormatError(
                f"{spec} was recorded from another version of {', '.join(stale)}; "
                f"record it again (python -m astrai.trace WORKLOAD -o {spec})"
            )
        return trace
    return record(spec)
