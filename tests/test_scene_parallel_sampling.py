"""ParallelSamplingScene: the screen equals the trace after every event, the boards show the real
fork (tables and refs), each real copy slot by slot and the sample that kept the page, and the
end card's figures and tokens equal what this test counts itself from two live runs."""

from __future__ import annotations

import pytest

pytest.importorskip("manim")

from scene_checks import (  # noqa: E402
    board,
    card_answer,
    check_boards_inside,
    check_frame_words,
    check_panels,
    check_screen_equals_trace,
    story_fixtures,
)

from astrai.compare.sampling import independent  # noqa: E402
from astrai.inference.observer import Observer  # noqa: E402
from astrai.text import load_tokenizer  # noqa: E402
from astrai.trace.events import Copy, Share, Write  # noqa: E402
from astrai.workload import build as build_run  # noqa: E402
from astrai.workload import load_workload, run_workload  # noqa: E402
from scenes.framework.anchors import anchor  # noqa: E402
from scenes.framework.kit.endcard import card_text  # noqa: E402
from scenes.parallel_sampling import ParallelSamplingScene  # noqa: E402

trace, scene = story_fixtures(ParallelSamplingScene, "sampling")


def events(trace, kind):
    return [(i, ev) for i, ev in enumerate(trace.events) if isinstance(ev, kind)]


def test_screen_equals_the_trace_after_every_event(trace, scene):
    check_screen_equals_trace(trace, scene)
    assert scene.detached == []  # nothing animated outside the scene (it would stay on top)


def test_frames_show_the_words_their_slots_hold(trace, scene):
    assert check_frame_words(trace, scene) > 0


def test_panels_show_the_real_source(trace, scene):
    check_panels(trace, scene)
    for i, _ in events(trace, Copy):  # the copy beat marks the line that copies
        panel = next(p for p in scene.panels if p["event"] == i)
        copy = anchor("cow.copy_kv")
        assert panel["fn"] == copy.fn
        assert copy.effect[0] in panel["text"][panel["rows"].index(panel["current"])]


def test_boards_stay_inside_and_text_never_overlaps(scene):
    check_boards_inside(scene)
    assert scene.replay.cut_short == []


def test_the_shared_board_is_the_state_after_the_forks(trace, scene):
    last_share = max(i for i, ev in events(trace, Share))
    st = trace.events[last_share].state
    texts = board(scene, "shared")
    for name in ("A", "A.1", "A.2"):
        assert f"{name.ljust(5)} -> pages {st['page_tables'][name]}" in texts
    pages = st["page_tables"]["A"]
    assert ", ".join(f"refs[{p}] = {st['refs'][p]}" for p in pages) in texts
    assert [st["refs"][p] for p in pages] == [3, 3, 3]


def test_each_copy_is_drawn_slot_by_slot_from_its_event(trace, scene):
    copies = [ev for _, ev in events(trace, Copy)]
    assert [(s, p) for s, p, _, _ in scene.slot_copies] == [
        (c.source, c.page) for c in copies]
    for (_, _, bd, cells), c in zip(scene.slot_copies, copies):
        assert len(cells) == c.slots  # one cell per filled slot copied
        xs = [cell.get_center()[0] for cell in cells]
        assert xs == sorted(xs)  # in slot order
        x0, x1 = bd.bg.get_corner([-1, -1, 0])[0], bd.bg.get_corner([1, 1, 0])[0]
        assert all(x0 <= x <= x1 for x in xs)
        assert f"copy_page({c.source}, {c.page}, {c.slots}): K and V, every layer" \
            in bd.texts()


def test_the_last_holder_keeps_the_page(trace, scene):
    src = events(trace, Copy)[0][1].source
    first = next(ev for ev in trace.events if isinstance(ev, Write) and ev.phase == "decode")
    keeper = next(r["task"] for r in first.rows if r["runs"][0][0] == src)
    assert keeper not in {ev.task for _, ev in events(trace, Copy)}
    said = scene.replay.captions_shown
    assert f"{keeper} is the last holder of page {src}: refs 1, nothing to copy" in said


class Counter(Observer):
    def __init__(self, cache):
        self.cache, self.allocs, self.peak = cache, 0, 0

    def on_alloc(self, page, owner=None):
        self.allocs += 1
        self.peak = max(self.peak, self.cache.n_used)


def test_end_card_equals_two_live_runs(trace, scene):
    wl = load_workload("sampling")
    runs = []
    for w in (wl, independent(wl)):
        cache, _, sched = build_run(w)
        counter = Counter(cache)
        cache.observer = counter
        runs.append((run_workload(w, sched), counter))
    (group, g), (alone, a) = runs
    rows = {label: (x, y) for label, x, y in scene.card_rows}
    assert rows["pages allocated"] == (str(g.allocs), str(a.allocs))
    assert rows["peak pages in use"] == (str(g.peak), str(a.peak))
    prompt = len(wl.requests[0].prompt)
    assert rows["prompt tokens computed"] == (str(prompt), str(3 * prompt))
    # The card compares the answers as text: each run's own, decoded here from its tokens.
    texts, tok = board(scene, "end card"), load_tokenizer(wl.checkpoint)
    for name in ("A", "A.1", "A.2"):
        said = f"{name}'s answer"
        assert group[name] == trace.outputs[name]
        assert card_answer(texts, "n = 3", said) == card_text(tok.decode(group[name]))
        assert card_answer(texts, "alone", said) == card_text(tok.decode(alone[name]))
    # Each sample equals an independent request (what the code guarantees); whether the draws
    # differ is a random draw on this CPU's floats, so no test asserts it.
    assert group == alone


def test_the_story_is_spoken_by_the_scene_and_the_beat_kinds_pass_silently(trace, scene):
    said = [line.text for _, line in scene.lines]
    request = load_workload("sampling").requests[0]
    prompt, n = len(request.prompt), request.n
    assert said[0].startswith(f"One request asks for {n} samples of the same {prompt}-token prompt")
    c = events(trace, Copy)[0][1]
    assert any(f"takes page {c.page}, and copies the {c.slots} filled slots of page {c.source} "
               "into it" in s for s in said)
    assert not any("prefix hit" in s or "starts with the same tokens" in s for s in said)


def test_teaser_is_one_spoken_shot_of_the_copy(trace, tmp_path_factory):
    from scene_checks import check_teaser

    teaser = check_teaser(ParallelSamplingScene, trace, tmp_path_factory.mktemp("teaser"),
                          boards=("copy",))
    said = [line.text for _, line in teaser.lines]
    c = teaser.comparison
    assert said == [f"3 samples of one prompt share its pages. A page is copied only when a "
                    f"sample writes into it: {c.pages_allocated} pages instead of "
                    f"{c.independent_pages_allocated}, and the same tokens."]
    assert [b["name"] for b in teaser.replay.boards] == ["copy"]
