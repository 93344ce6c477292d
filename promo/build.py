"""Build promo cuts: render the parts (in parallel, up-to-date ones skipped), join each cut, one
subtitle file and its chapters, then the WebM, thumbnail and GIF. Outputs under media/promo/:

    explainer-480p15.mp4  .srt  .chapters.vtt  .webm  .png (thumbnail)
    teaser-480p15.mp4     .srt  .chapters.vtt  .webm  .png
    teaser.gif            the README's clip, from the teaser
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from astrai.files import replacing
from promo import PromoError, Refused, lock
from promo.join import Probe, join, probe
from promo.parts import ROOT, Part, plan
from promo.render import (
    QUALITIES,
    BadSetting,
    Rendered,
    check_jobs,
    render_all,
    start_server,
)
from promo.subtitles import (
    Chapter,
    Cue,
    check_chapters,
    check_cues,
    read_srt,
    shift,
    write_chapters_vtt,
    write_srt,
)

OUT = ROOT / "media" / "promo"
TEASER_MAX = 90.0  # seconds
NAMES = {"full": "explainer", "teaser": "teaser"}
TITLES = {"full": "astrai: a paged KV cache, replayed", "teaser": "astrai in 90 seconds"}


class TooLong(PromoError):
    """The teaser runs over its limit."""


@dataclass
class Cut:
    cut: str
    quality: str
    parts: list[Rendered]
    probes: list[Probe]
    mp4: Path
    srt: Path
    vtt: Path
    how: str  # 'copied packets' or 're-encoded: why'
    chapters: list[Chapter]
    cues: list[Cue]
    seconds: dict[str, float] = field(default_factory=dict)  # wall seconds per stage
    webm: Path | None = None
    thumbnail: Path | None = None
    level: object = None  # promo.audio.Level of a narrated cut

    @property
    def duration(self) -> float:
        return float(sum(p.duration for p in self.probes))

    def starts(self) -> list[float]:
        out, t = [], 0
        for p in self.probes:
            out.append(float(t))
            t += p.duration
        return out


def chapters_of(parts: list[Part], probes: list[Probe]) -> list[Chapter]:
    """One chapter per run of consecutive parts with the same chapter name."""
    out: list[Chapter] = []
    t = 0
    for part, pr in zip(parts, probes):
        start, t = t, t + pr.duration
        if out and out[-1].title == part.chapter:
            out[-1] = Chapter(out[-1].start, float(t), part.chapter)
        else:
            out.append(Chapter(float(start), float(t), part.chapter))
    return out


def check_length(cut: str, parts: list[Part], probes: list[Probe], limit: float | None) -> None:
    total = float(sum(p.duration for p in probes))
    if limit is not None and total > limit:
        lines = "\n".join(f"  {part.name:32} {float(pr.duration):6.1f} s"
                          for part, pr in zip(parts, probes))
        raise TooLong(f"the {cut} cut runs {total:.1f} s, over its {limit:.0f} s limit:\n{lines}")


class Unreadable(PromoError):
    """A cut's subtitles break the reading limits, or its sound is not levelled."""


def check_reading(name: str, cues: list[Cue], fps: float) -> None:
    """The joined subtitles within the reading limits (scenes.framework.cues.problems)."""
    from scenes.framework.cues import Timed, problems

    found = problems([Timed(c.start, c.end, c.text) for c in cues], 1 / fps)
    if found:
        raise Unreadable(f"{name}: subtitles break the reading limits:\n  "
                         + "\n  ".join(found[:12]))


def check_sound(result: Cut) -> None:
    """A narrated cut: audio as long as the picture, as its time stamps say and as a player
    that plays decoded sound back to back hears it (within one AAC frame), at the promo's
    level."""
    from promo.audio import FRAME, RATE, audio_seconds, heard_samples, level

    sound = audio_seconds(result.mp4)
    if sound is None:
        return  # rendered silent (NARRATION=off)
    if abs(sound - result.duration) > len(result.parts) / float(result.probes[0].rate):
        raise Unreadable(f"{result.mp4.name}: {sound:.2f} s of sound for "
                         f"{result.duration:.2f} s of picture")
    samples = heard_samples(result.mp4)
    want = round(sum(p.duration for p in result.probes) * RATE)
    if not 0 <= samples - want < FRAME:
        raise Unreadable(f"{result.mp4.name}: a player hears {samples} samples of sound for "
                         f"{want} samples ({result.duration:.3f} s) of picture")
    lv = level(result.mp4)
    if lv.problems():
        raise Unreadable(f"{result.mp4.name}: " + "; ".join(lv.problems()))
    result.level = lv


def join_cut(cut: str, quality: str, rendered: list[Rendered], out: Path, name: str,
             limit: float | None = None, log=print) -> Cut:
    """Join rendered parts into `out`/`name`.mp4 with its .srt and .chapters.vtt."""
    t0 = time.perf_counter()
    parts = [r.part for r in rendered]
    probes = [probe(r.mp4) for r in rendered]
    check_length(cut, parts, probes, limit)
    cues: list[Cue] = []
    t = 0
    for r, pr in zip(rendered, probes):
        cues += shift(read_srt(r.srt), float(t), float(pr.duration), r.part.name)
        t += pr.duration
    check_cues(cues)
    check_reading(name, cues, float(probes[0].rate))
    chapters = chapters_of(parts, probes)
    check_chapters(chapters)  # before the mp4 is written with them
    out.mkdir(parents=True, exist_ok=True)
    mp4 = out / f"{name}.mp4"
    how = join(probes, mp4, chapters, TITLES.get(cut, name))
    if how != "copied packets":
        log(f"promo: {name}: parts differ in codec parameters, {how}")
    srt, vtt = mp4.with_suffix(".srt"), mp4.with_suffix(".chapters.vtt")
    write_srt(cues, srt)
    write_chapters_vtt(chapters, vtt)
    result = Cut(cut, quality, rendered, probes, mp4, srt, vtt, how, chapters, cues)
    check_sound(result)
    result.seconds["join"] = time.perf_counter() - t0
    return result


def finish(result: Cut, webm: bool = True, gif: Path | None = None, log=print) -> None:
    """The WebM, the thumbnail (the busiest frame of the first scene) and, if asked, the GIF
    (a few seconds of that scene around the thumbnail)."""
    from promo import extras  # PIL/numpy work only when asked for

    if webm:
        t0 = time.perf_counter()
        result.webm = result.mp4.with_suffix(".webm")
        extras.webm(result.mp4, result.webm, result.chapters, TITLES.get(result.cut, ""))
        result.seconds["webm"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scenes = [i for i, r in enumerate(result.parts) if r.part.cls.endswith("Scene")]
    i = scenes[0] if scenes else 0
    pr = result.probes[i]
    at, im = extras.busiest(pr.path, float(pr.duration))
    result.thumbnail = result.mp4.with_suffix(".png")
    with replacing(result.thumbnail, Refused, suffix=".png") as tmp:
        im.save(tmp)
    if gif is not None:
        seconds = min(8.0, float(pr.duration))
        start = min(max(0.0, at - seconds / 2), float(pr.duration) - seconds)
        extras.gif(pr.path, gif, start, seconds)
        size = gif.stat().st_size
        if size > 4 << 20:
            log(f"promo: {gif} is {size / (1 << 20):.1f} MiB, more than a README wants")
    result.seconds["extras"] = time.perf_counter() - t0


def build(cuts: tuple[str, ...] = ("full", "teaser"), quality: str = "l", out: Path = OUT,
          jobs: int | None = None, force: bool = False, webm: bool = True,
          teaser_max: float | None = TEASER_MAX, profile: bool = False,
          plans: dict[str, list[Part]] | None = None, log=print, one_stream: bool = True,
          wait: float | None = None) -> list[Cut]:
    """Render every part of `cuts` at once (shared parts once), then join each cut. One build
    at a time in `out`: another one there is waited for (`wait` seconds at most, None: as
    long as it takes; then lock.Busy). Settings are checked before anything waits or starts."""
    check_jobs(jobs)
    if teaser_max is not None and (isinstance(teaser_max, bool) or not isinstance(
            teaser_max, (int, float)) or not math.isfinite(teaser_max) or teaser_max <= 0):
        # nan would switch the length check off; None is the way to say "no limit"
        raise BadSetting(f"teaser_max must be a positive number of seconds or None, "
                         f"not {teaser_max!r}")
    with lock.held(out, log, wait) as fd:
        return _build(cuts, quality, out, jobs, force, webm, teaser_max, profile, plans, log,
                      one_stream, fd)


def _build(cuts, quality, out, jobs, force, webm, teaser_max, profile, plans, log, one_stream,
           fd: int) -> list[Cut]:
    t0 = time.perf_counter()
    # its imports overlap the planning (which imports the scenes); it holds the lock too
    server = start_server(keep=(fd,))
    try:
        plans = plans or {c: plan(c, log) for c in cuts}
    except BaseException:
        if server:
            server.stdin.close()
            server.wait()
        raise
    qdir = QUALITIES[quality]
    rendered = render_all([p for c in cuts for p in plans[c]], out / "build", quality, jobs,
                          force, profile, log, one_stream, server)
    render_s = time.perf_counter() - t0
    by_name = {r.part.name: r for r in rendered}
    results = []
    for c in cuts:
        name = f"{NAMES.get(c, c)}-{qdir}"
        limit = teaser_max if c == "teaser" else None
        result = join_cut(c, quality, [by_name[p.name] for p in plans[c]], out, name, limit, log)
        result.seconds["render"] = render_s  # shared by the cuts rendered together
        finish(result, webm, out / "teaser.gif" if c == "teaser" else None, log)
        log(f"promo: {result.mp4} {result.duration:.1f} s, {len(result.parts)} parts, "
            f"{result.how}")
        results.append(result)
    return results
