"""StoryScene: what every storyboard scene shares.

A storyboard scene is one `StoryScene` subclass in its own file under `scenes/`. It names the
workload its story is told from (`WORKLOAD`), its title (and a shorter chapter name, `CHAPTER`,
if the title is long: the chapter's number is its place in scenes/storyboard.py), and
implements `story()`. Everything it shows comes from traces of real runs (`self.trace_of(...)`),
never from numbers typed in.

    class PrefixCacheScene(StoryScene):
        WORKLOAD = "prefix"
        TITLE = "Prefix cache"

        def story(self):
            trace = self.trace_of()          # $ASTRAI_WORKLOAD, else WORKLOAD
            ...

What the base gives every scene:
- `cut`: "full" (the explainer) or "teaser" (the short cut of the promo: key beats only, tighter
  holds). Set by `cut=` or $ASTRAI_CUT. `self.pick(full, teaser)` chooses a value by cut.
- `beat(animations, run_time, hold, line=...)`: the one timeline every scene and card plays
  through. `line` is spoken (scenes/framework/voice.py) from the beat's start, its cues become the
  subtitles (Manim subcaptions, so every render writes an .srt), the animations run under it
  and the beat lasts at least as long as the speech. `speak(text)` starts a line without
  waiting; `with voiced(text) as said:` plays a scene's own animations under it;
  `shot(caption, detail, duration, *plays, line=...)` is a beat with its caption lines. `self.lines`
  keeps every spoken (start, Line), `self.cues` every cue (start, seconds shown, text).
- `teaser_story()`: the teaser cut's shot, next to `story()` (default: the story itself).
- `chapter(name)`: a Manim section (`--save_sections` gives per-section clips and an index).
- `show(animations, run_time)` and `hold(seconds)`: play and wait through the scene's `clock`
  (seconds of video, counted in the frames Manim writes), which also runs when the scene is
  built without video, so cues and chapters land at the same times in tests as in the mp4.
  Built with skip_animations, `show` finishes the animations at once.
- `workload`: the workload this render shows, and `output_name()`, the file name it renders to
  (the class name, plus the workload when $ASTRAI_WORKLOAD overrides the scene's own).
- `snapshots` / `panels`: what the screen showed after each event / every code panel, for tests
  (a scene that replays through `scenes.framework.replay.Replay` sets `self.replay` and they are the
  replay's; see its package doc for narrative beats between the trace's beats).
- Output: the render is named `output_name()` (Manim's -o wins), so stills are
  `media/images/<file>/<name>.png` and another workload or the teaser never overwrites the
  scene's own video.

Tests build scenes without video: under tempconfig({"format": "none", "disable_caching": True,
"media_dir": tmp}), `Scene(trace=..., skip_animations=True).render()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from typing import ClassVar

import numpy as np
from manim import Scene, config
from manim.animation.animation import prepare_animation

from astrai.trace import Trace
from scenes.framework import theme
from scenes.framework.cues import MAX_CUE, MIN_CUE
from scenes.framework.kit.camera import ReplayCamera
from scenes.framework.kit.slots import drawn_texts
from scenes.framework.voice import PAUSE, RATE, Line, Narrator

LINGER = 0.5  # seconds a cue stays after its speech, to finish reading it

CUTS = ("full", "teaser")


def env_workload() -> str:
    """$ASTRAI_WORKLOAD, stripped ('' when unset)."""
    return os.environ.get("ASTRAI_WORKLOAD", "").strip()


class StoryScene(Scene):
    WORKLOAD: ClassVar[str] = "seed"
    TITLE: ClassVar[str] = ""
    CHAPTER: ClassVar[str] = ""  # the chapter's name, if not TITLE (numbered by the storyboard)
    IN_TEASER: ClassVar[bool] = True  # the promo's teaser plays this scene's shot

    def __init__(self, *args, trace: Trace | None = None, cut: str | None = None, **kwargs):
        kwargs.setdefault("camera_class", ReplayCamera)
        cut = cut or os.environ.get("ASTRAI_CUT", "").strip() or "full"
        if cut not in CUTS:
            raise ValueError(f"cut must be one of {CUTS}, got {cut!r} (ASTRAI_CUT)")
        self.cut = cut
        self.trace = trace  # a trace handed in (tests); else the workload is recorded
        self.cues: list[tuple[float, float, str]] = []  # (start, seconds shown, text)
        self.lines: list[tuple[float, Line]] = []  # every spoken line: (start, line)
        self._narrator: Narrator | None = None
        self.chapters: list[tuple[float, str]] = []
        self._skipped = 0.0  # seconds `show`/`hold` stood for without going through Manim
        self._snapshots: list[dict] = []
        self.shown: dict[str, dict] = {}  # beat -> what `snap` read back then
        self._panels: list[dict] = []
        self.replay = None  # the Replay a scene drives, if it drives one: the contract reads it
        self.caption_lines = None  # the kit CaptionLines a scene's shots write to
        self.captions_shown: list[tuple[float, str]] = []  # (start, caption) of every shot
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
        from scenes.framework.replay import load  # the replay driver owns loading and its checks

        return load(spec or self.workload)

    @property
    def teaser(self) -> bool:
        return self.cut == "teaser"

    def pick(self, full, teaser):
        """`full` in the explainer, `teaser` in the teaser cut."""
        return teaser if self.teaser else full

    # ---- subtitles and chapters ------------------------------------------------------------

    @property
    def clock(self) -> float:
        """Seconds of video so far, also when built without video (tests): Manim's own time
        (every play and wait counts there) plus what `show`/`hold` finished without Manim."""
        return float(self.time) + self._skipped

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
        # whole frames, off the edge: a run time a hair under a frame boundary (speech lengths
        # are arbitrary) must not round one way here and the other way in Manim
        n = max(len(np.arange(0, run_time, 1 / config.frame_rate)), 1)
        run_time = (n - 0.5) / config.frame_rate
        if self.skip_animations:
            for anim in animations:
                anim = prepare_animation(anim)  # `.animate` builders too, as play() takes
                anim.begin()
                anim.finish()
            self._skipped += self.seconds(run_time)
        else:
            self.play(*animations, run_time=run_time)

    def hold(self, seconds: float) -> None:
        """Hold the picture (a frozen wait), advancing the clock."""
        n = int(round(seconds * config.frame_rate, 6))  # whole frames, as in `show`
        if n <= 0:
            return
        seconds = (n + 0.5) / config.frame_rate
        if self.skip_animations:
            self._skipped += self.seconds(0.0, seconds)
        else:
            self.wait(seconds, frozen_frame=True)

    # ---- the timeline: one beat at a time ------------------------------------------------

    @property
    def narrator(self) -> Narrator:
        if self._narrator is None:
            self._narrator = Narrator()
        return self._narrator

    def beat(self, animations=(), run_time: float = 0.0, hold: float = 0.0,
             line: str | None = None, done: Callable[[], None] | None = None) -> Line | None:
        """One beat of the timeline, the only way a scene or card plays: speak `line` (if
        any) from now, play `animations` over `run_time` (never longer than the speech), call
        `done` (e.g. finish a kit Beat, take a snapshot), hold `hold` seconds, then hold on
        until the speech has ended and a short pause passed. Returns the spoken Line."""
        spoken = self.speak(line) if line else None
        end = self.clock + (spoken.duration + PAUSE if spoken else 0.0)
        animations = list(animations)
        if spoken is not None and animations:
            run_time = max(min(run_time, spoken.duration), 1 / config.frame_rate)
        self.show(animations, run_time)
        if done is not None:
            done()
        self.hold(hold)
        self.hold(end - self.clock)
        return spoken

    @contextmanager
    def voiced(self, line: str):
        """`with self.voiced(text) as said: self.show(anims, said.duration)`: the speech
        starts now and the block's plays run under it; leaving waits the speech out."""
        spoken = self.speak(line)
        end = self.clock + spoken.duration + PAUSE
        yield spoken
        self.hold(end - self.clock)

    def shot(self, caption: str, detail: str, duration: float, *plays,
             line: str | None = None) -> None:
        """One shot of the story: `caption` and `detail` on screen in the scene's caption lines
        (`self.caption_lines`, a kit CaptionLines; refused if they do not fit), these plays,
        each an (animations, run_time) pair, one after another, for at least `duration` s.
        With `line`, the narrator says it from the start of the shot and the shot lasts until
        the speech is over; without, the shot passes silently."""
        self.caption_lines.check(caption, detail)
        self.caption_lines.say(caption, detail)
        self.captions_shown.append((round(self.clock, 4), caption))
        with self.voiced(line) if line else nullcontext():
            used = 0.0
            for anims, run_time in plays:
                if anims:
                    self.show(anims, run_time)
                    used += run_time
            if duration - used > 1e-6:
                self.hold(duration - used)

    def speak(self, text: str) -> Line:
        """Start a spoken line now: each of its cues becomes a subtitle placed at its own
        speech, and the speech goes into the video (Scene.add_sound). Does not wait."""
        spoken = self.narrator.line(text)
        now = self.clock
        for cue, offset in zip(spoken.cues, spoken.offsets):
            start = now + offset
            self._cue(start, cue.duration, cue.text)
            if cue.wav is not None and not self.skip_animations:
                self.add_sound(str(cue.wav), time_offset=start - float(self.time))
        self.lines.append((round(now, 4), spoken))
        return spoken

    def _cue(self, start: float, speech: float, text: str) -> None:
        """A subtitle from `start`: on screen while it is spoken and a little after (to be
        read), at least 5/6 s, at most 7 s; the next cue cuts it 2 frames before it starts."""
        self._end_cue_at(start - 2 / config.frame_rate)
        shown = min(max(speech + LINGER, MIN_CUE), MAX_CUE)
        self.cues.append((round(start, 4), round(shown, 4), text))
        # Placed by the clock: what show/hold finished without Manim is not in its time.
        self.add_subcaption(text, duration=shown, offset=start - float(self.time))

    def _end_cue_at(self, t: float) -> None:
        """A cue still on screen at `t` ends there (the next one starts 2 frames later)."""
        if not self.cues:
            return
        start, duration, text = self.cues[-1]
        if start + duration > t:
            self.cues[-1] = (start, round(t - start, 4), text)
            self._get_manager().file_writer.subcaptions[-1].end = timedelta(seconds=t)

    def chapter(self, name: str) -> None:
        """Start a Manim section here (a chapter within the scene)."""
        self.chapters.append((round(self.now, 4), name))
        self.next_section(name)

    # ---- contract the tests read -----------------------------------------------------------

    def snap(self, beat: str, **what) -> None:
        """A snapshot of what the scene shows now, for a scene that is not a replay (a replay
        keeps its own, one per event): `what` (read back from the mobjects) under `beat`
        in `shown`, and every text drawn, in `snapshots`."""
        self.shown[beat] = what
        self._snapshots.append({"beat": beat, **what, "texts": drawn_texts(self.mobjects)})

    @property
    def snapshots(self) -> list[dict]:
        return self.replay.snapshots if self.replay is not None else self._snapshots

    @property
    def panels(self) -> list[dict]:
        return self.replay.panels if self.replay is not None else self._panels

    def tear_down(self) -> None:
        """The narration track ends with the video: silence pads it to the last frame (a
        narrated render with nothing spoken gets a silent track, so every part of a cut has
        sound and the join can copy it)."""
        super().tear_down()
        # no subtitle outlives the video, and the next part's first may start at once
        self._end_cue_at(self.clock - 2 / config.frame_rate)
        if self.skip_animations or not self.narrator.on:
            return
        from pydub import AudioSegment

        writer = self._get_manager().file_writer
        writer.add_audio_segment(AudioSegment.silent(0, frame_rate=RATE), time=float(self.time))

    def setup(self) -> None:
        self.camera.background_color = theme.BG

    def construct(self) -> None:
        (self.teaser_story if self.teaser else self.story)()

    def teaser_story(self) -> None:
        """The teaser's shot: by default the story itself (its beats pace themselves by cut);
        a scene with a shot of its own overrides this rather than forking inside `story`."""
        self.story()

    def story(self) -> None:  # pragma: no cover - every scene implements it
        raise NotImplementedError
