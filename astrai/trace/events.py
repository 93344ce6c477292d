"""The trace's events, one dataclass per kind: its fields, each with its check (a
astrai.trace.checks.Check, named next to the field), how a replay groups it into beats, what in
its own state would contradict it, and its line in the text trace. Adding a kind is one class
here.

Every event has `step`, `phase`, `state` (the cache and scheduler after it: a dict whose
per-task values may be the recorder's shared mappings), `code` (engine frames running, innermost
first) and `returned` (engine calls finished since the event before). A kind's own fields come
after those in the constructor and between `phase` and `state` in the file:

    {"kind": "alloc", "step": 0, "phase": "refill", "page": 0, "task": "A", "logical": 0,
     "state": {...}, "code": [...], "returned": [...]}

`EVENTS` maps each kind's name in the file to its class; `json_schema()` is the file format
derived from these classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from astrai.trace import source as engine_source
from astrai.trace.checks import (
    COUNT,
    COUNT_SCHEMA,
    FLAG,
    GATHER_ROWS,
    HOLDER,
    KEYS,
    LOGICAL,
    NAME_OR_NULL,
    NAMES,
    NAMES_SCHEMA,
    PAGE,
    PAGE_TABLE,
    PAGES,
    PIECE_MAP,
    PIECES,
    SHAPE,
    SLOTS,
    TASK,
    TEXT_OR_NULL,
    TEXTS,
    TOKEN_IDS,
    WRITE_ROWS,
    Check,
)

# A replay folds some events into a neighbouring beat instead of giving them one of their own.
NEXT = "next"  # lead into the next beat (a phase change moves with what happens in it)
PREVIOUS = "previous"  # belong to the beat before (a copy: to its page's alloc)


def own(check: Check, *, optional: bool = False):
    """A kind's own field with its check. An optional field is None when absent, and left out
    of the file then."""
    meta = {"check": check, "optional": optional}
    return field(default=None, metadata=meta) if optional else field(metadata=meta)


# ---- the kinds -------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Event:
    """What every event holds; a kind's own fields are its subclass's."""

    kind: ClassVar[str] = ""
    # How a replay groups it (scenes/framework/replay/plan.py): None, a beat of its own; NEXT or
    # PREVIOUS, folded into the beat after or before it.
    folds: ClassVar[str | None] = None
    # Part of a "plain" decode step (only phases, writes, gathers and tokens), which a replay
    # compresses into one run.
    plain: ClassVar[bool] = False
    # Its line in the text trace shows the page state after it (it moves pages).
    moves_pages: ClassVar[bool] = False
    # (name, check, optional) of each own field, in file order (filled in by the registry)
    own_fields: ClassVar[tuple[tuple[str, Check, bool], ...]] = ()

    step: int
    phase: str
    state: Mapping  # the recorder's shared per-task values are Mappings; a loaded file's dicts
    code: list = field(default_factory=list)
    returned: list = field(default_factory=list)

    def summary(self) -> str:
        """What happened, in words, from the event's own fields (the text trace's line)."""
        return ""

    def disagreement(self, state: Mapping, cached: set[int]) -> str | None:
        """What in its own state contradicts the event (None if nothing): a page it took is
        held, one it cached is cached, ... (`cached`: the state's cached pages as a set)."""
        return None

    def mismatch(self) -> str | None:
        """What in its own fields contradicts another of them (None if nothing)."""
        return None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "step": self.step, "phase": self.phase}
        for name, _, optional in self.own_fields:
            value = getattr(self, name)
            if value is not None or not optional:
                data[name] = value
        data["state"] = _plain(self.state)
        data["code"] = self.code
        data["returned"] = self.returned
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Event:
        """The event a checked JSON object describes (format.validate checked it)."""
        return cls(step=data["step"], phase=data["phase"], state=data["state"],
                   code=data.get("code", []), returned=data.get("returned", []),
                   **{name: data.get(name) for name, _, _ in cls.own_fields})


def _plain(state: Any) -> Any:
    """A state with shared per-task mappings as plain dicts: the file holds each in full."""
    if not isinstance(state, dict):
        return state
    return {k: v if isinstance(v, (dict, list, int, str)) or v is None else dict(v)
            for k, v in state.items()}


@dataclass(slots=True, kw_only=True)
class Phase(Event):
    """The scheduler enters a phase of a step (init, arrive, cleanup, refill, decode, ...)."""

    kind: ClassVar[str] = "phase"
    folds: ClassVar[str | None] = NEXT
    plain: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class Arrive(Event):
    """A request is submitted."""

    kind: ClassVar[str] = "arrive"

    task: str = own(TASK)
    prompt_len: int = own(COUNT)
    max_new_tokens: int = own(COUNT)
    prompt_text: str | None = own(TEXT_OR_NULL)  # the prompt as given, for a text request
    # a parallel-sampling request (n > 1): its tasks, sample 0 first
    samples: list[str] | None = own(NAMES, optional=True)
    # a text request's prompt, one visible piece per token (astrai.text.visible_piece)
    prompt_pieces: list[str] | None = own(PIECES, optional=True)

    def mismatch(self) -> str | None:
        if self.prompt_pieces is not None and len(self.prompt_pieces) != self.prompt_len:
            return (f"prompt_pieces holds {len(self.prompt_pieces)} pieces for a prompt of "
                    f"{self.prompt_len} tokens")
        return None

    def summary(self) -> str:
        said = f" {self.prompt_text!r}" if self.prompt_text is not None else ""
        samples = f", samples {', '.join(self.samples)}" if self.samples else ""
        return (f"{self.task}: prompt {self.prompt_len} tokens{said}, "
                f"up to {self.max_new_tokens} new{samples}")


@dataclass(slots=True, kw_only=True)
class Admit(Event):
    """A request is admitted: pages_needed = pages_for(n_tokens); needed (to allocate) and
    available, what _fit compared; prompt_len + generated = n_tokens (generated > 0 on
    readmission after a preemption); keys, the chained prefix key of each full page of those
    tokens ([] with the prefix cache off)."""

    kind: ClassVar[str] = "admit"

    task: str = own(TASK)
    n_tokens: int = own(COUNT)
    hits: list[int] = own(PAGES)
    pages_needed: int = own(COUNT)
    needed: int = own(COUNT)
    available: int = own(COUNT)
    prompt_len: int = own(COUNT)
    generated: int = own(COUNT)
    keys: list[int | None] = own(KEYS)

    def summary(self) -> str:
        hits = f", prefix hit {self.hits}" if self.hits else ""
        return (f"{self.task}: {self.n_tokens} tokens need {self.pages_needed} pages{hits}, "
                f"allocates {self.needed} of {self.available} available")


@dataclass(slots=True, kw_only=True)
class Wait(Event):
    """The head of the queue does not fit: it needs `needed` pages, `available` are."""

    kind: ClassVar[str] = "wait"

    task: str = own(TASK)
    needed: int = own(COUNT)
    available: int = own(COUNT)

    def summary(self) -> str:
        return f"{self.task} waits: needs {self.needed} pages, {self.available} available"


@dataclass(slots=True, kw_only=True)
class Grow(Event):
    """A decode step needs a page for its task: n_tokens with the new position, pages held."""

    kind: ClassVar[str] = "grow"
    folds: ClassVar[str | None] = NEXT

    task: str = own(TASK)
    n_tokens: int = own(COUNT)
    pages_needed: int = own(COUNT)
    held: int = own(COUNT)
    capacity: int = own(COUNT)

    def summary(self) -> str:
        return (f"{self.task}: {self.n_tokens} tokens need {self.pages_needed} pages, "
                f"holds {self.held}")


def _taken_problem(ev: Alloc | Share, state: Mapping, cached: set[int]) -> str | None:
    """An alloc or share: the page is held, in column `logical` of its task's table."""
    page, refs = ev.page, state["refs"]
    if not refs[page] or page in cached:
        return f"{ev.kind} of page {page}, but its own state shows the page not held"
    if ev.task is not None:
        table = state["page_tables"].get(ev.task, [])
        logical = ev.logical
        if logical is None or logical >= len(table) or table[logical] != page:
            return (f"{ev.kind} of page {page} to {ev.task}[{logical}], but its own state "
                    f"shows {ev.task}'s table as {table}")
    return None


@dataclass(slots=True, kw_only=True)
class Alloc(Event):
    """A page is taken for `task`'s table, column `logical`."""

    kind: ClassVar[str] = "alloc"
    moves_pages: ClassVar[bool] = True

    page: int = own(PAGE)
    task: str | None = own(HOLDER)
    logical: int | None = own(LOGICAL)

    def summary(self) -> str:
        return f"page {self.page} -> {self.task}[{self.logical}]"

    def disagreement(self, state: Mapping, cached: set[int]) -> str | None:
        return _taken_problem(self, state, cached)


@dataclass(slots=True, kw_only=True)
class Share(Event):
    """A prefix hit: `task` takes a reference to a recorded page (revived: out of the cache)."""

    kind: ClassVar[str] = "share"
    moves_pages: ClassVar[bool] = True

    page: int = own(PAGE)
    task: str | None = own(HOLDER)
    logical: int | None = own(LOGICAL)
    revived: bool = own(FLAG)

    def summary(self) -> str:
        how = "revived from cache" if self.revived else "shared"
        return f"page {self.page} -> {self.task}[{self.logical}] ({how})"

    def disagreement(self, state: Mapping, cached: set[int]) -> str | None:
        return _taken_problem(self, state, cached)


@dataclass(slots=True, kw_only=True)
class Write(Event):
    """A forward writes K/V through `page_table` (the padded [B, max_pages] table)."""

    kind: ClassVar[str] = "write"
    plain: ClassVar[bool] = True

    rows: list[dict] = own(WRITE_ROWS)
    page_table: list[list[int]] = own(PAGE_TABLE)

    def summary(self) -> str:
        parts = []
        for row in self.rows:
            runs = " ".join(f"p{p}[{s}:{s + n}]" for p, s, n in row["runs"])
            parts.append(f"{row['task']} pos {row['start']}..{row['start'] + row['n'] - 1} {runs}")
        return "; ".join(parts)


@dataclass(slots=True, kw_only=True)
class Gather(Event):
    """A forward reads whole pages back, cut to total_len; shape: of the gathered K (and V)."""

    kind: ClassVar[str] = "gather"
    plain: ClassVar[bool] = True

    rows: list[dict] = own(GATHER_ROWS)
    total_len: int = own(COUNT)
    shape: list[int] = own(SHAPE)

    def summary(self) -> str:
        return f"len {self.total_len}: " + "; ".join(
            f"{row['task']} pages {row['pages']}" for row in self.rows
        )


@dataclass(slots=True, kw_only=True)
class Record(Event):
    """Full prompt pages are recorded in the prefix cache; keys: each page's prefix key."""

    kind: ClassVar[str] = "record"

    task: str | None = own(HOLDER)
    pages: list[int] = own(PAGES)
    keys: list[int | None] = own(KEYS)

    def summary(self) -> str:
        return f"{self.task}: prefix pages {self.pages}"


@dataclass(slots=True, kw_only=True)
class Tokens(Event):
    """A forward's new tokens; text: {task: the new piece of decoded output}, and pieces:
    {task: the new token's visible piece}, for text requests only."""

    kind: ClassVar[str] = "tokens"
    folds: ClassVar[str | None] = PREVIOUS
    plain: ClassVar[bool] = True

    tokens: dict[str, int] = own(TOKEN_IDS)
    text: dict[str, str] = own(TEXTS)
    pieces: dict[str, str] | None = own(PIECE_MAP, optional=True)

    def mismatch(self) -> str | None:
        extra = sorted(set(self.pieces or ()) - set(self.tokens))
        if extra:  # one piece per new token: a piece without a token is made up
            return f"pieces names {extra[0]!r}, which made no token in this event"
        return None

    def summary(self) -> str:
        text = self.text
        return " ".join(f"{name}:{tok}" + (f" {text[name]!r}" if name in text else "")
                        for name, tok in self.tokens.items())


@dataclass(slots=True, kw_only=True)
class Free(Event):
    """`task` drops its reference to a page, leaving `refs` holders."""

    kind: ClassVar[str] = "free"
    moves_pages: ClassVar[bool] = True

    page: int = own(PAGE)
    task: str | None = own(HOLDER)
    refs: int = own(COUNT)

    def summary(self) -> str:
        return f"page {self.page} of {self.task}: refs -> {self.refs}"

    def disagreement(self, state: Mapping, cached: set[int]) -> str | None:
        left = state["refs"][self.page]
        if left != self.refs:
            return f"free of page {self.page} leaves refs {self.refs}, but its state shows {left}"
        return None


@dataclass(slots=True, kw_only=True)
class Cache(Event):
    """A page nobody holds is kept: it holds a recorded prefix (evictable, LRU)."""

    kind: ClassVar[str] = "cache"
    moves_pages: ClassVar[bool] = True

    page: int = own(PAGE)

    def summary(self) -> str:
        return f"page {self.page}"

    def disagreement(self, state: Mapping, cached: set[int]) -> str | None:
        if self.page not in cached:
            return f"cache of page {self.page}, but its state does not list it as cached"
        return None


@dataclass(slots=True, kw_only=True)
class Evict(Event):
    """The least recently used cached page is given up (to be taken again)."""

    kind: ClassVar[str] = "evict"
    moves_pages: ClassVar[bool] = True

    page: int = own(PAGE)

    def summary(self) -> str:
        return f"page {self.page}"

    def disagreement(self, state: Mapping, cached: set[int]) -> str | None:
        if self.page in cached:
            return f"evict of page {self.page}, but its state still lists it as cached"
        return None


@dataclass(slots=True, kw_only=True)
class Preempt(Event):
    """The pool ran dry: `task` is preempted. needed_by: whose next position (`position`)
    found no page; running: who keeps their pages; generated and n_tokens (prompt +
    generated): what the victim keeps to recompute."""

    kind: ClassVar[str] = "preempt"
    moves_pages: ClassVar[bool] = True

    task: str = own(TASK)
    needed_by: str | None = own(NAME_OR_NULL)
    position: int = own(COUNT)
    running: list[str] = own(NAMES)
    generated: int = own(COUNT)
    n_tokens: int = own(COUNT)

    def summary(self) -> str:
        return self.task


@dataclass(slots=True, kw_only=True)
class Finish(Event):
    """A request has its last token (its pages go back at the next cleanup)."""

    kind: ClassVar[str] = "finish"

    task: str = own(TASK)
    n_output: int = own(COUNT)

    def summary(self) -> str:
        return f"{self.task}: {self.n_output} tokens generated"


@dataclass(slots=True, kw_only=True)
class Retire(Event):
    """A finished request leaves; n_free: free pages once its pages are back."""

    kind: ClassVar[str] = "retire"
    moves_pages: ClassVar[bool] = True

    task: str = own(TASK)
    n_free: int = own(COUNT)

    def summary(self) -> str:
        return self.task

    def disagreement(self, state: Mapping, cached: set[int]) -> str | None:
        free = bin(state["free_mask"]).count("1")
        if self.n_free != free:
            return f"retire says {self.n_free} pages are free, its state {free}"
        return None


@dataclass(slots=True, kw_only=True)
class Fork(Event):
    """Parallel sampling: sample `sample` of a group (`task`) is about to share every page of
    its parent's (sample 0's) table, `pages`, holding n_tokens tokens of K/V."""

    kind: ClassVar[str] = "fork"
    folds: ClassVar[str | None] = NEXT  # into its first share, until a scene gives it a beat

    task: str = own(TASK)
    parent: str = own(TASK)
    sample: int = own(COUNT)
    pages: list[int] = own(PAGES)
    n_tokens: int = own(COUNT)

    def summary(self) -> str:
        return (f"{self.task} (sample {self.sample}) forks from {self.parent}: shares pages "
                f"{self.pages} ({self.n_tokens} tokens)")


@dataclass(slots=True, kw_only=True)
class Copy(Event):
    """Copy-on-write: before writing into shared page `source`, the task dropped its reference
    (a free, leaving `refs` holders), took page `page` in column `logical` of its table (an
    alloc), and copied the filled slots 0..slots-1 (K and V, every layer) into it."""

    kind: ClassVar[str] = "copy"
    folds: ClassVar[str | None] = PREVIOUS
    moves_pages: ClassVar[bool] = True

    task: str | None = own(HOLDER)
    sample: int = own(COUNT)
    source: int = own(PAGE)
    page: int = own(PAGE)
    slots: int = own(SLOTS)
    logical: int | None = own(LOGICAL)
    refs: int = own(COUNT)

    def summary(self) -> str:
        return (f"{self.task} (sample {self.sample}): slots 0..{self.slots - 1} of page "
                f"{self.source} (still held by {self.refs}) copied to page {self.page} "
                f"-> {self.task}[{self.logical}]")


# ---- the registry ----------------------------------------------------------------------------

_BASE = {f.name for f in fields(Event)}


def _register(*classes: type[Event]) -> dict[str, type[Event]]:
    registry: dict[str, type[Event]] = {}
    for cls in classes:
        if not cls.kind or cls.kind in registry:
            raise ValueError(f"{cls.__name__}: kind {cls.kind!r} is empty or taken")
        cls.own_fields = tuple((f.name, f.metadata["check"], f.metadata["optional"])
                               for f in fields(cls) if f.name not in _BASE)
        registry[cls.kind] = cls
    return registry


# kind (as the file names it) -> its class, in the order the kinds are listed in messages
EVENTS: dict[str, type[Event]] = _register(
    Phase, Arrive, Admit, Wait, Grow, Alloc, Share, Write, Gather, Record, Tokens, Free, Cache,
    Evict, Preempt, Finish, Retire, Fork, Copy,
)


# ---- JSON Schema -----------------------------------------------------------------------------

_STATE_SCHEMA = {
    "type": "object",
    "properties": {
        "free_mask": COUNT_SCHEMA,
        "refs": {"type": "array", "items": COUNT_SCHEMA},
        "cached": {"type": "array", "items": COUNT_SCHEMA},
        "page_tables": {"type": "object", "additionalProperties": {"type": "array",
                                                                   "items": COUNT_SCHEMA}},
        "lengths": {"type": "object", "additionalProperties": COUNT_SCHEMA},
        "filled": {"type": "array", "items": COUNT_SCHEMA},
        "status": {"type": "object", "additionalProperties": {"type": "string"}},
        "queue": NAMES_SCHEMA,
        "outputs": {"type": "object", "additionalProperties": COUNT_SCHEMA},
        "output_text": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_STATE_SCHEMA["required"] = list(_STATE_SCHEMA["properties"])
_FRAME_SCHEMA = {
    "type": "object",
    "properties": {"file": {"enum": sorted(engine_source.ENGINE_FILES)},
                   "fn": {"type": "string"}, "line": {"type": "integer", "minimum": 1},
                   "ran": {"type": "array", "items": {"type": "integer", "minimum": 1}}},
    "required": ["file", "fn", "line"],
}


def event_schema(cls: type[Event]) -> dict:
    """One kind's JSON object: its kind, step, phase, own fields, state and code."""
    frames = {"type": "array", "items": {"$ref": "#/$defs/frame"}}
    properties = {"kind": {"const": cls.kind}, "step": COUNT_SCHEMA, "phase": {"type": "string"}}
    properties.update((name, check.schema) for name, check, _ in cls.own_fields)
    properties.update(state={"$ref": "#/$defs/state"}, code=frames, returned=frames)
    required = ["kind", "step", "phase", *(n for n, _, optional in cls.own_fields
                                          if not optional), "state"]
    return {"title": cls.__name__, "type": "object", "properties": properties,
            "required": required, "additionalProperties": False}


def json_schema() -> dict:
    """The trace file's JSON Schema, derived from the event classes (the bounds a trace's own
    geometry sets, such as page ids below n_pages, are the loader's to check)."""
    from astrai.trace.format import VERSION  # format imports this module

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "astrai trace",
        "type": "object",
        "properties": {
            "version": {"const": VERSION},
            "workload": {"type": "object"},
            "geometry": {"type": "object", "properties": {
                k: {"type": "integer", "minimum": 1}
                for k in ("n_layers", "n_pages", "page_size", "n_kv_heads", "head_dim")}},
            "outputs": {"type": "object",
                        "additionalProperties": {"type": "array", "items": COUNT_SCHEMA}},
            "source": {"type": "object", "additionalProperties": {"type": "string"}},
            "events": {"type": "array",
                       "items": {"oneOf": [event_schema(c) for c in EVENTS.values()]}},
            "captures": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["version", "workload", "geometry", "outputs", "events"],
        "$defs": {"state": _STATE_SCHEMA, "frame": _FRAME_SCHEMA},
    }
