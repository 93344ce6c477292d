"""Workloads: cache geometry, model, scheduler settings and a request mix, from a TOML file.

    name = "seed"
    system = "You are ..."  the system message chat requests share (optional: else the
                 model's chat template's own default, if it has one)
    [cache]      n_pages, page_size, dtype ("float32" | "bfloat16" | "float64"), device
    [model]      any ModelConfig field (n_layers, n_heads, n_kv_heads, head_dim, seed, ...),
                 or checkpoint = "dir": a Llama checkpoint (geometry from its config.json;
                 a relative path is relative to the workload file), or a named model
                 (astrai.models: checkpoint = "smollm2-135m-instruct")
    [scheduler]  max_batch, prefix_caching, temperature, seed
    [prefixes]   name = length: shared token runs (e.g. a system prompt)
    [[request]]  name, prompt_len | prompt (token ids) | prompt_text | chat, prefix,
                 max_new_tokens,
                 arrival (step) | after (a request's name: arrives once it has finished),
                 n (samples of the one prompt, default 1: the tasks name, name.1, ...);
                 prefix names one prefix, or a list of them that the prompt starts with in
                 order (e.g. ["other", "rules"]: the same tokens after another beginning);
                 chat = "a question": the user's message, put through the checkpoint's chat
                 template (astrai.chat) after the system message (the request's own
                 `system`, else the workload's), so every chat request with the same system
                 message begins with the same tokens; a request given as text may carry
                 prompt too, its own token ids (to_json writes both, so a trace shows its
                 ids), checked against the tokenizer

Prompt tokens are drawn from a generator seeded by the workload seed and the request (or
prefix) name, so a workload always produces the same tokens. prompt_text is encoded by the
model's tokenizer: UTF-8 bytes for the tiny model, the checkpoint's tokenizer.json otherwise.
A chat request is rendered into its prompt text when the workload is read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from astrai.errors import AstraiError, ContextTooLong, WorkloadError
from astrai.files import read_text
from astrai.inference.cache import PagedCache, pages_for
from astrai.inference.scheduler import Scheduler, Status, Task
from astrai.memory import available_bytes
from astrai.model import ModelConfig, TinyModel
from astrai.models import MODELS, is_name
from astrai.text import TextLog, load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64,
          "float16": torch.float16}

# Limits checked before anything is generated or allocated (each error names its field).
MAX_STEPS = 100_000  # run_workload's default: a request arriving later could never run
MAX_REQUESTS = 1_000
MAX_PROMPT_TOKENS = 32_768  # per request, prefix included
MAX_NEW_TOKENS = 8_192  # per request
MAX_NAME = 200  # characters in a workload or request name
MAX_SEED = 2**64 - 1  # torch's generators take 64 bits
MAX_MEMORY_SHARE = 0.5  # of the memory available now, the most a workload may ask for
# A shipped workload's name; anything else is a path (a name never walks into a folder).
_SHIPPED_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME_LIKE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # model.checkpoint that may be a name


@dataclass(frozen=True)
class Request:
    name: str
    prompt: tuple[int, ...]
    max_new_tokens: int
    arrival: int = 0
    after: str | None = None
    prefix: str | tuple[str, ...] | None = None  # a name, or names joined in order
    text: str | None = None  # the prompt as text, when given as prompt_text
    n: int = 1  # samples (parallel sampling): tasks name, name.1, ..., name.{n-1}
    chat: str | None = None  # the user's message of a chat request (text: its rendering)
    system: str | None = None  # that request's system message, if one was given

    @property
    def sample_names(self) -> list[str]:
        """The names of the tasks this request becomes (the scheduler's naming)."""
        return [self.name] + [f"{self.name}.{i}" for i in range(1, self.n)]


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
    checkpoint: str | None = None  # a checkpoint directory (absolute); None: the seeded model

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
            "model": ({"checkpoint": self.checkpoint} if self.checkpoint
                      else dataclasses.asdict(self.model)),
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
                    **({"chat": r.chat, **({"system": r.system} if r.system is not None
                                           else {})} if r.chat is not None
                       else {"prompt_text": r.text} if r.text is not None else {}),
                    "prompt": list(r.prompt),  # a text's tokens too: a trace shows its ids
                    "max_new_tokens": r.max_new_tokens,
                    **({"after": r.after} if r.after else {"arrival": r.arrival}),
                    **({"prefix": r.prefix if isinstance(r.prefix, str) else list(r.prefix)}
                       if r.prefix else {}),
                    **({"n": r.n} if r.n != 1 else {}),
                }
                for r in self.requests
            ],
        }


def workload_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("astrai.workloads").iterdir()
                  if p.name.endswith(".toml"))


def load_workload(name_or_path: str | Path) -> Workload:
    """A shipped workload by name (see workload_names()) or a TOML file by path."""
    if isinstance(name_or_path, str) and not name_or_path.strip():
        raise WorkloadError("no workload named: give a name or a .toml path")
    if "\0" in str(name_or_path):
        raise WorkloadError(f"no workload {str(name_or_path)!r}: a path holds no NUL byte")
    path = Path(name_or_path)
    if path.suffix != ".toml" and not os.path.lexists(path):
        name = str(name_or_path)
        if not _SHIPPED_NAME.fullmatch(name) or name not in workload_names():
            raise WorkloadError(
                f"no workload {name!r}: not a file, and not one of "
                f"{', '.join(workload_names())}"
            )
        path = Path(str(resources.files("astrai.workloads") / f"{name}.toml"))
    text = read_text(path, WorkloadError)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise WorkloadError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise WorkloadError(f"{path}: nested too deeply to be a workload") from None
    except ValueError as e:  # an integer of thousands of digits
        raise WorkloadError(f"{path}: not a workload: {e}") from None
    _resolve_checkpoint(data, path.parent, path.name)
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
        {"name", "description", "system", "cache", "model", "scheduler", "prefixes", "request"},
    )
    name = top.get("name", str, source.removesuffix(".toml"), "a string")
    if not name or not name.isprintable() or len(name) > MAX_NAME:
        raise top.err("name", f"must be a printable name (no newline or control character) "
                              f"of at most {MAX_NAME} characters")
    description = top.get("description", str, "", "a string")
    shared_system = top.get("system", (str, type(None)), None, "a string (a system message)")

    cache = _Fields(source, "cache", data.get("cache", {}),
                    {"n_pages", "page_size", "dtype", "device"})
    n_pages, page_size = cache.int("n_pages"), cache.int("page_size")
    dtype = cache.get("dtype", str, "float32", "a string")
    if dtype not in DTYPES and dtype != "auto":
        raise cache.err("dtype", f"must be one of {', '.join(DTYPES)}")
    device = cache.get("device", str, "cpu", "a string")
    problem = device_problem(device, here=False)  # whether this machine has it: at build
    if problem:
        raise cache.err("device", problem)

    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    checkpoint = _checkpoint_of(source, data.get("model", {}))
    mtab = _Fields(source, "model", _without_checkpoint(data.get("model", {})), model_fields)
    for key, value in mtab.table.items():
        kind = type(getattr(ModelConfig(), key))
        if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
            if not (kind is float and isinstance(value, int) and not isinstance(value, bool)):
                raise mtab.err(key, f"must be {kind.__name__}")
        if kind is int and not -MAX_SEED <= value <= MAX_SEED:
            raise mtab.err(key, "must fit in 64 bits")
        if kind is float and not math.isfinite(float(value)):
            raise mtab.err(key, "must be finite")
    try:
        model = ModelConfig(**mtab.table)
    except ValueError as e:
        raise WorkloadError(f"{source}: model: {e}") from None
    context = None  # the longest sequence the model takes (a checkpoint's context length)
    if checkpoint is not None:
        info = _checkpoint_config(source, checkpoint)
        model, context = info.config, info.context
        dtype = dtype if "dtype" in cache.table else "auto"
    elif dtype == "auto":
        raise cache.err("dtype", "may be 'auto' only with model.checkpoint")
    tokenizer = _Tokenizer(source, checkpoint)

    sched = _Fields(source, "scheduler", data.get("scheduler", {}),
                    {"max_batch", "prefix_caching", "temperature", "seed"})
    max_batch = sched.int("max_batch", 8)
    prefix_caching = sched.get("prefix_caching", bool, True, "true or false")
    temperature = float(sched.get("temperature", (int, float), 0.0, "a number"))
    if not math.isfinite(temperature) or temperature < 0:
        raise sched.err("temperature", "must be >= 0 and finite")
    seed = sched.int("seed", 0, low=0)
    if seed > MAX_SEED:
        raise sched.err("seed", "must fit in 64 bits (at most 2**64 - 1)")

    raw_prefixes = data.get("prefixes", {})
    ptab = _Fields(source, "prefixes", raw_prefixes,
                   set(raw_prefixes) if isinstance(raw_prefixes, dict) else set())
    # A prefix is a run of token ids (its length), or a system message (text) that the chat
    # requests naming it begin with: its length is that of the template's system block.
    systems = {key: v for key, v in ptab.table.items() if isinstance(v, str)}
    for key, text in systems.items():
        if checkpoint is None or not text.strip():
            raise ptab.err(key, "must be a length; a system message (text) needs a non-empty "
                                "message and model.checkpoint")
    blocks = {key: _system_block(ptab, key, checkpoint, text, tokenizer, model)
              for key, text in systems.items()}
    prefixes = {key: len(blocks[key]) if key in blocks else ptab.int(key) for key in ptab.table}
    for key, length in prefixes.items():
        if length >= n_pages * page_size:
            raise ptab.err(key, f"must be shorter than the pool's {n_pages * page_size} slots")
    if checkpoint is None:  # a checkpoint's loader checks its own sizes before it allocates
        require_memory(n_pages, page_size, model, dtype, "cpu", source)  # weights start on host

    raw = data.get("request")
    if not isinstance(raw, list) or not raw:
        raise WorkloadError(f"{source}: workload.request must be a non-empty array of tables")
    if len(raw) > MAX_REQUESTS:
        raise WorkloadError(f"{source}: workload.request has {len(raw)} requests; the most is "
                            f"{MAX_REQUESTS}")
    capacity = n_pages * page_size  # tokens the pool holds: no request may need more
    requests, names = [], set()
    for i, item in enumerate(raw):
        r = _Fields(source, f"request[{i}]", item,
                    {"name", "prompt_len", "prompt", "prefix", "max_new_tokens", "arrival",
                     "after", "prompt_text", "n", "chat", "system"})
        rname = r.get("name", str, None, "a string")
        if not rname or rname in names:
            raise r.err("name", "must be a unique non-empty string")
        if not rname.isprintable() or len(rname) > MAX_NAME:
            raise r.err("name", f"must be printable (no newline or control character) and at "
                                f"most {MAX_NAME} characters")
        max_new = r.int("max_new_tokens")
        names.add(rname)
        prefix = r.get("prefix", (str, list, type(None)), None, "a prefix name or a list of them")
        parts = [prefix] if isinstance(prefix, str) else list(prefix or [])
        if (isinstance(prefix, list) and not prefix) or any(
                not isinstance(p, str) or p not in prefixes for p in parts):
            raise r.err("prefix", f"must name one of [prefixes] ({', '.join(prefixes) or 'none'})")
        if isinstance(prefix, list):
            prefix = tuple(prefix)
        chat, system = _chat(r, item, prefix, shared_system, systems)
        if chat is None and any(p in systems for p in parts):
            raise r.err("prefix", "names a system message: only a chat request begins with one")
        head = tuple(t for p in parts for t in _tokens(seed, f"prefix:{p}", prefixes[p], model)) \
            if chat is None else ()
        text = _prompt_text(r, item, prefix) if chat is None \
            else _render_chat(r, checkpoint, chat, system)
        if text is not None:
            prompt = tokenizer.encode(r, text, model, "chat" if chat is not None else "prompt_text")
            if prefix is not None and chat is not None:  # begins with its system block
                block = blocks.get(prefix) or _system_block(r, "chat", checkpoint, system,
                                                            tokenizer, model)
                if len(block) != prefixes[prefix] or prompt[:len(block)] != block:
                    raise r.err("prefix", f"must be the {len(block)} tokens this request's "
                                          "system message begins its prompt with")
            given = item.get("prompt")
            if given is not None and given != list(prompt):  # a trace carries text and ids
                field_ = "chat" if chat is not None else "prompt_text"
                raise r.err(field_, "cannot be combined with prompt other than its own tokens "
                                    f"({len(prompt)} ids from this model's tokenizer)")
        elif "prompt" in item:
            prompt = r.get("prompt", list, None, "a list of token ids")
            if len(prompt) + max_new - 1 > capacity:
                raise r.err("prompt", f"holds {len(prompt)} tokens; with max_new_tokens "
                                      f"{max_new} it could never fit the pool's {capacity} slots")
            if not prompt or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < model.vocab_size
                for t in prompt
            ):
                raise r.err("prompt", f"must be non-empty token ids in 0..{model.vocab_size - 1}")
            prompt = tuple(prompt)
            if "prompt_len" in item:
                raise r.err("prompt_len", "cannot be combined with prompt (give one of them)")
            if prompt[: len(head)] != head:
                raise r.err("prompt", f"must start with the tokens of prefix {prefix!r}")
        else:
            # A prompt may be exactly its prefix (a full prefix-cache hit), not shorter.
            prompt_len = r.int("prompt_len", low=max(len(head), 1))
            if prompt_len + max_new - 1 > capacity:
                raise r.err("prompt_len", f"with max_new_tokens {max_new} could never fit the "
                                          f"pool's {capacity} slots (n_pages x page_size)")
            if prompt_len > MAX_PROMPT_TOKENS:  # before any token is drawn
                raise r.err("prompt_len", f"must be at most {MAX_PROMPT_TOKENS}")
            prompt = head + _tokens(seed, f"request:{rname}", prompt_len - len(head), model)
        if max_new > MAX_NEW_TOKENS:
            raise r.err("max_new_tokens", f"must be at most {MAX_NEW_TOKENS}")
        if context is not None and len(prompt) + max_new - 1 > context:
            raise ContextTooLong(
                f"{source}: request[{i}] has {len(prompt)} prompt tokens; with max_new_tokens "
                f"{max_new} it would pass the model's context of {context} tokens")
        if len(prompt) > MAX_PROMPT_TOKENS:
            field_ = next(k for k in ("prompt_text", "prompt", "prompt_len") if k in item)
            raise r.err(field_, f"gives {len(prompt)} prompt tokens; the most is "
                                f"{MAX_PROMPT_TOKENS}")
        after = r.get("after", (str, type(None)), None, "a request name")
        if after is not None and "arrival" in item:
            raise r.err("after", "cannot be combined with arrival")
        arrival = r.int("arrival", 0, low=0)
        if arrival >= MAX_STEPS:
            raise r.err("arrival", f"must be below {MAX_STEPS}, the most steps a run takes")
        n = r.int("n", 1)
        if n > max_batch:
            raise r.err("n", f"must be at most scheduler.max_batch ({max_batch}): the samples "
                             "run together")
        # A preempted group recomputes each sample on its own pages: it must fit unshared.
        group_pages = n * pages_for(len(prompt) + max_new - 1, page_size)
        if n > 1 and group_pages > n_pages:
            raise r.err("n", f"samples need up to {group_pages} pages ({len(prompt)} prompt + "
                             f"{max_new} new tokens each, none shared once preempted); the "
                             f"pool has cache.n_pages {n_pages}")
        requests.append(Request(
            name=rname, prompt=prompt, max_new_tokens=max_new,
            arrival=arrival, after=after, prefix=prefix, text=text, n=n,
            chat=chat, system=system,
        ))
    tasks = [name for req in requests for name in req.sample_names]
    for i, req in enumerate(requests):
        clash = next((name for name in req.sample_names[1:] if tasks.count(name) > 1), None)
        if clash is not None:
            raise WorkloadError(f"{source}: request[{i}].n names a sample {clash!r}, the name "
                                "of another request or sample")
    for i, req in enumerate(requests):
        if req.after is not None and req.after not in names - {req.name}:
            raise WorkloadError(
                f"{source}: request[{i}].after must name another request, got {req.after!r}"
            )
    if checkpoint is None:  # with the longest prefill's attention mask and scores too
        require_memory(n_pages, page_size, model, dtype, "cpu", source,
                       attention_bytes(model, requests, max_batch))
    wl = Workload(name=name, n_pages=n_pages, page_size=page_size, requests=tuple(requests),
                  model=model, max_batch=max_batch, prefix_caching=prefix_caching,
                  temperature=temperature, seed=seed, dtype=dtype, device=device,
                  description=description, prefixes=prefixes, checkpoint=checkpoint)
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


def device_problem(device: str, here: bool = True) -> str | None:
    """Why a device name cannot run a workload (here: on this machine), or None."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return "must be a device name such as cpu, cuda or cuda:1"
    if dev.type == "cpu":
        return None
    if dev.type != "cuda":
        return "must be cpu or cuda"
    if not here:
        return None
    if not torch.cuda.is_available():
        return "names CUDA, and this machine has no CUDA device"
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        return f"names GPU {dev.index}; this machine has {torch.cuda.device_count()}"
    return None


def estimate_bytes(n_pages: int, page_size: int, model: ModelConfig, dtype: str) -> int:
    """Memory a workload allocates: the K/V pool (twice: storage and the gather buffers at their
    largest) and the model (its fp32 weights while they are built, then in its dtype)."""
    m, size = model, DTYPES[dtype].itemsize
    per_layer = (2 * m.d_model + m.d_model * m.head_dim * 2 * (m.n_heads + m.n_kv_heads)
                 + 3 * m.d_model * m.d_ff)
    params = 2 * m.vocab_size * m.d_model + m.n_layers * per_layer + m.d_model
    kv = 2 * m.n_layers * (n_pages + 1) * page_size * m.n_kv_heads * m.head_dim * size
    return 2 * kv + params * (4 + size)


def attention_bytes(model: ModelConfig, requests, max_batch: int) -> int:
    """Memory one forward's attention takes at its largest: a prefill of max_batch rows as
    long as the longest request ever gets (prompt plus all but its last output, recomputed
    after a preemption) against as many keys. The [B, S, T] mask, the mask expanded to the
    query heads that share a KV head, and float32 scores per query head."""
    if not requests:
        return 0
    longest = max(len(r.prompt) + r.max_new_tokens - 1 for r in requests)
    rows = min(max_batch, len(requests))
    n_rep = model.n_heads // model.n_kv_heads
    return rows * longest * longest * (1 + n_rep + 4 * model.n_heads)


def require_memory(n_pages, page_size, model, dtype, device, source="workload",
                   attention: int = 0) -> None:
    """WorkloadError, before anything is allocated, if the workload would need more than
    MAX_MEMORY_SHARE of the memory available (no check where that is unknown)."""
    need = estimate_bytes(n_pages, page_size, model, dtype) + attention
    have = available_bytes(device)
    if have is not None and need > MAX_MEMORY_SHARE * have:
        with_prompt = " and its longest request's attention" if attention else ""
        raise WorkloadError(
            f"{source}: cache.n_pages {n_pages} x cache.page_size {page_size} with this [model]"
            f"{with_prompt} in {dtype} needs about {need / 2**20:.0f} MiB; {device} has "
            f"{have / 2**20:.0f} MiB available (at most {MAX_MEMORY_SHARE:.0%} is used)"
        )


def build(wl: Workload, device: str | None = None):
    """The cache, model and scheduler a workload describes (checked against the device first)."""
    device = device or wl.device
    problem = device_problem(device)
    if problem:
        raise WorkloadError(f"device {device!r} {problem}")
    if wl.checkpoint is None:  # a checkpoint's loader checks its own weights and the cache
        require_memory(wl.n_pages, wl.page_size, wl.model, wl.dtype, device, wl.name,
                       attention_bytes(wl.model, wl.requests, wl.max_batch))
    model = _model(wl, device)
    dtype = model.dtype
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


def run_workload(wl: Workload, scheduler: Scheduler, max_steps: int = MAX_STEPS,
                 progress=None) -> dict:
    """Drive a built scheduler through the workload until every request is done (at most
    max_steps steps); progress(scheduler), if given, is called after every step."""
    arrivals = Arrivals(wl)
    while arrivals.pending or not scheduler.idle:
        for req in arrivals.due(scheduler):
            scheduler.submit(Task(req.name, list(req.prompt), req.max_new_tokens, n=req.n))
        if scheduler.step_count >= max_steps:
            raise WorkloadError(f"workload {wl.name!r} not done after {max_steps} steps")
        scheduler.step()
        if progress is not None:
            progress(scheduler)
    return {name: task.output for name, task in scheduler.tasks.items()}


# ---- checkpoints and text -------------------------------------------------------------------


def _resolve_checkpoint(data: dict, base: Path, source: str = "workload") -> None:
    """A relative model.checkpoint is relative to the workload file's directory."""
    table = data.get("model")
    if isinstance(table, dict) and isinstance(table.get("checkpoint"), str):
        text = table["checkpoint"]
        if is_name(text) or (_NAME_LIKE.fullmatch(text) and not (base / text).exists()):
            return  # a named model, or a name nobody knows (parse_workload says so)
        path = _checkpoint_path(source, text)
        table["checkpoint"] = str(path if path.is_absolute() else (base / path).resolve())


def _checkpoint_path(source: str, text: str) -> Path:
    """model.checkpoint as a path, `~` expanded; WorkloadError for one no file can have."""
    if "\0" in text:
        raise WorkloadError(f"{source}: model.checkpoint holds a NUL byte, got {text!r}")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ~nosuchuser
        raise WorkloadError(f"{source}: model.checkpoint names the home of an unknown user, "
                            f"got {text!r}") from None


def _checkpoint_of(source: str, table: Any) -> str | None:
    if not isinstance(table, dict) or "checkpoint" not in table:
        return None
    path = table["checkpoint"]
    if not isinstance(path, str) or not path:
        raise WorkloadError(f"{source}: model.checkpoint must be a directory path, got {path!r}")
    others = sorted(set(table) - {"checkpoint"})
    if others:
        raise WorkloadError(f"{source}: model.{others[0]} cannot be combined with "
                            "model.checkpoint (the geometry comes from its config.json)")
    if is_name(path):
        return path  # kept as the name: the folder is found (and checked) where it is used
    if _NAME_LIKE.fullmatch(path) and not os.path.lexists(path):
        raise WorkloadError(f"{source}: model.checkpoint: no model named {path!r} (known: "
                            f"{', '.join(MODELS)}) and no folder of that name")
    return str(_checkpoint_path(source, path).resolve())


def _without_checkpoint(table: Any) -> Any:
    return {k: v for k, v in table.items() if k != "checkpoint"} if isinstance(table, dict) \
        else table


def _checkpoint_config(source: str, path: str):
    from astrai.checkpoint import read_config  # reads config.json and the tensor map only

    try:
        return read_config(path)
    except AstraiError as e:
        raise WorkloadError(f"{source}: model.checkpoint: {e}") from e


def _chat(r: _Fields, item: dict, prefix, shared: str | None,
          systems: dict[str, str]) -> tuple[str | None, str | None]:
    """A chat request's user message and system message: the one its prefix names, else its
    own, else the shared one. In a trace a prefix is a length and the request carries the
    message (`system`), checked against the length once rendered."""
    if "chat" not in item:
        if "system" in item:
            raise r.err("system", "needs chat (a system message is part of a chat prompt)")
        return None, None
    chat = r.get("chat", str, None, "a string (the user's message)")
    for other in ("prompt_len", "prompt_text"):
        if other in item:
            raise r.err("chat", f"cannot be combined with {other} (give one of them)")
    if not chat.strip():
        raise r.err("chat", "must be a non-empty message")
    system = r.get("system", (str, type(None)), shared, "a string (a system message)")
    if prefix is not None:
        if not isinstance(prefix, str):
            raise r.err("prefix", "must name one system message for a chat request")
        named = systems.get(prefix)
        if named is None and "system" not in item:
            raise r.err("prefix", "names a token run: a chat request's prefix names a system "
                                  "message ([prefixes] name = \"text\")")
        if named is not None and "system" in item and item["system"] != named:
            raise r.err("system", f"differs from the system message of prefix {prefix!r}")
        system = named if named is not None else system
    return chat, system


def _system_block(fields: _Fields, key: str, checkpoint: str, system: str | None,
                  tokenizer: _Tokenizer, model: ModelConfig) -> tuple[int, ...]:
    """The tokens a chat prompt with this system message begins with (the template's whole
    system turn)."""
    from astrai.chat import chat_prompt

    if system is None:
        raise fields.err(key, "needs a system message to be a chat request's prefix")
    try:
        text = chat_prompt(checkpoint, [{"role": "system", "content": system}],
                           add_generation_prompt=False)
    except AstraiError as e:
        raise fields.err(key, f"cannot be rendered ({e})") from e
    return tokenizer.encode(fields, text, model, key)


def _render_chat(r: _Fields, checkpoint: str | None, chat: str, system: str | None) -> str:
    """The chat prompt's text through the checkpoint's chat template."""
    if checkpoint is None:
        raise r.err("chat", "needs model.checkpoint (a model with a chat template)")
    from astrai.chat import chat_prompt

    messages = ([{"role": "system", "content": system}] if system is not None else []) \
        + [{"role": "user", "content": chat}]
    try:
        return chat_prompt(checkpoint, messages)
    except AstraiError as e:
        raise r.err("chat", f"cannot be rendered ({e})") from e


def _prompt_text(r: _Fields, item: dict, prefix) -> str | None:
    if "prompt_text" not in item:
        return None
    text = r.get("prompt_text", str, None, "a string")
    for other in ("prompt_len",):
        if other in item:
            raise r.err("prompt_text", f"cannot be combined with {other} (give one of them)")
    if prefix is not None:
        raise r.err("prompt_text", "cannot be combined with prefix (prefixes are token runs)")
    if not text:
        raise r.err("prompt_text", "must be non-empty")
    return text


class _Tokenizer:
    """The model's tokenizer, loaded on the first text only."""

    def __init__(self, source: str, checkpoint: str | None):
        self.source, self.checkpoint, self._tok = source, checkpoint, None

    def encode(self, r: _Fields, text: str, model: ModelConfig,
               key: str = "prompt_text") -> tuple[int, ...]:
        if self._tok is None:
            try:
                self._tok = load_tokenizer(self.checkpoint)
            except AstraiError as e:
                raise r.err(key, f"needs the model's tokenizer ({e})") from e
            if self._tok is None:
                raise r.err(key, "needs a tokenizer.json in the checkpoint directory")
        ids = tuple(self._tok.encode(text))
        if not ids:
            raise r.err(key, "encodes to no tokens")
        if max(ids) >= model.vocab_size:
            raise r.err(key, f"encodes to id {max(ids)}, past the model's vocabulary "
                        f"of {model.vocab_size} (byte-level text needs vocab_size >= 256)")
        return ids


def text_log(wl: Workload) -> TextLog | None:
    """What the recorder needs to carry text: None when no request was given as text."""
    prompts = {name: r.text for r in wl.requests if r.text is not None
               for name in r.sample_names}
    return TextLog(load_tokenizer(wl.checkpoint), prompts) if prompts else None


def cache_bytes(wl: Workload, dtype: torch.dtype) -> int:
    """K and V of every page (plus the null page padded rows write to), all layers."""
    c = wl.model
    per_slot = 2 * c.n_layers * c.n_kv_heads * c.head_dim * torch.empty((), dtype=dtype).itemsize
    return (wl.n_pages + 1) * wl.page_size * per_slot


# Named models already loaded in this process, by (name, stamp, device, dtype): every
# storyboard workload and its comparison runs use the same weights, read once (a model holds
# no state between runs; a capture's probe is removed when it ends).
_loaded: dict[tuple, TinyModel] = {}


def _model(wl: Workload, device: str) -> TinyModel:
    """The seeded tiny model, or the checkpoint's weights (dtype 'auto': the checkpoint's own
    dtype on CUDA, float32 on CPU); a named model's are loaded once per process."""
    if wl.checkpoint is None:
        return TinyModel(wl.model, device=device, dtype=DTYPES[wl.dtype])
    from astrai.checkpoint import load_checkpoint, read_config, resolve_dtype

    info = read_config(wl.checkpoint)
    if info.config != wl.model:
        raise WorkloadError(f"checkpoint {wl.checkpoint} changed since the workload was read")
    dtype = resolve_dtype(info, torch.device(device), DTYPES.get(wl.dtype))
    reserve = cache_bytes(wl, dtype) + attention_bytes(wl.model, wl.requests, wl.max_batch)
    if not is_name(wl.checkpoint):  # a folder's files may change between runs: read them
        return load_checkpoint(info, device, dtype, reserve=reserve)
    from astrai.models.store import identity

    key = (wl.checkpoint, json.dumps(identity(wl.checkpoint), sort_keys=True),
           str(torch.device(device)), dtype)
    model = _loaded.get(key)
    if model is None:
        for old in [k for k in _loaded if k[0] == wl.checkpoint]:
            del _loaded[old]  # another conversion or device: keep one copy of a model
        model = _loaded[key] = load_checkpoint(info, device, dtype, reserve=reserve)
    elif model.attn_probe is not None:
        raise WorkloadError(f"model {wl.checkpoint} is in use by a capture still running")
    return model
