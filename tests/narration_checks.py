"""Checks of what a story scene says (its spoken lines and their subtitle cues), shared by the
tests of the narrated scenes. Expected numbers are the tests' own, read from the trace."""

from __future__ import annotations

import re

from manim import config

from scenes.framework.cues import Timed, problems
from scenes.framework.replay.beats import KINDS

# What a listener must never hear: identifiers, code, log-line shapes.
CODE = re.compile(r"\w_\w|\w\[|\]|\(\)|->|==|\bpages_for\b|\bfree_mask\b|\brefs\b|\bK/V\b")


def speech(scene) -> float:
    """Seconds of speech in the scene."""
    return sum(line.duration for _, line in scene.lines)


def said(scene) -> list[str]:
    return [line.text for _, line in scene.lines]


def spoken_with(scene, *fragments: str) -> str:
    """The one spoken line that holds every fragment (fails when none or several do)."""
    found = [t for t in said(scene) if all(f in t for f in fragments)]
    assert len(found) == 1, (fragments, said(scene))
    return found[0]


def check_spoken(scene, budget: float) -> None:
    """The scene's narration: within its speech budget, plain words (no code read aloud), its
    subtitles exactly the spoken words and within the reading limits, and none of the
    replay's own beat kinds speaking (the scene's beats carry the story)."""
    assert 0 < speech(scene) <= budget, speech(scene)
    for text in said(scene):
        assert not CODE.search(text), text
    words = " ".join(said(scene)).split()
    assert " ".join(c[2].replace("\n", " ") for c in scene.cues).split() == words
    cues = [Timed(start, start + shown, text) for start, shown, text in scene.cues]
    assert problems(cues, 1 / config.frame_rate) == []
    spoken_over = [kind for _, kind, _, line in scene.replay.beat_times if line]
    assert not set(spoken_over) & set(KINDS), spoken_over
