"""Where everything goes on the 16:9 frame (14.2 x 8 units), computed from the trace's geometry.

Top to bottom: header (title, step, phases), two caption lines and a status line, the page pool
(frames, free bits, refcounts), the page tables, and a full-width code panel at the bottom (full
width because real source lines run to ~95 characters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from manim import config


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
