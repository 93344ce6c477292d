"""A replay a story scene steers: its own beats around the trace's, and fast-forwards.

`StoryReplay` drives `Replay`'s planned beats itself (the driving the replay's package doc
describes), with what the prefix-cache and preemption scenes need on top:
- hooks: a scene's own beats run before or after the beat that applies an event the scene
  names, or instead of it (`hook_instead`: the scene's beat then applies that beat's events);
- `keep(spec)`: trace beats the scene does not keep are fast-forwarded: consecutive ones are
  applied together in one short play captioned with what they did ("steps 4-6 compressed: ..."),
  so every event is still applied and snapshotted; a run of nothing but phase changes and reads
  is folded into the next beat instead;
- `on_apply`: more kit to bring to each event's state (e.g. an LRU strip), snapshotted with it;
- boards (`show_board`): a scene's own mobjects in the replay's `notes` layer, leaving with the
  next beat unless told to stay.
Captions and details stay on screen for those who pause; what is spoken (a shot's `line`, the
beat kinds' own lines) is the subtitle track. Fast-forwarded runs are not spoken.
"""

from __future__ import annotations

from collections.abc import Callable

from astrai.inference.phases import StepPhase
from astrai.trace.events import (
    Admit,
    Alloc,
    Arrive,
    Cache,
    Event,
    Evict,
    Finish,
    Free,
    Gather,
    Phase,
    Preempt,
    Record,
    Retire,
    Share,
    Tokens,
    Wait,
    Write,
)
from scenes.framework.anchors import anchor, marked_line
from scenes.framework.kit.anim import Beat
from scenes.framework.kit.captions import caption_room
from scenes.framework.kit.layout import edges
from scenes.framework.replay.beats import KINDS, WRITE, find
from scenes.framework.replay.driver import Replay
from scenes.framework.replay.plan import RUN

Hook = Callable[["StoryReplay", int], None]
QUIET = (Phase, Gather, Tokens)  # events that need no play of their own


def _pages(pages: list[int]) -> str:
    return ", ".join(map(str, pages))


# What a fast-forward says of each kind it names (by task, with the pages it moved); the first
# five move pages, the others name their task.
WORDS: dict[type[Event], str] = {
    Alloc: "{t} allocates page(s) {p}", Share: "{t} shares page(s) {p}",
    Free: "{t} frees page(s) {p}", Cache: "page(s) {p} kept cached",
    Evict: "page(s) {p} evicted", Arrive: "{t} arrives", Finish: "{t} finishes",
    Retire: "{t} retires", Preempt: "{t} preempted", Admit: "{t} admitted",
    Record: "{t}'s prompt pages recorded", Wait: "{t} waits for pages",
}
_MOVES = (Alloc, Share, Free, Cache, Evict)


def summarize(events: list[Event], room: tuple[int, int] | None = None) -> tuple[str, str]:
    """Caption and detail for a fast-forwarded run of events, from their own fields, within
    `room` characters a line (default: what caption lines across the frame hold)."""
    caption_chars, detail_chars = room or caption_room(*edges())
    steps = sorted({ev.step for ev in events if ev.phase != StepPhase.ARRIVE})
    parts: list[str] = []
    by: dict[tuple[type[Event], str], list] = {}
    order: list[tuple[type[Event], str]] = []
    for ev in events:
        if type(ev) not in WORDS:
            continue
        moves = isinstance(ev, _MOVES)
        key = (type(ev), (getattr(ev, "task", None) or "") if moves else ev.task)
        if key not in by:
            by[key] = []
            order.append(key)
        if moves:
            by[key].append(ev.page)
    for kind, task in order:
        parts.append(WORDS[kind].format(t=task, p=_pages(by[(kind, task)])))
    decodes = [ev for ev in events if isinstance(ev, Write) and ev.phase == StepPhase.DECODE]
    n_decode = len({ev.step for ev in decodes})
    if n_decode:
        rows = list(dict.fromkeys(r["task"] for ev in decodes for r in ev.rows))
        parts.append(f"{n_decode} decode step{'s' if n_decode > 1 else ''} "
                     f"({', '.join(rows)})")
    if any(isinstance(ev, Write) and ev.phase == StepPhase.PREFILL for ev in events):
        parts.append("prefill")
    if not steps:
        head = "fast-forward"
    elif steps[0] == steps[-1]:
        head = f"step {steps[0]}"
    else:
        head = f"steps {steps[0]}-{steps[-1]} compressed"
    caption = f"{head}: "
    parts = parts or ["nothing new"]
    while parts and len(caption) + len(parts[0]) <= caption_chars - 1:
        caption += parts.pop(0) + ("; " if parts else "")
    detail = ""
    while parts and len(detail) + len(parts[0]) + 2 <= detail_chars - 3:
        detail += ("; " if detail else "") + parts.pop(0)
    if parts:  # the rest stays unsaid: the run is named compressed above
        detail += "; …"
    return caption.rstrip("; "), detail


class StoryReplay(Replay):
    """Replay steered by a story scene (see the module doc)."""

    def __init__(self, scene, trace, title: str = "", keep: Callable | None = None,
                 pace: float = 1.0, fast_time: float = 0.6, fast_hold: float = 0.5):
        super().__init__(scene, trace, title=title or None)
        self.keep = keep or (lambda spec: True)
        self.pace = pace  # scales run times and holds (on top of the cut's own scaling)
        self.fast_time, self.fast_hold = fast_time, fast_hold
        self.before: dict[int, list[Hook]] = {}
        self.after: dict[int, list[Hook]] = {}
        self.instead: dict[int, Callable] = {}  # event -> fn(replay, spec): plays that beat
        self.on_apply: list[Callable[[int, Beat], None]] = []  # more kit to sync per event
        self.transient: list = []  # boards that leave with the next beat
        self.boards: list[dict] = []  # every board shown: its name and text (for tests)
        self.cut_short: list[tuple[str, str]] = []
        self._own = False  # saying the scene's own words (its beats, fast-forward captions)

    @classmethod
    def steered(cls, scene, trace, key_beats) -> StoryReplay:
        """The replay a story scene steers by its cut: titled with the scene and the workload;
        the full cut keeps the beats whose main event is in `key_beats` and fast-forwards the
        rest, the teaser keeps none (the scene's own beats carry it), at the cut's pace. The
        beat kinds' own lines are silent: a steered scene speaks its own story, one line a
        beat of its own."""
        replay = cls(
            scene, trace, title=f"{scene.TITLE} · workload {trace.workload.get('name', '?')}",
            keep=(lambda spec: False) if scene.teaser else (lambda spec: spec.main in key_beats),
            pace=scene.pick(0.85, 1.0), fast_time=scene.pick(0.6, 0.4),
            fast_hold=scene.pick(0.6, 0.15))
        replay.quiet = set(KINDS)
        return replay

    # ---- hooks ----------------------------------------------------------------------------

    def hook_before(self, event: int, fn: Hook) -> None:
        self.before.setdefault(event, []).append(fn)

    def hook_after(self, event: int, fn: Hook) -> None:
        self.after.setdefault(event, []).append(fn)

    def hook_instead(self, event: int, fn: Callable) -> None:
        """fn(replay, spec) plays the beat holding `event` (it must apply spec.events)."""
        self.instead[event] = fn

    # ---- words and time -------------------------------------------------------------------

    def say(self, beat: Beat, caption: str, detail: str = "") -> None:
        if self._own and self.captions.lines.too_long(caption, detail):
            self.cut_short.append((caption, detail))  # a scene's words cut short: tests flag it
        super().say(beat, caption, detail)

    def scaled(self, run_time: float, hold: float) -> tuple[float, float]:
        run_time, hold = super().scaled(run_time, hold)
        return run_time * self.pace, hold * self.pace

    def apply(self, i: int, beat: Beat, staged: bool = True) -> None:
        super().apply(i, beat, staged)
        for fn in self.on_apply:
            fn(i, beat)

    def new_beat(self) -> Beat:
        beat = super().new_beat()
        if self.transient:
            window, beat.window = beat.window, (0.0, 0.45)
            for mob in self.transient:
                beat.vanish(self.notes, mob)
            self.transient = []
            beat.window = window
        return beat

    # ---- the run --------------------------------------------------------------------------

    def run(self, construct: bool = True) -> None:
        if construct:
            self.construct_cache()
        fast: list = []
        carry: list[int] = []  # events of skipped beats that change nothing worth a play
        for spec in self.all_beats:
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
            own = next((i for i in hooked if i in self.instead), None)
            if own is not None:
                self.instead[own](self, spec)
            else:
                self.play_beat(spec)
            for i in hooked:
                for fn in self.after.get(i, []):
                    fn(self, i)
        carry += self.flush(fast)
        if carry:  # nothing left to fold them into
            beat = self.new_beat()
            for i in carry:
                self.apply(i, beat, staged=False)
            self._playing = ("fast", carry[0])
            self.play(beat, 0.3, 0.0)

    def flush(self, specs: list) -> list[int]:
        """Apply a run of beats the scene does not keep, in one short play. A run with nothing
        but phase changes and reads is not played: its events are returned, to be applied
        with the next beat."""
        if not specs:
            return []
        idx = [i for spec in specs for i in spec.events]
        if all(isinstance(self.events[i], QUIET) for i in idx):
            return idx
        steps = [self.events[i].step for i in idx]
        name = f"steps {min(steps)}-{max(steps)}" if max(steps) > min(steps) else \
            f"step {steps[0]}"
        if name != self._section:
            self.section(name)
        beat = self.new_beat()
        for i in idx:
            self.apply(i, beat, staged=False)
        self._own = True
        self.say(beat, *summarize([self.events[i] for i in idx], self.captions.room))
        self._own = False
        last_write = max((i for i in idx if isinstance(self.events[i], Write)), default=None)
        if last_write is not None:
            self.show_code(RUN, WRITE, last_write)
        self._playing = ("fast", idx[0])
        self.play(beat, self.fast_time, self.fast_hold)
        return []

    # ---- a scene's own beats --------------------------------------------------------------

    def show_board(self, beat: Beat, board, name: str, stay: bool = False) -> None:
        """Bring a board in with this beat; it leaves with the next beat unless `stay`."""
        beat.appear(self.notes, board)
        if not stay:
            self.transient.append(board)
        self.boards.append({"name": name, "texts": board.texts(), "board": board})

    def show_frame(self, frame: dict | None, event: int | None) -> None:
        """A code panel of an engine frame the trace recorded, at the line `frame` names (a
        line that ran: see `line_of`)."""
        if frame is None:
            return
        info = self.code.show(frame)
        self.panels.append({**info, "event": event, "frame": frame, "kind": "story"})

    def line_of(self, event: int, name: str, where=("code", "returned")) -> dict | None:
        """The frame in `event` of the function of engine anchor `name`
        (scenes/framework/anchors.py), its marked line moved to the anchor's line if that ran
        (None without line tracing)."""
        a = anchor(name)
        frame = find(self.events[event], a.fn, where)
        if frame is None:
            return None
        lst = self.code.listing(frame["file"], frame["fn"])
        line = marked_line(a, lst.source, lst.start, frame["ran"])
        return frame if line is None else {**frame, "line": line}

    def beat(self, events: list[int] = (), build: Callable[[Beat], None] | None = None,
             code: tuple | None = None, run_time: float = 0.8, hold: float = 2.0,
             name: str = "story") -> Callable:
        """A beat of the scene's own, as a play for `StoryScene.shot` (which says its line and
        shows its caption): the trace events it applies (if any), whatever `build` adds to the
        beat (boards, pulses), and optionally a code panel (frame, event) of a recorded engine
        call; its animations run under the shot's line, then it holds `hold` (both scaled by
        the cut's pace)."""

        def play(shot) -> None:
            beat = self.new_beat()
            self._playing = (name, events[0] if events else None)
            for i in events:
                self.apply(i, beat)
            if build is not None:
                build(beat)
            if code is not None:
                self.show_frame(*code)
            self._playing = (name, events[0] if events else None)
            self.play(beat, *self.scaled(run_time, hold), shot=shot)

        return play
