"""The LRU strip: cached pages (refs 0, still holding a recorded prefix) in the cache's order.

Left is the least recently used end (evicted first), right the most recent. The order is the
trace's `state["cached"]`, never worked out here: `sync(state, beat)` moves each page's cell to
its place, fades in pages that joined and fades out pages that left (revived or evicted).
"""

from __future__ import annotations

from manim import LEFT, RIGHT, Rectangle, VGroup

from scenes.framework import theme
from scenes.framework.kit.glyphs import Atlas


class LruStrip(VGroup):
    CELL = 0.36

    def __init__(self, n_pages: int, right: float, y: float):
        super().__init__()
        atlas = Atlas.get(theme.FS_BODY)
        self.n_pages, self.y = n_pages, y
        self.x0 = right - n_pages * self.CELL
        self.title = atlas.line("cached, LRU first", theme.CACHED)
        self.title.move_to([self.x0, y + self.CELL / 2 + 0.2, 0], aligned_edge=LEFT)
        self.lru = atlas.line("← evicted first", theme.DIM)
        self.lru.move_to([self.x0, y - self.CELL / 2 - 0.18, 0], aligned_edge=LEFT)
        self.mru = atlas.line("recent →", theme.DIM)
        self.mru.move_to([right, y - self.CELL / 2 - 0.18, 0], aligned_edge=RIGHT)
        self.rail = Rectangle(width=n_pages * self.CELL, height=self.CELL, stroke_width=1.2,
                              stroke_color=theme.FAINT, fill_opacity=0)
        self.rail.move_to([self.x0 + n_pages * self.CELL / 2, y, 0])
        self.static = VGroup(self.title, self.rail, self.lru, self.mru)
        self.cells: list[VGroup] = []
        for page in range(n_pages):
            box = Rectangle(width=self.CELL - 0.06, height=self.CELL - 0.06, stroke_width=2,
                            stroke_color=theme.CACHED, fill_color=theme.CACHED,
                            fill_opacity=0.3)
            num = atlas.line(str(page), theme.TEXT)
            cell = VGroup(box, num)
            cell.page = page
            self._place(cell, 0)
            cell.set_opacity(0.0)
            self.cells.append(cell)
            self.add(cell)
        self.order: list[int] = []

    def _place(self, cell: VGroup, slot: int) -> None:
        x = self.x0 + (slot + 0.5) * self.CELL
        cell[0].move_to([x, self.y, 0])
        cell[1].move_to([x, self.y, 0])

    def sync(self, cached: list[int], beat=None) -> bool:
        """Show `cached` (LRU first). True if anything changed."""
        cached = list(cached)
        if cached == self.order:
            return False
        for cell in self.cells:
            page = cell.page
            was = page in self.order
            now = page in cached
            if not was and not now:
                continue
            if beat is not None:
                for m in cell:
                    beat.touch(m)
            if now:
                self._place(cell, cached.index(page))
                cell[0].set_stroke(opacity=1.0).set_fill(opacity=0.3)
                cell[1].set_opacity(1.0)
            else:
                cell[0].set_stroke(opacity=0.0).set_fill(opacity=0.0)
                cell[1].set_opacity(0.0)
        self.order = cached
        return True

    def shown(self) -> list[int]:
        """The pages drawn, left to right (read from the cells' positions and opacity)."""
        seen = [(c[0].get_center()[0], c.page) for c in self.cells
                if c[0].stroke_rgbas[0, 3] > 0.5]
        return [page for _, page in sorted(seen)]

    @property
    def span(self) -> tuple[float, float]:
        return (self.x0 - 0.05, self.rail.get_right()[0])
