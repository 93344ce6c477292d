"""How fast the promo renders, part by part, against the encoder floor measured in the same run.

    python bench/bench_render.py [-q l|h] [--cut full|teaser] [--jobs N]

Renders every part of the cut again (no up-to-date skipping), in parallel on the cores there
are, each part under a stopwatch (promo/probe.py: CPU seconds drawing, converting RGBA -> YUV,
encoding, and manim joining its partial movies), then joins the cut. Then, on the joined video's
own frames, the floor: converting each frame to YUV and encoding it with x264 `veryfast` (the
settings the renders use), one after the other, nothing drawn; decoding the frames is not
counted. Ratios are measured side by side in one run because other work on the machine moves
absolute times; CPU seconds per part are exact for the part's own process either way.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promo.build import OUT, join_cut  # noqa: E402
from promo.parts import plan  # noqa: E402
from promo.render import QUALITIES, render_all, start_server  # noqa: E402

X264 = {"preset": "veryfast", "crf": "23"}  # manim's x264 crf and manim.cfg's preset


def floor(mp4: Path) -> dict[str, float]:
    """Wall and CPU seconds to convert and encode the frames of `mp4`, nothing drawn: 'n',
    'conv', 'enc' (wall), 'conv_cpu', 'enc_cpu' (CPU of this process: x264's threads too)."""
    t = dict.fromkeys(("conv", "enc", "conv_cpu", "enc_cpu"), 0.0)
    n = 0
    with av.open(str(mp4)) as inp, tempfile.TemporaryDirectory() as tmp:
        s = inp.streams.video[0]
        rate = s.guessed_rate or s.average_rate
        with av.open(os.path.join(tmp, "floor.mp4"), "w") as out:
            o = out.add_stream("libx264", rate=rate, options=X264)
            o.width, o.height, o.pix_fmt = s.codec_context.width, s.codec_context.height, \
                "yuv420p"
            frames = inp.decode(s)
            while True:
                frame = next(frames, None)
                rgba = frame.to_ndarray(format="rgba") if frame is not None else None
                c0, w0 = time.process_time(), time.perf_counter()
                if rgba is None:
                    out.mux(o.encode())
                    t["enc"] += time.perf_counter() - w0
                    t["enc_cpu"] += time.process_time() - c0
                    break
                # the cheapest conversion there is here: swscale on a zero-copy view
                yuv = av.VideoFrame.from_numpy_buffer(rgba, format="rgba").reformat(
                    format="yuv420p")
                c1, w1 = time.process_time(), time.perf_counter()
                yuv.pts, yuv.time_base = n, 1 / Fraction(rate)
                out.mux(o.encode(yuv))
                c2, w2 = time.process_time(), time.perf_counter()
                t["conv"] += w1 - w0
                t["enc"] += w2 - w1
                t["conv_cpu"] += c1 - c0
                t["enc_cpu"] += c2 - c1
                n += 1
    t["n"] = n
    return t


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthesis-only", action="store_true",
                    help="only the narration line: synthesis cost, cold and cached")
    ap.add_argument("-q", "--quality", choices=sorted(QUALITIES), default="l")
    ap.add_argument("--cut", choices=("full", "teaser"), default="full")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--manim-segments", action="store_true",
                    help="let manim write a partial movie per animation (its default)")
    args = ap.parse_args()
    if args.synthesis_only:
        synthesis()
        return
    jobs = args.jobs or os.cpu_count() or 1
    q = QUALITIES[args.quality]
    out = OUT / "bench"
    t0 = time.perf_counter()  # from here: planning, the render server's start, renders, join
    server = start_server()
    parts = plan(args.cut, log=lambda m: print(m))
    how = "manim's partial movies" if args.manim_segments else "one x264 stream per part"
    print(f"render benchmark: {args.cut} cut at {q}, {len(parts)} parts, {jobs} at a time, "
          f"{how}, "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at start")
    # into the promo's own build directory: what the benchmark renders, `make promo` reuses
    rendered = render_all(parts, OUT / "build", args.quality, jobs, force=True, profile=True,
                          log=lambda *_: None, one_stream=not args.manim_segments,
                          server=server)
    render_wall = time.perf_counter() - t0
    cut = join_cut(args.cut, args.quality, rendered, out, f"bench-{args.cut}-{q}", None,
                   log=print)
    join_wall = cut.seconds["join"]
    total_wall = render_wall + join_wall
    video = cut.duration
    f = floor(cut.mp4)
    n, conv, enc = int(f["n"]), f["conv"], f["enc"]
    per_frame = (conv + enc) / n
    fps = float(cut.probes[0].rate)

    head = (f"{'part':32} {'video s':>8} {'wall s':>7} {'x real':>7} {'/floor':>7} "
            f"{'cpu s':>6} {'draw':>6} {'conv':>6} {'enc':>6} {'join':>5} {'other':>6}")
    print(head)
    print("-" * len(head))
    cpu_sum = {"cpu": 0.0, "drawing": 0.0, "conversion": 0.0, "encoding": 0.0, "joining": 0.0}
    for r, pr in zip(rendered, cut.probes):
        p = r.profile or {}
        d, c, e, j = (p.get(k, 0.0) for k in ("drawing", "conversion", "encoding", "joining"))
        other = r.cpu - d - c - e - j
        v = float(pr.duration)
        print(f"{r.part.name:32} {v:8.1f} {r.wall:7.1f} {v / r.wall:7.2f} "
              f"{r.wall / (pr.frames * per_frame):7.2f} {r.cpu:6.1f} {d:6.1f} {c:6.1f} {e:6.1f} "
              f"{j:5.1f} {other:6.1f}")
        for k, x in (("cpu", r.cpu), ("drawing", d), ("conversion", c), ("encoding", e),
                     ("joining", j)):
            cpu_sum[k] += x
    print("-" * len(head))
    print(f"{'all parts (CPU seconds)':32} {video:8.1f} {'':7} {'':7} {'':7} "
          f"{cpu_sum['cpu']:6.1f} {cpu_sum['drawing']:6.1f} {cpu_sum['conversion']:6.1f} "
          f"{cpu_sum['encoding']:6.1f} {cpu_sum['joining']:5.1f} "
          f"{cpu_sum['cpu'] - sum(v for k, v in cpu_sum.items() if k != 'cpu'):6.1f}")
    print()
    print(f"video: {video:.1f} s ({n} frames at {fps:g} fps)")
    print(f"plan + render, {jobs} parts at a time: {render_wall:.1f} s wall; promo join "
          f"({cut.how}): {join_wall:.2f} s")
    print(f"promo: {total_wall:.1f} s wall = {video / total_wall:.2f}x real time "
          f"(CPU {cpu_sum['cpu']:.1f} s = {video / cpu_sum['cpu']:.2f}x real time per core)")
    print(f"floor, same {n} frames, one after the other: conversion {conv:.1f} s "
          f"({n / conv:.0f} frames/s) + x264 veryfast {enc:.1f} s ({n / enc:.0f} frames/s) "
          f"= {conv + enc:.1f} s = {video / (conv + enc):.2f}x real time")
    floor_cpu = f["conv_cpu"] + f["enc_cpu"]
    print(f"floor CPU: conversion {f['conv_cpu']:.1f} s + encoding {f['enc_cpu']:.1f} s "
          f"(x264's threads included) = {floor_cpu:.1f} s")
    print(f"promo / floor, wall: {total_wall / (conv + enc):.2f}  (target at 1080p60: <= 1.25; "
          f"480p15 target: >= 8x real time)")
    print(f"promo / floor, CPU: {cpu_sum['cpu'] / floor_cpu:.2f}  (the same comparison in CPU "
          f"seconds, which other work on the machine does not inflate)")
    print(f"load average at end: {os.getloadavg()[0]:.1f} (other work on these cores inflates "
          "wall times; the ratios were measured side by side)")
    synthesis()


def synthesis(n: int = 6) -> None:
    """Seconds of CPU per minute of speech, synthesizing the first lines of the title card's
    script into an empty cache (cold), then again from that cache (cached)."""
    from scenes import cards
    from scenes.voice import Narrator, VoiceError

    lines = [cards.WHY, cards.HOW, cards.SAID_CLAIM, cards.OUTRO][:n]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            cold = Narrator(on=True, cache=Path(tmp))
            t0 = time.process_time()
            speech = sum(cold.line(x).duration for x in lines)
            t_cold = time.process_time() - t0
            t0 = time.process_time()
            for x in lines:
                Narrator(on=True, cache=Path(tmp)).line(x)
            t_cached = time.process_time() - t0
        except VoiceError as e:
            print(f"synthesis: {e}")
            return
    per_min = 60 / speech
    print(f"synthesis: {speech:.1f} s of speech; cold {t_cold * per_min:.1f} CPU s per minute "
          f"of speech ({speech / t_cold:.1f}x real time, voice load included), cached "
          f"{t_cached * per_min:.2f} CPU s per minute")


if __name__ == "__main__":
    main()
