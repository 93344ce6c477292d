"""A board for a scene's own beats: an opaque panel over the page tables and their arrows.

The pool, bits, refcounts, captions and code panel stay in view above and below it; what a
scene draws on the board (a hash chain, a queue, an end card) is built from trace fields.
`Board.lines` lays out rows of monospaced text from the top; `Board.free_top` is where the next
row goes, so content never runs off the board (`fits` says whether a height still fits).
"""

from __future__ import annotations

from manim import LEFT, Rectangle, VGroup

from scenes.framework import theme
from scenes.framework.kit.glyphs import Atlas
from scenes.framework.kit.layout import Layout


class Board(VGroup):
    PAD = 0.14

    def __init__(self, layout: Layout, title: str = "", full: bool = False):
        """full: cover everything below the captions (pool and code panel too), for a card."""
        super().__init__()
        self.layout = layout
        top = layout.status_y - 0.16 if full else layout.arrow_y + 0.02
        bottom = layout.code_bottom if full else layout.code_top + 0.03
        self.left, self.right, self.top, self.bottom = layout.left, layout.right, top, bottom
        self.bg = Rectangle(width=self.right - self.left, height=top - bottom,
                            fill_color=theme.BG, fill_opacity=1.0, stroke_color=theme.PANEL_EDGE,
                            stroke_width=1.5)
        self.bg.move_to([(self.left + self.right) / 2, (top + bottom) / 2, 0])
        self.add(self.bg)
        self.free_top = top - self.PAD
        if title:
            self.line(title, theme.FS_CAPTION, theme.TEXT)

    @property
    def width(self) -> float:  # type: ignore[override]
        return self.right - self.left

    def fits(self, height: float) -> bool:
        return self.free_top - height >= self.bottom + self.PAD - 1e-6

    def line(self, content, size=theme.FS_BODY, color=theme.TEXT, x: float | None = None,
             gap: float = 0.06):
        """A row of monospaced text (a str or (text, colour) segments) under the last one."""
        atlas = Atlas.get(size)
        g = atlas.line(content, color)
        y = self.free_top - atlas.height / 2
        g.move_to([self.left + self.PAD if x is None else x, y, 0], aligned_edge=LEFT)
        self.add(g)
        self.free_top -= atlas.height + gap
        return g

    def skip(self, dy: float) -> None:
        self.free_top -= dy

    def texts(self) -> list[str]:
        """Every line of text on the board, as drawn (for tests)."""
        from scenes.framework.kit.glyphs import GlyphText

        return [m.shown() for m in self.get_family() if isinstance(m, GlyphText)]
