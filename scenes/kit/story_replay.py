"""A replay a story scene steers: its own beats between the trace's, fast-forwards, subtitles.

`StoryReplay` plays a trace through `scenes.replay.Replay`'s beats, with three additions a
storyboard scene needs:
- `hooks`: a scene's own beats (a board, a chain, a card) run before or after the beat whose main
  event the scene names;
- `keep(spec)`: beats the scene does not keep are fast-forwarded: consecutive ones are applied
  together in one short play, captioned with what they did (every event is still applied and
  snapshotted, so tests see the screen after every event);
- every caption is also a subtitle cue of the scene (`StoryScene.say`), timed by its play.
"""

from __future__ import annotations

from collections.abc import Callable

from manim import LEFT, VGroup

from scenes import theme
from scenes.kit.anim import Beat
from scenes.replay import Replay

Hook = Callable[["StoryReplay", int], None]
QUIET = {"phase", "gather", "tokens"}  # events that need no play of their own
CAPTION_CHARS, DETAIL_CHARS = 86, 96  # what the caption lines show before cutting


def _pages(pages: list[int]) -> str:
    return ", ".join(map(str, pages))


def summarize(events: list[dict]) -> tuple[str, str]:
    """Caption and detail for a fast-forwarded run of events, from their own fields."""
    steps = sorted({ev["step"] for ev in events if ev["phase"] != "arrive"})
    parts: list[str] = []
    by: dict[tuple[str, str], list] = {}
    order: list[tuple[str, str]] = []
    for ev in events:
        kind = ev["kind"]
        if kind in ("alloc", "share", "free", "cache", "evict"):
            key = (kind, ev.get("task") or "")
            if key not in by:
                by[key] = []
                order.append(key)
            by[key].append(ev["page"])
        elif kind in ("arrive", "finish", "retire", "preempt", "admit", "record", "wait"):
            key = (kind, ev["task"])
            by.setdefault(key, [])
            if key not in order:
                order.append(key)
    words = {"alloc": "{t} allocates page(s) {p}", "share": "{t} shares page(s) {p}",
             "free": "{t} frees page(s) {p}", "cache": "page(s) {p} kept cached",
             "evict": "page(s) {p} evicted", "arrive": "{t} arrives", "finish": "{t} finishes",
             "retire": "{t} retires", "preempt": "{t} preempted", "admit": "{t} admitted",
             "record": "{t}'s prompt pages recorded", "wait": "{t} waits for pages"}
    for kind, task in order:
        parts.append(words[kind].format(t=task, p=_pages(by[(kind, task)])))
    n_decode = len({ev["step"] for ev in events if ev["kind"] == "write"
                    and ev["phase"] == "decode"})
    if n_decode:
        parts.append(f"{n_decode} decode step{'s' if n_decode > 1 else ''}")
    if any(ev["kind"] == "write" and ev["phase"] == "prefill" for ev in events):
        parts.append("prefill")
    if not steps:
        head = "fast-forward"
    elif steps[0] == steps[-1]:
        head = f"step {steps[0]}"
    else:
        head = f"steps {steps[0]}-{steps[-1]} compressed"
    caption, detail = f"{head}: ", ""
    parts = parts or ["nothing new"]
    while parts and len(caption) + len(parts[0]) <= CAPTION_CHARS - 1:
        caption += parts.pop(0) + ("; " if parts else "")
    detail = "; ".join(parts)
    return caption.rstrip("; "), detail


class StoryReplay(Replay):
    """Replay steered by a story scene (see the module doc)."""

    def __init__(self, scene, trace, title: str = "", keep: Callable | None = None,
                 pace: float = 1.0, fast_time: float = 0.6, fast_hold: float = 0.5):
        super().__init__(scene, trace)
        self.keep = keep or (lambda spec: True)
        self.pace = pace  # scales run times and holds of trace beats
        self.fast_time, self.fast_hold = fast_time, fast_hold
        self.before: dict[int, list[Hook]] = {}
        self.after: dict[int, list[Hook]] = {}
        self.instead: dict[int, Callable] = {}  # event -> fn(replay, spec): plays that beat
        self.on_apply: list[Callable[[int, Beat], None]] = []  # extra kit to sync per event
        self.story = VGroup()  # the scene's own mobjects, drawn over everything
        self.scene.add(self.story)
        self.transient: list = []  # boards that leave with the next beat
        self.boards: list[dict] = []  # every board shown: its name and text (for tests)
        self._cue: str | None = None
        self.cut_short: list[tuple[str, str]] = []
        self._own = False  # saying the scene's own words (narrate, fast-forward captions)
        if title:
            old = self.header.title
            new = theme.text(title, theme.FS_TITLE, theme.TEXT, bold=True)
            new.move_to(old.get_left(), aligned_edge=LEFT)
            for group in [self.base, *self.base.submobjects]:
                if old in group.submobjects:
                    group.remove(old)
                    group.add(new)
            self.header.title = new

    # ---- hooks --------------------------------------------------------------------------

    def hook_before(self, event: int, fn: Hook) -> None:
        self.before.setdefault(event, []).append(fn)

    def hook_after(self, event: int, fn: Hook) -> None:
        self.after.setdefault(event, []).append(fn)

    def hook_instead(self, event: int, fn: Callable) -> None:
        """fn(replay, spec) plays the beat holding `event` (it must apply spec.events)."""
        self.instead[event] = fn

    # ---- subtitles ----------------------------------------------------------------------

    def say(self, beat: Beat, caption: str, detail: str = "") -> None:
        if self._own and (len(caption) > CAPTION_CHARS or len(detail) > DETAIL_CHARS):
            self.cut_short.append((caption, detail))  # a scene's words cut short: tests flag it
        super().say(beat, caption, detail)
        self._cue = caption if not detail else f"{caption}. {detail}"

    def play(self, beat: Beat, run_time: float, hold: float) -> None:
        if self._cue is not None:  # the cue lasts the play and its hold
            self.scene.say(self._cue, run_time + max(hold, 0.0))
            self._cue = None
        super().play(beat, run_time, hold)

    def timing(self, spec) -> tuple[float, float]:
        run_time, hold = super().timing(spec)
        return run_time * self.pace, hold * self.pace

    # ---- per event ----------------------------------------------------------------------

    def apply(self, i: int, beat: Beat, staged: bool = True) -> None:
        super().apply(i, beat, staged)
        for fn in self.on_apply:
            fn(i, beat)

    # ---- the run ------------------------------------------------------------------------

    def run(self, construct: bool = True) -> None:
        if construct:
            self.construct_cache()
        else:
            self.quick_construct()
        fast: list = []
        carry: list[int] = []  # events of skipped beats that change nothing worth a play
        for spec in self.beats:
            hooked = [i for i in spec.events
                      if i in self.before or i in self.after or i in self.instead]
            if not hooked and not self.keep(spec):
                fast.append(spec)
                continue
            carry += self.flush(fast)
            fast = []
            if carry:
                spec.events = carry + spec.events
                carry = []
            for i in hooked:
                for fn in self.before.get(i, []):
                    fn(self, i)
            self.beat_times.append((round(self.duration, 2), spec.kind, spec.main))
            own = next((i for i in hooked if i in self.instead), None)
            if own is not None:
                self.instead[own](self, spec)
            else:
                getattr(self, "beat_" + spec.kind.replace("-", "_"), self.beat_generic)(spec)
            for i in hooked:
                for fn in self.after.get(i, []):
                    fn(self, i)
        carry += self.flush(fast)
        if carry:  # nothing left to fold them into
            beat = self.new_beat()
            for i in carry:
                self.apply(i, beat, staged=False)
            self.play(beat, 0.3, 0.0)

    def flush(self, specs: list) -> list[int]:
        """Apply a run of beats the scene does not keep, in one short play. A run with nothing
        but phase changes and reads is not played: its events are returned, to be applied
        with the next beat."""
        if not specs:
            return []
        idx = [i for spec in specs for i in spec.events]
        if all(self.events[i]["kind"] in QUIET for i in idx):
            return idx
        beat = self.new_beat()
        for i in idx:
            self.apply(i, beat, staged=False)
        self.beat_times.append((round(self.duration, 2), "fast", idx[0]))
        self._own = True
        self.say(beat, *summarize([self.events[i] for i in idx]))
        self._own = False
        last_write = max((i for i in idx if self.events[i]["kind"] == "write"), default=None)
        if last_write is not None:
            ev = self.events[last_write]
            frame = next((f for f in ev["code"] if f["fn"] == "CacheView.write"), None)
            self.show_code(frame or (ev["code"][0] if ev["code"] else None), last_write)
        self.play(beat, self.fast_time, self.fast_hold)
        return []

    def quick_construct(self) -> None:
        """The teaser's construction: frames, bits and refs in one short play."""
        init = next((i for i, ev in enumerate(self.events) if ev["phase"] == "init"), None)
        beat = Beat(self.overlay)
        beat.window = (0.0, 0.7)
        beat.appear(self.base, self.grid)
        for f in list(self.pool.frames):
            self.pool.remove(f)
            beat.appear(self.pool, f)
        beat.appear(self.cells_layer, self.bits.static())
        if init is not None:
            self.apply(init, beat, staged=False)
        g = self.geo
        self.say(beat, f"one pool of {g['n_pages']} pages x {g['page_size']} token slots, "
                       "shared by all requests")
        self.play(beat, 0.6, 0.6)

    # ---- a scene's own beats ------------------------------------------------------------

    def new_beat(self) -> Beat:
        beat = super().new_beat()
        if self.transient:
            window, beat.window = beat.window, (0.0, 0.45)
            for mob in self.transient:
                beat.vanish(self.story, mob)
            self.transient = []
            beat.window = window
        return beat

    def show_board(self, beat: Beat, board, name: str, stay: bool = False) -> None:
        """Bring a board in with this beat; it leaves with the next beat unless `stay`."""
        beat.appear(self.story, board)
        if not stay:
            self.transient.append(board)
        self.boards.append({"name": name, "texts": board.texts(), "board": board})

    def narrate(self, caption: str, detail: str = "", run_time: float = 0.8, hold: float = 2.0,
                build: Callable[[Beat], None] | None = None, code: tuple | None = None,
                events: list[int] = ()) -> Beat:
        """One beat of the scene's own: a caption (and subtitle), whatever `build` adds to the
        beat, optionally a code panel (frame, event), and the trace events it applies."""
        beat = self.new_beat()
        for i in events:
            self.apply(i, beat)
        if build is not None:
            build(beat)
        self._own = True
        self.say(beat, caption, detail)
        self._own = False
        if code is not None and code[0] is not None:
            self.show_code(*code)
        self.play(beat, run_time * self.pace, hold * self.pace)
        return beat
