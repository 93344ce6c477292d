"""The replay driver: a recorded trace, event by event, turned into beats of animation.

Nothing shown is made up: every page id, bit, refcount, table row, length and count on screen is
read from the trace (`geometry`, event fields, and each event's `state`), and every code panel is
the real source of a function the trace names, with the lines the trace says ran highlighted.

How events map to the screen
----------------------------
Each event is applied to the kit *at once* - header (step, phase), status line, free bits and
refcounts, frames, page tables - and a snapshot of what the kit then shows is stored in
`Replay.snapshots` (one per event, in order), so tests compare the screen with the trace after
every event. Events are grouped into beats; a beat becomes one `play()` (plus a `wait()` to read):

  phase                 folded into the next beat (the phase pills and step number move with it);
                        the first cleanup with nothing to free gets its own beat
  arrive, admit, wait   one beat each (admit: `pages_for` with the real numbers; the first admit
                        also shows `Scheduler._admit`)
  alloc, share          one beat each: code (`_take`, or `Scheduler._grow` when a decode step
                        grows a table, or `inc_ref`), the bit clears, refs go up, the frame takes
                        the task's colour, the table grows a row and an arrow
  evict (+ its alloc)   one beat: the LRU cached page changes hands
  free (+ its cache)    one beat: refs drop; at 0 the bit comes back (or the page stays cached)
  record, finish,       one beat each
  retire, preempt
  write, gather         prefill: one beat each (the first write is preceded by `CacheView`);
                        decode: write + gather + tokens of a step make one "forward" beat
  tokens                folded into the beat before it
  runs of plain steps   (decode steps with nothing but phase/write/gather/tokens) one beat for
                        the whole run, captioned "decode steps a-b compressed"; every event in
                        it is still applied and snapshotted

Workload selection: the scene replays `ASTRAI_WORKLOAD` if set - a shipped workload name
(`seed`, `prefix`, `batching`, ...), a path to a workload `.toml`, or a saved trace `.json`
(`python -m astrai.trace NAME -o trace.json`) - else `seed`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from manim import DOWN, LEFT, Brace, Rectangle, VGroup

from astrai.errors import TraceFormatError
from astrai.trace import Trace, load_trace, record
from astrai.trace.format import require_drawable
from astrai.trace.recorder import source_digests
from astrai.trace.text import mask_bits
from scenes import theme
from scenes.kit.anim import Beat
from scenes.kit.bitmask import BitRows
from scenes.kit.captions import PHASES, Captions, Header
from scenes.kit.code import CodePanel, source_of
from scenes.kit.glyphs import Atlas
from scenes.kit.layout import make_layout
from scenes.kit.pool import PagePool
from scenes.kit.tables import PageTables, plan_tables

DTYPE_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}
PLAIN = {"phase", "write", "gather", "tokens"}

# Stages inside a beat (fractions of its run time): words first, then the mask, then the frames,
# then the tables - the order the code changes them in.
W_TEXT, W_BITS, W_POOL, W_TABLES = (0.0, 0.35), (0.2, 0.6), (0.3, 0.75), (0.5, 1.0)

# kind: (run_time, hold the first time, hold later)
TIMING = {
    "cleanup-idle": (0.7, 1.4, 0.4),
    "arrive": (0.7, 1.2, 0.4),
    "admit": (0.7, 1.3, 0.4),
    "wait": (0.8, 1.5, 0.6),
    "alloc": (1.0, 1.4, 0.3),
    "grow": (1.1, 1.8, 0.6),
    "share": (1.0, 1.5, 0.35),
    "evict": (1.1, 1.7, 0.5),
    "free": (0.8, 1.3, 0.2),
    "cache": (0.8, 1.3, 0.25),
    "record": (0.7, 1.3, 0.35),
    "write": (1.2, 1.5, 0.35),
    "gather": (1.2, 1.5, 0.25),
    "forward": (0.9, 1.3, 0.25),
    "finish": (0.6, 1.0, 0.35),
    "retire": (0.8, 1.0, 0.35),
    "preempt": (1.1, 2.0, 0.8),
    "run": (1.4, 0.8, 0.5),
    "tail": (0.5, 0.8, 0.8),
}


def load(spec: str | None = None) -> Trace:
    """The trace to replay: `spec`, else $ASTRAI_WORKLOAD, else 'seed' (see module doc)."""
    spec = spec or os.environ.get("ASTRAI_WORKLOAD", "").strip() or "seed"
    if spec.endswith(".json"):
        trace = load_trace(spec)
        stale = sorted(f for f, digest in trace.source.items()
                       if source_digests().get(f) != digest)
        if stale:
            # Code panels show today's source at the trace's line numbers: refuse, don't lie.
            raise TraceFormatError(
                f"{spec} was recorded from another version of {', '.join(stale)}; "
                f"record it again (python -m astrai.trace WORKLOAD -o {spec})"
            )
        return trace
    return record(spec)


# ---- planning --------------------------------------------------------------------------------


@dataclass
class BeatSpec:
    kind: str
    events: list[int]  # every event this beat applies, in trace order
    main: int | None = None  # the event the beat is about
    steps: tuple[int, int] | None = None  # first/last step of a compressed run
    first: bool = False  # first beat of its kind: hold longer, explain more


def _repeat_waits(events: list[dict]) -> set[int]:
    """Wait events that say the same as the wait before them (same task, same numbers)."""
    same, last = set(), None
    for i, ev in enumerate(events):
        if ev["kind"] == "wait":
            key = (ev["task"], ev["needed"], ev["available"])
            if key == last:
                same.add(i)
            last = key
        elif ev["kind"] in ("admit", "preempt"):
            last = None
    return same


def _is_plain(events: list[dict], idx: list[int], repeats: set[int] = frozenset()) -> bool:
    return all(
        (events[i]["kind"] in PLAIN or i in repeats)
        and (events[i]["kind"] not in ("write", "gather") or events[i]["phase"] == "decode")
        for i in idx
    )


def plan_beats(events: list[dict]) -> list[BeatSpec]:
    """Group the trace's events (all but the init phase) into beats; see the module doc."""
    groups: list[tuple[int, list[int]]] = []
    for i, ev in enumerate(events):
        if ev["phase"] == "init":
            continue
        if groups and groups[-1][0] == ev["step"]:
            groups[-1][1].append(i)
        else:
            groups.append((ev["step"], [i]))

    beats: list[BeatSpec] = []
    pending: list[int] = []
    cleanup_seen = False
    repeats = _repeat_waits(events)
    g = 0
    while g < len(groups):
        step, idx = groups[g]
        if _is_plain(events, idx, repeats) and any(events[i]["kind"] == "write" for i in idx):
            run: list[int] = []
            first = last = step
            while (g < len(groups) and _is_plain(events, groups[g][1], repeats)
                   and any(events[i]["kind"] == "write" for i in groups[g][1])):
                run += groups[g][1]
                last = groups[g][0]
                g += 1
            beats.append(BeatSpec("run", pending + run, None, (first, last)))
            pending = []
            continue
        j = 0
        while j < len(idx):
            i = idx[j]
            ev = events[i]
            kind = ev["kind"]
            nxt = events[idx[j + 1]] if j + 1 < len(idx) else None
            if kind == "phase":
                pending.append(i)
                if ev["phase"] == "cleanup" and not cleanup_seen:
                    cleanup_seen = True
                    if nxt is not None and nxt["kind"] == "phase":
                        beats.append(BeatSpec("cleanup-idle", pending, i))
                        pending = []
                j += 1
                continue
            if kind == "tokens":
                if beats and not pending:
                    beats[-1].events.append(i)
                else:
                    pending.append(i)
                j += 1
                continue
            group = [i]
            if kind == "write" and ev["phase"] == "decode":
                kind = "forward"
                while j + 1 < len(idx) and events[idx[j + 1]]["kind"] in ("gather", "tokens"):
                    j += 1
                    group.append(idx[j])
            elif kind == "free" and nxt is not None and nxt["kind"] == "cache" \
                    and nxt["page"] == ev["page"]:
                j += 1
                group.append(idx[j])
            elif kind == "evict" and nxt is not None and nxt["kind"] == "alloc" \
                    and nxt["page"] == ev["page"]:
                j += 1
                group.append(idx[j])
            elif kind == "alloc" and ev["phase"] == "decode":
                kind = "grow"
            beats.append(BeatSpec(kind, pending + group, i))
            pending = []
            j += 1
        g += 1
    if pending:
        beats.append(BeatSpec("tail", pending, None))
    seen: set[str] = set()
    for b in beats:
        b.first = b.kind not in seen
        seen.add(b.kind)
    return beats


# ---- words -----------------------------------------------------------------------------------


def _fit(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _lowest(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def _find(ev: dict, fn: str, where=("code", "returned")) -> dict | None:
    """The engine frame named `fn` in the event's running stack or its finished calls."""
    for key in where:
        frames = ev.get(key, [])
        if key == "returned":
            frames = list(reversed(frames))  # the most recent call of that name
        for frame in frames:
            if frame["fn"] == fn:
                return frame
    return None


def _runs(row: dict) -> str:
    return ", ".join(f"page {p} slots {s}-{s + n - 1}" if n > 1 else f"page {p} slot {s}"
                     for p, s, n in row["runs"])


# ---- the driver ------------------------------------------------------------------------------


class Replay:
    """Builds the kit on `scene`, then plays `trace` beat by beat (`run()`)."""

    def __init__(self, scene, trace: Trace):
        require_drawable(trace)  # before anything is built for its pages
        self.scene, self.trace = scene, trace
        self.events = trace.events
        self.geo = trace.geometry
        self.n_pages, self.page_size = self.geo["n_pages"], self.geo["page_size"]
        names = [ev["task"] for ev in self.events if ev["kind"] == "arrive"]
        self.palette = theme.Palette(names)
        most = max((len(t) for ev in self.events for t in ev["state"]["page_tables"].values()),
                   default=1)
        self.layout = make_layout(self.n_pages, table_rows=most)
        self.plan = plan_tables(self.events, self.layout)
        self.beats = plan_beats(self.events)
        self.snapshots: list[dict] = []
        self.panels: list[dict] = []  # every code panel shown: which frame, which rows
        self.captions_shown: list[str] = []
        self.prev_state: dict | None = None
        self.intro: VGroup | None = None
        self.duration = 0.0  # seconds of video the beats add up to
        self.beat_times: list[tuple[float, str, int | None]] = []  # (start, kind, main event)
        self.n_plays = 0
        self.state_only = bool(getattr(scene, "skip_animations", False))
        self._build()

    # ---- kit ----------------------------------------------------------------------------

    def _build(self) -> None:
        lay = self.layout
        name = self.trace.workload.get("name", "?")
        self.header = Header(lay, f"Paged KV cache · workload {name}")
        self.captions = Captions(lay)
        self.pool = PagePool(lay, self.page_size, self.palette)
        self.bits = BitRows(lay)
        self.tables = PageTables(lay, self.plan, self.page_size, self.palette)
        self.code = CodePanel(lay)
        self.grid = self.pool.grid()
        self.pool.remove(*self.pool.frames)  # they come in during construction
        cached = any(ev["state"]["cached"] for ev in self.events)
        self.base = VGroup(self.header.static(), self.code.bg, self.pool.legend(cached))
        self.overlay = VGroup()
        # Bit/ref cells: painted once with the static layer, unless the pool wraps (arrows to an
        # upper row pass behind the rows below, so the cells must be drawn over the arrows).
        self.cells_layer = self.base if len(self.layout.rows) == 1 else VGroup()
        self.layers = [self.base, VGroup(self.code), self.tables.arrows_layer, self.tables,
                       VGroup(self.cells_layer, self.pool, self.bits) if len(self.layout.rows) > 1
                       else VGroup(self.pool, self.bits),
                       VGroup(self.header, self.captions), self.overlay]
        self.scene.camera.background_color = theme.BG
        self.scene.add(*self.layers)

    # ---- applying events ----------------------------------------------------------------

    def apply(self, i: int, beat: Beat, staged: bool = True) -> None:
        ev = self.events[i]
        st = ev["state"]
        phase = ev["phase"] if ev["phase"] in PHASES else None
        beat.window = W_TEXT if staged else (0.0, 1.0)
        self.header.sync(ev["step"], phase, beat)
        self.captions.sync(st, self.n_pages, beat)
        beat.window = W_BITS if staged else (0.0, 1.0)
        self.bits.sync(st, beat)
        beat.window = W_POOL if staged else (0.0, 1.0)
        self.pool.sync(st, beat)
        beat.window = W_TABLES if staged else (0.0, 1.0)
        self.tables.sync(st, beat)
        self.snapshots.append(self.snapshot(i))
        self.prev_state = st

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
            "status": self.captions.status.text,
            "table_spans": {n: (t.get_left()[0], t.get_right()[0])
                            for n, t in self.tables.tables.items()},
        }

    # ---- playing ------------------------------------------------------------------------

    def play(self, beat: Beat, run_time: float, hold: float) -> None:
        anims = beat.animations()
        self.duration += (run_time if anims else 0.0) + max(hold, 0.0)
        self.n_plays += (1 if anims else 0) + (1 if hold > 0 else 0)
        if self.state_only:
            # Built with skip_animations=True (tests): manim would still paint a static frame
            # per play; only the end state matters, so finish the animations directly.
            for anim in anims:
                anim.begin()
                anim.finish()
            beat.finish()
            return
        if anims:
            self.scene.play(*anims, run_time=run_time)
        beat.finish()
        if hold > 0:
            self.scene.wait(hold)

    def say(self, beat: Beat, caption: str, detail: str = "") -> None:
        beat.window = W_TEXT
        self.captions.say(_fit(caption, 86), _fit(detail, 96), beat)
        self.captions_shown.append(caption)

    def show_code(self, frame: dict | None, event: int | None, note: str = "",
                  highlight: bool = True) -> None:
        if frame is None:
            return
        info = self.code.show(frame, note, highlight)
        self.panels.append({**info, "event": event, "frame": frame})

    def box(self, beat: Beat, page: int, window, color=theme.ACCENT) -> None:
        f = self.pool.frames[page]
        mark = Rectangle(width=f.w + 0.12, height=f.box.height + 0.12, stroke_color=color,
                         stroke_width=4, fill_opacity=0)
        mark.move_to(f.box)
        beat.window = window
        beat.pulse(mark)

    def run(self) -> None:
        self.construct_cache()
        for spec in self.beats:
            self.beat_times.append((round(self.duration, 2), spec.kind, spec.main))
            getattr(self, "beat_" + spec.kind.replace("-", "_"), self.beat_generic)(spec)

    def timing(self, spec: BeatSpec) -> tuple[float, float]:
        run_time, first, later = TIMING.get(spec.kind, (0.8, 1.0, 0.4))
        return run_time, first if spec.first else later

    def new_beat(self) -> Beat:
        beat = Beat(self.overlay)
        self._leave_intro(beat)
        return beat

    def apply_all(self, spec: BeatSpec, beat: Beat, staged: bool = True, upto=None) -> None:
        for i in spec.events:
            if upto is not None and i == upto:
                break
            self.apply(i, beat, staged)

    # ---- construction -------------------------------------------------------------------

    def construct_cache(self) -> None:
        geo, lay = self.geo, self.layout
        init = next((i for i, ev in enumerate(self.events) if ev["phase"] == "init"), None)
        atlas = Atlas.get(theme.FS_BODY)
        args = (f"n_layers={geo['n_layers']}, n_pages={geo['n_pages']}, "
                f"page_size={geo['page_size']}, n_kv_heads={geo['n_kv_heads']}, "
                f"head_dim={geo['head_dim']},")
        shape = [geo["n_layers"], geo["n_pages"], geo["page_size"], geo["n_kv_heads"],
                 geo["head_dim"]]
        n_bytes = DTYPE_BYTES.get(geo.get("dtype", ""), 0)
        size = 1
        for d in shape:
            size *= d
        lines = [
            [("cache = PagedCache(", theme.TEXT), (args, theme.ACCENT)],
            [(" " * 19, theme.TEXT), (f"device={geo.get('device')!s}, dtype={geo.get('dtype')}",
                                      theme.ACCENT), (")", theme.TEXT)],
            [("k_cache, v_cache: [n_layers, n_pages, page_size, n_kv_heads, head_dim]", theme.DIM)],
            [("                = ", theme.DIM), (str(shape), theme.TEXT)] + (
                [(f"   ({size * n_bytes / 1024:g} KiB each in {geo.get('dtype')})", theme.DIM)]
                if n_bytes else []),
        ]
        intro = VGroup()
        for k, segs in enumerate(lines):
            line = atlas.line(segs)
            line.move_to([lay.left + 0.1, lay.tables_top - 0.35 - k * 0.34, 0], aligned_edge=LEFT)
            intro.add(line)

        beat = Beat(self.overlay)
        self.say(beat, "construction: one PagedCache holds the K/V of every request",
                 f"{geo['n_pages']} pages x {geo['page_size']} slots, shared by all requests; "
                 "pages are handed out one at a time")
        beat.window = (0.2, 0.8)
        beat.appear(self.base, intro)
        # The recorder traces the constructor: the first event lists PagedCache.__init__ among
        # the calls that finished, with the lines it ran. The panel opens at the line that
        # builds the storage shape. (A trace recorded without line tracing has no such call.)
        ctor = _find(self.events[init], "PagedCache.__init__", ("returned",)) \
            if init is not None else None
        if ctor is not None:
            try:
                src, start = source_of(ctor["file"], "PagedCache.__init__")
            except TraceFormatError:
                src = None  # a trace from another tree: no panel rather than a wrong one
            if src is not None:
                at = next((k for k, s in enumerate(src) if "shape = (" in s), 0)
                self.show_code({**ctor, "line": start + at}, init)
        self.play(beat, 1.0, 1.6)
        self.intro = intro  # fades with the first beat after construction

        beat = Beat(self.overlay)
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
        beat.window = (0.6, 1.0)
        brace_group = VGroup(brace, label)
        beat.appear(self.overlay, brace_group)
        self.say(beat, f"{geo['n_pages']} page frames, numbered 0..{geo['n_pages'] - 1}",
                 "a page is the unit of allocation; a request's K/V live in whole pages")
        self.play(beat, 1.2, 1.6)

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
            st = self.events[init]["state"]
            mask, n = st["free_mask"], self.n_pages
            detail = (f"free_mask = {mask}: bits {mask_bits(mask, n)} (page 0 first); "
                      f"refs = {st['refs']}" if n <= 16 else
                      f"free_mask = {mask}: {bin(mask).count('1')} of {n} bits set")
        self.say(beat, "free bitmask (bit i under page i, 1 = free) and refcounts", detail)
        self.play(beat, 1.0, 1.8)

    # ---- beats --------------------------------------------------------------------------

    def _leave_intro(self, beat: Beat) -> None:
        if self.intro is not None:
            beat.window = (0.0, 0.4)
            beat.vanish(self.base, self.intro)
            self.intro = None

    def beat_generic(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        ev = self.events[spec.main] if spec.main is not None else None
        if ev is not None:
            self.say(beat, f"{ev['kind']}: {ev.get('task', '')}")
            self.show_code(ev["code"][0] if ev["code"] else None, spec.main)
        self.play(beat, *self.timing(spec))

    def beat_tail(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        st = self.events[spec.events[-1]]["state"]
        outs = ", ".join(f"{n}: {k}" for n, k in st["outputs"].items())
        free = bin(st["free_mask"]).count("1")
        kept = f", {len(st['cached'])} cached" if st["cached"] else ""
        self.say(beat, f"all requests done: {free} of {self.n_pages} pages free{kept}",
                 f"tokens generated - {outs}")
        self.play(beat, *self.timing(spec))

    def beat_cleanup_idle(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        self.say(beat, f"step {ev['step']}, cleanup: free the pages of finished requests",
                 "nothing has finished yet: no page to free")
        self.show_code(_find(ev, "Scheduler.step"), spec.main)
        self.play(beat, *self.timing(spec))

    def beat_arrive(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        queue = ev["state"]["queue"]
        self.say(beat, f"{ev['task']} arrives: prompt of {ev['prompt_len']} tokens, "
                       f"up to {ev['max_new_tokens']} new",
                 f"submit() queues it: waiting = {queue}")
        self.show_code(_find(ev, "Scheduler.submit"), spec.main)
        self.play(beat, *self.timing(spec))

    def beat_admit(self, spec: BeatSpec) -> None:
        ev = self.events[spec.main]
        st = ev["state"]
        n, ps, need, hits = ev["n_tokens"], self.page_size, ev["pages_needed"], ev["hits"]
        available = bin(st["free_mask"]).count("1") + len(st["cached"])
        if spec.first:
            beat = self.new_beat()
            self.apply_all(spec, beat)
            self.say(beat, f"refill: admit {ev['task']} if the pool can hold its prompt",
                     f"{need - len(hits)} page(s) needed, {available} available "
                     f"(free {bin(st['free_mask']).count('1')} + cached {len(st['cached'])})")
            self.show_code(_find(ev, "Scheduler._admit"), spec.main)
            self.play(beat, 0.7, 1.6)
            beat = self.new_beat()
        else:
            beat = self.new_beat()
            self.apply_all(spec, beat)
        hit_words = f"; prefix hit: pages {hits} are shared" if hits else ""
        self.say(beat, f"{ev['task']}: pages_for({n}) = ceil({n} / {ps}) = {need} pages"
                       f"{hit_words}",
                 f"(n_tokens + page_size - 1) // page_size = ({n} + {ps - 1}) // {ps} = {need}; "
                 f"to allocate: {need - len(hits)}")
        frame = _find(ev, "pages_for", ("returned",)) or _find(ev, "Scheduler._admit")
        self.show_code(frame, spec.main)
        self.play(beat, *self.timing(spec))

    def beat_wait(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        self.say(beat, f"{ev['task']} waits: needs {ev['needed']} pages, "
                       f"{ev['available']} available",
                 "the head of the queue waits; nobody skips ahead of it")
        self.show_code(_find(ev, "Scheduler._admit"), spec.main)
        self.play(beat, *self.timing(spec))

    def _alloc_words(self, ev: dict, prev: dict | None) -> str:
        page = ev["page"]
        if prev is None:
            return f"refs[{page}] = 1"
        mask = prev["free_mask"]
        bits = mask_bits(mask, self.n_pages)
        if mask and _lowest(mask) == page:
            shown = f"free bits {bits}: " if self.n_pages <= 24 else ""
            return f"{shown}lowest set bit is page {page}; clear it, refs[{page}] = 1"
        if not mask:
            return f"no free bit: the least recently used cached page {page} is evicted"
        return f"page {page}; refs[{page}] = 1"

    def beat_alloc(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        prev = self.prev_state
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        self.say(beat, f"alloc -> page {ev['page']} for {ev['task']}[{ev['logical']}]",
                 self._alloc_words(ev, prev))
        self.show_code(_find(ev, "PagedCache._take", ("returned",)) or ev["code"][0], spec.main)
        self.box(beat, ev["page"], W_POOL)
        self.play(beat, *self.timing(spec))

    def beat_grow(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        prev = self.prev_state
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        st, name, ps = ev["state"], ev["task"], self.page_size
        length = st["lengths"][name]
        held = len(st["page_tables"][name]) - 1
        low = prev is not None and prev["free_mask"] and _lowest(prev["free_mask"]) == ev["page"]
        self.say(beat, f"{name} is full: position {length} needs pages_for({length + 1}) = "
                       f"{-(-(length + 1) // ps)} > {held} pages: alloc page {ev['page']}",
                 f"{held} pages hold {held * ps} tokens, {held + 1} hold {(held + 1) * ps}; "
                 + (f"page {ev['page']} is the lowest free bit" if low else
                    self._alloc_words(ev, prev)))
        self.show_code(_find(ev, "Scheduler._grow") or ev["code"][0], spec.main)
        self.box(beat, ev["page"], W_POOL)
        self.play(beat, *self.timing(spec))

    def beat_share(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        refs = ev["state"]["refs"][ev["page"]]
        if ev["revived"]:
            words = (f"revive cached page {ev['page']} for {ev['task']}[{ev['logical']}]",
                     f"a prefix hit on a cached page: out of the LRU, refs 0 -> {refs}")
        else:
            words = (f"share page {ev['page']} with {ev['task']}[{ev['logical']}]",
                     f"a prefix hit: inc_ref, refs[{ev['page']}] = {refs}; no K/V recomputed")
        self.say(beat, *words)
        self.show_code(_find(ev, "PagedCache.inc_ref") or ev["code"][0], spec.main)
        self.box(beat, ev["page"], W_POOL)
        self.play(beat, *self.timing(spec))

    def beat_evict(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        prev = self.prev_state
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        alloc = self.events[spec.events[-1]]
        lru = prev["cached"] if prev else []
        to = f" -> {alloc['task']}[{alloc['logical']}]" if alloc["kind"] == "alloc" else ""
        self.say(beat, f"no free page: evict cached page {ev['page']}{to}",
                 f"cached pages, least recently used first: {lru}; the first one goes")
        frame = (_find(alloc, "PagedCache._evict_lru", ("returned",))
                 or _find(ev, "PagedCache._evict_lru", ("returned",)) or ev["code"][0])
        self.show_code(frame, spec.main)
        self.box(beat, ev["page"], W_POOL, theme.CACHED)
        self.play(beat, *self.timing(spec))

    def beat_free(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        page, refs = ev["page"], ev["refs"]
        cached = any(self.events[i]["kind"] == "cache" for i in spec.events)
        if refs > 0:
            end = f"refs {refs + 1} -> {refs}: still in use"
        elif cached:
            end = "refs 0, but it holds a recorded prefix: kept, cached (LRU)"
        else:
            end = f"refs 1 -> 0: bit {page} set again, the page is free"
        self.say(beat, f"free page {page} of {ev['task']}: {end}",
                 f"_release drops {ev['task']}'s pages last first; free() decrements refs[{page}]")
        self.show_code(_find(ev, "PagedCache.free") or ev["code"][0], spec.main)
        self.box(beat, page, W_POOL, theme.CACHED if cached else theme.ACCENT)
        self.play(beat, *self.timing(spec))

    def beat_cache(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        self.say(beat, f"page {ev['page']} stays cached (refs 0, recorded prefix)",
                 f"cached, least recently used first: {ev['state']['cached']}")
        self.show_code(_find(ev, "PagedCache.free") or ev["code"][0], spec.main)
        self.box(beat, ev["page"], W_POOL, theme.CACHED)
        self.play(beat, *self.timing(spec))

    def beat_record(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        self.say(beat, f"record_prefix: {ev['task']}'s full prompt pages {ev['pages']} recorded",
                 "each page's key chains the previous page's: a later prompt can share them")
        self.show_code(_find(ev, "PagedCache.record_prefix") or ev["code"][0], spec.main)
        for k, p in enumerate(ev["pages"]):
            self.box(beat, p, (0.2 + 0.5 * k / max(len(ev["pages"]), 1), 0.7 + 0.3 * k /
                               max(len(ev["pages"]), 1)), theme.CACHED)
        self.play(beat, *self.timing(spec))

    def beat_write(self, spec: BeatSpec) -> None:
        ev = self.events[spec.main]
        if spec.first:
            beat = self.new_beat()
            self.apply_all(spec, beat, upto=spec.main)
            rows = ev["rows"]
            table = [ev["state"]["page_tables"].get(r["task"], []) for r in rows]
            width = max((len(t) for t in table), default=0)
            padded = [t + [-1] * (width - len(t)) for t in table]
            total = max(r["start"] + r["n"] for r in rows)
            self.say(beat, f"CacheView(cache, page_table={padded}, total_len={total})",
                     "one view per forward: the batch's page tables and length, shared by "
                     "every layer")
            self.show_code(_find(ev, "CacheView.__init__", ("returned",)), spec.main)
            self.play(beat, 0.7, 1.8)
            rest = [i for i in spec.events if i >= spec.main]
        else:
            rest = spec.events
        beat = self.new_beat()
        for i in rest:
            self.apply(i, beat)
        rows = ev["rows"]
        # Each row's pages fill in the order the positions land in them.
        for r in rows:
            n = max(len(r["runs"]), 1)
            for k, (page, _, _) in enumerate(r["runs"]):
                t0 = W_POOL[0] + (1.0 - W_POOL[0]) * k / n
                beat.retime(self.pool.frames[page].bar, (t0, t0 + (1.0 - W_POOL[0]) / n))
        head = "; ".join(f"{r['task']} positions {r['start']}..{r['start'] + r['n'] - 1}"
                         for r in rows)
        self.say(beat, f"write K/V: {head}",
                 "; ".join(f"{r['task']}: {_runs(r)}" for r in rows))
        self.show_code(_find(ev, "CacheView.write") or ev["code"][0], spec.main)
        self.play(beat, *self.timing(spec))

    def beat_gather(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        rows, total = ev["rows"], ev["total_len"]
        order = "; ".join(f"{r['task']} reads pages {' -> '.join(map(str, r['pages']))}"
                          for r in rows)
        shape = [len(rows), total, self.geo["n_kv_heads"], self.geo["head_dim"]]
        self.say(beat, f"gather(total_len={total}): {order}",
                 f"whole pages in logical order (page-table order), cut to {total}: "
                 f"K, V = {shape}")
        self.show_code(_find(ev, "PagedCache.gather_pages") or ev["code"][0], spec.main)
        longest = max((len(r["pages"]) for r in rows), default=1)
        for r in rows:
            for k, p in enumerate(r["pages"]):
                t0 = 0.15 + 0.7 * k / longest
                self.box(beat, p, (t0, min(1.0, t0 + 0.7 / longest + 0.15)),
                         self.palette.color(r["task"]))
        self.play(beat, *self.timing(spec))

    def beat_forward(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        gather = next((self.events[i] for i in spec.events if self.events[i]["kind"] == "gather"),
                      None)
        parts = "; ".join(f"{r['task']} pos {r['start']} -> {_runs(r)}" for r in ev["rows"])
        self.say(beat, f"decode step {ev['step']}: one token per running request",
                 f"write {parts}" + (f"; gather len {gather['total_len']}" if gather else ""))
        self.show_code(_find(ev, "CacheView.write") or ev["code"][0], spec.main)
        self.play(beat, *self.timing(spec))

    def beat_run(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        before = self.prev_state
        for i in spec.events:
            self.apply(i, beat, staged=False)
        a, b = spec.steps
        writes = [self.events[i] for i in spec.events if self.events[i]["kind"] == "write"]
        names = sorted({r["task"] for w in writes for r in w["rows"]},
                       key=list(self.palette.names()).index)
        after = self.events[spec.events[-1]]["state"]
        was = before["lengths"] if before else {}
        grew = ", ".join(f"{n} {was.get(n, '?')}->{after['lengths'].get(n, '?')}" for n in names)
        steps = f"decode steps {a}-{b} compressed" if b > a else f"decode step {a}"
        per_step = sorted({r["n"] for w in writes for r in w["rows"]})
        each = (f"{per_step[0]} token" if per_step == [1] else
                f"{'/'.join(map(str, per_step))} tokens")
        waits = [self.events[i] for i in spec.events if self.events[i]["kind"] == "wait"]
        still = (f"; {waits[-1]['task']} still waits ({waits[-1]['needed']} pages needed, "
                 f"{waits[-1]['available']} available)" if waits else "")
        self.say(beat, f"{steps}: {each} per request per step ({', '.join(names)})",
                 f"lengths {grew}; no page allocated or freed{still}")
        last = max((i for i in spec.events if self.events[i]["kind"] == "write"), default=None)
        if last is not None:
            ev = self.events[last]
            self.show_code(_find(ev, "CacheView.write") or ev["code"][0], last)
        run_time, hold = self.timing(spec)
        self.play(beat, run_time, hold)

    def beat_finish(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        self.say(beat, f"{ev['task']} finished: {ev['n_output']} tokens generated",
                 "its pages are freed by the next step's cleanup")
        self.show_code(_find(ev, "Scheduler._forward") or ev["code"][0], spec.main)
        self.play(beat, *self.timing(spec))

    def beat_retire(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        free = bin(ev["state"]["free_mask"]).count("1")
        self.say(beat, f"{ev['task']} retired: its page table is gone",
                 f"{free} of {self.n_pages} pages free now")
        self.show_code(_find(ev, "Scheduler._cleanup") or ev["code"][0], spec.main)
        self.play(beat, *self.timing(spec))

    def beat_preempt(self, spec: BeatSpec) -> None:
        beat = self.new_beat()
        self.apply_all(spec, beat)
        ev = self.events[spec.main]
        self.say(beat, f"pool dry: preempt {ev['task']} (the newest): pages freed, requeued",
                 f"waiting = {ev['state']['queue']}; its tokens are recomputed on readmission")
        self.show_code(_find(ev, "Scheduler._preempt") or ev["code"][0], spec.main)
        self.play(beat, *self.timing(spec))
