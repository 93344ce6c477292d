"""Named rectangles of the frame, for scenes laid out as bands (the comparison scenes).

A scene names its regions once (`Region.frame()` cut into bands with `stack`, insets, columns)
and places every mobject relative to one of them, so moving a band moves what is in it, and no
coordinate is repeated across the scene.

    screen = Region.frame()
    plot = screen.inset(left=0.66, right=0.61)
    bands = plot.stack([("grid", 1.0, 0.9), ("chart", 1.05, 0.6)])
    box.move_to(bands["grid"].left_at(bands["grid"].cy), aligned_edge=LEFT)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from manim import config


@dataclass(frozen=True)
class Region:
    left: float
    right: float
    top: float
    bottom: float

    @classmethod
    def frame(cls) -> Region:
        """The whole frame (14.2 x 8 units at 16:9)."""
        w, h = config.frame_width / 2, config.frame_height / 2
        return cls(-w, w, h, -h)

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.top - self.bottom

    @property
    def cx(self) -> float:
        return (self.left + self.right) / 2

    @property
    def cy(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def center(self) -> np.ndarray:
        return np.array([self.cx, self.cy, 0.0])

    def point(self, x: float, y: float) -> np.ndarray:
        return np.array([x, y, 0.0])

    def left_at(self, y: float, dx: float = 0.0) -> np.ndarray:
        """On the left edge (moved `dx` right) at height `y`."""
        return self.point(self.left + dx, y)

    def right_at(self, y: float, dx: float = 0.0) -> np.ndarray:
        """On the right edge (moved `dx` right) at height `y`."""
        return self.point(self.right + dx, y)

    def above(self, dy: float, x: float | None = None) -> np.ndarray:
        """`dy` above the top edge, at `x` (default: the left edge)."""
        return self.point(self.left if x is None else x, self.top + dy)

    def below(self, dy: float, x: float | None = None) -> np.ndarray:
        """`dy` below the bottom edge, at `x` (default: the left edge)."""
        return self.point(self.left if x is None else x, self.bottom - dy)

    def inset(self, left: float = 0.0, right: float = 0.0, top: float = 0.0,
              bottom: float = 0.0) -> Region:
        """Smaller by these margins (negative margins grow it)."""
        return Region(self.left + left, self.right - right, self.top - top, self.bottom + bottom)

    def columns(self, *widths: float, gap: float = 0.0) -> list[Region]:
        """Side by side from the left edge, `gap` apart; a width of None takes what is left."""
        fixed = sum(w for w in widths if w is not None) + gap * (len(widths) - 1)
        rest = self.width - fixed
        out, x = [], self.left
        for w in widths:
            w = rest if w is None else w
            out.append(Region(x, x + w, self.top, self.bottom))
            x += w + gap
        return out

    def stack(self, bands: list[tuple[str, float, float]]) -> dict[str, Region]:
        """Bands from the top down: (name, height, gap above it), each as wide as this."""
        out, y = {}, self.top
        for name, height, gap in bands:
            y -= gap
            out[name] = Region(self.left, self.right, y, y - height)
            y -= height
        if y < self.bottom - 1e-6:
            raise ValueError(f"bands run {self.bottom - y:.2f} units past the region's bottom")
        return out

    def span(self, top: Region, bottom: Region, above: float = 0.0,
             below: float = 0.0) -> Region:
        """This region's width, from `above` over `top`'s top to `below` under `bottom`'s
        bottom (to cover those bands and what hangs off them)."""
        return Region(self.left, self.right, top.top + above, bottom.bottom - below)
