"""The manim CLI with a stopwatch: where a render's time goes, for the render benchmark.

    python promo/probe.py OUT.json render -ql scenes/cards.py TitleCard

Runs manim's own command line unchanged, and writes to OUT.json the CPU seconds (per thread,
so exact while other work runs) spent drawing frames (Cairo), converting them RGBA -> YUV, and
in the encoder call, plus the wall seconds manim spent joining its partial movies. The
conversion is done explicitly before encoding (the same swscale call the encoder makes on its
own), so that the two can be told apart. x264's own worker threads do not show per call; they
are in the process CPU time the caller measures.
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

TOTALS: dict[str, float] = defaultdict(float)
LOCK = threading.Lock()


def add(key: str, seconds: float) -> None:
    with LOCK:
        TOTALS[key] += seconds


def cpu_timed(key: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            add(key, time.thread_time() - t0)

    return wrapper


def install() -> None:
    import av
    from manim.renderer.cairo_renderer import CairoRenderer
    from manim.scene.scene_file_writer import SceneFileWriter
    from manim.scene.video_segment_encoder import VideoSegmentEncoder

    CairoRenderer.update_frame = cpu_timed("drawing", CairoRenderer.update_frame)
    CairoRenderer.get_frame = cpu_timed("drawing", CairoRenderer.get_frame)

    def write_frame(self, pixels, *, repeat: int = 1) -> None:
        # manim's write_frame, with the conversion it leaves to encode() done (and timed) first
        self._validate_frame(pixels, repeat)
        time_base = Fraction(self.spec.frame_rate.denominator, self.spec.frame_rate.numerator)
        for _ in range(repeat):
            t0 = time.thread_time()
            frame = av.VideoFrame.from_ndarray(pixels, format="rgba").reformat(
                format=self._stream.pix_fmt)
            t1 = time.thread_time()
            frame.pts, frame.time_base = self._next_pts, time_base
            self._next_pts += 1
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            t2 = time.thread_time()
            add("conversion", t1 - t0)
            add("encoding", t2 - t1)
            add("frames", 1)

    VideoSegmentEncoder.write_frame = write_frame
    VideoSegmentEncoder.finish = cpu_timed("encoding", VideoSegmentEncoder.finish)

    def combine_to_movie(self, _orig=SceneFileWriter.combine_to_movie):
        t0 = time.perf_counter()
        try:
            return _orig(self)
        finally:
            add("joining", time.perf_counter() - t0)

    SceneFileWriter.combine_to_movie = combine_to_movie


def main() -> None:
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != here]
    out = sys.argv[1]
    sys.argv = ["manim", *sys.argv[2:]]
    t0 = time.perf_counter()
    from manim.__main__ import main as manim_main

    TOTALS["import"] = time.perf_counter() - t0
    install()
    atexit.register(lambda: open(out, "w").write(json.dumps(dict(TOTALS))))
    manim_main()


if __name__ == "__main__":
    main()
