"""The one layout system: named rectangles of the 16:9 frame (14.2 x 8 units).

A `Region` is a rectangle of the frame; a scene kind's regions are named once, here for the
replays (`make_layout`, computed from the trace's geometry) and in `plans` for the other kinds
(comparison scenes, the write/gather close-up, the cards). Scene files ask for regions by name
and place mobjects relative to them, so moving a band moves what is in it.

    screen = Region.frame()
    plot = screen.inset(left=0.66, right=0.61)
    bands = plot.stack([("grid", 1.0, 0.9), ("chart", 1.05, 0.6)])
    box.move_to(bands["grid"].left_at(bands["grid"].cy), aligned_edge=LEFT)

A replay's layout, top to bottom: header (title, step, phases), two caption lines and a status
line, the page pool (frames, free bits, refcounts), the page tables, and a full-width code panel
at the bottom (full width because real source lines run to ~95 characters); `Layout.regions`
names them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from manim import config


@dataclass(frozen=True)
class Region:
    left: float
    right: float
    top: float
    bottom: float

    @classmethod
    def frame(cls) -> Region:
        """The whole frame (14.2 x 8 units at 16:9)."""
        w, h = config.frame_width / 2, config.frame_height / 2
        return cls(-w, w, h, -h)

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.top - self.bottom

    @property
    def cx(self) -> float:
        return (self.left + self.right) / 2

    @property
    def cy(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def center(self) -> np.ndarray:
        return np.array([self.cx, self.cy, 0.0])

    def point(self, x: float, y: float) -> np.ndarray:
        return np.array([x, y, 0.0])

    def left_at(self, y: float, dx: float = 0.0) -> np.ndarray:
        """On the left edge (moved `dx` right) at height `y`."""
        return self.point(self.left + dx, y)

    def right_at(self, y: float, dx: float = 0.0) -> np.ndarray:
        """On the right edge (moved `dx` right) at height `y`."""
        return self.point(self.right + dx, y)

    def above(self, dy: float, x: float | None = None) -> np.ndarray:
        """`dy` above the top edge, at `x` (default: the left edge)."""
        return self.point(self.left if x is None else x, self.top + dy)

    def below(self, dy: float, x: float | None = None) -> np.ndarray:
        """`dy` below the bottom edge, at `x` (default: the left edge)."""
        return self.point(self.left if x is None else x, self.bottom - dy)

    def inset(self, left: float = 0.0, right: float = 0.0, top: float = 0.0,
              bottom: float = 0.0) -> Region:
        """Smaller by these margins (negative margins grow it)."""
        return Region(self.left + left, self.right - right, self.top - top, self.bottom + bottom)

    def columns(self, *widths: float, gap: float = 0.0) -> list[Region]:
        """Side by side from the left edge, `gap` apart; a width of None takes what is left."""
        fixed = sum(w for w in widths if w is not None) + gap * (len(widths) - 1)
        rest = self.width - fixed
        out, x = [], self.left
        for w in widths:
            w = rest if w is None else w
            out.append(Region(x, x + w, self.top, self.bottom))
            x += w + gap
        return out

    def stack(self, bands: list[tuple[str, float, float]]) -> dict[str, Region]:
        """Bands from the top down: (name, height, gap above it), each as wide as this."""
        out, y = {}, self.top
        for name, height, gap in bands:
            y -= gap
            out[name] = Region(self.left, self.right, y, y - height)
            y -= height
        if y < self.bottom - 1e-6:
            raise ValueError(f"bands run {self.bottom - y:.2f} units past the region's bottom")
        return out

    def cell(self, col: float, row: float, col_w: float, row_h: float) -> np.ndarray:
        """The centre of cell (`col`, `row`) of a grid of `col_w` x `row_h` cells filling this
        region from its top-left corner."""
        return self.point(self.left + (col + 0.5) * col_w, self.top - (row + 0.5) * row_h)

    def span(self, top: Region, bottom: Region, above: float = 0.0,
             below: float = 0.0) -> Region:
        """This region's width, from `above` over `top`'s top to `below` under `bottom`'s
        bottom (to cover those bands and what hangs off them)."""
        return Region(self.left, self.right, top.top + above, bottom.bottom - below)


@dataclass
class PoolRow:
    pages: list[int]
    frame_top: float
    frame_h: float
    bits_y: float
    refs_y: float
    cell_h: float


@dataclass
class Layout:
    n_pages: int
    left: float
    right: float
    header_y: float
    caption_y: float
    detail_y: float
    status_y: float
    label_w: float
    frame_w: float
    pitch: float
    rows: list[PoolRow]
    arrow_y: float  # where arrows from the tables end: under each page's column (last row)
    tables_top: float
    tables_bottom: float
    code_top: float
    code_bottom: float
    code_lines: int
    line_h: float

    def page_x(self, page: int) -> float:
        row = self.row_of(page)
        return self.left + self.label_w + (row.pages.index(page) + 0.5) * self.pitch

    def arrow_end_y(self, page: int) -> float:
        """Under the page's own column (for a wrapped pool, arrows to upper rows pass behind
        the rows below them)."""
        row = self.row_of(page)
        return row.refs_y - row.cell_h / 2 - 0.03

    @property
    def regions(self) -> dict[str, Region]:
        """The replay's bands by name, top to bottom (the header's row, the caption, detail and
        status lines as thin bands at their heights, the pool, the tables, the code panel)."""
        pool_bottom = self.rows[-1].refs_y - self.rows[-1].cell_h / 2

        def line(y: float) -> Region:
            return Region(self.left, self.right, y, y)

        return {"screen": Region.frame(), "header": line(self.header_y),
                "caption": line(self.caption_y), "detail": line(self.detail_y),
                "status": line(self.status_y),
                "pool": Region(self.left, self.right, self.rows[0].frame_top, pool_bottom),
                "tables": Region(self.left, self.right, self.tables_top, self.tables_bottom),
                "code": Region(self.left, self.right, self.code_top, self.code_bottom)}

    def row_of(self, page: int) -> PoolRow:
        for row in self.rows:
            if page in row.pages:
                return row
        raise KeyError(page)


def edges() -> tuple[float, float]:
    """The left and right edges every layout's text and pictures keep inside."""
    half_w = config.frame_width / 2
    return -half_w + 0.12, half_w - 0.12


def make_layout(n_pages: int, code_lines: int | None = None, table_rows: int = 5) -> Layout:
    """table_rows: the most rows any page table will need (the frames get what is left).

    Up to 32 pages sit in one row; bigger pools wrap into rows of up to 32, and the code panel
    gives up two lines to make room."""
    left, right = edges()
    label_w = 1.3
    per_row = n_pages if n_pages <= 32 else math.ceil(n_pages / math.ceil(n_pages / 32))
    n_rows = math.ceil(n_pages / per_row)
    if code_lines is None:
        code_lines = 7 if n_rows == 1 else 5
    pitch = min(1.6, (right - left - label_w) / per_row)
    frame_w = pitch * (0.86 if pitch > 0.8 else 0.9)
    top = config.frame_height / 2
    line_h = 0.29
    code_bottom = -top + 0.06
    code_top = code_bottom + 0.12 + line_h * (code_lines + 1)
    cell_h = 0.26

    def build(frame_h: float) -> Layout:
        y = top - 1.47
        rows = []
        for r in range(n_rows):
            pages = list(range(r * per_row, min(n_pages, (r + 1) * per_row)))
            bits_y = y - frame_h - 0.06 - cell_h / 2
            refs_y = bits_y - cell_h - 0.02
            rows.append(PoolRow(pages, y, frame_h, bits_y, refs_y, cell_h))
            y = refs_y - cell_h / 2 - 0.08
        arrow_y = rows[-1].refs_y - cell_h / 2 - 0.03
        return Layout(
            n_pages=n_pages, left=left, right=right, header_y=top - 0.32, caption_y=top - 0.70,
            detail_y=top - 0.99, status_y=top - 1.27, label_w=label_w, frame_w=frame_w,
            pitch=pitch, rows=rows, arrow_y=arrow_y, tables_top=arrow_y - CHANNEL,
            tables_bottom=code_top + 0.08, code_top=code_top, code_bottom=code_bottom,
            code_lines=code_lines, line_h=line_h,
        )

    frame_h = 0.66 if n_rows == 1 else 0.5
    lay = build(frame_h)
    # The tables band needs title, header, rows and footer (see scenes.framework.kit.tables).
    need = 0.32 + 0.27 + 0.27 * max(table_rows, 1) + 0.27 + 0.05
    spare = (lay.tables_top - lay.tables_bottom) - need
    if n_rows == 1 and spare > 0:
        lay = build(min(1.2, frame_h + spare))
    return lay


CHANNEL = 0.42  # between the refcount row and the tables: where arrows turn towards their page
