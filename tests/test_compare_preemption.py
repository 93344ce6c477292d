"""A tight pool vs one that never preempts: the comparison's figures equal what the tests count
themselves from live schedulers and from other fields of the traces."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import tiny_twin

from astrai.compare import preemption
from astrai.trace.events import Admit
from astrai.workload import build, load_workload, run_workload


@pytest.fixture(scope="module")
def comp():
    return preemption.compare("preemption")


def _live(wl):
    _, _, sched = build(wl)
    out = run_workload(wl, sched)
    return sched, out


def test_preempted_and_steps_equal_live_runs(comp):
    # Live runs of the tiny twin (the same requests): its pages move as the real run's do,
    # which the first assertion checks, so its live counts check the real comparison's.
    wl = tiny_twin(load_workload("preemption"))
    twin = preemption.compare(workload=wl)
    assert (twin.preempted, twin.steps, twin.big_steps, twin.big_n_pages) == (
        comp.preempted, comp.steps, comp.big_steps, comp.big_n_pages)
    tight, tight_out = _live(wl)
    big, big_out = _live(dataclasses.replace(wl, n_pages=twin.big_n_pages))
    assert comp.preempted == [t.name for t in tight.tasks.values() if t.preemptions]
    assert comp.preempted  # the story needs one
    assert comp.preemptions == sum(t.preemptions for t in tight.tasks.values())
    assert not any(t.preemptions for t in big.tasks.values())
    assert (comp.steps, comp.big_steps) == (tight.step_count, big.step_count)
    assert comp.extra_steps == tight.step_count - big.step_count
    assert twin.outputs == tight_out and twin.big_outputs == big_out
    assert twin.outputs_equal is (tight_out == big_out) is True
    assert comp.outputs_equal  # the real model's preempted answers equal the big pool's


def test_recompute_is_the_readmitted_prompt_and_generated_tokens(comp):
    events = comp.trace.events
    admitted: set[str] = set()
    again = []
    for ev in events:
        if isinstance(ev, Admit):
            if ev.task in admitted:
                again.append(ev)
            admitted.add(ev.task)
    ps = comp.trace.geometry["page_size"]
    assert [ev.task for ev in again] == [r.task for r in comp.readmissions]
    for ev, r in zip(again, comp.readmissions):
        assert ev.n_tokens == ev.prompt_len + ev.generated == r.n_tokens
        assert r.recomputed == ev.n_tokens - len(ev.hits) * ps
        assert r.generated == ev.generated > 0
    assert comp.recomputed_tokens == sum(ev.n_tokens - len(ev.hits) * ps for ev in again)


def test_finish_steps_come_from_the_runs(comp):
    for name in comp.preempted:
        assert comp.finished[name] > comp.big_finished[name]
    assert comp.steps == max(comp.finished.values()) + 2  # one more step retires the last
