"""StoryScene's subtitles: cues placed by the scene clock, never overlapping."""

from __future__ import annotations

import pytest

pytest.importorskip("manim")

from scene_checks import render  # noqa: E402

from scenes.story import StoryScene  # noqa: E402


class Overlapping(StoryScene):
    """A caption asked to last longer than its beat, then the next one."""

    def story(self):
        self.say("first, asked for 2 s", 2.0)
        self.hold(1.0)
        self.say("second", 1.0)
        self.hold(1.0)
        self.subs = [(s.start.total_seconds(), s.end.total_seconds(), s.content)
                     for s in self._get_manager().file_writer.subcaptions]


def test_a_new_caption_ends_the_one_still_showing(tmp_path):
    scene = render(Overlapping, tmp_path)
    assert [text for *_, text in scene.cues] == ["first, asked for 2 s", "second"]
    (s1, d1, _), (s2, d2, _) = scene.cues
    assert s2 == pytest.approx(scene.seconds(0.0, 1.0))
    assert s1 + d1 == pytest.approx(s2)  # cut where the next starts, not at 2 s
    assert d2 == 1.0
    (a1, b1, _), (a2, b2, _) = scene.subs  # what the .srt is written from
    assert (a1, b1, a2, b2) == pytest.approx((s1, s2, s2, s2 + 1.0))
