"""StoryScene: what every storyboard scene shares.

A storyboard scene is one `StoryScene` subclass in its own file under `scenes/`. It names the
workload its story is told from (`WORKLOAD`), its title and its chapter name in the promo, and
implements `story()`. Everything it shows comes from traces of real runs (`self.trace_of(...)`),
never from numbers typed in.

    class PrefixCacheScene(StoryScene):
        WORKLOAD = "prefix"
        TITLE = "Prefix cache"
        CHAPTER = "2. Prefix cache"

        def story(self):
            trace = self.trace_of()          # $ASTRAI_WORKLOAD, else WORKLOAD
            ...

What the base gives every scene:
- `cut`: "full" (the explainer) or "teaser" (the short cut of the promo: key beats only, tighter
  holds). Set by `cut=` or $ASTRAI_CUT. `self.pick(full, teaser)` chooses a value by cut.
- `say(text, duration)`: a caption that is also a subtitle cue (Manim subcaption, so every
  render writes an .srt beside its mp4); `self.cues` keeps (start, duration, text) for tests.
- `chapter(name)`: a Manim section (`--save_sections` gives per-section clips and an index).
- `show(animations, run_time)` and `hold(seconds)`: play and wait through the scene's `clock`
  (seconds of video, counted in the frames Manim writes), which also runs when the scene is
  built without video, so cues and chapters land at the same times in tests as in the mp4.
  Built with skip_animations, `show` finishes the animations at once.
- `workload`: the workload this render shows, and `output_name()`, the file name it renders to
  (the class name, plus the workload when $ASTRAI_WORKLOAD overrides the scene's own).
- `snapshots` / `panels`: what the screen showed after each event / every code panel, for tests
  (scenes that replay through `scenes.replay.Replay` fill them from it; see its package doc for
  narrative beats between the trace's beats).
- Output: the render is named `output_name()` (Manim's -o wins), so stills are
  `media/images/<file>/<name>.png` and another workload or the teaser never overwrites the
  scene's own video.

Tests build scenes without video: under tempconfig({"format": "none", "disable_caching": True,
"media_dir": tmp}), `Scene(trace=..., skip_animations=True).render()`.
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np
from manim import Scene, config

from astrai.trace import Trace
from scenes import theme
from scenes.kit.camera import ReplayCamera

CUTS = ("full", "teaser")


def env_workload() -> str:
    """$ASTRAI_WORKLOAD, stripped ('' when unset)."""
    return os.environ.get("ASTRAI_WORKLOAD", "").strip()


class StoryScene(Scene):
    WORKLOAD: ClassVar[str] = "seed"
    TITLE: ClassVar[str] = ""
    CHAPTER: ClassVar[str] = ""

    def __init__(self, *args, trace: Trace | None = None, cut: str | None = None, **kwargs):
        kwargs.setdefault("camera_class", ReplayCamera)
        cut = cut or os.environ.get("ASTRAI_CUT", "").strip() or "full"
        if cut not in CUTS:
            raise ValueError(f"cut must be one of {CUTS}, got {cut!r} (ASTRAI_CUT)")
        self.cut = cut
        self.trace = trace  # a trace handed in (tests); else the workload is recorded
        self.cues: list[tuple[float, float, str]] = []
        self.chapters: list[tuple[float, str]] = []
        self.clock = 0.0  # seconds of video so far, also when built without video (tests)
        self._snapshots: list[dict] = []
        self._panels: list[dict] = []
        # Manim fixes a scene's output paths when it is constructed: name them after
        # output_name() unless the user chose a name (-o).
        chosen = config.output_file
        if not chosen:
            config.output_file = self.output_name()
        try:
            super().__init__(*args, **kwargs)
        finally:
            config.output_file = chosen

    # ---- what it shows ---------------------------------------------------------------------

    @property
    def workload(self) -> str:
        """The workload spec this render shows: $ASTRAI_WORKLOAD, else the scene's own."""
        return env_workload() or self.WORKLOAD

    def output_name(self) -> str:
        """File name of this render (no extension): the class name, plus the workload when
        $ASTRAI_WORKLOAD overrides the scene's own, so an override never overwrites it."""
        name = type(self).__name__
        other = env_workload()
        if other and other != self.WORKLOAD:
            stem = os.path.splitext(os.path.basename(other))[0]
            name += "_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
        if self.cut != "full":
            name += "_" + self.cut
        return name

    def trace_of(self, spec: str | None = None) -> Trace:
        """The trace behind the scene: the one handed in, else `spec` (default: `workload`)
        recorded now, or loaded if it names a saved .json (refused if stale)."""
        if spec is None and self.trace is not None:
            return self.trace
        from scenes.replay import load  # the replay driver owns loading and its checks

        return load(spec or self.workload)

    @property
    def teaser(self) -> bool:
        return self.cut == "teaser"

    def pick(self, full, teaser):
        """`full` in the explainer, `teaser` in the teaser cut."""
        return teaser if self.teaser else full

    # ---- subtitles and chapters ------------------------------------------------------------

    @property
    def now(self) -> float:
        """Seconds of video so far (the clock subtitles and chapters are placed by)."""
        return self.clock

    @staticmethod
    def frames(run_time: float = 0.0, hold: float = 0.0) -> int:
        """Frames Manim writes for a play of `run_time` then a (frozen) wait of `hold`."""
        dt = 1 / config.frame_rate
        n = len(np.arange(0, run_time, dt)) if run_time > 0 else 0
        return n + (int(hold / dt) if hold > 0 else 0)

    def seconds(self, run_time: float = 0.0, hold: float = 0.0) -> float:
        """How long a play of `run_time` then a hold of `hold` lasts in the video."""
        return self.frames(run_time, hold) / config.frame_rate

    def show(self, animations: list, run_time: float) -> None:
        """Play animations and advance the clock by the frames they take. Built without video
        (skip_animations), they are finished at once: only the end state matters there."""
        if not animations or run_time <= 0:
            return
        if self.skip_animations:
            for anim in animations:
                anim.begin()
                anim.finish()
        else:
            self.play(*animations, run_time=run_time)
        self.clock += self.seconds(run_time)

    def hold(self, seconds: float) -> None:
        """Hold the picture (a frozen wait), advancing the clock."""
        if seconds <= 0:
            return
        if not self.skip_animations:
            self.wait(seconds, frozen_frame=True)
        self.clock += self.seconds(0.0, seconds)

    def say(self, text: str, duration: float) -> None:
        """Show-and-subtitle: a subcaption cue from now for `duration` seconds."""
        if duration <= 0 or not text:
            return
        self.cues.append((round(self.now, 4), duration, text))
        # Placed by the clock: built without video, Manim's own time does not move.
        self.add_subcaption(text, duration=duration, offset=self.clock - float(self.time))

    def chapter(self, name: str) -> None:
        """Start a Manim section here (a chapter within the scene)."""
        self.chapters.append((round(self.now, 4), name))
        self.next_section(name)

    # ---- contract the tests read -----------------------------------------------------------

    @property
    def snapshots(self) -> list[dict]:
        return self._snapshots

    @property
    def panels(self) -> list[dict]:
        return self._panels

    def setup(self) -> None:
        self.camera.background_color = theme.BG

    def construct(self) -> None:
        self.story()

    def story(self) -> None:  # pragma: no cover - every scene implements it
        raise NotImplementedError
