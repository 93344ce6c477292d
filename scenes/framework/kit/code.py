"""The code panel: the real source of the engine function that ran, lines that ran highlighted.

Source comes from astrai.trace.source: the shipped engine file a trace frame's `file` names,
read as text, and the span of the function its `fn` (a qualname such as "PageAllocator._take")
names, found with `ast` - never retyped, and nothing a trace names is ever imported or run. The
trace gives absolute line numbers; the span gives the first line, so line L is row L - start of
the listing. Each function's listing is composed once (from the glyph atlas) and reused; a
function longer than the panel shows the window of rows that holds the running line and the
most lines that ran.
"""

from __future__ import annotations

import textwrap

from manim import LEFT, Rectangle, RoundedRectangle, VGroup

from astrai.errors import TraceFormatError
from astrai.trace import source as engine_source
from scenes.framework import theme
from scenes.framework.anchors import Anchor, marked_line
from scenes.framework.kit.glyphs import Atlas, GlyphText
from scenes.framework.kit.layout import Layout


def source_of(file: str, qualname: str) -> tuple[list[str], int]:
    """(dedented source lines, absolute number of the first) of an engine function.

    TraceFormatError for anything but a function defined in a shipped engine file."""
    if file not in engine_source.PANEL_FILES or qualname not in engine_source.functions(file):
        raise TraceFormatError(f"code frame: {file!r} {qualname!r} is not engine code")
    lines, start = engine_source.source_of(file, qualname)
    return textwrap.dedent("\n".join(lines)).rstrip("\n").split("\n"), start


class Listing:
    """One function's source as glyph lines, built once."""

    def __init__(self, file: str, fn: str):
        self.file, self.fn = file, fn
        self.source, self.start = source_of(file, fn)
        atlas = Atlas.get(theme.FS_CODE)
        self.lines: list[GlyphText] = [atlas.line(s, theme.TEXT) for s in self.source]
        self.end = self.start + len(self.source) - 1
        self.width = atlas.width(max(len(s) for s in self.source))

    def text(self) -> str:
        """The listing as drawn, read back from its glyphs."""
        return "\n".join(line.shown().rstrip() for line in self.lines)


def anchor_line(a: Anchor) -> int:
    """The absolute line anchor `a` marks in today's source (LookupError if it is gone)."""
    line = marked_line(a, *source_of(a.file, a.fn))
    if line is None:
        raise LookupError(f"engine anchor {a.name}: {a.fn} no longer has its line")
    return line


def choose_window(n: int, ran: list[int], current: int, size: int) -> int:
    """First row of the `size` rows to show: must hold `current`, then the most `ran` rows."""
    if n <= size:
        return 0
    best, best_key = 0, None
    for s in range(0, n - size + 1):
        if not s <= current < s + size:
            continue
        key = (-sum(1 for r in ran if s <= r < s + size), abs(s + (size - 1) / 2 - current))
        if best_key is None or key < best_key:
            best, best_key = s, key
    return best


class CodePanel(VGroup):
    """The panel at the bottom. `show(frame)` swaps listings instantly (no fade: the listing is
    big, and instant keeps it in the static layer), and moves the highlights."""

    def __init__(self, layout: Layout):
        super().__init__()
        self.layout = layout
        self.atlas = Atlas.get(theme.FS_CODE)
        self.bg = RoundedRectangle(corner_radius=0.08, width=layout.right - layout.left,
                                   height=layout.code_top - layout.code_bottom,
                                   stroke_color=theme.PANEL_EDGE, stroke_width=1.5,
                                   fill_color=theme.PANEL, fill_opacity=1.0)
        self.bg.move_to([(layout.left + layout.right) / 2,
                         (layout.code_top + layout.code_bottom) / 2, 0])
        self.text_x = layout.left + 0.3
        self.listings: dict[tuple[str, str], Listing] = {}
        self.content = VGroup()
        self.add(self.content)
        self.shown_info: dict | None = None

    def listing(self, file: str, fn: str) -> Listing:
        key = (file, fn)
        if key not in self.listings:
            self.listings[key] = Listing(file, fn)
        return self.listings[key]

    def _row_y(self, i: int) -> float:
        return self.layout.code_top - 0.06 - self.layout.line_h * (i + 1.5)

    def show(self, frame: dict, note: str = "", highlight: bool = True) -> dict:
        lst = self.listing(frame["file"], frame["fn"])
        n, size = len(lst.lines), self.layout.code_lines
        rel_ran = [r - lst.start for r in frame.get("ran", []) if lst.start <= r <= lst.end]
        if not highlight:
            rel_ran = []
        current = frame.get("line", lst.start) - lst.start
        current = min(max(current, 0), n - 1)
        first = choose_window(n, rel_ran, current, size)
        rows = range(first, min(n, first + size))
        content = VGroup()
        line_w = self.layout.right - self.layout.left - 0.4
        for i, r in enumerate(rows):
            y = self._row_y(i)
            if highlight and (r in rel_ran or r == current):
                bar = Rectangle(width=line_w, height=self.layout.line_h * 0.92, stroke_width=0,
                                fill_color=theme.ACCENT if r == current else theme.RAN,
                                fill_opacity=0.34 if r == current else 0.16)
                bar.move_to([self.text_x - 0.08, y, 0], aligned_edge=LEFT)
                content.add(bar)
            if highlight and r == current:
                mark = self.atlas.line("▶", theme.ACCENT)
                mark.move_to([self.layout.left + 0.07, y, 0], aligned_edge=LEFT)
                content.add(mark)
            line = lst.lines[r]
            line.move_to([self.text_x, y, 0], aligned_edge=LEFT)
            content.add(line)
        where = f"  {lst.file}:{lst.start}-{lst.end}"
        window = f"  (rows {first + 1}-{rows[-1] + 1} of {n})" if n > size else ""
        room = int((self.layout.right - self.layout.left - 0.45) / self.atlas.advance)
        tail = (where + window + ("   " + note if note else ""))[: max(room - len(lst.fn), 0)]
        title = self.atlas.line([(lst.fn, theme.ACCENT), (tail, theme.DIM)])
        title.move_to([self.text_x, self._row_y(-1) + 0.02, 0], aligned_edge=LEFT)
        content.add(title)
        self.remove(self.content)
        self.content = content
        self.add(content)
        self.shown_info = {
            "fn": lst.fn, "file": lst.file, "start": lst.start,
            "rows": [lst.start + r for r in rows],
            "ran": sorted(lst.start + r for r in rel_ran if r in rows),
            "current": lst.start + current if highlight else None,
            "text": [lst.lines[r].shown() for r in rows],
        }
        return self.shown_info
