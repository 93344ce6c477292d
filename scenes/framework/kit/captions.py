"""Header (title, step number, phase pills), the two caption lines and the status line.

Captions are composed from the event's own fields (see scenes.framework.replay.beats); this
module only draws them. The status line carries the free mask as a number, the cached pages in
LRU order and the waiting queue, all from the state.
"""

from __future__ import annotations

from manim import LEFT, RIGHT, RoundedRectangle, VGroup

from astrai.inference.scheduler import PHASES as STEP_PHASES
from scenes.framework import theme
from scenes.framework.kit.glyphs import Atlas, Counter
from scenes.framework.kit.layout import Layout

# The pills: "arrive" (the recorder's phase for submissions between steps), then a step's.
PHASES = ("arrive", *STEP_PHASES)


class Header(VGroup):
    def __init__(self, layout: Layout, title: str):
        super().__init__()
        self.layout = layout
        self.title = theme.text(title, theme.FS_TITLE, theme.TEXT, bold=True)
        self.title.move_to([layout.left, layout.header_y, 0], aligned_edge=LEFT)
        x = layout.right
        self.pills: dict[str, VGroup] = {}
        for name in reversed(PHASES):
            t = theme.text(name, theme.FS_BODY, theme.DIM)
            box = RoundedRectangle(corner_radius=0.1, width=t.width + 0.24, height=0.34,
                                   stroke_width=1.5, stroke_color=theme.FAINT,
                                   fill_color=theme.ACCENT, fill_opacity=0.0)
            box.move_to([x - box.width / 2, layout.header_y, 0])
            t.move_to(box)
            self.pills[name] = VGroup(box, t)
            x -= box.width + 0.08
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


class Captions(VGroup):
    """Caption (what happened), detail (the numbers behind it), status (mask, LRU, queue)."""

    def __init__(self, layout: Layout):
        super().__init__()
        self.layout = layout
        self.caption = Counter(Atlas.get(theme.FS_CAPTION), "", theme.TEXT).place(
            [layout.left, layout.caption_y, 0], LEFT)
        self.detail = Counter(Atlas.get(theme.FS_BODY), "", theme.DIM).place(
            [layout.left, layout.detail_y, 0], LEFT)
        self.status = Counter(Atlas.get(theme.FS_BODY), "", theme.DIM).place(
            [layout.left, layout.status_y, 0], LEFT)
        self.add(self.caption, self.detail, self.status)

    def say(self, caption, detail="", beat=None) -> None:
        self.caption.set(caption, theme.TEXT, beat)
        self.detail.set(detail, theme.DIM, beat)

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

