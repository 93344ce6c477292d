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
