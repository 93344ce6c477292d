"""Continuous vs static batching: both runs are real, and what compare() reports is what they did.

The grid and the pool figures are recomputed here from the trace's own events and states, the
static grid from the dense runner's records; the static runner is checked against the paged
Scheduler on outputs (greedy and sampled) and on its batching rule.
"""

from __future__ import annotations

from collections import Counter

import pytest

from astrai.compare import batching
from astrai.compare.static import GEN, IDLE, PROMPT, DenseBatcher
from astrai.errors import RequestTooLarge, SchedulerError
from astrai.inference.scheduler import Status, Task
from astrai.trace.events import Admit, Tokens, Write
from astrai.workload import build, load_workload, parse_workload, run_workload

SMALL = {
    "name": "small",
    "cache": {"n_pages": 12, "page_size": 4},
    "model": {"n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "head_dim": 8, "d_model": 16,
              "d_ff": 32},
    "scheduler": {"max_batch": 2},
    "request": [
        {"name": "A", "prompt_len": 5, "max_new_tokens": 2},
        {"name": "B", "prompt_len": 3, "max_new_tokens": 7},
        {"name": "C", "prompt_len": 7, "max_new_tokens": 3, "arrival": 1},
        {"name": "D", "prompt_len": 2, "max_new_tokens": 4, "arrival": 2},
        {"name": "E", "prompt_len": 6, "max_new_tokens": 1, "after": "D"},
    ],
}


@pytest.fixture(scope="module")
def traffic():
    # One timed run of each: traffic runs the real model, and the tests check what the runs
    # did, not how fast (bench/ times them).
    return batching.compare(workload="traffic", repeats=1)


@pytest.fixture(scope="module")
def small():
    return batching.compare(workload=parse_workload(SMALL, "small"))


def test_traffic_is_the_workload_the_issue_asks_for():
    wl = load_workload("traffic")
    assert len(wl.requests) >= 10
    assert len({len(r.prompt) for r in wl.requests}) >= 8
    assert len({r.max_new_tokens for r in wl.requests}) >= 8
    assert len({r.arrival for r in wl.requests}) >= 6
    assert wl.max_batch < len(wl.requests)


@pytest.mark.parametrize("name", ["traffic", "small"])
def test_both_runs_are_real_and_agree(name, traffic, small):
    c = traffic if name == "traffic" else small
    assert c.outputs_equal and c.static_outputs == c.continuous_outputs
    assert c.continuous_outputs == c.trace.outputs
    assert c.static_steps == len(c.static_records) == len(c.static_grid)
    assert c.continuous_steps == 1 + c.trace.events[-1].step == len(c.continuous_grid)
    assert c.continuous_tokens == c.static_tokens == sum(
        r["max_new_tokens"] for r in c.trace.workload["request"])
    assert c.continuous_tokens_per_step == c.continuous_tokens / c.continuous_steps
    assert c.static_tokens_per_step == c.static_tokens / c.static_steps
    for wall in (c.continuous_wall_s, c.static_wall_s):
        assert isinstance(wall, float) and wall > 0


def test_static_batching_waits_for_the_whole_batch(traffic):
    c = traffic
    assert c.static_steps > c.continuous_steps  # what the scene is about, from the runs
    batch: set[str] = set()
    made = Counter()  # tokens each request got so far: one per PROMPT or GEN row
    for rec in c.static_records:
        names = {r.task for r in rec.rows if r.task}
        if rec.admitted:
            assert all(made[t] == len(c.static_outputs[t]) for t in batch), \
                "a new batch only once every member of the last is done"
            assert set(rec.admitted) == names
            batch = names
        assert names <= batch
        for r in rec.rows:
            if r.kind != IDLE:
                made[r.task] += 1
    assert all(made[t] == len(o) for t, o in c.static_outputs.items())
    assert any(r.task and r.kind == IDLE for rec in c.static_records for r in rec.rows)


def _writes(trace):
    """step -> {task: (kind, n)} from the write events, recomputed here."""
    out: dict[int, dict[str, tuple[str, int]]] = {}
    for ev in trace.events:
        if isinstance(ev, Write):
            kind = PROMPT if ev.phase == "prefill" else GEN
            for row in ev.rows:
                out.setdefault(ev.step, {})[row["task"]] = (kind, row["n"])
    return out


@pytest.mark.parametrize("name", ["traffic", "small"])
def test_continuous_grid_is_the_traces_writes(name, traffic, small):
    c = traffic if name == "traffic" else small
    writes = _writes(c.trace)
    column: dict[str, int] = {}
    for step, row in enumerate(c.continuous_grid):
        assert len(row) == c.max_batch
        shown = {cell.task: (cell.kind, cell.n) for cell in row if cell.kind != IDLE}
        assert shown == writes.get(step, {})
        for slot, cell in enumerate(row):
            if cell.task is not None:
                # a request stays in one slot while it runs
                assert column.setdefault(cell.task + str(_admits(c.trace, cell.task, step)),
                                         slot) == slot
    # prompt cells hold the whole prompt (no prefix hits in these workloads)
    prompts = {r["name"]: len(r["prompt"]) for r in c.trace.workload["request"]}
    for row in c.continuous_grid:
        for cell in row:
            if cell.kind == PROMPT:
                assert cell.n == prompts[cell.task]


def _admits(trace, task, step):
    return sum(1 for ev in trace.events
               if isinstance(ev, Admit) and ev.task == task and ev.step <= step)


@pytest.mark.parametrize("name", ["traffic", "small"])
def test_tokens_and_pool_per_step_come_from_the_trace(name, traffic, small):
    c = traffic if name == "traffic" else small
    tokens = Counter()
    for ev in c.trace.events:
        if isinstance(ev, Tokens):
            tokens[ev.step] += len(ev.tokens)
    cont, static = c.tokens_generated
    assert cont == [tokens[s] for s in range(c.continuous_steps)]
    assert static == [sum(1 for r in rec.rows if r.kind != IDLE) for rec in c.static_records]
    n_pages = c.trace.geometry["n_pages"]
    for step, (used, cached, free) in enumerate(c.continuous_pool):
        st = [ev.state for ev in c.trace.events if ev.step == step][-1]
        held = {p for t in st["page_tables"].values() for p in t}
        assert used == len(held)
        assert cached == len(st["cached"])
        assert free == n_pages - len(held) - len(st["cached"])


def test_static_runner_matches_the_scheduler_when_sampling():
    data = dict(SMALL, scheduler={"max_batch": 3, "temperature": 0.8, "seed": 5})
    wl = parse_workload(data, "sampled")
    _, _, sched = build(wl)
    paged = run_workload(wl, sched)
    _, model, _ = build(wl)
    for static in (True, False):
        runner = DenseBatcher(model, 3, batching.max_len_of(wl), static=static,
                              temperature=wl.temperature, seed=wl.seed)
        assert run_workload(wl, runner) == paged


def test_dense_runner_rejects_what_never_fits_and_stays_unchanged():
    wl = parse_workload(SMALL, "small")
    _, model, _ = build(wl)
    runner = DenseBatcher(model, 2, 8)
    runner.submit(Task("ok", [1, 2, 3], 6))  # 3 + 6 - 1 = 8 slots: fits exactly
    with pytest.raises(RequestTooLarge, match="max_len=8"):
        runner.submit(Task("big", [1, 2, 3], 7))
    with pytest.raises(SchedulerError, match="already submitted"):
        runner.submit(Task("ok", [1], 1))
    with pytest.raises(SchedulerError, match="empty prompt"):
        runner.submit(Task("empty", [], 1))
    assert list(runner.tasks) == ["ok"] and [t.name for t in runner.waiting] == ["ok"]
    out = runner.run()
    assert len(out["ok"]) == 6 and runner.tasks["ok"].status is Status.DONE
    assert runner.idle
