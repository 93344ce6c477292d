"""Recorder: listens to a PagedCache and its Scheduler and writes every step down as events.

Each event is a dict with its kind, the step and phase it happened in, its own fields, the full
state after it (mask, refs, cached pages, page tables, lengths, filled slots) and the code that
ran: `code`, the stack of engine frames running, innermost first, each with the lines it had
executed so far, and `returned`, the engine calls that finished since the previous event.
Scenes replay these events; they never look at a live cache.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path

from astrai.inference import cache as cache_module
from astrai.inference import scheduler as scheduler_module
from astrai.inference.cache import CacheListener, PagedCache
from astrai.inference.scheduler import Scheduler, SchedulerListener, Task

_ROOT = Path(cache_module.__file__).resolve().parents[2]
_WATCHED = {
    str(Path(m.__file__).resolve()): str(Path(m.__file__).resolve().relative_to(_ROOT))
    for m in (cache_module, scheduler_module)
}


class LineTracer:
    """While active, notes the lines each engine frame runs and the engine calls that finish.

    Only engine frames (cache.py, scheduler.py) are traced line by line; everything else runs
    untraced, and so does the engine while `busy` (the recorder reading state). Re-entrant.
    """

    def __init__(self):
        self.executed: dict[int, list[int]] = {}  # frame id -> lines run so far
        self.returned: list[dict] = []  # engine calls that finished since last taken
        self.busy = False
        self._depth = 0
        self._saved = None

    def __enter__(self) -> LineTracer:
        if self._depth == 0:
            self._saved = sys.gettrace()
            sys.settrace(self._on_call)
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            sys.settrace(self._saved)

    def _on_call(self, frame, event, arg):
        if frame.f_code.co_filename in _WATCHED and not self.busy:
            self.executed[id(frame)] = []
            return self._on_line
        return None

    def _on_line(self, frame, event, arg):
        if event == "line":
            self.executed[id(frame)].append(frame.f_lineno)
        elif event == "return":
            ran = self.executed.pop(id(frame), None)
            code = frame.f_code
            if ran and not code.co_flags & inspect.CO_GENERATOR and ">." not in code.co_qualname:
                self.returned.append(_frame_info(frame, ran))
        return self._on_line

    def stack(self, frame) -> list[dict]:
        """Engine frames running from `frame` outwards, each with the lines it has run."""
        stack = []
        while frame is not None:
            if frame.f_code.co_filename in _WATCHED:
                stack.append(_frame_info(frame, self.executed.get(id(frame), [frame.f_lineno])))
            frame = frame.f_back
        return stack

    def take_returned(self) -> list[dict]:
        returned, self.returned = self.returned, []
        return returned


def _frame_info(frame, ran: list[int]) -> dict:
    return {
        "file": _WATCHED[frame.f_code.co_filename],
        "fn": frame.f_code.co_qualname,
        "line": frame.f_lineno,
        "ran": sorted(set(ran)),
    }


def source_digests() -> dict[str, str]:
    """sha256 of each engine file whose lines a trace refers to."""
    return {
        rel: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path, rel in _WATCHED.items()
    }


class Recorder(CacheListener, SchedulerListener):
    """Attach with `with Recorder(cache, scheduler) as rec:`; events are in rec.events.

    Pass a running `tracer` to have calls made before attaching (the constructors) show up in
    the first event's `returned`; with lines=False nothing is traced and `code` stays empty.
    """

    def __init__(self, cache: PagedCache, scheduler: Scheduler, lines: bool = True,
                 tracer: LineTracer | None = None):
        self.cache, self.scheduler = cache, scheduler
        self.events: list[dict] = []
        self.step, self.phase = 0, "init"
        self.tracer = tracer or (LineTracer() if lines else None)
        self._written = [0] * cache.n_pages  # per page: bitmask of slots holding K/V
        # Whose pages the cache calls move, and the rows of the forward: told by the
        # scheduler's hooks that precede those calls.
        self._owner: Task | None = None
        self._batch: list[Task] = []

    # ---- attach ----------------------------------------------------------------------------

    def __enter__(self) -> Recorder:
        self.cache.listener = self
        self.scheduler.listener = self
        if self.tracer is not None:
            self.tracer.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.tracer is not None:
            self.tracer.__exit__(*exc)
        self.cache.listener = None
        self.scheduler.listener = None

    # ---- state -----------------------------------------------------------------------------

    def state(self) -> dict:
        cache, sched = self.cache, self.scheduler
        holders = [t for t in sched.tasks.values() if t.page_table]
        return {
            "free_mask": cache.free_mask,
            "refs": list(cache.refs),
            "cached": list(cache.cached_pages),
            "page_tables": {t.name: list(t.page_table) for t in holders},
            "lengths": {t.name: t.length for t in holders},
            "filled": [bin(bits).count("1") for bits in self._written],
            "status": {t.name: t.status.value for t in sched.tasks.values()},
            "queue": [t.name for t in sched.waiting],
            "outputs": {t.name: len(t.output) for t in sched.tasks.values()},
        }

    def _emit(self, kind: str, **fields) -> None:
        tracer = self.tracer
        event = {"kind": kind, "step": self.step, "phase": self.phase, **fields}
        if tracer is None:
            event["state"], event["code"], event["returned"] = self.state(), [], []
        else:
            tracer.busy = True
            event["state"] = self.state()
            event["code"] = tracer.stack(sys._getframe(2))  # past _emit and the hook
            # Calls that ran to completion since the last event (e.g. _take inside alloc_n).
            event["returned"] = tracer.take_returned()
            tracer.busy = False
        self.events.append(event)

    def _task(self) -> str | None:
        return self._owner.name if self._owner is not None else None

    # ---- scheduler hooks -------------------------------------------------------------------

    def on_submit(self, task: Task) -> None:
        self.step, self.phase = self.scheduler.step_count, "arrive"  # between steps
        self._emit("arrive", task=task.name, prompt_len=len(task.prompt),
                   max_new_tokens=task.max_new_tokens)

    def on_phase(self, step: int, phase: str) -> None:
        self.step, self.phase = step, phase
        self._owner = None
        self._emit("phase")

    def on_admit(self, task: Task, hits: list[int], needed: int, available: int) -> None:
        self._owner = task
        n_tokens = len(task.tokens)
        # keys: the chained prefix key of each full page of what is admitted (none when the
        # prefix cache is off), so a scene can show why a page hit or missed.
        keys = self.cache.prefix_keys(task.tokens) if self.scheduler.prefix_caching else []
        self._emit("admit", task=task.name, n_tokens=n_tokens, hits=list(hits),
                   pages_needed=self.cache.pages_for(n_tokens), needed=needed,
                   available=available, prompt_len=len(task.prompt), generated=len(task.output),
                   keys=keys)

    def on_grow(self, task: Task) -> None:
        self._owner = task
        n_tokens = task.length + 1  # the position this decode step writes, counted from 1
        self._emit("grow", task=task.name, n_tokens=n_tokens,
                   pages_needed=self.cache.pages_for(n_tokens), held=len(task.page_table),
                   capacity=len(task.page_table) * self.cache.page_size)

    def on_drop(self, task: Task) -> None:
        self._owner = task

    def on_prefix(self, task: Task) -> None:
        self._owner = task

    def on_forward(self, tasks: list[Task]) -> None:
        self._batch = list(tasks)

    def on_wait(self, task: Task, needed: int, available: int) -> None:
        self._emit("wait", task=task.name, needed=needed, available=available)

    def on_tokens(self, phase: str, tasks: list[Task]) -> None:
        self._emit("tokens", tokens={t.name: t.output[-1] for t in tasks})

    def on_preempt(self, task: Task, needed_by: Task | None = None) -> None:
        self._owner = None
        # needed_by/position: whose next token found no page; running: who keeps decoding;
        # generated: tokens the victim keeps (its prompt and these are recomputed later).
        self._emit("preempt", task=task.name,
                   needed_by=needed_by.name if needed_by is not None else None,
                   position=needed_by.length if needed_by is not None else None,
                   running=[t.name for t in self.scheduler.running],
                   generated=len(task.output), n_tokens=len(task.tokens))

    def on_finish(self, task: Task) -> None:
        self._emit("finish", task=task.name, n_output=len(task.output))

    def on_retire(self, task: Task) -> None:
        self._owner = None
        self._emit("retire", task=task.name, n_free=self.cache.n_free)

    # ---- cache hooks -----------------------------------------------------------------------

    def on_alloc(self, page: int) -> None:
        self._written[page] = 0  # a newly taken page holds nothing of its new owner yet
        active = self._owner
        logical = None
        if active is not None and page in active.page_table:
            logical = len(active.page_table) - 1 - active.page_table[::-1].index(page)
        self._emit("alloc", page=page, task=self._task(), logical=logical)

    def on_free(self, page: int, refs: int) -> None:
        if refs == 0 and not self.cache.is_recorded(page):
            self._written[page] = 0
        self._emit("free", page=page, task=self._task(), refs=refs)

    def on_cache(self, page: int) -> None:
        self._emit("cache", page=page)

    def on_evict(self, page: int) -> None:
        self._emit("evict", page=page)

    def on_share(self, page: int, revived: bool) -> None:
        active = self._owner
        logical = active.page_table.index(page) if active and page in active.page_table else None
        self._emit("share", page=page, task=self._task(), logical=logical, revived=revived)

    def on_record(self, pages: list[int]) -> None:
        self._emit("record", task=self._task(), pages=list(pages),
                   keys=[self.cache.prefix_key(p) for p in pages])

    def _rows(self, n: int) -> list[str]:
        batch = self._batch
        return [batch[b].name if b < len(batch) else f"row{b}" for b in range(n)]

    def on_write(self, layer_id, page_table, start_pos, n_tokens, lengths) -> None:
        if layer_id != 0:  # every layer writes the same slots; one event per step
            return
        table = page_table.tolist()
        starts = start_pos.tolist() if hasattr(start_pos, "tolist") else [start_pos] * len(table)
        counts = lengths.tolist() if lengths is not None else [n_tokens] * len(table)
        ps = self.cache.page_size
        rows = []
        for name, row, start, count in zip(self._rows(len(table)), table, starts, counts):
            runs: list[list[int]] = []  # [page, first slot, n] per page touched
            for pos in range(start, start + count):
                col = pos // ps
                page = row[col] if col < len(row) else -1
                if page < 0:
                    continue  # routed to the null page: nothing live changes
                self._written[page] |= 1 << (pos % ps)
                if runs and runs[-1][0] == page:
                    runs[-1][2] += 1
                else:
                    runs.append([page, pos % ps, 1])
            rows.append({"task": name, "start": start, "n": count, "runs": runs})
        self._emit("write", rows=rows, page_table=table)

    def on_gather(self, layer_id, index, total_len) -> None:
        if layer_id != 0:
            return
        flat = index.tolist()
        cols = self.cache.pages_for(total_len)
        null = self.cache.n_pages
        rows = []
        for b, name in enumerate(self._rows(len(flat) // cols)):
            pages = [p for p in flat[b * cols : (b + 1) * cols] if p != null]
            rows.append({"task": name, "pages": pages})
        shape = [len(rows), total_len, self.cache.n_kv_heads, self.cache.head_dim]
        self._emit("gather", rows=rows, total_len=total_len, shape=shape)
