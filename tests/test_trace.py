"""Traces: every event's state is the live state, JSON round-trips, runs are repeatable."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from conftest import TOY_PREFIX

from astrai.errors import TraceFormatError
from astrai.inference.cache import pages_for
from astrai.trace import EVENTS, Trace, load_trace, record, recorded, save_trace
from astrai.trace.events import Admit, Alloc, Arrive, Free, Gather, Phase, Retire, Share, Write
from astrai.trace.recorder import Recorder
from astrai.trace.text import format_trace, mask_bits
from astrai.workload import build, load_workload, parse_workload, run_workload

TOY = {**TOY_PREFIX, "request": [
    *TOY_PREFIX["request"], {"name": "c", "prompt_len": 13, "max_new_tokens": 5, "after": "a"}]}


class LiveCheck(Recorder):
    """A recorder that compares each event's state with the live cache and scheduler."""

    checked = 0

    def _emit(self, kind, **fields):
        super()._emit(kind, **fields)
        state, cache, sched = self.events[-1].state, self.cache, self.scheduler
        assert state["free_mask"] == cache.free_mask
        assert state["refs"] == list(cache.refs)
        assert state["cached"] == list(cache.cached_pages)
        live = {t.name: t.page_table for t in sched.tasks.values() if t.page_table}
        assert state["page_tables"] == live
        assert state["lengths"] == {n: sched.tasks[n].length for n in live}
        assert state["queue"] == [t.name for t in sched.waiting]
        cache.check()  # observers only ever see a whole, consistent cache
        self.checked += 1


@pytest.mark.parametrize("source", ["seed", "prefix", "preemption", TOY])
def test_every_event_state_equals_live_state(source):
    wl = load_workload(source) if isinstance(source, str) else parse_workload(source)
    cache, _, scheduler = build(wl)
    with LiveCheck(cache, scheduler) as rec:
        run_workload(wl, scheduler)
    assert rec.checked == len(rec.events) > 50
    kinds = {type(ev) for ev in rec.events}
    assert {Arrive, Phase, Admit, Alloc, Write, Gather, Free, Retire} <= kinds


def test_filled_slots_follow_writes():
    trace = record(parse_workload(TOY))
    ps = trace.geometry["page_size"]
    for ev in trace.events:
        state = ev.state
        for name, table in state["page_tables"].items():
            n = state["lengths"][name]
            for logical, page in enumerate(table):
                # The task's own K/V fills each page up to its length.
                assert state["filled"][page] >= min(ps, max(0, n - logical * ps))
        for page in range(trace.geometry["n_pages"]):
            if state["free_mask"] >> page & 1:
                assert state["filled"][page] == 0


def test_seed_reproduces_the_seed_story():
    trace = recorded("seed")  # the run scene 1 replays, kept in the trace store
    wl = load_workload("seed")
    a, b, _ = wl.requests
    ps = trace.geometry["page_size"]
    allocs = [(ev.task, ev.logical, ev.page) for ev in trace.events
              if isinstance(ev, Alloc)]
    na, nb = pages_for(len(a.prompt), ps), pages_for(len(b.prompt), ps)
    assert allocs[:na + nb] == [("A", k, k) for k in range(na)] + [
        ("B", k, na + k) for k in range(nb)]
    # A grows on demand while decoding, when its length crosses its prompt's pages
    grow = next(ev for ev in trace.events if isinstance(ev, Alloc) and ev.task == "A"
                and ev.phase == "decode")
    assert (grow.logical, grow.page) == (na, na + nb)  # the lowest free page
    assert grow.state["lengths"]["A"] == na * ps
    # C arrives when A is done and takes the lowest free pages: A's; and B, growing, takes
    # the page A grew into, so freed pages come back scattered among the living
    c_pages = [p for t, _, p in allocs if t == "C"]
    assert c_pages == sorted(c_pages) and c_pages[:na] == list(range(na))
    b_grow = next(ev for ev in trace.events if isinstance(ev, Alloc) and ev.task == "B"
                  and ev.phase == "decode")
    assert b_grow.page == grow.page and b_grow.state["page_tables"]["B"][-1] == grow.page
    assert len(trace.outputs["A"]) == a.max_new_tokens
    assert trace.events[-1].state["refs"] == [0] * trace.geometry["n_pages"]


def test_code_records_the_functions_that_ran():
    trace = record("seed")
    alloc = next(ev for ev in trace.events if isinstance(ev, Alloc))
    assert any(f["fn"] == "Scheduler._admit" for f in alloc.code)
    take = next(f for f in alloc.returned if f["fn"] == "PageAllocator._take")
    assert take["file"] == "astrai/inference/allocator.py"
    import inspect

    from astrai.inference.allocator import PageAllocator

    lines, start = inspect.getsourcelines(PageAllocator._take)
    ran = [lines[n - start].strip() for n in take["ran"]]
    assert "lsb = word & -word  # its lowest set bit is the lowest free page" in ran
    assert "return -1" not in ran  # a free page was there
    # a free page was there: no eviction
    assert not any(f["fn"] == "PrefixIndex.evict_lru" for f in alloc.returned)


def test_json_round_trip(tmp_path):
    trace = record(parse_workload(TOY))
    path = tmp_path / "t.json"
    save_trace(trace, path)
    back = load_trace(path)
    assert back.to_json() == json.loads(json.dumps(trace.to_json()))
    assert back == Trace.from_json(trace.to_json())


def test_two_runs_give_identical_traces():
    assert record("prefix").to_json() == record("prefix").to_json()


def test_cli_is_repeatable_and_saves(tmp_path):
    out = tmp_path / "seed.json"
    cmd = [sys.executable, "-m", "astrai.trace", "seed"]
    first = subprocess.run(cmd + ["-o", str(out)], capture_output=True, text=True, check=True)
    second = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert first.stdout == second.stdout
    saved = load_trace(out)
    assert saved.workload["name"] == "seed"
    grow = next(ev for ev in saved.events if isinstance(ev, Alloc) and ev.phase == "decode")
    assert f"page {grow.page} -> {grow.task}[{grow.logical}]" in first.stdout


def test_cli_reports_a_bad_workload(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[cache]\nn_pages = 0\npage_size = 4\n[[request]]\nname = "a"\n')
    r = subprocess.run([sys.executable, "-m", "astrai.trace", str(bad)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "cache.n_pages" in r.stderr
    r = subprocess.run([sys.executable, "-m", "astrai.trace", "nope"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "no workload 'nope'" in r.stderr


def test_text_lists_every_event_with_page_state():
    trace = record(parse_workload(TOY))
    lines = list(format_trace(trace))
    assert len(lines) == 2 + len(trace.events) + len(trace.outputs)
    first_alloc = next(ev for ev in trace.events if isinstance(ev, Alloc))
    bits = mask_bits(first_alloc.state["free_mask"], 6)
    assert bits == "011111"
    assert any(f"free={bits}" in line and " alloc " in line for line in lines)


def _mutate(trace_json, fn):
    data = copy.deepcopy(trace_json)
    fn(data)
    return data


@pytest.fixture(scope="module")
def good():
    return record(parse_workload(TOY), lines=False).to_json()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(version=2), "unknown trace version 2"),
        (lambda d: d.pop("version"), "missing version"),
        (lambda d: d.update(events={}), "events must be"),
        (lambda d: d["geometry"].update(n_pages=0), "geometry.n_pages"),
        (lambda d: d["events"][3].update(kind="teleport"), "events[3].kind 'teleport'"),
        (lambda d: d["events"][3].pop("step"), "events[3] needs an int step"),
        (lambda d: d["events"][5]["state"].update(refs=[0]), "events[5].state.refs"),
        (lambda d: d["events"][5]["state"].update(free_mask=1 << 40), "free_mask has bits"),
        (lambda d: d["events"][5]["state"].pop("cached"), "events[5].state.cached"),
        (lambda d: d["events"][5]["state"]["page_tables"].update(x=[99]), "page id outside"),
    ],
)
def test_malformed_traces_are_named(good, change, message):
    with pytest.raises(TraceFormatError) as info:
        Trace.from_json(_mutate(good, change), "t.json")
    assert message in str(info.value)


def test_every_kind_has_its_fields(good):
    for ev in good["events"]:
        cls = EVENTS[ev["kind"]]
        assert {name for name, _, optional in cls.own_fields if not optional} <= set(ev)
    broken = _mutate(good, lambda d: next(e for e in d["events"] if e["kind"] == "alloc")
                     .pop("page"))
    with pytest.raises(TraceFormatError, match=r"\(alloc\) is missing page"):
        Trace.from_json(broken)


def test_load_rejects_non_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(TraceFormatError, match="not JSON"):
        load_trace(path)


def test_trace_names_its_source_and_traces_the_constructor():
    import hashlib
    from pathlib import Path

    trace = record(parse_workload(TOY))
    root = Path(__file__).resolve().parents[1]
    assert trace.source == {
        f: hashlib.sha256((root / f).read_bytes()).hexdigest()
        for f in ("astrai/inference/cache.py", "astrai/inference/allocator.py",
                  "astrai/inference/prefix.py", "astrai/inference/kv.py",
                  "astrai/inference/scheduler.py")
    }
    first = trace.events[0]
    assert {"PagedCache.__init__", "KVStore.__init__", "PageAllocator.__init__",
            "Scheduler.__init__"} <= {f["fn"] for f in first.returned}


@pytest.mark.parametrize("source", ["prefix", "preemption", TOY])
def test_cache_events_name_the_task_the_scheduler_said(source):
    """The scheduler's hooks name whose pages the cache moves (no engine state read): each
    alloc/share lands in that task's table, each free leaves it, write rows are the batch."""
    trace = record(source if isinstance(source, str) else parse_workload(TOY))
    before = None
    for ev in trace.events:
        st = ev.state
        if isinstance(ev, (Alloc, Share)):
            table = st["page_tables"][ev.task]
            assert table[ev.logical] == ev.page
        elif isinstance(ev, Free):
            held = before["page_tables"][ev.task]
            assert held[-1] == ev.page  # released last page first
            assert st["page_tables"].get(ev.task, []) == held[:-1]
        elif isinstance(ev, Write):
            for row in ev.rows:
                assert row["task"] in st["page_tables"]
                assert {p for p, _, _ in row["runs"]} <= set(st["page_tables"][row["task"]])
        before = st
