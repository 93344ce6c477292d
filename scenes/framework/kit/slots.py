"""The K/V store slot by slot: a token's K/V as a cell, the flat storage of page frames with the
null page past the pool, and what text a picture of them shows (read back, for tests).

A cell sits on the slot the real write put it in; `Storage.slot_at` reads back which slot a
cell is over, so what a test reads is where the cell is drawn, not where code meant it to go.
"""

from __future__ import annotations

import numpy as np
from manim import DOWN, LEFT, RIGHT, UP, DashedVMobject, Rectangle, RoundedRectangle, VGroup

from scenes.framework import theme
from scenes.framework.kit.glyphs import Atlas, Counter, GlyphText

PITCH = 0.5  # one slot / one token cell
CELL_W, CELL_H = 0.44, 0.36
FRAME_GAP = 0.3  # between page frames
NULL_GAP = 0.45  # extra gap before the null page: it lies past the pool
FRAME_PAD = 0.08  # a page frame's room around its cells, above and below


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
                                     height=CELL_H + 2 * FRAME_PAD, stroke_width=2,
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



def drawn_texts(mobjects) -> list[tuple[str, str, tuple]]:
    """Every text drawn among `mobjects` (a scene's): (kind, text, (x0, y0, x1, y1)); kind
    "cell" for the labels inside K/V cells (those stack on purpose in the null page), else
    "text"."""
    out, seen = [], set()

    def visible(m) -> bool:
        return any(len(r.points) and r.fill_rgbas[:, 3].max() > 0.05
                   for r in m.family_members_with_points() if not getattr(r, "ghost", 0))

    for top in mobjects:
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
