"""Replay: builds the kit on a StoryScene and plays a trace beat by beat (see the package doc)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from manim import DOWN, LEFT, Brace, Mobject, Rectangle, VGroup

from astrai.errors import TraceFormatError
from astrai.inference.phases import StepPhase
from astrai.trace import Trace
from astrai.trace.events import Arrive
from astrai.trace.text import mask_bits
from scenes.framework import theme
from scenes.framework.anchors import Anchor, marked_line
from scenes.framework.kit.anim import Beat
from scenes.framework.kit.bitmask import BitRows
from scenes.framework.kit.captions import PHASES, Captions, Header
from scenes.framework.kit.code import CodePanel, source_of
from scenes.framework.kit.glyphs import Atlas
from scenes.framework.kit.layout import make_layout
from scenes.framework.kit.pieces import PagePieces
from scenes.framework.kit.pool import PagePool
from scenes.framework.kit.tables import TEXT_LINES, PageTables, plan_tables
from scenes.framework.limits import require_drawable
from scenes.framework.replay.beats import KINDS, STORE, W_BITS, W_POOL, W_TABLES, W_TEXT, find
from scenes.framework.replay.plan import CONSTRUCT, MONTAGE, BeatSpec, never, plan_beats, teaser

# The teaser's pacing: animations a bit quicker, holds much shorter (first-time holds too).
TEASER_RUN, TEASER_HOLD = 0.7, 0.35


def x_span(mob: Mobject) -> tuple[float, float]:
    """(mob.get_left()[0], mob.get_right()[0]), the same numbers, without Manim's copy of every
    anchor into a tuple (taken after every event, that copy was most of a replay's time outside
    drawing): the extremes of the x of every family member's anchors (a VMobject's boundary)."""
    xs = []
    for m in mob.get_family():
        p = m.points
        if len(p) == 1:
            xs.append(p[:, 0])
        elif len(p):
            n = m.n_points_per_cubic_curve
            xs += (p[::n, 0], p[n - 1::n, 0])
    if not xs:
        return 0.0, 0.0  # Manim's edge of a mobject without points: the origin
    x = np.concatenate(xs)
    return np.min(x), np.max(x)


class Replay:
    """Builds the kit on `scene` (a StoryScene), then plays `trace` beat by beat.

    title: the header's title (default "Paged KV cache · workload NAME").
    cut: "full" or "teaser" (default: the scene's cut); the teaser plays `plan.teaser(...)`.
    keep: with the teaser, beats to play as in the full cut (default none).
    """

    def __init__(self, scene, trace: Trace, title: str | None = None, cut: str | None = None,
                 keep: Callable[[BeatSpec], bool] | None = None):
        require_drawable(trace)  # before anything is built for its pages
        self.scene, self.trace = scene, trace
        self.events = trace.events
        self.geo = trace.geometry
        self.n_pages, self.page_size = self.geo["n_pages"], self.geo["page_size"]
        self.cut = cut or getattr(scene, "cut", "full")
        names = [ev.task for ev in self.events if isinstance(ev, Arrive)]
        self.palette = theme.Palette(names)
        most = max((len(t) for ev in self.events for t in ev.state["page_tables"].values()),
                   default=1)
        texts = any(ev.prompt_text for ev in self.events if isinstance(ev, Arrive))
        # + the lines of text under a text request's table
        self.layout = make_layout(self.n_pages, table_rows=most + TEXT_LINES * texts)
        self.plan = plan_tables(self.events, self.layout, trace.workload)
        self.all_beats = plan_beats(self.events)
        self.beats = (teaser(self.all_beats, self.events, keep or never)
                      if self.cut == "teaser" else self.all_beats)
        self.title = title or f"Paged KV cache · workload {trace.workload.get('name', '?')}"
        self.panels: list[dict] = []  # every code panel shown: which frame, which rows
        self.prev_state: dict | None = None
        self.intro: VGroup | None = None
        # (start in seconds of video, kind, main event, caption) of every play, in order (a
        # beat that explains first plays twice)
        self.beat_times: list[tuple[float, str, int | None, str]] = []
        self._playing: tuple[str, int | None] = (CONSTRUCT, None)
        self.n_plays = 0
        self.state_only = bool(getattr(scene, "skip_animations", False))
        self._line: str | None = None  # spoken over the beat being built, when it plays
        self.told: set[str] = set()  # what the narrator has explained already
        self.quiet: set[str] = set()  # beat kinds whose own lines a scene does not want spoken
        self._section: str | None = None
        self._build()

    # ---- kit ------------------------------------------------------------------------------

    def _build(self) -> None:
        lay = self.layout
        self.header = Header(lay, self.title)
        self.captions = Captions(lay)
        self.scene.caption_lines = self.captions.lines  # where the scene's shots caption
        self.pieces = PagePieces(self.page_size)
        self.pool = PagePool(lay, self.page_size, self.palette, self.pieces)
        self.bits = BitRows(lay)
        self.tables = PageTables(lay, self.plan, self.page_size, self.palette)
        self.code = CodePanel(lay)
        self.grid = self.pool.grid()
        self.pool.remove(*self.pool.frames)  # they come in during construction
        cached = any(ev.state["cached"] for ev in self.events)
        self.base = VGroup(self.header.static(), self.code.bg, self.pool.legend(cached))
        self.overlay = VGroup()
        self.notes = VGroup()  # what narrative beats bring in (scenes' own mobjects)
        # Bit/ref cells: painted once with the static layer, unless the pool wraps (arrows to an
        # upper row pass behind the rows below, so the cells must be drawn over the arrows).
        self.cells_layer = self.base if len(self.layout.rows) == 1 else VGroup()
        self.layers = [self.base, VGroup(self.code), self.tables.arrows_layer, self.tables,
                       VGroup(self.cells_layer, self.pool, self.bits) if len(self.layout.rows) > 1
                       else VGroup(self.pool, self.bits),
                       VGroup(self.header, self.captions), self.overlay, self.notes]
        self.scene.camera.background_color = theme.BG
        self.scene.add(*self.layers)

    # ---- applying events ------------------------------------------------------------------

    def apply(self, i: int, beat: Beat, staged: bool = True) -> None:
        ev = self.events[i]
        st = ev.state
        self.pieces.see(ev)
        phase = ev.phase if ev.phase in PHASES else None
        beat.window = W_TEXT if staged else (0.0, 1.0)
        self.header.sync(ev.step, phase, beat)
        self.captions.sync(st, self.n_pages, beat)
        beat.window = W_BITS if staged else (0.0, 1.0)
        self.bits.sync(st, beat)
        beat.window = W_POOL if staged else (0.0, 1.0)
        self.pool.sync(st, beat)
        beat.window = W_TABLES if staged else (0.0, 1.0)
        self.tables.sync(st, beat)
        self.scene.snap(self._playing[0], **self.snapshot(i))
        self.prev_state = st

    def apply_all(self, spec: BeatSpec, beat: Beat, staged: bool = True, upto=None) -> None:
        for i in spec.events:
            if upto is not None and i == upto:
                break
            self.apply(i, beat, staged)

    def snapshot(self, i: int) -> dict:
        tables = self.tables.shown()
        return {
            "event": i,
            **self.header.shown(),
            **self.pool.shown(),
            **self.bits.shown(),
            "tables": {n: t["rows"] for n, t in tables.items()},
            "arrows": {n: t["arrows"] for n, t in tables.items()},
            "lengths": {n: t["length"] for n, t in tables.items()},
            "caps": {n: t["cap"] for n, t in tables.items()},
            "done": {n: t["done"] for n, t in tables.items()},
            "blocks": {n: t["blocks"] for n, t in tables.items()},
            "said": {n: t["said"] for n, t in tables.items()},
            "answer": {n: t["answer"] for n, t in tables.items()},
            "status": self.captions.status.text,
            "table_spans": {n: x_span(t) for n, t in self.tables.tables.items()},
        }

    # ---- playing --------------------------------------------------------------------------

    @property
    def duration(self) -> float:
        """Seconds of video so far (the scene's clock)."""
        return self.scene.clock

    def timing(self, spec: BeatSpec) -> tuple[float, float]:
        run_time, first, later = KINDS[spec.kind].timing
        if spec.kind == MONTAGE:  # made for the teaser: its timing is the teaser's already
            return run_time, first if spec.first else later
        return self.scaled(run_time, first if spec.first else later)

    def scaled(self, run_time: float, hold: float) -> tuple[float, float]:
        """(run_time, hold) for this cut: the teaser's are shorter."""
        if self.cut == "teaser":
            return run_time * TEASER_RUN, hold * TEASER_HOLD
        return run_time, hold

    def new_beat(self) -> Beat:
        beat = Beat(self.overlay)
        self._leave_intro(beat)
        return beat

    def play(self, beat: Beat, run_time: float, hold: float, shot=None) -> None:
        """Play a built beat through the scene's timeline: inside the scene's `shot` (the
        shot's line is spoken over it), or with the line a beat kind queued (spoken from its
        start: the beat lasts at least as long as the speech), or silently."""
        anims = beat.animations()
        kind_, main = self._playing
        line, self._line = self._line, None
        self.beat_times.append((round(self.duration, 4), kind_, main,
                                line or (shot.line if shot is not None else "")))
        self.n_plays += (1 if anims else 0) + (1 if hold > 0 else 0)
        if shot is not None:
            self._under(shot, anims, run_time, hold, beat)
        elif line:
            self.scene.shot(None, "", lambda s: self._under(s, anims, run_time, hold, beat),
                            line=line)
        else:
            self.scene._beat(anims, run_time, hold, done=beat.finish)

    @staticmethod
    def _under(shot, anims: list, run_time: float, hold: float, beat: Beat) -> None:
        """A beat under a spoken line (its animations never outlast the speech)."""
        shot.show(anims, run_time)
        beat.finish()
        shot.hold(hold)

    def say(self, beat: Beat, caption: str, detail: str = "") -> None:
        """The caption lines on screen (the dense account: fields, pages, numbers); they are
        for reading when paused, not spoken (see `queue_line`)."""
        beat.window = W_TEXT
        self.captions.say(caption, detail, beat)  # each line cut to its room

    @property
    def snapshots(self) -> list[dict]:
        """The scene's snapshots: one per event applied (and any the scene took itself)."""
        return self.scene.snapshots

    @property
    def captions_shown(self) -> list[str]:
        """Every caption shown, the replay's and the scene's shots', in order."""
        return [c for c, _ in self.captions.lines.said]

    @property
    def details_shown(self) -> list[str]:
        return [d for _, d in self.captions.lines.said]

    def queue_line(self, text: str, once: str | None = None) -> bool:
        """What the narrator says over the next beat played (one line a beat: a second
        call joins the first). With `once`, only the first time that key is spoken. Beat kinds
        in `quiet` say nothing (a scene that tells its own story around them)."""
        if self._playing[0] in self.quiet:
            return False
        if once is not None:
            if once in self.told:
                return False
            self.told.add(once)
        self._line = f"{self._line} {text}" if self._line else text
        return True

    def first(self, key: str) -> bool:
        """True the first time `key` is asked (what the narrator has not explained yet)."""
        if key in self.told:
            return False
        self.told.add(key)
        return True

    def show_code(self, spec: BeatSpec | str, code: Anchor, event: int,
                  where=("code", "returned")) -> None:
        """Show the engine function of anchor `code` (one its beat kind's registry entry
        lists) as it ran by `event`, marking the anchor's line (the first of its fragments on
        a line that ran)."""
        name = spec if isinstance(spec, str) else spec.kind
        if code not in KINDS[name].code:
            raise ValueError(f"beat kind {name!r} does not list anchor {code.name!r}")
        frame = find(self.events[event], code.fn, where)
        if frame is None:
            return  # a trace recorded without line tracing: no panel rather than a wrong one
        line = self.effect_line(frame, code)
        frame = {**frame, "line": line if line is not None else frame["line"]}
        info = self.code.show(frame)
        self.panels.append({**info, "event": event, "frame": frame, "kind": name})

    def effect_line(self, frame: dict, code: Anchor) -> int | None:
        """The absolute line of the anchor's first effect fragment found on a line that ran."""
        lst = self.code.listing(frame["file"], frame["fn"])
        return marked_line(code, lst.source, lst.start, set(frame["ran"]) | {frame["line"]})

    def box(self, beat: Beat, page: int, window, color=theme.ACCENT) -> None:
        f = self.pool.frames[page]
        mark = Rectangle(width=f.w + 0.12, height=f.box.height + 0.12, stroke_color=color,
                         stroke_width=4, fill_opacity=0)
        mark.move_to(f.box)
        beat.window = window
        beat.pulse(mark)

    # ---- the API scenes drive -------------------------------------------------------------

    def run(self, construct: bool = True) -> None:
        """Construction, then every beat (a scene with beats of its own steers a StoryReplay:
        replay/steered.py)."""
        if construct:
            self.construct_cache()
        for spec in self.beats:
            self.play_beat(spec)

    def play_beat(self, spec: BeatSpec) -> None:
        """Play one planned beat (a Manim section starts where the step changes)."""
        step = self.events[spec.events[0]].step
        if spec.steps is not None and spec.steps[1] > spec.steps[0]:
            section = f"steps {spec.steps[0]}-{spec.steps[1]}"
        else:
            section = f"step {step}"
        if section != self._section:
            self.section(section)
        self._playing = (spec.kind, spec.main)
        KINDS[spec.kind].animate(self, spec)

    def section(self, name: str) -> None:
        """Start a Manim section (a chapter of the scene: --save_sections cuts clips here)."""
        self._section = name
        self.scene.chapter(name)

    def final_state(self) -> dict | None:
        """The state shown after the last applied event."""
        return self.prev_state

    # ---- construction ---------------------------------------------------------------------

    def construct_cache(self) -> None:
        """The construction beats: the PagedCache call, its frames, its bits and refcounts."""
        self.section("construction")
        geo, lay = self.geo, self.layout
        init = next((i for i, ev in enumerate(self.events) if ev.phase == StepPhase.INIT), None)
        self._playing = (CONSTRUCT, init)
        atlas = Atlas.get(theme.FS_BODY)
        args = (f"n_layers={geo['n_layers']}, n_pages={geo['n_pages']}, "
                f"page_size={geo['page_size']}, n_kv_heads={geo['n_kv_heads']}, "
                f"head_dim={geo['head_dim']},")
        shape = [geo["n_layers"], geo["n_pages"], geo["page_size"], geo["n_kv_heads"],
                 geo["head_dim"]]
        size = geo.get("k_cache_bytes")
        lines = [
            [("cache = PagedCache(", theme.TEXT), (args, theme.ACCENT)],
            [(" " * 19, theme.TEXT), (f"device={geo.get('device')!s}, dtype={geo.get('dtype')}",
                                      theme.ACCENT), (")", theme.TEXT)],
            [("k_cache, v_cache: [n_layers, n_pages, page_size, n_kv_heads, head_dim]", theme.DIM)],
            [("                = ", theme.DIM), (str(shape), theme.TEXT)] + (
                [(f"   ({size / 1024:g} KiB each in {geo.get('dtype')})", theme.DIM)]
                if size else []),
        ]
        intro = VGroup()
        for k, segs in enumerate(lines):
            line = atlas.line(segs)
            line.move_to([lay.left + 0.1, lay.tables_top - 0.35 - k * 0.34, 0], aligned_edge=LEFT)
            intro.add(line)
        teaser = self.cut == "teaser"
        run_time, hold, _ = KINDS[CONSTRUCT].timing

        beat = Beat(self.overlay)
        self.say(beat, "construction: one PagedCache holds the K/V of every request",
                 f"{geo['n_pages']} pages x {geo['page_size']} slots, shared by all requests; "
                 "pages are handed out one at a time")
        if not teaser:
            self.queue_line("Every token a model reads leaves a key and a value behind, in every "
                       "layer. That is the KV cache.")
        beat.window = (0.2, 0.8)
        beat.appear(self.base, intro)
        # The recorder traces the constructor: the first event lists the function that builds
        # the storage shape (anchor store.shape) among the calls that finished, with the lines
        # it ran. (A trace recorded without line tracing has no such call.)
        if init is not None:
            try:
                source_of(STORE.file, STORE.fn)
            except TraceFormatError:
                pass  # a trace from another tree: no panel rather than a wrong one
            else:
                self.show_code(CONSTRUCT, STORE, init, where=("returned",))
        if not teaser:
            self.play(beat, *self.scaled(run_time, hold))
            self.intro = intro  # fades with the first beat after construction
            beat = Beat(self.overlay)
        else:
            self.intro = intro
        n = len(self.pool.frames)
        for k, f in enumerate(self.pool.frames):
            beat.window = (0.5 * k / n, 0.5 * k / n + 0.5)
            beat.appear(self.pool, f)
        beat.window = (0.3, 1.0)
        beat.appear(self.base, self.grid)
        row = lay.rows[0]
        frames_row = VGroup(*[self.pool.frames[p].box for p in row.pages])
        brace = Brace(frames_row, DOWN, buff=0.05, color=theme.DIM)
        label = theme.text(f"each frame holds page_size = {geo['page_size']} KV slots "
                           "(one per token position)", theme.FS_BODY, theme.TEXT)
        label.next_to(brace, DOWN, buff=0.06)
        brace_group = VGroup(brace, label)
        if not teaser:
            beat.window = (0.6, 1.0)
            beat.appear(self.overlay, brace_group)
            self.say(beat, f"{geo['n_pages']} page frames, numbered 0..{geo['n_pages'] - 1}",
                     "a page is the unit of allocation; a request's K/V live in whole pages")
            self.queue_line(f"Here it lives in one pool: {geo['n_pages']} pages of "
                       f"{geo['page_size']} token slots each.")
            self.play(beat, *self.scaled(1.2, 1.6))
            beat = Beat(self.overlay)
            beat.window = (0.0, 0.5)
            beat.vanish(self.overlay, brace_group)
        beat.window = (0.3, 0.9)
        cells = self.bits.static()
        beat.appear(self.cells_layer, cells)
        if init is not None:
            self.apply(init, beat, staged=False)
        detail = ""
        if init is not None:
            st = self.events[init].state
            mask, n = st["free_mask"], self.n_pages
            detail = (f"free_mask = {mask}: bits {mask_bits(mask, n)} (page 0 first); "
                      f"refs = {st['refs']}" if n <= 16 else f"free_mask = {mask}")
        if teaser:
            self.say(beat, f"one PagedCache: {geo['n_pages']} pages of {geo['page_size']} "
                           "slots, a free bit and a refcount each", detail)
        else:
            self.say(beat, "free bitmask (bit i under page i, 1 = free) and refcounts", detail)
            self.queue_line("Under each page, a bit says if it is free, and a count says how many "
                       "requests hold it.")
        self.play(beat, *self.scaled(1.0, 1.8))

    def _leave_intro(self, beat: Beat) -> None:
        if self.intro is not None:
            beat.window = (0.0, 0.4)
            beat.vanish(self.base, self.intro)
            self.intro = None
