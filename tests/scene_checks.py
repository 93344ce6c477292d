"""Checks the story-scene tests share: build a scene without video, compare what it showed after
every event with the event's state, and code panels with the real source. Expected values are
computed here from the trace alone, never from scene code."""

from __future__ import annotations

import importlib
import inspect
import textwrap

import pytest
from manim import tempconfig

from astrai.trace import recorded
from astrai.trace.events import Arrive
from scenes.framework.kit.said import drawable

FS_KINDS = ("arrive", "cleanup", "refill", "prefill", "decode")
# The promo's teaser budget per storyboard scene: a shot of one idea, spoken and read; six of
# these plus the closing card stay inside the teaser's limit (promo.build.TEASER_MAX).
TEASER_SCENE_MAX = 12.5


# A one-request workload small enough for a real render in every test run (the smoke renders).
SMOKE = """
name = "smoke"
[cache]
n_pages = 3
page_size = 4
[model]
n_layers = 1
n_heads = 2
n_kv_heads = 1
head_dim = 8
[[request]]
name = "A"
prompt_len = 5
max_new_tokens = 2
"""


def state_only(media_dir, **more) -> dict:
    """Manim's config for building a scene without video (and quietly), plus `more`."""
    return {"format": "none", "disable_caching": True, "media_dir": str(media_dir),
            "progress_bar": "none", "verbosity": "WARNING", **more}


def render(cls, media_dir, **kwargs):
    """cls(**kwargs) built without video, with every animation finished at once."""
    with tempconfig(state_only(media_dir)):
        scene = cls(skip_animations=True, **kwargs)
        scene.render()
    return scene


def build(cls, trace, media_dir, cut="full"):
    """Build without video. `scene.detached` lists animations of mobjects outside the scene:
    Manim would add those on top of everything when rendering (left-over ghosts)."""
    with tempconfig(state_only(media_dir)):
        scene = cls(trace=trace, cut=cut, skip_animations=True)
        scene.detached = []
        show = scene._show

        def checked(animations, run_time):
            shown = {id(m) for m in scene.get_mobject_family_members()}
            scene.detached += [a for a in animations if id(a.mobject) not in shown]
            show(animations, run_time)

        scene._show = checked
        scene.render()
    return scene


def story_fixtures(cls, workload: str):
    """The set-up of a story scene's test module: module-scoped fixtures `trace` (the workload
    recorded, once: through the trace store, so a real-model run is kept for every later test
    and process) and `scene` (cls built from it without video, full cut).

        trace, scene = story_fixtures(PreemptionScene, "preemption")
    """

    @pytest.fixture(scope="module")
    def trace():
        return recorded(workload)

    @pytest.fixture(scope="module")
    def scene(trace, tmp_path_factory):
        return build(cls, trace, tmp_path_factory.mktemp("media"))

    return trace, scene


def check_teaser(cls, trace, media_dir, boards=("end card",)):
    """The teaser cut of a story scene: within its budget, still every event's state on screen,
    nothing animated outside the scene, its `boards` shown, no caption cut short. Returns it."""
    teaser = build(cls, trace, media_dir, cut="teaser")
    assert 8 <= teaser.replay.duration <= TEASER_SCENE_MAX
    check_screen_equals_trace(trace, teaser)
    assert teaser.detached == []
    assert {b["name"] for b in teaser.replay.boards} >= set(boards)
    assert teaser.replay.cut_short == []
    return teaser


def expected_label(state: dict, page: int) -> str:
    if state["free_mask"] & (1 << page):
        return "free"
    if page in state["cached"]:
        return "cached"
    holders = [n for n, pages in state["page_tables"].items() if page in pages]
    return "+".join(holders) if holders else "used"


def check_screen_equals_trace(trace, scene) -> None:
    events, geo = trace.events, trace.geometry
    n, ps = geo["n_pages"], geo["page_size"]
    assert [s["event"] for s in scene.snapshots] == list(range(len(events)))
    for ev, snap in zip(events, scene.snapshots):
        st = ev.state
        where = f"event {snap['event']} ({ev.kind})"
        assert snap["frames"] == [expected_label(st, p) for p in range(n)], where
        assert snap["filled"] == st["filled"], where
        assert snap["bits"] == "".join("1" if st["free_mask"] >> p & 1 else "0"
                                       for p in range(n)), where
        assert snap["refs"] == st["refs"], where
        assert snap["tables"] == {t: [[k, p] for k, p in enumerate(pages)]
                                  for t, pages in st["page_tables"].items()}, where
        assert snap["arrows"] == st["page_tables"], where
        assert {t: int(s.split()[-1]) for t, s in snap["lengths"].items()} == st["lengths"], where
        assert {t: int(s.split()[1]) for t, s in snap["caps"].items()} == {
            t: len(pages) * ps for t, pages in st["page_tables"].items()}, where
        phase = ev.phase if ev.phase in FS_KINDS else None
        assert (snap["step"], snap["phase"]) == (ev.step, phase), where


def source_lines(file: str, fn: str) -> tuple[list[str], int]:
    """The real source of function `fn` (a qualname; a property's getter) in `file`, dedented,
    and its first line number."""
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    obj = module
    for part in fn.split("."):
        obj = inspect.getattr_static(obj, part)
    obj = obj.fget if isinstance(obj, property) else obj
    lines, start = inspect.getsourcelines(obj)
    return textwrap.dedent("".join(lines)).rstrip("\n").split("\n"), start


def check_panels(trace, scene) -> None:
    assert scene.panels
    for panel in scene.panels:
        src, start = source_lines(panel["file"], panel["fn"])
        assert [t.rstrip() for t in panel["text"]] == [src[r - start].rstrip()
                                                      for r in panel["rows"]]
        frame = panel["frame"]
        ev = trace.events[panel["event"]]
        assert any((f["file"], f["fn"], f["ran"]) == (frame["file"], frame["fn"], frame["ran"])
                   for f in ev.code + ev.returned), "a panel for a function that did not run"
        assert panel["current"] == frame["line"] and frame["line"] in panel["rows"]


def board(scene, name: str) -> list[str]:
    found = [b for b in scene.replay.boards if b["name"] == name]
    assert found, f"no board {name!r}"
    return found[0]["texts"]


def check_boards_inside(scene) -> None:
    """Everything drawn on a board lies inside it (so inside the frame), and text lines do not
    overlap one another."""
    from scenes.framework.kit.glyphs import GlyphText

    for b in scene.replay.boards:
        bd = b["board"]
        x0, y0 = bd.bg.get_corner([-1, -1, 0])[:2]
        x1, y1 = bd.bg.get_corner([1, 1, 0])[:2]
        for m in bd.get_family()[1:]:
            if len(getattr(m, "points", [])):
                (a0, b0, _), (a1, b1, _) = m.get_corner([-1, -1, 0]), m.get_corner([1, 1, 0])
                assert x0 - 1e-6 <= a0 and a1 <= x1 + 1e-6, (b["name"], m)
                assert y0 - 1e-6 <= b0 and b1 <= y1 + 1e-6, (b["name"], m)
        boxes = [(t.get_corner([-1, -1, 0]), t.get_corner([1, 1, 0])) for t in bd.get_family()
                 if isinstance(t, GlyphText) and t.shown().strip()]
        for i, (lo, hi) in enumerate(boxes):
            for lo2, hi2 in boxes[i + 1:]:
                apart = (hi[0] <= lo2[0] + 1e-6 or hi2[0] <= lo[0] + 1e-6
                         or hi[1] <= lo2[1] + 1e-6 or hi2[1] <= lo[1] + 1e-6)
                assert apart, (b["name"], "text overlaps")


def page_words(trace) -> list[list[list[str]]]:
    """Per event, per page: the visible pieces its filled slots hold, read from the trace alone
    (a holder's table column x page size, its prompt's pieces then its tokens' pieces); a cached
    page keeps what it held, a free one holds none."""
    ps, n = trace.geometry["page_size"], trace.geometry["n_pages"]
    seqs: dict[str, list[str]] = {}
    held: list[list[str]] = [[] for _ in range(n)]
    out = []
    for ev in trace.events:
        if isinstance(ev, Arrive) and ev.prompt_pieces:
            for name in ev.samples or [ev.task]:
                seqs[name] = list(ev.prompt_pieces)
        for name, piece in (getattr(ev, "pieces", None) or {}).items():
            seqs[name].append(piece)
        st = ev.state
        for p in range(n):
            holders = [t for t, pages in st["page_tables"].items() if p in pages]
            if holders and holders[0] in seqs:
                start = st["page_tables"][holders[0]].index(p) * ps
                held[p] = seqs[holders[0]][start:start + st["filled"][p]]
            elif p not in st["cached"]:
                held[p] = []
        out.append([list(h) for h in held])
    return out


def check_frame_words(trace, scene) -> int:
    """Every frame's words are the tail of what its slots hold, as long as its lines allow
    (never an invisible gap: no whitespace inside a line); returns how many frames showed
    words."""
    shown = 0
    words, ps = page_words(trace), trace.geometry["page_size"]
    frames = scene.replay.pool.frames
    for snap in scene.replay.snapshots:
        for p, lines in enumerate(snap["frame_lines"]):
            pieces = [drawable(w) for w in words[snap["event"]][p]]
            text = "".join(pieces)
            cells, room = frames[p].cells, frames[p].cells * len(lines)
            drawn = "".join(line.rstrip() for line in lines)
            assert not any(c.isspace() for line in lines for c in line.rstrip()), lines
            if pieces and len(lines) >= ps and all(len(w) <= cells for w in pieces):
                # a row a slot: slot 0 on the bottom line, as the bar fills
                assert [line.rstrip() for line in reversed(lines)][:len(pieces)] == pieces
            elif len(text) <= room:
                assert drawn == text, (snap["event"], p, lines, text)
            else:
                assert drawn.startswith("…") and text.endswith(drawn[1:]), (lines, text)
                assert len(drawn) == room
            assert all(len(line) <= cells for line in lines)
            shown += bool(drawn)
    return shown


def card_answer(texts: list[str], label: str, after: str) -> str:
    """The answer an end card quotes for run `label` in the block after the line `after`
    (kit.endcard.text_rows: the run's name, then the quoted text over one or more lines)."""
    at = texts.index(after) + 1
    while not texts[at].startswith(label):
        at += 1
    width = len(texts[at]) - len(texts[at][len(label):].lstrip())
    body = texts[at][width:]
    at += 1
    while at < len(texts) and texts[at][:width].strip() == "" and texts[at][width:][:1] not in (
            "=", "x"):
        body += texts[at][width:]
        at += 1
    assert body.startswith('"') and body.endswith('"'), body
    return body[1:-1]

