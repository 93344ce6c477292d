"""Join rendered parts into one mp4 with PyAV: packets copied, not re-encoded, when every part
shares codec parameters (codec, size, pixel format, frame rate, and the same SPS/PPS in the
extradata); otherwise every frame is decoded and encoded again with x264, and the reason is
returned so the build can say so. The sound is not copied: each part's is decoded, cut to its
picture's samples and encoded once over the whole cut (promo/audio.py says why). Chapters go into
the container's chapter list (the mp4 muxer writes them as a QuickTime chapter track and a Nero
`chpl` box; Matroska/WebM natively).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from astrai.files import replacing
from promo import PromoError, Refused, audio
from promo.subtitles import Chapter


class JoinError(PromoError):
    """A part cannot be joined (no video, empty)."""


@dataclass(frozen=True)
class Probe:
    path: Path
    codec: str
    width: int
    height: int
    pix_fmt: str
    rate: Fraction  # frames per second
    extradata: bytes
    frames: int
    duration: Fraction  # seconds: frames / rate, the length the next part starts after

    @property
    def params(self) -> tuple:
        return (self.codec, self.width, self.height, self.pix_fmt, self.rate, self.extradata)


def probe(path: Path) -> Probe:
    """Codec parameters and exact length (from the packets, not the header's estimate)."""
    with av.open(str(path)) as c:
        if not c.streams.video:
            raise JoinError(f"{path}: no video stream")
        s = c.streams.video[0]
        cc = s.codec_context
        tb = s.time_base
        frames = 0
        steps: Counter[int] = Counter()
        for p in c.demux(s):
            if p.pts is None:
                continue
            frames += 1
            steps[p.duration or 0] += 1
        if not frames:
            raise JoinError(f"{path}: no frames")
        # Constant frame rate: the usual packet duration is one frame (the header's duration
        # and the last packet's are rounded by the muxer, so count frames instead).
        step = steps.most_common(1)[0][0]
        if step <= 0:
            raise JoinError(f"{path}: packets carry no duration")
        rate = 1 / (step * tb)
        duration = frames / rate
        return Probe(Path(path), cc.name, cc.width, cc.height, cc.pix_fmt, rate,
                     bytes(cc.extradata or b""), frames, duration)


def mismatch(probes: list[Probe]) -> str:
    """'' when packets can be copied; else what differs, first part against the odd one."""
    names = ("codec", "width", "height", "pix_fmt", "rate", "extradata")
    base = probes[0]
    for p in probes[1:]:
        for name, a, b in zip(names, base.params, p.params):
            if a != b:
                what = "differs" if name == "extradata" else f"{a} vs {b}"
                return f"{p.path.name}: {name} {what} (against {base.path.name})"
    return ""


def _chapters(out, chapters: list[Chapter]) -> None:
    tb = Fraction(1, 1000)
    out.set_chapters([{"id": i, "start": round(ch.start * 1000), "end": round(ch.end * 1000),
                       "time_base": tb, "metadata": {"title": ch.title}}
                      for i, ch in enumerate(chapters, 1)])


def join(probes: list[Probe], target: Path, chapters: list[Chapter], title: str = "",
         reencode: bool = False) -> str:
    """Write the parts one after another into `target`. Returns how the picture was joined:
    'copied packets' or 're-encoded: <why>'. The sound (if any part has some) is encoded once
    over the whole cut (promo.audio.Track), each part's exactly as long as its picture."""
    why = "asked to" if reencode else mismatch(probes)
    sound = _sound_of(probes)
    target.parent.mkdir(parents=True, exist_ok=True)
    with replacing(target, Refused, suffix=target.suffix) as tmp, \
            av.open(str(tmp), "w", options={"movflags": "+faststart"}) as out:
        if title:
            out.metadata["title"] = title
        _chapters(out, chapters)
        video = _x264(out, probes[0]) if why else _template(out, probes[0])
        track = audio.Track(out, audio.add_stream(out)) if sound else None
        offset = Fraction(0)  # seconds where the current part starts
        frames = 0  # frames encoded so far (re-encoding)
        for pr in probes:
            if track is not None:
                n = audio.span(offset, offset + pr.duration)
                track.start(audio.part_sound(pr.path, n))
            if why:
                frames = _reencode(pr, out, video, probes[0].rate, frames, track)
            else:
                _copy(pr, out, video, offset, track)
            offset += pr.duration
        if why:
            out.mux(video.encode())
        if track is not None:
            track.close()
    return f"re-encoded: {why}" if why else "copied packets"


def _sound_of(probes: list[Probe]) -> bool:
    """Whether the cut has sound: every part has, or none (a silent part among narrated ones
    was rendered with narration off, and would be a hole in the sound)."""
    has = [_has_audio(pr.path) for pr in probes]
    if any(has) and not all(has):
        name = probes[has.index(False)].path.name
        raise JoinError(f"{name}: no audio stream, but other parts have sound "
                        "(render it again with narration on)")
    return all(has)


def _has_audio(path: Path) -> bool:
    with av.open(str(path)) as c:
        return bool(c.streams.audio)


def _template(out, pr: Probe):
    """A video stream in `out` with the first part's codec parameters (packets are copied)."""
    with av.open(str(pr.path)) as c:
        return out.add_stream_from_template(c.streams.video[0])


def _x264(out, base: Probe):
    stream = out.add_stream("libx264", rate=base.rate, options={"preset": "veryfast", "crf": "23"})
    stream.width, stream.height, stream.pix_fmt = base.width, base.height, "yuv420p"
    return stream


def _copy(pr: Probe, out, ostream, offset: Fraction, track) -> None:
    """One part's video packets at the part's start; its sound handed to `track` as the
    picture reaches it."""
    with av.open(str(pr.path)) as c:
        s = c.streams.video[0]
        tb = s.time_base
        shift = offset / tb
        if shift.denominator != 1:
            raise JoinError(f"{pr.path.name}: start {float(offset):.4f} s is not a whole "
                            f"number of its time base {tb}")
        first = None
        for p in c.demux(s):
            if p.dts is None:  # the flush packet demux ends with
                continue
            if first is None:
                first = p.pts  # parts start at 0; keep any edit offset out of the join
            if track is not None:
                track.until(float((p.pts - first) * tb))
            p.pts = p.pts - first + int(shift)
            p.dts = p.dts - first + int(shift)
            p.stream = ostream
            out.mux(p)


def _reencode(pr: Probe, out, stream, rate: Fraction, n0: int, track) -> int:
    """One part's frames encoded again at the first part's size and rate, after the `n0`
    frames before it; returns the frames written so far."""
    n = n0
    with av.open(str(pr.path)) as c:
        for frame in c.decode(video=0):
            if track is not None:
                track.until((n - n0) / float(rate))
            frame = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
            frame.pts, frame.time_base = n, 1 / rate
            n += 1
            out.mux(stream.encode(frame))
    return n


def read_chapters(path: Path) -> list[Chapter]:
    """The chapters a container holds, in seconds (for checks)."""
    with av.open(str(path)) as c:
        return [Chapter(float(ch["start"] * ch["time_base"]), float(ch["end"] * ch["time_base"]),
                        ch["metadata"].get("title", "")) for ch in c.chapters()]
