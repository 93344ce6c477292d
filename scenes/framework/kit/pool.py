"""The page-frame pool: one numbered frame per physical page, coloured by who holds it.

A frame's colour is its owner's (the task whose page table lists it), grey when its free bit is
set, violet when it is cached (refs 0, kept for the prefix cache). A page in several tables gets
one chip per holder in its header strip (and a thicker edge): shared. The bar inside fills from
the bottom with `state["filled"][i] / page_size`, so a partly written last page looks partial.

Over the bar, a frame shows the words its slots hold (the trace's visible pieces, see
kit/pieces.py): one piece per slot row where a row is tall and wide enough to read, else a strip
of text, the pieces run together and wrapped over the lines that fit, its tail (the newest
tokens) kept with a leading '…' when the page holds more than fits. A frame too narrow for a
readable run (under MIN_CELLS characters) shows none. A cached page keeps the words it holds.
"""

from __future__ import annotations

from manim import DOWN, LEFT, RIGHT, UL, UR, Line, Rectangle, Square, VGroup

from scenes.framework import theme
from scenes.framework.kit.glyphs import Atlas, Counter
from scenes.framework.kit.layout import Layout
from scenes.framework.kit.pieces import PagePieces

MIN_CELLS = 4  # characters a line of a frame's words needs to be a readable run


def frame_label(state: dict, page: int) -> str:
    """What a frame should say for this state: 'free', 'cached', or its holders joined by '+'."""
    if state["free_mask"] >> page & 1:
        return "free"
    if page in state["cached"]:
        return "cached"
    owners = [name for name, table in state["page_tables"].items() if page in table]
    return "+".join(owners) if owners else "used"


class PageFrame(VGroup):
    HEADER = 0.24

    def __init__(self, page: int, x: float, top: float, w: float, h: float):
        super().__init__()
        self.page = page
        self.box = Rectangle(width=w, height=h, stroke_width=2, stroke_color=theme.FREE,
                             fill_color=theme.FREE, fill_opacity=0.16)
        self.box.move_to([x, top - h / 2, 0])
        self.number = theme.text(str(page), theme.FS_BODY, theme.DIM)
        self.number.move_to(self.box.get_corner(UL) + [0.06, -self.HEADER / 2 - 0.01, 0],
                            aligned_edge=LEFT)
        self.slot_top = top - self.HEADER - 0.02
        self.slot_bottom = top - h + 0.05
        self.bar_w = w - 0.12
        self.bar = Rectangle(width=self.bar_w, height=0.001, stroke_width=0,
                             fill_color=theme.FREE, fill_opacity=0.0)
        self.bar.move_to([x, self.slot_bottom, 0], aligned_edge=DOWN)
        self.chips = VGroup()
        self.chip_slot = VGroup(self.chips)
        self.owner = Counter(Atlas.get(theme.FS_BODY), "", theme.TEXT).place(
            self.box.get_corner(UR) + [-0.06, -self.HEADER / 2 - 0.01, 0], RIGHT)
        self.owner_room = w - self.number.width - 0.2
        self.add(self.box, self.bar, self.chip_slot, self.number, self.owner)
        self.shown_filled = 0
        self.x, self.top, self.w = x, top, w
        # The words: lines of the smallest legible size over the bar's area.
        atlas = Atlas.get(theme.FS_MIN)
        self.cells = int((self.bar_w - 0.04) / atlas.advance)
        self.line_h = atlas.height * 1.05
        n_lines = int(self.slot_h / self.line_h) if self.cells >= MIN_CELLS else 0
        y0 = (self.slot_top + self.slot_bottom) / 2 + (n_lines - 1) * self.line_h / 2
        self.lines = [Counter(atlas, "", theme.TEXT).place(
            [x - self.bar_w / 2 + 0.02, y0 - k * self.line_h, 0], LEFT) for k in range(n_lines)]
        self.add(*self.lines)
        self.pieces: list[str] = []  # what its words show now

    def layout_words(self, pieces: list[str], page_size: int) -> list[str]:
        """The lines this frame draws for these pieces (slot 0 first): a piece per slot row
        when every row is a line tall and each piece fits its width, else the strip."""
        if not self.lines or not pieces:
            return [""] * len(self.lines)
        if len(self.lines) >= page_size and all(len(p) <= self.cells for p in pieces):
            rows = [""] * len(self.lines)  # slot 0 at the bottom, where the bar fills from
            for s, p in enumerate(pieces):
                rows[len(self.lines) - 1 - s] = p
            return rows
        text, room = "".join(pieces), self.cells * len(self.lines)
        if len(text) > room:
            text = "…" + text[-(room - 1):]
        lines = [text[k:k + self.cells] for k in range(0, len(text), self.cells)]
        return lines + [""] * (len(self.lines) - len(lines))

    @property
    def slot_h(self) -> float:
        return self.slot_top - self.slot_bottom


class PagePool(VGroup):
    """All frames. `sync(state, beat)` recolours/refills what changed; `shown()` reads back."""

    def __init__(self, layout: Layout, page_size: int, palette: theme.Palette,
                 pieces: PagePieces | None = None):
        super().__init__()
        self.layout, self.page_size, self.palette = layout, page_size, palette
        self.pieces = pieces  # the trace's words, followed by whoever applies its events
        self.frames: list[PageFrame] = []
        for row in layout.rows:
            for page in row.pages:
                f = PageFrame(page, layout.page_x(page), row.frame_top, layout.frame_w,
                              row.frame_h)
                self.frames.append(f)
                self.add(f)
        self.labels = ["free"] * layout.n_pages

    def legend(self, cached: bool) -> VGroup:
        """Left of the frames: what the fill colours mean (owners are named in the frames)."""
        lay, row = self.layout, self.layout.rows[0]
        items = [("free", theme.FREE)] + ([("cached", theme.CACHED)] if cached else [])
        group = VGroup()
        for k, (word, color) in enumerate(items):
            y = row.frame_top - 0.17 - 0.3 * k
            if y < row.frame_top - row.frame_h + 0.1:
                break
            sq = Square(0.16, stroke_color=color, stroke_width=2, fill_color=color,
                        fill_opacity=0.5).move_to([lay.left + 0.13, y, 0])
            t = theme.text(word, theme.FS_BODY, color if word == "cached" else theme.DIM)
            t.next_to(sq, RIGHT, buff=0.1)
            group.add(sq, t)
        return group

    def grid(self) -> VGroup:
        """Static slot dividers drawn behind the frames (one per slot for small pages)."""
        lines = VGroup()
        step = 1 if self.page_size <= 16 else self.page_size // 4
        for f in self.frames:
            for s in range(step, self.page_size, step):
                y = f.slot_bottom + f.slot_h * s / self.page_size
                lines.add(Line([f.x - f.bar_w / 2, y, 0], [f.x + f.bar_w / 2, y, 0],
                               stroke_width=1, stroke_color=theme.FAINT, stroke_opacity=0.6))
        return lines

    def color_of(self, label: str):
        if label == "free":
            return theme.FREE
        if label == "cached":
            return theme.CACHED
        if label == "used":
            return theme.USED
        return self.palette.color(label.split("+")[0])

    def sync(self, state: dict, beat=None) -> list[int]:
        """Bring every frame to `state`; returns the pages whose owner label changed."""
        changed = []
        for f in self.frames:
            label = frame_label(state, f.page)
            filled = state["filled"][f.page]
            relabel = label != self.labels[f.page]
            if relabel:
                changed.append(f.page)
                self._recolor(f, label, beat)
                self.labels[f.page] = label
            if relabel or filled != f.shown_filled:
                self._refill(f, filled, label, beat)
            if self.pieces is not None:
                self._reword(f, label, state, beat)
        return changed

    def _reword(self, f: PageFrame, label: str, state: dict, beat) -> None:
        if label == "cached":
            return  # nobody holds it, and it still holds what it held
        pieces = (self.pieces.of(state, f.page) if label != "free" else None) or []
        if pieces == f.pieces:
            return
        f.pieces = list(pieces)
        for counter, line in zip(f.lines, f.layout_words(pieces, self.page_size)):
            counter.set(line, beat=beat)

    def _recolor(self, f: PageFrame, label: str, beat) -> None:
        color = self.color_of(label)
        holders = label.split("+") if label not in ("free", "cached", "used") else []
        if beat is not None:
            beat.touch(f.box)
            beat.touch(f.bar)
            beat.touch(f.number)
        f.box.set_stroke(color, width=4 if len(holders) > 1 else 2)
        f.box.set_fill(color, opacity=0.10 if label == "free" else 0.2)
        f.number.set_color(theme.DIM if label == "free" else theme.TEXT)
        f.bar.set_fill(color, opacity=f.bar.fill_rgbas[0, 3] if f.shown_filled else 0.0)
        words = "" if label in ("free", "used") else label
        fits = words and f.owner.atlas.width(len(words)) <= f.owner_room
        f.owner.set(words if fits else "", color if len(holders) < 2 else theme.TEXT, beat)
        chips = VGroup()
        cw = min(0.16, (f.w - f.number.width - 0.14) / max(len(holders), 1))
        shared = len(holders) > 1 and not fits and cw >= 0.06  # else: the thick edge says it
        for i, name in enumerate(holders if shared else []):
            chip = Rectangle(width=cw - 0.03, height=0.13, stroke_width=0,
                             fill_color=self.palette.color(name), fill_opacity=1.0)
            chip.move_to([f.x + f.w / 2 - 0.06 - (len(holders) - i - 0.5) * cw,
                          f.top - PageFrame.HEADER / 2 - 0.01, 0])
            chip.holder = name
            chips.add(chip)
        if beat is not None:
            beat.replace(f.chip_slot, f.chips, chips)
        else:
            f.chip_slot.remove(f.chips)
            f.chip_slot.add(chips)
        f.chips = chips

    def _refill(self, f: PageFrame, filled: int, label: str, beat) -> None:
        if beat is not None:
            beat.touch(f.bar)
        h = max(f.slot_h * filled / self.page_size, 0.001)
        f.bar.stretch_to_fit_height(h)
        f.bar.move_to([f.x, f.slot_bottom, 0], aligned_edge=DOWN)
        f.bar.set_fill(self.color_of(label), opacity=0.75 if filled else 0.0)
        f.shown_filled = filled

    # ---- read back ------------------------------------------------------------------------

    def shown(self) -> dict:
        """Per frame: the label its colours say, and the slots its bar shows as filled."""
        labels, filled, words = [], [], []
        for f in self.frames:
            base = self.palette.label_of(f.box.get_stroke_color())
            holders = [c.holder for c in f.chips]
            text = f.owner.text.strip()
            words.append(text)
            if holders:
                assert all(self.palette.label_of(c.get_fill_color()) == c.holder for c in f.chips)
                labels.append("+".join(holders))
            elif text:
                assert text.split("+")[0] == base, (text, base)  # the words match the colour
                labels.append(text)
            else:
                labels.append(base)
            bar_h = f.bar.height if f.bar.fill_rgbas[0, 3] > 0 else 0.0
            filled.append(round(bar_h / f.slot_h * self.page_size))
        return {"frames": labels, "filled": filled, "frame_words": words,
                "frame_lines": [[c.text for c in f.lines] for f in self.frames]}
