"""Capture: what it records is what the real calls computed, and it is off unless asked for.

Expected values are computed here from the page tables and the model itself (a dense pass over
the whole sequence), never from the capture code.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from astrai.errors import TraceFormatError
from astrai.inference.observer import NO_OBSERVER
from astrai.trace import Trace, record
from astrai.trace.capture import Capture
from astrai.trace.events import Event, Gather, Write
from astrai.trace.recorder import Recorder
from astrai.workload import build, load_workload, parse_workload, run_workload

# Another geometry: 3-slot pages, three rows, a decode that grows pages, 1 KV head for 2 heads.
OTHER = {
    "name": "other",
    "cache": {"n_pages": 9, "page_size": 3},
    "model": {"n_layers": 2, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "head_dim": 8,
              "d_ff": 16, "seed": 3},
    "scheduler": {"prefix_caching": False},
    "request": [
        {"name": "a", "prompt_len": 5, "max_new_tokens": 4},
        {"name": "b", "prompt_len": 2, "max_new_tokens": 3},
        {"name": "c", "prompt_len": 7, "max_new_tokens": 2, "arrival": 1},
    ],
}


@pytest.fixture(scope="module", params=["write_gather", "other"])
def traced(request):
    wl = load_workload("write_gather") if request.param == "write_gather" else \
        parse_workload(OTHER)
    return wl, record(wl, capture=True)


def of(trace: Trace, kind: str) -> list[dict]:
    return [c for c in trace.captures if c["kind"] == kind]


def event(trace: Trace, kind: type[Event], step: int, phase: str) -> Event:
    (ev,) = [e for e in trace.events if isinstance(e, kind) and e.step == step
             and e.phase == phase]
    return ev


def test_off_by_default_and_the_cache_is_left_as_it_was():
    wl = load_workload("write_gather")
    plain = record(wl, lines=False)
    assert plain.captures == [] and "captures" not in plain.to_json()
    cache, model, scheduler = build(wl)
    fields = {part: set(vars(part)) for part in (cache, cache.checked, cache.kv)}
    with Recorder(cache, scheduler, lines=False) as rec, Capture(cache, model, rec) as cap:
        # it listens through the observer hooks: no method is swapped on an instance
        assert {part: set(vars(part)) for part in fields} == fields
        run_workload(wl, scheduler)
    assert cap.records
    assert cache.observer is NO_OBSERVER
    assert model.attn_probe is None
    # The capture changes nothing the run does or the trace says: same events (code lines
    # included: the wrappers are not engine frames), same outputs.
    traced, captured = record(wl), record(wl, capture=True)
    assert captured.events == traced.events and captured.outputs == plain.outputs


def test_slots_follow_the_page_table_and_padding_goes_to_the_null_page(traced):
    _, trace = traced
    ps, null = trace.geometry["page_size"], trace.geometry["n_pages"]
    records = of(trace, "slots")
    assert records
    for rec in records:
        table, n, slots = rec["page_table"], rec["n_tokens"], rec["slots"]
        assert rec["null_page"] == null
        lengths = rec["lengths"] or [n] * len(table)
        expect = []
        for b, row in enumerate(table):
            for t in range(n):
                pos = rec["start_pos"][b] + t
                page = row[pos // ps] if pos // ps < len(row) else -1
                real = t < lengths[b] and page >= 0
                expect.append((page if real else null) * ps + pos % ps)
        assert slots == expect
        # the table the slots came from is the one the scheduler's write used
        ev = event(trace, Write, rec["step"], rec["phase"])
        assert [r["start"] for r in ev.rows] == rec["start_pos"]
        assert [r["n"] for r in ev.rows] == lengths


def test_padding_is_captured_on_the_write_gather_workload():
    trace = record("write_gather", lines=False, capture=True)
    ps, null = trace.geometry["page_size"], trace.geometry["n_pages"]
    prefill = [r for r in of(trace, "slots") if r["phase"] == "prefill"][0]
    lengths, n = prefill["lengths"], prefill["n_tokens"]
    assert min(lengths) < n  # a padded row: the story needs one
    padded = [s for b, ln in enumerate(lengths) for t, s in
              enumerate(prefill["slots"][b * n:(b + 1) * n]) if t >= ln]
    assert padded and all(s // ps == null for s in padded)


def test_slots_are_where_the_model_s_k_landed():
    """Run with capture, then read the storage: each real token's slot holds the K the model
    computes for that token densely (unless a later write reused the slot), and no live slot
    ever received a padding token."""
    wl = load_workload("write_gather")
    cache, model, scheduler = build(wl)
    with Recorder(cache, scheduler, lines=False) as rec, Capture(cache, model, rec) as cap:
        outputs = run_workload(wl, scheduler)
    ps, null = cache.page_size, cache.n_pages
    store = cache._k_store[0].reshape(-1, cache.n_kv_heads, cache.head_dim)
    written = {}  # slot -> (request, position), last writer wins
    names = {r["step"]: [] for r in cap.records}
    for ev in rec.events:
        if isinstance(ev, Write):
            names[ev.step] = [r["task"] for r in ev.rows]
    for r in (r for r in cap.records if r["kind"] == "slots"):
        lengths = r["lengths"]
        for b, name in enumerate(names[r["step"]]):
            for t in range(lengths[b]):
                written[r["slots"][b * r["n_tokens"] + t]] = (name, r["start_pos"][b] + t)
    assert written and all(s // ps != null for s in written)
    reqs = {r.name: list(r.prompt) for r in wl.requests}
    for slot, (name, pos) in written.items():
        tokens = (reqs[name] + outputs[name])[: pos + 1]
        ids = torch.tensor([tokens])
        cos, sin = model._rotary(torch.arange(len(tokens)).view(1, -1))
        _, k, _ = model._qkv(model.layers[0], model.embed[ids], cos, sin)
        torch.testing.assert_close(store[slot], k[0, pos])
    live_unwritten = [s for s in range(null * ps) if s not in written]
    assert all(store[s].abs().sum() == 0 for s in live_unwritten)  # padding never landed there


def test_gather_reads_the_table_in_order_with_the_null_page_for_minus_one(traced):
    _, trace = traced
    geo = trace.geometry
    ps, null = geo["page_size"], geo["n_pages"]
    records = of(trace, "gather")
    assert records
    for rec in records:
        ev = event(trace, Gather, rec["step"], rec["phase"])
        write = event(trace, Write, rec["step"], rec["phase"])
        cols = -(-rec["total_len"] // ps)
        tables = [ev.state["page_tables"][r["task"]] for r in write.rows]
        expect = [t[c] if c < len(t) else null for t in tables for c in range(cols)]
        assert rec["index"] == expect
        assert rec["total_len"] == ev.total_len
        assert rec["k_shape"] == [len(tables), rec["total_len"], geo["n_kv_heads"],
                                  geo["head_dim"]]
        assert rec["pages_shape"][:2] == [len(expect), ps]


def test_attention_is_the_model_s_own(traced, dense_attention):
    wl, trace = traced
    records = of(trace, "attention")
    assert records and all(r["phase"] == "decode" and r["layer"] == 0 for r in records)
    model = build(wl)[1]  # the workload's own model (the real one for write_gather)
    reqs = {r.name: list(r.prompt) for r in wl.requests}
    for rec in records:
        assert rec["max_err"] < 1e-5  # softmax(scores) @ V is what SDPA returned
        write = event(trace, Write, rec["step"], rec["phase"])
        for b, row in enumerate(write.rows):
            pos = row["start"]  # the decoding token's position: its K/V were just written
            tokens = (reqs[row["task"]] + trace.outputs[row["task"]])[: pos + 1]
            scores, weights = dense_attention(model, tokens)
            allowed = rec["allowed"][b][0]
            assert allowed == [j <= pos for j in range(rec["total_len"])]
            got_s = torch.tensor(rec["scores"][b])[:, 0, : pos + 1]
            got_w = torch.tensor(rec["weights"][b])[:, 0]
            torch.testing.assert_close(got_s, scores, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(got_w[:, : pos + 1], weights, atol=1e-5, rtol=1e-4)
            assert got_w[:, pos + 1:].abs().sum() == 0  # keys past the row's end get nothing


def test_captures_round_trip_and_bad_ones_are_refused(traced):
    _, trace = traced
    data = json.loads(json.dumps(trace.to_json()))
    assert Trace.from_json(data).captures == trace.captures
    for bad, what in (([{"kind": "bogus", "step": 0, "phase": "x"}], r"captures\[0\] must be"),
                      ({"kind": "slots"}, "captures must be"),
                      ([{"kind": "slots", "step": "0", "phase": "x"}], "int step")):
        broken = copy.deepcopy(data)
        broken["captures"] = bad
        with pytest.raises(TraceFormatError, match=what):
            Trace.from_json(broken)
