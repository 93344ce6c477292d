"""PrefixCacheScene: the screen equals the trace after every event, the LRU strip shows the
cache's order, the boards show the real keys, hits and misses, and the end card's figures equal
what this test counts itself from the two runs."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("manim")

from scene_checks import (  # noqa: E402
    board,
    build,
    check_boards_inside,
    check_panels,
    check_screen_equals_trace,
)

from astrai.inference.cache import PagedCache  # noqa: E402
from astrai.trace import record  # noqa: E402
from astrai.workload import load_workload  # noqa: E402
from scenes.prefix_cache import PrefixCacheScene  # noqa: E402


@pytest.fixture(scope="module")
def trace():
    return record("prefix")


@pytest.fixture(scope="module")
def scene(trace, tmp_path_factory):
    return build(PrefixCacheScene, trace, tmp_path_factory.mktemp("media"))


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
    assert shown == [ev["state"]["cached"] for ev in trace.events]
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
    recorded = next(ev for ev in trace.events if ev["kind"] == "record")
    keys = _keys(a.prompt, ps)[: len(recorded["pages"])]
    shown = [t for t in texts if t.startswith("#")]
    assert shown == [_short(k) for k in keys]
    assert [t for t in texts if t.startswith("page ")] == [f"page {p}" for p in recorded["pages"]]


def test_lookup_board_lights_up_the_hits(trace, scene):
    texts = board(scene, "lookup")
    admit = next(ev for ev in trace.events if ev["kind"] == "admit" and ev["hits"])
    assert [t for t in texts if t.startswith("hit: ")] == [f"hit: page {p}" for p in admit["hits"]]
    shares = [ev for ev in trace.events if ev["kind"] == "share" and ev["task"] == admit["task"]]
    assert [ev["state"]["refs"][ev["page"]] for ev in shares] == [2] * len(admit["hits"])


def test_the_miss_is_real_and_the_board_says_why(trace, scene):
    wl = load_workload("prefix")
    ps = wl.page_size
    by_name = {r.name: r for r in wl.requests}
    texts = board(scene, "miss")
    admit = next(ev for ev in trace.events if ev["kind"] == "admit" and not ev["hits"]
                 and ev["task"] != wl.requests[0].name and ev["keys"])
    mine, theirs = by_name[admit["task"]].prompt, wl.requests[0].prompt
    same = [k for k in range(len(admit["keys"]))
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
    admit = next(ev for ev in trace.events if ev["kind"] == "admit"
                 and ev["n_tokens"] % ps == 0 and len(ev["hits"]) == len(ev["keys"]) - 1 > 0)
    assert "cached too" in texts
    write = next(ev for ev in trace.events if ev["kind"] == "write" and ev["phase"] == "prefill"
                 and ev["step"] == admit["step"])
    row = next(r for r in write["rows"] if r["task"] == admit["task"])
    assert row["n"] == ps  # the last page is computed again, whole


def test_end_card_equals_counts_from_both_runs(trace, scene):
    wl = load_workload("prefix")
    ps = wl.page_size
    off = record(dataclasses.replace(wl, prefix_caching=False), lines=False)
    admits = [ev for ev in trace.events if ev["kind"] == "admit"]
    computed = sum(ev["n_tokens"] - len(ev["hits"]) * ps for ev in admits)
    cached = sum(len(ev["hits"]) * ps for ev in admits)
    allocs = sum(ev["kind"] == "alloc" for ev in trace.events)
    off_allocs = sum(ev["kind"] == "alloc" for ev in off.events)
    shared = sum(len(ev["hits"]) for ev in admits)
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


def test_teaser_is_short_and_still_shows_the_trace(trace, tmp_path_factory):
    teaser = build(PrefixCacheScene, trace, tmp_path_factory.mktemp("teaser"), cut="teaser")
    assert 10 <= teaser.replay.duration <= 16
    check_screen_equals_trace(trace, teaser)
    assert teaser.detached == []
    assert {b["name"] for b in teaser.replay.boards} >= {"end card"}
    assert teaser.replay.cut_short == []
