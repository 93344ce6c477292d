"""The free bitmask and the refcount list, one cell under each frame.

Bit i sits under frame i, so the row reads page 0 first (left to right), the same order as the
frames and as `astrai.trace.text.mask_bits`; the row label says so. The cells are opaque so the
page-table arrows, drawn beneath them, seem to run into the frames.
"""

from __future__ import annotations

from manim import LEFT, ORIGIN, RoundedRectangle, VGroup

from astrai.trace.text import mask_bits
from scenes.framework import theme
from scenes.framework.kit.glyphs import Atlas, Counter
from scenes.framework.kit.layout import Layout


class BitRows(VGroup):
    def __init__(self, layout: Layout):
        super().__init__()
        self.layout = layout
        atlas = Atlas.get(theme.FS_BODY)
        self.cells = VGroup()
        self.bits: list[Counter] = []
        self.refs: list[Counter] = []
        w = min(layout.frame_w, 0.5)
        for row in layout.rows:
            for page in row.pages:
                x = layout.page_x(page)
                for y, store in ((row.bits_y, self.bits), (row.refs_y, self.refs)):
                    cell = RoundedRectangle(corner_radius=0.05, width=w, height=row.cell_h,
                                            stroke_width=1, stroke_color=theme.PANEL_EDGE,
                                            fill_color=theme.PANEL, fill_opacity=1.0)
                    cell.move_to([x, y, 0])
                    self.cells.add(cell)
                    c = Counter(atlas, "", theme.TEXT).place([x, y, 0], ORIGIN)
                    store.append(c)
        self.labels = VGroup()
        for row in layout.rows:
            for y, word in ((row.bits_y, "free bit"), (row.refs_y, "refs")):
                lab = theme.text(word, theme.FS_BODY, theme.DIM)
                lab.move_to([layout.left + 0.05, y, 0], aligned_edge=LEFT)
                self.labels.add(lab)
        self.add(*self.bits, *self.refs)
        self.shown_mask: int | None = None

    def static(self) -> VGroup:
        """Cells and row labels: they never change, so the scene paints them once per play."""
        return VGroup(self.cells, self.labels)

    def sync(self, state: dict, beat=None) -> list[int]:
        """Set every bit and refcount to the state's; returns pages whose bit or refs changed."""
        changed = []
        bits = mask_bits(state["free_mask"], self.layout.n_pages)
        for page, (b, r) in enumerate(zip(bits, state["refs"])):
            moved = self.bits[page].set(b, theme.GOOD if b == "1" else theme.DIM, beat)
            moved |= self.refs[page].set(str(r), theme.TEXT if r else theme.DIM, beat)
            if moved:
                changed.append(page)
        self.shown_mask = state["free_mask"]
        return changed

    def shown(self) -> dict:
        return {"bits": "".join(c.text for c in self.bits),
                "refs": [int(c.text) for c in self.refs]}
