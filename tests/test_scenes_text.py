"""The replay shows the text a trace carries: the prompt in the arrive caption, under each page
table the prompt and the output's tail as it grows, and in each page frame the words its slots
hold (the trace's visible pieces). Checked against the trace, not pixels."""

from __future__ import annotations

import pytest

manim = pytest.importorskip("manim")

from scene_checks import check_frame_words, render  # noqa: E402

from astrai.trace import record  # noqa: E402
from astrai.trace.events import Arrive  # noqa: E402
from scenes.framework.kit.glyphs import CHARS  # noqa: E402
from scenes.paged_cache import PagedCacheScene  # noqa: E402


@pytest.fixture(scope="module")
def text_scene(tmp_path_factory):
    trace = record("text")
    return trace, render(PagedCacheScene, tmp_path_factory.mktemp("media"), trace=trace)


def _drawn(text: str) -> str:
    """What the glyph atlas can show of text: whitespace runs as one space, the rest as '?'."""
    ok = set(CHARS)
    return "".join(c if c in ok or c == " " else "?" for c in " ".join(text.split()))


def test_tables_quote_the_prompt_and_the_growing_output(text_scene):
    trace, scene = text_scene
    prompts = {ev.task: ev.prompt_text for ev in trace.events if isinstance(ev, Arrive)}
    seen_output = set()
    for snap in scene.replay.snapshots:
        state = trace.events[snap["event"]].state
        for name, line in snap["said"].items():
            body = line.rstrip().removeprefix('"').removesuffix('"')
            assert body and _drawn(prompts[name]).startswith(body.removesuffix("…")), (line, name)
            out, line = state["output_text"].get(name, ""), snap["answer"][name].rstrip()
            if not out:
                assert line == ""
                continue
            assert line.startswith('→ "') and line.endswith('"'), line
            body = line[3:-1]
            # the tail of the output so far, cut at the front with an ellipsis if long
            assert _drawn(out).endswith(body.removeprefix("…")), (line, out)
            assert body.startswith("…") or body == _drawn(out)
            seen_output.add(name)
    assert seen_output == set(prompts)  # every request's output was shown at some point


def test_frames_show_the_words_their_slots_hold(text_scene):
    trace, scene = text_scene
    assert check_frame_words(trace, scene) > 0


def test_arrive_caption_quotes_the_prompt(text_scene):
    trace, scene = text_scene
    for ev in trace.events:
        if isinstance(ev, Arrive):
            said = [c for c in scene.replay.captions_shown if c.startswith(f"{ev.task} arr")]
            assert said and f'"{ev.prompt_text}"' in said[0]
            assert f"{ev.prompt_len} tokens" in said[0]
