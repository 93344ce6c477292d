"""Second round: the promo's build cache trusts a part only if its stamp reads and the file still
probes to the frames and duration the stamp recorded; anything unreadable is rendered again."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("av")
pytest.importorskip("manim")

from test_promo import clip  # noqa: E402

from promo import parts as P  # noqa: E402
from promo.render import expected_wall, job_of, output_of  # noqa: E402


@pytest.fixture
def job(tmp_path):
    """A rendered part as the build leaves it: its mp4 and the stamp done() writes."""
    part = P.title_part("teaser")
    job = job_of(part, tmp_path / "build", "l", [])
    job.start()
    job.mp4.parent.mkdir(parents=True, exist_ok=True)
    clip(job.mp4, (64, 48), 9, 40)
    job.done(0, 1.5, 1.0, False, lambda *_: None)
    assert job.up_to_date()
    return job


def test_the_stamp_records_what_the_part_probes_to(job):
    stamp = json.loads(job.stamp.read_text())
    assert stamp["frames"] == 9 and stamp["duration"] == "3/5" and stamp["wall"] == 1.5


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.0])
def test_a_part_truncated_after_its_stamp_is_rendered_again(job, cut):
    data = job.mp4.read_bytes()
    job.mp4.write_bytes(data[: int(len(data) * cut)])
    assert not job.up_to_date()


def test_a_part_replaced_by_a_shorter_valid_one_is_rendered_again(job):
    clip(job.mp4, (64, 48), 5, 40)
    assert not job.up_to_date()


@pytest.mark.parametrize("text", ["", "{", "[]", "null", '"x"', '{"digest": 5}',
                                  '{"digest": null, "frames": "9"}', "\x00\xff"])
def test_an_empty_or_malformed_stamp_means_render_again(job, text, tmp_path):
    job.stamp.write_text(text, encoding="latin-1")
    assert not job.up_to_date()
    assert expected_wall(tmp_path / "build", "l", job.part) == 1e5  # a card's default, no raise


def test_a_stamp_without_the_probe_fields_means_render_again(job):
    stamp = json.loads(job.stamp.read_text())
    job.stamp.write_text(json.dumps({"digest": stamp["digest"], "wall": 1.0}))
    assert not job.up_to_date()


def test_a_missing_part_means_render_again(job):
    job.mp4.unlink()
    assert not job.up_to_date()


def test_expected_wall_reads_the_stamp_it_wrote(job, tmp_path):
    assert output_of(tmp_path / "build", "l", job.part) == job.mp4
    assert expected_wall(tmp_path / "build", "l", job.part) == 1.5


# ---- third round: never overwrite or delete what the build did not write ----------------------

def _theirs(tmp_path):
    """A file of the user's, and a symbolic link to it where the build writes."""
    private = tmp_path / "private.txt"
    private.write_text("mine")
    private.chmod(0o600)
    return private


def _untouched(private, link):
    assert private.read_text() == "mine" and link.is_symlink()
    assert not [p for p in link.parent.iterdir() if p.name.startswith(".")]  # no temporary


def test_a_symlinked_cut_is_refused_and_what_it_points_to_kept(tmp_path):
    from promo import Refused
    from promo.join import join, probe
    from promo.subtitles import Chapter, Cue, write_chapters_vtt, write_srt

    clip(tmp_path / "a.mp4", (64, 48), 5, 40)
    private = _theirs(tmp_path)
    old_tmp = tmp_path / "cut.tmp.mp4"  # the name the join's temporary file used to take
    old_tmp.write_text("also mine")
    cut = tmp_path / "cut.mp4"
    assert join([probe(tmp_path / "a.mp4")], cut, [Chapter(0, 1, "x")]) == "copied packets"
    assert old_tmp.read_text() == "also mine"
    for name, write in [("cut.mp4", lambda p: join([probe(tmp_path / "a.mp4")], p, [])),
                        ("cut.srt", lambda p: write_srt([Cue(0, 1, "hi")], p)),
                        ("cut.chapters.vtt", lambda p: write_chapters_vtt([Chapter(0, 1, "x")],
                                                                          p))]:
        link = tmp_path / name
        link.unlink(missing_ok=True)
        link.symlink_to(private)
        with pytest.raises(Refused, match=f"{name}: is a symbolic link"):
            write(link)
        _untouched(private, link)


def test_a_symlinked_webm_gif_or_part_is_refused(tmp_path):
    from promo import Refused, audio, extras

    mp4 = tmp_path / "a.mp4"
    clip(mp4, (64, 48), 5, 40)
    private = _theirs(tmp_path)
    for name, write in [("a.webm", lambda p: extras.webm(mp4, p, [])),
                        ("a.gif", lambda p: extras.gif(mp4, p, 0, 0.3, width=32))]:
        link = tmp_path / name
        link.symlink_to(private)
        with pytest.raises(Refused, match="symbolic link"):
            write(link)
        _untouched(private, link)
    part = tmp_path / "part.mp4"  # a part's sound is muxed over the part itself
    part.symlink_to(mp4)
    before = mp4.read_bytes()
    with pytest.raises(Refused, match="part.mp4: is a symbolic link"):
        audio.mux(part, __import__("numpy").zeros(4800, dtype="int16"))
    assert mp4.read_bytes() == before


@pytest.mark.parametrize("which", ["mp4", "srt", "stamp", "log"])
def test_a_render_never_deletes_or_writes_through_what_it_finds_in_place(tmp_path, which):
    from promo import Refused

    job = job_of(P.title_part("teaser"), tmp_path / "build", "l", [])
    path = getattr(job, which)
    path.parent.mkdir(parents=True, exist_ok=True)
    private = _theirs(tmp_path)
    path.symlink_to(private)
    with pytest.raises(Refused, match="symbolic link"):
        job.start()
    assert path.is_symlink() and private.read_text() == "mine"
    path.unlink()
    path.mkdir()
    (path / "notes").write_text("mine")
    with pytest.raises(Refused, match="is a directory"):
        job.start()
    assert (path / "notes").read_text() == "mine"


def test_the_command_exits_2_when_an_output_is_refused(monkeypatch, capsys):
    from promo import Refused
    from promo import __main__ as cli

    def refused(*a, **k):
        raise Refused("media/promo/teaser-480p15.srt: is a symbolic link: not replacing it")

    monkeypatch.setattr(cli, "build", refused)
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "teaser-480p15.srt: is a symbolic link" in err


def test_the_frames_script_refuses_a_symlinked_output_before_decoding(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    private = _theirs(tmp_path)
    (tmp_path / "sheet.png").symlink_to(private)
    script = Path(__file__).resolve().parent.parent / "scripts" / "frames.py"
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "missing.mp4"), "--grid",
                          str(tmp_path / "sheet.png")], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert "sheet.png: is a symbolic link" in run.stderr and private.read_text() == "mine"
