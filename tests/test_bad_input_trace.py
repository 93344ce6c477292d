"""Hostile trace files: refused at load with the field named, never imported, read or run."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astrai.errors import TraceFormatError
from astrai.trace import Trace, load_trace, record, save_trace
from astrai.trace import source as engine_source
from astrai.trace.format import MAX_TRACE_PAGES
from astrai.trace.text import format_trace
from astrai.workload import parse_workload
from scenes.framework.limits import MAX_SCENE_PAGES, require_drawable

TOY = {
    "name": "toy",
    "cache": {"n_pages": 5, "page_size": 4},
    "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "head_dim": 8,
              "d_ff": 16},
    "prefixes": {"sys": 4},
    "request": [
        {"name": "a", "prefix": "sys", "prompt_len": 6, "max_new_tokens": 4},
        {"name": "b", "prefix": "sys", "prompt_len": 7, "max_new_tokens": 6, "arrival": 1},
    ],
}


@pytest.fixture(scope="module")
def good() -> dict:
    return json.loads(json.dumps(record(parse_workload(TOY)).to_json()))


def first_frame(data: dict, key: str = "code") -> dict:
    return next(f for ev in data["events"] for f in ev[key])


def refused(data: dict, *words: str) -> str:
    with pytest.raises(TraceFormatError) as info:
        Trace.from_json(data, "t.json")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("t.json: ")
    for w in words:
        assert w in msg
    return msg


# ---- 1. code frames name only engine code ------------------------------------------------------

MODULES = ["this.py", "antigravity.py", "subprocess.py", "pip/__main__.py", "os.py",
           "../../../etc/passwd", "/etc/passwd", "astrai/workload.py",
           "scenes/framework/kit/code.py"]


@pytest.mark.parametrize("file", MODULES)
def test_a_frame_naming_another_file_is_refused(good, file):
    data = copy.deepcopy(good)
    first_frame(data)["file"] = file
    refused(data, ".code[0]", "not an engine file")


@pytest.mark.parametrize("fn", ["os.system", "PagedCache.nope", "__import__", "", "Status",
                                "PagedCache", 7])
def test_a_frame_naming_no_engine_function_is_refused(good, fn):
    data = copy.deepcopy(good)
    first_frame(data, "returned")["fn"] = fn
    refused(data, ".returned[0]", "is not a function defined in")


def test_lines_outside_the_function_are_refused(good):
    frame = first_frame(good)
    first, last = engine_source.functions(frame["file"])[frame["fn"]]
    for change in ({"line": first - 1}, {"line": last + 1}, {"line": True}, {"line": "3"},
                   {"ran": [first, last + 1]}, {"ran": "1"}):
        data = copy.deepcopy(good)
        first_frame(data).update(change)
        refused(data, "outside" if "line" in change or change["ran"] != "1" else "ran")


def test_loading_and_replaying_a_hostile_trace_imports_nothing(good, tmp_path):
    """In a fresh interpreter: load the trace and ask the code panel for the frame's source."""
    data = copy.deepcopy(good)
    first_frame(data).update(file="this.py", fn="main")
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(data))
    script = (
        "import sys\n"
        "from astrai.errors import TraceFormatError\n"
        "from astrai.trace import load_trace\n"
        "from scenes.framework.kit.code import source_of\n"
        f"try:\n    load_trace({str(path)!r})\nexcept TraceFormatError as e:\n    print(e)\n"
        "for f in ('this.py', 'antigravity.py', 'subprocess.py'):\n"
        "    try:\n        source_of(f, 'main')\n    except TraceFormatError:\n        pass\n"
        "print(sorted(m for m in ('this', 'antigravity') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "[]"  # neither module was imported
    assert "not an engine file" in lines[0]
    assert "Zen of Python" not in out.stdout


def test_code_panel_source_is_the_engine_file_text(good):
    frame = first_frame(good)
    lines, start = engine_source.source_of(frame["file"], frame["fn"])
    text = engine_source.ENGINE_FILES[frame["file"]].read_text().split("\n")
    assert lines == text[start - 1 : start - 1 + len(lines)]
    assert lines[0].lstrip().startswith(("def ", "@"))


# ---- 2. digests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [None, {}, {"astrai/inference/cache.py": "0" * 64},
                                    {"astrai/inference/scheduler.py": 3}])
def test_a_trace_without_the_digest_of_its_code_is_refused(good, source):
    data = copy.deepcopy(good)
    if source is None:
        del data["source"]
    else:
        data["source"] = source
    refused(data, "source")


def test_a_trace_without_code_needs_no_digest(good):
    data = copy.deepcopy(good)
    for ev in data["events"]:
        ev["code"], ev["returned"] = [], []
    data["source"] = {}
    Trace.from_json(data)


# ---- 5. sizes -----------------------------------------------------------------------------------


def test_huge_pool_claims_are_refused_before_anything_is_built(good):
    data = copy.deepcopy(good)
    data["geometry"]["n_pages"] = 10**9
    data["events"] = []
    refused(data, "geometry.n_pages")
    data["geometry"]["n_pages"] = MAX_TRACE_PAGES + 1
    refused(data, "geometry.n_pages")


def test_scenes_refuse_more_pages_than_they_can_draw(good):
    from scenes.framework.replay import Replay

    data = copy.deepcopy(good)
    data["geometry"]["n_pages"] = MAX_SCENE_PAGES + 1
    data["events"] = []
    trace = Trace.from_json(data)  # a valid trace: the text CLI can print it
    with pytest.raises(TraceFormatError, match="geometry.n_pages"):
        require_drawable(trace)
    with pytest.raises(TraceFormatError, match="at most"):
        Replay(None, trace)  # refused before the scene is touched


# ---- 6. event fields a scene indexes ------------------------------------------------------------


def _first(data, kind):
    return next(ev for ev in data["events"] if ev["kind"] == kind)


CASES = [
    ("alloc", "page", 99, "page"),
    ("alloc", "page", "0", "page"),
    ("alloc", "page", True, "page"),
    ("alloc", "page", -1, "page"),
    ("alloc", "logical", -2, "logical"),
    ("alloc", "task", "a\nfree=forged", "task"),
    ("arrive", "task", None, "task"),
    ("share", "revived", 1, "revived"),
    ("record", "pages", [0, 99], "pages"),
    ("admit", "hits", ["0"], "hits"),
    ("admit", "n_tokens", -4, "n_tokens"),
    ("free", "refs", 1.5, "refs"),
    ("wait", "available", None, "available"),
    ("gather", "total_len", "9", "total_len"),
    ("tokens", "tokens", {"a": "x"}, "tokens"),
    ("finish", "n_output", [], "n_output"),
]


@pytest.mark.parametrize("kind,key,value,named", CASES)
def test_bad_event_fields_are_refused(good, kind, key, value, named):
    data = copy.deepcopy(good)
    if not any(ev["kind"] == kind for ev in data["events"]):
        pytest.skip(f"no {kind} event in this trace")
    _first(data, kind)[key] = value
    refused(data, f".{named}")


@pytest.mark.parametrize("change", [
    lambda ev: ev["rows"][0]["runs"].append([99, 0, 1]),
    lambda ev: ev["rows"][0]["runs"].append([0, 3, 2]),
    lambda ev: ev["rows"][0].update(start=-1),
    lambda ev: ev["rows"][0].update(task=["a"]),
    lambda ev: ev.update(rows={"a": 1}),
])
def test_bad_write_rows_are_refused(good, change):
    data = copy.deepcopy(good)
    change(_first(data, "write"))
    refused(data, ".rows")


@pytest.mark.parametrize("change", [
    lambda s: s["filled"].__setitem__(0, 99),
    lambda s: s["lengths"].update(ghost=3),
    lambda s: s["queue"].append("x\ny"),
    lambda s: s["outputs"].update(a=-1),
    lambda s: s["status"].update(a=3),
])
def test_bad_state_fields_are_refused(good, change):
    data = copy.deepcopy(good)
    change(next(ev for ev in data["events"] if ev["state"]["page_tables"])["state"])
    refused(data, ".state.")


# ---- 6. the file itself -----------------------------------------------------------------------


def test_unreadable_trace_files_get_one_line(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\x00\x01{}")
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"name": "caf\u00e9"}'.encode("latin-1"))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    nan = tmp_path / "nan.json"
    nan.write_text('{"version": NaN}')
    cases = {tmp_path: "directory", fifo: "not a regular file", binary: "binary",
             latin: "UTF-8", deep: "nested", nan: "NaN", tmp_path / "none.json": "does not exist"}
    for path, words in cases.items():
        with pytest.raises(TraceFormatError, match=words) as info:
            load_trace(path)  # a FIFO would block forever if it were opened for reading
        assert "\n" not in str(info.value)


# ---- the large input space: mutated files -------------------------------------------------------

LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2, 10**12), st.text(max_size=8),
                   st.floats(allow_nan=False), st.lists(st.integers(-2, 99), max_size=3))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):  # the head of each list is enough to reach every shape
            yield from _paths(v, prefix + (i,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_traces_load_whole_or_are_refused(good, data):
    """Any one value replaced: either TraceFormatError, or a trace whose text renders."""
    doc = copy.deepcopy(good)
    paths = [p for p in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = data.draw(LEAVES)
    try:
        trace = Trace.from_json(doc, "m.json")
    except TraceFormatError as e:
        assert "\n" not in str(e)
        return
    lines = list(format_trace(trace))
    # No name can forge a line: one line per event, plus header and outputs.
    assert len(lines) == 2 + len(trace.events) + len(trace.outputs)


def test_save_and_load_round_trip(good, tmp_path):
    trace = Trace.from_json(good)
    save_trace(trace, tmp_path / "t.json")
    assert load_trace(tmp_path / "t.json").to_json() == trace.to_json()


def test_the_engine_files_are_the_ones_the_recorder_traces():
    from astrai.trace.recorder import _WATCHED, source_digests

    assert sorted(_WATCHED.values()) == sorted(engine_source.ENGINE_FILES)
    assert source_digests() == engine_source.digests()
    for file, path in engine_source.ENGINE_FILES.items():
        assert str(path) in _WATCHED and _WATCHED[str(path)] == file


@pytest.mark.parametrize("bad", ["\n", "1\r\nforged line", "\x1b[2J"])
def test_refusals_quoting_a_value_stay_one_line(tmp_path, bad):
    """A value copied into a message (here the version) never adds a line or a control code."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"version": bad}))
    with pytest.raises(TraceFormatError) as e:
        load_trace(path)
    assert str(e.value).isprintable()
    assert "unknown trace version" in str(e.value)


# ---- 7. bounded before parsing, one value per key -------------------------------------------


def _never_parsed(monkeypatch):
    from astrai.trace import format as fmt

    def parse(*a, **k):
        raise AssertionError("parsed a file over the caps")

    monkeypatch.setattr(fmt.json, "loads", parse)


def test_a_file_over_the_byte_cap_is_refused_unread(tmp_path, monkeypatch, capsys):
    from astrai.trace.__main__ import main
    from astrai.trace.format import MAX_TRACE_BYTES

    path = tmp_path / "huge.json"
    with open(path, "wb") as f:  # sparse: costs no disk
        f.truncate(MAX_TRACE_BYTES + 1)
    _never_parsed(monkeypatch)
    with pytest.raises(TraceFormatError, match=f"more than the {MAX_TRACE_BYTES}"):
        load_trace(path)
    assert main(["verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.parametrize("what,text", [
    ("values", lambda n: "[" + "0," * n + "0]"),
    ("objects", lambda n: "[" + "{}," * n + "{}]"),
])
def test_a_file_holding_more_values_than_a_trace_is_refused_before_parsing(
        tmp_path, monkeypatch, what, text):
    from astrai.trace import format as fmt

    cap = {"values": fmt.MAX_TRACE_VALUES, "objects": fmt.MAX_TRACE_OBJECTS}[what]
    path = tmp_path / "many.json"
    path.write_text(text(cap))
    assert path.stat().st_size <= fmt.MAX_TRACE_BYTES  # small enough to pass the byte cap
    _never_parsed(monkeypatch)
    with pytest.raises(TraceFormatError, match=f"JSON {what}, more than the {cap}"):
        load_trace(path)


def test_the_shipped_traces_are_far_inside_the_caps(good):
    from astrai.trace import format as fmt

    text = json.dumps(good)
    assert text.count(",") + text.count("[") + text.count("{") < fmt.MAX_TRACE_VALUES // 100
    assert text.count("{") < fmt.MAX_TRACE_OBJECTS // 100


@pytest.mark.parametrize("where", ["top", "event", "state"])
def test_a_key_twice_in_one_object_is_refused(good, tmp_path, where):
    """json keeps a key's last value: a first one that lies would read as the real run."""
    text = json.dumps(good, separators=(",", ":"))
    lie = {"top": ('{"version":1,', '{"outputs":{"a":[1,2,3]},"version":1,'),
           "event": ('{"kind":"alloc",', '{"kind":"free","kind":"alloc",'),
           "state": ('"state":{"free_mask":', '"state":{"free_mask":0,"free_mask":')}[where]
    assert lie[0] in text
    path = tmp_path / "twice.json"
    path.write_text(text.replace(lie[0], lie[1], 1))
    with pytest.raises(TraceFormatError, match="appears twice in one object") as e:
        load_trace(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
    path.write_text(text)  # the same text without the second key loads
    assert load_trace(path).to_json() == Trace.from_json(good).to_json()
