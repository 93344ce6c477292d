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


def check_said(trace, scene, prompts: dict[str, str]) -> set[str]:
    """Under each table: what the request asked (the head, cut with '…'), and its output's
    tail as it grows, on a line of its own, or on the same line once there is output when the
    plan gave the tables one line. Returns the requests whose output was shown."""
    two = scene.replay.plan.text_lines == 2
    seen_output = set()
    for snap in scene.replay.snapshots:
        state = trace.events[snap["event"]].state
        for name, line in snap["said"].items():
            out = state["output_text"].get(name, "")
            answer = snap["answer"][name].rstrip() if two else line.rstrip()
            if two or not out:
                body = line.rstrip().removeprefix('"').removesuffix('"')
                assert body and _drawn(prompts[name]).startswith(body.removesuffix("…")), (
                    line, name)
            if not two:
                assert snap["answer"][name].strip() == ""
            if not out:
                assert two is False or answer == ""
                continue
            assert answer.startswith('→ "') and answer.endswith('"'), answer
            body = answer[3:-1]
            # the tail of the output so far, cut at the front with an ellipsis if long
            assert _drawn(out).endswith(body.removeprefix("…")), (answer, out)
            assert body.startswith("…") or body == _drawn(out)
            seen_output.add(name)
    return seen_output


def test_tables_quote_the_prompt_and_the_growing_output(text_scene):
    trace, scene = text_scene
    prompts = {ev.task: ev.prompt_text for ev in trace.events if isinstance(ev, Arrive)}
    assert scene.replay.plan.text_lines == 2  # two requests side by side: room for two lines
    assert check_said(trace, scene, prompts) == set(prompts)  # every output was shown


def test_one_line_quotes_the_prompt_then_the_output(text_scene, monkeypatch,
                                                    tmp_path_factory):
    """Where two lines would crowd the tables (here: a table block narrower than a full one),
    one line quotes the prompt, then the output once it has one."""
    import scenes.framework.kit.tables as tables

    trace, _ = text_scene
    monkeypatch.setattr(tables, "MAX_BLOCK_W", 9.0)  # no plan reaches it: one line
    scene = render(PagedCacheScene, tmp_path_factory.mktemp("media"), trace=trace)
    assert scene.replay.plan.text_lines == 1
    prompts = {ev.task: ev.prompt_text for ev in trace.events if isinstance(ev, Arrive)}
    assert check_said(trace, scene, prompts) == set(prompts)


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


def test_a_frame_tall_enough_gives_each_slot_its_own_line_else_a_strip():
    from scenes.framework.kit.pool import PageFrame

    tall = PageFrame(0, 0.0, 3.0, 2.0, 6.0)  # room for a line a slot of a 4-slot page
    assert len(tall.lines) >= 4 and tall.cells >= 6
    rows = tall.layout_words(["The", "·cat", "↵"], 4)
    assert rows[-3:] == ["↵", "·cat", "The"] and set(rows[:-3]) == {""}  # slot 0 at the bottom
    strip = tall.layout_words(["x" * 30], 4)  # a piece wider than a line: the strip, wrapped
    assert "".join(strip) == "x" * 30 and all(len(line) <= tall.cells for line in strip)
    long = tall.layout_words([str(i % 10) * 20 for i in range(4)] * 40, 4)  # more than fits
    assert "".join(long).startswith("…") and "".join(long).endswith("3" * 20)
    low = PageFrame(0, 0.0, 3.0, 0.9, 0.66)  # the storyboard's frames: one line, a strip
    assert len(low.lines) == 1
    assert low.cells == 5  # 0.9 units at the smallest size: the newest four and a '…'
    assert low.layout_words(["The", "·cat", "·sat"], 16) == ["…·sat"]
    assert low.layout_words(["The"], 16) == ["The"]
