"""Header (title, step number, phase pills), the caption lines (the one caption widget every
scene uses) and a replay's status line.

Captions are composed from the event's own fields (see scenes.framework.replay.beats); this
module only draws them. The status line carries the free mask as a number, the cached pages in
LRU order and the waiting queue, all from the state.
"""

from __future__ import annotations

from manim import LEFT, RIGHT, RoundedRectangle, VGroup

from astrai.inference.scheduler import PHASES as STEP_PHASES
from scenes.framework import theme
from scenes.framework.kit.glyphs import Atlas, Counter
from scenes.framework.kit.layout import Layout, edges

# The pills: "arrive" (the recorder's phase for submissions between steps), then a step's.
PHASES = ("arrive", *STEP_PHASES)


class Pills(VGroup):
    """Named pills in a row ending at `right`, the first name rightmost; `light(name)` fills
    one (None: none). `pill[name]` is its (box, text); `left` is where the row ends, a gap
    left of its last pill."""

    def __init__(self, names, right: float, y: float, gap: float):
        super().__init__()
        x = right
        self.pill: dict[str, VGroup] = {}
        for name in names:
            t = theme.text(name, theme.FS_BODY, theme.DIM)
            box = RoundedRectangle(corner_radius=0.1, width=t.width + 0.24, height=0.34,
                                   stroke_width=1.5, stroke_color=theme.FAINT,
                                   fill_color=theme.ACCENT, fill_opacity=0.0)
            box.move_to([x - box.width / 2, y, 0])
            t.move_to(box)
            self.pill[name] = VGroup(box, t)
            self.add(self.pill[name])
            x -= box.width + gap
        self.left = x

    def light(self, name: str | None, beat=None) -> None:
        for n, (box, t) in self.pill.items():
            if beat is not None:
                beat.touch(box)
                beat.touch(t)
            box.set_fill(theme.ACCENT, opacity=0.9 if n == name else 0.0)
            box.set_stroke(theme.ACCENT if n == name else theme.FAINT)
            t.set_color(theme.BG if n == name else theme.DIM)


class Header(VGroup):
    def __init__(self, layout: Layout, title: str):
        super().__init__()
        self.layout = layout
        self.title = theme.text(title, theme.FS_TITLE, theme.TEXT, bold=True)
        self.title.move_to([layout.left, layout.header_y, 0], aligned_edge=LEFT)
        row = Pills(reversed(PHASES), layout.right, layout.header_y, gap=0.08)
        self.pills: dict[str, VGroup] = row.pill
        x = row.left
        atlas = Atlas.get(theme.FS_CAPTION)
        self.step_label = theme.text("step", theme.FS_CAPTION, theme.DIM)
        x_num = x - 0.15 - atlas.width(4)
        self.step = Counter(atlas, "", theme.TEXT).place([x_num, layout.header_y, 0], LEFT)
        self.step_label.move_to([x_num - 0.12, layout.header_y, 0], aligned_edge=RIGHT)
        self.add(*[self.pills[p] for p in PHASES], self.step)
        self.shown_phase: str | None = None

    def static(self) -> VGroup:
        return VGroup(self.title, self.step_label)

    def sync(self, step: int, phase: str, beat=None) -> None:
        self.step.set(str(step), beat=beat)
        if phase == self.shown_phase:
            return
        for name, (box, t) in self.pills.items():
            on = name == phase
            was = name == self.shown_phase
            if on or was:
                if beat is not None:
                    beat.touch(box)
                    beat.touch(t)
                box.set_fill(theme.ACCENT, opacity=0.9 if on else 0.0)
                box.set_stroke(theme.ACCENT if on else theme.FAINT)
                t.set_color(theme.BG if on else theme.DIM)
        self.shown_phase = phase

    def shown(self) -> dict:
        lit = [n for n, (box, _) in self.pills.items() if box.fill_rgbas[0, 3] > 0.5]
        return {"step": int(self.step.text) if self.step.text.strip() else None,
                "phase": lit[0] if lit else None}


MARGIN = 2  # characters a caption line keeps clear of the right edge
LINE_GAP = 0.29  # between the caption line and the detail line


def caption_room(left: float, right: float) -> tuple[int, int]:
    """How many characters the caption line and the detail line hold between left and right."""
    width = right - left
    return (int(width / Atlas.get(theme.FS_CAPTION).advance) - MARGIN,
            int(width / Atlas.get(theme.FS_BODY).advance) - MARGIN)


def fit(s: str, n: int) -> str:
    """s cut to n characters, its last one '…' when cut."""
    return s if len(s) <= n else s[: n - 1] + "…"


class CaptionLines(VGroup):
    """The one caption widget: the caption (what happens) and the detail under it (the numbers
    behind it), from `left`; what each line holds (`room`) comes from the width it is given.
    They are dense annotation for whoever pauses: on screen, never spoken. `said` keeps every
    (caption, detail) shown, in order."""

    def __init__(self, left: float, right: float, caption_y: float, detail_y: float):
        super().__init__()
        self.caption = Counter(Atlas.get(theme.FS_CAPTION), "", theme.TEXT).place(
            [left, caption_y, 0], LEFT)
        self.detail = Counter(Atlas.get(theme.FS_BODY), "", theme.DIM).place(
            [left, detail_y, 0], LEFT)
        self.room = caption_room(left, right)
        self.said: list[tuple[str, str]] = []
        self.add(self.caption, self.detail)

    @classmethod
    def across(cls, y: float) -> CaptionLines:
        """Across the frame (the layout's edges), the pair centred on height `y`."""
        left, right = edges()
        return cls(left, right, y + LINE_GAP / 2, y - LINE_GAP / 2)

    def too_long(self, caption: str, detail: str = "") -> bool:
        return len(caption) > self.room[0] or len(detail) > self.room[1]

    def check(self, caption: str, detail: str = "") -> None:
        """Refuse words that would run off screen (a scene's own words: fix the words)."""
        if self.too_long(caption, detail):
            raise ValueError(f"caption runs off screen (at most {self.room} characters): "
                             f"{caption!r} / {detail!r}")

    def say(self, caption: str, detail: str = "", beat=None) -> None:
        """Show both lines, each cut with '…' if longer than its room (a kit Beat, if given,
        cross-fades them)."""
        self.caption.set(fit(caption, self.room[0]), theme.TEXT, beat)
        self.detail.set(fit(detail, self.room[1]), theme.DIM, beat)
        self.said.append((caption, detail))


class Captions(VGroup):
    """Caption lines (what happened, the numbers behind it) and the status line (mask, LRU,
    queue), placed by the layout."""

    def __init__(self, layout: Layout):
        super().__init__()
        self.layout = layout
        self.lines = CaptionLines(layout.left, layout.right, layout.caption_y, layout.detail_y)
        self.caption, self.detail, self.room = self.lines.caption, self.lines.detail, \
            self.lines.room
        self.status = Counter(Atlas.get(theme.FS_BODY), "", theme.DIM).place(
            [layout.left, layout.status_y, 0], LEFT)
        self.add(self.caption, self.detail, self.status)

    def say(self, caption, detail="", beat=None) -> None:
        self.lines.say(caption, detail, beat)

    def sync(self, state: dict, n_pages: int, beat=None) -> None:
        parts = []
        if n_pages <= 40:
            parts.append((f"free_mask = {state['free_mask']}", theme.TEXT))
            parts.append(("  (bit i = page i, 1 = free)", theme.DIM))
        if state["cached"]:
            parts.append(("   cached, LRU first: ", theme.DIM))
            parts.append((" ".join(map(str, state["cached"])), theme.CACHED))
        if state["queue"]:
            parts.append(("   waiting: ", theme.DIM))
            parts.append((" ".join(state["queue"]), theme.TEXT))
        room = int((self.layout.right - self.layout.left) / self.status.atlas.advance) - 1
        fitted, used = [], 0
        for text_, color in parts:  # cut at the right edge rather than run off it
            if used + len(text_) > room:
                text_ = text_[: max(room - used - 1, 0)] + "…"
            fitted.append((text_, color))
            used += len(text_)
            if used >= room:
                break
        self.status.set(fitted, theme.DIM, beat)

