"""Observer: the events the engine has, told to whoever watches (the trace recorder does).

One interface for the cache and the scheduler. Every hook runs once its change is complete, so
an observer always sees a whole state; the engine never depends on what an observer does and
tells it nothing it does not do anyway. Where pages change hands the owner is an argument of
the engine call itself (`alloc_n(n, owner=task)`), so the hook names it: no context to set.
`owner` is whatever the caller passed (the scheduler's Task), or None.

The engine holds `NO_OBSERVER` (every hook a no-op) until one is attached, so it calls its
hooks unconditionally; `Observers` lets several listen at once (a recorder and a capture).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from astrai.inference.phases import StepPhase


class Observer:
    # ---- pages (PagedCache) ----------------------------------------------------------------
    def on_alloc(self, page: int, owner: Any) -> None: ...  # taken, appended to owner's table
    def on_free(self, page: int, refs: int, owner: Any) -> None: ...  # refs left after the drop
    def on_cache(self, page: int) -> None: ...  # refs hit 0 on a recorded page: kept, evictable
    def on_evict(self, page: int) -> None: ...  # a cached page dropped from the prefix index
    def on_share(self, page: int, owner: Any, revived: bool) -> None: ...  # revived: was cached
    def on_record(self, pages: list[int], owner: Any) -> None: ...  # newly recorded as a prefix
    def on_copy(self, src: int, dst: int, n_slots: int, owner: Any) -> None: ...  # copy_page
    # K/V moved through a table; owners: the table's rows (a view's), or None. The tensors of
    # the move come last (slots: the flat slot index written; k, v: what was written or the
    # gathered views, valid until the next gather), for whoever looks at slot level.
    def on_write(self, layer_id: int, page_table, start_pos, n_tokens: int, lengths, owners,
                 slots, k, v) -> None: ...
    def on_gather(self, layer_id: int, index, total_len: int, owners, k, v) -> None: ...
    # a step's flat slot index computed (once per step, shared by its layers' writes)
    def on_slots(self, page_table, start_pos, n_tokens: int, lengths, slots) -> None: ...

    # ---- requests (Scheduler) --------------------------------------------------------------
    def on_submit(self, task) -> None: ...
    def on_phase(self, step: int, phase: StepPhase) -> None: ...
    # before its pages are shared and allocated: hits, pages to allocate, pages available
    def on_admit(self, task, hits: list[int], needed: int, available: int) -> None: ...
    def on_wait(self, task, needed: int, available: int) -> None: ...
    def on_grow(self, task) -> None: ...  # a decode step needs a new page for the task
    def on_fork(self, task, parent) -> None: ...  # a sample is about to share its parent's pages
    def on_preempt(self, task, needed_by) -> None: ...
    def on_tokens(self, phase: StepPhase, tasks: list) -> None: ...
    def on_finish(self, task) -> None: ...
    def on_retire(self, task) -> None: ...


NO_OBSERVER = Observer()


class Observers(Observer):
    """Several observers as one: each hears every hook, in the order given."""

    def __init__(self, *observers: Observer):
        self.observers = observers


def _tell_all(name: str):
    def hook(self, *args) -> None:
        for observer in self.observers:
            getattr(observer, name)(*args)

    hook.__name__ = hook.__qualname__ = name
    return hook


for _name in [n for n in vars(Observer) if n.startswith("on_")]:
    setattr(Observers, _name, _tell_all(_name))
