"""The replay camera draws what Manim's own camera draws, pixel for pixel, though it builds each
distinct path once; the replay's table spans are Manim's edges, to the bit."""

from __future__ import annotations

import numpy as np
import pytest

manim = pytest.importorskip("manim")

from manim import (  # noqa: E402
    DOWN,
    RIGHT,
    Arrow,
    Camera,
    Circle,
    Dot,
    Line,
    Rectangle,
    RoundedRectangle,
    Text,
    VGroup,
    VMobject,
    tempconfig,
)

from scenes.framework.kit.camera import ReplayCamera  # noqa: E402
from scenes.framework.replay.driver import x_span  # noqa: E402


def shapes() -> list:
    open_path = VMobject(stroke_width=3).set_points_as_corners([[-3, -1, 0], [-2, 1, 0],
                                                                 [-1, -1, 0]])
    two_parts = VMobject(fill_opacity=0.5, stroke_width=2)
    two_parts.set_points_as_corners([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0]])
    two_parts.start_new_path(np.array([2.0, 2.0, 0.0]))
    two_parts.add_points_as_corners([[3, 2, 0], [3, 3, 0]])
    return [
        Rectangle(width=3, height=1, fill_opacity=0.7, stroke_width=4).shift(2 * DOWN),
        RoundedRectangle(corner_radius=0.2, width=2, height=1.3, fill_opacity=1).shift(RIGHT),
        Circle(radius=0.7, stroke_width=6).shift(3 * RIGHT + DOWN),
        Arrow([-4, 2, 0], [-1, 3, 0]),
        Line([-5, -3, 0], [5, -3.2, 0], stroke_width=1),
        Dot([4, 2, 0]),
        Text("Hg|( page 12 → 3", font_size=24).shift(2.5 * DOWN + 2 * RIGHT),
        VMobject(),  # no points: the camera leaves the previous path as it was
        open_path,
        two_parts,
    ]


def frame(camera: Camera, mobjects: list) -> np.ndarray:
    camera.reset()
    camera.capture_mobjects(mobjects)
    return camera.pixel_array.copy()


def test_the_replay_camera_draws_the_stock_camera_s_frames():
    with tempconfig({"pixel_width": 480, "pixel_height": 270}):
        stock, ours = Camera(), ReplayCamera()
        mobs = shapes()
        first = frame(stock, mobs)
        assert first.any()
        assert np.array_equal(frame(ours, mobs), first)  # built
        assert np.array_equal(frame(ours, mobs), first)  # every path again, from the store
        for m in mobs[::2]:  # moved and recoloured: new points, new paths
            m.shift(0.37 * RIGHT).set_color("#ff8800")
        moved = frame(stock, mobs)
        assert not np.array_equal(moved, first)
        assert np.array_equal(frame(ours, mobs), moved)


def test_table_spans_are_manim_s_own_edges():
    group = VGroup(Rectangle(width=2).shift(RIGHT), VGroup(Dot([-3.25, 0, 0]), VMobject()),
                   Text("x", font_size=20).shift(4 * RIGHT))
    single = VMobject()
    single.points = np.array([[1.5, 0.0, 0.0]])
    for mob in (group, VGroup(group, single), single, Circle().rotate(0.3)):
        left, right = x_span(mob)
        assert (left, right) == (mob.get_left()[0], mob.get_right()[0])
    assert x_span(VGroup(VMobject())) == (0.0, 0.0) == (VGroup().get_left()[0],
                                                        VGroup().get_right()[0])
