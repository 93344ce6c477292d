"""Text prompts and decoded output on the default byte-level tiny model (nothing extra needed)."""

from __future__ import annotations

import pytest
import torch

from astrai.errors import WorkloadError
from astrai.model import ModelConfig, TinyModel
from astrai.text import ByteTokenizer, TextLog, shorten
from astrai.trace import Trace, record
from astrai.trace.events import Arrive, Tokens
from astrai.trace.text import format_trace
from astrai.workload import load_workload, parse_workload


def test_bytes_round_trip():
    tok = ByteTokenizer()
    text = "Grüße, 页面 ✓"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode([72, 300, 105]) == "H\ufffdi"  # an id past the bytes


def test_textlog_holds_back_an_incomplete_character():
    log = TextLog(ByteTokenizer(), {"A": "x"})
    euro = list("€".encode())  # three bytes
    ids, pieces = [], []
    for i in [65, *euro, 66]:
        ids.append(i)
        pieces.append(log.push("A", ids, done=False))
    assert pieces == ["A", "", "", "€", "B"]
    assert log.push("B", ids, done=False) is None  # not a text request
    cut = TextLog(ByteTokenizer(), {"A": "x"})
    assert cut.push("A", [65, euro[0]], done=False) == "A"
    assert cut.push("A", [65, euro[0]], done=True) == "\ufffd"  # flushed when done


def test_shipped_text_workload_carries_prompt_and_output_text():
    wl = load_workload("text")
    prompts = {r.name: r.text for r in wl.requests}
    assert all(prompts.values())
    assert all(r.prompt == tuple(r.text.encode()) for r in wl.requests)
    trace = record(wl, lines=False)
    arrive = {ev.task: ev.prompt_text for ev in trace.events if isinstance(ev, Arrive)}
    assert arrive == prompts
    pieces = {name: "" for name in prompts}
    for ev in trace.events:
        if isinstance(ev, Tokens):
            assert set(ev.text) == set(ev.tokens)
            for name, piece in ev.text.items():
                pieces[name] += piece
                # the state's text is what the pieces so far add up to
                assert ev.state["output_text"][name] == pieces[name]
    final = {n: ByteTokenizer().decode(ids) for n, ids in trace.outputs.items()}
    assert pieces == final == trace.events[-1].state["output_text"]
    Trace.from_json(trace.to_json())  # validates with the new fields
    lines = "\n".join(format_trace(trace))
    assert repr(prompts["A"]) in lines and f"output A as text: {final['A']!r}" in lines


def test_token_workloads_carry_no_text():
    trace = record(parse_workload({
        "cache": {"n_pages": 4, "page_size": 8},
        "request": [{"name": "A", "prompt_len": 9, "max_new_tokens": 5},
                    {"name": "B", "prompt": [1, 2, 3], "max_new_tokens": 4}],
    }), lines=False)
    assert all(ev.prompt_text is None for ev in trace.events if isinstance(ev, Arrive))
    assert all(ev.text == {} for ev in trace.events if isinstance(ev, Tokens))
    assert all(ev.state["output_text"] == {} for ev in trace.events)


def test_prompt_text_needs_a_byte_vocabulary():
    data = {"cache": {"n_pages": 4, "page_size": 8}, "model": {"vocab_size": 100},
            "request": [{"name": "A", "prompt_text": "hi ÿ", "max_new_tokens": 2}]}
    with pytest.raises(WorkloadError, match="vocab_size >= 256"):
        parse_workload(data)
    data["model"] = {}
    wl = parse_workload(data)
    assert parse_workload(wl.to_json()) == wl and wl.requests[0].text == "hi ÿ"
    data["model"] = {"checkpoint": 3}
    with pytest.raises(WorkloadError, match="model.checkpoint must be a directory path"):
        parse_workload(data)
    data["model"], data["cache"]["dtype"] = {}, "auto"
    with pytest.raises(WorkloadError, match="'auto' only with model.checkpoint"):
        parse_workload(data)


def test_shorten():
    assert shorten("a\nb\tc", 10) == "a b c"
    assert shorten("abcdefghij", 5) == "abcd…" and len(shorten("x" * 50, 12)) == 12
    assert shorten("a\ufffdb", 5) == "a?b"


def test_tied_head_and_norm_eps():
    tied = TinyModel(ModelConfig(tied_head=True))
    assert tied.head is tied.embed
    base = TinyModel(ModelConfig())
    assert not torch.equal(base.head, base.embed)
    x = torch.tensor([[1, 2, 3]])
    loose = TinyModel(ModelConfig(norm_eps=0.5))
    assert loose.layers[0].attn_norm.eps == 0.5
    assert not torch.allclose(loose.forward_dense(x), base.forward_dense(x))
    with pytest.raises(ValueError, match="norm_eps"):
        ModelConfig(norm_eps=0)
