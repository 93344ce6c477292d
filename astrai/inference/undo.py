"""A scheduler step that raises leaves the scheduler and its cache as they were before it.

`atomic` wraps `Scheduler.step`: it runs the step inside the cache's own `atomic()` block (the
cache snapshots what it declares as its state, and keeps the K/V of pages the step takes from
someone: see `PagedCache.snapshot`), notes the scheduler state a step can change, and puts it
back if anything escapes (the model raising in a forward, KeyboardInterrupt, ...), so calling
run() again gives the outputs an undisturbed run gives.

What is noted on the scheduler's side, and why it is enough: its queues and counters, and the
fields of the tasks a step can touch - the running ones and the head of the queue that refill
may admit (at most max_batch) - with each touched task's sampling generator state. Outputs only
grow during a step, so they are put back by length.
"""

from __future__ import annotations

import functools
from collections import deque


def atomic(step):
    @functools.wraps(step)
    def run_step(scheduler, *args, **kwargs):
        saved = _save(scheduler)
        try:
            with scheduler.cache.atomic():
                return step(scheduler, *args, **kwargs)
        except BaseException:
            _restore(scheduler, saved)
            raise

    return run_step


def _save(sched) -> tuple:
    touched = list(sched.running) + list(sched.waiting)[: sched.max_batch]
    gens = sched._generators
    tasks = [
        (t, t.status, list(t.page_table), len(t.output), t.length, t.cached_len, t.preemptions,
         gens[t.name].get_state() if t.name in gens else None)
        for t in touched
    ]
    return tasks, deque(sched.waiting), list(sched.running), sched.step_count


def _restore(sched, saved: tuple) -> None:
    tasks, waiting, running, step_count = saved
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
