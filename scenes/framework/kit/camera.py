"""A Cairo camera that skips layout-only mobjects and builds each distinct path once.

Every GlyphText carries an invisible box spanning its character cells (so text aligns by cells,
not ink). It has points, so the stock camera would still build and fill its path every frame;
this camera leaves out anything marked `ghost = True`.

Most of a frame is the same glyphs, frames and tables as the frame before, and the stock camera
turns every mobject's points into a Cairo path again each frame, one Python call per curve
(about half of a replay's drawing time). This camera keeps each path it built, in Cairo's own
device coordinates, keyed by the points it came from, and hands a repeat to Cairo whole. The
path is copied out and put back under the identity matrix, so Cairo's fixed-point coordinates
go out and come back exactly: the frames are bit for bit those of the stock camera.
"""

from __future__ import annotations

from manim import Camera

MAX_PATHS = 50_000  # distinct paths kept (a replay uses a few thousand)


class ReplayCamera(Camera):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._paths: dict[tuple, object] = {}

    def get_mobjects_to_display(self, mobjects, include_submobjects=True, excluded_mobjects=None):
        shown = super().get_mobjects_to_display(mobjects, include_submobjects, excluded_mobjects)
        return [m for m in shown if not getattr(m, "ghost", False)]

    def set_cairo_context_path(self, ctx, vmobject):
        points = vmobject.points
        if len(points) == 0:
            return self  # as the stock camera: the context keeps whatever path it had
        key = (points.tobytes(), points.shape, points.dtype.char, vmobject.n_points_per_cubic_curve,
               vmobject.tolerance_for_point_equality, tuple(ctx.get_matrix()))
        path = self._paths.get(key)
        if path is None:  # built under the camera's own matrix, as the stock camera does
            super().set_cairo_context_path(ctx, vmobject)
            ctx.save()
            ctx.identity_matrix()
            path = ctx.copy_path()
            ctx.restore()  # the current path is not part of the saved state: it stays
            if len(self._paths) >= MAX_PATHS:
                self._paths.clear()
            self._paths[key] = path
            return self
        ctx.save()
        ctx.identity_matrix()
        ctx.new_path()
        ctx.append_path(path)
        ctx.restore()
        return self
