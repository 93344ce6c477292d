"""The write/gather scene (slot by slot): what it shows equals what the engine and model did.

The scene is built without video and reports what each beat showed, read back from its
mobjects (slot labels, where each K/V cell sits, gathered page tags, scores and weights). The
expected values are computed here from the trace's page tables and from the model itself (a
dense pass from position 0, no cache), never from the scene's or the capture's code.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re
import textwrap

import pytest

manim = pytest.importorskip("manim")

from manim import config  # noqa: E402
from scene_checks import TEASER_SCENE_MAX, render  # noqa: E402

from astrai.errors import TraceFormatError, WorkloadError  # noqa: E402
from astrai.text import load_tokenizer  # noqa: E402
from astrai.trace import record, recorded  # noqa: E402
from astrai.trace.events import Alloc, Arrive, Free, Gather, Tokens, Write  # noqa: E402
from astrai.workload import build as build_run  # noqa: E402
from astrai.workload import parse_workload  # noqa: E402
from scenes.framework.anchors import anchor  # noqa: E402
from scenes.framework.capture import plan_capture  # noqa: E402
from scenes.write_gather import WriteGatherScene  # noqa: E402


def build(trace, cut, media_dir) -> WriteGatherScene:
    return render(WriteGatherScene, media_dir, trace=trace, cut=cut)


@pytest.fixture(scope="module")
def trace():
    return recorded("write_gather", capture=True)  # kept in the trace store


@pytest.fixture(scope="module")
def scenes(trace, tmp_path_factory):
    media = tmp_path_factory.mktemp("media")
    return {cut: build(trace, cut, media) for cut in ("full", "teaser")}


@pytest.fixture(scope="module", params=["full", "teaser"])
def scene(request, scenes):
    return scenes[request.param]


# ---- what should be shown, from the trace's page tables and the model -----------------------


def events(trace, kind, phase):
    return [e for e in trace.events if isinstance(e, kind) and e.phase == phase]


def expected_slots(trace, write_event, width):
    """Row -> flat slot of each of its `width` tokens: page_table[pos // ps] * ps + pos % ps
    for a real token, the null page (page n_pages) for padding."""
    ps, null = trace.geometry["page_size"], trace.geometry["n_pages"]
    out = {}
    for row in write_event.rows:
        table = write_event.state["page_tables"][row["task"]]
        slots = []
        for t in range(width):
            pos = row["start"] + t
            real = t < row["n"] and pos // ps < len(table)
            slots.append((table[pos // ps] if real else null) * ps + pos % ps)
        out[row["task"]] = slots
    return out


def test_prefill_slots_follow_the_page_tables(scene, trace):
    (write,) = events(trace, Write, "prefill")
    width = max(r["n"] for r in write.rows)
    shown = scene.shown["slots"]
    assert shown["slots"] == expected_slots(trace, write, width)
    assert shown["pad"] == {r["task"]: [t >= r["n"] for t in range(width)]
                            for r in write.rows}
    assert any(any(p) for p in shown["pad"].values())  # the story has a padded row


def test_padding_lands_in_the_null_page_and_never_on_a_live_one(scene, trace):
    (write,) = events(trace, Write, "prefill")
    ps, null = trace.geometry["page_size"], trace.geometry["n_pages"]
    width = max(r["n"] for r in write.rows)
    slots = expected_slots(trace, write, width)
    landed = scene.shown["write"]["landed"]
    assert len(landed) == sum(len(s) for s in slots.values())
    for cell in landed:
        t = cell["pos"]  # prefill starts at 0 here
        assert cell["slot"] == slots[cell["row"]][t]
        assert cell["null"] == cell["pad"] == (cell["slot"] // ps == null)
        if not cell["pad"]:
            assert cell["slot"] // ps in write.state["page_tables"][cell["row"]]



def test_padding_stacked_in_the_null_page_stays_inside_its_frame_below_its_label(scene):
    """A slot written twice shows both cards, the later a little up and right: both stay
    inside the null page's frame, clear of its edge (a stroke's width), and under its label."""
    view = scene.view
    null, ps = view.plan.null, view.plan.page_size
    frame, label = view.storage.frames[null], view.storage.labels[null]
    stacked = [c for slot in range(null * ps, (null + 1) * ps) for c in view.held.get(slot, [])]
    assert any(len(view.held.get(s, [])) > 1 for s in range(null * ps, (null + 1) * ps))
    clear = 0.02
    for cell in stacked:
        box = cell.box
        assert box.get_top()[1] <= frame.get_top()[1] - clear, cell.pos
        assert box.get_right()[0] <= frame.get_right()[0] - clear, cell.pos
        assert box.get_left()[0] >= frame.get_left()[0] + clear, cell.pos
        assert box.get_top()[1] < label.get_bottom()[1], cell.pos

def test_decode_token_lands_in_its_new_page(scene, trace):
    (write,) = events(trace, Write, "decode")
    shown = scene.shown["decode_write"]
    assert shown["slots"] == expected_slots(trace, write, 1)
    for cell in shown["landed"]:
        assert cell["slot"] == shown["slots"][cell["row"]][0] and not cell["null"]


def test_gather_reassembles_the_logical_order_and_cuts_to_total_len(scene, trace):
    ps = trace.geometry["page_size"]
    (gather,) = events(trace, Gather, "decode")
    shown = scene.shown["gather"]
    table = gather.state["page_tables"][shown["row"]]
    assert table != sorted(table)  # the story's point: physical order is not logical order
    assert shown["pages"] == [f"page {p}" for p in table]
    assert shown["sources"] == [p * ps + i for p in table for i in range(ps)]
    assert shown["positions"] == list(range(len(table) * ps))
    assert shown["kept"] == gather.total_len
    assert shown["cut"] == shown["sources"][gather.total_len:]


def test_prefill_gather_reads_the_null_page_for_a_missing_page(scenes, trace):
    ps, null = trace.geometry["page_size"], trace.geometry["n_pages"]
    (gather,) = events(trace, Gather, "prefill")
    cols = -(-gather.total_len // ps)
    shown = scenes["full"].shown["gather_prefill"]
    tables = gather.state["page_tables"]
    want = [t[c] if c < len(t) else None for t in (tables[r] for r in shown["rows"])
            for c in range(cols)]
    assert shown["pages"] == [f"page {p}" if p is not None else "null" for p in want]
    assert None in want
    for r in shown["rows"]:
        pages = tables[r] + [null] * (cols - len(tables[r]))
        assert shown["sources"][r] == [p * ps + i for p in pages for i in range(ps)]


def test_attention_bars_and_cells_carry_the_real_words(scene, trace):
    """Each key's bar is labelled with the trace's piece of that position (cut with '…' only
    where it is wider than the bar), the query with its own; the tokenizer decodes each of
    those tokens to the text the piece stands for."""
    shown = scene.shown["attention"]
    row, pos = shown["row"], shown["query"]
    arrive = next(ev for ev in trace.events if isinstance(ev, Arrive) and ev.task == row)
    made = [ev.pieces[row] for ev in trace.events if isinstance(ev, Tokens) and ev.pieces
            and row in ev.pieces]
    pieces = (arrive.prompt_pieces + made)[: pos + 1]
    assert len(shown["words"]) == pos + 1
    for word, piece in zip(shown["words"], pieces):
        assert word == piece or (word.endswith("…") and piece.startswith(word[:-1])), (word,
                                                                                      piece)
        assert " " not in word  # a space is drawn as '·', never a gap
    word = shown["query_tag"].split('"')[1]
    assert word == pieces[pos] or (word.endswith("…") and pieces[pos].startswith(word[:-1]))
    assert len(shown["query_tag"]) <= 18
    tok = load_tokenizer(trace.workload["model"]["checkpoint"])
    ids = [r["prompt"] for r in trace.workload["request"] if r["name"] == row][0]
    assert "".join(pieces[: len(ids)]).replace("·", " ") == tok.decode(ids)


def test_attention_shows_the_model_s_scores_and_weights(scene, trace, dense_attention):
    shown = scene.shown["attention"]
    model = build_run(parse_workload(trace.workload))[1]  # the run's own model
    prompt = {r["name"]: r["prompt"] for r in trace.workload["request"]}
    row, pos, head = shown["row"], shown["query"], shown["head"]
    tokens = (prompt[row] + trace.outputs[row])[: pos + 1]
    scores, weights = dense_attention(model, tokens)
    assert shown["layer"] == 0 and shown["head_tag"] == f"layer 0, head {head}"
    assert shown["keys"] == list(range(pos + 1))
    got_s = [float(s) for s in shown["scores"]]
    got_w = [float(w) for w in shown["weights"]]
    assert max(abs(a - b) for a, b in zip(got_s, scores[head].tolist())) <= 0.005 + 1e-4
    assert max(abs(a - b) for a, b in zip(got_w, weights[head].tolist())) <= 0.005 + 1e-4
    top = max(shown["bars"])
    w = weights[head].tolist()
    assert all(abs(h / top - x / max(w)) < 0.01 for h, x in zip(shown["bars"], w))
    (gather,) = events(trace, Gather, "decode")
    table = gather.state["page_tables"][row]
    assert shown["blocks"] == [f"page {p}" for p in table]


def test_the_scene_shows_the_trace_s_numbers_it_does_not_compute_them(trace, tmp_path):
    """Change the captured attention and slots: the screen follows the trace."""
    forged = copy.deepcopy(trace)
    att = next(c for c in forged.captures if c["kind"] == "attention")
    n = att["total_len"]
    att["scores"][0][0][0] = [round(0.5 + 0.25 * j, 2) for j in range(n)]
    att["weights"][0][0][0] = [1.0 / n] * n
    scene = build(forged, "teaser", tmp_path)
    shown = scene.shown["attention"]
    assert shown["scores"] == [f"{0.5 + 0.25 * j:.2f}" for j in range(n)]
    assert shown["weights"] == [f"{1.0 / n:.2f}"] * n


def resolve(file: str, qualname: str):
    """The function a panel names, imported here by the test (the scene never imports)."""
    obj = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    for part in qualname.split("."):
        obj = inspect.getattr_static(obj, part)
    return inspect.unwrap(obj)


def test_code_panels_show_real_source_and_mark_the_work(scene):
    fns = {p["fn"] for p in scene.panels}
    # The teaser opens on the decode step: it shows only the gather and the attention.
    want = {anchor("gather.select").fn, anchor("model.attend").fn}
    if scene.cut == "full":
        want |= {anchor("slots.flat_index").fn, anchor("write.index_copy").fn}
    assert want <= fns
    for p in scene.panels:
        lines, start = inspect.getsourcelines(resolve(p["file"], p["fn"]))
        source = textwrap.dedent("".join(lines)).split("\n")
        assert [t.rstrip() for t in p["text"]] == [source[r - start].rstrip()
                                                   for r in p["rows"]]
        current = source[p["current"] - start]
        assert "observer" not in current and "probe" not in current, p
        assert p["shapes"]


# ---- what is spoken: the run's numbers in plain words, subtitles at reading speed -----------


def spoken(scene) -> str:
    return " ".join(line.text for _, line in scene.lines)


def said(scene, *phrases: str) -> bool:
    """Each phrase is spoken, not as part of a longer number ('page 1' is not in 'page 16')."""
    text = spoken(scene)
    return all(re.search(re.escape(p) + r"(?![\w]|\.\d)", text) for p in phrases)


def story_numbers(trace) -> dict:
    """What the narration must say, read from the trace's events and captures."""
    ps, null = trace.geometry["page_size"], trace.geometry["n_pages"]
    (write,) = events(trace, Write, "prefill")
    width = max(r["n"] for r in write.rows)
    padded = [r for r in write.rows if r["n"] < width]
    pad_slots = sorted({null * ps + (r["start"] + t) % ps for r in padded
                        for t in range(r["n"], width)})
    (dwrite,) = events(trace, Write, "decode")
    (gather,) = events(trace, Gather, "decode")
    tables = gather.state["page_tables"]
    row = next(r for r in dwrite.rows if tables[r["task"]] != sorted(tables[r["task"]]))
    name, pos = row["task"], row["start"]
    table = tables[name]
    between = [e for e in trace.events[trace.events.index(write):trace.events.index(dwrite)]
               if isinstance(e, Alloc) or isinstance(e, Free) and e.refs == 0]
    att = next(c for c in trace.captures if c["kind"] == "attention" and c["phase"] == "decode")
    b = [r["task"] for r in dwrite.rows].index(name)
    weights = att["weights"][b][0][0][: gather.total_len]
    top = max(range(len(weights)), key=weights.__getitem__)
    return {
        "ps": ps, "rows": [(r["task"], r["n"]) for r in write.rows], "width": width,
        "padded": [r["task"] for r in padded], "pad_slots": pad_slots,
        "pages": [(type(e), e.task, e.page) for e in between],
        "row": name, "pos": pos, "slot": table[pos // ps] * ps + pos % ps, "table": table,
        "total": gather.total_len, "cut": len(table) * ps - gather.total_len,
        "top": top, "weight": f"{weights[top]:.2f}",
    }


def test_the_explainer_speaks_the_run_s_numbers(scenes, trace):
    n, full = story_numbers(trace), scenes["full"]
    text = spoken(full)
    assert said(full, f"pages of {n['ps']} slots")
    for task, length in n["rows"]:
        assert said(full, f"{task} has {length}")
    assert n["padded"] and all(said(full, f"{t} is padded to {n['width']}")
                               for t in n["padded"])
    assert said(full, f"slots {n['pad_slots'][0]} to {n['pad_slots'][-1]}")
    assert n["pages"]
    for kind, task, page in n["pages"]:
        verb = "frees" if kind is Free else "gets"
        assert said(full, f"{task} is done and {verb} page {page}" if kind is Free
                    else f"{task} needs a new page and {verb} page {page}")
    assert said(full, f"token {n['pos']} gets slot {n['slot']}")
    pages = [str(p) for p in n["table"]]
    assert ", ".join(pages[:-1]) + ", then " + pages[-1] + "." in text
    assert said(full, f"{n['row']} has {n['total']} tokens", f"the last {n['cut']}",
                f"all {n['total']} keys", f"position {n['pos']}")
    assert said(full, f"Key {n['top']} gets the most: {n['weight']}")


def test_the_teaser_is_one_idea_in_two_lines_with_the_run_s_numbers(scenes, trace):
    n, teaser = story_numbers(trace), scenes["teaser"]
    assert teaser.clock <= min(TEASER_SCENE_MAX, 12.5)
    speech = sum(line.duration for _, line in teaser.lines)
    assert 1 <= len(teaser.lines) <= 2 and 5 <= speech <= 10
    pages = [str(p) for p in n["table"]]
    assert said(teaser, "pages " + ", ".join(pages[:-1]) + " and " + pages[-1],
                f"all {n['total']} keys")
    # over a real moment of the run: the gather and the attention it feeds are animated
    assert [s["beat"] for s in teaser.snapshots][-2:] == ["gather", "attention"]


def test_the_spoken_numbers_follow_the_trace(trace, tmp_path):
    """Move the largest attention weight in the capture: the narration names the new key."""
    forged = copy.deepcopy(trace)
    att = next(c for c in forged.captures if c["kind"] == "attention")
    n = att["total_len"]
    new = [0.5 / (n - 1)] * n
    new[n - 2] = 0.5
    att["weights"][0][0][0] = new
    scene = build(forged, "full", tmp_path)
    assert said(scene, f"Key {n - 2} gets the most: 0.50")


def test_no_code_or_field_names_are_spoken(scene):
    for _, line in scene.lines:
        for word in ("_", "[", "]", "=", "//", "·", "→", "index_copy", "total_len",
                     "page_table", "K/V", "slot_index", "gather_pages"):
            assert word not in line.text, (word, line.text)


def test_cuts_pace_and_subtitles(scenes):
    from scenes.framework.cues import Timed, problems

    full, teaser = scenes["full"], scenes["teaser"]
    assert 60 <= full.clock <= 125
    speech = sum(line.duration for _, line in full.lines)
    assert 55 <= speech <= 75  # the scene's share of the explainer's narration
    assert 8 <= teaser.clock <= TEASER_SCENE_MAX
    assert [name for _, name in full.chapters] == ["write", "gather", "decode", "attention"]
    assert [name for _, name in teaser.chapters] == ["gather", "attention"]
    for sc in (full, teaser):
        # the subtitles are exactly the spoken words, at reading speed
        assert " ".join(" ".join(c[2].split()) for c in sc.cues) == spoken(sc)
        timed = [Timed(t, t + d, text) for t, d, text in sc.cues]
        assert problems(timed, 1 / config.frame_rate) == []
        assert sc.cues[-1][0] + sc.cues[-1][1] <= sc.clock + 1e-6
        # the captions on screen are annotation, never read out
        assert sc.captions_shown and not {c for _, c in sc.captions_shown} & {
            line.text for _, line in sc.lines}


def test_text_stays_on_screen_and_never_overlaps(scene):
    half_w, half_h = config.frame_width / 2, config.frame_height / 2
    for snap in scene.snapshots:
        texts = snap["texts"]
        assert texts
        for _, label, (x0, y0, x1, y1) in texts:
            assert -half_w <= x0 and x1 <= half_w and -half_h <= y0 and y1 <= half_h, label
        plain = [(lab, box) for kind, lab, box in texts if kind == "text"]
        for i, (a, (ax0, ay0, ax1, ay1)) in enumerate(plain):
            for b, (bx0, by0, bx1, by1) in plain[i + 1:]:
                overlap = min(ax1, bx1) - max(ax0, bx0) > 0.01 and \
                    min(ay1, by1) - max(ay0, by0) > 0.01
                assert not overlap, f"{snap['beat']}: {a!r} overlaps {b!r}"


def test_a_trace_without_captures_or_too_big_is_refused():
    with pytest.raises(TraceFormatError, match="capture=True"):
        plan_capture(recorded("write_gather", lines=False))
    big = parse_workload({
        "name": "big", "cache": {"n_pages": 4, "page_size": 16},
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1, "head_dim": 8,
                  "d_ff": 16},
        "request": [{"name": "a", "prompt_len": 20, "max_new_tokens": 2},
                    {"name": "b", "prompt_len": 5, "max_new_tokens": 2}],
    })
    with pytest.raises(WorkloadError, match="too big to show slot by slot"):
        plan_capture(record(big, lines=False, capture=True))


def test_a_saved_captured_trace_loads_and_a_stale_one_is_refused(trace, tmp_path):
    from astrai.trace import save_trace
    from scenes.framework.capture import load_captured

    path = tmp_path / "wg.json"
    save_trace(trace, path)
    assert load_captured(str(path)).captures == trace.captures
    stale = copy.deepcopy(trace)
    stale.source = {f: "0" * 64 for f in stale.source}
    save_trace(stale, path)
    with pytest.raises(TraceFormatError, match="record it again"):
        load_captured(str(path))
