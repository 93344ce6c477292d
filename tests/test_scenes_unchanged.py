"""Engine refactors do not change what a scene shows.

tests/data/scenes.json.gz holds, for every storyboard scene and cut, what the scene showed when
built without video (snapshots after each event or beat, code panels by function name and
marked line, spoken cues with their times), written by tests/scene_fingerprint.py before the
engine was split. Each is built again here and compared, first difference named.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

pytest.importorskip("manim")

from scene_fingerprint import CUTS, fingerprint  # noqa: E402

from scenes.storyboard import STORYBOARD  # noqa: E402

REFERENCE = Path(__file__).parent / "data" / "scenes.json.gz"


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
    return json.loads(gzip.decompress(REFERENCE.read_bytes()))


CASES = [(m, n, c) for m, n in STORYBOARD for c in CUTS]


@pytest.mark.parametrize("module,name,cut", CASES, ids=[f"{n}-{c}" for _, n, c in CASES])
def test_scene_shows_what_it_showed_before(reference, module, name, cut, tmp_path):
    key = f"{name}/{cut}"
    if key not in reference:
        pytest.skip(f"{name} has no {cut} cut")
    now = json.loads(json.dumps(fingerprint(module, name, cut, str(tmp_path))))
    assert _first_difference(now, reference[key]) is None, _first_difference(now, reference[key])
