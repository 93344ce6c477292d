"""The prefix cache on vs off: the comparison's figures equal what the tests count themselves,
from other fields of the runs (admit hits, the workload's prompts, live schedulers)."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import TOY_PREFIX

from astrai.compare import prefix
from astrai.errors import WorkloadError
from astrai.inference.cache import pages_for
from astrai.trace.events import Admit, Record, Share
from astrai.workload import build, load_workload, parse_workload, run_workload


@pytest.fixture(scope="module")
def comp():
    return prefix.compare("prefix")


def test_figures_equal_counts_from_the_admissions(comp):
    ps = comp.trace.geometry["page_size"]
    admits = [ev for ev in comp.trace.events if isinstance(ev, Admit)]
    assert comp.prompt_tokens_cached == sum(len(ev.hits) * ps for ev in admits) > 0
    assert comp.prompt_tokens_computed == sum(ev.n_tokens - len(ev.hits) * ps
                                              for ev in admits)
    assert comp.pages_shared == sum(len(ev.hits) for ev in admits) > 0
    assert comp.pages_revived > 0 and comp.pages_evicted > 0  # the story has both


def test_the_run_without_the_cache_computes_every_prompt_and_shares_nothing(comp):
    wl = load_workload("prefix")
    assert comp.off_prompt_tokens_computed == sum(len(r.prompt) for r in wl.requests)
    # No sharing: every request allocates the pages of its longest length itself.
    most = [pages_for(len(r.prompt) + r.max_new_tokens - 1, wl.page_size) for r in wl.requests]
    assert comp.off_pages_allocated == sum(most)
    assert comp.pages_allocated == sum(most) - comp.pages_shared
    assert comp.pages_saved == comp.pages_shared
    assert comp.prefill_tokens_saved == comp.prompt_tokens_cached
    assert not any(isinstance(ev, (Share, Record)) for ev in comp.off_trace.events)
    assert comp.off_prompt_tokens_cached == comp.off_pages_shared == 0


# Recording never changes a run: shown on the tiny model (two live runs of the real one would
# cost this file a minute, and test nothing more).
SMALL = parse_workload(TOY_PREFIX)


def test_outputs_equal_two_live_runs():
    small = prefix.compare(workload=SMALL)
    assert small.pages_shared > 0
    outs = []
    for caching in (True, False):
        _, _, sched = build(dataclasses.replace(SMALL, prefix_caching=caching))
        outs.append(run_workload(SMALL, sched))
    assert outs[0] == small.outputs and outs[1] == small.off_outputs
    assert small.outputs_equal is (outs[0] == outs[1]) is True


def test_a_recorded_trace_is_reused(comp):
    again = prefix.compare(trace=comp.trace)
    assert again.trace is comp.trace
    names = [f.name for f in dataclasses.fields(comp) if f.name not in ("trace", "off_trace")]
    assert [getattr(again, n) for n in names] == [getattr(comp, n) for n in names]


def test_unknown_workload_is_named():
    with pytest.raises(WorkloadError, match="no workload 'nope'"):
        prefix.compare("nope")
