"""The promo's sound: a part's narration muxed as AAC beside its video, exactly as long as it; a
cut's sound encoded once over its whole timeline; the joined cut's audio measured (loudness,
peaks, length, samples as a player hears them); Opus for the WebM.

Each part's speech is already at the promo's level (scenes/framework/voice.py levels every cue
to -16 LUFS with peaks at most -1.5 dBFS), so a cut needs no level pass. It does need one
encode: a part's AAC ends on a whole codec frame (1024 samples), so copying each part's packets
puts up to a frame of padding between parts, which a player that plays decoded sound back to
back (most do) hears as a lag growing at every part. The join decodes each part's sound, cuts
it to its picture's samples, and encodes the concatenation once (Track).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from astrai.files import replacing
from promo import PromoError, Refused

RATE = 48_000
FRAME = 1024  # samples in an AAC frame: a part's sound ends padded to a whole one
AAC = {"b": "192k"}  # mono speech; at 96k-128k the native encoder overshoots peaks by 2-3 dB


class AudioError(PromoError):
    """A part's or cut's sound is missing or wrong."""


def segment_samples(segment) -> np.ndarray:
    """A pydub AudioSegment (what Scene.add_sound mixes into) as mono int16 at RATE."""
    seg = segment.set_frame_rate(RATE).set_channels(1).set_sample_width(2)
    return np.frombuffer(seg.raw_data, dtype="<i2")


def fit(samples: np.ndarray, seconds: float) -> np.ndarray:
    """Samples padded with silence or cut to exactly `seconds` (the video's length)."""
    return fit_n(samples, round(seconds * RATE))


def fit_n(samples: np.ndarray, n: int) -> np.ndarray:
    """Samples padded with silence or cut to exactly `n`."""
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
    with replacing(video, Refused, suffix=video.suffix) as tmp:
        with av.open(str(video)) as src, av.open(str(tmp), "w",
                                                 options={"movflags": "+faststart"}) as out:
            vin = src.streams.video[0]
            vout = out.add_stream_from_template(vin)
            aout = add_stream(out)
            for p in src.demux(vin):
                if p.dts is None:
                    continue
                p.stream = vout
                out.mux(p)
            encode(aout, out, samples)


def add_stream(out, codec: str = "aac", options: dict | None = None):
    """A mono RATE audio stream in `out` (AAC at the promo's bit rate unless told)."""
    stream = out.add_stream(codec, rate=RATE, options=AAC if options is None else options)
    stream.layout = "mono"
    return stream


class Track:
    """One audio stream encoded over a whole cut: each part's samples handed over as the
    picture reaches them (so the container interleaves sound and picture), one encoder from
    the first sample to the last, so the decoded sound has no gap or padding between parts."""

    LEAD = 0.5  # seconds of sound encoded ahead of the picture being muxed

    def __init__(self, out, stream):
        self.out, self.stream = out, stream
        self.fed = 0  # samples encoded so far: the next frame's pts
        self.part = np.zeros(0, dtype=np.float32)
        self.pos = 0  # samples of the current part already fed

    def start(self, samples: np.ndarray) -> None:
        """The next part's sound (exactly its picture's samples), after what is left of the
        part before."""
        self.finish_part()
        self.part, self.pos = np.asarray(samples, dtype=np.float32), 0

    def until(self, seconds: float) -> None:
        """Encode the current part's sound up to `seconds` into it (plus the lead)."""
        k = min(len(self.part), max(self.pos, round((seconds + self.LEAD) * RATE)))
        self._feed(self.part[self.pos:k])
        self.pos = k

    def finish_part(self) -> None:
        self._feed(self.part[self.pos:])
        self.pos = len(self.part)

    def close(self) -> None:
        self.finish_part()
        self.out.mux(self.stream.encode())

    def _feed(self, x: np.ndarray) -> None:
        step = 4096  # any size: PyAV cuts frames to the codec's frame size
        for k in range(0, len(x), step):
            chunk = np.ascontiguousarray(x[k:k + step]).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = RATE
            frame.pts, frame.time_base = self.fed, Fraction(1, RATE)
            self.fed += chunk.shape[1]
            self.out.mux(self.stream.encode(frame))


def span(start: Fraction, end: Fraction) -> int:
    """Samples of the timeline stretch [start, end) seconds: rounded at both ends, so parts'
    counts add up to the whole cut's, sample for sample."""
    return round(end * RATE) - round(start * RATE)


def part_sound(path: Path, n: int) -> np.ndarray:
    """A part's sound as float32, exactly `n` samples: decoded by time stamps (the encoder's
    priming and end padding dropped), cut or padded with silence to its picture."""
    x, _ = decode(path)
    return fit_n(np.clip(x, -1, 1).astype(np.float32), n)


def heard_samples(path: Path) -> int:
    """How many samples of the first audio stream a player that plays decoded sound back to
    back hears: every decoded frame's, time stamps ignored (the decoder applies the
    container's priming skip, as players do)."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            raise AudioError(f"{path.name}: no audio stream")
        n = 0
        for frame in c.decode(c.streams.audio[0]):
            if frame.sample_rate != RATE:
                raise AudioError(f"{path.name}: sound at {frame.sample_rate} Hz, not {RATE}")
            n += frame.samples
    return n


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
