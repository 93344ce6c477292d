"""The promo's join, checked on a smoke promo: a title card, then a chapter card and the
paged-cache scene on a one-request workload, rendered for real at 480p15 and joined. Expected
lengths, cue times and chapters are computed here from the part files themselves (frames
decoded and counted, each part's own .srt parsed), not from the promo code's own probe.

Also: the closing card's figures are the comparison fields they claim (stand-in results, since
the comparisons are separate modules), parts already up to date are not rendered again, and
parts with other codec parameters are re-encoded, not copied.
"""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import pytest

av = pytest.importorskip("av")
srt = pytest.importorskip("srt")
pytest.importorskip("manim")

from scene_checks import SMOKE  # noqa: E402

from promo import parts as P  # noqa: E402
from promo.build import chapters_of  # noqa: E402
from promo.join import join, probe, read_chapters  # noqa: E402
from promo.subtitles import (  # noqa: E402
    Chapter,
    Cue,
    SubtitleError,
    check_cues,
    read_chapters_vtt,
    shift,
)
from scenes import cards  # noqa: E402

FPS = 15


def frames_in(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def cues_of(path) -> list[tuple[float, float, str]]:
    if path is None or not path.exists():
        return []
    return [(s.start.total_seconds(), s.end.total_seconds(), s.content)
            for s in srt.parse(path.read_text(encoding="utf-8"))]


@pytest.fixture(scope="module")
def smoke(smoke_promo):  # built once a session (conftest.py): the page tests use it too
    return smoke_promo


def test_duration_is_the_sum_of_the_parts(smoke):
    counts = [frames_in(r.mp4) for r in smoke.cut.parts]
    assert all(counts)
    total = frames_in(smoke.cut.mp4)
    assert total == sum(counts)
    with av.open(str(smoke.cut.mp4)) as c:
        assert abs(c.duration / av.time_base - sum(counts) / FPS) <= 1 / FPS
    assert smoke.cut.how == "copied packets"  # one render setting: nothing to re-encode


def test_subtitles_hold_every_part_in_order_without_overlap(smoke):
    expected, start = [], 0.0
    for r in smoke.cut.parts:
        own = cues_of(r.srt)
        length = frames_in(r.mp4) / FPS
        expected += [(round(start + a, 3), round(start + min(b, length), 3), text)
                     for a, b, text in own]
        start += length
    joined = [(round(a, 3), round(b, 3), t) for a, b, t in cues_of(smoke.cut.srt)]
    # .srt times are whole milliseconds, and a part starts at a frame boundary (1/15 s is not
    # a whole number of ms): the joined file and this sum may round the last ms apart.
    assert [t for *_, t in joined] == [t for *_, t in expected]
    for (a, b, _), (a2, b2, _) in zip(joined, expected):
        assert abs(a - a2) <= 0.0011 and abs(b - b2) <= 0.0011
    assert joined, "the cards are subtitled"
    for (_, end, _), (nxt, _, _) in zip(joined, joined[1:]):
        assert nxt >= end
    # every part that says something is in the joined file
    said = {r.part.name for r in smoke.cut.parts if cues_of(r.srt)}
    assert {"TitleCard_teaser", "ChapterCard_PagedCacheScene"} <= said


def test_chapters_match_the_parts(smoke):
    lengths = [frames_in(r.mp4) / FPS for r in smoke.cut.parts]
    card, scene = smoke.parts[1], smoke.parts[2]
    assert card.chapter == scene.chapter  # the card opens its scene's chapter
    want = [("Opening", 0.0, lengths[0]), (scene.chapter, lengths[0], sum(lengths))]
    for got in (read_chapters(smoke.cut.mp4), read_chapters_vtt(smoke.cut.vtt)):
        assert [c.title for c in got] == [w[0] for w in want]
        for c, (_, a, b) in zip(got, want):
            assert abs(c.start - a) <= 1 / FPS and abs(c.end - b) <= 1 / FPS
    # what the chapter card says is the chapter the metadata names
    card_cues = cues_of(smoke.cut.parts[1].srt)
    assert card_cues and card_cues[0][2].startswith(scene.chapter)


def test_up_to_date_parts_are_not_rendered_again(smoke):
    assert not any(r.skipped for r in smoke.cut.parts)
    assert all(r.skipped for r in smoke.again.parts)
    assert frames_in(smoke.again.mp4) == frames_in(smoke.cut.mp4)


def test_a_changed_workload_makes_its_parts_stale(tmp_path):
    wl = tmp_path / "w.toml"
    wl.write_text(SMOKE)
    part = P.scene_parts("scenes.paged_cache", "PagedCacheScene", 1, "full", str(wl),
                         cards=False)[0]
    shared = P.shared_deps()
    before = P.digest(part, ["x"], shared)
    assert P.digest(part, ["x"], shared) == before
    wl.write_text(SMOKE.replace("max_new_tokens = 2", "max_new_tokens = 3"))
    assert P.digest(part, ["x"], shared) != before
    assert P.digest(part, ["y"], shared) != P.digest(part, ["x"], shared)


def clip(path, size, n, color):
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        import numpy as np

        for i in range(n):
            img = np.full((size[1], size[0], 3), color, dtype=np.uint8)
            img[:, : (i * 4) % size[0]] = 255
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, FPS)
            out.mux(s.encode(f))
        out.mux(s.encode())


def test_parts_with_other_codec_parameters_are_reencoded(tmp_path):
    a, b, c = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"
    clip(a, (64, 48), 7, 40)
    clip(b, (64, 48), 5, 90)
    clip(c, (96, 48), 6, 140)
    chapters = [Chapter(0, 1, "x")]
    same = join([probe(a), probe(b)], tmp_path / "ab.mp4", chapters)
    assert same == "copied packets" and frames_in(tmp_path / "ab.mp4") == 12
    other = join([probe(a), probe(c)], tmp_path / "ac.mp4", chapters)
    assert other.startswith("re-encoded") and "width" in other
    assert frames_in(tmp_path / "ac.mp4") == 13
    with av.open(str(tmp_path / "ac.mp4")) as v:
        assert v.streams.video[0].codec_context.width == 64  # the first part's size


def test_cues_never_run_past_their_part():
    cues = shift([Cue(0.0, 1.0, "a"), Cue(1.0, 9.0, "b")], 10.0, 2.0, "p")
    assert [(c.start, c.end) for c in cues] == [(10.0, 11.0), (11.0, 12.0)]
    check_cues(cues + shift([Cue(0.0, 1.0, "c")], 12.0, 1.0, "q"))
    with pytest.raises(SubtitleError, match="before"):
        check_cues(cues + shift([Cue(0.0, 1.0, "c")], 11.5, 1.0, "q"))


def test_chapters_merge_a_card_with_its_scene():
    parts = [P.Part("t", "f", "T", "Opening"), P.Part("c", "f", "C", "1. X"),
             P.Part("s", "f", "S", "1. X"), P.Part("z", "f", "Z", "End")]
    probes = [SimpleNamespace(duration=Fraction(d)) for d in (2, 1, 5, 3)]
    got = chapters_of(parts, probes)
    assert [(c.title, c.start, c.end) for c in got] == [("Opening", 0, 2), ("1. X", 2, 8),
                                                        ("End", 8, 11)]


# ---- the closing card: each figure is the fields of a comparison, and says where from -------


def test_closing_figures_are_the_comparison_fields():
    mem = SimpleNamespace(budget_bytes=3 << 20, dense_reserved_bytes=3 << 20,
                          paged_reserved_bytes=786432, used_bytes=700000, dense_fit=2,
                          paged_fit=7, moment=41)
    f = cards.memory_figure(mem, "src")
    assert "7 requests fit where contiguous fits 2" in f.headline and "3.0 MiB" in f.headline
    assert f.detail.startswith("at step 41: reserved 768.0 KiB paged vs 3.0 MiB contiguous")
    assert "683.6 KiB of K/V in use" in f.detail and f.source == "src"
    pre = SimpleNamespace(prompt_tokens_cached=96, prompt_tokens_computed=40, pages_shared=6,
                          off_prompt_tokens_computed=136, outputs_equal=True)
    f = cards.prefix_figure(pre, "src")
    assert "96 of 136 prompt tokens" in f.headline and "6 shared pages" in f.headline
    assert "40 prompt tokens computed instead of 136" in f.detail and "same tokens" in f.detail
    bat = SimpleNamespace(continuous_steps=30, static_steps=52, continuous_tokens_per_step=3.2,
                          static_tokens_per_step=1.846, outputs_equal=False)
    f = cards.batching_figure(bat, "src")
    assert "30 steps" in f.headline and "takes 52" in f.headline
    assert "3.20 vs 1.85 tokens per step" in f.detail and "DIFFER" in f.detail


def test_closing_source_names_the_call_and_its_workload():
    def compare(workload="batching"):
        return None

    assert cards.source_of("batching", compare, SimpleNamespace()) == \
        "from astrai.compare.batching.compare(workload='batching')"
    assert cards.source_of("memory", compare, SimpleNamespace(workload="seed")) == \
        "from astrai.compare.memory.compare(workload='seed')"


def test_closing_card_speaks_every_figure_and_the_command(tmp_path):
    from manim import tempconfig

    figs = [cards.Figure("H1 a", "d1", "s1", (("x", 3), ("y", 5)), "u", "First one said.",
                         "3 not 5"),
            cards.Figure("H2 b", "d2", "s2", (("x", 2), ("y", 1)), "u", "Second one said.",
                         "2 not 1")]
    for cut in ("full", "teaser"):
        with tempconfig({"format": "none", "disable_caching": True, "media_dir": str(tmp_path),
                         "progress_bar": "none", "verbosity": "WARNING"}):
            scene = cards.ClosingCard(cut=cut, skip_animations=True)
            scene.figures = figs
            scene.render()
        said = [line.text for _, line in scene.lines]
        if cut == "full":
            assert said[:2] == ["First one said.", "Second one said."]
        else:  # one line for every figure's numbers
            assert said[0] == "Measured on real runs: 3 not 5; 2 not 1."
        outro = cards.OUTRO if cut == "full" else cards.SHORT_OUTRO
        assert said[-1] == outro and cards.COMMAND in outro
        starts = [s for s, _, _ in scene.cues]
        ends = [s + d for s, d, _ in scene.cues]
        assert starts == sorted(starts) and all(b >= a for a, b in zip(ends, starts[1:]))


def test_closing_bars_are_the_figures_numbers_to_scale():
    fig = cards.Figure("h", "d", "s", (("paged", 10), ("contiguous", 5)), "requests")
    bars = cards.Bars(fig, 4.0)
    wide = [b.width for b in bars.bars]
    assert wide[0] == pytest.approx(4.0) and wide[1] == pytest.approx(2.0)
    assert [t.text if hasattr(t, "text") else "" for t in bars.labels]


# ---- sound ----------------------------------------------------------------------------------


def test_every_part_and_the_cut_carry_narration_as_long_as_the_picture(smoke):
    from promo.audio import audio_seconds

    for r in smoke.cut.parts:
        video = frames_in(r.mp4) / FPS
        sound = audio_seconds(r.mp4)
        assert sound is not None, r.part.name
        assert abs(sound - video) <= 1 / FPS, (r.part.name, sound, video)
    video = frames_in(smoke.cut.mp4) / FPS
    sound = audio_seconds(smoke.cut.mp4)
    assert sound is not None
    assert abs(sound - video) < AAC_FRAME / RATE  # one encode: at most its last frame's padding


RATE = 48_000
AAC_FRAME = 1024  # samples: a player may hear the last one's padding, never more


def heard(path):
    """The first audio stream as a player plays it: decoded frames back to back, their time
    stamps ignored (the decoder applies the container's priming and end trimming)."""
    import numpy as np

    with av.open(str(path)) as c:
        got = []
        for f in c.decode(c.streams.audio[0]):
            assert f.sample_rate == RATE
            got.append(f.to_ndarray().astype(np.float64).reshape(len(f.layout.channels), -1)
                       .mean(axis=0))
    return np.concatenate(got)


def lag(joined, own, at: int, probe_len: int = RATE // 8, reach: int = RATE // 5) -> int:
    """Where the first loud stretch of `own` (a part's sound, heard alone) lies in `joined`
    (the cut's, heard), minus where it belongs when the part starts at sample `at`: the best
    normalised correlation within `reach` samples either side."""
    import numpy as np

    loud = np.flatnonzero(np.abs(own) > 0.05)
    assert len(loud), "the part says something"
    k = int(loud[0])
    probe_ = own[k:k + probe_len]
    lo = max(at + k - reach, 0)
    window = joined[lo:at + k + reach + len(probe_)]
    score = np.correlate(window, probe_, mode="valid")
    energy = np.sqrt(np.convolve(window ** 2, np.ones(len(probe_)), mode="valid")) + 1e-12
    return lo + int(np.argmax(score / energy)) - (at + k)


def test_sound_and_picture_meet_at_every_chapter_as_a_player_hears_them(smoke):
    """Each part's speech is heard, in the joined cut decoded back to back, at the sample its
    picture starts (to a few samples, not a codec frame per part), and the sound ends with the
    picture within one codec frame."""
    joined, start = heard(smoke.cut.mp4), 0
    for r in smoke.cut.parts:
        assert abs(lag(joined, heard(r.mp4), start)) <= 8, r.part.name
        start += frames_in(r.mp4) * RATE // FPS
    assert 0 <= len(joined) - start < AAC_FRAME


def voiced_clip(path, n: int, seed: int) -> None:
    """A clip of `n` frames with a sound as long as it (noise from a seeded generator)."""
    import numpy as np

    from promo import audio

    clip(path, (64, 48), n, 40 + seed)
    noise = np.random.default_rng(seed).standard_normal(n * RATE // FPS) * 4000
    audio.mux(path, noise.clip(-32000, 32000).astype(np.int16))


@pytest.mark.parametrize("reencode", [False, True])
def test_joined_sound_has_no_gap_between_parts(tmp_path, reencode):
    """Parts whose sound ends mid codec frame (7, 11, 5 frames of 3200 samples; AAC frames
    are 1024): joined, each part's sound is heard where its picture starts, whether the
    picture's packets are copied or encoded again, and in the WebM made from the cut."""
    from promo import extras

    counts = (7, 11, 5)
    paths = [tmp_path / f"p{i}.mp4" for i in range(len(counts))]
    for i, (path, n) in enumerate(zip(paths, counts)):
        voiced_clip(path, n, i)
    cut = tmp_path / "cut.mp4"
    how = join([probe(p) for p in paths], cut, [Chapter(0, 1, "x")], reencode=reencode)
    assert how.startswith("re-encoded") == reencode
    webm = tmp_path / "cut.webm"
    extras.webm(cut, webm, [Chapter(0, 1, "x")])
    total = sum(counts) * RATE // FPS
    for made in (cut, webm):
        got = heard(made)
        start = 0
        for path, n in zip(paths, counts):
            assert abs(lag(got, heard(path), start, RATE // 50)) <= 8, (made.name, path.name)
            start += n * RATE // FPS
        assert 0 <= len(got) - total < AAC_FRAME, made.name


def test_a_silent_part_among_narrated_ones_is_refused(tmp_path):
    from promo.join import JoinError

    voiced_clip(tmp_path / "a.mp4", 4, 0)
    clip(tmp_path / "b.mp4", (64, 48), 4, 90)
    target = tmp_path / "ab.mp4"
    with pytest.raises(JoinError, match="b.mp4: no audio stream"):
        join([probe(tmp_path / "a.mp4"), probe(tmp_path / "b.mp4")], target,
             [Chapter(0, 1, "x")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]  # nothing written


def test_the_cut_is_levelled_for_sharing(smoke):
    from promo.audio import level

    lv = level(smoke.cut.mp4)
    assert lv.problems() == [], lv


def test_the_webm_carries_opus_at_48k(smoke, tmp_path):
    from promo import extras

    target = tmp_path / "smoke.webm"
    extras.webm(smoke.cut.mp4, target, smoke.cut.chapters)
    with av.open(str(target)) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == "opus" and a.codec_context.sample_rate == 48_000
        assert c.streams.video[0].codec_context.name == "vp9"


def test_the_smoke_subtitles_keep_the_reading_limits(smoke):
    from scenes.framework.cues import Timed, problems

    timed = [Timed(a, b, t) for a, b, t in cues_of(smoke.cut.srt)]
    assert timed and problems(timed, 1 / FPS) == []


def test_one_stream_writes_what_manims_writer_writes(smoke, tmp_path, monkeypatch):
    """The render server's single-stream writer: same frames, same timing, same subtitles as
    manim's own writer (a partial movie per animation, joined)."""
    from promo.render import render_all

    title = smoke.cut.parts[0]
    monkeypatch.setenv("NARRATION", "on")  # as the smoke promo was rendered
    stock = render_all([title.part], tmp_path, "l", 1, log=lambda *_: None, one_stream=False)[0]
    assert frames_in(stock.mp4) == frames_in(title.mp4)
    assert cues_of(stock.srt) == cues_of(title.srt)
    with av.open(str(stock.mp4)) as a, av.open(str(title.mp4)) as b:
        fa = [f.to_ndarray(format="gray") for f in a.decode(video=0)][:: 20]
        fb = [f.to_ndarray(format="gray") for f in b.decode(video=0)][:: 20]
    for x, y in zip(fa, fb):  # the same pictures, up to x264's lossy coding of each
        assert abs(x.astype(int) - y.astype(int)).mean() < 2.0
    from promo.audio import audio_seconds

    # both carry the narration, as long as the picture
    for mp4 in (stock.mp4, title.mp4):
        assert abs(audio_seconds(mp4) - frames_in(mp4) / FPS) <= 1 / FPS


def test_the_teaser_plan_fits_its_limit(tmp_path, monkeypatch):
    """Every part of the teaser's plan built state-only, as the promo renders it (its env, the
    scenes' own workloads): each storyboard scene within its share, the whole under the limit
    the promo enforces, with the cards' and scenes' real timings rather than estimates."""
    import importlib

    from manim import tempconfig
    from scene_checks import TEASER_SCENE_MAX, state_only

    from promo.build import TEASER_MAX
    from scenes.storyboard import STORYBOARD

    lengths = {}
    for part in P.plan("teaser", log=lambda *_: None):
        for k, v in part.env.items():
            monkeypatch.setenv(k, v)
        cls = getattr(importlib.import_module(part.file.removesuffix(".py").replace("/", ".")),
                      part.cls)
        with tempconfig(state_only(tmp_path)):
            scene = cls(skip_animations=True)
            scene.render()
        lengths[part.cls] = scene.clock
    # the teaser opens on a real run: no title card; scenes without a teaser shot left out
    shots = [cls for m, cls in STORYBOARD if P.in_teaser(m, cls)]
    assert 5 <= len(shots) <= 7  # five to seven shots of one idea each (the hook included)
    assert list(lengths) == [*shots, "ClosingCard"]
    for cls in shots:
        assert 8 <= lengths[cls] <= TEASER_SCENE_MAX, (cls, lengths[cls])
    assert sum(lengths.values()) <= TEASER_MAX - 3, lengths  # a margin for frame rounding


def test_a_cue_with_control_characters_reaches_the_srt_without_them(tmp_path):
    from promo.subtitles import read_srt, write_srt

    cues = [Cue(0.0, 1.0, "Page four\x1b[2J is\x07 free\u202e.\n\n\x1b]0;title\x07second line"),
            Cue(1.5, 2.5, "plain\r\n\x00words")]
    path = tmp_path / "cut.srt"
    write_srt(cues, path)
    text = path.read_text(encoding="utf-8")
    assert all(ch.isprintable() or ch == "\n" for ch in text), repr(text)
    assert [c.text for c in read_srt(path)] == ["Page four is free.\nsecond line",
                                                "plain\nwords"]
