"""Pieces for scenes that compare two runs (not trace replays): plays paced over a shot's line
(`spread`), charts whose x axis lines up with a step grid, and small legends.

Charts are Manim `Axes` without LaTeX (no numbers from the axes; labels are theme text), and
lines are added a stretch of steps at a time, so a chart grows with the grid above it. Every
point drawn is kept (`StepChart.values_of`), read back from the drawn lines' vertices.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from manim import LEFT, RIGHT, UP, Axes, Square, VGroup, VMobject

from scenes.framework import theme


def spread(items, draw: Callable[[object, float, object], None], each: float = 1.0,
           least: float = 0.45, play: float = 0.9) -> Callable:
    """A play for `StoryScene.shot`: `draw(item, run_time, shot)` plays each item (through
    `shot.show`), spread evenly over the shot's speech (at least `least` s an item; `each` s an
    item when silent): each item's play takes up to `play` s and the rest of its share holds.
    With no items, the shot's caption still changes (a short play of its own)."""
    items = list(items)

    def run(shot) -> None:
        said = shot.duration
        per = max(said / len(items), least) if said and items else each
        for item in items:
            run_time = min(per * 0.8, play)
            draw(item, run_time, shot)
            shot.hold(per - run_time)
        if not items and shot.pending:
            shot.show([], 0.3)

    return run


def spans(a: int, b: int, size: int) -> list[tuple[int, int]]:
    """Steps a..b (inclusive) in runs of `size` steps (what one paced play draws)."""
    return [(s, min(s + size - 1, b)) for s in range(a, b + 1, max(1, size))]


class StepChart(VGroup):
    """An Axes whose x axis spans steps 0..n_steps over [x0, x0 + width]; value at step s is
    drawn at x = s + 0.5, the centre of that step's grid column above it."""

    def __init__(self, x0: float, width: float, y_bottom: float, height: float, n_steps: int,
                 y_max: int, title: str, y_label: str | None = None):
        super().__init__()
        self.n_steps, self.y_max = n_steps, y_max
        tick = max(1, round(n_steps / 8 / 5) * 5)
        self.axes = Axes(
            x_range=[0, n_steps, tick], y_range=[0, y_max, max(1, y_max // 4)],
            x_length=width, y_length=height, tips=False,
            axis_config={"include_numbers": False, "color": theme.FAINT, "stroke_width": 1.5,
                         "tick_size": 0.04},
        )
        self.axes.move_to([x0 + width / 2, y_bottom + height / 2, 0])
        self.add(self.axes)
        top = theme.text(str(y_max), theme.FS_MIN, theme.DIM)
        top.next_to(self.axes.c2p(0, y_max), LEFT, buff=0.08)
        zero = theme.text("0", theme.FS_MIN, theme.DIM)
        zero.next_to(self.axes.c2p(0, 0), LEFT, buff=0.08)
        head = theme.text(title, theme.FS_BODY, theme.DIM)
        head.next_to(self.axes.c2p(0, y_max), UP, buff=0.08).align_to(self.axes, LEFT)
        self.add(top, zero, head)
        self.head = head
        self.series: dict[str, list[VMobject]] = {}
        self.colors: dict[str, object] = {}

    def extend(self, name: str, values: dict[int, float], color) -> VMobject | None:
        """A line through (s + 0.5, values[s]) for the given steps, joined to the series' last
        point; returns it (not yet added to the scene) or None if there is nothing to draw."""
        pts = [self.axes.c2p(s + 0.5, v) for s, v in sorted(values.items())]
        prev = self.series.get(name)
        if prev:
            pts = [prev[-1].vertices[-1]] + pts
        if len(pts) < 2:
            if not pts:
                return None
            pts = pts + pts  # a lone first point: a zero-length line, extended next time
        line = VMobject(stroke_color=color, stroke_width=2.5)
        line.set_points_as_corners(np.array(pts))
        line.vertices = [np.array(p) for p in pts]
        self.series.setdefault(name, []).append(line)
        self.colors[name] = color
        return line

    def values_of(self, name: str) -> dict[int, float]:
        """What the drawn lines of a series show: step -> value, read back from the vertices."""
        out: dict[int, float] = {}
        for line in self.series.get(name, []):
            for p in line.vertices:
                x, y = self.axes.p2c(p)[:2]
                out[int(round(x - 0.5))] = round(float(y), 6)
        return out


def legend(items: list[tuple[str, object, bool]], size: float = theme.FS_MIN) -> VGroup:
    """A row of swatches and words: (label, colour, filled)."""
    parts = []
    for label, color, filled in items:
        sw = Square(0.2, stroke_color=color, stroke_width=1.5, fill_color=color,
                    fill_opacity=1.0 if filled else 0.0)
        word = theme.text(label, size, theme.DIM)
        parts.append(VGroup(sw, word).arrange(RIGHT, buff=0.08))
    return VGroup(*parts).arrange(RIGHT, buff=0.3)
