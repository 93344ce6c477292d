"""PreemptionScene: the screen equals the trace after every event, the boards name the real
victim, its requeue and its recompute, and the end card's figures and tokens equal what this test
gets itself from a live run on a pool big enough never to preempt."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("manim")

from narration_checks import check_spoken, speech, spoken_with  # noqa: E402
from scene_checks import (  # noqa: E402
    board,
    card_answer,
    check_boards_inside,
    check_frame_words,
    check_panels,
    check_screen_equals_trace,
    check_teaser,
    story_fixtures,
)

from astrai.inference.cache import pages_for  # noqa: E402
from astrai.text import load_tokenizer  # noqa: E402
from astrai.trace.events import Admit, Alloc, Grow, Preempt, Retire, Tokens, Write  # noqa: E402
from astrai.workload import build as build_run  # noqa: E402
from astrai.workload import load_workload, run_workload  # noqa: E402
from scenes.framework.kit.endcard import card_text  # noqa: E402
from scenes.preemption import PreemptionScene  # noqa: E402

trace, scene = story_fixtures(PreemptionScene, "preemption")
SPEECH_BUDGET = 55.0  # seconds of narration the explainer gives this scene


def test_screen_equals_the_trace_after_every_event(trace, scene):
    check_screen_equals_trace(trace, scene)
    assert scene.detached == []  # nothing animated outside the scene (it would stay on top)


def test_frames_show_the_words_their_slots_hold(trace, scene):
    assert check_frame_words(trace, scene) > 0


def test_panels_show_the_real_source(trace, scene):
    check_panels(trace, scene)


def test_boards_stay_inside_and_text_never_overlaps(scene):
    check_boards_inside(scene)


def test_the_victim_is_the_newest_running_request(trace, scene):
    pre = next(ev for ev in trace.events if isinstance(ev, Preempt))
    admitted = {}  # the last admission of each running request, in order
    for ev in trace.events[: trace.events.index(pre)]:
        if isinstance(ev, Admit):
            admitted[ev.task] = ev.step
        elif isinstance(ev, (Retire, Preempt)):
            admitted.pop(ev.task, None)
    # the victim still held pages when it was chosen; the event's state is after the release
    assert pre.task not in pre.state["page_tables"]
    newest = max(admitted, key=lambda n: (admitted[n], list(admitted).index(n)))
    assert pre.task == newest and pre.needed_by != pre.task
    texts = board(scene, "victim")
    line = next(t for t in texts if t.startswith(pre.task))
    assert "newest: preempted" in line
    assert f"position {pre.position}" in next(t for t in texts if t.startswith(pre.needed_by))
    assert pre.state["queue"][0] == pre.task
    assert f"waiting: {pre.task}" in " ".join(board(scene, "requeue"))


def test_readmission_recomputes_prompt_and_generated_tokens(trace, scene):
    pre = next(ev for ev in trace.events if isinstance(ev, Preempt))
    name = pre.task
    prompt = next(len(r["prompt"]) for r in trace.workload["request"] if r["name"] == name)
    k = trace.events.index(pre)
    admit = next(ev for ev in trace.events[k:] if isinstance(ev, Admit) and ev.task == name)
    write = next(ev for ev in trace.events[k:] if isinstance(ev, Write)
                 and ev.phase == "prefill" and any(r["task"] == name for r in ev.rows))
    row = next(r for r in write.rows if r["task"] == name)
    generated = pre.state["outputs"][name]
    assert (row["start"], row["n"]) == (0, prompt + generated)
    assert admit.n_tokens == prompt + generated
    texts = board(scene, "recompute")
    assert f"positions 0-{prompt + generated - 1}: {prompt + generated} tokens computed again" \
        in " ".join(texts)
    # what it had made, in words: the pieces of its first `generated` tokens
    made = [ev.pieces[name] for ev in trace.events if isinstance(ev, Tokens)
            and name in (ev.pieces or {})][:generated]
    assert len(made) == generated
    assert f'{generated} tokens: "{"".join(made)}"' in " ".join(texts)


def test_end_card_equals_a_live_run_on_a_big_pool(trace, scene):
    wl = load_workload("preemption")
    big_pages = sum(pages_for(len(r.prompt) + r.max_new_tokens - 1, wl.page_size)
                    for r in wl.requests)
    _, _, sched = build_run(dataclasses.replace(wl, n_pages=big_pages))
    big = run_workload(wl, sched)
    assert not any(t.preemptions for t in sched.tasks.values())
    name = next(ev.task for ev in trace.events if isinstance(ev, Preempt))
    assert trace.outputs[name] == big[name]
    # The card compares the answers as text: each run's own, decoded here from its tokens.
    texts, tok = board(scene, "end card"), load_tokenizer(wl.checkpoint)
    said = f"{name}'s answer"
    assert card_answer(texts, f"{wl.n_pages} pages", said) == card_text(
        tok.decode(trace.outputs[name])) == card_text(trace.output_texts[name])
    assert card_answer(texts, f"{big_pages} pages", said) == card_text(tok.decode(big[name]))
    assert any(t.strip() == "= the same text" for t in texts)
    rows = {label: (a, b) for label, a, b in scene.card_rows}
    recomputed = sum(r["n"] for ev in trace.events if isinstance(ev, Write)
                     and ev.phase == "prefill" for r in ev.rows) - sum(
        len(r.prompt) for r in wl.requests)
    assert rows["tokens recomputed"] == (str(recomputed), "0")
    steps = trace.events[-1].step + 1
    assert rows["steps to finish everything"] == (str(steps), str(sched.step_count))
    assert rows["requests preempted"] == (name, "none")


def test_captions_fit_and_the_cut_is_short(scene):
    assert scene.replay.cut_short == []
    assert 50 <= scene.replay.duration <= 120


# ---- what the narrator says ------------------------------------------------------------------


def test_narration_is_plain_words_within_budget(scene):
    check_spoken(scene, SPEECH_BUDGET)
    assert speech(scene) >= 0.7 * SPEECH_BUDGET  # the whole story, not a summary of it


def test_spoken_lines_carry_the_runs_numbers(trace, scene):
    """Every number the narrator says, worked out here from the trace and a live run on a
    pool big enough never to preempt."""
    wl = load_workload("preemption")
    k = next(i for i, ev in enumerate(trace.events) if isinstance(ev, Preempt))
    pre = trace.events[k]
    name = pre.task
    spoken_with(scene, f"{len(wl.requests)} requests share a pool of only {wl.n_pages} pages")
    took = [ev for ev in trace.events[:k] if isinstance(ev, Alloc) and ev.phase == "decode"][-1]
    assert took.state["free_mask"] == 0  # it took the last free page
    grow = next(ev for ev in reversed(trace.events[:k]) if isinstance(ev, Grow)
                and ev.task == took.task)
    assert grow.n_tokens == grow.capacity + 1 == grow.held * wl.page_size + 1
    spoken_with(scene, f"At token {grow.n_tokens}, {took.task}'s {grow.held} pages",
                f"takes page {took.page}: the last free one")
    spoken_with(scene, f"{pre.needed_by} needs a new page, but all {wl.n_pages} are taken",
                f"newest request, {name}")
    prompt = next(len(r.prompt) for r in wl.requests if r.name == name)
    generated = pre.state["outputs"][name]
    spoken_with(scene, f"It keeps its {prompt + generated} tokens")
    readmit = next(i for i in range(k, len(trace.events)) if isinstance(trace.events[i], Admit)
                   and trace.events[i].task == name)
    freer = next(ev.task for ev in reversed(trace.events[k:readmit]) if isinstance(ev, Retire))
    spoken_with(scene, f"When {freer}'s finished, {name} gets back in",
                f"Its {prompt} prompt tokens and the {generated} it had made",
                f"one prefill of {prompt + generated}")
    spoken_with(scene, f"{name} goes on to its token number {generated + 1}")
    big_pages = sum(pages_for(len(r.prompt) + r.max_new_tokens - 1, wl.page_size)
                    for r in wl.requests)
    _, _, sched = build_run(dataclasses.replace(wl, n_pages=big_pages))
    big = run_workload(wl, sched)
    assert trace.outputs[name] == big[name]
    steps = trace.events[-1].step + 1
    extra = steps - sched.step_count
    spoken_with(scene, f"On a pool of {big_pages} pages", f"{name}'s output is the same",
                f"{prompt + generated} tokens computed twice",
                f"{extra} more steps." if extra else "not one step more.")


def test_teaser_is_one_spoken_shot(trace, tmp_path_factory):
    """The teaser: the victim board as the pool runs dry, one line with the run's numbers,
    under the promo's share of the teaser, subtitles readable."""
    teaser = check_teaser(PreemptionScene, trace, tmp_path_factory.mktemp("teaser"),
                          boards=("victim",))
    assert teaser.clock <= 12.5
    assert 1 <= len(teaser.lines) <= 2 and 5.0 <= speech(teaser) <= 10.0
    check_spoken(teaser, 10.0)
    pre = next(ev for ev in trace.events if isinstance(ev, Preempt))
    spoken_with(teaser, f"the newest request, {pre.task}",
                f"recomputes its {pre.n_tokens} tokens", "with the same output")
    assert [b["name"] for b in teaser.replay.boards] == ["victim"]  # one idea, one board
