"""What a joined cut is turned into for the web: a VP9 WebM, a thumbnail and a short GIF."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from astrai.files import replacing
from promo import Refused
from promo.subtitles import Chapter
from scenes.framework import theme

# Realtime VP9: flat colours and text compress well even at the fastest setting, and the
# slower modes cost minutes per cut at 1080p60 for little gain here.
VP9 = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "36", "b": "0"}


def webm(mp4: Path, target: Path, chapters: list[Chapter], title: str = "") -> None:
    """Re-encode `mp4` as VP9 in WebM (its chapters as Matroska chapters), its sound (if any)
    as Opus at 48 kHz."""
    from promo.audio import RATE, decode, encode

    with replacing(target, Refused, suffix=target.suffix) as tmp:
        with av.open(str(mp4)) as inp, av.open(str(tmp), "w", format="webm") as out:
            has_sound = bool(inp.streams.audio)
            s = inp.streams.video[0]
            rate = s.guessed_rate or s.average_rate
            o = out.add_stream("libvpx-vp9", rate=rate, options=VP9)
            o.width, o.height, o.pix_fmt = (s.codec_context.width, s.codec_context.height,
                                            "yuv420p")
            opus = None
            if has_sound:
                opus = out.add_stream("libopus", rate=RATE, options={"b": "64k"})
                opus.layout = "mono"
            if title:
                out.metadata["title"] = title
            out.set_chapters([{"id": i, "start": round(c.start * 1000),
                               "end": round(c.end * 1000), "time_base": Fraction(1, 1000),
                               "metadata": {"title": c.title}}
                              for i, c in enumerate(chapters, 1)])
            n_frames = 0
            for n, frame in enumerate(inp.decode(s)):
                frame.pts, frame.time_base = n, 1 / Fraction(rate)
                out.mux(o.encode(frame))
                n_frames = n + 1
            out.mux(o.encode())
            if opus is not None:
                x, _ = decode(mp4)
                x = x[:round(n_frames / float(rate) * RATE)]  # as long as the picture
                encode(opus, out, (np.clip(x, -1, 1) * 32767).round().astype(np.int16))


def frames(path: Path, times: list[float]):
    """(time, RGB image) of the first frame at or after each time, in order."""
    todo = sorted(times)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for f in c.decode(s):
            t = float(f.pts * s.time_base)
            if todo and t >= todo[0]:
                im = f.to_image()
                while todo and t >= todo[0]:
                    todo.pop(0)
                yield t, im
            if not todo:
                return


def ink(im: Image.Image) -> float:
    """Share of pixels that are not background: how much the frame shows."""
    a = np.asarray(im.convert("RGB"), dtype=np.int16)
    bg = np.array([int(theme.BG.to_hex()[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return float((np.abs(a - bg).sum(axis=2) > 40).mean())


def busiest(path: Path, duration: float, n: int = 16) -> tuple[float, Image.Image]:
    """Of `n` frames spread over the video, the one that shows the most: the thumbnail."""
    picks = list(frames(path, [duration * (i + 0.5) / n for i in range(n)]))
    return max(picks, key=lambda p: ink(p[1]))


def gif(path: Path, target: Path, start: float, seconds: float, fps: float = 6,
        width: int = 640, colors: int = 64) -> None:
    """A short looping GIF of `path` from `start`: one palette for all frames (smaller, no
    flicker), no dithering (flat colours)."""
    times = [start + i / fps for i in range(max(1, round(seconds * fps)))]
    ims = [im for _, im in frames(path, times)]
    size = (width, round(ims[0].height * width / ims[0].width))
    ims = [im.resize(size, Image.LANCZOS) for im in ims]
    sample = ims[:: max(1, len(ims) // 8)]  # the palette sees the whole clip's colours
    mosaic = Image.new("RGB", (size[0], size[1] * len(sample)))
    for i, im in enumerate(sample):
        mosaic.paste(im, (0, i * size[1]))
    palette = mosaic.quantize(colors, method=Image.Quantize.MEDIANCUT)
    out = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in ims]
    with replacing(target, Refused, suffix=target.suffix) as tmp:
        out[0].save(tmp, save_all=True, append_images=out[1:], loop=0,
                    duration=round(1000 / fps), optimize=True)
