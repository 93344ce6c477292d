"""Workloads: cache geometry, model, scheduler settings and a request mix, from a TOML file.

    name = "seed"
    [cache]      n_pages, page_size, dtype ("float32" | "bfloat16" | "float64"), device
    [model]      any ModelConfig field (n_layers, n_heads, n_kv_heads, head_dim, seed, ...)
    [scheduler]  max_batch, prefix_caching, temperature, seed
    [prefixes]   name = length: shared token runs (e.g. a system prompt)
    [[request]]  name, prompt_len | prompt (token ids), prefix, max_new_tokens,
                 arrival (step) | after (a request's name: arrives once it has finished);
                 prefix names one prefix, or a list of them that the prompt starts with in
                 order (e.g. ["other", "rules"]: the same tokens after another beginning)

Prompt tokens are drawn from a generator seeded by the workload seed and the request (or
prefix) name, so a workload always produces the same tokens.
"""

from __future__ import annotations

import dataclasses
import random
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from astrai.errors import WorkloadError
from astrai.inference.cache import PagedCache
from astrai.inference.scheduler import Scheduler, Status, Task
from astrai.model import ModelConfig, TinyModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass(frozen=True)
class Request:
    name: str
    prompt: tuple[int, ...]
    max_new_tokens: int
    arrival: int = 0
    after: str | None = None
    prefix: str | tuple[str, ...] | None = None  # a name, or names joined in order


@dataclass(frozen=True)
class Workload:
    name: str
    n_pages: int
    page_size: int
    requests: tuple[Request, ...]
    model: ModelConfig = field(default_factory=ModelConfig)
    max_batch: int = 8
    prefix_caching: bool = True
    temperature: float = 0.0
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    description: str = ""
    prefixes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain data that parse_workload() reads back into an equal Workload."""
        return {
            "name": self.name,
            "description": self.description,
            "cache": {
                "n_pages": self.n_pages,
                "page_size": self.page_size,
                "dtype": self.dtype,
                "device": self.device,
            },
            "model": dataclasses.asdict(self.model),
            "scheduler": {
                "max_batch": self.max_batch,
                "prefix_caching": self.prefix_caching,
                "temperature": self.temperature,
                "seed": self.seed,
            },
            "prefixes": dict(self.prefixes),
            "request": [
                {
                    "name": r.name,
                    "prompt": list(r.prompt),
                    "max_new_tokens": r.max_new_tokens,
                    **({"after": r.after} if r.after else {"arrival": r.arrival}),
                    **({"prefix": r.prefix if isinstance(r.prefix, str) else list(r.prefix)}
                       if r.prefix else {}),
                }
                for r in self.requests
            ],
        }


def workload_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("astrai.workloads").iterdir()
                  if p.name.endswith(".toml"))


def load_workload(name_or_path: str | Path) -> Workload:
    """A shipped workload by name (see workload_names()) or a TOML file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and not path.exists():
        shipped = resources.files("astrai.workloads") / f"{name_or_path}.toml"
        if not shipped.is_file():
            raise WorkloadError(
                f"no workload {str(name_or_path)!r}: not a file, and not one of "
                f"{', '.join(workload_names())}"
            )
        return parse_workload(tomllib.loads(shipped.read_text()), f"{name_or_path}.toml")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise WorkloadError(f"workload file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise WorkloadError(f"{path}: not valid TOML: {e}") from None
    return parse_workload(data, path.name)


class _Fields:
    """Reads one table of the file, naming the field in every error."""

    def __init__(self, source: str, where: str, table: Any, known: set[str]):
        if not isinstance(table, dict):
            raise WorkloadError(f"{source}: {where} must be a table")
        unknown = set(table) - known
        if unknown:
            raise WorkloadError(
                f"{source}: unknown field {where}.{sorted(unknown)[0]} "
                f"(known: {', '.join(sorted(known))})"
            )
        self.source, self.where, self.table = source, where, table

    def err(self, key: str, what: str) -> WorkloadError:
        return WorkloadError(
            f"{self.source}: {self.where}.{key} {what}, got {self.table.get(key)!r}"
        )

    def int(self, key: str, default: int | None = None, low: int = 1) -> int:
        value = self.table.get(key, default)
        if value is None:
            raise WorkloadError(f"{self.source}: {self.where}.{key} is missing")
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.err(key, f"must be an int >= {low}")
        return value

    def get(self, key: str, kind: type | tuple, default: Any, what: str) -> Any:
        value = self.table.get(key, default)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.err(key, f"must be {what}")
        return value


def parse_workload(data: dict[str, Any], source: str = "workload") -> Workload:
    top = _Fields(
        source, "workload", data,
        {"name", "description", "cache", "model", "scheduler", "prefixes", "request"},
    )
    name = top.get("name", str, source.removesuffix(".toml"), "a string")
    description = top.get("description", str, "", "a string")

    cache = _Fields(source, "cache", data.get("cache", {}),
                    {"n_pages", "page_size", "dtype", "device"})
    n_pages, page_size = cache.int("n_pages"), cache.int("page_size")
    dtype = cache.get("dtype", str, "float32", "a string")
    if dtype not in DTYPES:
        raise cache.err("dtype", f"must be one of {', '.join(DTYPES)}")
    device = cache.get("device", str, "cpu", "a string")

    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    mtab = _Fields(source, "model", data.get("model", {}), model_fields)
    for key, value in mtab.table.items():
        kind = type(getattr(ModelConfig(), key))
        if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
            if not (kind is float and isinstance(value, int) and not isinstance(value, bool)):
                raise mtab.err(key, f"must be {kind.__name__}")
    try:
        model = ModelConfig(**mtab.table)
    except ValueError as e:
        raise WorkloadError(f"{source}: model: {e}") from None

    sched = _Fields(source, "scheduler", data.get("scheduler", {}),
                    {"max_batch", "prefix_caching", "temperature", "seed"})
    max_batch = sched.int("max_batch", 8)
    prefix_caching = sched.get("prefix_caching", bool, True, "true or false")
    temperature = float(sched.get("temperature", (int, float), 0.0, "a number"))
    if temperature < 0:
        raise sched.err("temperature", "must be >= 0")
    seed = sched.int("seed", 0, low=0)

    ptab = _Fields(source, "prefixes", data.get("prefixes", {}), set(data.get("prefixes", {})))
    prefixes = {key: ptab.int(key) for key in ptab.table}

    raw = data.get("request")
    if not isinstance(raw, list) or not raw:
        raise WorkloadError(f"{source}: workload.request must be a non-empty array of tables")
    requests, names = [], set()
    for i, item in enumerate(raw):
        r = _Fields(source, f"request[{i}]", item,
                    {"name", "prompt_len", "prompt", "prefix", "max_new_tokens", "arrival",
                     "after"})
        rname = r.get("name", str, None, "a string")
        if not rname or rname in names:
            raise r.err("name", "must be a unique non-empty string")
        names.add(rname)
        prefix = r.get("prefix", (str, list, type(None)), None, "a prefix name or a list of them")
        parts = [prefix] if isinstance(prefix, str) else list(prefix or [])
        if (isinstance(prefix, list) and not prefix) or any(
                not isinstance(p, str) or p not in prefixes for p in parts):
            raise r.err("prefix", f"must name one of [prefixes] ({', '.join(prefixes) or 'none'})")
        if isinstance(prefix, list):
            prefix = tuple(prefix)
        head = tuple(t for p in parts for t in _tokens(seed, f"prefix:{p}", prefixes[p], model))
        if "prompt" in item:
            prompt = r.get("prompt", list, None, "a list of token ids")
            if not prompt or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < model.vocab_size
                for t in prompt
            ):
                raise r.err("prompt", f"must be non-empty token ids in 0..{model.vocab_size - 1}")
            prompt = tuple(prompt)
            if prompt[: len(head)] != head:
                raise r.err("prompt", f"must start with the tokens of prefix {prefix!r}")
        else:
            # A prompt may be exactly its prefix (a full prefix-cache hit), not shorter.
            prompt_len = r.int("prompt_len", low=max(len(head), 1))
            prompt = head + _tokens(seed, f"request:{rname}", prompt_len - len(head), model)
        after = r.get("after", (str, type(None)), None, "a request name")
        if after is not None and "arrival" in item:
            raise r.err("after", "cannot be combined with arrival")
        requests.append(Request(
            name=rname, prompt=prompt, max_new_tokens=r.int("max_new_tokens"),
            arrival=r.int("arrival", 0, low=0), after=after, prefix=prefix,
        ))
    for i, req in enumerate(requests):
        if req.after is not None and req.after not in names - {req.name}:
            raise WorkloadError(
                f"{source}: request[{i}].after must name another request, got {req.after!r}"
            )
    wl = Workload(name=name, n_pages=n_pages, page_size=page_size, requests=tuple(requests),
                  model=model, max_batch=max_batch, prefix_caching=prefix_caching,
                  temperature=temperature, seed=seed, dtype=dtype, device=device,
                  description=description, prefixes=prefixes)
    _check_order(wl, source)
    return wl


def _check_order(wl: Workload, source: str) -> None:
    """Requests waiting on each other in a cycle would never arrive."""
    after = {r.name: r.after for r in wl.requests}
    for start in after:
        seen, node = set(), start
        while node is not None:
            if node in seen:
                raise WorkloadError(f"{source}: request.after forms a cycle through {node!r}")
            seen.add(node)
            node = after[node]


def _tokens(seed: int, label: str, n: int, model: ModelConfig) -> tuple[int, ...]:
    rng = random.Random(f"{seed}:{label}")
    return tuple(rng.randrange(model.vocab_size) for _ in range(n))


# ---- running one ----------------------------------------------------------------------------


def build(wl: Workload, device: str | None = None):
    """The cache, model and scheduler a workload describes."""
    device = device or wl.device
    dtype = DTYPES[wl.dtype]
    model = TinyModel(wl.model, device=device, dtype=dtype)
    cfg = wl.model
    cache = PagedCache(cfg.n_layers, wl.n_pages, wl.page_size, cfg.n_kv_heads, cfg.head_dim,
                       device=device, dtype=dtype)
    scheduler = Scheduler(cache, model, max_batch=wl.max_batch,
                          prefix_caching=wl.prefix_caching, temperature=wl.temperature,
                          seed=wl.seed)
    return cache, model, scheduler


class Arrivals:
    """Submits each request when it is due: at its arrival step, or once `after` is done."""

    def __init__(self, wl: Workload):
        self.pending = list(wl.requests)

    def due(self, scheduler: Scheduler) -> list[Request]:
        ready = []
        for req in self.pending:
            if req.after is not None:
                dep = scheduler.tasks.get(req.after)
                if dep is None or dep.status not in (Status.FINISHED, Status.DONE):
                    continue
            elif req.arrival > scheduler.step_count:
                continue
            ready.append(req)
        for req in ready:
            self.pending.remove(req)
        return ready


def run_workload(wl: Workload, scheduler: Scheduler, max_steps: int = 100_000) -> dict:
    """Drive a built scheduler through the workload until every request is done."""
    arrivals = Arrivals(wl)
    while arrivals.pending or not scheduler.idle:
        for req in arrivals.due(scheduler):
            scheduler.submit(Task(req.name, list(req.prompt), req.max_new_tokens))
        if scheduler.step_count >= max_steps:
            raise WorkloadError(f"workload {wl.name!r} not done after {max_steps} steps")
        scheduler.step()
    return {name: task.output for name, task in scheduler.tasks.items()}
