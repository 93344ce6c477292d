"""PrefixCacheScene: the screen equals the trace after every event, the LRU strip shows the
cache's order, the boards show the real keys, hits and misses, and the end card's figures equal
what this test counts itself from the two runs. The narrator tells the story in plain words
within its budget, with the numbers of the run; the teaser is one spoken shot."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("manim")

from narration_checks import check_spoken, speech, spoken_with  # noqa: E402
from scene_checks import (  # noqa: E402
    board,
    check_boards_inside,
    check_panels,
    check_screen_equals_trace,
    check_teaser,
    story_fixtures,
)

from astrai.inference.cache import PagedCache  # noqa: E402
from astrai.trace import recorded  # noqa: E402
from astrai.trace.events import Admit, Alloc, Evict, Record, Share, Write  # noqa: E402
from astrai.workload import load_workload  # noqa: E402
from scenes.prefix_cache import PrefixCacheScene  # noqa: E402

trace, scene = story_fixtures(PrefixCacheScene, "prefix")
SPEECH_BUDGET = 70.0  # seconds of narration the explainer gives this scene


def _keys(prompt, ps):
    """Chain keys computed here through a fresh cache (not the recorder's path)."""
    return PagedCache(1, 1, ps, 1, 1).prefix_keys(prompt)


def _short(k):
    return f"#{k & 0xFFFF:04x}"


def test_screen_equals_the_trace_after_every_event(trace, scene):
    check_screen_equals_trace(trace, scene)
    assert scene.detached == []  # nothing animated outside the scene (it would stay on top)


def test_lru_strip_shows_the_cached_pages_in_the_traces_order(trace, scene):
    shown = [s["lru"] for s in scene.snapshots]
    assert shown == [ev.state["cached"] for ev in trace.events]
    assert any(len(s) > 2 for s in shown)
    left = scene.strip.span[0]
    for snap in scene.snapshots:
        if snap["lru"]:
            assert all(right <= left for _, right in snap["table_spans"].values()), snap["event"]


def test_panels_show_the_real_source(trace, scene):
    check_panels(trace, scene)


def test_boards_stay_inside_and_text_never_overlaps(scene):
    check_boards_inside(scene)


def test_chain_board_shows_the_real_keys(trace, scene):
    wl = load_workload("prefix")
    ps = wl.page_size
    a = wl.requests[0]
    texts = board(scene, "chain")
    recorded = next(ev for ev in trace.events if isinstance(ev, Record))
    keys = _keys(a.prompt, ps)[: len(recorded.pages)]
    shown = [t for t in texts if t.startswith("#")]
    assert shown == [_short(k) for k in keys]
    assert [t for t in texts if t.startswith("page ")] == [f"page {p}" for p in recorded.pages]


def test_lookup_board_lights_up_the_hits(trace, scene):
    texts = board(scene, "lookup")
    admit = next(ev for ev in trace.events if isinstance(ev, Admit) and ev.hits)
    assert [t for t in texts if t.startswith("hit: ")] == [f"hit: page {p}" for p in admit.hits]
    shares = [ev for ev in trace.events if isinstance(ev, Share) and ev.task == admit.task]
    assert [ev.state["refs"][ev.page] for ev in shares] == [2] * len(admit.hits)


def test_the_miss_is_real_and_the_board_says_why(trace, scene):
    wl = load_workload("prefix")
    ps = wl.page_size
    by_name = {r.name: r for r in wl.requests}
    texts = board(scene, "miss")
    admit = next(ev for ev in trace.events if isinstance(ev, Admit) and not ev.hits
                 and ev.task != wl.requests[0].name and ev.keys)
    mine, theirs = by_name[admit.task].prompt, wl.requests[0].prompt
    same = [k for k in range(len(admit.keys))
            if mine[k * ps:(k + 1) * ps] == theirs[k * ps:(k + 1) * ps]]
    assert same and 0 not in same  # equal tokens, after another first page
    ours, first = _keys(mine, ps), _keys(theirs, ps)
    for k in same:
        assert ours[k] != first[k]  # the chain makes them differ
        assert _short(ours[k]) in texts
    assert texts.count("same tokens") == len(same)


def test_full_hit_board(trace, scene):
    ps = trace.geometry["page_size"]
    texts = board(scene, "full hit")
    admit = next(ev for ev in trace.events if isinstance(ev, Admit)
                 and ev.n_tokens % ps == 0 and len(ev.hits) == len(ev.keys) - 1 > 0)
    assert "cached too" in texts
    write = next(ev for ev in trace.events if isinstance(ev, Write) and ev.phase == "prefill"
                 and ev.step == admit.step)
    row = next(r for r in write.rows if r["task"] == admit.task)
    assert row["n"] == ps  # the last page is computed again, whole


def test_end_card_equals_counts_from_both_runs(trace, scene):
    wl = load_workload("prefix")
    ps = wl.page_size
    off = recorded(dataclasses.replace(wl, prefix_caching=False), lines=False)  # kept once
    admits = [ev for ev in trace.events if isinstance(ev, Admit)]
    computed = sum(ev.n_tokens - len(ev.hits) * ps for ev in admits)
    cached = sum(len(ev.hits) * ps for ev in admits)
    allocs = sum(isinstance(ev, Alloc) for ev in trace.events)
    off_allocs = sum(isinstance(ev, Alloc) for ev in off.events)
    shared = sum(len(ev.hits) for ev in admits)
    rows = {label: (a, b) for label, a, b in scene.card_rows}
    assert rows["prompt tokens computed (prefill)"] == (str(computed),
                                                         str(sum(len(r.prompt)
                                                                 for r in wl.requests)))
    assert rows["prompt tokens served from the cache"] == (str(cached), "0")
    assert rows["pages allocated"] == (str(allocs), str(off_allocs))
    assert rows["pages shared (prefix hits)"] == (str(shared), "0")
    same = "identical" if trace.outputs == off.outputs else "DIFFERENT"
    assert rows["output tokens, every request"] == (same, same) == ("identical", "identical")
    texts = board(scene, "end card")
    assert any(f"{computed}" in t and f"{sum(len(r.prompt) for r in wl.requests)}" in t
               for t in texts)


def test_captions_fit_and_the_cut_is_short(scene):
    assert scene.replay.cut_short == []
    assert 60 <= scene.replay.duration <= 120
    assert all(text for _, _, text in scene.cues)




# ---- what the narrator says ------------------------------------------------------------------


def test_narration_is_plain_words_within_budget(scene):
    check_spoken(scene, SPEECH_BUDGET)
    assert speech(scene) >= 0.7 * SPEECH_BUDGET  # the whole story, not a summary of it


def test_spoken_lines_carry_the_runs_numbers(trace, scene):
    """Every number the narrator says, worked out here from the trace and a second run with
    the prefix cache off."""
    wl = load_workload("prefix")
    ps = wl.page_size
    heads = [(r.prefix,) if isinstance(r.prefix, str) else tuple(r.prefix)
             for r in wl.requests if r.prefix]
    common = max(set(heads), key=heads.count)
    n = sum(wl.prefixes[p] for p in common)
    spoken_with(scene, f"{heads.count(common)} of these {len(wl.requests)} requests",
                f"{n}-token system prompt")
    record_ev = next(ev for ev in trace.events if isinstance(ev, Record))
    spoken_with(scene, f"{record_ev.task}'s prompt", f"{len(record_ev.pages)} full pages")
    hit = next(ev for ev in trace.events if isinstance(ev, Admit) and ev.hits)
    b_row = next(r for ev in trace.events if isinstance(ev, Write) and ev.phase == "prefill"
                 and ev.step == hit.step for r in ev.rows if r["task"] == hit.task)
    assert b_row["n"] == hit.n_tokens - len(hit.hits) * ps
    spoken_with(scene, f"{hit.task} looks up", f"first {len(hit.hits)} match",
                f"last {b_row['n']} tokens")
    full = next(ev for ev in trace.events if isinstance(ev, Admit) and ev.n_tokens % ps == 0
                and len(ev.hits) == len(ev.keys) - 1 > 0)
    d_row = next(r for ev in trace.events if isinstance(ev, Write) and ev.phase == "prefill"
                 and ev.step == full.step for r in ev.rows if r["task"] == full.task)
    asked = next(r.name for r in wl.requests if r.name != full.task
                 and list(r.prompt) == list(next(q.prompt for q in wl.requests
                                                 if q.name == full.task)))
    spoken_with(scene, f"{full.task} asks {asked}'s question again",
                f"all {len(full.keys)} of its pages are cached",
                f"last {d_row['n']} tokens are computed again")
    k = next(i for i, ev in enumerate(trace.events) if isinstance(ev, Evict))
    owner = trace.events[k + 1].task
    need = next(ev.pages_needed for ev in reversed(trace.events[:k])
                if isinstance(ev, Admit) and ev.task == owner)
    spoken_with(scene, f"{owner}'s long prompt needs {need} pages",
                f"page {trace.events[k].page}.")
    off = recorded(dataclasses.replace(wl, prefix_caching=False), lines=False)  # kept once
    computed = sum(ev.n_tokens - len(ev.hits) * ps for ev in trace.events
                   if isinstance(ev, Admit))
    off_computed = sum(ev.n_tokens for ev in off.events if isinstance(ev, Admit))
    pages = sum(isinstance(ev, Alloc) for ev in trace.events)
    off_pages = sum(isinstance(ev, Alloc) for ev in off.events)
    assert trace.outputs == off.outputs
    spoken_with(scene, f"compute {off_computed - computed} more prompt tokens",
                f"take {off_pages - pages} more pages", "the same, token for token")


def test_teaser_is_one_spoken_shot(trace, tmp_path_factory):
    """The teaser: B's lookup over its admission, one line with the run's numbers, under the
    promo's share of the teaser, subtitles readable."""
    teaser = check_teaser(PrefixCacheScene, trace, tmp_path_factory.mktemp("teaser"),
                          boards=("lookup",))
    assert teaser.clock <= 12.5
    assert 1 <= len(teaser.lines) <= 2 and 5.0 <= speech(teaser) <= 10.0
    check_spoken(teaser, 10.0)
    hit = next(ev for ev in trace.events if isinstance(ev, Admit) and ev.hits)
    first = next(ev.task for ev in trace.events if isinstance(ev, Record))
    computed = hit.n_tokens - len(hit.hits) * trace.geometry["page_size"]
    spoken_with(teaser, f"shares {first}'s {len(hit.hits)} pages",
                f"only {computed} of its {hit.n_tokens} tokens")
    assert [b["name"] for b in teaser.replay.boards] == ["lookup"]  # one idea, one board
