"""Each token as a picture of its slot shows it (astrai.text.visible_piece), and the trace fields
that carry those pieces (arrive.prompt_pieces, tokens.pieces) with their checks."""

from __future__ import annotations

import json

import pytest

from astrai.errors import TraceFormatError
from astrai.models.store import check
from astrai.text import MAX_PIECE, ByteTokenizer, load_tokenizer, visible_piece
from astrai.trace import Trace, record
from astrai.trace.events import Arrive, Tokens
from astrai.workload import load_workload

REAL = "smollm2-135m-instruct"
MARKS = {"·": " ", "↵": "\n", "⇥": "\t"}


def unmarked(pieces: list[str], names: dict[str, str]) -> str:
    """The text the pieces stand for: marks back to whitespace, short names to control tokens."""
    out = []
    for p in pieces:
        out.append(names[p] if p in names else "".join(MARKS.get(c, c) for c in p))
    return "".join(out)


def test_bytes_are_their_own_pieces_and_whitespace_is_marked():
    tok = ByteTokenizer()
    assert [visible_piece(tok, i) for i in tok.encode("a b\n\tc")] == ["a", "·", "b", "↵", "⇥",
                                                                       "c"]
    # a byte of a longer UTF-8 character is only part of one: shown as its byte
    assert [visible_piece(tok, i) for i in tok.encode("é")] == ["‹C3›", "‹A9›"]
    assert visible_piece(tok, 13) == "‹0D›" and visible_piece(tok, 0) == "‹00›"


@pytest.mark.skipif(check(REAL) is not None, reason="the real model is not installed")
def test_real_tokens_read_back_as_their_text_and_never_as_a_gap():
    tok = load_tokenizer(REAL)
    text = "<|im_start|>user\nHi there,  café\tok?<|im_end|>\n"
    ids = tok.encode(text)
    pieces = [visible_piece(tok, i) for i in ids]
    assert pieces[0] == "⟨start⟩" and "⟨end⟩" in pieces
    assert all(p and not any(c.isspace() for c in p) and p.isprintable() for p in pieces)
    names = {"⟨start⟩": "<|im_start|>", "⟨end⟩": "<|im_end|>"}
    assert unmarked(pieces, names) == text  # every character is in some piece, in order
    # a token that is part of a character (the emoji splits across byte-level tokens)
    split = [visible_piece(tok, i) for i in tok.encode(" 😀")]
    assert len(split) > 1 and all("‹" in p for p in split[1:])
    assert "".join(split).replace("·", "").count("‹") == len("😀".encode())


def test_a_long_token_is_cut():
    class Long(ByteTokenizer):
        def token_bytes(self, token_id):
            return b"x" * 100

    piece = visible_piece(Long(), 5)
    assert len(piece) == MAX_PIECE and piece.endswith("…")


@pytest.fixture(scope="module")
def text_trace():
    return record(load_workload("text"), lines=False)


def test_the_trace_carries_one_piece_per_token(text_trace):
    tok = ByteTokenizer()
    wl = {r["name"]: r for r in text_trace.workload["request"]}
    arrivals = [ev for ev in text_trace.events if isinstance(ev, Arrive)]
    assert arrivals
    for ev in arrivals:
        assert len(ev.prompt_pieces) == ev.prompt_len
        assert ev.prompt_pieces == [visible_piece(tok, i) for i in wl[ev.task]["prompt"]]
    made: dict[str, list[str]] = {}
    for ev in text_trace.events:
        if isinstance(ev, Tokens):
            assert set(ev.pieces) == set(ev.tokens)
            for name, piece in ev.pieces.items():
                assert piece == visible_piece(tok, ev.tokens[name])
                made.setdefault(name, []).append(piece)
    assert {n: len(p) for n, p in made.items()} == {n: len(o) for n, o in
                                                    text_trace.outputs.items()}


def _bad(trace, edit) -> str:
    data = json.loads(json.dumps(trace.to_json()))
    edit(data["events"])
    with pytest.raises(TraceFormatError) as e:
        Trace.from_json(data)
    return str(e.value)


def _first(events, kind):
    return next(ev for ev in events if ev["kind"] == kind)


@pytest.mark.parametrize("edit, words", [
    (lambda evs: _first(evs, "arrive")["prompt_pieces"].pop(), "pieces for a prompt of"),
    (lambda evs: _first(evs, "arrive")["prompt_pieces"].__setitem__(0, "x" * 99),
     "token pieces"),
    (lambda evs: _first(evs, "arrive")["prompt_pieces"].__setitem__(0, "a\nb"), "token pieces"),
    (lambda evs: _first(evs, "arrive")["prompt_pieces"].__setitem__(0, ""), "token pieces"),
    (lambda evs: _first(evs, "tokens")["pieces"].update(Z="z"), "made no token"),
    (lambda evs: _first(evs, "tokens").update(pieces={"A": 5}), "token pieces"),
])
def test_pieces_that_do_not_fit_their_tokens_are_refused(text_trace, edit, words):
    assert words in _bad(text_trace, edit)
