"""A scheduler step that raises leaves the scheduler and its cache as they were before it.

`atomic` wraps `Scheduler.step`: it notes the state a step can change, runs the step, and puts
the state back if anything escapes (the model raising in a forward, KeyboardInterrupt, ...),
so calling run() again gives the outputs an undisturbed run gives.

What is noted, and why it is enough:
- the cache's allocator and prefix cache (mask words, refs, entries, LRU): small copies,
  O(pages), not K/V. K/V written by the failed step went to slots past every task's restored
  length, to pages that are free again, or to pages the step took from someone (a cached
  prefix page evicted, a preempted task's page): the cache copies the K/V of each page of that
  last kind as it is taken (`_keep_taken` wraps the cache instance's `_take` for the step), and
  they are copied back here, so a restored prefix entry or page table never points at another
  request's K/V.
- the scheduler's queues and counters, and the fields of the tasks a step can touch: the
  running ones and the head of the queue that refill may admit (at most max_batch). Outputs
  only grow during a step, so they are put back by length.
- each touched task's sampling generator state.
This lives outside the engine files so the line tracer never records it.
"""

from __future__ import annotations

import functools
from collections import OrderedDict, deque


def atomic(step):
    @functools.wraps(step)
    def run_step(scheduler, *args, **kwargs):
        saved = _save(scheduler)
        kept = _keep_taken(scheduler.cache, saved[0][0])
        try:
            return step(scheduler, *args, **kwargs)
        except BaseException:
            _restore(scheduler, saved, kept)
            raise
        finally:
            scheduler.cache.__dict__.pop("_take", None)  # the class's _take shows through

    return run_step


def _keep_taken(cache, words: list[int]) -> dict:
    """For one step: copy the K/V of each page `_take` hands out that was not free when the
    step began (words: the free bitmask then). Pages free then hold nothing anyone reads."""
    kept: dict[int, tuple] = {}
    take = cache._take

    def take_and_keep() -> int:
        idx = take()
        if idx >= 0 and idx not in kept and not words[idx // 64] >> (idx % 64) & 1:
            kept[idx] = (cache._k_store[:, idx].clone(), cache._v_store[:, idx].clone())
        return idx

    cache._take = take_and_keep
    return kept


def _save(sched) -> tuple:
    cache = sched.cache
    cache_state = (
        list(cache._words), cache._summary, cache._n_free, list(cache._refs),
        dict(cache._page_of_key), dict(cache._entries), OrderedDict(cache._lru),
        cache._next_uid, set(cache._uids), cache._evicted,
    )
    touched = list(sched.running) + list(sched.waiting)[: sched.max_batch]
    gens = sched._generators
    tasks = [
        (t, t.status, list(t.page_table), len(t.output), t.length, t.cached_len, t.preemptions,
         gens[t.name].get_state() if t.name in gens else None)
        for t in touched
    ]
    return cache_state, tasks, deque(sched.waiting), list(sched.running), sched.step_count


def _restore(sched, saved: tuple, kept: dict) -> None:
    cache_state, tasks, waiting, running, step_count = saved
    cache = sched.cache
    (cache._words, cache._summary, cache._n_free, cache._refs, cache._page_of_key,
     cache._entries, cache._lru, cache._next_uid, cache._uids, cache._evicted) = cache_state
    for page, (k, v) in kept.items():  # K/V of pages the step took from others
        cache._k_store[:, page].copy_(k)
        cache._v_store[:, page].copy_(v)
    cache._releases += 1  # tables checked during the failed step are checked again
    cache._checked = None
    gens = sched._generators
    for task, status, table, n_out, length, cached_len, preemptions, gen in tasks:
        task.status, task.page_table = status, table
        del task.output[n_out:]
        task.length, task.cached_len, task.preemptions = length, cached_len, preemptions
        if gen is None:
            gens.pop(task.name, None)
        else:
            gens[task.name].set_state(gen)
    sched.waiting, sched.running, sched.step_count = waiting, running, step_count
    for name in ("active", "batch"):  # recorder-only fields, where the scheduler has them
        if hasattr(sched, name):
            setattr(sched, name, None if name == "active" else [])
