"""Scene 1 of the storyboard: the paged KV cache, replayed from a recorded run.

    manim -ql scenes/paged_cache.py PagedCacheScene                  # the seed workload
    ASTRAI_WORKLOAD=batching manim -ql scenes/paged_cache.py PagedCacheScene
    ASTRAI_WORKLOAD=path/to/workload.toml manim ...                  # any workload file
    ASTRAI_WORKLOAD=path/to/trace.json manim ...                     # a saved trace

ASTRAI_WORKLOAD is a shipped workload name (see `python -m astrai.trace --help`), a workload
.toml path, or a trace .json saved with `python -m astrai.trace NAME -o trace.json`; unset, the
scene replays `seed`. Everything on screen comes from that trace (see scenes/replay.py for how
each event becomes animation); the scene allocates nothing itself.

Tests build it without video: under tempconfig({"format": "none", ...}),
`PagedCacheScene(trace=trace, skip_animations=True).render()`, then read `scene.snapshots` (what
the pool, bits, refs and tables showed after every event) and `scene.panels` (every code panel).
"""

from __future__ import annotations

import sys
from pathlib import Path

from manim import Scene

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # run by path (manim scenes/paged_cache.py): make `scenes` importable
    sys.path.insert(0, _ROOT)

from scenes.kit.camera import ReplayCamera  # noqa: E402
from scenes.replay import Replay, load  # noqa: E402


class PagedCacheScene(Scene):
    """Beats 0-7 of scene 1 on the seed workload, or on any trace (ASTRAI_WORKLOAD / trace=)."""

    def __init__(self, *args, trace=None, **kwargs):
        kwargs.setdefault("camera_class", ReplayCamera)
        super().__init__(*args, **kwargs)
        self.trace = trace
        self.replay: Replay | None = None

    def construct(self) -> None:
        trace = self.trace if self.trace is not None else load()
        self.replay = Replay(self, trace)
        self.replay.run()

    @property
    def snapshots(self) -> list[dict]:
        return self.replay.snapshots if self.replay else []

    @property
    def panels(self) -> list[dict]:
        return self.replay.panels if self.replay else []
