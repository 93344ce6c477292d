"""Continuous batching over a PagedCache: each step is cleanup -> refill -> prefill -> decode.

Host-side bookkeeping (page tables, lengths) lives in plain Python lists; tensors are built once
per forward. A task's `length` counts the tokens whose K/V are in the cache; its newest output
token is always one ahead (its K/V is written by the next decode step).

Parallel sampling (`Task(..., n=3)`, vLLM's `SamplingParams.n`): a request asking for n samples
becomes a group of n tasks at submit. Sample 0 keeps the request's name, the others are named
`name.1` .. `name.{n-1}`; each draws from its own generator, seeded by its name as any task's
is, so a sample's tokens equal those of an independent request of that name and prompt. The
prompt is prefilled once, by sample 0; the others then fork: they share every page of it
(refcount n), and each draws its first token from the same logits. Before a sample writes into
a page it shares (the prompt's partly filled last page), it copies it: the shared page loses
the sample's reference, a fresh page takes its place in the table, and the page's filled slots
of every layer's K and V are copied into it; a sample whose page is no longer shared (the last
holder) writes in place and copies nothing. Full shared pages are never written again and stay
shared until the samples finish. This is what vLLM's block manager does (fork shares every
block; copy-on-write on append to a shared last block); preemption differs (see `_preempt`).
"""

from __future__ import annotations

import enum
import math
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from astrai.errors import BadSetting, RequestTooLarge, SchedulerError
from astrai.inference.cache import PagedCache
from astrai.inference.observer import NO_OBSERVER, Observer
from astrai.inference.phases import STEP_PHASES, StepPhase
from astrai.inference.state import Stateful
from astrai.inference.undo import atomic
from astrai.model import next_tokens


class Status(enum.StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"  # generated everything; its pages are freed by the next cleanup
    DONE = "done"  # pages freed


@dataclass(eq=False)
class Task:
    # Fields a step never changes; every other field is what an undone step puts back
    # (astrai.inference.undo saves them all, so a new field is covered by default).
    FIXED: ClassVar[tuple[str, ...]] = ("name", "prompt", "max_new_tokens", "n", "samples")

    name: str
    prompt: list[int]
    max_new_tokens: int
    status: Status = Status.WAITING
    page_table: list[int] = field(default_factory=list)
    output: list[int] = field(default_factory=list)
    length: int = 0  # tokens with K/V in the cache
    cached_len: int = 0  # of those, served by prefix-cache hits at admission
    preemptions: int = 0
    n: int = 1  # samples asked for (parallel sampling); submit() makes the group
    # Every task of a group, sample 0 first (the same list on each of them); [] when n == 1.
    samples: list[Task] = field(default_factory=list, repr=False)

    @property
    def sample(self) -> int:
        """This task's index in its group (0 outside a group)."""
        return self.samples.index(self) if self.samples else 0

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output


# The names of a step's phases, in order, as plain strings (labels; what a trace holds).
PHASES = tuple(str(phase) for phase in STEP_PHASES)


class Scheduler(Stateful):
    PHASES = PHASES
    # What a step changes (undo puts it back: the queues, the step count; each touched task's
    # fields and sampling generator), and what it never does. Tests hold every field to these.
    STATE = ("waiting", "running", "step_count")
    FIXED = ("cache", "model", "max_batch", "prefix_caching", "temperature", "seed", "tasks",
             "observer", "_generators")

    def __init__(
        self,
        cache: PagedCache,
        model,
        max_batch: int = 8,
        prefix_caching: bool = True,
        temperature: float = 0.0,
        seed: int = 0,
    ):
        check_settings(max_batch, prefix_caching, temperature, seed)
        self.cache = cache
        self.model = model
        self.max_batch = max_batch
        self.prefix_caching = prefix_caching
        self.temperature = temperature
        self.seed = seed
        self.waiting: deque[Task] = deque()
        self.running: list[Task] = []  # admission order: the newest is preempted first
        self.tasks: dict[str, Task] = {}
        self.step_count = 0
        self.observer: Observer = NO_OBSERVER  # shared with the cache by whoever attaches
        self._generators: dict[str, torch.Generator] = {}

    # ---- submission ------------------------------------------------------------------------

    def submit(self, task: Task) -> Task:
        """Queue a task; reject at once one that could never fit in the pool."""
        check_task(task)
        if task.name in self.tasks:
            raise SchedulerError(f"a task named {task.name!r} was already submitted")
        if not task.prompt:
            raise SchedulerError(f"task {task.name!r} has an empty prompt")
        if task.max_new_tokens < 1:
            raise SchedulerError(f"task {task.name!r}: max_new_tokens must be >= 1")
        vocab = getattr(getattr(self.model, "config", None), "vocab_size", None)
        if vocab is not None and not all(0 <= t < vocab for t in task.prompt):
            raise SchedulerError(f"task {task.name!r} has token ids outside 0..{vocab - 1}")
        # The last output token never needs K/V, so the most a task ever holds is this:
        most = len(task.prompt) + task.max_new_tokens - 1
        if self.cache.pages_for(most) > self.cache.n_pages:
            raise RequestTooLarge(
                f"task {task.name!r} needs up to {self.cache.pages_for(most)} pages "
                f"({len(task.prompt)} prompt + {task.max_new_tokens} new tokens, page_size "
                f"{self.cache.page_size}); the pool has {self.cache.n_pages}"
            )
        group = self._group_of(task, most)
        task.status = Status.WAITING
        for task in group:  # the request itself, then its other samples
            task.samples = group if len(group) > 1 else []
            self.tasks[task.name] = task
            self.waiting.append(task)
        task = group[0]
        self.observer.on_submit(task)
        return task

    def _group_of(self, task: Task, most: int) -> list[Task]:
        """The n tasks of a request (just [task] for n == 1), checked before any is queued.

        A group must fit the pool with nothing shared: a preempted group is readmitted as n
        sequences that each recompute their own tokens on their own pages (see _preempt)."""
        n = task.n
        if n == 1:
            return [task]
        if n > self.max_batch:
            raise SchedulerError(f"task {task.name!r} asks for n={n} samples; they run together "
                                 f"and max_batch is {self.max_batch}")
        pages = n * self.cache.pages_for(most)
        if pages > self.cache.n_pages:
            raise RequestTooLarge(
                f"task {task.name!r}: n={n} samples need up to {pages} pages ({n} x "
                f"{self.cache.pages_for(most)}, none shared once preempted); the pool has "
                f"{self.cache.n_pages}"
            )
        names = [f"{task.name}.{i}" for i in range(1, n)]
        taken = [name for name in names if name in self.tasks]
        if taken:
            raise SchedulerError(f"task {task.name!r}: its sample name {taken[0]!r} is taken")
        return [task] + [Task(name, list(task.prompt), task.max_new_tokens) for name in names]

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    def run(self, max_steps: int = 1_000_000) -> dict[str, list[int]]:
        """Step until every submitted task is done; returns each task's output tokens."""
        while not self.idle:
            if self.step_count >= max_steps:
                raise SchedulerError(f"not done after {max_steps} steps")
            self.step()
        return {name: task.output for name, task in self.tasks.items()}

    # ---- one step --------------------------------------------------------------------------

    @atomic  # a step that raises changes nothing (astrai.inference.undo)
    def step(self) -> None:
        self._phase(StepPhase.CLEANUP)
        self._cleanup()
        self._phase(StepPhase.REFILL)
        admitted = self._refill()
        self._phase(StepPhase.PREFILL)
        if admitted:
            self._prefill(admitted)
        self._phase(StepPhase.DECODE)
        decoding = [t for t in self.running if t.status is Status.RUNNING and t not in admitted]
        if decoding:
            self._decode(decoding)
        self.step_count += 1

    def _phase(self, phase: StepPhase) -> None:
        self.observer.on_phase(self.step_count, phase)

    def _cleanup(self) -> None:
        for task in [t for t in self.running if t.status is Status.FINISHED]:
            self._release(task)
            task.status = Status.DONE
            self.running.remove(task)
            self.observer.on_retire(task)

    def _release(self, task: Task) -> None:
        """Drop the task's references, last page first: a prefix's tail is then older in the
        LRU than its head and is evicted first, so a cached head stays usable longest."""
        while task.page_table:
            self.cache.free(task.page_table.pop(), owner=task)
        task.length = task.cached_len = 0

    def _refill(self) -> list[Task]:
        admitted = []
        while self.waiting and len(self.running) < self.max_batch:
            task = self.waiting[0]
            if task.samples:  # a group is admitted whole, or waits whole
                if len(self.running) + len(task.samples) > self.max_batch:
                    break
                if not self._refill_group(task.samples):
                    break
                admitted += task.samples
                continue
            fit = self._fit(task)
            if fit is None:
                break  # the head waits; nobody skips ahead of it
            self.waiting.popleft()
            self.running.append(task)
            self._admit(task, *fit)
            admitted.append(task)
        return admitted

    def _refill_group(self, group: list[Task]) -> bool:
        """Admit a group at the head of the queue, if its pages can be had now.

        A fresh group needs only its prompt's pages: sample 0 takes them and prefills, and the
        others fork after that forward (in _forward), holding no page until then. A group
        readmitted after a preemption has diverged: every sample is admitted as a sequence of
        its own tokens (prefix-cache hits shared), all or none."""
        lead = group[0]
        fresh = not lead.output
        fit = self._fit(lead) if fresh else self._fit_group(group)
        if fit is None:
            return False
        for _ in group:
            self.waiting.popleft()
        self.running += group
        if fresh:
            self._admit(lead, *fit)
            for task in group[1:]:
                task.status = Status.RUNNING  # holds nothing until it forks
        else:
            self._admit_group(group, *fit)
        return True

    def _fit_group(self, group: list[Task]):
        """(hits of each task, pages to allocate for each, pages available) if every task of a
        readmitted group fits now, else None (one wait event, for the group's first task)."""
        cache = self.cache
        hits = [cache.lookup_prefix(t.tokens[:-1]) if self.prefix_caching else [] for t in group]
        needed = [cache.pages_for(len(t.tokens)) - len(h) for t, h in zip(group, hits)]
        revived = len({p for h in hits for p in h if cache.refcount(p) == 0})
        available = cache.n_available - revived
        if sum(needed) > available:
            self.observer.on_wait(group[0], sum(needed), available)
            return None
        return hits, needed, available

    def _admit_group(self, group: list[Task], hits: list[list[int]], needed: list[int],
                     available: int) -> None:
        """Every hit of every task is shared before any page is allocated, so no alloc can
        evict a cached page a later task of the group was promised."""
        cache = self.cache
        for task, task_hits, task_needed in zip(group, hits, needed):
            self.observer.on_admit(task, task_hits, task_needed, available)
            for page in task_hits:
                cache.inc_ref(page, owner=task)
            task.cached_len = task.length = len(task_hits) * cache.page_size
            task.status = Status.RUNNING
        for task, task_needed in zip(group, needed):
            cache.alloc_n(task_needed, owner=task)

    def _fit(self, task: Task) -> tuple[list[int], int, int] | None:
        """(cached prefix pages, pages to allocate, pages available) if the rest can be
        allocated now, else None."""
        cache = self.cache
        tokens = task.tokens
        # The last token is always computed (its logits give the next token), so it never
        # counts as a hit, even when the whole prompt is cached.
        hits = cache.lookup_prefix(tokens[:-1]) if self.prefix_caching else []
        needed = cache.pages_for(len(tokens)) - len(hits)
        revived = sum(1 for page in hits if cache.refcount(page) == 0)  # no longer evictable
        available = cache.n_available - revived
        if needed > available:
            self.observer.on_wait(task, needed, available)
            return None
        return hits, needed, available

    def _admit(self, task: Task, hits: list[int], needed: int, available: int) -> None:
        """Share the cached prefix pages and allocate the rest (_fit said they are there)."""
        cache = self.cache
        self.observer.on_admit(task, hits, needed, available)
        for page in hits:
            cache.inc_ref(page, owner=task)
        cache.alloc_n(needed, owner=task)
        task.cached_len = task.length = len(hits) * cache.page_size
        task.status = Status.RUNNING

    def _prefill(self, tasks: list[Task]) -> None:
        """One forward for all admitted tasks: each computes its tokens past its cached prefix."""
        rows = [t for t in tasks if t.page_table]  # samples waiting to fork compute nothing
        starts = [t.length for t in rows]
        chunks = [t.tokens[t.length :] for t in rows]
        sampled = self._forward(rows, starts, chunks)
        if self.prefix_caching:
            for task in rows:
                self.cache.record_prefix(task.page_table, task.tokens[: task.length], owner=task)
        self._emit_tokens(StepPhase.PREFILL, sampled)

    def _decode(self, tasks: list[Task]) -> None:
        """Every task advances one token at its own position; a page is added on demand."""
        batch = []
        for task in tasks:  # oldest first, so the oldest get pages first
            if task.status is Status.RUNNING and self._grow(task):
                batch.append(task)
        batch = [t for t in batch if t.status is Status.RUNNING]  # drop later-preempted ones
        if batch:
            self._forward(batch, [t.length for t in batch], [[t.output[-1]] for t in batch])
            self._emit_tokens(StepPhase.DECODE, batch)

    def _grow(self, task: Task) -> bool:
        """Make room for the K/V of position task.length: a new page past the table's end, or
        a copy of the page it lands in if other tasks share that page (copy-on-write). Preempt
        the newest task if the pool is dry. False if the task itself had to be preempted."""
        while True:
            col = task.length // self.cache.page_size
            shared = col < len(task.page_table) and \
                self.cache.refcount(task.page_table[col]) > 1
            if not shared and col < len(task.page_table):
                return True
            if shared:
                got = self._copy_on_write(task, col)
            else:
                self.observer.on_grow(task)
                got = self.cache.alloc_n(1, owner=task)
            if got:
                continue
            finished = [t for t in self.running if t.status is Status.FINISHED]
            if finished:  # done tasks need no pages: retire them before preempting anyone
                self._cleanup()
                continue
            victim = self.running[-1]  # the newest: it has the least work to redo
            self._preempt(victim, needed_by=task)
            if task.status is Status.WAITING:  # it was the victim, or in the victim's group
                return False

    def _copy_on_write(self, task: Task, col: int) -> bool:
        """Give the task its own copy of the shared page at page_table[col] (its last page):
        one reference to the shared page dropped, a fresh page in its place, and the filled
        slots (positions before task.length) copied into it in every layer. False, with
        nothing changed, if the pool is dry.

        The reference is dropped first so that every reference is always in a table (each
        recorded state is whole); the page keeps its K/V for the copy, since others hold it."""
        cache = self.cache
        if cache.n_available < 1:
            return False
        src = task.page_table.pop()
        cache.free(src, owner=task)
        dst = cache.alloc_n(1, owner=task)[0]
        cache.copy_page(src, dst, task.length - col * cache.page_size, owner=task)
        return True

    def _preempt(self, task: Task, needed_by: Task | None = None) -> None:
        """Free the task's pages and requeue it at the head; its tokens so far are kept and
        recomputed on readmission, so its output is the same as if it had never been paused.
        needed_by: the task whose next token found the pool dry.

        A sample is preempted with its whole group, newest sample first, and the group is
        requeued in order at the head. One sample alone would free little: the pages it
        shares stay held by its siblings. On readmission each sample recomputes its own
        tokens as a sequence of its own (sharing only prefix-cache hits), all samples
        admitted together; that is why submit() asks a group to fit the pool unshared.
        vLLM differs here: it swaps a multi-sample group out to host memory (recompute
        there is for single sequences only); this cache has no swap space."""
        group = task.samples or [task]
        for task in reversed(group):
            if task not in self.running:
                continue  # a sample that already finished and retired
            self._release(task)
            self.running.remove(task)
            task.status = Status.WAITING
            task.preemptions += 1
            self.waiting.appendleft(task)
            self.observer.on_preempt(task, needed_by)

    # ---- model -----------------------------------------------------------------------------

    def _forward(self, tasks: list[Task], starts: list[int], chunks: Sequence[list[int]]):
        """Run the model on each task's chunk at its own start; append each next token."""
        device = self.cache.device
        n = [len(c) for c in chunks]
        width = max(n)
        tokens = torch.zeros(len(tasks), width, dtype=torch.int64)
        for row, chunk in enumerate(chunks):
            tokens[row, : len(chunk)] = torch.tensor(chunk, dtype=torch.int64)
        ends = [s + k for s, k in zip(starts, n)]
        max_pages = max(len(t.page_table) for t in tasks)
        table = torch.full((len(tasks), max_pages), -1, dtype=torch.int64)
        for row, task in enumerate(tasks):
            table[row, : len(task.page_table)] = torch.tensor(task.page_table, dtype=torch.int64)
        # Positions and lengths stay host tensors: the cache checks their values on the host
        # (no device sync) and the model copies them over.
        start = torch.tensor(starts, dtype=torch.int64)
        lengths = torch.tensor(n, dtype=torch.int64)
        view = self.cache.bind(
            table, max(ends), torch.tensor(ends, dtype=torch.int64, device=device), owners=tasks
        )
        for task, end in zip(tasks, ends):
            task.length = end  # the forward writes these tokens' K/V
        logits = self.model(tokens.to(device), start, view, lengths)
        last = logits[torch.arange(len(tasks), device=device), (lengths - 1).to(device)]
        tasks, rows = self._fork(tasks)
        if len(rows) != last.shape[0]:
            last = last[torch.tensor(rows, device=device)]  # a forked sample: its parent's row
        nxt = sample_tokens(tasks, last, self.temperature, self.seed, self._generators).tolist()
        for task, token in zip(tasks, nxt):
            task.output.append(token)
            if len(task.output) >= task.max_new_tokens:
                task.status = Status.FINISHED
                self.observer.on_finish(task)
        return tasks

    def _fork(self, tasks: list[Task]) -> tuple[list[Task], list[int]]:
        """After a fresh group's prompt forward: its other samples share every page sample 0
        holds (refs += 1 each) at its length. Returns the tasks to sample, each sample right
        after its parent, and the row of the forward each draws from."""
        out, rows = [], []
        for row, task in enumerate(tasks):
            out.append(task)
            rows.append(row)
            for sample in task.samples[1:] if task.sample == 0 else ():
                if sample.page_table or sample.status is not Status.RUNNING:
                    continue  # readmitted samples computed their own row
                self.observer.on_fork(sample, task)
                for page in task.page_table:
                    self.cache.inc_ref(page, owner=sample)
                sample.length, sample.cached_len = task.length, task.cached_len
                out.append(sample)
                rows.append(row)
        return out, rows

    def _emit_tokens(self, phase: StepPhase, tasks: list[Task]) -> None:
        self.observer.on_tokens(phase, tasks)


def sample_tokens(tasks: list[Task], last: torch.Tensor, temperature: float, seed: int,
                  generators: dict[str, torch.Generator]) -> torch.Tensor:
    """Each task's next token from its row of `last`: greedy at temperature <= 0, else drawn
    with the task's own generator (made on first use, kept in `generators`), so a task's
    samples do not depend on who shares its batch."""
    if temperature <= 0:
        return next_tokens(last)
    out = []
    for task, row in zip(tasks, last.cpu()):
        gen = generators.get(task.name)
        if gen is None:
            # CPU generators keep only 32 bits of a seed: mix seed and name into those.
            gen = generators[task.name] = torch.Generator().manual_seed(
                zlib.crc32(f"{seed}:{task.name}".encode()))
        out.append(next_tokens(row[None], temperature, gen))
    return torch.cat(out)


# ---- checks on what callers hand in ---------------------------------------------------------


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_settings(max_batch, prefix_caching, temperature, seed) -> None:
    """BadSetting naming the first setting of the wrong type or range."""
    if not _is_int(max_batch) or max_batch <= 0:
        raise BadSetting(f"max_batch must be a positive int, got {max_batch!r}")
    if not isinstance(prefix_caching, bool):
        raise BadSetting(f"prefix_caching must be True or False, got {prefix_caching!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature < 0:
        raise BadSetting(f"temperature must be a finite number >= 0, got {temperature!r}")
    if not _is_int(seed) or not 0 <= seed < 2**64:
        raise BadSetting(f"seed must be an int in 0..2**64-1, got {str(seed)[:40]!r}")


def check_task(task) -> None:
    """SchedulerError unless `task` is a fresh Task: a printable name, int token ids and an int
    limit, and nothing generated or held yet (a finished task resubmitted would run past its
    limit)."""
    if not isinstance(task, Task):
        raise SchedulerError(f"submit() takes a Task, got {type(task).__name__}")
    if not isinstance(task.name, str) or not task.name or not task.name.isprintable():
        raise SchedulerError(f"task name must be a non-empty printable string, got {task.name!r}")
    if not isinstance(task.prompt, list) or not all(_is_int(t) for t in task.prompt):
        raise SchedulerError(f"task {task.name!r}: prompt must be a list of int token ids")
    if not _is_int(task.max_new_tokens):
        raise SchedulerError(
            f"task {task.name!r}: max_new_tokens must be an int, got {task.max_new_tokens!r}"
        )
    if not _is_int(task.n) or task.n < 1:
        raise SchedulerError(f"task {task.name!r}: n (samples) must be an int >= 1, "
                             f"got {task.n!r}")
    if task.samples:
        raise SchedulerError(f"task {task.name!r} already belongs to a group of samples")
    if task.status is not Status.WAITING or task.output or task.page_table or task.length:
        raise SchedulerError(
            f"task {task.name!r} has already run ({task.status!s}, "
            f"{len(task.output)} tokens out): submit a new Task"
        )
