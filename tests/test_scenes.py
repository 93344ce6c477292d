"""The scenes show the trace, nothing else: state checks after every event, not pixels.

Each scene is built without video (format "none", skip_animations) and records, after every
trace event, what its mobjects show: frame owners (from their colours), filled slots (from the
bar heights), the free bits and refcounts (from the glyphs drawn), page-table rows and where
their arrows point. Those are compared with the event's `state`, here computed independently of
the scene code. Code panels are compared with `inspect.getsource` of the function the trace
names. One short real render checks that an mp4 comes out.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

manim = pytest.importorskip("manim")
av = pytest.importorskip("av")

from manim import config, tempconfig  # noqa: E402
from scene_checks import (  # noqa: E402
    SMOKE,
    TEASER_SCENE_MAX,
    check_frame_words,
    check_panels,
    check_screen_equals_trace,
    expected_label,
    source_lines,
    state_only,
)

from astrai.errors import TraceFormatError  # noqa: E402
from astrai.trace import recorded, save_trace  # noqa: E402
from astrai.trace.events import (  # noqa: E402
    Admit,
    Alloc,
    Arrive,
    Cache,
    Evict,
    Free,
    Grow,
    Preempt,
    Retire,
    Share,
    Wait,
)
from scenes.framework import theme  # noqa: E402
from scenes.framework.kit.glyphs import Atlas  # noqa: E402
from scenes.framework.kit.tables import (  # noqa: E402
    FOOTER_H,
    HEADER_H,
    MAX_BLOCK_W,
    ROW_H,
    TITLE_H,
)
from scenes.framework.replay import KINDS, load, plan_beats  # noqa: E402
from scenes.framework.replay.plan import MONTAGE, RUN, TAIL, teaser  # noqa: E402
from scenes.paged_cache import PagedCacheScene  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Other geometry than any shipped workload: 5 pages of 8 slots, one layer, a shared prefix
# (share, record, cache), decode growth, and a request arriving once another is done.
TINY = """
name = "tiny"
[cache]
n_pages = 5
page_size = 8
[model]
n_layers = 1
n_heads = 2
n_kv_heads = 1
head_dim = 8
[scheduler]
max_batch = 3
[prefixes]
sys = 8
[[request]]
name = "A"
prefix = "sys"
prompt_len = 12
max_new_tokens = 10
[[request]]
name = "B"
prefix = "sys"
prompt_len = 10
max_new_tokens = 14
arrival = 1
[[request]]
name = "C"
prompt_len = 9
max_new_tokens = 3
after = "A"
"""

# The smallest story for a real render: one request, two pages.

PAGE_KINDS = (Alloc, Share, Free, Cache, Evict, Preempt, Retire)


def build(trace, media_dir, **kw) -> PagedCacheScene:
    # 15 fps: the frame rate of the -ql smoke render, so clocks compare frame for frame.
    with tempconfig(state_only(media_dir, frame_rate=15)):
        scene = PagedCacheScene(trace=trace, skip_animations=True, **kw)
        scene.render()
    return scene


@pytest.fixture(scope="module")
def workloads(tmp_path_factory):
    d = tmp_path_factory.mktemp("wl")
    (d / "tiny.toml").write_text(TINY)
    (d / "smoke.toml").write_text(SMOKE)
    return d


@pytest.fixture(scope="module")
def built(workloads, tmp_path_factory):
    media = tmp_path_factory.mktemp("media")
    cache = {}

    traces = {}

    def get(name: str, cut: str = "full"):
        if name not in traces:
            spec = str(workloads / f"{name}.toml") if name in ("tiny", "smoke") else name
            traces[name] = recorded(spec)  # kept in the trace store across runs
        if (name, cut) not in cache:
            cache[name, cut] = (traces[name], build(traces[name], media, cut=cut))
        return cache[name, cut]

    return get


# ---- what the screen should say, computed here from the state alone --------------------------


WORKLOADS = ["seed", "prefix", "tiny"]


@pytest.mark.parametrize("name", WORKLOADS)
def test_screen_matches_state_after_every_event(built, name):
    trace, scene = built(name)
    check_screen_equals_trace(trace, scene)  # frames, fill, bits, refs, tables, arrows, ...
    n = trace.geometry["n_pages"]
    rows = scene.replay.plan.rows_per_block
    for ev, snap in zip(trace.events, scene.snapshots):  # and what only the paged-cache kit shows
        st = ev.state
        where = f"{name} event {snap['event']} ({ev.kind})"
        labels = [expected_label(st, p) for p in range(n)]
        assert all(w in ("", lab) for w, lab in zip(snap["frame_words"], labels)), where
        assert {t: bool(d) for t, d in snap["done"].items()} == {
            t: st["status"][t] in ("finished", "done") for t in st["page_tables"]}, where
        assert snap["blocks"] == {t: max(1, -(-len(pages) // rows))
                                  for t, pages in st["page_tables"].items()}, where
        assert snap["status"].startswith(f"free_mask = {st['free_mask']} "), where
        if st["cached"]:
            assert " ".join(map(str, st["cached"])) in snap["status"], where


@pytest.mark.parametrize("name", WORKLOADS)
def test_tables_never_overlap_and_everything_is_on_screen(built, name):
    trace, scene = built(name)
    for snap in scene.snapshots:
        spans = sorted(snap["table_spans"].values())
        for (_, a1), (b0, _) in zip(spans, spans[1:]):
            assert a1 <= b0 + 1e-6, f"tables overlap at event {snap['event']}: {spans}"
    half_w, half_h = config.frame_width / 2, config.frame_height / 2
    for mob in scene.mobjects:
        for m in mob.get_family():
            if len(getattr(m, "points", [])):
                (x0, y0, _), (x1, y1, _) = m.get_corner([-1, -1, 0]), m.get_corner([1, 1, 0])
                assert -half_w <= x0 and x1 <= half_w and -half_h <= y0 and y1 <= half_h, m


@pytest.mark.parametrize("name", ["seed", "prefix"])
def test_frames_show_their_words_and_text_under_tables_stays_in_the_band(built, name):
    trace, scene = built(name)
    assert check_frame_words(trace, scene) > 0  # the words its slots hold, read from the trace
    plan, lay = scene.replay.plan, scene.replay.layout
    assert plan.text_lines in (1, 2)
    lowest = (TITLE_H + HEADER_H + plan.rows_per_block * ROW_H + FOOTER_H
              + plan.text_lines * FOOTER_H)
    assert lay.tables_top - lowest >= lay.tables_bottom - 1e-6
    if plan.text_lines == 2:  # full blocks side by side, inside the screen
        assert plan.block_w == MAX_BLOCK_W and plan.n_slots * plan.block_w <= lay.right - lay.left


def test_text_is_never_below_the_480p_floor(built):
    built("seed")
    assert all(size >= theme.FS_MIN for size, _ in Atlas._cache)
    with pytest.raises(ValueError):
        theme.text("too small", theme.FS_MIN - 1)


@pytest.mark.parametrize("name", WORKLOADS)
def test_every_event_is_replayed_once_and_page_events_get_a_beat(built, name):
    trace, scene = built(name)
    beats = scene.replay.beats
    order = [i for b in beats for i in b.events]
    assert order == [i for i, ev in enumerate(trace.events) if ev.phase != "init"]
    for b in beats:
        kinds = [type(trace.events[i]) for i in b.events]
        if b.kind == RUN:
            assert not set(PAGE_KINDS) & set(kinds), b
        else:
            page = [k for k in kinds if k in PAGE_KINDS]
            # one page event per beat, or a free with its cache, or an evict with its alloc
            assert len(page) <= 1 or page in ([Free, Cache], [Evict, Alloc]), b
            if page:
                assert type(trace.events[b.main]) is page[0], b


def test_compressed_runs_say_so(built):
    trace, scene = built("seed")
    runs = [b for b in scene.replay.beats if b.kind == RUN and b.steps[1] > b.steps[0]]
    assert runs
    said = scene.replay.captions_shown
    for b in runs:
        assert any(c.startswith(f"decode steps {b.steps[0]}-{b.steps[1]} compressed") for c in said)


@pytest.mark.parametrize("name", WORKLOADS)
def test_code_panels_show_the_real_source_and_the_lines_that_ran(built, name):
    trace, scene = built(name)
    check_panels(trace, scene)  # real source, a call that ran, the running line shown
    for panel in scene.panels:  # and what the paged-cache panel adds: whole listings, shading
        src, _ = source_lines(panel["file"], panel["fn"])
        listing = scene.replay.code.listings[(panel["file"], panel["fn"])]
        assert listing.text() == "\n".join(s.rstrip() for s in src)
        assert panel["ran"] == sorted(set(panel["frame"]["ran"]) & set(panel["rows"]))


def test_workload_spec_from_environment(workloads, tmp_path, monkeypatch):
    monkeypatch.setenv("ASTRAI_WORKLOAD", str(workloads / "smoke.toml"))
    trace = load()
    assert trace.workload["name"] == "smoke"
    path = tmp_path / "t.json"
    save_trace(trace, path)
    monkeypatch.setenv("ASTRAI_WORKLOAD", str(path))
    assert load().events == trace.events
    monkeypatch.delenv("ASTRAI_WORKLOAD")
    assert load().workload["name"] == "seed"


def test_real_render_writes_video_subtitles_and_sections(built, workloads, tmp_path):
    """A real -ql render (silent: NARRATION=off): its name says the workload, its .srt cues
    are the spoken lines at their speech's start times, and --save_sections cuts the scene
    where the replay said."""
    import json

    import srt

    _, scene = built("smoke")
    env = {**os.environ, "ASTRAI_WORKLOAD": str(workloads / "smoke.toml")}
    out = subprocess.run(
        [sys.executable, "-m", "manim", "render", "-ql", "--progress_bar", "none",
         "--save_sections", "--media_dir", str(tmp_path), "scenes/paged_cache.py",
         "PagedCacheScene"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    video = list((tmp_path / "videos" / "paged_cache" / "480p15").glob("*.mp4"))
    assert [v.name for v in video] == ["PagedCacheScene_smoke.mp4"]
    with av.open(str(video[0])) as container:  # frames counted, not the header's estimate
        seconds = sum(1 for p in container.demux(video=0) if p.pts is not None) / 15
    assert seconds == pytest.approx(scene.clock, abs=1 / 15 + 1e-3)

    # the subtitles are the spoken lines, each cue at its own speech within the line
    cues = list(srt.parse(video[0].with_suffix(".srt").read_text()))
    want = [(t + off, cue.text) for t, line in scene.lines
            for off, cue in zip(line.offsets, line.cues)]
    assert [c.content for c in cues] == [text for _, text in want]
    for cue, (start, _) in zip(cues, want):
        assert cue.start.total_seconds() == pytest.approx(start, abs=2e-3), cue.content
    # a spoken line starts with the beat it is spoken over
    spoken = [(start, line) for start, _, _, line in scene.replay.beat_times if line]
    assert [line for _, line in spoken] == [line.text for _, line in scene.lines]
    assert [t for t, _ in spoken] == pytest.approx([t for t, _ in scene.lines], abs=2e-3)

    index = json.loads((video[0].parent / "sections" / "PagedCacheScene_smoke.json").read_text())
    assert [s["name"] for s in index] == [name for _, name in scene.chapters]
    durations = [float(s["duration"]) for s in index]
    starts = [sum(durations[:k]) for k in range(len(durations))]
    assert starts == pytest.approx([t for t, _ in scene.chapters], abs=2 / 15)
    assert sum(durations) == pytest.approx(seconds, abs=2 / 15)


def test_a_trace_from_other_engine_source_is_refused(workloads, tmp_path, monkeypatch):
    """Code panels read today's source at the trace's line numbers: a stale trace would lie."""
    trace = load(str(workloads / "smoke.toml"))
    trace.source = {**trace.source, "astrai/inference/cache.py": "0" * 64}
    path = tmp_path / "old.json"
    save_trace(trace, path)
    with pytest.raises(TraceFormatError, match="another version of astrai/inference/cache.py"):
        load(str(path))


# ---- the beat registry, panels that mark the work ---------------------------------------------


@pytest.mark.parametrize("name", ["seed", "prefix", "preemption", "tiny"])
def test_every_planned_kind_has_a_registry_entry(built, name):
    trace, _ = built(name)
    beats = plan_beats(trace.events)
    kinds = {b.kind for b in beats} | {b.kind for b in teaser(beats, trace.events)}
    assert kinds <= set(KINDS), kinds - set(KINDS)


@pytest.mark.parametrize("name", [*WORKLOADS, "preemption"])
def test_panels_mark_the_line_that_did_the_work(built, name):
    trace, scene = built(name)
    kinds_seen = set()
    for panel in scene.panels:
        src, start = source_lines(panel["file"], panel["fn"])
        marked = src[panel["current"] - start]
        assert "observer" not in marked, (panel["kind"], panel["fn"], marked)
        effect = KINDS[panel["kind"]].panel(panel["fn"]).effect
        assert any(f in marked for f in effect), (panel["kind"], panel["fn"], marked)
        assert panel["current"] in panel["frame"]["ran"], "the marked line did not run"
        kinds_seen.add(panel["kind"])
    assert {"alloc", "free", "write", "gather", "admit"} <= kinds_seen


def test_a_wait_shows_where_the_scheduler_decided(built):
    trace, scene = built("preemption")
    waits = [p for p in scene.panels if p["kind"] == "wait"]
    assert waits and all(p["fn"] == "Scheduler._fit" for p in waits)
    for p in waits:
        ev = trace.events[p["event"]]
        assert isinstance(ev, Wait)


def test_admit_captions_say_what_the_scheduler_decided_with(built):
    trace, scene = built("prefix")
    admits = [ev for ev in trace.events if isinstance(ev, Admit)]
    said = " | ".join(scene.replay.captions_shown)
    for ev in admits:
        # needed/available are the numbers _fit compared; the caption reads them back.
        assert ev.needed == ev.pages_needed - len(ev.hits)
        assert f"{ev.task}: pages_for({ev.n_tokens})" in said
    revived = [ev for ev in admits if ev.available < bin(ev.state["free_mask"]).count("1")
               + len(ev.state["cached"])]
    assert revived, "the prefix workload should admit a request that revives cached pages"


# ---- the teaser cut ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["seed", "prefix", "tiny"])
def test_the_teaser_applies_every_event_and_ends_where_the_trace_ends(built, name):
    trace, scene = built(name, "teaser")
    _, full = built(name)
    assert [s["event"] for s in scene.snapshots] == list(range(len(trace.events)))
    when = ("table_spans", "at", "beat")  # what is shown, not when or in which beat
    last = {k: v for k, v in scene.snapshots[-1].items() if k not in when}
    assert last == {k: v for k, v in full.snapshots[-1].items() if k not in when}
    st = trace.events[-1].state
    assert last["refs"] == st["refs"] and last["tables"] == {
        t: [[k, p] for k, p in enumerate(pages)] for t, pages in st["page_tables"].items()}
    assert scene.clock < full.clock / 3
    # Every beat is a montage (or the tail), and each montage says what it compressed.
    assert {spec.kind for spec in scene.replay.beats} <= {MONTAGE, TAIL}
    montages = [spec for spec in scene.replay.beats if spec.kind == MONTAGE]
    details = scene.replay.details_shown[-len(scene.replay.beats):]
    for spec, detail in zip(montages, details):
        a, b = spec.steps
        assert detail.startswith(f"steps {a}-{b} compressed" if b > a else f"step {a} compr")


def test_the_seed_story_says_the_first_question_and_each_growth_as_it_was(built):
    """The first arrival is said with its real chat message; a request's first growth is never
    called "again" (what the narrator says of a growth depends on the run, not on a story)."""
    trace, scene = built("seed")
    said = [line.text for _, line in scene.lines]
    first = next(ev for ev in trace.events if isinstance(ev, Arrive))
    chat = next(r["chat"] for r in trace.workload["request"] if r["name"] == first.task)
    assert chat in first.prompt_text
    assert sum(f'Request {first.task} arrives, asking "{chat}"' in t and
               f"its prompt is {first.prompt_len} tokens." in t for t in said) == 1
    grows = [ev.task for ev in trace.events if isinstance(ev, Grow)]
    for text in said:
        if " is full again" in text:
            assert grows.count(text.split(" is full again")[0]) > 1, text
    for task in dict.fromkeys(grows[1:]):  # each later grower's first growth, in order
        if task != grows[0]:
            assert any(t.startswith(f"{task}'s last page fills up too") for t in said), said


def test_the_seed_teaser_is_short(built):
    _, scene = built("seed", "teaser")
    assert 8 <= scene.clock <= TEASER_SCENE_MAX  # the promo's budget a scene
    kinds = [trace_kind for _, trace_kind, _, _ in scene.replay.beat_times]
    assert kinds.count(MONTAGE) >= 6  # still a story: arrivals, growth, frees, reuse


def test_teaser_panels_mark_the_work(built):
    _, scene = built("prefix", "teaser")
    assert scene.panels
    for panel in scene.panels:
        src, start = source_lines(panel["file"], panel["fn"])
        marked = src[panel["current"] - start]
        assert any(f in marked for f in KINDS[panel["kind"]].panel(panel["fn"]).effect), marked


# ---- names, packages -------------------------------------------------------------------------


def test_each_render_is_named_for_its_scene_workload_and_cut(monkeypatch, tmp_path):
    from scenes.framework.story import StoryScene

    class Probe(StoryScene):
        WORKLOAD = "seed"

        def story(self):
            pass

    def name(env: str | None, cut: str | None = None) -> str:
        if env is None:
            monkeypatch.delenv("ASTRAI_WORKLOAD", raising=False)
        else:
            monkeypatch.setenv("ASTRAI_WORKLOAD", env)
        with tempconfig({"format": "none", "media_dir": str(tmp_path), "verbosity": "WARNING"}):
            return Probe(cut=cut).output_name()

    assert name(None) == "Probe"
    assert name("seed") == "Probe"
    assert name("prefix") == "Probe_prefix"
    assert name("some/dir/mine.toml") == "Probe_mine"
    assert name(None, "teaser") == "Probe_teaser"
    assert len({name(None), name("prefix"), name("batching"), name(None, "teaser")}) == 4


def test_a_still_is_written_where_the_readme_says(workloads, tmp_path):
    env = {**os.environ, "ASTRAI_WORKLOAD": str(workloads / "smoke.toml")}
    out = subprocess.run(
        [sys.executable, "-m", "manim", "render", "-ql", "-s", "--progress_bar", "none",
         "--media_dir", str(tmp_path), "scenes/paged_cache.py", "PagedCacheScene"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    pngs = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")]
    assert pngs == ["images/paged_cache/PagedCacheScene_smoke.png"]


def test_scene_files_do_not_edit_sys_path_and_scenes_is_packaged():
    import tomllib

    for path in (ROOT / "scenes").rglob("*.py"):
        assert "sys.path" not in path.read_text(), path
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "scenes*" in project["tool"]["setuptools"]["packages"]["find"]["include"]


def test_make_render_lists_every_storyboard_scene(tmp_path):
    from scenes.storyboard import STORYBOARD

    out = subprocess.run([sys.executable, "scripts/scenes.py"], cwd=ROOT, capture_output=True,
                         text=True, timeout=30, check=True).stdout.split()
    assert out == [f"{m.replace('.', '/')}.py:{c}" for m, c in STORYBOARD]
    assert all((ROOT / entry.split(":")[0]).is_file() for entry in out)
    # A listed scene without its file stops the render instead of being left out.
    fake = tmp_path / "scripts"
    (tmp_path / "scenes").mkdir()
    fake.mkdir()
    (fake / "scenes.py").write_text((ROOT / "scripts" / "scenes.py").read_text())
    (tmp_path / "scenes" / "storyboard.py").write_text(
        'STORYBOARD = [("scenes.nowhere", "NoScene")]\n')
    bad = subprocess.run([sys.executable, "scripts/scenes.py"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "scenes/nowhere.py:NoScene" in bad.stderr


# ---- narrative beats of a scene's own --------------------------------------------------------


def test_a_scene_puts_its_own_beats_between_the_traces(built, tmp_path):
    """A StoryScene steering a replay with beats of its own: they land between trace beats, in
    the subtitles and the clock, and the trace is still shown event for event."""
    from manim import Square

    from scenes.framework.kit.board import Board
    from scenes.framework.replay import StoryReplay
    from scenes.framework.story import StoryScene

    trace, full = built("tiny")
    shares = [i for i, e in enumerate(trace.events) if isinstance(e, Share)]
    frees = [i for i, e in enumerate(trace.events) if isinstance(e, Free) and i > shares[0]]

    class Explained(StoryScene):
        WORKLOAD = "tiny"

        def story(self):
            rp = self.replay = StoryReplay(self, trace, title="Explained")
            card = Board(rp.layout, "a card")
            card.add(Square(0.5))

            def explain(rp, i):
                self.shot("a prefix hit: pages are shared", "",
                          rp.beat(build=lambda beat: rp.show_board(beat, card, "card", stay=True),
                                  code=(rp.line_of(i, "share.inc_ref"), i), name="narrative"),
                          line="A prefix hit: the pages are shared.")

            def card_goes(rp, i):
                self.shot("the card goes", "",
                          rp.beat(build=lambda beat: beat.vanish(rp.notes, card),
                                  name="narrative"))

            rp.hook_before(shares[0], explain)
            rp.hook_before(frees[0], card_goes)
            rp.run()

    with tempconfig(state_only(tmp_path, frame_rate=15)):
        scene = Explained(skip_animations=True)
        scene.render()
    assert [s["event"] for s in scene.snapshots] == [s["event"] for s in full.snapshots]
    times = scene.replay.beat_times
    kinds = [k for _, k, _, _ in times]
    at = kinds.index("narrative")
    assert kinds[at + 1] == "share" and times[at][3] == "A prefix hit: the pages are shared."
    assert "a prefix hit: pages are shared" in scene.replay.captions_shown
    assert kinds.count("narrative") == 2
    # Its cue is on screen while it is spoken, and cut 2 frames before the next one starts.
    cue = next(c for c in scene.cues if c[2] == times[at][3])
    assert cue[0] == pytest.approx(times[at][0])
    nxt = next(c for c in scene.cues if c[0] > cue[0])
    assert cue[0] + cue[1] <= nxt[0] - 2 / 15 + 1e-3
    assert scene.clock > full.clock
    assert any(p["kind"] == "story" and p["fn"].endswith("inc_ref") for p in scene.replay.panels)


def test_a_mobject_that_comes_and_goes_in_one_beat_leaves_no_animation_behind():
    """Teaser montages can add and drop a table in one beat: nothing inside it may still be
    animated (Manim would add the detached member to the scene, a ghost on top)."""
    from manim import Square, VGroup

    from scenes.framework.kit.anim import Beat

    layer, inner = VGroup(), Square()
    table = VGroup(inner)
    beat = Beat()
    beat.appear(layer, table)
    beat.touch(inner)
    inner.shift([1, 0, 0])
    beat.vanish(layer, table)
    assert beat.animations() == [] and table not in layer
