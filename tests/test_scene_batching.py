"""BatchingScene shows the two runs, nothing else: its grids, charts and counters, read back from
its mobjects after every play, equal what this test computes from the continuous run's trace and
the static run's own records; its narrator speaks the runs' own numbers, and its teaser is one
short shot. Built state-only (no video)."""

from __future__ import annotations

from collections import Counter

import pytest

pytest.importorskip("manim")

from manim import config  # noqa: E402
from scene_checks import TEASER_SCENE_MAX, render  # noqa: E402

from astrai.compare import batching  # noqa: E402
from astrai.compare.batching import GEN, IDLE, PROMPT  # noqa: E402
from astrai.trace.events import Tokens, Write  # noqa: E402
from astrai.workload import parse_workload  # noqa: E402
from scenes.batching import BatchingScene  # noqa: E402
from scenes.framework.cues import Timed, problems  # noqa: E402
from scenes.framework.kit.plans import batching_plan  # noqa: E402
from tests.test_compare_batching import SMALL  # noqa: E402


def build(comparison, media_dir, cut="full") -> BatchingScene:
    return render(BatchingScene, media_dir, comparison=comparison, cut=cut)


@pytest.fixture(scope="module")
def comparison():
    return batching.compare(workload=parse_workload(SMALL, "small"), repeats=1)


@pytest.fixture(scope="module")
def scenes(comparison, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("media")
    return {cut: build(comparison, tmp, cut) for cut in ("full", "teaser")}


def expected_continuous(trace):
    """step -> sorted (kind, letter) of the slots that did something, from write events."""
    out: dict[int, list] = {}
    for ev in trace.events:
        if isinstance(ev, Write):
            kind = PROMPT if ev.phase == "prefill" else GEN
            for row in ev.rows:
                out.setdefault(ev.step, []).append(
                    (kind, row["task"][:1] if kind == PROMPT else ""))
    return {s: sorted(v) for s, v in out.items()}


@pytest.mark.parametrize("cut", ["full", "teaser"])
def test_grids_show_both_runs_step_by_step(cut, scenes, comparison):
    scene, c = scenes[cut], comparison
    final = scene.snapshots[-1]["grids"]
    assert sorted(final["continuous"]) == list(range(c.continuous_steps))
    assert sorted(final["static"]) == list(range(c.static_steps))
    want = expected_continuous(c.trace)
    for step, cells in final["continuous"].items():
        assert len(cells) == c.max_batch
        for kind, _, drawn in cells:
            assert drawn == kind  # the colour drawn is the kind's colour
        busy = sorted((drawn, letter) for _, letter, drawn in cells if drawn != IDLE)
        assert busy == want.get(step, [])
    for rec in c.static_records:
        cells = final["static"][rec.step]
        assert [(k, d) for k, _, d in cells] == [(r.kind, r.kind) for r in rec.rows]
        assert [letter for _, letter, _ in cells] == [
            r.task[:1] if r.kind == PROMPT else "" for r in rec.rows]
    # drawn a stretch at a time: every snapshot adds steps, none removes any
    seen = 0
    for snap in scene.snapshots:
        n = len(snap["grids"]["static"])
        assert n >= seen
        seen = n


def test_charts_are_the_runs(scenes, comparison):
    c = comparison
    snap = scenes["full"].snapshots[-1]
    tokens = Counter()
    for ev in c.trace.events:
        if isinstance(ev, Tokens):
            tokens[ev.step] += len(ev.tokens)
    assert snap["tokens"]["continuous"] == {s: tokens[s] for s in range(c.continuous_steps)}
    assert snap["tokens"]["static"] == {
        rec.step: sum(1 for r in rec.rows if r.kind != IDLE) for rec in c.static_records}
    n_pages = c.trace.geometry["n_pages"]
    last = {}
    for ev in c.trace.events:
        last[ev.step] = ev.state
    in_use = {s: len({p for t in st["page_tables"].values() for p in t}) for s, st in last.items()}
    assert snap["pool"]["in use"] == in_use
    assert snap["pool"]["cached"] == {s: len(st["cached"]) for s, st in last.items()}
    assert snap["pool"]["free"] == {s: bin(st["free_mask"]).count("1") for s, st in last.items()}
    assert all(in_use[s] + len(last[s]["cached"]) + snap["pool"]["free"][s] == n_pages
               for s in last)
    total = sum(len(o) for o in c.trace.outputs.values())
    assert snap["counters"]["static"].endswith(f"· {total} tokens")


def test_end_card_and_cuts(scenes, comparison):
    c = comparison
    full, teaser = scenes["full"], scenes["teaser"]
    card = " ".join(full.card_lines)
    for figure in (str(c.continuous_steps), str(c.static_steps),
                   f"{c.continuous_tokens_per_step:.2f}", f"{c.static_tokens_per_step:.2f}",
                   f"{c.continuous_wall_s:.3f}", f"{c.static_wall_s:.3f}",
                   f"{c.static_steps / c.continuous_steps:.2f}x"):
        assert figure in card
    assert "measured" in card
    assert [name for _, name in full.chapters] == ["Two runs", "Steps", "End card"]
    assert [name for _, name in teaser.chapters] == ["Steps"]  # one shot, no end card
    assert not hasattr(teaser, "card_lines")
    assert teaser.now < full.now <= 120


def spoken(scene) -> list[str]:
    return [line.text for _, line in scene.lines]


def run_numbers(c):
    """The figures the narrator should say, from the runs' own records (the continuous run's
    trace, the static run's step records), not from the comparison's summary fields."""
    steps = max(ev.step for ev in c.trace.events) + 1
    return {
        "requests": len(c.trace.workload["request"]),
        "batch": c.trace.workload["scheduler"]["max_batch"],
        "continuous": steps,
        "static": len(c.static_records),
    }


def test_the_narrator_says_the_runs_numbers(scenes, comparison):
    n = run_numbers(comparison)
    full = " ".join(spoken(scenes["full"]))
    assert f"{n['requests']} requests arrive over time, at most {n['batch']} at a time" in full
    assert f"Continuous batching is done after {n['continuous']} steps." in full
    assert f"Static batching needs {n['static'] - n['continuous']} more." in full
    assert f"{n['static'] / n['continuous']:.1f} times as many steps" in full
    teaser = spoken(scenes["teaser"])
    assert len(teaser) == 2
    assert (f"The same {n['requests']} requests take {n['continuous']} steps, not "
            f"{n['static']}") in teaser[1]


@pytest.mark.parametrize("cut", ["full", "teaser"])
def test_spoken_lines_are_words_for_people(cut, scenes):
    """No code, field names or log lines are read aloud, and what is on screen in the caption
    bar is not what is spoken (the bar is annotation; the subtitles are the speech)."""
    scene = scenes[cut]
    for text in spoken(scene):
        assert "_" not in text and "(" not in text and "=" not in text, text
        for word in ("Scheduler", "DenseKVCache", "PagedCache", "prefill", "max_len"):
            assert word not in text, text
    assert " ".join(spoken(scene)) == " ".join(t.replace("\n", " ") for _, _, t in scene.cues)


@pytest.mark.parametrize("cut", ["full", "teaser"])
def test_subtitles_meet_the_reading_limits(cut, scenes):
    cues = [Timed(start, start + dur, text) for start, dur, text in scenes[cut].cues]
    assert problems(cues, 1 / config.frame_rate) == []


def test_teaser_is_one_short_shot(scenes):
    teaser = scenes["teaser"]
    speech = sum(line.duration for _, line in teaser.lines)
    assert 1 <= len(teaser.lines) <= 2 and 5.0 <= speech <= 10.0
    assert teaser.now <= min(TEASER_SCENE_MAX, 12.5)
    # over the real run: the grids fill while it is spoken
    assert len(teaser.snapshots) >= 4


def test_explainer_speech_fits_its_budget(scenes):
    full = scenes["full"]
    speech = sum(line.duration for _, line in full.lines)
    assert 38.0 <= speech <= 50.0
    # the lines do not overlap: each starts after the one before has been spoken
    for (t0, a), (t1, _) in zip(full.lines, full.lines[1:]):
        assert t1 >= t0 + a.duration


def test_layout_is_named_regions_inside_the_frame():
    p = batching_plan()
    bands = [p.header, p.grids["continuous"], p.grids["static"], p.charts["tokens"],
             p.charts["pool"], p.caption]
    for upper, lower in zip(bands, bands[1:]):
        assert upper.bottom > lower.top  # top to bottom, none overlapping
    half_w, half_h = config.frame_width / 2, config.frame_height / 2
    for r in bands + [p.card]:
        assert -half_w <= r.left < r.right <= half_w and -half_h <= r.bottom < r.top <= half_h
    # the end card covers both charts (their titles too)
    assert p.card.top > p.charts["tokens"].top and p.card.bottom < p.charts["pool"].bottom
    assert p.card.bottom > p.caption.bottom


@pytest.mark.parametrize("cut", ["full", "teaser"])
def test_each_caption_stays_up_its_whole_duration(cut, scenes):
    cues = scenes[cut].cues
    for (start, dur, _), (nxt, _, _) in zip(cues, cues[1:]):
        assert start + dur <= nxt + 0.06  # a subtitle never overlaps the next
    assert cues[-1][0] + cues[-1][1] <= scenes[cut].now + 0.06
