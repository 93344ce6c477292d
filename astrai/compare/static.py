"""Batching over a contiguous DenseKVCache: each request holds one row of max_len K/V slots.

The baseline the paged Scheduler is compared with. A request admitted to a row reserves all of
that row (max_len slots, the longest any request may grow to) until it leaves, however few
tokens it ends up holding. Two admission policies over the same rows:

- static (the default): a batch is admitted only when every row is empty, and it holds its rows
  until the last of its members is done; a member that finishes early leaves its row idle;
- continuous: a request takes any empty row as soon as one is free. The rows are the memory
  budget (rows = budget // row bytes), so what does not fit waits in the queue.

Each step is cleanup -> refill -> prefill -> decode, as in `Scheduler`, with the same `Task`,
`submit`/`step`/`run` interface (so `astrai.workload.run_workload` drives either), and writes
down what every row did (`records`): a prompt prefilled, one token generated, or idle.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from astrai.compare.dense import DenseKVCache
from astrai.errors import RequestTooLarge, SchedulerError
from astrai.inference.scheduler import Status, Task, sample_tokens

PROMPT, GEN, IDLE = "prompt", "gen", "idle"


@dataclass(frozen=True)
class RowUse:
    """What one row did in one step, and what it held after it."""

    task: str | None  # the request holding the row (None: empty)
    kind: str  # PROMPT (its prompt prefilled, first token out), GEN (one token out), IDLE
    n: int  # tokens whose K/V this step wrote into the row
    length: int  # tokens with K/V in the row after the step (the row reserves max_len)


@dataclass(frozen=True)
class StepRecord:
    step: int
    rows: tuple[RowUse, ...]
    queue: tuple[str, ...]  # waiting after this step's refill, oldest first
    admitted: tuple[str, ...]


class DenseBatcher:
    def __init__(
        self,
        model,
        rows: int,
        max_len: int,
        static: bool = True,
        temperature: float = 0.0,
        seed: int = 0,
        dtype: torch.dtype | None = None,
    ):
        cfg = model.config
        self.model = model
        self.static = static
        self.temperature, self.seed = temperature, seed
        self.cache = DenseKVCache(cfg.n_layers, rows, max_len, cfg.n_kv_heads, cfg.head_dim,
                                  device=model.device, dtype=dtype or model.dtype)
        self.max_len = max_len
        self.rows: list[Task | None] = [None] * rows
        self.waiting: deque[Task] = deque()
        self.tasks: dict[str, Task] = {}
        self.step_count = 0
        self.records: list[StepRecord] = []
        self._generators: dict[str, torch.Generator] = {}

    @property
    def row_bytes(self) -> int:
        """Bytes one row reserves: K and V of max_len tokens in every layer."""
        c = self.cache
        return 2 * c.n_layers * c.max_len * c.n_kv_heads * c.head_dim * c.k_cache.element_size()

    # ---- submission ------------------------------------------------------------------------

    def submit(self, task: Task) -> Task:
        """Queue a task; reject at once one that could never fit in a row."""
        if task.name in self.tasks:
            raise SchedulerError(f"a task named {task.name!r} was already submitted")
        if not task.prompt:
            raise SchedulerError(f"task {task.name!r} has an empty prompt")
        if task.max_new_tokens < 1:
            raise SchedulerError(f"task {task.name!r}: max_new_tokens must be >= 1")
        most = len(task.prompt) + task.max_new_tokens - 1  # the last token needs no K/V
        if most > self.max_len:
            raise RequestTooLarge(
                f"task {task.name!r} needs up to {most} K/V slots ({len(task.prompt)} prompt + "
                f"{task.max_new_tokens} new tokens); a row holds max_len={self.max_len}"
            )
        task.status = Status.WAITING
        self.tasks[task.name] = task
        self.waiting.append(task)
        return task

    @property
    def idle(self) -> bool:
        return not self.waiting and all(t is None for t in self.rows)

    def run(self, max_steps: int = 1_000_000) -> dict[str, list[int]]:
        while not self.idle:
            if self.step_count >= max_steps:
                raise SchedulerError(f"not done after {max_steps} steps")
            self.step()
        return {name: task.output for name, task in self.tasks.items()}

    # ---- one step --------------------------------------------------------------------------

    def step(self) -> None:
        self._cleanup()
        admitted = self._refill()
        use: dict[int, tuple[str, int]] = {}
        if admitted:
            chunks = {r: self.rows[r].tokens for r in admitted}
            self._forward(chunks)
            use.update({r: (PROMPT, len(c)) for r, c in chunks.items()})
        decoding = [r for r, t in enumerate(self.rows)
                    if t is not None and t.status is Status.RUNNING and r not in admitted]
        if decoding:
            self._forward({r: [self.rows[r].output[-1]] for r in decoding})
            use.update({r: (GEN, 1) for r in decoding})
        rows = tuple(
            RowUse(t.name if t else None, *use.get(r, (IDLE, 0)), t.length if t else 0)
            for r, t in enumerate(self.rows)
        )
        self.records.append(StepRecord(self.step_count, rows, tuple(t.name for t in self.waiting),
                                       tuple(self.rows[r].name for r in admitted)))
        self.step_count += 1

    def _cleanup(self) -> None:
        held = [t for t in self.rows if t is not None]
        if self.static and any(t.status is not Status.FINISHED for t in held):
            return  # a static batch keeps every row until its last member is done
        for r, task in enumerate(self.rows):
            if task is not None and task.status is Status.FINISHED:
                task.status, task.length = Status.DONE, 0
                self.rows[r] = None

    def _refill(self) -> list[int]:
        if self.static and any(t is not None for t in self.rows):
            return []  # the batch in flight is closed to newcomers
        admitted = []
        for r, task in enumerate(self.rows):
            if task is None and self.waiting:
                task = self.waiting.popleft()
                task.status, task.length = Status.RUNNING, 0
                self.rows[r] = task
                admitted.append(r)
        return admitted

    def _forward(self, chunks: dict[int, list[int]]) -> None:
        """One forward over every row: row r computes chunks[r] at its own position; rows
        without a chunk compute nothing (length 0: their writes go to the scratch slot)."""
        b = self.cache.batch
        device = self.cache.device
        width = max(len(c) for c in chunks.values())
        tokens = torch.zeros(b, width, dtype=torch.int64)
        starts, n = [0] * b, [0] * b
        for r, task in enumerate(self.rows):
            if task is not None:
                starts[r] = task.length
            if r in chunks:
                tokens[r, : len(chunks[r])] = torch.tensor(chunks[r], dtype=torch.int64)
                n[r] = len(chunks[r])
        ends = [s + k for s, k in zip(starts, n)]
        lengths = torch.tensor(n, dtype=torch.int64, device=device)
        view = self.cache.bind(max(ends), torch.tensor(ends, dtype=torch.int64, device=device))
        logits = self.model(tokens.to(device), torch.tensor(starts, device=device), view,
                            lengths)
        order = sorted(chunks)
        idx = torch.tensor(order, device=device)
        last = logits[idx, lengths[idx] - 1]
        tasks = [self.rows[r] for r in order]
        nxt = sample_tokens(tasks, last, self.temperature, self.seed, self._generators).tolist()
        for task, r, token in zip(tasks, order, nxt):
            task.length = ends[r]
            task.output.append(token)
            if len(task.output) >= task.max_new_tokens:
                task.status = Status.FINISHED

