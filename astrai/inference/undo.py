"""A scheduler step that raises leaves the scheduler and its cache as they were before it.

`atomic` wraps `Scheduler.step`: it notes the state a step can change, runs the step, and puts
the state back if anything escapes (the model raising in a forward, KeyboardInterrupt, ...),
so calling run() again gives the outputs an undisturbed run gives.

What is noted, and why it is enough:
- the cache's allocator and prefix cache (mask words, refs, entries, LRU): small copies,
  O(pages), not K/V. K/V written by the failed step went to slots past every task's restored
  length (or to pages that are free again): nothing reads them before they are written anew.
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
        try:
            return step(scheduler, *args, **kwargs)
        except BaseException:
            _restore(scheduler, saved)
            raise

    return run_step


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


def _restore(sched, saved: tuple) -> None:
    cache_state, tasks, waiting, running, step_count = saved
    cache = sched.cache
    (cache._words, cache._summary, cache._n_free, cache._refs, cache._page_of_key,
     cache._entries, cache._lru, cache._next_uid, cache._uids, cache._evicted) = cache_state
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
