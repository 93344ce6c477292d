"""Parallel sampling: n samples of one prompt share its pages and copy a shared page only when
they write into it; each sample equals an independent request of its name, token for token."""

from __future__ import annotations

import pytest
import torch

from astrai.errors import (
    PageNotAllocated,
    RequestTooLarge,
    SchedulerError,
    SharedPage,
    WorkloadError,
)
from astrai.inference.cache import PagedCache
from astrai.inference.observer import Observer
from astrai.inference.scheduler import Scheduler, Status, Task
from astrai.model import ModelConfig, TinyModel
from astrai.trace.events import Fork
from astrai.trace.recorder import Recorder
from astrai.workload import parse_workload

SMALL = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                    head_dim=8, d_ff=64, seed=3)
PROMPT = [(7 * i + 3) % 64 for i in range(10)]  # 10 tokens on pages of 4: 2 full, 1 half


def make(n_pages=16, page_size=4, **kw) -> Scheduler:
    model = TinyModel(SMALL)
    cache = PagedCache(SMALL.n_layers, n_pages, page_size, SMALL.n_kv_heads, SMALL.head_dim)
    return Scheduler(cache, model, **kw)


def held_by_tables(sched: Scheduler) -> list[int]:
    """Per page, how many task tables name it (with multiplicity)."""
    held = [0] * sched.cache.n_pages
    for task in sched.running:
        for page in task.page_table:
            held[page] += 1
    return held


class WriteGuard(Observer):
    """Fails the run if a K/V write (or a copy's destination) lands on a page with more than
    one holder: a shared page must never be written in place."""

    def __init__(self, cache: PagedCache):
        self.cache, self.writes, self.copies = cache, 0, []
        self.slots: list[tuple[int, int]] = []  # (page, slot) of each token written, layer 0

    def on_write(self, layer_id, page_table, start_pos, n_tokens, lengths, owners, *moved):
        ps = self.cache.page_size
        table = page_table.tolist()
        starts = start_pos.tolist()
        counts = lengths.tolist() if lengths is not None else [n_tokens] * len(table)
        for row, start, count in zip(table, starts, counts):
            for pos in range(start, start + count):
                page = row[pos // ps]
                assert self.cache.refcount(page) == 1, f"page {page} written with refs > 1"
                self.writes += layer_id == 0  # tokens written (each in every layer)
                if layer_id == 0:
                    self.slots.append((page, pos % ps))

    def on_copy(self, src, dst, n_slots, owner=None):
        assert self.cache.refcount(dst) == 1
        self.copies.append((src, dst, n_slots))


def drive(sched: Scheduler, tasks: list[Task], arrivals: dict[str, int] | None = None):
    """Submit each task at its step, run to the end checking after every step that the
    cache is whole and every reference is one a running task's table holds."""
    arrivals = arrivals or {}
    pending = list(tasks)
    while pending or not sched.idle:
        for task in [t for t in pending if arrivals.get(t.name, 0) <= sched.step_count]:
            pending.remove(task)
            sched.submit(task)
        sched.step()
        sched.cache.check()
        assert list(sched.cache.refs) == held_by_tables(sched)
    assert sched.cache.refs == (0,) * sched.cache.n_pages  # nothing leaked
    return {name: t.output for name, t in sched.tasks.items()}


# ---- sharing and copy-on-write ----------------------------------------------------------------


def test_prompt_is_prefilled_once_and_its_pages_are_shared_by_every_sample():
    sched = make(temperature=1.0, seed=1)
    guard = WriteGuard(sched.cache)
    sched.cache.observer = guard
    sched.submit(Task("A", PROMPT, 5, n=3))
    assert [t.name for t in sched.waiting] == ["A", "A.1", "A.2"]
    sched.step()  # admit, prefill once, fork
    assert guard.writes == len(PROMPT)  # one sequence's K/V, not three
    a, a1, a2 = (sched.tasks[n] for n in ("A", "A.1", "A.2"))
    assert a.page_table == a1.page_table == a2.page_table == [0, 1, 2]
    assert sched.cache.refs[:3] == (3, 3, 3)
    assert [a.length, a1.length, a2.length] == [10, 10, 10]
    assert all(len(t.output) == 1 for t in (a, a1, a2))  # each drew its own first token


def test_first_write_into_the_shared_half_page_copies_it_and_the_last_holder_keeps_it():
    sched = make(temperature=1.0, seed=1)
    guard = WriteGuard(sched.cache)
    sched.cache.observer = guard
    sched.submit(Task("A", PROMPT, 5, n=3))
    sched.step()
    k, v = sched.cache.k_cache, sched.cache.v_cache
    half_k, half_v = k[:, 2, :2].clone(), v[:, 2, :2].clone()  # slots 0-1: tokens 8 and 9
    guard.slots.clear()
    sched.step()  # first decode: position 10 lands in page 2, shared by all three
    a, a1, a2 = (sched.tasks[n] for n in ("A", "A.1", "A.2"))
    # A and A.1 copied (oldest first); A.2, the last holder, writes in place
    assert guard.copies == [(2, 3, 2), (2, 4, 2)]
    assert (a.page_table, a1.page_table, a2.page_table) == ([0, 1, 3], [0, 1, 4], [0, 1, 2])
    assert sched.cache.refs[:5] == (3, 3, 1, 1, 1)  # full pages stay shared
    for page in (2, 3, 4):  # the filled slots, every layer, K and V: real copies
        assert torch.equal(k[:, page, :2], half_k) and torch.equal(v[:, page, :2], half_v)
    # then each sample wrote its own token 10 at slot 2 of its own page, once. (Where it was
    # written, not what: two samples may draw the same token, and on some CPUs they do.)
    assert guard.slots == [(3, 2), (4, 2), (2, 2)]
    for _ in range(3):
        sched.step()
        assert sched.cache.refs[:2] == (3, 3)  # until the samples finish


def test_a_prompt_of_whole_pages_copies_nothing():
    sched = make(temperature=1.0, seed=1)
    guard = WriteGuard(sched.cache)
    sched.cache.observer = guard
    drive(sched, [Task("A", PROMPT[:8], 4, n=3)])
    assert guard.copies == []  # position 8 starts a new page for each sample


@pytest.mark.parametrize("prefix_caching", [True, False])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_each_sample_equals_an_independent_request_of_its_name(temperature, prefix_caching):
    kw = dict(temperature=temperature, seed=4, prefix_caching=prefix_caching)
    other = [4, 9, 1, 33, 12, 5, 60]
    group = make(**kw)
    guard = WriteGuard(group.cache)
    group.cache.observer = guard
    out = drive(group, [Task("B", other, 6), Task("A", PROMPT, 7, n=3)])
    twins = make(**kw)
    alone = drive(twins, [Task("B", other, 6)] + [Task(n, PROMPT, 7) for n in ("A", "A.1", "A.2")])
    assert out == alone
    assert len(guard.copies) == 2
    samples = [tuple(out[n]) for n in ("A", "A.1", "A.2")]
    if temperature == 0:
        assert len(set(samples)) == 1  # greedy: every sample is the same
    else:
        # Sampled: each sample draws from a generator of its own, seeded by its name, the same
        # as its twin's. Whether the draws then differ is the draw's business (on some CPUs two
        # samples draw the same token), so that is not asserted; the streams are.
        seeds = {n: group._generators[n].initial_seed() for n in ("A", "A.1", "A.2")}
        assert len(set(seeds.values())) == 3
        assert seeds == {n: twins._generators[n].initial_seed() for n in seeds}


def test_a_group_sharing_a_cached_prefix_with_another_request():
    sched = make(temperature=1.0, seed=2)
    guard = WriteGuard(sched.cache)
    sched.cache.observer = guard
    admits = []

    class Admits(Observer):
        def on_admit(self, task, hits, needed, available):
            admits.append((task.name, list(hits), needed))

    sched.observer = Admits()
    out = drive(sched, [Task("P", PROMPT[:8] + [1], 3), Task("A", PROMPT, 5, n=2)],
                {"A": 4})
    # sample 0 took P's two recorded pages and allocated only the half page; A.1 forked
    assert admits == [("P", [], 3), ("A", [0, 1], 1)]
    alone = drive(make(temperature=1.0, seed=2),
                  [Task("P", PROMPT[:8] + [1], 3), Task("A", PROMPT, 5), Task("A.1", PROMPT, 5)],
                  {"A": 4, "A.1": 4})
    assert out == alone


@pytest.mark.parametrize("prefix_caching", [True, False])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_group_preempted_at_its_copy_is_readmitted_whole_and_loses_nothing(
        temperature, prefix_caching):
    # 9 pages of 4. B (older) holds 4 pages and grows at its first decode into page 8, the
    # last free one; then A's copy of the shared half page finds the pool dry: the newest
    # task is A.2, so the whole group is preempted, and readmitted once B is done.
    kw = dict(temperature=temperature, seed=6, prefix_caching=prefix_caching)
    b_prompt = [(5 * i + 1) % 64 for i in range(16)]
    sched = make(n_pages=9, **kw)
    guard = WriteGuard(sched.cache)
    sched.cache.observer = guard
    out = drive(sched, [Task("B", b_prompt, 5), Task("A", PROMPT, 3, n=3)])
    group = [sched.tasks[n] for n in ("A", "A.1", "A.2")]
    assert [t.preemptions for t in group] == [1, 1, 1] and sched.tasks["B"].preemptions == 0
    assert len(guard.copies) == 1  # A's copy; A.1's found the pool dry
    assert all(t.status is Status.DONE and len(t.output) == 3 for t in group)
    big = drive(make(n_pages=40, **kw), [Task("B", b_prompt, 5)] +
                [Task(n, PROMPT, 3) for n in ("A", "A.1", "A.2")])
    assert out == big


def test_the_readmitted_group_shares_its_cached_prompt_pages():
    sched = make(n_pages=9, temperature=1.0, seed=6)
    b_prompt = [(5 * i + 1) % 64 for i in range(16)]

    shared = []

    class Hits(Observer):
        def on_share(self, page, owner, revived):
            shared.append((sched.step_count, page, revived))

    sched.cache.observer = Hits()
    drive(sched, [Task("B", b_prompt, 5), Task("A", PROMPT, 3, n=3)])
    step0 = [(p, r) for s, p, r in shared if s == 0]
    later = [(p, r) for s, p, r in shared if s > 1]
    assert step0 == [(4, False), (5, False), (6, False)] * 2  # the forks at the prefill
    # at readmission each sample takes the prompt's two recorded pages (revived once)
    assert sorted(later) == sorted([(4, True), (5, True)] + [(4, False), (5, False)] * 2)


def test_a_failed_step_during_a_copy_leaves_everything_as_it_was():
    sched = make(temperature=1.0, seed=3)
    model = sched.model
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 2:  # the first decode, after the copies were made
            raise RuntimeError("boom")
        return model(*args)

    sched.model = flaky
    sched.submit(Task("A", PROMPT, 4, n=3))
    sched.step()
    before = (sched.cache.refs, sched.cache.free_mask,
              [list(t.page_table) for t in sched.running], [list(t.output) for t in sched.running])
    with pytest.raises(RuntimeError, match="boom"):
        sched.step()
    assert (sched.cache.refs, sched.cache.free_mask,
            [list(t.page_table) for t in sched.running],
            [list(t.output) for t in sched.running]) == before
    out = sched.run()
    clean = make(temperature=1.0, seed=3)
    clean.submit(Task("A", PROMPT, 4, n=3))
    assert out == clean.run()


# ---- the cache's copy -------------------------------------------------------------------------


def test_copy_page_copies_the_filled_slots_of_every_layer_and_nothing_else():
    cache = PagedCache(n_layers=3, n_pages=4, page_size=4, n_kv_heads=2, head_dim=2)
    cache._k_store.copy_(torch.randn_like(cache._k_store))
    cache._v_store.copy_(torch.randn_like(cache._v_store))
    src, dst = cache.alloc(), cache.alloc()
    k0, v0 = cache.k_cache.clone(), cache.v_cache.clone()
    cache.copy_page(src, dst, 3)
    k, v = cache.k_cache, cache.v_cache
    assert torch.equal(k[:, dst, :3], k0[:, src, :3]) and torch.equal(v[:, dst, :3], v0[:, src, :3])
    assert torch.equal(k[:, dst, 3:], k0[:, dst, 3:])  # slots past n_slots untouched
    rest = [p for p in range(4) if p != dst]
    assert torch.equal(k[:, rest], k0[:, rest]) and torch.equal(v[:, rest], v0[:, rest])


@pytest.mark.parametrize("args, error", [
    ((0, 2, 1), PageNotAllocated),  # destination free
    ((2, 1, 1), PageNotAllocated),  # source free
    ((0, 0, 1), SharedPage),  # onto itself
    ((1, 0, 1), SharedPage),  # destination shared (refs 2)
    ((0, 1, 5), ValueError),  # more slots than a page
    ((0, 1, -1), ValueError),
])
def test_copy_page_refuses_bad_pages_and_changes_nothing(args, error):
    cache = PagedCache(n_layers=1, n_pages=3, page_size=4, n_kv_heads=1, head_dim=2)
    cache._k_store.copy_(torch.randn_like(cache._k_store))
    cache.alloc_n(2)
    cache.inc_ref(0)
    k0, refs = cache.k_cache.clone(), cache.refs
    with pytest.raises(error):
        cache.copy_page(*args)
    assert torch.equal(cache.k_cache, k0) and cache.refs == refs


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("task, error, message", [
    (Task("A", PROMPT, 3, n=0), SchedulerError, r"n \(samples\) must be an int >= 1"),
    (Task("A", PROMPT, 3, n=-2), SchedulerError, r"n \(samples\) must be an int >= 1"),
    (Task("A", PROMPT, 3, n=True), SchedulerError, r"n \(samples\) must be an int >= 1"),
    (Task("A", PROMPT, 3, n=2.0), SchedulerError, r"n \(samples\) must be an int >= 1"),
    (Task("A", PROMPT, 0, n=3), SchedulerError, "max_new_tokens must be >= 1"),
    (Task("A", PROMPT, 3, n=5), RequestTooLarge, r"n=5 samples need up to 15 pages"),
    (Task("A", PROMPT, 3, n=9), SchedulerError, "max_batch is 8"),
])
def test_bad_n_is_refused_before_anything_is_queued_or_allocated(task, error, message):
    sched = make(n_pages=14)  # each sample needs up to 3 pages: 4 samples fit, 5 do not
    sched.submit(Task("other", [1, 2], 2))
    refs, mask = sched.cache.refs, sched.cache.free_mask
    with pytest.raises(error, match=message):
        sched.submit(task)
    assert list(sched.tasks) == ["other"] and [t.name for t in sched.waiting] == ["other"]
    assert (sched.cache.refs, sched.cache.free_mask) == (refs, mask)
    assert task.samples == [] and task.status is Status.WAITING


def test_a_group_that_fits_exactly_runs_and_sample_names_are_reserved():
    sched = make(n_pages=12)
    sched.submit(Task("A", PROMPT, 3, n=4))  # 4 x 3 pages: exactly the pool
    with pytest.raises(SchedulerError, match="already submitted"):
        sched.submit(Task("A.3", [1], 1))
    pre = make()
    pre.submit(Task("A.2", [1], 1))
    with pytest.raises(SchedulerError, match="sample name 'A.2' is taken"):
        pre.submit(Task("A", PROMPT, 3, n=3))
    assert list(pre.tasks) == ["A.2"]
    assert len(sched.run()) == 4


def test_a_group_waits_whole_for_batch_slots():
    sched = make(max_batch=3)
    sched.submit(Task("B", [1, 2, 3], 4))
    sched.submit(Task("A", PROMPT, 2, n=3))
    sched.step()
    assert [t.name for t in sched.running] == ["B"]  # 1 + 3 > 3: the group waits
    while sched.tasks["B"].status is not Status.DONE:
        sched.step()
    assert [t.name for t in sched.running] == ["A", "A.1", "A.2"]


BASE = """
name = "w"
[cache]
n_pages = 9
page_size = 16
[[request]]
name = "A"
prompt_len = 40
max_new_tokens = 8
"""


@pytest.mark.parametrize("extra, message", [
    ("n = 0", r"request\[0\].n must be an int >= 1, got 0"),
    ("n = 4", r"request\[0\].n samples need up to 12 pages"),
    ('n = "3"', r"request\[0\].n must be an int >= 1"),
    ("n = 3\n[scheduler]\nmax_batch = 2", r"request\[0\].n must be at most scheduler.max_batch"),
    ('n = 3\n[[request]]\nname = "A.2"\nprompt_len = 4\nmax_new_tokens = 1',
     r"request\[0\].n names a sample 'A.2'"),
])
def test_workload_n_is_checked_with_the_field_named(extra, message):
    import tomllib

    with pytest.raises(WorkloadError, match=message):
        parse_workload(tomllib.loads(BASE + extra), "w.toml")


def test_workload_n_round_trips_and_defaults_to_one():
    import tomllib

    wl = parse_workload(tomllib.loads(BASE + "n = 3"), "w.toml")
    assert wl.requests[0].n == 3 and wl.requests[0].sample_names == ["A", "A.1", "A.2"]
    assert parse_workload(wl.to_json()) == wl
    plain = parse_workload(tomllib.loads(BASE), "w.toml")
    assert plain.requests[0].n == 1 and "n" not in plain.to_json()["request"][0]


def test_recorder_sees_a_consistent_group():
    sched = make(temperature=1.0, seed=1)
    with Recorder(sched.cache, sched, lines=False) as rec:
        sched.submit(Task("A", PROMPT, 3, n=3))
        sched.run()
    forks = [e for e in rec.events if isinstance(e, Fork)]
    assert [(e.task, e.parent, e.sample, e.pages, e.n_tokens) for e in forks] == [
        ("A.1", "A", 1, [0, 1, 2], 10), ("A.2", "A", 2, [0, 1, 2], 10)]
