"""Engine refactors do not change what a scene shows.

tests/data/scenes.json.gz holds, for every storyboard scene and cut, what the scene showed when
built without video (snapshots after each event or beat, code panels by function name and
marked line, spoken cues with their times), written by tests/scene_fingerprint.py (with
NARRATION=off, as tests run) before the engine was split, and again where REBASELINED says.
Each is built again here and compared, first difference named.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

pytest.importorskip("manim")

from scene_fingerprint import CUTS, RUNS, fingerprint, run_outputs  # noqa: E402

from scenes.storyboard import STORYBOARD  # noqa: E402

REFERENCE = Path(__file__).parent / "data" / "scenes.json.gz"

# Engine lines rewritten on purpose since the reference was taken, each for a reason, as
# (function, marked line then) -> (function, marked line now). A panel may differ from the
# reference only by one of these; every state, caption and cue must be equal.
REWRITTEN = {
    # pages go to an owner passed to the cache, not to a list handed in for a listener to see
    ("_grow", "got = self.cache.alloc_n(1, out=task.page_table)"):
        ("_grow", "got = self.cache.alloc_n(1, owner=task)"),
    ("_fork", "self.cache.inc_ref(page)"): ("_fork", "self.cache.inc_ref(page, owner=sample)"),
    ("_copy_on_write", "cache.free(src)"): ("_copy_on_write", "cache.free(src, owner=task)"),
    # the cache composes an allocator (free bits) and a prefix index (LRU of cached pages)
    ("free", "self._set_free(idx)"):
        ("free", "self.allocator.release(idx)  # its bit is set: free again"),
    ("free", "self._lru[idx] = None  # most recently used end"):
        ("free", "cached = self.prefix.park(idx)  # recorded: kept, most recently used"),
    ("inc_ref", "del self._lru[idx]"): ("inc_ref", "self.prefix.revive(idx)"),
    ("_evict_lru", "idx, _ = self._lru.popitem(last=False)"):
        ("evict_lru", "idx, _ = self._lru.popitem(last=False)"),
}


# Re-baselined on purpose, each difference listed with why (the reference was written again by
# `NARRATION=off python tests/scene_fingerprint.py | gzip -n`; every value not listed is equal).
# The last re-baseline: the storyboard's six workloads switched from the seeded tiny model to
# SmolLM2-135M-Instruct on real chat requests, with other pools and pages (seed 12 x 16, prefix
# 12 x 16, sampling 10 x 16, traffic 24 x 16, preemption 10 x 16, write_gather 4 x 4), so every
# run, and with it every snapshot, panel and cue, is another run's; and the words came on
# screen (snapshots of page scenes gain "frame_lines", each frame's text strip, and "answer",
# each table's answer line; "said" quotes the chat message). Counts now: paged_cache 190+190
# snapshots, prefix 298+298, parallel_sampling 105+105, preemption 173+173, batching 32+15,
# memory 28+1, write_gather 6. Earlier re-baselines (one snapshot schema with "beat" and "at";
# the REWRITTEN panels) hold in this reference too.
REBASELINED = {
    "runs": "storyboard on SmolLM2-135M-Instruct",
    "snapshot keys": ("beat", "at", "frame_lines", "answer"),
    "panels": "REWRITTEN applied",
}


def _rewritten(reference: dict) -> dict:
    for panel in reference["panels"]:
        fn, marked = REWRITTEN.get((panel["fn"], panel["marked"]), (panel["fn"], panel["marked"]))
        panel["fn"], panel["marked"] = fn, marked
    return reference


def _first_difference(a, b, path="") -> str | None:
    if type(a) is not type(b):
        return f"{path}: {a!r:.120} != {b!r:.120}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: only in {'now' if k in a else 'reference'}"
            d = _first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None if len(a) == len(b) else f"{path}: {len(a)} items != {len(b)}"
    return None if a == b else f"{path}: {a!r:.120} != {b!r:.120}"


@pytest.fixture(scope="module")
def reference():
    ref = json.loads(gzip.decompress(REFERENCE.read_bytes()))
    now = json.loads(json.dumps(run_outputs()))
    differs = _first_difference(now, ref[RUNS], RUNS)
    if differs:  # floats of one model differ between CPUs: not a change of what scenes show
        pytest.skip(f"this machine's runs made other tokens than the reference's ({differs}): "
                    f"the fingerprints are comparable only where the runs agree")
    return ref


CASES = [(m, n, c) for m, n in STORYBOARD for c in CUTS]


@pytest.mark.parametrize("module,name,cut", CASES, ids=[f"{n}-{c}" for _, n, c in CASES])
def test_scene_shows_what_it_showed_before(reference, module, name, cut, tmp_path):
    key = f"{name}/{cut}"
    if key not in reference:
        pytest.skip(f"{name} has no {cut} cut")
    now = json.loads(json.dumps(fingerprint(module, name, cut, str(tmp_path))))
    then = _rewritten(reference[key])
    assert _first_difference(now, then) is None, _first_difference(now, then)
    # one schema: every snapshot says in which beat and when it was taken, in order
    times = [snap["at"] for snap in now["snapshots"]]
    assert all(isinstance(snap["beat"], str) and snap["beat"] for snap in now["snapshots"])
    assert times == sorted(times)
