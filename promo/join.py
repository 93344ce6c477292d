"""Join rendered parts into one mp4 with PyAV: packets copied, not re-encoded, when every part
shares codec parameters (codec, size, pixel format, frame rate, and the same SPS/PPS in the
extradata); otherwise every frame is decoded and encoded again with x264, and the reason is
returned so the build can say so. Chapters go into the container's chapter list (the mp4 muxer
writes them as a QuickTime chapter track and a Nero `chpl` box; Matroska/WebM natively).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from astrai.files import replacing
from promo import PromoError, Refused
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
    """Write the parts one after another into `target`. Returns how: 'copied packets' or
    're-encoded: <why>'."""
    why = "asked to" if reencode else mismatch(probes)
    target.parent.mkdir(parents=True, exist_ok=True)
    with replacing(target, Refused, suffix=target.suffix) as tmp, \
            av.open(str(tmp), "w", options={"movflags": "+faststart"}) as out:
        if title:
            out.metadata["title"] = title
        _chapters(out, chapters)
        if why:
            _reencode(probes, out)
        else:
            _copy(probes, out)
    return f"re-encoded: {why}" if why else "copied packets"


def _copy(probes: list[Probe], out) -> None:
    """Video packets one part after another; each part's audio packets (if any part has
    sound) placed at its part's start, so sound and picture meet at every chapter. A part's
    last audio packet may reach past its end by less than one AAC frame: a packet that would
    overlap the next part's first is dropped rather than muxed out of order."""
    ostream = None
    astream = None
    with_sound = any(_has_audio(pr.path) for pr in probes)
    offset = Fraction(0)  # seconds where the current part starts
    last_audio = None  # dts (1/48000) of the last audio packet muxed
    for pr in probes:
        with av.open(str(pr.path)) as c:
            s = c.streams.video[0]
            a = c.streams.audio[0] if c.streams.audio else None
            if with_sound and a is None:
                raise JoinError(f"{pr.path.name}: no audio stream, but other parts have sound "
                                "(render it again with narration on)")
            if ostream is None:
                ostream = out.add_stream_from_template(s)
                if a is not None:
                    astream = out.add_stream_from_template(a)
            tb = s.time_base
            shift = offset / tb
            if shift.denominator != 1:
                raise JoinError(f"{pr.path.name}: start {float(offset):.4f} s is not a whole "
                                f"number of its time base {tb}")
            first = None
            sound = a is not None and astream is not None
            # one pass over the file: demuxing the video alone would read it to its end
            for p in (c.demux(s, a) if sound else c.demux(s)):
                if p.dts is None:  # the flush packet demux ends with
                    continue
                if p.stream.type == "audio":
                    last_audio = _copy_audio(p, a, astream, out, offset, last_audio)
                    continue
                if first is None:
                    first = p.pts  # parts start at 0; keep any edit offset out of the join
                p.pts = p.pts - first + int(shift)
                p.dts = p.dts - first + int(shift)
                p.stream = ostream
                out.mux(p)
        offset += pr.duration


def _has_audio(path: Path) -> bool:
    with av.open(str(path)) as c:
        return bool(c.streams.audio)


def _copy_audio(p, a, astream, out, offset: Fraction, last: int | None) -> int | None:
    """Mux one audio packet of a part at the part's start (dropped if it would overlap the
    packet before it); returns the last dts muxed."""
    if a.time_base != Fraction(1, 48_000):
        raise JoinError(f"audio time base {a.time_base}: parts' sound must be 48 kHz")
    shift = offset * 48_000
    if shift.denominator != 1:
        raise JoinError(f"part start {float(offset):.5f} s is not a whole number of samples")
    dts = p.dts + int(shift)
    if last is not None and dts <= last:
        return last
    p.pts, p.dts = p.pts + int(shift), dts
    p.stream = astream
    out.mux(p)
    return dts


def _reencode(probes: list[Probe], out) -> None:
    base = probes[0]
    rate = base.rate
    stream = out.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": "23"})
    stream.width, stream.height, stream.pix_fmt = base.width, base.height, "yuv420p"
    n = 0
    for pr in probes:
        with av.open(str(pr.path)) as c:
            for frame in c.decode(video=0):
                frame = frame.reformat(width=base.width, height=base.height, format="yuv420p")
                frame.pts, frame.time_base = n, 1 / rate
                n += 1
                out.mux(stream.encode(frame))
    out.mux(stream.encode())


def read_chapters(path: Path) -> list[Chapter]:
    """The chapters a container holds, in seconds (for checks)."""
    with av.open(str(path)) as c:
        return [Chapter(float(ch["start"] * ch["time_base"]), float(ch["end"] * ch["time_base"]),
                        ch["metadata"].get("title", "")) for ch in c.chapters()]
