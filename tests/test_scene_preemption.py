"""PreemptionScene: the screen equals the trace after every event, the boards name the real
victim, its requeue and its recompute, and the end card's figures and tokens equal what this test
gets itself from a live run on a pool big enough never to preempt."""

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

from astrai.inference.cache import pages_for  # noqa: E402
from astrai.trace import record  # noqa: E402
from astrai.workload import build as build_run  # noqa: E402
from astrai.workload import load_workload, run_workload  # noqa: E402
from scenes.preemption import PreemptionScene  # noqa: E402


@pytest.fixture(scope="module")
def trace():
    return record("preemption")


@pytest.fixture(scope="module")
def scene(trace, tmp_path_factory):
    return build(PreemptionScene, trace, tmp_path_factory.mktemp("media"))


def test_screen_equals_the_trace_after_every_event(trace, scene):
    check_screen_equals_trace(trace, scene)
    assert scene.detached == []  # nothing animated outside the scene (it would stay on top)


def test_panels_show_the_real_source(trace, scene):
    check_panels(trace, scene)


def test_boards_stay_inside_and_text_never_overlaps(scene):
    check_boards_inside(scene)


def test_the_victim_is_the_newest_running_request(trace, scene):
    pre = next(ev for ev in trace.events if ev["kind"] == "preempt")
    admitted = {}  # the last admission of each running request, in order
    for ev in trace.events[: trace.events.index(pre)]:
        if ev["kind"] == "admit":
            admitted[ev["task"]] = ev["step"]
        elif ev["kind"] in ("retire", "preempt"):
            admitted.pop(ev["task"], None)
    # the victim still held pages when it was chosen; the event's state is after the release
    assert pre["task"] not in pre["state"]["page_tables"]
    newest = max(admitted, key=lambda n: (admitted[n], list(admitted).index(n)))
    assert pre["task"] == newest and pre["needed_by"] != pre["task"]
    texts = board(scene, "victim")
    line = next(t for t in texts if t.startswith(pre["task"]))
    assert "newest: preempted" in line
    assert f"position {pre['position']}" in next(t for t in texts if t.startswith(pre["needed_by"]))
    assert pre["state"]["queue"][0] == pre["task"]
    assert f"waiting: {pre['task']}" in " ".join(board(scene, "requeue"))


def test_readmission_recomputes_prompt_and_generated_tokens(trace, scene):
    pre = next(ev for ev in trace.events if ev["kind"] == "preempt")
    name = pre["task"]
    prompt = next(len(r["prompt"]) for r in trace.workload["request"] if r["name"] == name)
    k = trace.events.index(pre)
    admit = next(ev for ev in trace.events[k:] if ev["kind"] == "admit" and ev["task"] == name)
    write = next(ev for ev in trace.events[k:] if ev["kind"] == "write"
                 and ev["phase"] == "prefill" and any(r["task"] == name for r in ev["rows"]))
    row = next(r for r in write["rows"] if r["task"] == name)
    generated = pre["state"]["outputs"][name]
    assert (row["start"], row["n"]) == (0, prompt + generated)
    assert admit["n_tokens"] == prompt + generated
    texts = board(scene, "recompute")
    assert f"positions 0-{prompt + generated - 1}: {prompt + generated} tokens computed again" \
        in " ".join(texts)
    assert " ".join(map(str, trace.outputs[name][:generated])) in " ".join(texts)


def test_end_card_equals_a_live_run_on_a_big_pool(trace, scene):
    wl = load_workload("preemption")
    big_pages = sum(pages_for(len(r.prompt) + r.max_new_tokens - 1, wl.page_size)
                    for r in wl.requests)
    _, _, sched = build_run(dataclasses.replace(wl, n_pages=big_pages))
    big = run_workload(wl, sched)
    assert not any(t.preemptions for t in sched.tasks.values())
    name = next(ev["task"] for ev in trace.events if ev["kind"] == "preempt")
    assert trace.outputs[name] == big[name]
    texts = board(scene, "end card")
    ids = " ".join(t for t in texts if t.startswith(f"{wl.n_pages} pages"))
    assert [int(x) for x in ids.split()[2:]] == trace.outputs[name]
    ids = " ".join(t for t in texts if t.startswith(f"{big_pages} pages"))
    assert [int(x) for x in ids.split()[2:]] == big[name]
    rows = {label: (a, b) for label, a, b in scene.card_rows}
    recomputed = sum(r["n"] for ev in trace.events if ev["kind"] == "write"
                     and ev["phase"] == "prefill" for r in ev["rows"]) - sum(
        len(r.prompt) for r in wl.requests)
    assert rows["tokens recomputed"] == (str(recomputed), "0")
    steps = trace.events[-1]["step"] + 1
    assert rows["steps to finish everything"] == (str(steps), str(sched.step_count))
    assert rows["requests preempted"] == (name, "none")


def test_captions_fit_and_the_cut_is_short(scene):
    assert scene.replay.cut_short == []
    assert 50 <= scene.replay.duration <= 120


def test_teaser_is_short_and_still_shows_the_trace(trace, tmp_path_factory):
    teaser = build(PreemptionScene, trace, tmp_path_factory.mktemp("teaser"), cut="teaser")
    assert 10 <= teaser.replay.duration <= 16
    check_screen_equals_trace(trace, teaser)
    assert teaser.detached == []
    assert {b["name"] for b in teaser.replay.boards} >= {"end card"}
    assert teaser.replay.cut_short == []
