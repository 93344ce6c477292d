"""One subtitle file for the joined video, and its chapters as WebVTT.

Each part's cues move by the part's start in the joined video. A cue is cut at its part's end
(a caption held past the last frame would run into the next part), so cues stay in order and
never overlap as long as each part's own cues do not; `check_cues` says so or raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import srt

from astrai.files import write_text
from promo import PromoError, Refused
from scenes.framework.cues import plain


class SubtitleError(PromoError):
    """Cues out of order or overlapping."""


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str
    part: str = ""


@dataclass(frozen=True)
class Chapter:
    """A chapter of a cut: finite times, 0 <= start < end (else SubtitleError: a nan would
    pass every comparison a later check makes)."""

    start: float
    end: float
    title: str

    def __post_init__(self):
        times = (self.start, self.end)
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
                   for t in times) or not 0 <= self.start < self.end:
            raise SubtitleError(f"chapter {self.title[:40]!r} runs from {self.start!r} to "
                                f"{self.end!r} s: not finite times with 0 <= start < end")


def check_chapters(chapters: list[Chapter], eps: float = 1e-6) -> None:
    """In order and never overlapping: each starts at or after the one before ends."""
    for i, (a, b) in enumerate(zip(chapters, chapters[1:]), 2):
        if b.start < a.end - eps:
            raise SubtitleError(f"chapter {i} {b.title[:40]!r} starts at {b.start:.3f} s, before "
                                f"chapter {i - 1} {a.title[:40]!r} ends at {a.end:.3f} s "
                                "(chapters out of order or overlapping)")


def read_srt(path: Path | None) -> list[Cue]:
    if path is None or not path.exists():
        return []
    return [Cue(s.start.total_seconds(), s.end.total_seconds(), s.content)
            for s in srt.parse(path.read_text(encoding="utf-8"))]


def shift(cues: list[Cue], start: float, length: float, part: str) -> list[Cue]:
    """`cues` of a part `length` seconds long, placed at `start`; cut at the part's end."""
    out = []
    for c in sorted(cues, key=lambda c: c.start):
        end = min(c.end, length)
        if end > c.start:
            out.append(Cue(start + c.start, start + end, c.text, part))
    return out


def check_cues(cues: list[Cue], eps: float = 1e-6) -> None:
    for a, b in zip(cues, cues[1:]):
        if b.start < a.end - eps:
            raise SubtitleError(f"cue {b.text[:40]!r} ({b.part}) starts at {b.start:.3f} s, "
                                f"before {a.text[:40]!r} ({a.part}) ends at {a.end:.3f} s")


def write_srt(cues: list[Cue], path: Path) -> None:
    def ms(t: float) -> timedelta:  # rounded, not truncated, to the file's milliseconds
        return timedelta(milliseconds=round(t * 1000))

    subs = [srt.Subtitle(i, ms(c.start), ms(c.end), shown(c.text))
            for i, c in enumerate(cues, 1)]
    write_text(path, srt.compose(subs, reindex=False), Refused)


def shown(text: str) -> str:
    """A cue's lines with no control character or escape sequence (a part's .srt may come from
    elsewhere; a player or a terminal would act on them) and no blank line (it ends a cue)."""
    lines = (" ".join(plain(x).split()) for x in text.split("\n"))
    return "\n".join(x for x in lines if x)


def vtt_time(t: float) -> str:
    ms = round(t * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02}:{m:02}:{s:02}.{ms:03}"


def write_chapters_vtt(chapters: list[Chapter], path: Path) -> None:
    """WebVTT chapters (<track kind="chapters">): one cue per chapter, numbered."""
    check_chapters(chapters)  # before anything is written
    lines = ["WEBVTT", ""]
    for i, ch in enumerate(chapters, 1):
        lines += [f"chapter-{i}", f"{vtt_time(ch.start)} --> {vtt_time(ch.end)}", ch.title, ""]
    write_text(path, "\n".join(lines), Refused)


def read_chapters_vtt(path: Path) -> list[Chapter]:
    """Back from write_chapters_vtt (for checks); SubtitleError for times that are not finite,
    or chapters out of order or overlapping."""
    def secs(t: str) -> float:
        h, m, s = t.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    blocks = path.read_text(encoding="utf-8").strip().split("\n\n")
    if not blocks or blocks[0].strip() != "WEBVTT":
        raise SubtitleError(f"{path}: not a WebVTT file")
    out = []
    for block in blocks[1:]:
        lines = block.splitlines()
        start, _, end = lines[1].partition(" --> ")
        out.append(Chapter(secs(start), secs(end), "\n".join(lines[2:])))
    check_chapters(out)
    return out
