"""Second round: a trace that lies is refused at load, a trace is data for the comparison runs,
and `python -m astrai.trace verify` says whether a trace is what the engine does today."""

from __future__ import annotations

import copy
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bad_input_trace import TOY, first_frame, refused

from astrai.compare import preemption as preemption_compare
from astrai.compare import prefix as prefix_compare
from astrai.errors import TraceFormatError
from astrai.inference.scheduler import Scheduler
from astrai.trace import Trace, record
from astrai.trace import __main__ as cli
from astrai.trace import source as engine_source
from astrai.workload import parse_workload

# Two requests on five pages: decode grows, pages are shared, freed and cached.
CAPTURED = {**TOY, "name": "captured"}


@pytest.fixture(scope="module")
def good() -> dict:
    return json.loads(json.dumps(record(parse_workload(TOY)).to_json()))


@pytest.fixture(scope="module")
def captured() -> dict:
    return json.loads(json.dumps(record(parse_workload(CAPTURED), capture=True).to_json()))


def holding(data: dict) -> dict:
    """The first event whose state has a page table with a page in it."""
    return next(ev for ev in data["events"] if any(ev["state"]["page_tables"].values()))


# ---- steps -----------------------------------------------------------------------------------

def test_events_in_reverse_order_are_refused(good):
    data = copy.deepcopy(good)
    data["events"].reverse()
    refused(data, "goes back from step")


def test_one_event_stepping_back_is_refused(good):
    data = copy.deepcopy(good)
    late = next(i for i, ev in enumerate(data["events"]) if ev["step"] >= 2)
    data["events"][late]["step"] = 0
    refused(data, f"events[{late}].step 0 goes back")


# ---- states agree with themselves and with their event ---------------------------------------

def test_a_free_bit_on_a_page_refs_and_a_table_hold_is_refused(good):
    data = copy.deepcopy(good)
    ev = holding(data)
    page = next(p for t in ev["state"]["page_tables"].values() for p in t)
    ev["state"]["free_mask"] |= 1 << page
    refused(data, f"free_mask says page {page} is free")


def test_refs_the_tables_do_not_account_for_are_refused(good):
    data = copy.deepcopy(good)
    ev = holding(data)
    page = next(p for t in ev["state"]["page_tables"].values() for p in t)
    ev["state"]["refs"][page] += 1
    refused(data, f"state.refs[{page}]")


def test_a_taken_page_nobody_holds_is_refused(good):
    data = copy.deepcopy(good)
    ev = data["events"][0]
    ev["state"]["free_mask"] &= ~1  # page 0 taken, but refs 0 and not cached
    refused(data, "free_mask says page 0 is taken")


def test_an_alloc_whose_own_state_shows_the_page_free_is_refused(good):
    data = copy.deepcopy(good)
    ev = next(e for e in data["events"] if e["kind"] == "alloc")
    page, st_ = ev["page"], ev["state"]
    st_["free_mask"] |= 1 << page  # a whole, self-consistent state: the page free
    st_["refs"][page] = 0
    for table in st_["page_tables"].values():
        while page in table:
            table.remove(page)
    refused(data, f"alloc of page {page}")


def test_an_alloc_to_a_table_slot_that_holds_another_page_is_refused(good):
    data = copy.deepcopy(good)
    ev = next(e for e in data["events"] if e["kind"] == "alloc" and e["logical"])
    ev["logical"] -= 1
    refused(data, "alloc of page", "table as")


@pytest.mark.parametrize("kind,change,words", [
    ("free", lambda ev: ev.update(refs=ev["refs"] + 1), "leaves refs"),
    ("retire", lambda ev: ev.update(n_free=ev["n_free"] + 1), "pages are free"),
    ("cache", lambda ev: ev["state"].update(cached=[]), "free_mask says page"),
])
def test_events_their_state_contradicts_are_refused(good, kind, change, words):
    data = copy.deepcopy(good)
    if not any(ev["kind"] == kind for ev in data["events"]):
        pytest.skip(f"no {kind} event")
    change(next(ev for ev in data["events"] if ev["kind"] == kind))
    refused(data, words)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(at=st.integers(0, 10**6), page=st.integers(0, 4), delta=st.sampled_from([-2, -1, 1, 2]))
def test_any_refcount_changed_anywhere_is_refused(good, at, page, delta):
    data = copy.deepcopy(good)
    ev = data["events"][at % len(data["events"])]
    refs = ev["state"]["refs"]
    refs[page] = max(refs[page] + delta, 0) if refs[page] + delta >= 0 else refs[page] + 1
    refused(data, "state.")


# ---- outputs are the token events ------------------------------------------------------------

def test_outputs_that_contradict_the_token_events_are_refused(good):
    data = copy.deepcopy(good)
    data["outputs"]["a"][0] = (data["outputs"]["a"][0] + 1) % 256
    refused(data, "outputs['a']", "tokens its events produced")


def test_an_output_with_a_token_more_is_refused(good):
    data = copy.deepcopy(good)
    data["outputs"]["b"].append(7)
    refused(data, "outputs['b']")


# ---- code frames on lines that run -----------------------------------------------------------

def _dead_line(frame: dict) -> int:
    first, last = engine_source.functions(frame["file"])[frame["fn"]]
    live = engine_source.executable(frame["file"])[frame["fn"]]
    return next(n for n in range(first, last + 1) if n not in live)


def test_a_code_frame_moved_onto_a_docstring_line_is_refused(good):
    data = copy.deepcopy(good)
    frame = next(f for ev in data["events"] for f in ev["code"] if f["fn"] == "PagedCache.alloc_n")
    line = _dead_line(frame)
    text = engine_source.ENGINE_FILES[frame["file"]].read_text().split("\n")[line - 1]
    assert '"""' in text or not text.strip() or text.strip().startswith("#")
    frame["line"] = line
    refused(data, f"line {line} of PagedCache.alloc_n holds no code")


def test_a_ran_line_that_holds_no_code_is_refused(good):
    data = copy.deepcopy(good)
    frame = first_frame(data, "returned")
    frame["ran"] = sorted(frame["ran"] + [_dead_line(frame)])
    refused(data, "holds no code")


def test_every_recorded_line_is_one_that_holds_code(good):
    """The other side: what the recorder writes is never refused by the new check."""
    for ev in good["events"]:
        for frame in ev["code"] + ev["returned"]:
            live = engine_source.executable(frame["file"])[frame["fn"]]
            assert frame["line"] in live and set(frame["ran"]) <= live


# ---- names and strings a trace prints --------------------------------------------------------

@pytest.mark.parametrize("where,value", [
    ("workload", "toy\nfree=11111"), ("workload", "\x1b[2Jtoy"), ("workload", 7),
    ("geometry", "float32\nforged"),
])
def test_unprintable_names_a_trace_prints_are_refused(good, where, value):
    data = copy.deepcopy(good)
    data[where]["name" if where == "workload" else "dtype"] = value
    refused(data, f"{where}.")


# ---- capture records -------------------------------------------------------------------------

def _capture(data: dict, kind: str) -> dict:
    return next(c for c in data["captures"] if c["kind"] == kind)


@pytest.mark.parametrize("kind,change,words", [
    ("slots", lambda c: c.pop("lengths"), "lengths"),
    ("slots", lambda c: c.update(start_pos=[-1] * len(c["start_pos"])), "start_pos"),
    ("slots", lambda c: c.update(start_pos=c["start_pos"] + [0]), "start_pos"),
    ("slots", lambda c: c.update(slots="0"), "slots"),
    ("slots", lambda c: c.update(page_table=[[99]]), "page_table"),
    ("slots", lambda c: c.update(null_page=0), "null_page"),
    ("write", lambda c: c.update(layer=-1), "layer"),
    ("write", lambda c: c.pop("k_shape"), "k_shape"),
    ("gather", lambda c: c.update(index=c["index"] + [0]), "index"),
    ("gather", lambda c: c.update(total_len="3"), "total_len"),
    ("attention", lambda c: c.pop("n_heads"), "n_heads"),
    ("attention", lambda c: c.update(n_kv_heads=0), "n_kv_heads"),
    ("attention", lambda c: c["scores"][0].pop(), "scores"),
    ("attention", lambda c: c["weights"][0][0][0].append(0.5), "weights"),
    ("attention", lambda c: c["allowed"][0][0].__setitem__(0, 1), "allowed"),
    ("attention", lambda c: c.update(max_err=None), "max_err"),
    ("attention", lambda c: c.update(scores=[]), "scores"),
])
def test_capture_records_missing_or_mistyped_fields_are_refused(captured, kind, change, words):
    data = copy.deepcopy(captured)
    change(_capture(data, kind))
    refused(data, "captures[", f"({kind})", words)


def test_a_capture_with_more_rows_than_its_write_event_is_refused(captured):
    data = copy.deepcopy(captured)
    rec = _capture(data, "slots")
    rec["page_table"].append(list(rec["page_table"][0]))
    rec["start_pos"].append(0)
    if rec["lengths"] is not None:
        rec["lengths"].append(0)
    rec["slots"] += rec["slots"][: rec["n_tokens"]]
    refused(data, "rows; the write event of its step has")


def test_a_captured_trace_loads_whole(captured):
    assert Trace.from_json(captured).captures


# ---- a trace is data: the comparison runs ----------------------------------------------------

@pytest.fixture(scope="module")
def prefix_trace() -> Trace:
    return record(parse_workload(TOY))


@pytest.mark.parametrize("compare", [prefix_compare.compare, preemption_compare.compare])
def test_a_trace_naming_a_checkpoint_is_never_read_for_a_comparison(prefix_trace, compare,
                                                                    monkeypatch, tmp_path):
    import astrai.checkpoint as ckpt

    def never(*a, **k):
        raise AssertionError("a path named by a trace was read")

    monkeypatch.setattr(ckpt, "read_config", never)
    os.mkfifo(tmp_path / "config.json")  # reading it would block forever
    trace = copy.deepcopy(prefix_trace)
    trace.workload["model"] = {"checkpoint": str(tmp_path)}
    with pytest.raises(TraceFormatError, match="names a checkpoint"):
        compare(trace=trace)


@pytest.mark.parametrize("compare", [prefix_compare.compare, preemption_compare.compare])
def test_a_comparison_runs_no_more_steps_than_the_trace_holds(prefix_trace, compare,
                                                              monkeypatch):
    short = copy.deepcopy(prefix_trace)
    short.events = [ev for ev in short.events if ev.step == 0]  # the trace holds 1 step
    limit = max(1, len(short.events) // 4)
    steps = []
    real = Scheduler.step

    def counted(self):
        steps.append(self.step_count)
        return real(self)

    monkeypatch.setattr(Scheduler, "step", counted)
    with pytest.raises(TraceFormatError, match=f"more than {limit} steps, the most"):
        compare(trace=short)
    assert len(steps) <= limit < len(prefix_trace.events) // 4


def test_a_whole_trace_still_gets_its_comparison(prefix_trace):
    c = prefix_compare.compare(trace=prefix_trace)
    assert c.outputs_equal


# ---- verify ----------------------------------------------------------------------------------

def run_cli(capsys, *argv):
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_verify_says_a_saved_trace_is_what_the_engine_does(good, tmp_path, capsys):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(good))
    rc, out, err = run_cli(capsys, "verify", str(path))
    assert rc == 0 and err == "" and "the same" in out and out.count("\n") == 1


def test_verify_finds_a_consistent_lie(good, tmp_path, capsys):
    """A token changed in both the events and the outputs: it loads, and verify says where."""
    data = copy.deepcopy(good)
    i, ev = next((i, e) for i, e in enumerate(data["events"]) if e["kind"] == "tokens")
    name = next(iter(ev["tokens"]))
    ev["tokens"][name] = (ev["tokens"][name] + 1) % 256
    data["outputs"][name][0] = ev["tokens"][name]
    Trace.from_json(data)  # consistent with itself
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    rc, out, _ = run_cli(capsys, "verify", str(path))
    assert rc == 1 and f"events[{i}]" in out and out.count("\n") == 1


def test_verify_refuses_files_in_one_line(good, tmp_path, capsys):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    data = copy.deepcopy(good)
    data["workload"]["model"] = {"checkpoint": str(tmp_path)}
    named = tmp_path / "ckpt.json"
    named.write_text(json.dumps(data))
    for path, words in ((fifo, "not a regular file"), (named, "names a checkpoint"),
                        (tmp_path / "none.json", "does not exist")):
        rc, out, err = run_cli(capsys, "verify", str(path))
        assert rc == 2 and out == "" and words in err and err.count("\n") == 1
