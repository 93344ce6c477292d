"""The trace file: JSON with a version, the workload, the cache geometry and the events.

    {"version": 1, "workload": {...}, "geometry": {...}, "outputs": {"A": [..]},
     "source": {"astrai/inference/cache.py": "<sha256>", ...},
     "events": [{"kind": "alloc", "step": 0, "phase": "refill", "page": 0, "task": "A",
                 "logical": 0, "state": {"free_mask": 254, "refs": [1, 0, ...], "cached": [],
                 "page_tables": {"A": [0]}, "lengths": {"A": 0}, "filled": [0, ...],
                 "status": {"A": "running"}, "queue": [], "outputs": {"A": 0}},
                 "code": [{"file": ..., "fn": ..., "line": ..., "ran": [...]}],
                 "returned": [...same shape...]}, ...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrai.errors import TraceFormatError

VERSION = 1

# kind -> the fields an event of that kind carries besides kind/step/phase/state/code
EVENT_KINDS: dict[str, tuple[str, ...]] = {
    "phase": (),
    "arrive": ("task", "prompt_len", "max_new_tokens"),
    # pages_needed = pages_for(n_tokens); needed (to allocate) and available: what _fit compared;
    # prompt_len + generated = n_tokens (generated > 0 on readmission after a preemption); keys:
    # the chained prefix key of each full page of those tokens ([] with the prefix cache off)
    "admit": ("task", "n_tokens", "hits", "pages_needed", "needed", "available", "prompt_len",
              "generated", "keys"),
    "wait": ("task", "needed", "available"),
    # a decode step needs a page for its task: n_tokens with the new position, pages held now
    "grow": ("task", "n_tokens", "pages_needed", "held", "capacity"),
    "alloc": ("page", "task", "logical"),
    "share": ("page", "task", "logical", "revived"),
    "write": ("rows", "page_table"),  # page_table: the padded [B, max_pages] table written through
    "gather": ("rows", "total_len", "shape"),  # shape: of the gathered K (and V)
    "record": ("task", "pages", "keys"),  # keys: each newly recorded page's prefix key
    "tokens": ("tokens",),
    "free": ("page", "task", "refs"),
    "cache": ("page",),
    "evict": ("page",),
    # needed_by: whose next position (`position`) found the pool dry; running: who keeps their
    # pages; generated and n_tokens (prompt + generated): what the victim keeps to recompute
    "preempt": ("task", "needed_by", "position", "running", "generated", "n_tokens"),
    "finish": ("task", "n_output"),
    "retire": ("task", "n_free"),  # n_free: free pages once its pages are back
}

_STATE = {
    "free_mask": int,
    "refs": list,
    "cached": list,
    "page_tables": dict,
    "lengths": dict,
    "filled": list,
    "status": dict,
    "queue": list,
    "outputs": dict,
}
_GEOMETRY = ("n_layers", "n_pages", "page_size", "n_kv_heads", "head_dim")


@dataclass
class Trace:
    version: int
    workload: dict[str, Any]
    geometry: dict[str, Any]
    events: list[dict[str, Any]]
    outputs: dict[str, list[int]]
    # sha256 of each engine file at recording time: code lines in events refer to that source
    source: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "workload": self.workload,
            "geometry": self.geometry,
            "outputs": self.outputs,
            "source": self.source,
            "events": self.events,
        }

    @classmethod
    def from_json(cls, data: Any, source: str = "trace") -> Trace:
        validate(data, source)
        return cls(data["version"], data["workload"], data["geometry"], data["events"],
                   data["outputs"], data.get("source", {}))


def save_trace(trace: Trace, path: str | Path) -> None:
    Path(path).write_text(json.dumps(trace.to_json(), separators=(",", ":")))


def load_trace(path: str | Path) -> Trace:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise TraceFormatError(f"{path}: not JSON: {e}") from None
    return Trace.from_json(data, str(path))


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def validate(data: Any, source: str = "trace") -> None:
    """Raise TraceFormatError naming the first thing wrong with a loaded trace."""

    def fail(what: str) -> TraceFormatError:
        return TraceFormatError(f"{source}: {what}")

    if not isinstance(data, dict):
        raise fail("top level must be an object")
    if "version" not in data:
        raise fail("missing version")
    if data["version"] != VERSION:
        raise fail(f"unknown trace version {data['version']!r} (this build reads {VERSION})")
    for key, kind in (("workload", dict), ("geometry", dict), ("events", list),
                      ("outputs", dict)):
        if not isinstance(data.get(key), kind):
            raise fail(f"{key} must be of type {kind.__name__}")
    if not isinstance(data.get("source", {}), dict):
        raise fail("source must be of type dict")
    geo = data["geometry"]
    for key in _GEOMETRY:
        if not _int(geo.get(key)) or geo[key] <= 0:
            raise fail(f"geometry.{key} must be a positive int")
    n_pages = geo["n_pages"]
    for i, ev in enumerate(data["events"]):
        where = f"events[{i}]"
        if not isinstance(ev, dict):
            raise fail(f"{where} must be an object")
        kind = ev.get("kind")
        if kind not in EVENT_KINDS:
            raise fail(f"{where}.kind {kind!r} is not one of {', '.join(EVENT_KINDS)}")
        if not _int(ev.get("step")) or not isinstance(ev.get("phase"), str):
            raise fail(f"{where} needs an int step and a str phase")
        for key in EVENT_KINDS[kind]:
            if key not in ev:
                raise fail(f"{where} ({kind}) is missing {key}")
        state = ev.get("state")
        if not isinstance(state, dict):
            raise fail(f"{where}.state must be an object")
        for key, kind_ in _STATE.items():
            if not isinstance(state.get(key), kind_) or isinstance(state.get(key), bool):
                raise fail(f"{where}.state.{key} must be a {kind_.__name__}")
        if len(state["refs"]) != n_pages or not all(_int(r) and r >= 0 for r in state["refs"]):
            raise fail(f"{where}.state.refs must be {n_pages} non-negative ints")
        if len(state["filled"]) != n_pages or not all(_int(f) for f in state["filled"]):
            raise fail(f"{where}.state.filled must be {n_pages} ints")
        if state["free_mask"] < 0 or state["free_mask"] >> n_pages:
            raise fail(f"{where}.state.free_mask has bits outside 0..{n_pages - 1}")
        pages = list(state["cached"])
        for name, table in state["page_tables"].items():
            if not isinstance(table, list):
                raise fail(f"{where}.state.page_tables.{name} must be a list")
            pages += table
        if not all(_int(p) and 0 <= p < n_pages for p in pages):
            raise fail(f"{where}.state has a page id outside 0..{n_pages - 1}")
        for key in ("code", "returned"):
            if not isinstance(ev.get(key, []), list):
                raise fail(f"{where}.{key} must be a list")
