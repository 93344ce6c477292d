"""StoryScene's timeline: a shot lasts as long as its speech, subtitles are exactly the spoken
words placed at their speech, cues never overlap and keep 2 frames between them."""

from __future__ import annotations

import pytest

pytest.importorskip("manim")

from manim import Square  # noqa: E402
from manim import config as manim_config  # noqa: E402
from scene_checks import render  # noqa: E402

from scenes.framework import cues as cue_rules  # noqa: E402
from scenes.framework.story import StoryScene  # noqa: E402
from scenes.framework.voice import PAUSE  # noqa: E402

LONG = ("A paged cache hands memory out in small pages, as each request grows, so nothing is "
        "reserved for tokens that never come.")


class Spoken(StoryScene):
    """A short shot under a long line, a long shot under a short line, then a shot whose
    play takes the speech's own length."""

    def story(self):
        sq = Square()
        self.add(sq)
        self.first = self.shot(None, "", ([sq.animate.shift(1)], 3.0), line=LONG, least=3.2)
        self.after_first = self.clock
        self.second = self.shot(None, "", ([sq.animate.shift(-1)], 1.0), line="Then one more.",
                                least=5.0)
        self.after_second = self.clock
        self.shot(None, "", lambda shot: shot.show([sq.animate.set_opacity(0.2)], shot.duration),
                  line="A last line, spoken while the square fades.")
        self.subs = [(s.start.total_seconds(), s.end.total_seconds(), s.content)
                     for s in self._get_manager().file_writer.subcaptions]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return render(Spoken, tmp_path_factory.mktemp("story"))


def test_a_shot_lasts_its_speech_or_its_own_time_whichever_is_longer(scene):
    frame = 1 / manim_config.frame_rate
    assert scene.first.duration + PAUSE > 3.2  # the long line outlasts the shot's own time
    assert scene.after_first == pytest.approx(scene.first.duration + PAUSE, abs=frame)
    second = scene.after_second - scene.after_first
    d = scene.second.duration
    assert d < 1.0 and d + PAUSE < 4.0  # the short line ends first: the shot keeps its own time
    # its animation runs under the speech (never longer), then the rest of its own time holds
    assert second == pytest.approx(max(min(1.0, d) + 4.0, d + PAUSE), abs=2 * frame)


def test_subtitles_are_exactly_the_spoken_words(scene):
    spoken = " ".join(line.text for _, line in scene.lines)
    shown = " ".join(" ".join(text.split()) for *_, text in scene.cues)
    assert shown == spoken
    assert [text for *_, text in scene.subs] == [text for *_, text in scene.cues]


def test_each_cue_starts_with_its_speech(scene):
    starts = []
    for t, line in scene.lines:
        starts += [t + off for off in line.offsets]
    assert [s for s, _, _ in scene.cues] == pytest.approx(starts, abs=1e-3)


def test_cues_keep_the_reading_limits(scene):
    timed = [cue_rules.Timed(s, s + d, text) for s, d, text in scene.cues]
    frame = 1 / manim_config.frame_rate
    # the estimate's pace (15 cps) is the voice's: every rule holds, the share too
    assert cue_rules.problems(timed, frame) == []
    for (_, b, _), (c, _, _) in zip(scene.subs, scene.subs[1:]):
        assert c - b >= 2 * frame - 1e-3


def test_a_caption_needs_caption_lines_and_must_fit_them(tmp_path):
    from scenes.framework.kit.captions import CaptionLines

    class Bare(StoryScene):
        def story(self):
            self.shot("a caption", "", ([], 0.5))

    with pytest.raises(ValueError, match="no caption lines"):
        render(Bare, tmp_path)

    class Captioned(StoryScene):
        def story(self):
            self.caption_lines = CaptionLines.across(0.0)
            self.add(self.caption_lines)
            self.shot("fits", "under it", ([], 0.5))
            self.shot("x" * (self.caption_lines.room[0] + 1), "", ([], 0.5))

    with pytest.raises(ValueError, match="runs off screen"):
        render(Captioned, tmp_path)
