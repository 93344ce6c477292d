"""The promo's sound: a part's narration muxed as AAC beside its video, exactly as long as it; the
joined cut's audio measured (loudness, peaks, length); Opus for the WebM.

Each part's speech is already at the promo's level (scenes/framework/voice.py levels every cue to
-16 LUFS with peaks at most -1.5 dBFS), so a cut needs no second pass: the join copies audio
packets as it copies video, each part's audio placed at its part's start.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from promo import PromoError

RATE = 48_000
AAC = {"b": "192k"}  # mono speech; at 96k-128k the native encoder overshoots peaks by 2-3 dB


class AudioError(PromoError):
    """A part's or cut's sound is missing or wrong."""


def segment_samples(segment) -> np.ndarray:
    """A pydub AudioSegment (what Scene.add_sound mixes into) as mono int16 at RATE."""
    seg = segment.set_frame_rate(RATE).set_channels(1).set_sample_width(2)
    return np.frombuffer(seg.raw_data, dtype="<i2")


def fit(samples: np.ndarray, seconds: float) -> np.ndarray:
    """Samples padded with silence or cut to exactly `seconds` (the video's length)."""
    n = round(seconds * RATE)
    if len(samples) >= n:
        return samples[:n]
    return np.concatenate([samples, np.zeros(n - len(samples), dtype=samples.dtype)])


def encode(stream, out, samples: np.ndarray) -> None:
    """Encode mono int16 samples into `stream` (its encoder converts the sample format)."""
    step = 1024
    for k in range(0, len(samples), step):
        chunk = np.ascontiguousarray(samples[k:k + step]).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts, frame.time_base = k, Fraction(1, RATE)
        out.mux(stream.encode(frame))
    out.mux(stream.encode())


def mux(video: Path, samples: np.ndarray) -> None:
    """Rewrite `video` with its video packets copied and `samples` as an AAC track of exactly
    the video's length."""
    from promo.join import probe

    length = float(probe(video).duration)
    samples = fit(samples, length)
    tmp = video.with_name(video.stem + ".audio.tmp" + video.suffix)
    try:
        with av.open(str(video)) as src, av.open(str(tmp), "w",
                                                 options={"movflags": "+faststart"}) as out:
            vin = src.streams.video[0]
            vout = out.add_stream_from_template(vin)
            aout = out.add_stream("aac", rate=RATE, options=AAC)
            aout.layout = "mono"
            for p in src.demux(vin):
                if p.dts is None:
                    continue
                p.stream = vout
                out.mux(p)
            encode(aout, out, samples)
        tmp.replace(video)
    finally:
        tmp.unlink(missing_ok=True)


def decode(path: Path) -> tuple[np.ndarray, int]:
    """The first audio stream of `path` as float mono samples at RATE, each decoded frame
    placed at its own time stamp: a joined cut's parts each start where their picture does
    (concatenating frames would drift by each part's AAC padding)."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            raise AudioError(f"{path.name}: no audio stream")
        s = c.streams.audio[0]
        placed, cursor = [], 0
        for frame in c.decode(s):
            if frame.sample_rate != RATE:
                raise AudioError(f"{path.name}: sound at {frame.sample_rate} Hz, not {RATE}")
            x = frame.to_ndarray().astype(np.float64)
            x = x.mean(axis=0) if frame.format.is_planar else x.reshape(-1, len(
                frame.layout.channels)).mean(axis=1)
            start = round(frame.pts * s.time_base * RATE) if frame.pts is not None else cursor
            placed.append((start, x))
            cursor = start + len(x)
    if not placed:
        return np.zeros(0), RATE
    buf = np.zeros(max(a + len(x) for a, x in placed))
    for a, x in placed:
        if a < 0:  # encoder priming before the stream's start
            x, a = x[-a:], 0
        buf[a:a + len(x)] = x
    return buf, RATE


@dataclass(frozen=True)
class Level:
    loudness: float  # integrated, LUFS (ITU-R BS.1770)
    peak: float  # sample peak, dBFS
    seconds: float

    def problems(self, target: float = -16.0, tolerance: float = 1.0,
                 ceiling: float = -1.0) -> list[str]:
        out = []
        if not abs(self.loudness - target) <= tolerance:
            out.append(f"loudness {self.loudness:.1f} LUFS (want {target:g} +-{tolerance:g})")
        if self.peak > ceiling + 1e-6:
            out.append(f"peaks at {self.peak:.2f} dBFS (want at most {ceiling:g})")
        return out


def level(path: Path) -> Level:
    import pyloudnorm

    x, rate = decode(path)
    if not len(x):
        raise AudioError(f"{path.name}: empty audio stream")
    loud = pyloudnorm.Meter(rate).integrated_loudness(x)
    peak = 20 * np.log10(max(float(np.abs(x).max()), 1e-12))
    return Level(float(loud), float(peak), len(x) / rate)


def audio_seconds(path: Path) -> float | None:
    """Length of the first audio stream from its packets (None: no audio)."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        end = 0
        for p in c.demux(s):
            if p.pts is not None and p.duration:
                end = max(end, p.pts + p.duration)
        return float(end * s.time_base)
