"""Per-task page tables: logical | physical rows, an arrow from each physical entry to its frame.

A table appears when its task first holds a page, grows a row per page (rows wrap into another
column block when the band is full), shows the task's length and its capacity (pages x
page_size), and fades out when the task no longer holds pages (retired or preempted). When the
trace carries text, two lines under the table quote the request's prompt (a chat request's user
message, not the template around it) and its answer as it grows (scenes.framework.kit.said);
where a second line would make the tables narrower than full blocks (more rows wrap into more
column blocks than fit side by side), one line quotes the prompt, then the answer once it grows.
Horizontal slots are planned from the whole trace up front (`plan_tables`) so tables never
overlap, whatever the workload.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from dataclasses import dataclass

import numpy as np
from manim import LEFT, RIGHT, UP, Line, Rectangle, Triangle, VGroup, VMobject

from astrai.trace.events import Arrive, Event
from scenes.framework import theme
from scenes.framework.kit.glyphs import Atlas, Counter
from scenes.framework.kit.layout import Layout
from scenes.framework.kit.said import said

TITLE_H = 0.32
HEADER_H = 0.27
ROW_H = 0.27
FOOTER_H = 0.27
GAP = 0.36  # between blocks: room for the arrows' vertical lanes
MAX_BLOCK_W = 3.2
TEXT_LINES = 2  # under a table of a text request: what it asked, what it answered so far


@dataclass
class Segment:
    task: str
    first: int  # event index where the table appears
    last: int  # last event index where it is still there
    rows: int  # most pages it ever holds
    blocks: int = 1
    slot: int = 0


@dataclass
class TablePlan:
    segments: list[Segment]
    n_slots: int
    rows_per_block: int
    block_w: float
    x0: float
    prompts: dict[str, str] | None = None  # {task: what it asked}: the trace carries text
    text_lines: int = 0  # lines of text under each table (TEXT_LINES, or 1 where 2 crowd)

    @property
    def text(self) -> bool:
        return self.prompts is not None

    def slot_x(self, slot: int) -> float:
        return self.x0 + slot * self.block_w


def asked(events: list[Event], workload: dict | None = None) -> dict[str, str]:
    """What each text request asked, by task (every sample of a request asked it): a chat
    request's user message as its workload gives it, else its prompt text."""
    chats = {r["name"]: r["chat"] for r in (workload or {}).get("request", [])
             if isinstance(r, dict) and isinstance(r.get("chat"), str)}
    out = {}
    for ev in events:
        if isinstance(ev, Arrive) and ev.prompt_text:
            for name in ev.samples or [ev.task]:
                out[name] = chats.get(ev.task, ev.prompt_text)
    return out


def plan_tables(events: list[Event], layout: Layout, workload: dict | None = None) -> TablePlan:
    prompts = asked(events, workload)
    plan = _plan(events, layout, TEXT_LINES if prompts else 0, prompts)
    if prompts and plan.block_w < MAX_BLOCK_W:  # two lines crowd the tables: one line then
        plan = _plan(events, layout, 1, prompts)
    return plan


def _plan(events: list[Event], layout: Layout, lines: int, prompts: dict) -> TablePlan:
    band = layout.tables_top - layout.tables_bottom - lines * FOOTER_H  # + lines of text
    rows_per_block = max(2, int((band - TITLE_H - HEADER_H - FOOTER_H) / ROW_H + 1e-6))
    segments: list[Segment] = []
    open_: dict[str, Segment] = {}
    for i, ev in enumerate(events):
        tables = ev.state["page_tables"]
        for name in list(open_):
            if name not in tables:
                open_.pop(name)
        for name, pages in tables.items():
            seg = open_.get(name)
            if seg is None:
                seg = open_[name] = Segment(name, i, i, len(pages))
                segments.append(seg)
            seg.last, seg.rows = i, max(seg.rows, len(pages))
    for seg in segments:
        seg.blocks = max(1, math.ceil(seg.rows / rows_per_block))
    n_slots = max([1] + [_concurrent(segments)])
    while not _assign(segments, n_slots):
        n_slots += 1
    width = layout.right - layout.left
    block_w = min(MAX_BLOCK_W, width / n_slots)
    return TablePlan(segments, n_slots, rows_per_block, block_w, layout.left,
                     prompts or None, lines)


def _concurrent(segments: list[Segment]) -> int:
    points = sorted({s.first for s in segments})
    return max((sum(s.blocks for s in segments if s.first <= p <= s.last) for p in points),
               default=1)


def _assign(segments: list[Segment], n_slots: int) -> bool:
    """First fit, in order of appearance; False if some table finds no room."""
    busy: list[tuple[int, int, int]] = []  # (slot, blocks, last)
    for seg in segments:
        busy = [b for b in busy if b[2] >= seg.first]
        taken = set()
        for slot, blocks, _ in busy:
            taken.update(range(slot, slot + blocks))
        for slot in range(n_slots - seg.blocks + 1):
            if not taken & set(range(slot, slot + seg.blocks)):
                seg.slot = slot
                busy.append((slot, seg.blocks, seg.last))
                break
        else:
            return False
    return True


class TaskTable(VGroup):
    def __init__(self, name: str, seg: Segment, plan: TablePlan, layout: Layout,
                 page_size: int, color, header_protos):
        super().__init__()
        self.name, self.color, self.layout, self.page_size = name, color, layout, page_size
        self.R = plan.rows_per_block
        self.block_w = plan.block_w
        self.inner = plan.block_w - GAP
        self.x = plan.slot_x(seg.slot)
        self.top = layout.tables_top
        self.tw = seg.blocks * plan.block_w - GAP
        atlas = Atlas.get(theme.FS_BODY)
        self.title = theme.text(name, theme.FS_CAPTION, color, bold=True)
        self.title.move_to([self.x, self.top - TITLE_H / 2, 0], aligned_edge=LEFT)
        room = self.tw - self.title.width - 0.15
        self.len_fmt = "len {}" if room >= atlas.width(8) else "{}"
        self.length = Counter(atlas, "", theme.TEXT).place(
            [self.x + self.tw, self.top - TITLE_H / 2, 0], RIGHT)
        self.done = Counter(atlas, "", theme.DIM).place(
            [self.x + self.title.width + 0.12, self.top - TITLE_H / 2, 0], LEFT)
        self.cap_fmt = "cap {} = {}×{}" if self.inner >= atlas.width(16) else "cap {}"
        self.cap = Counter(atlas, "", theme.DIM).place([self.x, self._footer_y(1), 0], LEFT)
        self.blocks = VGroup()  # per block: border and column headers, added as rows need them
        self.rows = VGroup()
        self.arrows = VGroup()
        self.header_protos = header_protos
        self.add(self.title, self.done, self.length, self.cap, self.blocks, self.rows)
        self.prompt = plan.prompts.get(name) if plan.text else None
        self.said = Counter(atlas, "", theme.TEXT).place([self.x, self._footer_y(1) - FOOTER_H,
                                                          0], LEFT)
        self.answer = Counter(atlas, "", theme.TEXT).place(
            [self.x, self._footer_y(1) - 2 * FOOTER_H, 0], LEFT)
        self.said_cells = int(self.tw / atlas.advance)
        self.lines = plan.text_lines
        if plan.text:
            self.add(self.said, self.answer)
        self.pages: list[int] = []
        self.live_rows: list[VGroup] = []  # rows shown now (self.rows also holds ones fading out)

    # ---- geometry -------------------------------------------------------------------------

    def _block_x(self, b: int) -> float:
        return self.x + b * self.block_w

    def _row_y(self, k: int) -> float:
        return self.top - TITLE_H - HEADER_H - (k % self.R + 0.5) * ROW_H

    def _split(self) -> float:
        return self.inner * 0.44

    def _border(self, b: int, n_rows: int) -> Rectangle:
        h = HEADER_H + n_rows * ROW_H
        r = Rectangle(width=self.inner, height=h, stroke_color=self.color, stroke_width=2,
                      fill_color=self.color, fill_opacity=0.06)
        r.move_to([self._block_x(b), self.top - TITLE_H, 0], aligned_edge=LEFT + UP)
        return r

    def _block(self, b: int) -> VGroup:
        x0, split = self._block_x(b), self._split()
        y_head = self.top - TITLE_H - HEADER_H / 2
        log_h, phys_h = (p.copy() for p in self.header_protos)
        log_h.move_to([x0 + split / 2, y_head, 0])
        phys_h.move_to([x0 + split + (self.inner - split) / 2, y_head, 0])
        y_line = y_head - HEADER_H / 2
        head_line = Line([x0, y_line, 0], [x0 + self.inner, y_line, 0],
                         stroke_width=1.5, stroke_color=self.color)
        block = VGroup(self._border(b, 1), log_h, phys_h, head_line)
        block.border = block[0]
        return block

    def _row(self, k: int, page: int) -> VGroup:
        atlas = Atlas.get(theme.FS_BODY)
        b, split = k // self.R, self._split()
        x0, y = self._block_x(b), self._row_y(k)
        log = atlas.line(str(k), theme.DIM).move_to([x0 + split / 2, y, 0])
        phys = atlas.line(str(page), self.color)
        phys.move_to([x0 + split + (self.inner - split) / 2, y, 0])
        divider = Line([x0 + split, y - ROW_H / 2, 0], [x0 + split, y + ROW_H / 2, 0],
                       stroke_width=1, stroke_color=self.color, stroke_opacity=0.6)
        row = VGroup(divider, log, phys)
        row.logical, row.physical = log, phys
        return row

    def _arrow(self, k: int, page: int) -> Connector:
        """Out of the row to the right, up a lane beside the table (row k's lane further out,
        so lanes never cross rows), across the channel above the tables, up into the page."""
        b = k // self.R
        right, y = self._block_x(b) + self.inner, self._row_y(k)
        lane = right + 0.07 + min(0.05, (GAP - 0.1) / self.R) * (k % self.R)
        top, end_y = self.layout.tables_top, self.layout.arrow_end_y(page)
        tx = self.layout.page_x(page)
        points = [[right, y, 0], [lane, y, 0], [lane, top + 0.05, 0],
                  [tx, end_y - 0.2, 0], [tx, end_y, 0]]
        return Connector(points, self.color, page)

    def _footer_y(self, n: int) -> float:
        used = min(max(n, 1), self.R)
        return self.top - TITLE_H - HEADER_H - used * ROW_H - FOOTER_H / 2

    # ---- update ---------------------------------------------------------------------------

    def sync(self, pages: list[int], length: int, beat, arrows_layer: VGroup,
             finished: bool = False, output_text: str | None = None) -> None:
        keep = 0
        while keep < min(len(pages), len(self.pages)) and pages[keep] == self.pages[keep]:
            keep += 1
        for k in range(len(self.pages) - 1, keep - 1, -1):  # rows that went away
            row, arrow = self.live_rows.pop(), self.arrows[k]
            _take_out(beat, self.rows, row)
            _take_out(beat, arrows_layer, arrow)
            self.arrows.remove(arrow)
        for k in range(keep, len(pages)):
            b = k // self.R
            if b >= len(self.live_blocks()):
                _put_in(beat, self.blocks, self._block(b))
            row, arrow = self._row(k, pages[k]), self._arrow(k, pages[k])
            _put_in(beat, self.rows, row)
            self.live_rows.append(row)
            self.arrows.add(arrow)
            if beat is not None:
                seed = arrow.copy().scale(0.02, about_point=arrow.get_start())
                beat.grow(arrows_layer, arrow, seed)
            else:
                arrows_layer.add(arrow)
        if len(pages) != len(self.pages):
            for b, block in reversed(list(enumerate(self.live_blocks()))):
                n = min(max(len(pages) - b * self.R, 0), self.R)
                if n == 0 and b > 0:  # a column block left empty by a shrink goes with its rows
                    block.leaving = True
                    _take_out(beat, self.blocks, block)
                    continue
                if beat is not None:
                    beat.touch(block.border)
                block.border.become(self._border(b, max(n, 1)))
        self.pages = list(pages)
        room = self.tw - self.title.width - 0.12 - self.length.atlas.width(9)
        word = "done" if self.done.atlas.width(4) <= room else "✓"
        self.done.set(word if finished else "", beat=beat)
        self.length.set(self.len_fmt.format(length), beat=beat)
        # The length sits at the right edge of the last column block shown.
        right = self.x + max(len(self.live_blocks()), 1) * self.block_w - GAP
        if abs(self.length.anchor[0] - right) > 1e-6:
            if beat is not None:
                beat.touch(self.length.current)
            self.length.place([right, self.top - TITLE_H / 2, 0], RIGHT)
        cap = len(pages) * self.page_size
        self.cap.set(self.cap_fmt.format(cap, len(pages), self.page_size), beat=beat)
        y = self._footer_y(len(pages))
        if abs(self.cap.anchor[1] - y) > 1e-6:
            if beat is not None:
                beat.touch(self.cap.current)
            self.cap.place([self.x, y, 0], LEFT)
        if self.prompt is not None or output_text:
            if self.lines >= 2:  # what it asked, and under it what it answered so far
                self.said.set(said(self.prompt, None, self.said_cells), theme.DIM, beat=beat)
                self.answer.set(said(None, output_text, self.said_cells), beat=beat)
            else:  # one line: what it asked, then its answer once it has one
                self.said.set(said(self.prompt, output_text, self.said_cells), beat=beat)
            for k, line in enumerate((self.said, self.answer), start=1):
                if abs(line.anchor[1] - (y - k * FOOTER_H)) > 1e-6:
                    if beat is not None:
                        beat.touch(line.current)
                    line.place([self.x, y - k * FOOTER_H, 0], LEFT)

    def parts(self) -> list:
        return [self, *self.arrows]

    def shown(self) -> dict:
        rows = [[int(r.logical.shown()), int(r.physical.shown())] for r in self.live_rows]
        targets = [self._nearest_page(a.get_end()[0]) for a in self.arrows]
        return {"rows": rows, "arrows": targets, "length": self.length.text,
                "cap": self.cap.text, "done": self.done.text.strip(),
                "blocks": len(self.live_blocks()), "said": self.said.text,
                "answer": self.answer.text}

    def live_blocks(self) -> list[VGroup]:
        """Column blocks shown now (a block being taken out has left `blocks` already, or
        leaves it when its beat finishes)."""
        return [b for b in self.blocks if not getattr(b, "leaving", False)]

    def _nearest_page(self, x: float) -> int:
        return min(range(self.layout.n_pages), key=lambda p: abs(self.layout.page_x(p) - x))


class Connector(VGroup):
    """A polyline ending in a small arrowhead; `end` is the apex (what it points at)."""

    TIP = 0.11

    def __init__(self, points: list, color, page: int):
        super().__init__()
        end = np.array(points[-1], dtype=float)
        line = VMobject(stroke_color=color, stroke_width=2.2, stroke_opacity=0.9)
        line.set_points_as_corners([np.array(p, dtype=float) for p in points[:-1]]
                                   + [end - [0, self.TIP * 0.8, 0]])
        tip = Triangle(fill_color=color, fill_opacity=0.95, stroke_width=0)
        tip.stretch_to_fit_width(self.TIP).stretch_to_fit_height(self.TIP)
        tip.move_to(end, aligned_edge=UP)
        self.add(line, tip)
        self.line, self.tip, self.page = line, tip, page

    def get_start(self):
        return self.line.points[0]

    def get_end(self):
        return self.tip.get_top()


def _put_in(beat, container, mob) -> None:
    if beat is None:
        container.add(mob)
    else:
        beat.appear(container, mob)


def _take_out(beat, container, mob) -> None:
    if beat is None:
        container.remove(mob)
    else:
        beat.vanish(container, mob)


class PageTables(VGroup):
    """All tables currently shown; arrows live in their own layer (`self.arrows_layer`)."""

    def __init__(self, layout: Layout, plan: TablePlan, page_size: int, palette: theme.Palette):
        super().__init__()
        self.layout, self.plan, self.page_size, self.palette = layout, plan, page_size, palette
        self.arrows_layer = VGroup()
        self.tables: dict[str, TaskTable] = {}
        self._segments: dict[str, deque[Segment]] = defaultdict(deque)
        for seg in plan.segments:
            self._segments[seg.task].append(seg)
        inner = plan.block_w - GAP
        words = (("logical", "physical") if inner >= 2.45 else ("log", "phys") if inner >= 1.2
                 else ("l", "p"))
        self.header_protos = tuple(theme.text(w, theme.FS_BODY, theme.DIM) for w in words)

    def sync(self, state: dict, beat=None) -> dict[str, str]:
        """Returns {task: 'new' | 'gone' | 'grew' | 'shrank'} for tables that changed."""
        changes = {}
        for name in list(self.tables):
            if name not in state["page_tables"]:
                table = self.tables.pop(name)
                _take_out(beat, self, table)
                for arrow in table.arrows:
                    _take_out(beat, self.arrows_layer, arrow)
                changes[name] = "gone"
        for name, pages in state["page_tables"].items():
            table = self.tables.get(name)
            if table is None:
                seg = self._segments[name].popleft()
                table = TaskTable(name, seg, self.plan, self.layout, self.page_size,
                                  self.palette.color(name), self.header_protos)
                self.tables[name] = table
                _put_in(beat, self, table)
                changes[name] = "new"
            before = len(table.pages)
            finished = state["status"].get(name) in ("finished", "done")
            table.sync(pages, state["lengths"][name], beat, self.arrows_layer, finished,
                       state.get("output_text", {}).get(name))
            if name not in changes and len(pages) != before:
                changes[name] = "grew" if len(pages) > before else "shrank"
        return changes

    def shown(self) -> dict:
        return {name: t.shown() for name, t in self.tables.items()}
