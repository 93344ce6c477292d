"""Recorder: listens to a PagedCache and its Scheduler and writes every step down as events.

Each event is one of the typed events of astrai.trace.events (Alloc, Free, ...): the step and
phase it happened in, its own fields, the full state after it (mask, refs, cached pages, page
tables, lengths, filled slots) and the code that ran: `code`, the stack of engine frames
running, innermost first, each with the lines it had executed so far, and `returned`, the
engine calls that finished since the previous event. Scenes replay these events; they never
look at a live cache.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import sys
from collections.abc import Mapping
from pathlib import Path

from astrai.inference.cache import PagedCache
from astrai.inference.observer import NO_OBSERVER, Observer
from astrai.inference.phases import StepPhase
from astrai.inference.scheduler import Scheduler, Status, Task
from astrai.text import TextLog
from astrai.trace.events import (
    Admit,
    Alloc,
    Arrive,
    Cache,
    Copy,
    Event,
    Evict,
    Finish,
    Fork,
    Free,
    Gather,
    Grow,
    Phase,
    Preempt,
    Record,
    Retire,
    Share,
    Tokens,
    Wait,
    Write,
)
from astrai.trace.source import ENGINE_FILES

# The shipped path of each engine file -> its name in a trace (one registry: source.py's).
_WATCHED = {str(path.resolve()): name for name, path in ENGINE_FILES.items()}


class LineTracer:
    """While active, notes the lines each engine frame runs and the engine calls that finish.

    Only frames of the engine files (astrai.trace.source.ENGINE_FILES) are traced line by
    line; everything else runs untraced (the argument checks and observer hooks included), and
    so does the engine while `busy` (the recorder reading state). Re-entrant.
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


class Recorder(Observer):
    """Attach with `with Recorder(cache, scheduler) as rec:`; events are in rec.events.

    Pass a running `tracer` to have calls made before attaching (the constructors) show up in
    the first event's `returned`; with lines=False nothing is traced and `code` stays empty.
    With a `text` log, requests given as text carry their prompt text (arrive), each new piece
    of decoded output (tokens.text) and the output text so far (state.output_text).
    """

    def __init__(self, cache: PagedCache, scheduler: Scheduler, lines: bool = True,
                 tracer: LineTracer | None = None, text: TextLog | None = None):
        self.cache, self.scheduler = cache, scheduler
        self.text = text
        self.events: list[Event] = []
        self.step, self.phase = 0, str(StepPhase.INIT)
        self.tracer = tracer or (LineTracer() if lines else None)
        self._written = [0] * cache.n_pages  # per page: bitmask of slots holding K/V
        self._shared = _SharedState()

    # ---- attach ----------------------------------------------------------------------------

    def __enter__(self) -> Recorder:
        """Attach, and write the first event: the "init" phase, whose `returned` holds the
        engine calls made before attaching (the constructors, with a running tracer)."""
        self.cache.observer = self
        self.scheduler.observer = self
        if self.tracer is not None:
            self.tracer.__enter__()
        self.step, self.phase = self.scheduler.step_count, str(StepPhase.INIT)
        self._emit(Phase)
        return self

    def __exit__(self, *exc) -> None:
        if self.tracer is not None:
            self.tracer.__exit__(*exc)
        self.cache.observer = self.scheduler.observer = NO_OBSERVER

    # ---- state -----------------------------------------------------------------------------

    def state(self) -> dict:
        return self._shared.state(self.cache, self.scheduler, self._written, self.text)

    def _emit(self, cls: type[Event], **fields) -> None:
        """Append an event of class `cls` with `fields`, the state now and the code that ran."""
        tracer = self.tracer
        if tracer is None:
            state, code, returned = self.state(), [], []
        else:
            tracer.busy = True
            state = self.state()
            code = tracer.stack(sys._getframe(2))  # past _emit and the hook
            # Calls that ran to completion since the last event (e.g. _take inside alloc_n).
            returned = tracer.take_returned()
            tracer.busy = False
        self.events.append(cls(step=self.step, phase=self.phase, state=state, code=code,
                               returned=returned, **fields))

    # ---- scheduler hooks -------------------------------------------------------------------

    def on_submit(self, task: Task) -> None:
        self.step, self.phase = self.scheduler.step_count, str(StepPhase.ARRIVE)  # between steps
        prompt_text = self.text.prompt(task.name) if self.text is not None else None
        # samples: the names of a parallel-sampling request's tasks (only when n > 1)
        extra = {"samples": [t.name for t in task.samples]} if task.samples else {}
        if self.text is not None:
            extra["prompt_pieces"] = self.text.pieces(task.name, task.prompt)
        self._emit(Arrive, task=task.name, prompt_len=len(task.prompt),
                   max_new_tokens=task.max_new_tokens, prompt_text=prompt_text, **extra)

    def on_phase(self, step: int, phase: StepPhase) -> None:
        self.step, self.phase = step, str(phase)  # the plain name, as a trace file holds it
        self._emit(Phase)

    def on_admit(self, task: Task, hits: list[int], needed: int, available: int) -> None:
        n_tokens = len(task.tokens)
        # keys: the chained prefix key of each full page of what is admitted (none when the
        # prefix cache is off), so a scene can show why a page hit or missed.
        keys = self.cache.prefix_keys(task.tokens) if self.scheduler.prefix_caching else []
        self._emit(Admit, task=task.name, n_tokens=n_tokens, hits=list(hits),
                   pages_needed=self.cache.pages_for(n_tokens), needed=needed,
                   available=available, prompt_len=len(task.prompt), generated=len(task.output),
                   keys=keys)

    def on_grow(self, task: Task) -> None:
        n_tokens = task.length + 1  # the position this decode step writes, counted from 1
        self._emit(Grow, task=task.name, n_tokens=n_tokens,
                   pages_needed=self.cache.pages_for(n_tokens), held=len(task.page_table),
                   capacity=len(task.page_table) * self.cache.page_size)

    def on_fork(self, task: Task, parent: Task) -> None:
        # pages: what the sample is about to share (its parent's table); n_tokens: the length
        # it starts at (the prompt, whose K/V those pages hold)
        self._emit(Fork, task=task.name, parent=parent.name, sample=task.sample,
                   pages=list(parent.page_table), n_tokens=parent.length)

    def on_wait(self, task: Task, needed: int, available: int) -> None:
        self._emit(Wait, task=task.name, needed=needed, available=available)

    def on_tokens(self, phase: StepPhase, tasks: list[Task]) -> None:
        text, pieces = {}, None
        if self.text is not None:
            pieces = {}
            for t in tasks:
                done = t.status in (Status.FINISHED, Status.DONE)
                piece = self.text.push(t.name, t.output, done)
                if piece is not None:
                    text[t.name] = piece
                    pieces[t.name] = self.text.pieces(t.name, t.output[-1:])[0]
        self._emit(Tokens, tokens={t.name: t.output[-1] for t in tasks}, text=text,
                   pieces=pieces)

    def on_preempt(self, task: Task, needed_by: Task | None = None) -> None:
        # needed_by/position: whose next token found no page; running: who keeps decoding;
        # generated: tokens the victim keeps (its prompt and these are recomputed later).
        self._emit(Preempt, task=task.name,
                   needed_by=needed_by.name if needed_by is not None else None,
                   position=needed_by.length if needed_by is not None else None,
                   running=[t.name for t in self.scheduler.running],
                   generated=len(task.output), n_tokens=len(task.tokens))

    def on_finish(self, task: Task) -> None:
        self._emit(Finish, task=task.name, n_output=len(task.output))

    def on_retire(self, task: Task) -> None:
        self._emit(Retire, task=task.name, n_free=self.cache.n_free)

    # ---- cache hooks -----------------------------------------------------------------------

    def on_alloc(self, page: int, owner: Task | None) -> None:
        self._written[page] = 0  # a newly taken page holds nothing of its new owner yet
        self._emit(Alloc, page=page, task=_name(owner), logical=_column(owner, page))

    def on_copy(self, src: int, dst: int, n_slots: int, owner: Task | None) -> None:
        self._written[dst] = self._written[src] & ((1 << n_slots) - 1)
        # refs: holders of the source left once this task dropped its reference (the free
        # before the alloc of `page`); slots: the filled slots 0..slots-1 copied, every layer
        self._emit(Copy, task=_name(owner), sample=owner.sample if owner is not None else 0,
                   source=src, page=dst, slots=n_slots, logical=_column(owner, dst),
                   refs=self.cache.refcount(src))

    def on_free(self, page: int, refs: int, owner: Task | None) -> None:
        if refs == 0 and not self.cache.is_recorded(page):
            self._written[page] = 0
        self._emit(Free, page=page, task=_name(owner), refs=refs)

    def on_cache(self, page: int) -> None:
        self._emit(Cache, page=page)

    def on_evict(self, page: int) -> None:
        self._emit(Evict, page=page)

    def on_share(self, page: int, owner: Task | None, revived: bool) -> None:
        logical = owner.page_table.index(page) if owner and page in owner.page_table else None
        self._emit(Share, page=page, task=_name(owner), logical=logical, revived=revived)

    def on_record(self, pages: list[int], owner: Task | None) -> None:
        self._emit(Record, task=_name(owner), pages=list(pages),
                   keys=[self.cache.prefix_key(p) for p in pages])

    def on_write(self, layer_id, page_table, start_pos, n_tokens, lengths, owners,
                 slots, k, v) -> None:
        if layer_id != 0:  # every layer writes the same slots; one event per step
            return
        table = page_table.tolist()
        starts = start_pos.tolist() if hasattr(start_pos, "tolist") else [start_pos] * len(table)
        counts = lengths.tolist() if lengths is not None else [n_tokens] * len(table)
        ps = self.cache.page_size
        rows = []
        for name, row, start, count in zip(_rows(owners, len(table)), table, starts, counts):
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
        self._emit(Write, rows=rows, page_table=table)

    def on_gather(self, layer_id, index, total_len, owners, k, v) -> None:
        if layer_id != 0:
            return
        flat = index.tolist()
        cols = self.cache.pages_for(total_len)
        null = self.cache.n_pages
        rows = []
        for b, name in enumerate(_rows(owners, len(flat) // cols)):
            pages = [p for p in flat[b * cols : (b + 1) * cols] if p != null]
            rows.append({"task": name, "pages": pages})
        shape = [len(rows), total_len, self.cache.n_kv_heads, self.cache.head_dim]
        self._emit(Gather, rows=rows, total_len=total_len, shape=shape)


def _name(owner: Task | None) -> str | None:
    return owner.name if owner is not None else None


def _column(owner: Task | None, page: int) -> int | None:
    """Where the page sits in its owner's table (its last occurrence: the one just added)."""
    if owner is None or page not in owner.page_table:
        return None
    table = owner.page_table
    return len(table) - 1 - table[::-1].index(page)


def _rows(owners, n: int) -> list[str]:
    """The name of each row of a batch's table (row{b} where no owner was given)."""
    owners = owners or ()
    return [owners[b].name if b < len(owners) else f"row{b}" for b in range(n)]


# ---- state, shared between events ------------------------------------------------------------

_MISSING = object()


class PerTask(Mapping):
    """One value per task submitted so far, in submission order, as one event saw them.

    A read-only mapping (what scenes read as state["status"] and state["outputs"]) whose
    storage is shared between events, so memory grows with what changes, not with
    tasks x events:
    - `live`: the tasks running at the event, and queued ones whose value is not the default
      (a preempted task's outputs): built per event, shared with the previous event if equal;
    - `final`: name -> (event number, value) of each task once done; a done task never changes
      again, so one dict serves every event (an event sees the entries made up to it);
    - any other task submitted by the event is queued and has the default value.
    """

    __slots__ = ("_order", "_n", "_final", "_live", "_seq", "_default")

    def __init__(self, order: dict, n: int, final: dict, live: dict, seq: int, default):
        self._order, self._n, self._final, self._live = order, n, final, live
        self._seq, self._default = seq, default

    def __getitem__(self, name):
        value = self._live.get(name, _MISSING)
        if value is not _MISSING:
            return value
        i = self._order.get(name)
        if i is None or i >= self._n:
            raise KeyError(name)
        done = self._final.get(name)
        if done is not None and done[0] <= self._seq:
            return done[1]
        return self._default

    def __iter__(self):
        return itertools.islice(iter(self._order), self._n)

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return repr(dict(self))


_DEFAULT = {"status": "waiting", "outputs": 0}


class _SharedState:
    """Builds each event's state, reusing the previous event's value of every key that has not
    changed. A task in neither the queue nor the running list is done: it has left every page
    and its values are final."""

    def __init__(self):
        self.prev: dict = {}
        self.seq = 0  # events so far
        self.order: dict[str, int] = {}  # task name -> submission index
        self.final: dict[str, dict] = {"status": {}, "outputs": {}}
        self.live: dict = {}  # name -> task, running or queued at the previous event
        self.last_final = 0  # the event at which a task last became final

    def state(self, cache, sched, written: list[int], text=None) -> dict:
        self.seq += 1
        order, final = self.order, self.final
        if len(sched.tasks) > len(order):
            for name in itertools.islice(sched.tasks, len(order), None):
                order[name] = len(order)
        live = {t.name: t for t in itertools.chain(sched.running, sched.waiting)}
        for name, task in self.live.items():
            if name not in live and name not in final["status"]:
                final["status"][name] = (self.seq, task.status.value)
                final["outputs"][name] = (self.seq, len(task.output))
                self.last_final = self.seq
        self.live = live
        # Queued tasks with their default values are not listed: only the unusual ones.
        odd = [t for t in sched.waiting if t.output or t.name in final["status"]]
        shown = list(sched.running) + odd
        holders = sorted((t for t in sched.running if t.page_table), key=lambda t: order[t.name])
        new = {
            "free_mask": cache.free_mask,
            "refs": list(cache.refs),
            "cached": list(cache.cached_pages),
            "page_tables": {t.name: list(t.page_table) for t in holders},
            "lengths": {t.name: t.length for t in holders},
            "filled": [bin(bits).count("1") for bits in written],
            "status": {t.name: t.status.value for t in shown},
            "queue": [t.name for t in sched.waiting],
            "outputs": {t.name: len(t.output) for t in shown},
            "output_text": dict(text.text) if text is not None else {},
        }
        prev, n = self.prev, len(order)
        state = {}
        for key, value in new.items():
            old = prev.get(key)
            if key in _DEFAULT:
                same = old is not None and old._live == value
                if same and old._n == n and not self._finished_since(key, old):
                    value = old
                else:
                    value = PerTask(order, n, final[key], old._live if same else value,
                                    self.seq, _DEFAULT[key])
            elif old is not None and old == value:
                value = old  # unchanged: the same object as the previous event's
            state[key] = value
        self.prev = state
        return state

    def _finished_since(self, key: str, old: PerTask) -> bool:
        """Whether a task became final after `old` was made (old would not show it)."""
        return self.last_final > old._seq
