"""Typed events: one class per kind (fields, checks, file format, replay grouping, text line),
the JSON Schema derived from them, and registries that name kinds by string checked at import."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from astrai.inference.phases import StepPhase
from astrai.trace import EVENTS, Trace, record
from astrai.trace.events import (
    Alloc,
    Arrive,
    Copy,
    Event,
    Fork,
    Phase,
    Share,
    json_schema,
)
from astrai.trace.recorder import Recorder
from astrai.workload import build, parse_workload

# Prefix sharing, caching and eviction on five pages, and a request of two samples (fork, copy).
TOY = {
    "name": "toy",
    "cache": {"n_pages": 5, "page_size": 4},
    "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "head_dim": 8,
              "d_ff": 16},
    "scheduler": {"temperature": 1.0},
    "prefixes": {"sys": 4},
    "request": [
        {"name": "a", "prefix": "sys", "prompt_len": 6, "max_new_tokens": 4},
        {"name": "b", "prefix": "sys", "prompt_len": 7, "max_new_tokens": 6, "arrival": 1},
        {"name": "s", "prompt_len": 6, "max_new_tokens": 3, "n": 2, "arrival": 6},
    ],
}


@pytest.fixture(scope="module")
def trace() -> Trace:
    return record(parse_workload(TOY))


@pytest.fixture(scope="module")
def data(trace) -> dict:
    return json.loads(json.dumps(trace.to_json()))


# ---- a tiny checker for the part of JSON Schema the trace schema uses --------------------------

TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(value, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, TYPES[name])


def problems(value, schema: dict, root: dict, at: str = "$") -> list[str]:
    """Where `value` breaks `schema` (type, const, enum, minimum, minLength, maxLength,
    properties, required, additionalProperties, items, oneOf, $ref to #/$defs/...)."""
    if "$ref" in schema:
        return problems(value, root["$defs"][schema["$ref"].rsplit("/", 1)[1]], root, at)
    known = {"$schema", "$defs", "$ref", "title", "type", "const", "enum", "minimum",
             "minLength", "maxLength", "properties", "required", "additionalProperties",
             "items", "oneOf"}
    assert set(schema) <= known, f"the checker does not know {set(schema) - known}"
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, t) for t in types):
            return [f"{at}: {value!r:.40} is not {schema['type']}"]
    if "const" in schema and value != schema["const"]:
        return [f"{at}: {value!r:.40} is not {schema['const']!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at}: {value!r:.40} is not one of {schema['enum']}"]
    if "minimum" in schema and _is(value, "integer") and value < schema["minimum"]:
        return [f"{at}: {value} < {schema['minimum']}"]
    if isinstance(value, str) and not (schema.get("minLength", 0) <= len(value)
                                       <= schema.get("maxLength", len(value))):
        return [f"{at}: length {len(value)} out of bounds"]
    out: list[str] = []
    if "oneOf" in schema:
        fits = [s for s in schema["oneOf"] if not problems(value, s, root, at)]
        if len(fits) != 1:
            return [f"{at}: matches {len(fits)} of oneOf"]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out += [f"{at}: missing {k}" for k in schema.get("required", []) if k not in value]
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                out += problems(v, props[k], root, f"{at}.{k}")
            elif extra is False:
                out.append(f"{at}: unexpected {k}")
            elif isinstance(extra, dict):
                out += problems(v, extra, root, f"{at}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            out += problems(v, schema["items"], root, f"{at}[{i}]")
    return out


# ---- the schema -------------------------------------------------------------------------------


def test_the_schema_accepts_a_recorded_trace(data):
    kinds = {ev["kind"] for ev in data["events"]}
    assert {"fork", "copy", "share", "cache", "record"} <= kinds  # the toy exercises them
    assert any("samples" in ev for ev in data["events"])  # and the optional field
    schema = json_schema()
    assert problems(data, schema, schema) == []


@pytest.mark.parametrize("change, words", [
    (lambda ev: ev.update(pgae=ev.pop("page")), "unexpected pgae"),
    (lambda ev: ev.pop("logical"), "missing logical"),
    (lambda ev: ev.update(kind="alocc"), "is not 'alloc'"),
    (lambda ev: ev.update(page="3"), "'3' is not integer"),
])
def test_the_schema_refuses_what_the_classes_do_not_declare(data, change, words):
    schema = json_schema()
    bad = json.loads(json.dumps(data))
    alloc = next(ev for ev in bad["events"] if ev["kind"] == "alloc")
    change(alloc)
    assert problems(bad, schema, schema)  # no kind's schema takes it
    one = schema["properties"]["events"]["items"]["oneOf"][list(EVENTS).index("alloc")]
    assert any(words in p for p in problems(alloc, one, schema)), problems(alloc, one, schema)


def test_the_schema_is_derived_from_the_classes():
    schema = json_schema()
    ones = schema["properties"]["events"]["items"]["oneOf"]
    assert [s["properties"]["kind"]["const"] for s in ones] == list(EVENTS)
    for cls, one in zip(EVENTS.values(), ones):
        own = [name for name, _, _ in cls.own_fields]
        assert list(one["properties"]) == ["kind", "step", "phase", *own,
                                           "state", "code", "returned"]
        optional = {name for name, _, opt in cls.own_fields if opt}
        assert set(one["required"]) == {"kind", "step", "phase", "state", *own} - optional
    assert "samples" not in ones[list(EVENTS).index("arrive")]["required"]


def test_the_cli_prints_the_schema():
    out = subprocess.run([sys.executable, "-m", "astrai.trace", "schema"], capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout) == json_schema()


# ---- the classes ------------------------------------------------------------------------------


def test_one_class_per_kind_with_its_fields_checked():
    names = ["Phase", "Arrive", "Admit", "Wait", "Grow", "Alloc", "Share", "Write", "Gather",
             "Record", "Tokens", "Free", "Cache", "Evict", "Preempt", "Finish", "Retire", "Fork",
             "Copy"]
    assert [cls.__name__ for cls in EVENTS.values()] == names
    for kind, cls in EVENTS.items():
        assert cls.kind == kind and issubclass(cls, Event)
        assert cls.folds in (None, "next", "previous")
        for name, check, _ in cls.own_fields:
            assert callable(check.problem) and check.schema, (kind, name)


def test_events_hold_slots_not_dicts(trace):
    # tens of thousands of events a trace: no per-instance __dict__
    assert all(not hasattr(ev, "__dict__") for ev in trace.events)
    with pytest.raises(AttributeError):
        trace.events[0].pgae = 3


def test_each_event_writes_back_the_json_it_was_read_from(trace, data):
    back = Trace.from_json(data)
    assert all(type(a) is type(b) for a, b in zip(back.events, trace.events))
    assert [ev.to_json() for ev in back.events] == data["events"]
    for ev in data["events"]:  # the key order the recorder writes
        cls = EVENTS[ev["kind"]]
        own = [n for n, _, opt in cls.own_fields if n in ev]
        assert list(ev) == ["kind", "step", "phase", *own, "state", "code", "returned"]
    arrive = next(ev for ev in back.events if isinstance(ev, Arrive) and ev.samples)
    plain = next(ev for ev in back.events if isinstance(ev, Arrive) and not ev.samples)
    assert arrive.samples == ["s", "s.1"] and "samples" not in plain.to_json()


def test_the_text_trace_is_each_kind_s_own_summary(trace):
    fork = next(ev for ev in trace.events if isinstance(ev, Fork))
    copy_ = next(ev for ev in trace.events if isinstance(ev, Copy))
    assert fork.summary().startswith(f"{fork.task} (sample 1) forks from {fork.parent}")
    assert f"copied to page {copy_.page}" in copy_.summary()
    assert Phase(step=0, phase="init", state={}).summary() == ""


def test_the_recorder_emits_by_class_only():
    wl = parse_workload(TOY)
    cache, _, scheduler = build(wl)
    rec = Recorder(cache, scheduler, lines=False)
    rec._emit(Phase)
    rec._emit(Alloc, page=0, task=None, logical=None)
    a, c = rec.events
    assert type(a) is Phase and a.phase == StepPhase.INIT == "init"
    assert isinstance(c, Alloc) and c.state == a.state and c.code == c.returned == []
    with pytest.raises(TypeError):  # a kind's name is no class: nothing to construct
        rec._emit("phase")
    assert len(rec.events) == 2


# ---- kinds named by string fail at import ------------------------------------------------------


def test_a_misspelled_kind_in_a_beat_registry_fails_at_registration():
    pytest.importorskip("manim")  # the scenes.framework.replay package builds on it
    from scenes.framework.replay.plan import FAMILY, OWN_KINDS, beat_kind


    assert beat_kind(Share) == "share" and beat_kind("share") == "share"
    assert all(beat_kind(k) == k for k in OWN_KINDS)
    with pytest.raises(ValueError, match="'shaer' is neither an event kind"):
        beat_kind("shaer", "a registry")
    assert set(FAMILY) <= set(EVENTS) | set(OWN_KINDS)


def test_a_misspelled_beat_kind_fails_when_its_module_is_imported(tmp_path, monkeypatch):
    pytest.importorskip("manim")
    import importlib

    from scenes.framework.replay.beats import KINDS

    (tmp_path / "misspelled_beats.py").write_text(
        "from scenes.framework.replay.beats import kind\n\n\n"
        "@kind('alocc', (1.0, 1.0, 1.0))\n"
        "def alocc(r, spec):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="'alocc' is neither an event kind"):
        importlib.import_module("misspelled_beats")
    assert "alocc" not in KINDS


def test_kind_and_grouping_are_class_attributes_not_fields():
    # kind and the grouping rules are class attributes, never fields a file could set
    assert {"kind", "folds", "plain", "moves_pages", "own_fields"}.isdisjoint(
        f.name for f in dataclasses.fields(Event))
