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
- `shot(caption, detail, *plays, line=..., least=...)`: the one way a scene or card plays.
  `line` is spoken (scenes/framework/voice.py) from the shot's start and its cues become the
  subtitles (Manim subcaptions, so every render writes an .srt); `caption` and `detail` go to
  the scene's caption lines (`self.caption_lines`, the kit's CaptionLines; refused if they do
  not fit; None leaves them as they are) and cross-fade in with the first play; the plays run
  one after another under the line, each an (animations, run_time) pair or a callable given
  the `Shot` (its speech `duration`, `show`, `hold`, `also`: how a replay beat or a paced run
  of plays fills it); the shot lasts at least `least` seconds and until the speech is over.
  `self.lines` keeps every spoken (start, Line), `self.cues` every cue (start, seconds shown,
  text), `self.captions_shown` every (start, caption).
- `teaser_story()`: the teaser cut's shot, next to `story()` (default: the story itself).
- `chapter(name)`: a Manim section (`--save_sections` gives per-section clips and an index).
- The clock: a shot plays and waits through the scene's `clock` (seconds of video, counted in
  the frames Manim writes), which also runs when the scene is built without video, so cues and
  chapters land at the same times in tests as in the mp4. Built with skip_animations, plays
  finish their animations at once.
- `workload`: the workload this render shows, and `output_name()`, the file name it renders to
  (the class name, plus the workload when $ASTRAI_WORKLOAD overrides the scene's own).
- `snap(beat, **what)`: the one snapshot producer; `snapshots` lists them all, one schema for
  every scene ({"beat", "at", **what}), and `panels` every code panel, for tests. A scene
  that replays a recorded run uses a `scenes.framework.replay.Replay` (set as `self.replay`):
  it snaps after every event it applies, its panels are the scene's, and `replay.beat(...)`
  is a play for a shot (see its package doc).
- Output: the render is named `output_name()` (Manim's -o wins), so stills are
  `media/images/<file>/<name>.png` and another workload or the teaser never overwrites the
  scene's own video.

Tests build scenes without video: under tempconfig({"format": "none", "disable_caching": True,
"media_dir": tmp}), `Scene(trace=..., skip_animations=True).render()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import ClassVar

import numpy as np
from manim import Scene, config
from manim.animation.animation import prepare_animation

from astrai.trace import Trace
from scenes.framework import theme
from scenes.framework.cues import MAX_CUE, MIN_CUE
from scenes.framework.kit.anim import Beat
from scenes.framework.kit.camera import ReplayCamera
from scenes.framework.kit.slots import drawn_texts
from scenes.framework.voice import PAUSE, RATE, Line, Narrator

LINGER = 0.5  # seconds a cue stays after its speech, to finish reading it

CUTS = ("full", "teaser")


def env_workload() -> str:
    """$ASTRAI_WORKLOAD, stripped ('' when unset)."""
    return os.environ.get("ASTRAI_WORKLOAD", "").strip()


class Shot:
    """What a shot's plays run through: the speech's `duration` (0 when silent) and `line`;
    `show(animations, run_time)` plays, never longer than the speech (the caption's cross-fade
    joins the first),
    `hold(seconds)` holds, `also(animations)` adds animations to the next play."""

    def __init__(self, scene: StoryScene, spoken: Line | None, fade: Beat | None):
        self.scene, self.fade = scene, fade
        self.line = spoken.text if spoken else ""
        self.duration = spoken.duration if spoken else 0.0
        self.pending: list = fade.animations() if fade is not None else []

    def also(self, animations) -> None:
        self.pending += list(animations)

    def show(self, animations, run_time: float) -> None:
        """Play these animations (never longer than the speech: they run under the line)."""
        if self.duration and animations:
            run_time = max(min(run_time, self.duration), 1 / config.frame_rate)
        anims, self.pending = [*self.pending, *animations], []
        self.scene._show(anims, run_time)
        self.settle()

    def hold(self, seconds: float) -> None:
        self.scene._hold(seconds)

    def settle(self) -> None:
        """The caption's old lines leave once its cross-fade has played (at once if no play
        came: the caption then simply changes)."""
        for anim in self.pending:
            anim = prepare_animation(anim)
            anim.begin()
            anim.finish()
        self.pending = []
        if self.fade is not None:
            self.fade.finish()
            self.fade = None


class StoryScene(Scene):
    WORKLOAD: ClassVar[str] = "seed"
    TITLE: ClassVar[str] = ""
    CHAPTER: ClassVar[str] = ""  # the chapter's name, if not TITLE (numbered by the storyboard)
    IN_TEASER: ClassVar[bool] = True  # the promo's teaser plays this scene's shot
    SNAP_TEXTS: ClassVar[bool] = False  # its snapshots list every text drawn (and where)

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
        self._skipped = 0.0  # seconds plays and holds stood for without going through Manim
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
        (every play and wait counts there) plus what was finished without Manim."""
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

    def _show(self, animations: list, run_time: float) -> None:
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

    def _hold(self, seconds: float) -> None:
        """Hold the picture (a frozen wait), advancing the clock."""
        n = int(round(seconds * config.frame_rate, 6))  # whole frames, as in `_show`
        if n <= 0:
            return
        seconds = (n + 0.5) / config.frame_rate
        if self.skip_animations:
            self._skipped += self.seconds(0.0, seconds)
        else:
            self.wait(seconds, frozen_frame=True)

    # ---- the timeline: one shot at a time ------------------------------------------------

    @property
    def narrator(self) -> Narrator:
        if self._narrator is None:
            self._narrator = Narrator()
        return self._narrator

    def shot(self, caption: str | None, detail: str = "", *plays, line: str | None = None,
             least: float = 0.0) -> Line | None:
        """One shot of the story, the only way a scene or card plays: the narrator says `line`
        (if any) from the shot's start; `caption` and `detail` replace the caption lines (None:
        they stay), cross-fading with the first play; the plays run one after another, each an
        (animations, run_time) pair or a callable given the `Shot`, each play cut to the
        speech's length; the pairs' run times are held out to `least` seconds, and the shot
        lasts until the speech is over and a short pause passed. Returns the spoken Line."""
        fade = None
        if caption is not None:
            if self.caption_lines is None:
                raise ValueError(f"{type(self).__name__} has no caption lines for {caption!r}")
            self.caption_lines.check(caption, detail)
            fade = Beat()
            self.caption_lines.say(caption, detail, fade)
            self.captions_shown.append((round(self.clock, 4), caption))
        spoken = self._speak(line) if line else None
        end = self.clock + (spoken.duration + PAUSE if spoken else 0.0)
        shot = Shot(self, spoken, fade)
        used = 0.0
        for play in plays:
            if callable(play):
                play(shot)
                continue
            anims, run_time = play
            if anims:
                shot.show(anims, run_time)
                used += run_time
        shot.settle()
        if least - used > 1e-6:
            self._hold(least - used)
        self._hold(end - self.clock)
        return spoken

    def _beat(self, animations=(), run_time: float = 0.0, hold: float = 0.0,
              done: Callable[[], None] | None = None) -> None:
        """Play `animations` over `run_time`, call `done` (e.g. finish a kit Beat), hold `hold`
        seconds (the replay's own beats, inside a shot or under a line spoken before them)."""
        self._show(list(animations), run_time)
        if done is not None:
            done()
        self._hold(hold)

    def _speak(self, text: str) -> Line:
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

    def snap(self, beat: str, **what) -> dict:
        """The one snapshot producer, for every scene (a replay snaps through it after each
        event it applies): {"beat": what is playing, "at": seconds of video, **what} (`what`
        read back from the mobjects), plus "texts" (every text drawn: kind, text, box) where
        the scene sets SNAP_TEXTS. `shown[beat]` keeps the last `what` of each beat."""
        snap = {"beat": beat, "at": round(self.clock, 4), **what}
        if self.SNAP_TEXTS:
            snap["texts"] = drawn_texts(self.mobjects)
        self.shown[beat] = what
        self._snapshots.append(snap)
        return snap

    @property
    def snapshots(self) -> list[dict]:
        """Every snapshot taken, in order (what tests and the fingerprint compare)."""
        return self._snapshots

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
