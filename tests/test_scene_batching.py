"""BatchingScene shows the two runs, nothing else: its grids, charts and counters, read back from
its mobjects after every play, equal what this test computes from the continuous run's trace and
the static run's own records. Built state-only (no video)."""

from __future__ import annotations

from collections import Counter

import pytest

pytest.importorskip("manim")

from scene_checks import TEASER_SCENE_MAX, render  # noqa: E402

from astrai.compare import batching  # noqa: E402
from astrai.compare.batching import GEN, IDLE, PROMPT  # noqa: E402
from astrai.workload import parse_workload  # noqa: E402
from scenes.batching import BatchingScene  # noqa: E402
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
        if ev["kind"] == "write":
            kind = PROMPT if ev["phase"] == "prefill" else GEN
            for row in ev["rows"]:
                out.setdefault(ev["step"], []).append(
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
        if ev["kind"] == "tokens":
            tokens[ev["step"]] += len(ev["tokens"])
    assert snap["tokens"]["continuous"] == {s: tokens[s] for s in range(c.continuous_steps)}
    assert snap["tokens"]["static"] == {
        rec.step: sum(1 for r in rec.rows if r.kind != IDLE) for rec in c.static_records}
    n_pages = c.trace.geometry["n_pages"]
    last = {}
    for ev in c.trace.events:
        last[ev["step"]] = ev["state"]
    in_use = {s: len({p for t in st["page_tables"].values() for p in t}) for s, st in last.items()}
    assert snap["pool"]["in use"] == in_use
    assert snap["pool"]["cached"] == {s: len(st["cached"]) for s, st in last.items()}
    assert snap["pool"]["free"] == {s: bin(st["free_mask"]).count("1") for s, st in last.items()}
    assert all(in_use[s] + len(last[s]["cached"]) + snap["pool"]["free"][s] == n_pages
               for s in last)
    total = sum(len(o) for o in c.trace.outputs.values())
    assert snap["counters"]["static"].endswith(f"· {total} tokens")


def test_end_card_and_captions(scenes, comparison):
    c = comparison
    full, teaser = scenes["full"], scenes["teaser"]
    card = " ".join(full.card_lines)
    for figure in (str(c.continuous_steps), str(c.static_steps),
                   f"{c.continuous_tokens_per_step:.2f}", f"{c.static_tokens_per_step:.2f}",
                   f"{c.continuous_wall_s:.3f}", f"{c.static_wall_s:.3f}",
                   f"{c.static_steps / c.continuous_steps:.2f}x"):
        assert figure in card
    assert "measured" in card
    for scene in (full, teaser):
        assert scene.cues and all(dur > 0 and text for _, dur, text in scene.cues)
        assert [name for _, name in scene.chapters] == ["Two runs", "Steps", "End card"]
    assert teaser.now < full.now
    assert teaser.now <= TEASER_SCENE_MAX and full.now <= 120


@pytest.mark.parametrize("cut", ["full", "teaser"])
def test_each_caption_stays_up_its_whole_duration(cut, scenes):
    cues = scenes[cut].cues
    for (start, dur, _), (nxt, _, _) in zip(cues, cues[1:]):
        assert start + dur <= nxt + 0.06  # a subtitle never overlaps the next
    assert cues[-1][0] + cues[-1][1] <= scenes[cut].now + 0.06
