"""Monospaced text built from a glyph atlas: Pango renders each character once, lines are copies.

A new `Text` costs 20-40 ms (and a 25-line code listing well over a second); copying a glyph
costs microseconds. Every piece of text that changes while a replay runs (counters, captions,
code listings) is therefore composed here from per-character glyphs of DejaVu Sans Mono, laid out
on a fixed cell grid. Each glyph remembers its character and column, so `GlyphText.shown()` reads
back exactly what is on screen.
"""

from __future__ import annotations

import string

import numpy as np
from manim import LEFT, NORMAL, ORIGIN, Rectangle, Text, VGroup, VMobject

from scenes.framework import theme

# ↵ ⇥ ⟨ ⟩ ‹ ›: how a token's newline, tab, control name or stray bytes are drawn (astrai.text)
EXTRA = "→←↑↓·…×−≥≤▶✓⌈⌉│─↵⇥⟨⟩‹›"
CHARS = "".join(c for c in string.printable if c.isprintable() and not c.isspace()) + EXTRA


class Atlas:
    """The glyphs of one font size; `Atlas.get(size)` shares them across the process."""

    _cache: dict[tuple, Atlas] = {}

    @classmethod
    def get(cls, size: float = theme.FS_BODY, weight: str = NORMAL) -> Atlas:
        key = (float(size), weight)
        if key not in cls._cache:
            cls._cache[key] = cls(size, weight)
        return cls._cache[key]

    def __init__(self, size: float, weight: str = NORMAL):
        self.size = size
        row = Text(CHARS, font=theme.MONO, font_size=size, weight=weight, disable_ligatures=True)
        if len(row.submobjects) != len(CHARS):
            raise RuntimeError(f"atlas: {len(row.submobjects)} glyphs for {len(CHARS)} chars")
        probe = Text("M" * 20, font=theme.MONO, font_size=size)
        self.advance = (probe[-1].get_center()[0] - probe[0].get_center()[0]) / 19
        self.height = Text("Hg|(", font=theme.MONO, font_size=size).height
        left, mid = row.get_left()[0], row.get_center()[1]
        # Each glyph's outline relative to its own cell: x from the cell's left edge, y from
        # the line's middle. A line is then these outlines shifted by column * advance.
        self.outlines: dict[str, np.ndarray] = {
            ch: glyph.points - np.array([left + i * self.advance, mid, 0.0])
            for i, (ch, glyph) in enumerate(zip(CHARS, row.submobjects))
        }
        self._protos: dict[str, VMobject] = {}

    def width(self, n_chars: int) -> float:
        return n_chars * self.advance

    def run(self, cells: list[tuple[str, int]], color) -> VMobject:
        """One VMobject drawing the given (character, column) cells in one colour: a line of
        text is a handful of these rather than a mobject per glyph (far cheaper to draw)."""
        proto = self._protos.get(str(color))
        if proto is None:
            proto = self._protos[str(color)] = VMobject(fill_color=color, fill_opacity=1.0,
                                                        stroke_width=0)
        vm = _clone(proto)
        parts = [self.outlines.get(ch, self.outlines["?"]) + [col * self.advance, 0.0, 0.0]
                 for ch, col in cells]
        vm.points = np.concatenate(parts) if parts else np.zeros((0, 3))
        vm.cells = list(cells)
        return vm

    def line(self, content, color=theme.TEXT) -> GlyphText:
        """content: a str, or a list of (str, colour) segments."""
        return GlyphText(self, content, color)


def _clone(proto: VMobject) -> VMobject:
    """A copy of a childless VMobject without deepcopy (which costs ~50x more): share the
    immutable attributes, copy the arrays that animations and moves change in place."""
    g = object.__new__(type(proto))
    d = proto.__dict__.copy()
    for attr in ("points", "fill_rgbas", "stroke_rgbas", "background_stroke_rgbas"):
        d[attr] = d[attr].copy()
    d["submobjects"], d["updaters"], d["target"] = [], [], None
    g.__dict__ = d
    return g


class GlyphText(VGroup):
    """One line of monospaced text on a cell grid. Its bounding box is the cells, not the ink:
    an invisible box spans len(text) cells, so alignment does not depend on which glyphs show.
    Each colour segment is one VMobject (a run) that remembers which character it drew in
    which column, so `shown()` reads back exactly what is on screen.
    """

    def __init__(self, atlas: Atlas, content, color=theme.TEXT):
        super().__init__()
        segments = [(content, color)] if isinstance(content, str) else list(content)
        self.atlas = atlas
        self.text = "".join(s for s, _ in segments)
        n = max(len(self.text), 1)
        box = Rectangle(width=atlas.width(n), height=atlas.height, stroke_width=0,
                        fill_opacity=0)
        box.move_to(ORIGIN, aligned_edge=LEFT)
        box.ghost = True  # layout only: scenes.framework.kit.camera.ReplayCamera does not draw it
        self.box = box
        self.add(box)
        self.runs: list[VMobject] = []
        col = 0
        for seg, c in segments:
            cells = []
            for ch in seg:
                if not ch.isspace():
                    cells.append((ch, col))
                col += 1
            if cells:
                run = atlas.run(cells, c)
                self.runs.append(run)
                self.add(run)

    def shown(self) -> str:
        """The text as drawn: each run's characters at their columns, spaces between."""
        cells = [" "] * len(self.text)
        for run in self.runs:
            for ch, col in run.cells:
                cells[col] = ch
        return "".join(cells)

    def set_text_color(self, color) -> GlyphText:
        for run in self.runs:
            run.set_fill(color, opacity=1.0)
        return self


class Counter(VGroup):
    """A slot for a GlyphText that changes (a number, a short label) at a fixed anchor.

    `set(text)` swaps the glyphs at once and returns True if the text changed; a replay Beat
    then cross-fades from what the slot showed when the beat began (see scenes.framework.kit.anim).
    """

    def __init__(self, atlas: Atlas, text: str = "", color=theme.TEXT, align=LEFT):
        super().__init__()
        self.atlas, self.color, self.align = atlas, color, align
        self.anchor = np.zeros(3)
        self.current = atlas.line(text, color)
        self._key = (text, str(color))
        self.add(self.current)

    def place(self, point, align=None) -> Counter:
        """Anchor: the left edge (align=LEFT), right edge (RIGHT) or centre (ORIGIN) of the text."""
        if align is not None:
            self.align = align
        self.anchor = np.array(point, dtype=float)
        self._position(self.current)
        return self

    def _position(self, line: GlyphText) -> None:
        if np.allclose(self.align, ORIGIN):
            line.move_to(self.anchor)
        else:
            line.move_to(self.anchor, aligned_edge=self.align)

    @property
    def text(self) -> str:
        return self.current.shown()

    def set(self, content, color=None, beat=None) -> bool:
        """Show `content`: a string in one colour, or a list of (text, colour) segments."""
        if isinstance(content, str):
            color = self.color if color is None else color
            key, args = (content, str(color)), (content, color)
        else:
            key, args = tuple((s, str(c)) for s, c in content), (content,)
        if key == self._key:
            return False
        self._key = key
        line = self.atlas.line(*args)
        self._position(line)
        if beat is not None:
            beat.replace(self, self.current, line)
        else:
            self.remove(self.current)
            self.add(line)
        self.current = line
        return True
