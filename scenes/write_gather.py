"""A storyboard scene: inside write and gather, slot by slot, and the attention they feed.

    manim -ql scenes/write_gather.py WriteGatherScene            # the write_gather workload
    ASTRAI_CUT=teaser manim -ql scenes/write_gather.py WriteGatherScene

Not a pool replay: it reads the tensors a run recorded with `capture=True` (see
astrai.trace.capture) - the flat slots the real `slot_index` call returned, the page index
`gather_pages` read, and layer 0's attention scores and softmax weights on a decode step - and
shows them slot by slot: a batched prefill with a padded row (write), a decode step whose page
table reads out of physical order (write, then gather), and the decoding token's attention over
the gathered keys, page by page.

Every slot, page, shape and number on screen is a field of the trace; the scene decides only
where to draw it. Tests build it state-only and compare `scene.snapshots` (what each beat shows,
read back from the mobjects) with values they compute from the page tables and the model.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
from manim import (
    DOWN,
    LEFT,
    RIGHT,
    UP,
    Arrow,
    DashedVMobject,
    FadeIn,
    FadeOut,
    GrowFromEdge,
    LaggedStart,
    Line,
    Rectangle,
    RoundedRectangle,
    VGroup,
    config,
)

from astrai.errors import TraceFormatError, WorkloadError
from astrai.trace import Trace, load_trace, recorded
from astrai.trace.events import Alloc, Arrive, Event, Free, Gather, Retire, Write
from astrai.trace.recorder import source_digests
from scenes.framework import theme
from scenes.framework.anchors import anchor, marked_line
from scenes.framework.kit.code import CodePanel, source_of
from scenes.framework.kit.glyphs import Atlas, Counter, GlyphText
from scenes.framework.kit.layout import make_layout
from scenes.framework.story import StoryScene

# The engine line that does what each beat shows: an entry of scenes/framework/anchors.py (found by
# its text, so the panel follows the source if it moves), never an observer call.
WORK = {
    "store": anchor("store.shape"),
    "slots": anchor("slots.flat_index"),
    "null": anchor("slots.null_page"),
    "write": anchor("write.index_copy"),
    "index": anchor("gather.index"),
    "select": anchor("gather.select"),
    "cut": anchor("gather.cut"),
    "grow": anchor("grow.alloc"),
    "attend": anchor("model.attend"),
}

# What fits the slot-level view (every slot drawn, every token a cell).
MAX_ROWS, MAX_TOKENS, MAX_SLOTS, MAX_KEYS = 3, 10, 28, 12


def work_line(key: str) -> int:
    """Absolute line number of the WORK line `key` in today's source."""
    a = WORK[key]
    line = marked_line(a, *source_of(a.file, a.fn))
    if line is None:
        raise LookupError(f"engine anchor {a.name}: {a.fn} no longer has its line")
    return line


# ---- the story, as data from the trace -------------------------------------------------------


@dataclass
class Step:
    """One forward's captured write and gather (and attention, on the decode step)."""

    step: int
    phase: str
    rows: list[str]  # row b of the batch is this request (from the write event)
    slots: dict
    write: dict
    gather: dict
    write_event: int  # index of the trace's write event of this step
    gather_event: int
    attention: dict | None = None


@dataclass
class Plan:
    geometry: dict
    names: list[str]  # requests in order of arrival (their colours)
    prefill: Step
    decode: Step
    between: list[Event] = field(default_factory=list)  # page events between the two
    row: int = 0  # the decode row whose attention is shown
    head: int = 0

    @property
    def page_size(self) -> int:
        return self.geometry["page_size"]

    @property
    def null(self) -> int:
        return self.prefill.slots["null_page"]


def _steps(trace: Trace) -> list[Step]:
    by_key: dict[tuple, dict] = {}
    for rec in trace.captures:
        # capture records (astrai.trace.capture) are plain dicts, named by their own kinds
        by_key.setdefault((rec["step"], rec["phase"]), {}).setdefault(rec.get("kind"), rec)
    steps = []
    for i, ev in enumerate(trace.events):
        if not isinstance(ev, Write):
            continue
        got = by_key.get((ev.step, ev.phase), {})
        gathers = [j for j, e in enumerate(trace.events) if isinstance(e, Gather)
                   and (e.step, e.phase) == (ev.step, ev.phase)]
        if {"slots", "write", "gather"} <= set(got) and gathers:
            steps.append(Step(ev.step, ev.phase, [r["task"] for r in ev.rows],
                              got["slots"], got["write"], got["gather"], i, gathers[0],
                              got.get("attention")))
    return steps


def _scattered(step: Step, ps: int, row: int) -> bool:
    cols = -(-step.gather["total_len"] // ps)
    pages = step.gather["index"][row * cols:(row + 1) * cols]
    return pages != sorted(pages)


def plan(trace: Trace, head: int = 0) -> Plan:
    """Pick the story's two steps from a captured trace: the first prefill (one with a padded
    row if there is one) and the first decode step after it with attention captured (one whose
    page table reads out of physical order if there is one)."""
    if not trace.captures:
        raise TraceFormatError(
            "this scene needs a trace recorded with capture=True "
            "(python -m astrai.trace WORKLOAD --capture -o FILE)")
    ps = trace.geometry["page_size"]
    steps = _steps(trace)
    prefills = [s for s in steps if s.phase == "prefill"]
    if not prefills:
        raise WorkloadError("the run has no captured prefill step to show")
    padded = [s for s in prefills if any(n < s.slots["n_tokens"] for n in s.slots["lengths"])]
    prefill = (padded or prefills)[0]
    decodes = [s for s in steps if s.phase == "decode" and s.attention is not None
               and s.step > prefill.step]
    if not decodes:
        raise WorkloadError("the run has no captured decode step after its prefill to show")
    scattered = [(s, b) for s in decodes for b in range(len(s.rows)) if _scattered(s, ps, b)]
    decode, row = scattered[0] if scattered else (decodes[0], 0)
    between = [ev for ev in trace.events[prefill.gather_event + 1:decode.write_event]
               if isinstance(ev, (Free, Alloc, Retire))]
    names = [ev.task for ev in trace.events if isinstance(ev, Arrive)]
    p = Plan(trace.geometry, names, prefill, decode, between, row, head)
    _check_fits(p)
    return p


def _check_fits(p: Plan) -> None:
    ps, null = p.page_size, p.null
    problems = []
    for s in (p.prefill, p.decode):
        if len(s.rows) > MAX_ROWS:
            problems.append(f"step {s.step} has {len(s.rows)} rows (at most {MAX_ROWS})")
        if s.slots["n_tokens"] > MAX_TOKENS:
            problems.append(f"step {s.step} writes {s.slots['n_tokens']} tokens a row "
                            f"(at most {MAX_TOKENS})")
    if (null + 1) * ps > MAX_SLOTS:
        problems.append(f"{(null + 1) * ps} storage slots (at most {MAX_SLOTS})")
    if p.decode.gather["total_len"] > MAX_KEYS:
        problems.append(f"{p.decode.gather['total_len']} keys (at most {MAX_KEYS})")
    if not 0 <= p.head < p.decode.attention["n_heads"]:
        problems.append(f"head {p.head} of {p.decode.attention['n_heads']}")
    if problems:
        raise WorkloadError("too big to show slot by slot: " + "; ".join(problems))


def load_captured(spec: str) -> Trace:
    """A workload recorded with capture on (kept: astrai.trace.store), or a saved .json trace
    (refused if stale)."""
    if spec.endswith(".json"):
        trace = load_trace(spec)
        stale = sorted(f for f, d in trace.source.items() if source_digests().get(f) != d)
        if stale:
            raise TraceFormatError(f"{spec} was recorded from another version of "
                                   f"{', '.join(stale)}; record it again")
        return trace
    return recorded(spec, capture=True)


def shape(x) -> str:
    """'[2, 8]' for a nested list / shape list."""
    dims = []
    while isinstance(x, list):
        dims.append(len(x))
        x = x[0] if x else None
    return "[" + ", ".join(map(str, dims)) + "]"


def dims(s: list[int]) -> str:
    return "[" + ", ".join(map(str, s)) + "]"


def fmt(x: float) -> str:
    return f"{x:.2f}"


# ---- drawing ---------------------------------------------------------------------------------

PITCH = 0.5  # one slot / one token cell
CELL_W, CELL_H = 0.44, 0.36
FRAME_GAP = 0.3  # between page frames
NULL_GAP = 0.45  # extra gap before the null page: it lies past the pool


class Cell(VGroup):
    """One token's K/V: a filled box with the token's position, in its request's colour."""

    def __init__(self, atlas: Atlas, label: str, color, pad: bool = False):
        super().__init__()
        # Real K/V: tinted in the request's colour; padding: an empty outline.
        self.box = Rectangle(width=CELL_W, height=CELL_H, stroke_width=1.5,
                             stroke_color=theme.FAINT if pad else color,
                             fill_color=theme.BG if pad else color,
                             fill_opacity=1.0 if pad else 0.4)
        self.label = atlas.line(label, theme.DIM if pad else theme.TEXT)
        self.label.move_to(self.box)
        self.add(self.box, self.label)
        self.pad, self.owner, self.stale = pad, None, False

    def go_stale(self) -> Cell:
        """Stale: its page was freed; the bytes stay until something overwrites them."""
        self.box.set_fill(opacity=0.12).set_stroke(opacity=0.45)
        self.label.set_text_color(theme.DIM)
        self.stale = True
        return self


class Storage(VGroup):
    """The K/V store as its flat slots: pages 0..n-1 of page_size slots, then the null page."""

    def __init__(self, n_pages: int, ps: int, y: float, atlas: Atlas):
        super().__init__()
        self.n_pages, self.ps, self.y = n_pages, ps, y
        n_slots = (n_pages + 1) * ps
        width = n_slots * PITCH + n_pages * FRAME_GAP + NULL_GAP
        x0 = -width / 2 + PITCH / 2
        self.xs = []
        for s in range(n_slots):
            page = s // ps
            self.xs.append(x0 + s * PITCH + page * FRAME_GAP + (NULL_GAP if page == n_pages
                                                                 else 0))
        self.slots = VGroup(*[
            Rectangle(width=CELL_W, height=CELL_H, stroke_width=1, stroke_color=theme.FAINT,
                      fill_color=theme.BG, fill_opacity=1).move_to([x, y, 0]) for x in self.xs])
        self.numbers = VGroup(*[atlas.line(str(s), theme.DIM).move_to([x, y - 0.36, 0])
                                for s, x in enumerate(self.xs)])
        self.frames, self.labels = VGroup(), {}
        for page in range(n_pages + 1):
            left, right = self.xs[page * ps] - PITCH / 2, self.xs[page * ps + ps - 1] + PITCH / 2
            frame = RoundedRectangle(corner_radius=0.06, width=right - left + 0.08,
                                     height=CELL_H + 0.16, stroke_width=2,
                                     stroke_color=theme.FREE)
            frame.move_to([(left + right) / 2, y, 0])
            if page == n_pages:
                frame = DashedVMobject(frame, num_dashes=26)
            self.frames.add(frame)
            label = Counter(atlas, "", theme.DIM).place([(left + right) / 2, y + 0.46, 0],
                                                         np.zeros(3))
            self.labels[page] = label
        self.add(self.frames, self.slots, self.numbers, *self.labels.values())

    def x(self, slot: int) -> float:
        return self.xs[slot]

    def slot_at(self, x: float) -> int:
        """The slot whose column holds x (what a cell drawn at x sits in)."""
        i = int(np.argmin([abs(x - sx) for sx in self.xs]))
        if abs(self.xs[i] - x) > PITCH / 2:
            raise LookupError(f"x = {x:.2f} is over no slot")
        return i


def spoken_list(items, last: str = "and") -> str:
    """'1, 2 and 0' (or '1, 2, then 0' with last='then'): a list as the narrator says it."""
    items = [str(x) for x in items]
    if len(items) < 2:
        return "".join(items)
    sep = ", then " if last == "then" else f" {last} "
    return ", ".join(items[:-1]) + sep + items[-1]


class WriteGatherScene(StoryScene):
    """The explainer tells the run step by step (`story`); the teaser is one shot of its own
    (`teaser_story`): the state up to the decode step set at once, then the scattered pages
    gathered back in order and attended to. Both draw with the same pieces (`_prefill`,
    `_decode_write`, `_decode_gather`, `_attention`); only the telling differs.

    The narrator speaks `line=` of a shot; the caption and detail lines above the picture are
    dense annotation for whoever pauses, on screen only."""

    WORKLOAD = "write_gather"
    TITLE = "Inside write and gather"
    # The teaser holds one idea a shot and stays under 90 s: this slot-level close-up is the
    # explainer's (its own teaser cut still renders with ASTRAI_CUT=teaser).
    IN_TEASER = False
    # what it shows, in one sentence (its card on the promo page)
    SUMMARY = ("Slot by slot: where each token's keys and values are written, the null page that "
               "padded rows go to, and the gather that reads them back in page-table order for "
               "the decoding token's attention.")
    HEAD = 0  # layer 0's query head whose attention is shown (named on screen)

    # ---- the two cuts ----------------------------------------------------------------------

    def story(self) -> None:
        """The explainer: chapters follow the run (prefill write, its gather, the decode step,
        attention); the pills follow the operation on screen."""
        self.frame()
        self.chapter("write")
        self._light("write")
        self.write_prefill()
        self.chapter("gather")
        self._light("gather")
        self.gather_prefill()
        self.chapter("decode")
        self._light(None)  # pages change hands: neither write nor gather
        self.step_between()
        self._light("write")
        self.write_decode()
        self._light("gather")
        self.gather_decode()
        self.chapter("attention")
        self._light("attention")
        self.attend()

    def teaser_story(self) -> None:
        """The teaser's one idea: a request's keys lie scattered over pages, gather reads them
        back in order, and its new token attends to all of them. Two spoken lines over the real
        decode step; what led there is on screen from the first frame."""
        self.frame()
        self.settle()
        p, s = self.plan, self.plan.decode
        self.chapter("gather")
        self._light("gather")
        g = self._decode_gather()
        self.shot(f"Gather reads {g.name}'s pages in table order, {g.order}, and cuts at "
                  f"total_len = {g.total}", "scattered in memory, in order in the buffer; "
                  f"the view keeps positions 0-{g.total - 1}", 0.0,
                  (g.reads, 0.5), (g.fly, 2.4), (g.trim, 0.8),
                  line=f"This request's keys are scattered over pages "
                       f"{spoken_list(g.pages)}. Gather reads them back in order.")
        self._snap_gather(g)
        self.chapter("attention")
        self._light("attention")
        at = self._attention()
        a = s.attention
        # The last shot holds a little past its speech: its subtitle stays to be read.
        self.shot(f"Attention: {at.name}'s query scores all {at.total} keys, page by page; "
                  "softmax makes the weights", f"the model's own numbers: layer "
                  f"{a['layer']}, head {p.head}; largest weight {fmt(at.top)} on key "
                  f"{at.j_max}", 3.6, (at.moves, 0.6), (at.enter, 0.3),
                  ([FadeIn(at.label_s), FadeIn(at.label_w), *[FadeIn(t) for t in at.score_txt],
                    *at.grow], 1.0),
                  line=f"So its new token can attend to all {at.total} keys.")
        self._snap_attention(at)

    def frame(self) -> None:
        """What stays on screen all scene: title, pills, caption lines, code panel, storage."""
        trace = self.trace if self.trace is not None else load_captured(self.workload)
        self.plan = p = plan(trace, self.HEAD)
        self.trace_used = trace
        self.colors = theme.Palette(p.names)
        self.a17 = Atlas.get(theme.FS_BODY)
        self.shown: dict[str, dict] = {}  # beat -> what it showed (read back), for tests
        self.captions: list[tuple[float, str]] = []  # (start, caption): on screen, unspoken
        half_h = config.frame_height / 2
        self.lay = lay = make_layout(p.null, code_lines=6)
        self.code = CodePanel(lay)
        self.shapes = Counter(self.a17, "", theme.DIM).place(
            [lay.left + 0.05, lay.code_top + 0.2, 0], LEFT)
        cap_atlas = Atlas.get(theme.FS_CAPTION)
        self.caption = Counter(cap_atlas, "", theme.TEXT).place([lay.left, half_h - 0.78, 0],
                                                                LEFT)
        self.detail = Counter(self.a17, "", theme.DIM).place([lay.left, half_h - 1.08, 0], LEFT)
        self.room = {id(cap_atlas): int((lay.right - lay.left) / cap_atlas.advance),
                     id(self.a17): int((lay.right - lay.left) / self.a17.advance)}
        title = theme.text(self.TITLE, theme.FS_TITLE, theme.TEXT, bold=True)
        title.move_to([lay.left, half_h - 0.34, 0], aligned_edge=LEFT)
        self.add(title, self._pills(half_h - 0.34), self.caption, self.detail, self.code,
                 self.shapes)
        self.storage = Storage(p.null, p.page_size, -0.5, self.a17)
        self.held: dict[int, list[Cell]] = {}  # storage slot -> cells drawn there, oldest first
        self.grid_y = [2.1 - 0.8 * b for b in range(MAX_ROWS)]
        self.grid_x = -5.45

    def settle(self) -> None:
        """The teaser's opening picture: the prefill written, the pages changed hands and the
        decode token written, all at once (the same pieces the explainer animates)."""
        pre = self._prefill()
        self.add(self.storage)
        self._snap_slots(pre)
        moves, _ = self._land(pre.real + pre.pads)
        for c, t in moves:
            c.move_to(t)
        self.add(*pre.real, *pre.pads)
        self.snap("write", landed=self._landed(pre.real + pre.pads))
        between = self._between()
        for frame, color in between.frames:
            frame.set_stroke(color)
        for c in between.stale:
            c.go_stale()
        dw = self._decode_write()
        for c, t in dw.moves:
            c.move_to(t)
        self.add(dw.flat)
        self.remove(*dw.replaced)
        self._snap_decode_write(dw)

    def _pills(self, y: float) -> VGroup:
        pills, x = VGroup(), self.lay.right
        self.pill = {}
        for name in ("attention", "gather", "write"):
            t = theme.text(name, theme.FS_BODY, theme.DIM)
            box = RoundedRectangle(corner_radius=0.1, width=t.width + 0.24, height=0.34,
                                   stroke_width=1.5, stroke_color=theme.FAINT,
                                   fill_color=theme.ACCENT, fill_opacity=0.0)
            box.move_to([x - box.width / 2, y, 0])
            t.move_to(box)
            self.pill[name] = (box, t)
            pills.add(box, t)
            x -= box.width + 0.1
        return pills

    def _light(self, name: str | None) -> None:
        for n, (box, t) in self.pill.items():
            box.set_fill(theme.ACCENT, opacity=0.9 if n == name else 0.0)
            box.set_stroke(theme.ACCENT if n == name else theme.FAINT)
            t.set_color(theme.BG if n == name else theme.DIM)

    # ---- beat plumbing ---------------------------------------------------------------------

    def _line(self, counter: Counter, text: str, color=None) -> None:
        room = self.room[id(counter.atlas)]
        if len(text) > room:
            raise ValueError(f"caption runs off screen ({len(text)} > {room} chars): {text!r}")
        counter.set(text, color)

    def shot(self, caption: str, detail: str, duration: float, *plays,
             line: str | None = None) -> None:
        """Caption and detail on screen (annotation, not spoken) for at least `duration` s,
        with these plays inside it, each an (animations, run_time) pair. With `line`, the
        narrator says it from the start of the shot and the shot lasts until the speech is
        over; without, the shot passes silently."""
        self._line(self.caption, caption)
        self._line(self.detail, detail)
        self.captions.append((round(self.clock, 4), caption))
        with self.voiced(line) if line else nullcontext():
            used = 0.0
            for anims, run_time in plays:
                if anims:
                    self.show(anims, run_time)
                    used += run_time
            if duration - used > 1e-6:
                self.hold(duration - used)

    def panel(self, key: str, beat: str, shapes: str, step: Step | None = None) -> None:
        """Show the function WORK[key] names with its work line marked, the lines it ran (from
        the trace) faint, and the real shapes of this call above it."""
        a = WORK[key]
        frame = {"file": a.file, "fn": a.fn, "line": work_line(key), "ran": self._ran(a.fn, step)}
        info = self.code.show(frame)
        self._line(self.shapes, shapes)
        self.panels.append({"beat": beat, **info, "shapes": shapes})

    def _ran(self, fn: str, step: Step | None) -> list[int]:
        """Lines `fn` ran in this step (any step if None), from the trace's code frames."""
        for ev in self.trace_used.events:
            if step is not None and (ev.step, ev.phase) != (step.step, step.phase):
                continue
            for fr in ev.returned + ev.code:
                if fr["fn"] == fn:
                    return fr["ran"]
        return []

    def snap(self, beat: str, **what) -> None:
        self.shown[beat] = what
        self.snapshots.append({"beat": beat, **what, "texts": self.texts()})

    def texts(self) -> list[tuple[str, str, tuple]]:
        """Every text drawn now: (kind, text, (x0, y0, x1, y1)); kind "cell" for the labels
        inside K/V cells (those stack on purpose in the null page), else "text"."""
        out, seen = [], set()

        def visible(m) -> bool:
            return any(len(r.points) and r.fill_rgbas[:, 3].max() > 0.05
                       for r in m.family_members_with_points() if not getattr(r, "ghost", 0))

        for top in self.mobjects:
            for m in top.get_family():
                if id(m) in seen or not isinstance(m, (GlyphText, Cell)) and not hasattr(
                        m, "font_size"):
                    continue
                seen.update(id(x) for x in m.get_family())
                if isinstance(m, Cell):
                    m, kind = m.label, "cell"
                else:
                    kind = "text"
                if not visible(m):
                    continue
                (x0, y0, _), (x1, y1, _) = m.get_corner(DOWN + LEFT), m.get_corner(UP + RIGHT)
                label = m.shown() if isinstance(m, GlyphText) else m.text
                out.append((kind, label, (x0, y0, x1, y1)))
        return out

    # ---- pieces ----------------------------------------------------------------------------

    def _owners(self, state: dict) -> list[tuple]:
        """(frame, colour) per page from the state's page tables; labels set at once."""
        owners = {page: name for name, pages in state["page_tables"].items() for page in pages}
        out = []
        for page, label in self.storage.labels.items():
            if page == self.plan.null:
                label.set([(f"null page {page}", theme.DIM)])
                continue
            who = owners.get(page)
            color = self.colors.color(who) if who else theme.FREE
            label.set([(f"page {page} ", theme.DIM), (who or "free", color)])
            out.append((self.storage.frames[page], color))
        return out

    def _grid(self, s: Step):
        """The step's tokens as cells, row by row (padding grey), row names at the left."""
        n = s.slots["n_tokens"]
        lengths = s.slots["lengths"] or [n] * len(s.rows)
        cells, names = [], VGroup()
        for b, name in enumerate(s.rows):
            color = self.colors.color(name)
            names.add(self.a17.line(name, color).move_to([self.grid_x - 0.55, self.grid_y[b], 0]))
            row = []
            for t in range(n):
                cell = Cell(self.a17, str(s.slots["start_pos"][b] + t), color,
                            pad=t >= lengths[b])
                cell.owner, cell.pos = name, s.slots["start_pos"][b] + t
                row.append(cell.move_to([self.grid_x + t * PITCH, self.grid_y[b], 0]))
            cells.append(row)
        return names, cells, VGroup(*[c for row in cells for c in row]), lengths

    def _slot_labels(self, s: Step, cells: list[list[Cell]]) -> VGroup:
        """Under each token, the flat slot the real slot_index call gave it (null page red)."""
        n = s.slots["n_tokens"]
        out = VGroup()
        for b, row in enumerate(cells):
            for t, cell in enumerate(row):
                slot = s.slots["slots"][b * n + t]
                null = slot // self.plan.page_size == self.plan.null
                lab = self.a17.line(str(slot), theme.BAD if null else theme.TEXT)
                cell.slot, cell.slot_label = slot, lab.move_to(cell.get_center() + DOWN * 0.36)
                out.add(lab)
        return out

    def _table(self, s: Step) -> VGroup:
        """page_table rows as the call got them (-1 in red), with start_pos and lengths."""
        x, ys = self.grid_x + 5.2, self.grid_y
        head = self.a17.line("page_table     start_pos  lengths", theme.DIM)
        out = VGroup(head.move_to([x, ys[0] + 0.42, 0], aligned_edge=LEFT))
        lengths = s.slots["lengths"] or [s.slots["n_tokens"]] * len(s.rows)
        for b, row in enumerate(s.slots["page_table"]):
            segs = [("[", theme.DIM)]
            for i, page in enumerate(row):
                segs.append((f"{page:>2}", theme.BAD if page < 0 else theme.TEXT))
                segs.append((", " if i < len(row) - 1 else "]", theme.DIM))
            used = sum(len(t) for t, _ in segs)
            segs.append((" " * max(15 - used, 1) + f"{s.slots['start_pos'][b]:>9}", theme.TEXT))
            segs.append((f"{lengths[b]:>9}", theme.TEXT))
            out.add(self.a17.line(segs).move_to([x, ys[b], 0], aligned_edge=LEFT))
        return out

    def _land(self, cells: list[Cell]) -> tuple[list, list[Cell]]:
        """Each cell onto its slot: (cell, target) moves, and the cells a real write replaces.
        Cells sharing a slot (padding in the null page) stack a little so each shows."""
        moves, replaced = [], []
        for cell in cells:
            held = self.held.setdefault(cell.slot, [])
            if not cell.pad:
                replaced += held
                held.clear()
            lift = 0.07 * len(held)  # a second write to one slot shows as a card behind
            target = [self.storage.x(cell.slot) + lift, self.storage.y + lift, 0]
            held.append(cell)
            moves.append((cell, target))
        return moves, replaced

    def _landed(self, cells: list[Cell]) -> list[dict]:
        """Where each cell sits now, read from its position: the slot under it, and whether
        that slot is in the null page."""
        out = []
        for c in cells:
            slot = self.storage.slot_at(c.get_center()[0])
            out.append({"row": c.owner, "pos": c.pos, "pad": c.pad, "slot": slot,
                        "null": slot // self.plan.page_size == self.plan.null})
        return out

    def _heading(self, s: Step):
        line = self.a17.line(f"step {s.step}, {s.phase} · k, v {dims(s.write['k_shape'])}",
                             theme.DIM)
        return line.move_to([self.grid_x - 0.75, self.grid_y[0] + 0.42, 0], aligned_edge=LEFT)

    # ---- write -----------------------------------------------------------------------------

    def _prefill(self) -> SimpleNamespace:
        """The prefill step drawn, nothing added yet: page frames in their owners' colours,
        its tokens as cells (padding grey), the slot under each, its page table."""
        s = self.plan.prefill
        n = s.slots["n_tokens"]
        for frame, color in self._owners(self.trace_used.events[s.write_event].state):
            frame.set_stroke(color)
        names, cells, flat, lengths = self._grid(s)
        return SimpleNamespace(
            step=s, cells=cells, flat=flat, labels=self._slot_labels(s, cells),
            static=VGroup(names, self._heading(s), self._table(s)), lengths=lengths,
            padded=[b for b in range(len(s.rows)) if lengths[b] < n],
            real=[c for row in cells for c in row if not c.pad],
            pads=[c for row in cells for c in row if c.pad])

    def _snap_slots(self, pre: SimpleNamespace) -> None:
        rows = pre.step.rows
        self.snap("slots", rows=list(rows),
                  slots={rows[b]: [int(c.slot_label.shown()) for c in row]
                         for b, row in enumerate(pre.cells)},
                  pad={rows[b]: [c.pad for c in row] for b, row in enumerate(pre.cells)})

    def write_prefill(self) -> None:
        p, pre = self.plan, self._prefill()
        s, geo = pre.step, self.plan.geometry
        ps, n = p.page_size, s.slots["n_tokens"]
        store = s.write["store_shape"]
        kc = [geo["n_layers"], p.null, ps, geo["n_kv_heads"], geo["head_dim"]]
        self.panel("store", "write/storage", f"k_cache {dims(kc)}; its store adds null page "
                   f"{p.null}: per layer {dims(store)} = slots, heads, dims")
        self.shot(f"The cache keeps K and V in pages of {ps} slots, numbered through all pages",
                  f"page p, slot i is flat slot p·{ps} + i; page {p.null}, past the pool, "
                  "is the null page", 6.0, ([FadeIn(self.storage)], 1.0),
                  line=f"The cache stores each token's key and value in pages of {ps} slots.")
        rows = " and ".join(f"{r} ({ln} tokens)" for r, ln in zip(s.rows, pre.lengths))
        pad = ", ".join(f"{s.rows[b]} is padded to {n}" for b in pre.padded)
        who = [f"{r} has {ln}" + (" tokens" if b == 0 else "")
               for b, (r, ln) in enumerate(zip(s.rows, pre.lengths))]
        padded = [s.rows[b] for b in pre.padded]
        self.shot(f"Prefill: {rows} run as one batch" + (f", so {pad}" if pad else ""),
                  "grey cells are padding; -1 in a page table means no page there", 6.0,
                  ([FadeIn(pre.static), FadeIn(pre.flat)], 1.0),
                  line=f"Prefill runs the prompts as one batch: {spoken_list(who)}"
                       + (f", so {spoken_list(padded)} {'is' if len(padded) == 1 else 'are'} "
                          f"padded to {n}." if padded else "."))
        self._explain_slots(pre)
        self._snap_slots(pre)

        w = s.write
        self.panel("write", "write/write_slots",
                   f"write_slots: k {dims(w['k_shape'])} → reshape {dims(w['rows_shape'])} → "
                   f"index_copy_ at slots {dims(w['slots_shape'])} into {dims(store)}", s)
        moves, _ = self._land(pre.real + pre.pads)
        pad_slots = [c.slot for c in pre.pads]
        twice = sorted({x for x in pad_slots if pad_slots.count(x) > 1})
        self.shot("write_slots copies every token's K and V to its slot in one index_copy_",
                  "padding only ever lands in the null page"
                  + (f" (slot {', '.join(map(str, twice))} is written twice)" if twice else ""),
                  7.0, ([LaggedStart(*[c.animate.move_to(t) for c, t in moves],
                                     lag_ratio=0.04)], 2.2),
                  line="Then one copy writes every key and value to its slot.")
        self.snap("write", landed=self._landed(pre.real + pre.pads))
        self.play(FadeOut(VGroup(pre.labels, pre.static)), run_time=0.6)

    def _explain_slots(self, pre: SimpleNamespace) -> None:
        """One token worked through (the last row's second page), then every slot; then
        where the padding went."""
        p, s, cells, labels = self.plan, pre.step, pre.cells, pre.labels
        ps, n = p.page_size, s.slots["n_tokens"]
        b = len(s.rows) - 1
        t = min(pre.lengths[b] - 1, ps + 1)
        cell = cells[b][t]
        page, off = divmod(cell.slot, ps)
        ring = Rectangle(width=CELL_W + 0.14, height=0.86, stroke_color=theme.ACCENT,
                         stroke_width=3).move_to(cell.get_center() + DOWN * 0.18)
        self.panel("slots", "write/slot_index",
                   f"slot_index(page_table {shape(s.slots['page_table'])}, start_pos "
                   f"{shape(s.slots['start_pos'])}, n_tokens={n}, lengths "
                   f"{shape(s.slots['lengths'])}) → slots {shape(s.slots['slots'])}", s)
        rest = VGroup(*[lab for i, lab in enumerate(labels) if i != b * n + t])
        self.shot(f"slot_index gives each token one flat slot: page_table[b, t // {ps}]·{ps} "
                  f"+ t % {ps}",
                  f"{s.rows[b]}'s token {cell.pos}: page_table[{b}][{cell.pos} // {ps}] = "
                  f"{page}, {cell.pos} % {ps} = {off} → {page}·{ps} + {off} = {cell.slot}",
                  8.0, ([FadeIn(ring), FadeIn(labels[b * n + t])], 0.8),
                  ([FadeIn(rest)], 1.2),
                  line=f"Each token gets a slot of its own. {s.rows[b]}'s token {cell.pos} "
                       f"falls in page {page}, place {off}: slot {cell.slot}.")
        if not pre.padded:
            self.play(FadeOut(ring), run_time=0.3)
            return
        b0 = pre.padded[0]
        pads = [c for c in cells[b0] if c.pad]
        null_slots = sorted({c.slot for c in pads})
        col = pads[0].pos // ps
        row_table = s.slots["page_table"][b0]
        would = row_table[col] if col < len(row_table) else -1
        box = Rectangle(width=PITCH * len(pads) + 0.08, height=0.9, stroke_color=theme.BAD,
                        stroke_width=2.5).move_to(VGroup(*pads).get_center() + DOWN * 0.18)
        self.panel("null", "write/null", "padding → slots " + ", ".join(str(c.slot) for c in pads)
                   + f": all in null page {p.null}", s)
        where = f"page {would}, a live page" if would >= 0 else "a -1 entry"
        self.shot(f"{s.rows[b0]}'s padding goes to the null page (slots {null_slots[0]}-"
                  f"{null_slots[-1]}), never a live page",
                  f"position {pads[0].pos} would be in {where}: t ≥ lengths[{b0}] = "
                  f"{pre.lengths[b0]} sends it to page {p.null} instead", 7.0,
                  ([FadeOut(ring), FadeIn(box)], 0.8),
                  line=f"Padding must never touch a real page, so {s.rows[b0]}'s padding goes "
                       f"to the null page: slots {null_slots[0]} to {null_slots[-1]}.")
        self.play(FadeOut(box), run_time=0.3)

    # ---- gather ----------------------------------------------------------------------------

    def _gathered(self, s: Step, rows_shown: list[int]):
        """Copies of each shown row's pages, in the order the captured index read them, and
        where each goes: (copies by row, page tags, moves)."""
        ps, null = self.plan.page_size, self.plan.null
        index = s.gather["index"]
        cols = len(index) // len(s.rows)
        by_row, tags, moves = {}, VGroup(), []
        for k, b in enumerate(rows_shown):
            y, row = self.grid_y[k], []
            for c in range(cols):
                page = index[b * cols + c]
                x0 = self.grid_x + c * (ps * PITCH + 0.16)
                tag = self.a17.line("null" if page == null else f"page {page}",
                                    theme.BAD if page == null else theme.DIM)
                tags.add(tag.move_to([x0 + (ps - 1) * PITCH / 2, y - 0.36, 0]))
                for i in range(ps):
                    slot = page * ps + i
                    held = self.held.get(slot, [])
                    if held:
                        cell = held[-1].copy()
                    else:  # never written: an empty slot
                        cell = Cell(self.a17, "", theme.FAINT, pad=True)
                        cell.box.set_fill(theme.BG, opacity=1)
                        cell.move_to([self.storage.x(slot), self.storage.y, 0])
                    cell.src = slot
                    moves.append((cell, [x0 + i * PITCH, y, 0]))
                    row.append(cell)
            by_row[b] = row
        return by_row, tags, moves

    def gather_prefill(self) -> None:
        p, s = self.plan, self.plan.prefill
        g = s.gather
        shown = list(range(len(s.rows)))
        by_row, tags, moves = self._gathered(s, shown)
        names = VGroup(*[self.a17.line(n, self.colors.color(n)).move_to(
            [self.grid_x - 0.55, self.grid_y[b], 0]) for b, n in enumerate(s.rows)])
        copies = VGroup(*[c for c, _ in moves])
        self.panel("index", "gather/prefill",
                   f"gather_index(page_table {shape(s.slots['page_table'])}, total_len="
                   f"{g['total_len']}) → index {dims(g['index'])}", s)
        self.add(copies)
        cols = len(g["index"]) // len(s.rows)
        short = [s.rows[b] for b in shown if p.null in g["index"][b * cols:(b + 1) * cols]]
        self.shot("To attend, each row reads its pages back, in page-table order",
                  f"index = {g['index']}" + (f": a -1 entry reads null page {p.null}, garbage "
                                              "the attention mask hides" if short else ""),
                  7.0, ([FadeIn(names), FadeIn(tags)], 0.5),
                  ([LaggedStart(*[c.animate.move_to(t) for c, t in moves], lag_ratio=0.03)],
                   2.0),
                  line="To attend, each row reads its pages back in order."
                       + (f" Where {spoken_list(short)} has no page, it reads the null page, "
                          "masked out." if short else ""))
        self.snap("gather_prefill", rows=list(s.rows), pages=[t.shown() for t in tags],
                  sources={s.rows[b]: [c.src for c in row] for b, row in by_row.items()})
        self.play(FadeOut(VGroup(copies, tags, names)), run_time=0.6)

    # ---- the decode step -------------------------------------------------------------------

    def _between(self) -> SimpleNamespace:
        """The page events between the two steps: frames recoloured for their new owners
        (labels set at once), and the cells of freed pages, which go stale."""
        p = self.plan
        state = self.trace_used.events[p.decode.write_event].state
        frees = [ev for ev in p.between if isinstance(ev, Free) and ev.refs == 0]
        return SimpleNamespace(
            state=state, frees=frees,
            allocs=[ev for ev in p.between if isinstance(ev, Alloc)],
            frames=self._owners(state),
            stale=[c for ev in frees for i in range(p.page_size)
                   for c in self.held.get(ev.page * p.page_size + i, [])])

    def step_between(self) -> None:
        """A freed page keeps its K/V (stale); an allocated page joins a table."""
        p, bt = self.plan, self._between()
        anims = [frame.animate.set_stroke(color) for frame, color in bt.frames]
        anims += [c.animate.go_stale() for c in bt.stale]
        parts = [f"{ev.task} is done and frees page {ev.page}" for ev in bt.frees]
        parts += [f"{ev.task} needs a new page and gets page {ev.page}"
                  for ev in bt.allocs]
        name = p.decode.rows[p.row]
        if bt.allocs:
            ev = bt.allocs[-1]
            st = ev.state
            self.panel("grow", "between/grow", f"{ev.task} holds {st['lengths'][ev.task]} "
                       f"tokens; alloc_n(1) → page {ev.page}; its table is now "
                       f"{st['page_tables'][ev.task]}", p.decode)
        said = []
        if bt.frees:
            said.append(spoken_list(parts[:len(bt.frees)])
                        + (", but the keys stay there" if bt.stale else "") + ".")
        said += [f"{part}." for part in parts[len(bt.frees):]]
        self.shot(f"Step {p.decode.step}: " + ("; ".join(parts) if parts else "decode"),
                  f"{name}'s page table is now {bt.state['page_tables'][name]}"
                  + ("; a freed page keeps its old K/V" if bt.stale else ""), 7.0, (anims, 1.0),
                  line=" ".join(said) or None)

    def _decode_write(self) -> SimpleNamespace:
        """The decode step's tokens drawn (one a row) with their slots, and where each lands:
        the cells it replaces are the ones a real write overwrites."""
        p, s = self.plan, self.plan.decode
        names, cells, flat, _ = self._grid(s)
        labels = self._slot_labels(s, cells)
        cells_flat = [c for row in cells for c in row]
        moves, replaced = self._land(sorted(cells_flat, key=lambda c: c.pad))
        return SimpleNamespace(
            step=s, cells=cells, flat=flat, labels=labels, cells_flat=cells_flat,
            static=VGroup(names, self._heading(s), self._table(s)), moves=moves,
            replaced=replaced, cell=cells[p.row][0], over=[c for c in replaced if not c.pad])

    def _snap_decode_write(self, dw: SimpleNamespace) -> None:
        rows = dw.step.rows
        self.snap("decode_write", slots={rows[b]: [int(c.slot_label.shown()) for c in row]
                                         for b, row in enumerate(dw.cells)},
                  landed=self._landed(dw.cells_flat))

    def write_decode(self) -> None:
        p, dw = self.plan, self._decode_write()
        s, cell = dw.step, dw.cell
        ps, n = p.page_size, s.slots["n_tokens"]
        page, off = divmod(cell.slot, ps)
        name = s.rows[p.row]
        self.panel("slots", "decode/slot_index",
                   f"slot_index(page_table {shape(s.slots['page_table'])}, start_pos "
                   f"{shape(s.slots['start_pos'])}, n_tokens={n}, lengths "
                   f"{shape(s.slots['lengths'])}) → slots {shape(s.slots['slots'])}", s)
        self.shot(f"Decode writes one token a row: {name}'s token {cell.pos} "
                  f"gets flat slot {cell.slot}",
                  f"page_table[{p.row}][{cell.pos} // {ps}] = {page}, {cell.pos} % {ps} = "
                  f"{off} → {page}·{ps} + {off} = {cell.slot}", 4.0,
                  ([FadeIn(dw.static), FadeIn(dw.flat), FadeIn(dw.labels)], 0.8),
                  line=f"{name} generates one more token: token {cell.pos} gets slot "
                       f"{cell.slot}.")
        w = s.write
        self.panel("write", "decode/write_slots",
                   f"write_slots: k {dims(w['k_shape'])} → reshape {dims(w['rows_shape'])} "
                   f"→ index_copy_ at slots {dims(w['slots_shape'])} into "
                   f"{dims(w['store_shape'])}", s)
        over = dw.over[0].owner if dw.over else None
        self.shot("write_slots copies its K and V there, as in prefill",
                  (f"it overwrites {over}'s stale K/V in slot {cell.slot}: the page is "
                   f"{name}'s now" if over else "one slot per row"), 4.0,
                  ([*[c.animate.move_to(t) for c, t in dw.moves],
                    *[FadeOut(c) for c in dw.replaced]], 1.4),
                  line=f"It writes over {over}'s old key and value." if over else None)
        self.play(FadeOut(VGroup(dw.static, dw.labels)), run_time=0.5)
        self._snap_decode_write(dw)

    def _decode_gather(self) -> SimpleNamespace:
        """The decode row's pages read back in the captured index's order (copies flying to a
        row), each key's position above it, and the cut at total_len (its animations)."""
        p, s = self.plan, self.plan.decode
        g, b = s.gather, p.row
        cols = len(g["index"]) // len(s.rows)
        by_row, tags, moves = self._gathered(s, [b])
        mine = by_row[b]
        y = self.grid_y[0]
        name = s.rows[b]
        tag = self.a17.line(name, self.colors.color(name)).move_to([self.grid_x - 0.55, y, 0])
        pages = g["index"][b * cols:(b + 1) * cols]
        positions = VGroup(*[self.a17.line(str(j), theme.DIM).move_to([t[0], y + 0.38, 0])
                             for j, (_, t) in enumerate(moves)])
        self.panel("select", "gather/index_select",
                   f"gather_pages: index {dims([len(g['index'])])} → index_select → "
                   f"{dims(g['pages_shape'])} → view {dims(g['view_shape'])}", s)
        self.add(VGroup(*mine))
        total = g["total_len"]
        cut = mine[total:]
        extra = VGroup(tag, tags, *cut, *positions[total:])
        trim = []
        if cut:
            x = moves[total - 1][1][0] + PITCH / 2
            line = Line([x, y + 0.55, 0], [x, y - 0.25, 0], color=theme.BAD, stroke_width=3)
            mark = self.a17.line(f"[:, :{total}]", theme.BAD).move_to([x + 0.1, y - 0.75, 0],
                                                                     aligned_edge=LEFT)
            extra.add(line, mark)
            trim = [FadeIn(line), FadeIn(mark), *[c.animate.set_opacity(0.12) for c in cut],
                    *[t.animate.set_opacity(0.25) for t in positions[total:]]]
        stale = sum(c.stale for c in cut)
        empty = sum(not c.label.shown().strip() for c in cut)
        why = ([f"{stale} stale from a freed page"] if stale else []) + \
            ([f"{empty} never written"] if empty else [])
        return SimpleNamespace(
            step=s, name=name, pages=pages, order=", ".join(map(str, pages)), total=total,
            mine=mine, kept=mine[:total], cut=cut, tags=tags, positions=positions, extra=extra,
            why=why, reads=[FadeIn(tag), FadeIn(tags)], trim=trim,
            fly=[LaggedStart(*[c.animate.move_to(t) for c, t in moves], lag_ratio=0.05),
                 FadeIn(positions)])

    def _snap_gather(self, g: SimpleNamespace) -> None:
        self.snap("gather", row=g.name, pages=[t.shown() for t in g.tags],
                  positions=[int(t.shown()) for t in g.positions],
                  sources=[c.src for c in g.mine], kept=len(g.kept), cut=[c.src for c in g.cut])
        self.keys, self.key_positions = g.kept, g.positions[:g.total]
        self.gather_extra = g.extra

    def gather_decode(self) -> None:
        g = self._decode_gather()
        gv = g.step.gather
        self.shot(f"Gather reads {g.name}'s pages in table order, {g.order}: scattered in "
                  "memory, in order here", "above each key its position in the sequence; "
                  "under each block the page it came from", 9.0, (g.reads, 0.6), (g.fly, 2.4),
                  line=f"{g.name}'s pages are out of order in memory: "
                       f"{spoken_list(g.pages, 'then')}. Gather reads them back in order.")
        self.panel("cut", "gather/cut", f"view {dims(gv['view_shape'])} → [:, :{g.total}] → "
                   f"k {dims(gv['k_shape'])}", g.step)
        self.shot(f"total_len = {g.total}: the view keeps positions 0-{g.total - 1}"
                  + (f" and cuts the last {len(g.cut)}" if g.cut else ""),
                  ("the cut slots: " + ", ".join(g.why)) if g.why else
                  "the tail of the last page holds nothing of this row", 6.0, (g.trim, 1.0),
                  line=f"{g.name} has {g.total} tokens, so gather keeps {g.total} keys and "
                       f"drops the last {len(g.cut)}." if g.cut else None)
        self._snap_gather(g)

    # ---- attention -------------------------------------------------------------------------

    def _attention(self) -> SimpleNamespace:
        """The gathered keys moved into a row, block by block (one block a page), the query
        beside them, and the scores, weights and bars the model computed, not yet shown."""
        p, s = self.plan, self.plan.decode
        a, ps, b, h = s.attention, p.page_size, p.row, p.head
        name, color = s.rows[b], self.colors.color(s.rows[b])
        scores, weights = a["scores"][b][h][0], a["weights"][b][h][0]
        allowed = a["allowed"][b][0]
        total = len(self.keys)
        cols = len(s.gather["index"]) // len(s.rows)
        pages = s.gather["index"][b * cols:(b + 1) * cols][: -(-total // ps)]
        qpos = s.slots["start_pos"][b]
        # Keys spread out so each has room for its numbers; blocks keep a gap between pages.
        pitch, gap = 0.92, 0.3
        width = total * pitch + (len(pages) - 1) * gap
        x0 = -width / 2 + pitch / 2 + 1.0
        xs = [x0 + j * pitch + (j // ps) * gap for j in range(total)]
        x_left = xs[0] - 1.9
        y_key, y_score, base, tall = 1.95, 1.2, -0.72, 1.45
        moves = [FadeOut(self.storage), FadeOut(self.gather_extra)]
        moves += [FadeOut(c) for held in self.held.values() for c in held]
        for j, c in enumerate(self.keys):
            moves.append(c.animate.move_to([xs[j], y_key, 0]))
            moves.append(self.key_positions[j].animate.move_to([xs[j], y_key + 0.38, 0]))
        blocks = VGroup()
        for i, page in enumerate(pages):
            lo, hi = xs[i * ps], xs[min((i + 1) * ps, total) - 1]
            box = RoundedRectangle(corner_radius=0.06, width=hi - lo + pitch - 0.04,
                                   height=0.8, stroke_width=2, stroke_color=theme.FAINT)
            box.move_to([(lo + hi) / 2, y_key + 0.17, 0])
            tag = self.a17.line(f"page {page}", theme.DIM)
            blocks.add(VGroup(box, tag.move_to([(lo + hi) / 2, y_key - 0.4, 0])))
        q = Cell(self.a17, str(qpos), color).move_to([x_left, y_key, 0])
        q_tag = self.a17.line(f"query: {name}, pos {qpos}", theme.TEXT)
        q_tag.move_to([x_left, y_key + 0.38, 0])
        head_tag = self.a17.line(f"layer {a['layer']}, head {h}", theme.ACCENT)
        head_tag.move_to([x_left, y_key - 0.4, 0])
        self.panel("attend", "attention/sdpa",
                   f"scaled_dot_product_attention(q {dims(a['q_shape'])}, k "
                   f"{dims(a['k_shape'])}, v, mask) → {dims(a['out_shape'])}")
        score_txt = [self.a17.line(fmt(scores[j]) if allowed[j] else "masked",
                                   theme.TEXT if allowed[j] else theme.FAINT)
                     .move_to([xs[j], y_score, 0]) for j in range(total)]
        top = max(weights[:total]) or 1.0
        bars, w_txt = VGroup(), []
        for j in range(total):
            bar = Rectangle(width=pitch * 0.6, height=max(tall * weights[j] / top, 0.01),
                            stroke_width=0, fill_color=color, fill_opacity=0.8)
            bars.add(bar.move_to([xs[j], base, 0], aligned_edge=DOWN))
            w_txt.append(self.a17.line(fmt(weights[j]), theme.TEXT)
                         .move_to([xs[j], base - 0.22, 0]))
        j_max = int(np.argmax(weights[:total]))
        return SimpleNamespace(
            name=name, total=total, pages=pages, qpos=qpos, kv=h // (a["n_heads"]
                                                                     // a["n_kv_heads"]),
            scores=scores, allowed=allowed, moves=moves, blocks=blocks, q=q,
            enter=[FadeIn(blocks), FadeIn(q), FadeIn(q_tag), FadeIn(head_tag)],
            head_tag=head_tag, score_txt=score_txt, bars=bars, w_txt=w_txt,
            label_s=self.a17.line("scores", theme.DIM).move_to([x_left, y_score, 0]),
            label_w=self.a17.line("weights", theme.DIM).move_to([x_left, base + 0.3, 0]),
            grow=[*[GrowFromEdge(bar, DOWN) for bar in bars], *[FadeIn(t) for t in w_txt]],
            j_max=j_max, top=weights[j_max])

    def _snap_attention(self, at: SimpleNamespace) -> None:
        a = self.plan.decode.attention
        self.snap("attention", row=at.name, head=self.plan.head, layer=a["layer"],
                  query=at.qpos, blocks=[blk[1].shown() for blk in at.blocks],
                  keys=[int(t.shown()) for t in self.key_positions],
                  scores=[t.shown() for t in at.score_txt],
                  weights=[t.shown() for t in at.w_txt],
                  bars=[bar.height for bar in at.bars], head_tag=at.head_tag.shown())

    def attend(self) -> None:
        p, s = self.plan, self.plan.decode
        a, ps, h = s.attention, p.page_size, p.head
        at = self._attention()
        self.shot(f"Attention: {at.name}'s new token (position {at.qpos}) scores its query "
                  f"against all {at.total} keys",
                  f"the model's own numbers: layer {a['layer']}, query head {h} of "
                  f"{a['n_heads']} (it reads KV head {at.kv}); score = q·k / "
                  f"√{a['q_shape'][-1]}", 5.0, (at.moves, 1.2), (at.enter, 0.6),
                  line=f"Now attention: {at.name}'s new token, at position {at.qpos}, scores "
                       f"all {at.total} keys.")
        self.add(at.label_s)
        for i, page in enumerate(at.pages):  # block by block: on screen, not spoken
            js = range(i * ps, min((i + 1) * ps, at.total))
            box = at.blocks[i][0]
            arrow = Arrow(at.q.get_right(), box.get_left(), buff=0.08, stroke_width=3,
                          color=theme.ACCENT, max_tip_length_to_length_ratio=0.08)
            keys = f"keys {js[0]}-{js[-1]}" if len(js) > 1 else f"key {js[0]}"
            self.shot(f"Block by block: block {i} is page {page}, {keys}",
                      "scores " + ", ".join(fmt(at.scores[j]) for j in js if at.allowed[j]),
                      2.8, ([FadeIn(arrow), box.animate.set_stroke(theme.ACCENT),
                             *[FadeIn(at.score_txt[j]) for j in js]], 0.8),
                      ([FadeOut(arrow), box.animate.set_stroke(theme.FAINT)], 0.4))
        self.shot(f"Softmax turns the {at.total} scores into weights that sum to 1",
                  f"the output is the weighted sum of V; the largest weight, "
                  f"{fmt(at.top)}, is key {at.j_max} (page {at.pages[at.j_max // ps]}, "
                  f"slot {at.j_max % ps})", 8.0, ([FadeIn(at.label_w)], 0.4), (at.grow, 1.6),
                  line=f"Softmax turns the scores into weights that add up to one. Key "
                       f"{at.j_max} gets the most: {fmt(at.top)}.")
        self._snap_attention(at)
        self.shot("Every slot, page and number here was recorded from the real run",
                  f"slots from slot_index, pages from gather_pages, weights from the "
                  f"model at step {s.step}", 3.0)
