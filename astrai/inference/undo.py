"""A scheduler step that raises leaves the scheduler and its cache as they were before it.

`atomic` wraps `Scheduler.step`: it runs the step inside the cache's own `atomic()` block (the
cache snapshots the state its parts declare, and keeps the K/V of pages the step takes from
someone: see `PagedCache.snapshot`), snapshots the scheduler's declared STATE (its queues and
step count) and every non-FIXED field of the tasks a step can touch, and puts them back if
anything escapes (the model raising in a forward, KeyboardInterrupt, ...), so calling run()
again gives the outputs an undisturbed run gives.

The tasks a step can touch are the running ones and the head of the queue that refill may admit
(at most max_batch); each keeps its sampling generator's state too. Fields are derived from the
Task dataclass minus Task.FIXED, so a field added to Task is saved without anyone listing it.
"""

from __future__ import annotations

import dataclasses
import functools

from astrai.inference.state import put_back, save


def atomic(step):
    @functools.wraps(step)
    def run_step(scheduler, *args, **kwargs):
        saved = scheduler.snapshot(), _save_tasks(scheduler)
        try:
            with scheduler.cache.atomic():
                return step(scheduler, *args, **kwargs)
        except BaseException:
            scheduler.restore(saved[0])
            _restore_tasks(scheduler, saved[1])
            raise

    return run_step


def task_state(task) -> tuple[str, ...]:
    """The fields of a task a step may change: every dataclass field not in its FIXED."""
    return tuple(f.name for f in dataclasses.fields(task) if f.name not in task.FIXED)


def _save_tasks(sched) -> list:
    touched = list(sched.running) + list(sched.waiting)[: sched.max_batch]
    gens = sched._generators
    return [(t, task_state(t), save(t, task_state(t)),
             gens[t.name].get_state() if t.name in gens else None) for t in touched]


def _restore_tasks(sched, saved: list) -> None:
    gens = sched._generators
    for task, names, values, gen in saved:
        put_back(task, names, values)  # lists in place: whoever holds one sees it restored
        if gen is None:
            gens.pop(task.name, None)
        else:
            gens[task.name].set_state(gen)
