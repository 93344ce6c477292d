"""Stills and short GIFs from a rendered video, for looking at frames and for the README.

    python scripts/frames.py VIDEO --grid OUT.png [--n 8]        # n frames spread over the video
    python scripts/frames.py VIDEO --gif OUT.gif --start 20 --end 32 [--fps 5] [--width 640]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
from PIL import Image

from astrai.files import check_replaceable, replacing


class FramesError(Exception):
    """An output that is not a file this script may replace (a symbolic link, a folder)."""


def frames_at(path: str, times: list[float]) -> list[Image.Image]:
    """The first frame at or after each time (seconds), in order."""
    out, todo = [], sorted(times)
    with av.open(path) as video:
        stream = video.streams.video[0]
        for frame in video.decode(stream):
            while todo and float(frame.pts * stream.time_base) >= todo[0]:
                out.append(frame.to_image())
                todo.pop(0)
            if not todo:
                break
    return out


def duration(path: str) -> float:
    with av.open(path) as video:
        return video.duration / av.time_base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--grid", help="write a 2-column contact sheet here")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--gif", help="write an animated GIF here")
    ap.add_argument("--start", type=float, default=0.0)
    ap.add_argument("--end", type=float)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--width", type=int, default=640)
    args = ap.parse_args()
    try:
        for out in filter(None, (args.grid, args.gif)):  # before any decoding
            check_replaceable(out, FramesError)
        write(args)
    except FramesError as e:
        ap.exit(2, f"frames: error: {e}\n")


def write(args) -> None:
    total = duration(args.video)
    if args.grid:
        ims = frames_at(args.video, [total * (i + 0.5) / args.n for i in range(args.n)])
        w, h = ims[0].size
        sheet = Image.new("RGB", (2 * w, h * ((len(ims) + 1) // 2)))
        for i, im in enumerate(ims):
            sheet.paste(im, ((i % 2) * w, (i // 2) * h))
        with replacing(args.grid, FramesError, suffix=Path(args.grid).suffix) as tmp:
            sheet.save(tmp)
    if args.gif:
        end = min(args.end or total, total)
        n = max(1, int((end - args.start) * args.fps))
        ims = frames_at(args.video, [args.start + i / args.fps for i in range(n)])
        size = (args.width, round(ims[0].height * args.width / ims[0].width))
        ims = [im.resize(size, Image.LANCZOS).convert("P", palette=Image.ADAPTIVE, colors=64)
               for im in ims]
        with replacing(args.gif, FramesError, suffix=Path(args.gif).suffix) as tmp:
            ims[0].save(tmp, save_all=True, append_images=ims[1:], loop=0,
                        duration=round(1000 / args.fps), optimize=True)


if __name__ == "__main__":
    main()
