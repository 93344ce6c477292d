"""The trace file: JSON with a version, the workload, the cache geometry and the events.

Events are typed (astrai.trace.events: one dataclass per kind, with each field's check); this
module loads, checks and writes the file they live in.

    {"version": 1, "workload": {...}, "geometry": {...}, "outputs": {"A": [..]},
     "source": {"astrai/inference/cache.py": "<sha256>", ...},
     "captures": [{"kind": "slots", "step": 0, "phase": "prefill", ...}, ...],  # optional
     "events": [{"kind": "alloc", "step": 0, "phase": "refill", "page": 0, "task": "A",
                 "logical": 0, "state": {"free_mask": 254, "refs": [1, 0, ...], "cached": [],
                 "page_tables": {"A": [0]}, "lengths": {"A": 0}, "filled": [0, ...],
                 "status": {"A": "running"}, "queue": [], "outputs": {"A": 0},
                 "output_text": {}},
                 "code": [{"file": ..., "fn": ..., "line": ..., "ran": [...]}],
                 "returned": [...same shape...]}, ...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrai.errors import OutputError, TraceFormatError
from astrai.files import read_text, write_text
from astrai.trace import source as engine_source
from astrai.trace.capture import CAPTURE_KINDS
from astrai.trace.checks import count_ok as _count
from astrai.trace.checks import int_ok as _int
from astrai.trace.checks import name_ok as _name
from astrai.trace.events import EVENTS, Event, Tokens, Write

VERSION = 1

# Size limits, checked before anything is built from a trace. A trace holds n_pages refs per
# event, so the first bounds what loading costs. (What a scene can draw is the scenes' limit.)
MAX_TRACE_PAGES = 1 << 16
MAX_TRACE_STEPS = 100_000  # the most steps a run takes (astrai.workload.MAX_STEPS)
# Checked on the text, before it is parsed: parsed JSON takes 8 to 30 times its text in memory
# (an object about 200 bytes), so the file's size alone would not bound it. Every JSON value but
# the first follows a comma or opens a container, so `,` + `[` + `{` + 1 counts at most the
# values the text holds, and `{` at most its objects. The shipped workloads record at most about
# 1 MB, 120,000 values and 10,000 objects; at these caps parsing takes at most about 200 MB.
MAX_TRACE_BYTES = 32 * 1024 * 1024
MAX_TRACE_VALUES = 4_000_000
MAX_TRACE_OBJECTS = 500_000

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
    "output_text": dict,  # {task: decoded output so far}, for text requests only
}
_GEOMETRY = ("n_layers", "n_pages", "page_size", "n_kv_heads", "head_dim")


@dataclass
class Trace:
    version: int
    workload: dict[str, Any]
    geometry: dict[str, Any]
    events: list[Event]
    outputs: dict[str, list[int]]
    # sha256 of each engine file at recording time: code lines in events refer to that source
    source: dict[str, str] = field(default_factory=dict)
    # tensors taken from the real calls when recorded with capture=True (astrai.trace.capture)
    captures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def output_texts(self) -> dict[str, str]:
        """Every text request's output as text (the last state's output_text; {} without
        text requests)."""
        return dict(self.events[-1].state.get("output_text", {})) if self.events else {}

    def to_json(self) -> dict[str, Any]:
        data = {
            "version": self.version,
            "workload": self.workload,
            "geometry": self.geometry,
            "outputs": self.outputs,
            "source": self.source,
            "events": [ev.to_json() for ev in self.events],
        }
        if self.captures:  # only traces recorded with capture=True carry the key
            data["captures"] = self.captures
        return data

    @classmethod
    def from_json(cls, data: Any, source: str = "trace") -> Trace:
        events = _checked(data, source)
        return cls(data["version"], data["workload"], data["geometry"], events,
                   data["outputs"], data.get("source", {}), data.get("captures", []))


def dumps(trace: Trace) -> str:
    return json.dumps(trace.to_json(), separators=(",", ":"))


def save_trace(trace: Trace, path: str | Path) -> None:
    write_text(path, dumps(trace), OutputError)  # whole or not at all, never through a link


def load_trace(path: str | Path) -> Trace:
    return parse_trace(read_text(path, TraceFormatError, MAX_TRACE_BYTES), str(path))


def parse_trace(text: str, path: str = "trace") -> Trace:
    """The checked trace a file's text holds (`path` names it in errors): bounded before it is
    parsed, every object's keys unique, then every field checked (TraceFormatError)."""
    return Trace.from_json(parse_json(text, path), path)


def parse_json(text: str, path: str = "trace") -> Any:
    """The JSON of a trace file's text, not yet checked as a trace: refused before parsing when
    it holds more than a trace may, and refused when an object names a key twice."""
    if len(text) > MAX_TRACE_BYTES:
        raise TraceFormatError(f"{path}: more than the {MAX_TRACE_BYTES} bytes a trace holds")
    values = text.count(",") + text.count("[") + text.count("{") + 1
    if values > MAX_TRACE_VALUES:
        raise TraceFormatError(f"{path}: up to {values} JSON values, more than the "
                               f"{MAX_TRACE_VALUES} a trace holds")
    objects = text.count("{")
    if objects > MAX_TRACE_OBJECTS:
        raise TraceFormatError(f"{path}: up to {objects} JSON objects, more than the "
                               f"{MAX_TRACE_OBJECTS} a trace holds")
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique)
    except json.JSONDecodeError as e:
        raise TraceFormatError(f"{path}: not JSON: {e}") from None
    except TraceFormatError as e:  # a key twice, or NaN: the message names the file
        raise TraceFormatError(f"{path}: {e}") from None
    except RecursionError:
        raise TraceFormatError(f"{path}: nested too deeply to be a trace") from None
    except ValueError as e:  # an integer of thousands of digits
        raise TraceFormatError(f"{path}: not a trace: {e}") from None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: with a key twice, json keeps the last value, so
    the first could say one thing to a reader and the checks would see another."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise TraceFormatError(f"the key {twice[:40]!r} appears twice in one object")
    return obj


def _no_constant(name: str):
    raise TraceFormatError(f"{name} is not a number a trace holds")


def validate(data: Any, source: str = "trace") -> None:
    """Raise TraceFormatError naming the first thing wrong with a loaded trace."""
    _checked(data, source)


def _checked(data: Any, source: str) -> list[Event]:
    """The trace's events, typed, once everything in `data` is checked (TraceFormatError
    names the first thing wrong)."""

    def fail(what: str) -> TraceFormatError:
        # Values quoted from the file may hold newlines or control characters: one line, always.
        what = "".join(c if c.isprintable() else repr(c)[1:-1] for c in what)
        return TraceFormatError(f"{source}: {what}")

    if not isinstance(data, dict):
        raise fail("top level must be an object")
    if "version" not in data:
        raise fail("missing version")
    if not _int(data["version"]) or data["version"] != VERSION:
        raise fail(f"unknown trace version {str(data['version'])[:40]} "
                   f"(this build reads {VERSION})")
    for key, kind in (("workload", dict), ("geometry", dict), ("events", list),
                      ("outputs", dict)):
        if not isinstance(data.get(key), kind):
            raise fail(f"{key} must be of type {kind.__name__}")
    if not isinstance(data.get("source", {}), dict):
        raise fail("source must be of type dict")
    captures = data.get("captures", [])
    if not isinstance(captures, list):
        raise fail("captures must be of type list")
    geo = data["geometry"]
    for key in _GEOMETRY:
        if not _int(geo.get(key)) or geo[key] <= 0:
            raise fail(f"geometry.{key} must be a positive int")
    for key in ("device", "dtype"):  # printed by the text trace and the scenes
        if not _name(geo.get(key)):
            raise fail(f"geometry.{key} must be a printable string")
    if not _name(data["workload"].get("name")):
        raise fail("workload.name must be a printable name (no newline or control character)")
    n_pages = geo["n_pages"]
    if n_pages > MAX_TRACE_PAGES:
        raise fail(f"geometry.n_pages {n_pages} is more than the {MAX_TRACE_PAGES} a trace holds")
    _check_source(data.get("source", {}), data["events"], fail)
    _check_outputs(data["outputs"], fail)
    last_step = 0
    events: list[Event] = []
    for i, ev in enumerate(data["events"]):
        where = f"events[{i}]"
        if not isinstance(ev, dict):
            raise fail(f"{where} must be an object")
        kind = ev.get("kind")
        if not isinstance(kind, str) or kind not in EVENTS:
            raise fail(f"{where}.kind {str(kind)[:40]!r} is not one of {', '.join(EVENTS)}")
        cls = EVENTS[kind]
        if not _int(ev.get("step")) or not isinstance(ev.get("phase"), str):
            raise fail(f"{where} needs an int step and a str phase")
        if not last_step <= ev["step"] <= MAX_TRACE_STEPS:
            raise fail(f"{where}.step {ev['step']} goes back from step {last_step} (steps "
                       f"never go back, and stay within {MAX_TRACE_STEPS})")
        last_step = ev["step"]
        for key, check, optional in cls.own_fields:
            if key not in ev:
                if optional:
                    continue
                raise fail(f"{where} ({kind}) is missing {key}")
            problem = check.problem(ev[key], geo)
            if problem:
                raise fail(f"{where}.{key} {problem}")
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
        problem = _state_problem(state, geo)
        if problem:
            raise fail(f"{where}.state.{problem}")
        typed = cls.from_json(ev)
        problem = typed.mismatch()
        if problem:
            raise fail(f"{where} ({kind}): {problem}")
        problem = _agreement_problem(typed, state, n_pages)
        if problem:
            raise fail(f"{where}: {problem}")
        for key in ("code", "returned"):
            frames = ev.get(key, [])
            if not isinstance(frames, list):
                raise fail(f"{where}.{key} must be a list")
            for j, frame in enumerate(frames):
                problem = engine_source.frame_problem(frame)
                if problem:
                    raise fail(f"{where}.{key}[{j}] {problem}")
        events.append(typed)
    if events:
        _check_tokens(events, data["outputs"], fail)
    _check_captures(captures, events, geo, fail)
    return events


def _state_problem(state: dict, geo: dict) -> str | None:
    ps = geo["page_size"]
    if not all(0 <= f <= ps for f in state["filled"]):
        return f"filled must count 0..{ps} slots a page"
    tables, lengths = state["page_tables"], state["lengths"]
    if not all(_name(n) for n in tables) or set(lengths) != set(tables):
        return "lengths must name exactly the tasks of page_tables"
    if not all(_count(n) for n in lengths.values()):
        return "lengths must be non-negative ints"
    if not all(_name(n) and isinstance(s, str) for n, s in state["status"].items()):
        return "status must map task names to strings"
    if not all(_name(n) for n in state["queue"]):
        return "queue must list task names"
    if not all(_name(n) and _count(k) for n, k in state["outputs"].items()):
        return "outputs must map task names to counts"
    if not all(_name(n) and isinstance(t, str) for n, t in state["output_text"].items()):
        return "output_text must map task names to strings"
    return None


def _agreement_problem(ev: Event, state: dict, n_pages: int) -> str | None:
    """Whether the state's free bits, refs, cached pages and page tables agree with each other
    and with the event they follow (None if they do). A recorder writes each state once the
    change is complete, so every page is exactly one of free, cached or held, and held as often
    as the page tables name it."""
    mask, refs, cached = state["free_mask"], state["refs"], state["cached"]
    held = [0] * n_pages
    for table in state["page_tables"].values():
        for p in table:
            held[p] += 1
    cached_set = set(cached)
    if len(cached_set) != len(cached):
        return "state.cached names a page twice"
    for p in range(n_pages):
        free = mask >> p & 1
        if refs[p] != held[p]:
            return (f"state.refs[{p}] is {refs[p]}, but the page tables hold page {p} "
                    f"{held[p]} time(s)")
        if free and (refs[p] or p in cached_set):
            return f"state.free_mask says page {p} is free, but it is held or cached"
        if not free and not refs[p] and p not in cached_set:
            return f"state.free_mask says page {p} is taken, but nothing holds or caches it"
        if p in cached_set and refs[p]:
            return f"state.cached lists page {p}, which is held (refs {refs[p]})"
    return ev.disagreement(state, cached_set)


def _check_tokens(events: list, outputs: dict, fail) -> None:
    """The outputs are the tokens the events produced, in order, for every request."""
    said: dict[str, list[int]] = {}
    for ev in events:
        if isinstance(ev, Tokens):
            for name, token in ev.tokens.items():
                said.setdefault(name, []).append(token)
    for name in sorted(set(said) | set(outputs)):
        if said.get(name, []) != outputs.get(name, []):
            raise fail(f"outputs[{name!r}] are not the tokens its events produced "
                       f"({len(outputs.get(name, []))} in outputs, {len(said.get(name, []))} "
                       "in tokens events)")


def _ints_in(x: Any, low: int, high: int) -> bool:
    return isinstance(x, list) and all(_int(v) and low <= v <= high for v in x)


def _sizes(x: Any) -> bool:
    return isinstance(x, list) and all(_count(v) for v in x)


def _grid(x: Any, dims: tuple[int, ...], leaf) -> bool:
    """x is nested lists of exactly `dims`, each leaf passing `leaf`."""
    if not dims:
        return leaf(x)
    return isinstance(x, list) and len(x) == dims[0] and all(_grid(y, dims[1:], leaf) for y in x)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _capture_problem(rec: dict, geo: dict, rows: int | None) -> str | None:
    """What is wrong with one capture record (None if fine): every field write_gather reads,
    with the sizes it indexes by, so a bad record fails at load, not inside the scene."""
    n_pages, ps, layers = geo["n_pages"], geo["page_size"], geo["n_layers"]
    kind = rec.get("kind")  # a capture record (checked by _check_captures), not an event
    if kind != "slots" and not (_int(rec.get("layer")) and 0 <= rec["layer"] < layers):
        return f"layer must be an int in 0..{layers - 1}"
    if kind == "slots":
        table, n = rec.get("page_table"), rec.get("n_tokens")
        if not isinstance(table, list) or not table or not all(
                _ints_in(r, -1, n_pages - 1) for r in table):
            return f"page_table must be rows of page ids in -1..{n_pages - 1}"
        b = len(table)
        if not _int(n) or n < 1:
            return "n_tokens must be a positive int"
        if not (_ints_in(rec.get("start_pos"), 0, MAX_TRACE_STEPS * ps)
                and len(rec["start_pos"]) == b):
            return f"start_pos must be {b} non-negative ints"
        lengths = rec.get("lengths", "missing")
        if lengths is not None and not (_ints_in(lengths, 0, n) and len(lengths) == b):
            return f"lengths must be null or {b} ints in 0..{n}"
        if not (_ints_in(rec.get("slots"), 0, (n_pages + 1) * ps - 1)
                and len(rec["slots"]) == b * n):
            return f"slots must be {b} x {n} slot ids in 0..{(n_pages + 1) * ps - 1}"
        if rec.get("null_page") != n_pages:
            return f"null_page must be {n_pages}"
    elif kind == "write":
        for key in ("slots_shape", "k_shape", "rows_shape", "store_shape"):
            if not _sizes(rec.get(key)):
                return f"{key} must be a list of sizes"
        b = rec["k_shape"][0] if rec["k_shape"] else None
    elif kind == "gather":
        index, total = rec.get("index"), rec.get("total_len")
        if not _int(total) or total < 1:
            return "total_len must be a positive int"
        cols = -(-total // ps)
        if not _ints_in(index, 0, n_pages) or not index or len(index) % cols:
            return f"index must be page ids in 0..{n_pages}, {cols} a row"
        b = len(index) // cols
        if rec.get("null_page") != n_pages:
            return f"null_page must be {n_pages}"
        for key in ("pages_shape", "view_shape", "k_shape"):
            if not _sizes(rec.get(key)):
                return f"{key} must be a list of sizes"
    else:  # attention
        heads, kv_heads, t = rec.get("n_heads"), rec.get("n_kv_heads"), rec.get("total_len")
        if not (_int(heads) and _int(kv_heads) and heads > 0 and kv_heads > 0
                and heads % kv_heads == 0):
            return "n_heads and n_kv_heads must be positive ints, n_heads a multiple"
        if not _int(t) or t < 1:
            return "total_len must be a positive int"
        for key in ("q_shape", "k_shape", "out_shape"):
            if not _sizes(rec.get(key)):
                return f"{key} must be a list of sizes"
        scores = rec.get("scores")
        if not isinstance(scores, list) or not scores or not isinstance(scores[0], list) \
                or not scores[0] or not isinstance(scores[0][0], list) or not scores[0][0]:
            return "scores must be [rows][heads][queries][keys] numbers"
        b, s = len(scores), len(scores[0][0])
        dims = (b, heads, s, t)
        for key in ("scores", "weights"):
            if not _grid(rec.get(key), dims, _number):
                return f"{key} must be numbers shaped {list(dims)}"
        if not _grid(rec.get("allowed"), (b, s, t), lambda x: isinstance(x, bool)):
            return f"allowed must be true/false shaped {[b, s, t]}"
        if not _number(rec.get("max_err")):
            return "max_err must be a number"
    if rows is not None and kind != "write" and b != rows:
        return f"has {b} rows; the write event of its step has {rows}"
    return None


def _check_captures(captures: list, events: list, geo: dict, fail) -> None:
    rows = {(ev.step, ev.phase): len(ev.rows) for ev in events if isinstance(ev, Write)}
    for i, rec in enumerate(captures):
        if not isinstance(rec, dict) or rec.get("kind") not in CAPTURE_KINDS:
            raise fail(f"captures[{i}] must be an object with a kind in {', '.join(CAPTURE_KINDS)}")
        if not _int(rec.get("step")) or not isinstance(rec.get("phase"), str):
            raise fail(f"captures[{i}] needs an int step and a str phase")
        problem = _capture_problem(rec, geo, rows.get((rec["step"], rec["phase"])))
        if problem:
            raise fail(f"captures[{i}] ({rec.get('kind')}) {problem}")


def _check_source(source: Any, events: list, fail) -> None:
    """Every engine file whose code the events name needs the digest of the source it was
    recorded from, equal to the shipped file's: line numbers only mean something against it."""
    if not isinstance(source, dict):
        raise fail("source must be of type dict")
    named = set()
    for ev in events:
        if isinstance(ev, dict):
            for key in ("code", "returned"):
                frames = ev.get(key)
                if isinstance(frames, list):
                    named.update(f.get("file") for f in frames
                                 if isinstance(f, dict) and isinstance(f.get("file"), str))
    for file in sorted(f for f in named if f in engine_source.ENGINE_FILES):
        recorded = source.get(file)
        if not isinstance(recorded, str):
            raise fail(f"source has no digest for {file}, whose code the events name")
        if recorded != engine_source.digest(file):
            raise fail(
                f"source[{file!r}]: recorded from another version of {file}; its code lines "
                "would not match (record it again: python -m astrai.trace WORKLOAD -o FILE)"
            )


def _check_outputs(outputs: dict, fail) -> None:
    for name, tokens in outputs.items():
        if not _name(name) or not isinstance(tokens, list) or not all(_count(t) for t in tokens):
            raise fail(f"outputs[{str(name)[:40]!r}] must be a list of token ids")
