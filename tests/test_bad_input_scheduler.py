"""A step that raises changes nothing; bad settings and tasks are refused by name."""

from __future__ import annotations

import math
import random

import pytest
from conftest import cache_state

from astrai.errors import BadSetting, SchedulerError
from astrai.inference.cache import PagedCache
from astrai.inference.scheduler import Scheduler, Status, Task
from astrai.model import ModelConfig, TinyModel

SMALL = ModelConfig(vocab_size=64, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1,
                    head_dim=8, d_ff=32, seed=5)
MODEL = TinyModel(SMALL)


class Flaky:
    """The real model, raising on chosen forward calls: before it runs, or after it has
    written every layer's K/V."""

    def __init__(self, fail_at: set[int], when: str = "before", exc=RuntimeError):
        self.config, self.calls, self.fail_at, self.when, self.exc = SMALL, 0, fail_at, when, exc

    def __call__(self, *args):
        self.calls += 1
        boom = self.calls in self.fail_at
        if boom and self.when == "before":
            raise self.exc(f"forward {self.calls} failed")
        out = MODEL(*args)
        if boom:
            raise self.exc(f"forward {self.calls} failed after writing K/V")
        return out


def requests(seed=0, n=7):
    rng = random.Random(seed)
    system = [rng.randrange(64) for _ in range(8)]
    out = []
    for i in range(n):
        prompt = (system if i % 2 else []) + [rng.randrange(64) for _ in range(rng.randint(2, 9))]
        out.append((f"r{i}", prompt, rng.randint(2, 7)))
    return out


def scheduler(model, temperature=0.0):
    # 7 pages of 4 slots: tight enough that decode preempts.
    cache = PagedCache(SMALL.n_layers, 7, 4, SMALL.n_kv_heads, SMALL.head_dim)
    return Scheduler(cache, model, max_batch=3, temperature=temperature, seed=1)


def snapshot(sched: Scheduler) -> dict:
    return {
        "cache": cache_state(sched.cache),
        "tasks": {n: (t.status, list(t.page_table), list(t.output), t.length, t.cached_len,
                      t.preemptions) for n, t in sched.tasks.items()},
        "waiting": [t.name for t in sched.waiting],
        "running": [t.name for t in sched.running],
        "step": sched.step_count,
    }


def drive(sched: Scheduler, reqs, arrivals=True) -> tuple[dict, int]:
    """Run to the end; every step that raises must leave the state exactly as before it."""
    pending, failures = list(reqs), 0
    while pending or not sched.idle:
        for req in list(pending):
            if not arrivals or int(req[0][1:]) <= sched.step_count:
                pending.remove(req)
                sched.submit(Task(req[0], list(req[1]), req[2]))
        before = snapshot(sched)
        try:
            sched.step()
        except (RuntimeError, KeyboardInterrupt):
            failures += 1
            assert snapshot(sched) == before
            sched.cache.check()
        assert sched.step_count < 500
    sched.cache.check()
    assert sched.cache.n_available == sched.cache.n_pages  # nothing leaked
    return {n: t.output for n, t in sched.tasks.items()}, failures


@pytest.fixture(scope="module", params=[0.0, 0.8], ids=["greedy", "sampled"])
def reference(request):
    sched = scheduler(MODEL, request.param)
    outputs, _ = drive(sched, requests())
    assert any(t.preemptions for t in sched.tasks.values())  # the run does preempt
    return request.param, outputs


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("fail_at", [{1}, {2}, {3}, {5}, {8}, {2, 3, 4}, {13, 21}])
def test_a_forward_that_raises_changes_nothing(reference, fail_at, when):
    temperature, want = reference
    flaky = Flaky(fail_at, when)
    outputs, failures = drive(scheduler(flaky, temperature), requests())
    assert failures == len(fail_at)
    assert outputs == want


def test_keyboard_interrupt_mid_step_changes_nothing(reference):
    temperature, want = reference
    outputs, failures = drive(scheduler(Flaky({4}, "after", KeyboardInterrupt), temperature),
                              requests())
    assert failures == 1 and outputs == want


def test_run_after_a_failed_run_gives_the_undisturbed_outputs(reference):
    temperature, want = reference
    sched = scheduler(Flaky({6}, "after"), temperature)
    for name, prompt, n in requests():
        sched.submit(Task(name, list(prompt), n))
    with pytest.raises(RuntimeError, match="forward 6"):
        sched.run()
    assert sched.run() == want
    sched.cache.check()


# ---- 6. settings --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    {"max_batch": True}, {"max_batch": 2.0}, {"max_batch": 0}, {"max_batch": "4"},
    {"temperature": math.nan}, {"temperature": math.inf}, {"temperature": -0.1},
    {"temperature": "0.5"}, {"temperature": True},
    {"prefix_caching": 1}, {"prefix_caching": "yes"}, {"seed": -1}, {"seed": 1.5},
])
def test_bad_settings_are_named(kw):
    cache = PagedCache(SMALL.n_layers, 4, 4, SMALL.n_kv_heads, SMALL.head_dim)
    with pytest.raises(BadSetting, match=next(iter(kw))):
        Scheduler(cache, MODEL, **kw)


# ---- 7. tasks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("task,words", [
    (Task("a", [1, True, 3], 2), "int token ids"),
    (Task("a", [1, 2.0], 2), "int token ids"),
    (Task("a", (1, 2), 2), "list"),
    (Task("a", [1, 2], 2.5), "max_new_tokens"),
    (Task("a", [1, 2], True), "max_new_tokens"),
    (Task("a\nfree=11111111", [1, 2], 2), "printable"),
    (Task("", [1, 2], 2), "printable"),
    (Task(7, [1, 2], 2), "printable"),
])
def test_bad_tasks_are_refused_and_change_nothing(task, words):
    sched = scheduler(MODEL)
    before = snapshot(sched)
    with pytest.raises(SchedulerError, match=words):
        sched.submit(task)
    assert snapshot(sched) == before


def test_a_finished_task_cannot_be_submitted_again():
    sched = scheduler(MODEL)
    task = sched.submit(Task("a", [1, 2, 3], 3))
    sched.run()
    assert task.status is Status.DONE and len(task.output) == 3
    again = scheduler(MODEL)
    with pytest.raises(SchedulerError, match="already run"):
        again.submit(task)
    with pytest.raises(SchedulerError):
        sched.submit(task)
    assert len(task.output) == 3 and again.idle
