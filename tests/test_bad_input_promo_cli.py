"""Bad settings for the promo build and bad chapter times: one line naming what was wrong (exit 2
at the command line), nothing started and nothing written.

`--jobs -1` used to wait forever for a render that never started; `--teaser-max nan` switched
the teaser's length check off (every comparison with nan is false); a chapter time of nan, or
chapters out of order or overlapping, went into the mp4, the WebM and the page's track.
"""

from __future__ import annotations

import math
from fractions import Fraction
from types import SimpleNamespace

import pytest

pytest.importorskip("av")

import promo.__main__ as promo_cli  # noqa: E402
from promo import build as B  # noqa: E402
from promo import parts as P  # noqa: E402
from promo import render as R  # noqa: E402
from promo import site as S  # noqa: E402
from promo.subtitles import (  # noqa: E402
    Chapter,
    SubtitleError,
    read_chapters_vtt,
    write_chapters_vtt,
)


@pytest.fixture
def nothing_built(monkeypatch):
    """The arguments are refused before anything is built: a build here fails the test."""
    def boom(*a, **k):
        raise AssertionError("the build started")

    monkeypatch.setattr(promo_cli, "build", boom)


@pytest.mark.parametrize("argv,value", [
    (["--jobs", "-1"], "-1"), (["--jobs", "0"], "0"), (["--jobs", "two"], "two"),
    (["--jobs", "1.5"], "1.5"),
    (["--teaser-max", "nan"], "nan"), (["--teaser-max", "-5"], "-5"),
    (["--teaser-max", "inf"], "inf"), (["--teaser-max=-inf"], "-inf"),
    (["--teaser-max", "ninety"], "ninety"),
])
def test_bad_settings_are_one_line_exit_2(capsys, nothing_built, argv, value):
    with pytest.raises(SystemExit) as info:
        promo_cli.main(argv)
    out = capsys.readouterr()
    assert info.value.code == 2 and out.out == ""
    assert out.err.count("\n") == 1 and out.err.startswith("python -m promo: error: ")
    option = argv[0].partition("=")[0]
    assert f"argument {option}: " in out.err and repr(value) in out.err


def test_good_settings_reach_the_build(monkeypatch):
    seen = []
    monkeypatch.setattr(promo_cli, "build", lambda *a, **k: seen.append(a))
    assert promo_cli.main(["--jobs", "3", "--teaser-max", "0"]) == 0  # 0: no limit
    assert promo_cli.main(["--teaser-max", "60.5"]) == 0
    assert [(a[3], a[6]) for a in seen] == [(3, None), (None, 60.5)]


@pytest.mark.parametrize("kw", [{"jobs": -1}, {"jobs": 0}, {"jobs": True}, {"jobs": 2.0},
                                {"teaser_max": math.nan}, {"teaser_max": math.inf},
                                {"teaser_max": -5.0}, {"teaser_max": 0}])
def test_the_build_refuses_them_before_starting_anything(monkeypatch, tmp_path, kw):
    def boom(*a, **k):
        raise AssertionError("the render server started")

    monkeypatch.setattr(B, "start_server", boom)
    with pytest.raises(R.BadSetting) as info:
        B.build(("teaser",), "l", tmp_path, **kw)
    assert "\n" not in str(info.value) and next(iter(kw)) in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_render_all_refuses_fewer_than_one_job_and_stops_its_server(tmp_path):
    stopped = []
    server = SimpleNamespace(stdin=SimpleNamespace(close=lambda: stopped.append("closed")),
                             wait=lambda: stopped.append("waited"))
    with pytest.raises(R.BadSetting, match="jobs"):
        R.render_all([], tmp_path, "l", -1, server=server)
    assert stopped == ["closed", "waited"]  # a refused call still shuts its server down


# ---- chapters ----------------------------------------------------------------------------------

@pytest.mark.parametrize("start,end", [(math.nan, 1.0), (0.0, math.nan), (0.0, math.inf),
                                       (-1.0, 2.0), (2.0, 1.0), (1.0, 1.0)])
def test_a_chapter_with_times_that_are_not_a_span_is_refused(start, end):
    with pytest.raises(SubtitleError, match="chapter 'x'"):
        Chapter(start, end, "x")


def test_a_part_of_nan_seconds_gives_no_chapters():
    parts = [P.Part("t", "f", "T", "Opening"), P.Part("s", "f", "S", "1. X")]
    probes = [SimpleNamespace(duration=Fraction(2)), SimpleNamespace(duration=math.nan)]
    with pytest.raises(SubtitleError):
        B.chapters_of(parts, probes)


VTT = "WEBVTT\n\nchapter-1\n{}\nOpening\n\nchapter-2\n{}\n1. Pages\n"


@pytest.mark.parametrize("first,second,words", [
    ("00:00:00.000 --> 00:00:nan", "00:00:02.000 --> 00:00:05.000", "nan"),
    ("00:00:00.000 --> 00:00:02.000", "00:00:02.000 --> 00:00:inf", "inf"),
    ("00:00:03.000 --> 00:00:05.000", "00:00:00.000 --> 00:00:03.000", "out of order"),
    ("00:00:00.000 --> 00:00:03.000", "00:00:02.000 --> 00:00:05.000", "overlapping"),
])
def test_a_chapter_track_with_bad_times_is_refused(tmp_path, first, second, words):
    vtt = tmp_path / "cut.chapters.vtt"
    vtt.write_text(VTT.format(first, second), encoding="utf-8")
    with pytest.raises(SubtitleError, match=words):
        read_chapters_vtt(vtt)
    # the page names the file in one line, through the same reader
    with pytest.raises(S.SiteError) as info:
        S.parsed(read_chapters_vtt, vtt)
    assert "cut.chapters.vtt" in str(info.value) and "\n" not in str(info.value)


def test_a_good_track_reads_back_and_touching_chapters_are_fine(tmp_path):
    vtt = tmp_path / "cut.chapters.vtt"
    chapters = [Chapter(0.0, 2.0, "Opening"), Chapter(2.0, 5.5, "1. Pages"),
                Chapter(6.0, 7.0, "End")]  # a gap is allowed, an overlap is not
    write_chapters_vtt(chapters, vtt)
    assert read_chapters_vtt(vtt) == chapters


def test_chapters_out_of_order_are_not_written(tmp_path):
    vtt = tmp_path / "cut.chapters.vtt"
    with pytest.raises(SubtitleError, match="chapter 2 'B' starts at 1.000 s"):
        write_chapters_vtt([Chapter(2.0, 3.0, "A"), Chapter(1.0, 2.0, "B")], vtt)
    assert not vtt.exists()
