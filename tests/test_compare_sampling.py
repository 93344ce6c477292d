"""Parallel sampling in the trace and against independent requests: the fork and copy events say
what the engine did (checked against the recorded state and a live run), and the second real
run's figures equal counts taken here from other fields and live observers."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
from conftest import tiny_twin

from astrai.compare import sampling
from astrai.errors import TraceFormatError
from astrai.inference.cache import pages_for
from astrai.inference.observer import Observer
from astrai.trace import Trace, load_trace, save_trace
from astrai.trace import source as engine_source
from astrai.trace.events import Alloc, Copy, Finish, Fork, Free, Share, Write
from astrai.trace.text import format_trace
from astrai.workload import build, load_workload, run_workload


@pytest.fixture(scope="module")
def comp():
    return sampling.compare("sampling")


def events(trace, kind):
    return [ev for ev in trace.events if isinstance(ev, kind)]


# ---- the workload's story ---------------------------------------------------------------------


def test_the_workload_has_a_half_filled_last_prompt_page():
    wl = load_workload("sampling")
    (req,) = wl.requests
    assert req.n == 3 and len(req.prompt) % wl.page_size == wl.page_size // 2
    assert wl.temperature > 0  # sampled, so the samples can diverge


def test_fork_shares_every_prompt_page_and_refs_reach_n(comp):
    trace = comp.trace
    forks = events(trace, Fork)
    assert [(e.task, e.parent, e.sample) for e in forks] == [
        ("A.1", "A", 1), ("A.2", "A", 2)]
    for e in forks:
        i = trace.events.index(e)
        shares = trace.events[i + 1 : i + 1 + len(e.pages)]
        assert [(type(s), s.task, s.page, s.logical) for s in shares] == [
            (Share, e.task, p, col) for col, p in enumerate(e.pages)]
        after = trace.events[i + 1 + len(e.pages)].state  # its length is set once shared
        assert e.n_tokens == 40 and after["lengths"][e.task] == 40
    after = trace.events[trace.events.index(forks[-1]) + 3].state
    assert [after["refs"][p] for p in forks[0].pages] == [3, 3, 3]
    # the prompt was computed once: one prefill row of 40 tokens
    rows = [r for ev in events(trace, Write) if ev.phase == "prefill" for r in ev.rows]
    assert [(r["task"], r["start"], r["n"]) for r in rows] == [("A", 0, 40)]


def test_copy_events_agree_with_the_state_around_them(comp):
    trace = comp.trace
    copies = events(trace, Copy)
    assert [(e.task, e.sample, e.source, e.slots, e.refs) for e in copies] == [
        ("A", 0, 2, 8, 2), ("A.1", 1, 2, 8, 1)]
    for e in copies:
        i = trace.events.index(e)
        before, free, alloc = trace.events[i - 3 : i]
        st = e.state
        # its reference to the shared page dropped first (others still hold it), then its page
        assert (type(free), free.page, free.task, free.refs) == (
            Free, e.source, e.task, e.refs)
        assert before.state["refs"][e.source] == e.refs + 1
        assert before.state["page_tables"][e.task][e.logical] == e.source
        assert (type(alloc), alloc.page, alloc.task, alloc.logical) == (
            Alloc, e.page, e.task, e.logical)
        assert st["page_tables"][e.task][e.logical] == e.page
        assert st["filled"][e.page] == e.slots == st["filled"][e.source]
        assert st["refs"][e.source] == e.refs >= 1 and st["refs"][e.page] == 1
    # the third sample, the last holder, keeps the page and writes into it in place
    first_decode = next(ev for ev in events(trace, Write) if ev.phase == "decode")
    runs = {r["task"]: r["runs"] for r in first_decode.rows}
    assert runs == {"A": [[copies[0].page, 8, 1]], "A.1": [[copies[1].page, 8, 1]],
                    "A.2": [[2, 8, 1]]}
    assert first_decode.state["refs"][2] == 1


def test_no_page_is_written_while_shared_and_full_pages_stay_shared(comp):
    trace = comp.trace
    for ev in events(trace, Write):
        for row in ev.rows:
            assert all(ev.state["refs"][p] == 1 for p, _, _ in row["runs"]), ev.step
    shared = trace.events.index(events(trace, Fork)[-1]) + 3  # the last fork's last share
    done = trace.events.index(events(trace, Finish)[-1])  # the last sample's last token
    assert all(ev.state["refs"][:2] == [3, 3] for ev in trace.events[shared : done + 1])
    assert trace.events[-1].state["refs"] == [0] * trace.geometry["n_pages"]


def test_copy_and_fork_show_the_lines_that_did_them(comp):
    copy_ev = events(comp.trace, Copy)[0]
    outer, caller = copy_ev.code[0], copy_ev.code[1]
    assert outer["fn"] == "PagedCache.copy_page"  # checked, then handed to the K/V store
    inner = next(f for f in copy_ev.returned if f["fn"] == "KVStore.copy_page")
    src, first = engine_source.source_of(inner["file"], inner["fn"])
    ran = [src[n - first] for n in inner["ran"]]
    assert any("_k_store[:, dst, :n_slots].copy_(" in line for line in ran)
    assert any("_v_store[:, dst, :n_slots].copy_(" in line for line in ran)
    assert caller["fn"] == "Scheduler._copy_on_write"
    src, first = engine_source.source_of(caller["file"], caller["fn"])
    assert "cache.copy_page(src, dst" in src[caller["line"] - first]
    fork = events(comp.trace, Fork)[0]
    assert fork.code[0]["fn"] == "Scheduler._fork"


def test_the_trace_round_trips_and_the_text_says_what_happened(comp, tmp_path):
    path = tmp_path / "s.json"
    save_trace(comp.trace, path)
    again = load_trace(path)
    assert [ev.to_json() for ev in again.events] == json.loads(
        json.dumps(comp.trace.to_json()))["events"]
    assert again.events == comp.trace.events
    text = "\n".join(format_trace(comp.trace))
    # The numbers come from the run (its prompt is real text: its length is the tokenizer's).
    req = comp.trace.workload["request"][0]
    n, new = len(req["prompt"]), req["max_new_tokens"]
    arrive = next(line for line in text.splitlines() if " arrive " in line)
    assert f"A: prompt {n} tokens" in arrive  # then the prompt's text, quoted
    assert arrive.endswith(f", up to {new} new, samples A, A.1, A.2")
    fork = next(ev for ev in comp.trace.events if ev.kind == "fork" and ev.task == "A.1")
    assert fork.pages == list(range(pages_for(n, comp.trace.geometry["page_size"])))
    assert f"A.1 (sample 1) forks from A: shares pages {fork.pages} ({n} tokens)" in text
    c = next(ev for ev in comp.trace.events if ev.kind == "copy")
    assert c.slots == n % comp.trace.geometry["page_size"]  # the partly filled last page
    assert (f"A (sample 0): slots 0..{c.slots - 1} of page {c.source} (still held by 2) "
            f"copied to page {c.page} -> A[{len(fork.pages) - 1}]") in text


@pytest.mark.parametrize("kind, key, value", [
    ("copy", "slots", 17),
    ("copy", "source", 99),
    ("copy", "page", -1),
    ("copy", "sample", -1),
    ("copy", "task", "A\nforged"),
    ("fork", "parent", None),
    ("fork", "pages", [0, 99]),
    ("fork", "n_tokens", "40"),
    ("arrive", "samples", ["A", 3]),
    ("arrive", "samples", "A"),
])
def test_bad_fork_copy_and_arrive_fields_are_refused(comp, kind, key, value):
    data = copy.deepcopy(json.loads(json.dumps(comp.trace.to_json())))
    next(ev for ev in data["events"] if ev["kind"] == kind)[key] = value
    with pytest.raises(TraceFormatError, match=rf"\.{key} "):
        Trace.from_json(data, "t.json")


def test_the_replay_planner_folds_fork_and_copy_into_registered_beats(comp):
    pytest.importorskip("manim")
    from scenes.framework.replay import KINDS, plan_beats

    beats = plan_beats(comp.trace.events)
    assert {b.kind for b in beats} <= set(KINDS)
    order = [i for b in beats for i in b.events]
    assert order == [i for i, ev in enumerate(comp.trace.events) if ev.phase != "init"]


# ---- the second real run ------------------------------------------------------------------------


class Counter(Observer):
    def __init__(self, cache):
        self.cache, self.allocs, self.peak = cache, 0, 0

    def on_alloc(self, page, owner=None):
        self.allocs += 1
        self.peak = max(self.peak, self.cache.n_used)


def live(wl):
    cache, _, sched = build(wl)
    counter = Counter(cache)
    cache.observer = counter
    return run_workload(wl, sched), counter


def test_figures_equal_live_counts_of_both_runs(comp):
    # Live runs of the tiny twin (the same prompt and limits: it forks, copies and allocates as
    # the real run does, which the first assertion checks), counted by an observer.
    wl = tiny_twin(load_workload("sampling"))
    twin = sampling.compare(workload=wl)
    out, group = live(wl)
    alone_out, alone = live(sampling.independent(wl))
    assert (twin.pages_allocated, twin.peak_pages, twin.copies) == (
        comp.pages_allocated, comp.peak_pages, comp.copies)
    assert (comp.pages_allocated, comp.peak_pages) == (group.allocs, group.peak)
    assert (comp.independent_pages_allocated, comp.independent_peak_pages) == (
        alone.allocs, alone.peak)
    assert out == twin.outputs and alone_out == twin.independent_outputs
    (req,) = wl.requests
    assert comp.prompt_tokens_computed == len(req.prompt)  # once
    assert comp.independent_prompt_tokens_computed == req.n * len(req.prompt)  # n times
    # the group allocated its prompt once plus one page per copy; each request its own
    assert comp.pages_allocated == pages_for(len(req.prompt), wl.page_size) + comp.copies
    assert comp.copies == req.n - 1 and comp.copied_slots == (req.n - 1) * 8
    assert comp.forks == req.n - 1 and comp.pages_shared == (req.n - 1) * 3
    assert comp.pages_allocated < comp.independent_pages_allocated
    assert comp.peak_pages < comp.independent_peak_pages


def test_every_sample_equals_its_independent_request(comp):
    # (Not that the samples differ from each other: that is what the draws give, and on some
    # CPUs two samples draw the same token.)
    assert comp.samples == ["A", "A.1", "A.2"]
    assert comp.sample_equal == {"A": True, "A.1": True, "A.2": True} and comp.outputs_equal
    assert comp.outputs == comp.independent_outputs
    assert not events(comp.independent_trace, Fork) and not events(comp.independent_trace,
                                                                      Copy)


def test_the_independent_workload_names_requests_as_the_samples():
    wl = load_workload("sampling")
    alone = sampling.independent(wl)
    assert [(r.name, r.n, r.prompt) for r in alone.requests] == [
        (n, 1, wl.requests[0].prompt) for n in ("A", "A.1", "A.2")]


def test_outputs_differ_when_they_should(comp):
    """The equality is not vacuous: a group run whose A.1 drew one other token is told apart
    from its independent twin (the token is changed here, so it differs on every CPU)."""
    outputs = {n: list(t) for n, t in comp.trace.outputs.items()}
    last = outputs["A.1"][-1]
    outputs["A.1"][-1] = last - 1 if last > 0 else last + 1  # another token of the vocabulary
    other = sampling.compare(trace=dataclasses.replace(comp.trace, outputs=outputs))
    assert other.sample_equal == {"A": True, "A.1": False, "A.2": True}
    assert not other.outputs_equal


def test_a_recorded_trace_is_reused(comp):
    again = sampling.compare(trace=comp.trace)
    assert again.trace is comp.trace
    names = [f.name for f in dataclasses.fields(comp)
             if f.name not in ("trace", "independent_trace")]
    assert [getattr(again, n) for n in names] == [getattr(comp, n) for n in names]
