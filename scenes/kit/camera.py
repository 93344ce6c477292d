"""A Cairo camera that skips layout-only mobjects.

Every GlyphText carries an invisible box spanning its character cells (so text aligns by cells,
not ink). It has points, so the stock camera would still build and fill its path every frame;
this camera leaves out anything marked `ghost = True`. Nothing visible changes.
"""

from __future__ import annotations

from manim import Camera


class ReplayCamera(Camera):
    def get_mobjects_to_display(self, mobjects, include_submobjects=True, excluded_mobjects=None):
        shown = super().get_mobjects_to_display(mobjects, include_submobjects, excluded_mobjects)
        return [m for m in shown if not getattr(m, "ghost", False)]
