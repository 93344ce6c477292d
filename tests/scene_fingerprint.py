"""What every storyboard scene shows, built without video, as plain JSON: the state-only
snapshots after each event or beat, the code panels (the function's name and the text of the
line it marks), and the spoken cues with their times.

`NARRATION=off python tests/scene_fingerprint.py | gzip -n > tests/data/scenes.json.gz` writes
the reference that tests/test_scenes_unchanged.py compares against (NARRATION=off: paced by the
narrator's estimate, as tests are): engine refactors must not change what a scene
shows. Panels are compared by function name and marked line text, not by file and line number,
so moving a function to another engine file keeps the fingerprint as long as the line the panel
marks still reads the same.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from scene_checks import state_only  # noqa: E402

CUTS = ("full", "teaser")


def _plain(x, depth: int = 0):
    """JSON-able copy: numbers rounded (layout floats), mobjects and callables dropped."""
    if depth > 12:
        return None
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return round(x, 3)
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            v = _plain(v, depth + 1)
            if v is not _DROP:
                out[str(k)] = v
        return out
    if isinstance(x, (list, tuple)):
        return [v for v in (_plain(v, depth + 1) for v in x) if v is not _DROP]
    if isinstance(x, (set, frozenset)):
        return sorted((_plain(v, depth + 1) for v in x), key=repr)
    if hasattr(x, "items") and hasattr(x, "__getitem__"):  # read-only mappings (PerTask)
        return _plain(dict(x.items()), depth)
    return _DROP


_DROP = object()


@functools.cache
def _source_lines() -> frozenset[str]:
    """Every stripped line of the files a code panel may show."""
    from astrai.trace.source import PANEL_FILES

    return frozenset(line.strip() for path in PANEL_FILES.values()
                     for line in path.read_text(encoding="utf-8").splitlines())


_TITLE = re.compile(r"^\S+  astrai/\S+\.py:\d+-\d+")


def _not_code(item) -> bool:
    """False for a drawn text that is engine source or a code panel's title (file:lines): the
    panels are compared by function and marked line, so moving code does not count as a change
    of what the scene says."""
    if not (isinstance(item, list) and len(item) == 3 and isinstance(item[1], str)):
        return True
    text = item[1].strip()
    return not (text in _source_lines() or text == "▶" or _TITLE.match(text))


def _snapshot(snap):
    if isinstance(snap, dict) and isinstance(snap.get("texts"), list):
        snap = {**snap, "texts": [t for t in snap["texts"] if _not_code(t)]}
    return snap


def _panel(p: dict) -> dict:
    current, rows, text = p.get("current"), p.get("rows", []), p.get("text", [])
    marked = text[rows.index(current)].strip() if current in rows else None
    keep = {k: p[k] for k in ("kind", "event", "beat", "shapes") if k in p}
    return {"fn": p["fn"].rsplit(".", 1)[-1], "marked": marked, **_plain(keep)}


def fingerprint(module: str, name: str, cut: str, media_dir: str) -> dict:
    from manim import tempconfig

    cls = getattr(importlib.import_module(module), name)
    with tempconfig(state_only(media_dir)):
        scene = cls(cut=cut, skip_animations=True)
        scene.render()
    panels = scene.replay.panels if scene.replay is not None else scene._panels
    panels = getattr(scene, "panels", panels)
    return {
        "snapshots": [_snapshot(s) for s in _plain(scene.snapshots)],
        "panels": [_panel(p) for p in panels],
        "cues": [[round(s, 3), round(d, 3), t] for s, d, t in scene.cues],
    }


RUNS = "runs"  # the reference's key for the tokens its runs produced (not a scene)


def run_outputs() -> dict:
    """Every storyboard workload's generated tokens, as recorded here. A model's float results
    differ between CPUs, and a near-tie can flip a greedy token (or a draw), so the scenes of a
    real model's run are comparable with a reference only on a machine whose runs made the same
    tokens: the reference keeps them beside the fingerprints."""
    from astrai.trace.store import recorded
    from scenes.storyboard import STORYBOARD

    workloads = {getattr(importlib.import_module(m), n).WORKLOAD for m, n in STORYBOARD}
    return {w: recorded(w).outputs for w in sorted(workloads)}


def all_fingerprints() -> dict:
    from scenes.storyboard import STORYBOARD

    out = {RUNS: run_outputs()}
    with tempfile.TemporaryDirectory() as media:
        for module, name in STORYBOARD:
            for cut in CUTS:
                if cut == "teaser" and not getattr(importlib.import_module(module).__dict__[name],
                                                   "IN_TEASER", True):
                    continue
                out[f"{name}/{cut}"] = fingerprint(module, name, cut, media)
    return out


if __name__ == "__main__":
    json.dump(all_fingerprints(), sys.stdout, indent=None, separators=(",", ":"))
