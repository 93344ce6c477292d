"""MemoryWasteScene shows the runs, nothing else: the bars (read back from their widths and page
labels), counters, queues, pages and charts after every play equal what this test computes
from the paged runs' traces and the dense runs' records; its narrator speaks the runs' own
numbers, and its teaser is one short shot. Built state-only (no video)."""

from __future__ import annotations

import pytest

pytest.importorskip("manim")

from manim import config  # noqa: E402
from scene_checks import TEASER_SCENE_MAX, render  # noqa: E402

from astrai.compare import memory  # noqa: E402
from astrai.workload import parse_workload  # noqa: E402
from scenes.framework.cues import Timed, problems  # noqa: E402
from scenes.framework.kit.plans import memory_plan  # noqa: E402
from scenes.framework.words import size, spoken_size  # noqa: E402
from scenes.memory_waste import MemoryWasteScene, slot_note  # noqa: E402

# 8 pages of 4 slots; the longest request holds 12 slots, so the budget holds 2 dense rows.
SMALL = {
    "name": "small-memory",
    "cache": {"n_pages": 8, "page_size": 4},
    "model": {"n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "head_dim": 8, "d_model": 16,
              "d_ff": 32},
    "scheduler": {"max_batch": 3},
    "request": [
        {"name": "A", "prompt_len": 5, "max_new_tokens": 2},
        {"name": "B", "prompt_len": 3, "max_new_tokens": 6},
        {"name": "C", "prompt_len": 9, "max_new_tokens": 4, "arrival": 1},
        {"name": "D", "prompt_len": 2, "max_new_tokens": 3, "arrival": 2},
        {"name": "E", "prompt_len": 6, "max_new_tokens": 1, "after": "D"},
        {"name": "F", "prompt_len": 4, "max_new_tokens": 5, "arrival": 4},
    ],
}


def build(comparison, media_dir, cut="full") -> MemoryWasteScene:
    return render(MemoryWasteScene, media_dir, comparison=comparison, cut=cut)


@pytest.fixture(scope="module")
def comparison():
    return memory.compare(workload=parse_workload(SMALL, "small"))


@pytest.fixture(scope="module")
def scenes(comparison, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("media")
    return {cut: build(comparison, tmp, cut) for cut in ("full", "teaser")}


def states(trace):
    last = {}
    for ev in trace.events:
        last[ev.step] = ev.state
    return last


def test_bars_are_the_same_moments_of_both_runs(scenes, comparison):
    m, scene = comparison, scenes["full"]
    paged = states(m.trace)
    dense = {rec.step: rec for rec in m.dense_records}
    moments = [s for s in scene.snapshots if s["part"] == "moment"]
    assert moments and moments[-1]["step"] == m.moment
    for snap in moments:
        step, st = snap["step"], paged[snap["step"]]
        rows = {r.task: r.length for r in dense[step].rows if r.task}
        assert [r["task"] for r in snap["rows"]] == [r.task for r in dense[step].rows if r.task]
        for row in snap["rows"]:
            name = row["task"]
            assert row["used"] == rows[name] == st["lengths"][name]
            assert row["paged_used"] == st["lengths"][name]
            assert row["dense_reserved"] == m.max_len  # the whole row, from the dense run
            assert row["pages"] == st["page_tables"][name]
        used = sum(st["lengths"].values())
        paged_res = sum(len(t) for t in st["page_tables"].values()) * m.page_size
        dense_res = len(rows) * m.max_len
        counters = snap["counters"]
        assert counters["dense"].startswith(
            f"reserved {dense_res} slots = {size(dense_res * m.slot_bytes)}, "
            f"unused {dense_res - used}")
        assert counters["paged"].startswith(
            f"reserved {paged_res} slots = {size(paged_res * m.slot_bytes)}, "
            f"unused {paged_res - used}")
        assert counters["used"].startswith(f"tokens held: {used} slots")
        assert counters["step"] == f"step {step}"
    usage = moments[-1]["usage"]
    for s in range(m.moment + 1):
        st = paged[s]
        assert usage["tokens held"][s] == sum(st["lengths"].values())
        assert usage["paged reserved"][s] == sum(
            len(t) for t in st["page_tables"].values()) * m.page_size
        assert usage["contiguous reserved"][s] == m.max_len * sum(
            1 for r in dense[s].rows if r.task)


@pytest.mark.parametrize("cut", ["full", "teaser"])
def test_budget_shows_both_allocators_and_the_queue(cut, scenes, comparison):
    m, scene = comparison, scenes[cut]
    paged = states(m.budget_trace)
    budget = [s for s in scene.snapshots if s["part"] == "budget"]
    if cut == "full":  # the explainer plays the run to its end; the teaser stops at its peak
        assert budget[-1]["step"] == max(len(m.dense_budget_records), len(paged)) - 1
    for snap in budget:
        s = snap["step"]
        rec = m.dense_budget_records[min(s, len(m.dense_budget_records) - 1)]
        st = paged[min(s, max(paged))]
        assert snap["dense_rows"] == [r.task for r in rec.rows]
        owner = {p: t for t, table in st["page_tables"].items() for p in table}
        want = [owner.get(p) or ("cached" if p in st["cached"] else "free")
                for p in range(m.budget_trace.geometry["n_pages"])]
        assert snap["pages"] == want
        held = sum(1 for r in rec.rows if r.task)
        assert snap["counters"]["dq"].split() == ["holding", str(held), "queue:", *rec.queue]
        assert snap["counters"]["pq"].split() == [
            "holding", str(len(st["page_tables"])), "queue:", *st["queue"]]
    if cut == "teaser":  # no chart: see test_teaser_is_one_short_shot for its bars
        return
    chart = budget[-1]["held"]
    assert chart["dense"] == {rec.step: sum(1 for r in rec.rows if r.task)
                              for rec in m.dense_budget_records}
    assert chart["paged"] == {s: len(st["page_tables"]) for s, st in paged.items()}
    assert max(chart["dense"].values()) == m.dense_fit < m.paged_fit == max(
        chart["paged"].values())


def test_end_card_and_cuts(scenes, comparison):
    m = comparison
    full, teaser = scenes["full"], scenes["teaser"]
    card = " ".join(full.card_lines)
    for figure in (size(m.used_bytes), size(m.dense_reserved_bytes), size(m.paged_reserved_bytes),
                   size(m.budget_bytes), f"contiguous held {m.dense_fit}",
                   f"paged {m.paged_fit}"):
        assert figure in card
    assert [n for _, n in full.chapters] == ["Same moments", "One budget", "End card"]
    # the teaser is one shot of the one-budget run: no bars of part 1, no end card
    assert [n for _, n in teaser.chapters] == ["One budget"]
    assert {s["part"] for s in teaser.snapshots} == {"budget"}
    assert not hasattr(teaser, "card_lines")
    assert teaser.now < full.now <= 120


def spoken(scene) -> list[str]:
    return [line.text for _, line in scene.lines]


def run_numbers(m):
    """The figures the narrator should say, from the runs' own traces and records."""
    paged = states(m.trace)
    dense = {rec.step: rec for rec in m.dense_records}
    step = m.moment
    st = paged[step]
    budget = states(m.budget_trace)
    # a contiguous row holds the longest any request may grow (its last token's K/V is never
    # written)
    max_len = max(r["prompt_len"] + r["max_new_tokens"] - 1 for r in SMALL["request"])
    model = SMALL["model"]  # float32: 4 bytes a number
    token_bytes = model["n_layers"] * 2 * model["n_kv_heads"] * model["head_dim"] * 4
    budget_slots = SMALL["cache"]["n_pages"] * SMALL["cache"]["page_size"]
    return {
        "requests": len(m.trace.workload["request"]),
        "page": m.trace.geometry["page_size"],
        "step": step,
        "tokens": sum(st["lengths"].values()),
        "dense_reserved": max_len * sum(1 for r in dense[step].rows if r.task),
        "paged_reserved": sum(len(t) for t in st["page_tables"].values()) * m.page_size,
        "dense_fit": max(sum(1 for r in rec.rows if r.task) for rec in m.dense_budget_records),
        "paged_fit": max(len(s["page_tables"]) for s in budget.values()),
        "paged_steps": len(budget),
        "dense_steps": len(m.dense_budget_records),
        "token_bytes": token_bytes,
        "budget_slots": budget_slots,
        "budget_size": f"{budget_slots * token_bytes / 1024:g} KiB",  # SMALL's is under 1 MiB
    }


def test_the_narrator_says_the_runs_numbers(scenes, comparison):
    m = comparison
    n = run_numbers(m)
    full = " ".join(spoken(scenes["full"]))
    assert f"pages of {n['page']} slots" in full
    assert (f"At step {n['step']}, the contiguous rows leave "
            f"{n['dense_reserved'] - n['tokens']} reserved slots unused. The pages leave only "
            f"{n['paged_reserved'] - n['tokens']}.") in full
    assert f"all {n['requests']} requests at once" in full
    assert f"Contiguous rows fit only {n['dense_fit']} requests" in full
    assert f"Pages fit {n['paged_fit']}." in full
    assert (f"finished all {n['requests']} in {n['paged_steps']} steps instead of "
            f"{n['dense_steps']}") in full
    assert (f"the same {n['budget_size']} of memory, room for {n['budget_slots']} tokens, "
            f"and all {n['requests']} requests at once.") in full
    # a token's bytes, said once: the model's K and V in every layer
    assert sum(f"here {n['token_bytes']:,} bytes." in line for line in spoken(scenes["full"])) == 1
    teaser = spoken(scenes["teaser"])
    assert len(teaser) == 2
    assert teaser[0].endswith(f"holds just {n['dense_fit']} requests.")
    assert teaser[1].endswith(f"it holds {n['paged_fit']}.")


@pytest.mark.parametrize("cut", ["full", "teaser"])
def test_spoken_lines_are_words_for_people(cut, scenes):
    """No code, field names or log lines are read aloud; the subtitles are the speech."""
    scene = scenes[cut]
    for text in spoken(scene):
        assert "_" not in text and "(" not in text and "=" not in text, text
        for word in ("DenseKVCache", "PagedCache", "max_len", "K/V", "KV"):
            assert word not in text.split(), text
    assert " ".join(spoken(scene)) == " ".join(t.replace("\n", " ") for _, _, t in scene.cues)


@pytest.mark.parametrize("cut", ["full", "teaser"])
def test_subtitles_meet_the_reading_limits(cut, scenes):
    cues = [Timed(start, start + dur, text) for start, dur, text in scenes[cut].cues]
    assert problems(cues, 1 / config.frame_rate) == []


def test_teaser_is_one_short_shot(scenes, comparison):
    teaser = scenes["teaser"]
    speech = sum(line.duration for _, line in teaser.lines)
    assert 1 <= len(teaser.lines) <= 2 and 5.0 <= speech <= 10.0
    assert teaser.now <= min(TEASER_SCENE_MAX, 12.5)
    # while it says how many each holds, the screen shows the run holding them: every snapshot
    # taken under the lines has the contiguous rows full and the pages of the most requests
    n = run_numbers(comparison)
    assert teaser.snapshots
    for snap in teaser.snapshots:
        assert sum(1 for t in snap["dense_rows"] if t) == n["dense_fit"]
        owners = {p for p in snap["pages"] if p not in ("free", "cached")}
        assert len(owners) == n["paged_fit"]
        assert snap["counters"]["pq"].split()[:2] == ["holding", str(n["paged_fit"])]
    # and in the chart's place, a bar for each cache grows as it is said: a block per request
    # held at the first of those steps, the contiguous one with the first line
    first, last = teaser.snapshots[0], teaser.snapshots[-1]
    assert list(first["held_bars"]) == ["dense"]
    assert sorted(last["held_bars"]["dense"]) == sorted(t for t in first["dense_rows"] if t)
    assert sorted(last["held_bars"]["paged"]) == sorted(
        {p for p in first["pages"] if p not in ("free", "cached")})


def test_explainer_speech_fits_its_budget(scenes):
    full = scenes["full"]
    speech = sum(line.duration for _, line in full.lines)
    assert 38.0 <= speech <= 50.0
    for (t0, a), (t1, _) in zip(full.lines, full.lines[1:]):
        assert t1 >= t0 + a.duration


def test_layout_is_named_regions_inside_the_frame():
    p = memory_plan()
    part1 = [p.heads, p.rows, p.totals, p.usage, p.caption]
    part2 = list(p.budget.values()) + [p.caption]
    for bands in (part1, part2):
        for upper, lower in zip(bands, bands[1:]):
            assert upper.bottom >= lower.top - 1e-9  # top to bottom, none overlapping
    half_w, half_h = config.frame_width / 2, config.frame_height / 2
    for r in part1 + part2 + [p.dense, p.paged, p.card]:
        assert -half_w <= r.left < r.right <= half_w and -half_h <= r.bottom < r.top <= half_h
    assert p.dense.right < p.paged.left  # the two bar columns side by side
    chart = p.budget["chart"]
    assert p.card.top > chart.top and p.card.bottom < chart.bottom  # the card covers it
    assert p.card.bottom > p.caption.bottom


@pytest.mark.parametrize("cut", ["full", "teaser"])
def test_each_caption_stays_up_its_whole_duration(cut, scenes):
    cues = scenes[cut].cues
    for (start, dur, _), (nxt, _, _) in zip(cues, cues[1:]):
        assert start + dur <= nxt + 0.06  # a subtitle never overlaps the next
    assert cues[-1][0] + cues[-1][1] <= scenes[cut].now + 0.06


def test_the_slot_note_shows_a_tokens_bytes_as_their_product(comparison):
    """The figure on screen is the product the cache allocates, factor by factor."""
    tb = comparison.token_bytes
    model = SMALL["model"]
    assert (tb.n_layers, tb.n_kv_heads, tb.head_dim, tb.dtype) == (
        model["n_layers"], model["n_kv_heads"], model["head_dim"], "float32")
    assert slot_note(tb) == (f"1 slot = K and V of one token: {model['n_layers']} layers x 2 x "
                             f"{model['n_kv_heads']} KV heads x {model['head_dim']} x 4 bytes "
                             f"(float32) = {comparison.slot_bytes:,} bytes")


def test_sizes_read_in_the_largest_unit_they_reach():
    assert [size(n) for n in (1023, 1024, 46_080, 17_694_720)] == [
        "1023 B", "1.0 KiB", "45.0 KiB", "16.9 MiB"]
    assert [spoken_size(n) for n in (40, 2048, 1536, 17_694_720)] == [
        "40 bytes", "2 KiB", "1.5 KiB", "16.9 MiB"]
