"""How fast the promo renders, part by part, against the encoder floor measured in the same run.

    python bench/bench_render.py [-q l|h] [--cut full|teaser] [--jobs N]

Renders every part of the cut again (no up-to-date skipping), in parallel on the cores there
are, each part under a stopwatch (promo/probe.py and promo/stream.py: CPU seconds drawing,
converting RGBA -> YUV, encoding (x264's own threads too), muxing the narration, and manim
joining its partial movies; the rest is "other"), then joins the cut. Then, on the joined video's
own frames, the floor: converting each frame to YUV and encoding it with x264 `veryfast` (the
settings the renders use), one after the other, nothing drawn; decoding the frames is not
counted. Ratios are measured side by side in one run because other work on the machine moves
absolute times; CPU seconds per part are exact for the part's own process either way. The
render's CPU (every part, and the render server that forks them) is held to CPU_TARGET times
the floor's: the ratio line says PASS or FAIL. First, what recording costs: every run the
cut's parts read (each workload, each comparison's second run), recorded from an empty trace
store, as its share of a cold build's CPU (recording plus rendering), held to RECORD_SHARE.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promo import lock  # noqa: E402
from promo.build import OUT, join_cut  # noqa: E402
from promo.parts import plan  # noqa: E402
from promo.render import QUALITIES, render_all, start_server  # noqa: E402

X264 = {"preset": "veryfast", "crf": "23"}  # manim's x264 crf and manim.cfg's preset
CPU_TARGET = 1.4  # render CPU at most this many times the floor's
RECORD_SHARE = 0.25  # recording every run from an empty trace store: at most this of a cold promo

# Builds every part of a cut without video (each part with its own env, as the render server
# gives it), in a child process whose CPU is counted: with an empty trace store it records
# every run the parts read (the workloads and the comparisons' second runs), with a full one it
# only builds. The difference is what recording costs.
BUILD = """
import importlib, os, sys, tempfile
sys.path.insert(0, os.getcwd())
from manim import tempconfig
from promo.parts import plan
with tempfile.TemporaryDirectory() as media:
    for part in plan(sys.argv[1], log=lambda *_: None):
        for k in [k for k in os.environ if k.startswith("ASTRAI_") and k != "ASTRAI_TRACE_CACHE"]:
            del os.environ[k]
        os.environ.update(part.env)
        module = importlib.import_module(part.file.removesuffix(".py").replace("/", "."))
        with tempconfig({"format": "none", "disable_caching": True, "media_dir": media,
                         "progress_bar": "none", "verbosity": "WARNING"}):
            getattr(module, part.cls)(skip_animations=True).render()
"""


def cpu_split(cpu: float, profile: dict) -> dict[str, float]:
    """A part's CPU seconds by what they did: drawing, conversion, encoding (the encoder calls
    and x264's own threads), audio (muxing the narration), joining, and the rest (`other`)."""
    got = {k: profile.get(k, 0.0) for k in ("drawing", "conversion", "encoding", "audio",
                                              "joining")}
    got["encoding"] += profile.get("encoder_threads", 0.0)
    got["cpu"] = cpu
    got["other"] = cpu - sum(v for k, v in got.items() if k != "cpu")
    return got


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


def build_cpu(cut: str, traces: Path) -> float:
    """CPU seconds of a child that builds every part of `cut` without video, reading and
    keeping runs in the trace store `traces`."""
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "ASTRAI_TRACE_CACHE": str(traces), "NARRATION": "off"}
    subprocess.run([sys.executable, "-c", BUILD, cut], check=True, env=env,
                   cwd=Path(__file__).resolve().parents[1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def recording(cut: str) -> float:
    """CPU seconds to record every run the cut's parts read, from an empty trace store: a cold
    build without video minus a warm one, side by side."""
    with tempfile.TemporaryDirectory() as traces:
        cold = build_cpu(cut, Path(traces))
        warm = build_cpu(cut, Path(traces))
    print(f"recording every run of the {cut} cut from an empty trace store: build without "
          f"video {cold:.1f} s CPU cold, {warm:.1f} s warm: recording {cold - warm:.1f} s")
    return max(0.0, cold - warm)


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
    record_cpu = recording(args.cut)
    out = OUT / "bench"
    t0 = time.perf_counter()  # from here: planning, the render server's start, renders, join
    # the server's own CPU: what its children (the parts) did not take, once it is reaped
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with lock.held(OUT) as fd:  # the promo's build folder: one build at a time there
        server = start_server(keep=(fd,))  # its renders hold the lock too
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
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = max(0.0, children.ru_utime + children.ru_stime - children0.ru_utime
                         - children0.ru_stime - sum(r.cpu for r in rendered))
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
            f"{'cpu s':>6} {'draw':>6} {'conv':>6} {'enc':>6} {'audio':>5} {'join':>5} "
            f"{'other':>6}")
    print(head)
    print("-" * len(head))
    keys = ("cpu", "drawing", "conversion", "encoding", "audio", "joining")
    cpu_sum = dict.fromkeys(keys, 0.0)
    for r, pr in zip(rendered, cut.probes):
        split = cpu_split(r.cpu, r.profile or {})
        v = float(pr.duration)
        print(f"{r.part.name:32} {v:8.1f} {r.wall:7.1f} {v / r.wall:7.2f} "
              f"{r.wall / (pr.frames * per_frame):7.2f} {r.cpu:6.1f} "
              + " ".join(f"{split[k]:{5 if k in ('audio', 'joining') else 6}.1f}"
                         for k in (*keys[1:], "other")))
        for k in keys:
            cpu_sum[k] += split[k]
    other = cpu_sum["cpu"] - sum(v for k, v in cpu_sum.items() if k != "cpu")
    print("-" * len(head))
    print(f"{'all parts (CPU seconds)':32} {video:8.1f} {'':7} {'':7} {'':7} "
          f"{cpu_sum['cpu']:6.1f} {cpu_sum['drawing']:6.1f} {cpu_sum['conversion']:6.1f} "
          f"{cpu_sum['encoding']:6.1f} {cpu_sum['audio']:5.1f} {cpu_sum['joining']:5.1f} "
          f"{other:6.1f}")
    print("(enc: the encoder calls and x264's own threads; audio: muxing the narration; other: "
          "the scene's own work on the main thread - building, laying out, replaying - and "
          "what manim does between frames)")
    print()
    render_cpu = cpu_sum["cpu"] + server_cpu
    print(f"video: {video:.1f} s ({n} frames at {fps:g} fps)")
    print(f"plan + render, {jobs} parts at a time: {render_wall:.1f} s wall; promo join "
          f"({cut.how}): {join_wall:.2f} s")
    print(f"render CPU: parts {cpu_sum['cpu']:.1f} s + render server {server_cpu:.1f} s "
          f"(its imports and whatever it prepares once for every part) = {render_cpu:.1f} s")
    print(f"promo: {total_wall:.1f} s wall = {video / total_wall:.2f}x real time "
          f"(CPU {render_cpu:.1f} s = {video / render_cpu:.2f}x real time per core)")
    print(f"floor, same {n} frames, one after the other: conversion {conv:.1f} s "
          f"({n / conv:.0f} frames/s) + x264 veryfast {enc:.1f} s ({n / enc:.0f} frames/s) "
          f"= {conv + enc:.1f} s = {video / (conv + enc):.2f}x real time")
    floor_cpu = f["conv_cpu"] + f["enc_cpu"]
    print(f"floor CPU: conversion {f['conv_cpu']:.1f} s + encoding {f['enc_cpu']:.1f} s "
          f"(x264's threads included) = {floor_cpu:.1f} s")
    print(f"promo / floor, wall: {total_wall / (conv + enc):.2f}  (target at 1080p60: <= 1.25; "
          f"480p15 target: >= 8x real time)")
    ratio = render_cpu / floor_cpu
    print(f"promo / floor, CPU: {ratio:.2f}  (target <= {CPU_TARGET}: "
          f"{'PASS' if ratio <= CPU_TARGET else 'FAIL'}; render CPU, parts and server, against "
          f"the floor's, in CPU seconds, which other work on the machine inflates less; parts "
          f"alone: {cpu_sum['cpu'] / floor_cpu:.2f})")
    share = record_cpu / (record_cpu + render_cpu)
    print(f"recording / cold promo, CPU: {share:.2f} (recording {record_cpu:.1f} s of a cold "
          f"build's {record_cpu + render_cpu:.1f} s; target <= {RECORD_SHARE}: "
          f"{'PASS' if share <= RECORD_SHARE else 'FAIL'})")
    print(f"load average at end: {os.getloadavg()[0]:.1f} (other work on these cores inflates "
          "wall times; the ratios were measured side by side)")
    synthesis()


def synthesis(n: int = 6) -> None:
    """Seconds of CPU per minute of speech, synthesizing the first lines of the title card's
    script into an empty cache (cold), then again from that cache (cached)."""
    from scenes import cards
    from scenes.framework.voice import Narrator, VoiceError

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
